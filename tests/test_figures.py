"""Printed figures are rounded and a missing metric reads ``n/a``, in reports and summary lines alike."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from vqaudio.checkpoint import save_model
from vqaudio.cli import main
from vqaudio.figures import metric, rate, unit
from vqaudio.models.vqvae import VQVAE, VQVAEConfig


def test_rounding_and_missing_values():
    assert metric(1.7540150880813599) == "1.754" and metric(-0.00012) == "-0.000" and metric(1234.5) == "1234"
    assert metric(math.nan) == metric(None) == rate(None) == rate(math.nan) == "n/a"
    assert rate(2.56) == "2.56" and rate(3047.619047) == "3048" and rate(95.2381) == "95.2"
    assert unit("audio") == "bit/s" and unit("series") == "bit/step"


def series_data(tmp_path):
    data = tmp_path / "series"
    data.mkdir()
    t = np.linspace(0, 12, 200)
    for i in range(6):
        np.save(data / f"s{i}.npy", np.stack([np.sin(t + i), np.cos(3 * t) * (i + 1)], 1).astype(np.float32))
    return data


def test_eval_summary_of_a_series_codec_says_bit_per_step(tmp_path, capsys):
    """The UCR case: the summary line and the report give the same bitrate, in bit/step."""
    torch.manual_seed(0)
    save_model(tmp_path / "codec", VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=2, hidden=8,
                                                     max_hidden=16, dim=8, strides=[5, 5], n_q=2, codebook_size=8,
                                                     kmeans_init=False)))
    assert main(["eval", "--codec", str(tmp_path / "codec"), "--data", str(series_data(tmp_path)), "-o",
                 str(tmp_path / "r"), "--no-plots", "--baselines", "none"]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert " at 0.24 bit/step: " in line, line  # 2 levels x 3 bits / hop 25
    assert "| 0.24 |" in (tmp_path / "r" / "report.md").read_text()
    assert not re.search(r"\d\.\d{4,}", line), line


def test_train_summary_is_rounded(tmp_path, capsys):
    assert main(["train", "--data", str(series_data(tmp_path)), "--exp", str(tmp_path / "exp"), "--steps", "2",
                 "--batch-size", "2", "--hidden", "4", "--max-hidden", "8", "--dim", "4", "--n-q", "2",
                 "--codebook-size", "8", "--strides", "2,2", "--valid-every", "2", "--no-plots", "--valid-fraction",
                 "0.34"]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"best loss \d+\.\d{3} at step 2; last validation: ", line), line
    assert not re.search(r"\d\.\d{4,}", line.split("steps/s")[1]), line


def test_a_missing_metric_reads_n_a(tmp_path, capsys):
    """PESQ finds no speech in silence: the summary says n/a, not nan."""
    import soundfile as sf

    pytest.importorskip("pesq")
    (tmp_path / "quiet").mkdir()
    sf.write(tmp_path / "quiet" / "a.wav", np.zeros(8000, np.float32), 8000)
    assert main(["eval", "--codec", "speech-8k", "--data", str(tmp_path / "quiet"), "-o", str(tmp_path / "r"),
                 "--baselines", "none", "--no-plots", "--n-q", "4"]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pesq_nb n/a" in line and "nan" not in line, line
