"""The generalist series recipe (recipes/series) end to end with --smoke, and the per-channel series codec."""

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
from vqaudio.series_codec import decode_series, encode_series, payload_bits

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
    r = run_series(exp, "--smoke", EXCLUDE="GunPoint")
    assert r.returncode == 0, r.stderr[-3000:]
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
    x = torch.as_tensor(np.asarray(load_classification("BasicMotions", split="test")[0][0], np.float32)).T  # [T, 6]
    codes = encode_series(model.eval(), x)
    assert codes.codes.shape == (6, model.config.n_q, 25)
    assert payload_bits(model, codes, 1) == 6 * 25 * 8  # 2 bits/sample per level
    y = decode_series(model, codes, 1)
    assert y.shape == x.shape and torch.isfinite(y).all()
    bench = json.loads((exp / "bench.json").read_text())
    assert [r["set"] for r in bench] == ["ItalyPowerDemand"] and "vq" in bench[0]["rates"]["2"]
    assert "verdict: NMSE vq / best baseline at 2 bits/sample" in (exp / "bench.txt").read_text()
    again = run_series(exp, "--smoke")  # stages are done: nothing is redone
    assert again.returncode == 0 and "done already" in again.stderr


def test_series_recipe_rejects_unknown_sets(tmp_path):
    r = run_series(tmp_path / "exp", "--smoke", EXCLUDE="NoSuchSet")
    assert r.returncode != 0 and "NoSuchSet" in r.stderr and "not an aeon-shipped" in r.stderr


def test_encode_series_codes_each_channel_alone(tmp_path):
    from vqaudio.models import VQVAE, VQVAEConfig
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(kind="series", sample_rate=None, hidden=8, max_hidden=16, dim=8, strides=[2, 2],
                              dilations=[1], n_q=2, codebook_size=16)).eval()
    x = torch.randn(37, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([0.0, 5.0, -3.0])
    codes = encode_series(model, x)
    assert codes.codes.shape == (3, 2, 10) and codes.length == 37
    torch.testing.assert_close(codes.mean, x.mean(0))
    alone = encode_series(model, x[:, 1:2])
    assert torch.equal(alone.codes[0], codes.codes[1])
    torch.testing.assert_close(decode_series(model, alone)[:, 0], decode_series(model, codes)[:, 1])
    assert decode_series(model, codes, 1).shape == (37, 3)
    with pytest.raises(ValueError, match="channels=1"):
        encode_series(VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=2, hidden=8, max_hidden=8, dim=8,
                                        strides=[2], dilations=[1], n_q=1, codebook_size=4)), x[:, :2])


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
