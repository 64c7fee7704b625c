"""The generalist series recipe (recipes/series) end to end with --smoke (data, train, export and install as a user
model, a leave-one-out model, the benchmark, the class-conditioned prior), the per-channel series codec, and the
benchmark's parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vqaudio.checkpoint import load_model
from vqaudio.codec import Codec, load_codec
from vqaudio.errors import AudioError

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("aeon")


def run_series(exp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "VQAUDIO": f"{sys.executable} -m vqaudio", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "EXP": str(exp), **env}
    return subprocess.run(["bash", str(ROOT / "recipes" / "series" / "run.sh"), *args], env=full, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_series_smoke_trains_a_per_channel_model_without_test_splits(tmp_path):
    exp = tmp_path / "exp"
    r = run_series(exp, "--smoke", "--stop-stage", "2", EXCLUDE="GunPoint", VQAUDIO_MODELS=str(tmp_path / "models"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "models").exists() and "a leave-one-out model, in" in r.stderr  # not installed anywhere
    info = json.loads((exp / "data" / "info.json").read_text())
    assert info["excluded"] == ["GunPoint"] and "GunPoint" not in info["series"] and info["split"] == "TRAIN"
    files = (exp / "data" / "train.txt").read_text().split()
    assert len(files) == info["files"] == sum(info["series"].values())
    assert not any("GunPoint" in f for f in files)
    arrays = [np.load(f) for f in files]
    assert all(a.ndim == 2 and a.shape[1] == 1 and np.isfinite(a).all() for a in arrays)
    # no TEST item of any shipped set is in training: every UCR file equals a TRAIN channel
    from aeon.datasets import load_classification
    X, _ = load_classification("ArrowHead", split="train")
    ucr = sorted(f for f in files if "/ucr/ArrowHead/" in f)
    assert ucr and all(np.array_equal(np.load(f)[:, 0], np.asarray(X[i][0], np.float32)) for i, f in enumerate(ucr))
    model = load_model(exp / "model")
    assert model.config.kind == "series" and model.config.channels == 1 and model.hop == 4
    codec = load_codec(exp / "model")
    x = torch.as_tensor(np.asarray(load_classification("BasicMotions", split="test")[0][0], np.float32))  # [6, T]
    assert codec.per_channel and codec.encode(x).codes.shape == (6, model.config.n_q, 25)
    codes = codec.encode(x, n_q=1)
    assert codes.codes.numel() * codec.bits_per_code == 6 * 25 * 8 and codec.bitrate(1) == 2  # 2 bits/sample a level
    y = codec.decode(codes)[0]
    assert y.shape == x.shape and torch.isfinite(y).all()
    again = run_series(exp, "--smoke", "--stop-stage", "2")  # stages are done: nothing is redone
    assert again.returncode == 0 and "done already" in again.stderr


@pytest.mark.slow
def test_series_smoke_installs_series_and_measures_zero_shot_and_the_prior(tmp_path):
    exp, models = tmp_path / "exp", tmp_path / "models"
    r = run_series(exp, "--smoke", VQAUDIO_MODELS=str(models), SERIES_MODEL_DIR=str(models / "series-smoke"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (models / "series-smoke" / "MODEL_CARD.md").is_file()  # stage 2 installed it as a user model
    data = tmp_path / "x.csv"
    np.savetxt(data, np.random.default_rng(0).standard_normal((30, 3)).cumsum(0), delimiter=",")
    enc = subprocess.run([sys.executable, "-m", "vqaudio", "encode", str(data), "-o", str(tmp_path / "x.decoded.npy"),
                          "--model", "series-smoke"],
                         env={**os.environ, "PYTHONPATH": str(ROOT), "VQAUDIO_MODELS": str(models)},
                         capture_output=True, text=True)
    assert enc.returncode == 0, enc.stderr
    assert np.load(tmp_path / "x.decoded.npy").shape == (30, 3)
    loo_info = json.loads((exp / "loo" / "ItalyPowerDemand" / "data" / "info.json").read_text())
    assert loo_info["excluded"] == ["ItalyPowerDemand"]
    bench = json.loads((exp / "bench.json").read_text())
    assert [r["set"] for r in bench] == ["ItalyPowerDemand"] and bench[0]["models"] == ["loo", "vq"]
    row = bench[0]["rates"]["2"]
    assert {"vq", "loo"} <= set(row) and 0 <= row["loo"]["minirocket"] <= 100 and 0 <= bench[0]["minirocket_raw"] <= 100
    assert set(row["words_1nn"]) == {"vq", "loo", "sax", "sfa"}
    text = (exp / "bench.txt").read_text()
    assert "verdict: zero-shot (leave-one-out) vq: NMSE / best baseline at 2 bits/sample" in text
    report = (exp / "prior" / "report.txt").read_text()
    assert "held-out NLL" in report and "unigram entropy" in report
    assert "of 40 class-conditioned samples are 1-NN (TRAIN) of their class; real TEST series 9" in report
    for label in ("1", "2"):  # GunPoint's classes: 20 decoded samples each
        assert len(list((exp / "prior" / "samples" / label).glob("sample_*.npy"))) == 20


def test_check_samples_counts_the_samples_1nn_puts_in_their_class(tmp_path):
    """Real TEST cases of GunPoint as the "samples": 1-NN puts most in their class; a missing class is exit 2."""
    from aeon.datasets import load_classification
    x, y = load_classification("GunPoint", split="test")
    for label in ("1", "2"):
        (tmp_path / label).mkdir()
        for i in np.flatnonzero(y == label)[:10]:
            np.save(tmp_path / label / f"sample_{i:03d}.npy", 3.0 * x[i, 0][:, None] + 7.0)  # any scale
    script = ROOT / "recipes/series/local/check_samples.py"
    r = subprocess.run([sys.executable, str(script), "GunPoint", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("class 1: ") and lines[1].startswith("class 2: ")
    right = sum(int(ln.split(": ")[1].split(" of ")[0]) for ln in lines[:2])
    assert right >= 16 and lines[2].startswith("GunPoint: ") and "of 20 class-conditioned samples" in lines[2]
    for f in (tmp_path / "2").iterdir():
        f.unlink()
    r = subprocess.run([sys.executable, str(script), "GunPoint", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no .npy samples" in r.stderr and len(r.stderr.splitlines()) == 1


def test_series_recipe_rejects_unknown_sets(tmp_path):
    r = run_series(tmp_path / "exp", "--smoke", EXCLUDE="NoSuchSet")
    assert r.returncode != 0 and "NoSuchSet" in r.stderr and "not an aeon-shipped" in r.stderr


def test_a_single_channel_series_codec_codes_each_channel_alone(tmp_path):
    from vqaudio.models import VQVAE, VQVAEConfig
    torch.manual_seed(0)
    codec = Codec(VQVAE(VQVAEConfig(kind="series", sample_rate=None, hidden=8, max_hidden=16, dim=8, strides=[2, 2],
                                    dilations=[1], n_q=2, codebook_size=16)), name="series")
    x = (torch.randn(37, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([0.0, 5.0, -3.0])).T  # [C, T]
    codes = codec.encode(x)
    assert codes.codes.shape == (3, 2, 10) and codes.length == 37 and codes.items == codes.channels == 3
    torch.testing.assert_close(torch.tensor(codes.stats["mean"]), x.mean(-1))  # RevIN side information per channel
    alone = codec.encode(x[1:2])
    assert torch.equal(alone.codes[0], codes.codes[1])
    torch.testing.assert_close(codec.decode(alone)[0][0], codec.decode(codes)[0][1])
    assert codec.decode(codec.encode(x, n_q=1))[0].shape == (3, 37)
    joint = Codec(VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=2, hidden=8, max_hidden=8, dim=8,
                                    strides=[2], dilations=[1], n_q=1, codebook_size=4)))
    assert not joint.per_channel and joint.encode(x[:2]).codes.shape == (1, 1, 19)  # a 2-channel model: together
    with pytest.raises(AudioError, match="series has 3 channel"):
        joint.encode(x)


def test_bench_series_decoders_invert_their_transforms():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_series as B

    g = np.random.default_rng(0)
    z, _, _ = B.znorm(np.cumsum(g.standard_normal((40, 63)), 1))
    np.testing.assert_allclose(B.inverse_dft(B.dft(z, 62), 63), z, atol=1e-9)  # all coefficients after the mean
    np.testing.assert_allclose(B.inverse_dct(B.dct_coefs(z, 63), 63), z, atol=1e-9)
    np.testing.assert_allclose(B.inverse_paa(B.paa(z, 63), 63), z)
    np.testing.assert_allclose(B.nmse(z, z), 0.0)
    assert np.isnan(B.nmse(np.ones((1, 5)), np.zeros((1, 5))))[0]
    for method in B.BASELINES:  # more bits, less error; 8 bits/sample is close to lossless (PCA: up to its rank)
        errs = [np.nanmean(B.nmse(z[20:], B.baseline(method, z[:20], z[20:], r * 63)[1])) for r in (1, 8)]
        assert errs[1] <= errs[0] and (errs[1] < 0.05 or method == "pca"), (method, errs)


def test_bench_series_symbols_and_bags():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_series as B

    codes = np.array([[[0, 1, 1, 3]], [[2, 2, 2, 2]]])  # two rows (one series of 2 channels), one level, K=4
    bag = B.bag_of_tokens(codes, 1, 4)
    np.testing.assert_allclose(bag, [[0.25, 0.5, 0, 0.25, 0, 0, 1, 0]])
    g = np.random.default_rng(1)
    z, _, _ = B.znorm(np.cumsum(g.standard_normal((30, 32)), 1))
    wtr, wte, edges = B.sfa_words(z[:20], z[20:], 6, 2)
    assert wtr.shape == (20, 6) and wte.shape == (10, 6) and wtr.min() >= 0 and wtr.max() <= 3
    assert np.isinf(edges[:, -1]).all()
    y = np.arange(40) % 2  # two well-separated classes: a rising and a falling ramp, with noise
    x = np.where(y[:, None] == 0, 1.0, -1.0) * np.linspace(-1, 1, 32) + 0.05 * g.standard_normal((40, 32))
    z, _, _ = B.znorm(x)
    for kind in ("sax", "sfa"):
        assert B.word_accuracy(kind, z[:20], z[20:], 20, 20, {"k": 8, "b": 3}, y[:20], y[20:]) == 100.0
        shuffled = g.permutation(y[:20])  # labels unrelated to the shapes: no better than chance on average
        assert B.word_accuracy(kind, z[:20], z[20:], 20, 20, {"k": 8, "b": 3}, shuffled, y[20:]) < 100.0


def test_bench_series_codes_through_the_codec_api(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_series as B

    from vqaudio.checkpoint import save_model
    from vqaudio.models import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    save_model(tmp_path / "tiny", VQVAE(VQVAEConfig(kind="series", sample_rate=None, hidden=8, max_hidden=16, dim=8,
                                                    strides=[2, 2], dilations=[1], n_q=2, codebook_size=16)))
    codec = B.load_series_codec(str(tmp_path / "tiny"))
    x = np.cumsum(np.random.default_rng(0).standard_normal((3, 2, 37)), -1)  # 3 series of 2 channels
    recon, codes, bits = B.vq_code(codec, x, 1)
    assert recon.shape == (6, 37) and codes.shape == (6, 1, 10) and bits == 6 * 10 * 4  # rows: series, then channel
    one = codec.encode(torch.as_tensor(x[1], dtype=torch.float32), n_q=1)  # the second series alone
    assert np.array_equal(codes[2:4], one.codes.numpy())
    np.testing.assert_allclose(recon[2:4], codec.decode(one)[0].double().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit) as err:
        B.load_series_codec("speech-8k")
    assert err.value.code == 2 and "speech-8k: needs a series model with channels=1" in capsys.readouterr().err
