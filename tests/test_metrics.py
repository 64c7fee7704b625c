"""Metrics and baselines against values known by construction (real speech where it matters)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from vqaudio import baselines as B
from vqaudio import metrics as M
from vqaudio.io import load_audio


@pytest.fixture(scope="module")
def speech(speech_files) -> list[torch.Tensor]:
    """Eight real prompts of 1-4 s, ``[1, T]`` at 8 kHz."""
    out = []
    for p in speech_files[::37]:
        x = load_audio(p)[0]
        if 8000 <= x.shape[-1] <= 32000 and x.abs().max() > 0.1:
            out.append(x)
        if len(out) == 8:
            break
    return out


def test_si_snr_known_values():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(16000, generator=g, dtype=torch.float64)
    noise = torch.randn(16000, generator=g, dtype=torch.float64)
    ref, noise = ref - ref.mean(), noise - noise.mean()  # SI-SNR removes the means
    noise -= (noise @ ref) / (ref @ ref) * ref  # orthogonal to ref: the SI-SNR is exact
    noise *= ref.norm() / noise.norm() / math.sqrt(10)  # 10 dB
    assert M.si_snr(ref, ref + noise) == pytest.approx(10.0, abs=1e-6)
    assert M.si_snr(ref, 3 * (ref + noise) + 0.5) == pytest.approx(10.0, abs=1e-6)  # scale and offset invariant
    assert M.si_snr(ref, ref) > 80
    assert M.si_snr(ref, -ref) > 80  # any gain, even negative, is "the same signal"
    assert M.si_snr(ref, noise) < -80  # orthogonal: nothing of ref
    assert M.nmse(ref, ref + noise) == pytest.approx(0.1, rel=1e-6)


def test_spectral_distances(speech):
    x = speech[0][0]
    noisy = x + 0.05 * torch.randn_like(x)
    noisier = x + 0.2 * torch.randn_like(x)
    for fn in (M.log_mel_distance, M.mrstft_distance):
        assert fn(x, x, 8000) == pytest.approx(0.0, abs=1e-6)
        assert 0 < fn(x, noisy, 8000) < fn(x, noisier, 8000)
        assert fn(x, 0.5 * x, 8000) > 0.1  # level matters, unlike SI-SNR
    assert M.log_mel_distance(x, 0.5 * x, 8000) == pytest.approx(math.log10(2), rel=0.05)  # mostly above the floor


def test_pesq_and_stoi_on_speech(speech):
    if M.optional_metrics()["pesq"] or M.optional_metrics()["stoi"]:
        pytest.skip("pesq / pystoi not installed")
    x = torch.cat([s[0] for s in speech[:3]])
    noisy = x + 0.03 * torch.randn_like(x)
    assert M.pesq_score(x, x, 8000, "nb") > 4.0
    assert M.pesq_score(x, noisy, 8000, "nb") < M.pesq_score(x, x, 8000, "nb") - 1
    up = torch.nn.functional.interpolate(x[None, None], scale_factor=2, mode="linear")[0, 0]
    assert M.pesq_score(up, up, 16000, "wb") > 4.0
    assert M.stoi_score(x, x, 8000) > 0.99 > M.stoi_score(x, noisy, 8000) > M.stoi_score(x, torch.randn_like(x), 8000)
    short = x[: 2048]  # 0.26 s: under pystoi's 30 frames (it returns 1e-5): no score, not a bad one
    assert math.isnan(M.stoi_score(short, short, 8000))
    scores = M.score(x[None], noisy[None], 8000)
    assert set(scores) == {"si_snr", "log_mel", "mrstft", "pesq_nb", "stoi"}  # no PESQ-WB at 8 kHz
    assert "pesq_wb" in M.score(up[None], up[None], 16000)


def test_score_without_optional_packages(monkeypatch, speech):
    monkeypatch.setattr(M, "optional_metrics", lambda: {"pesq": "not installed", "stoi": "not installed"})
    assert set(M.score(speech[0], speech[0], 8000)) == {"si_snr", "log_mel", "mrstft"}
    assert math.isnan(M.pesq_score(speech[0][0], speech[0][0], 8000))
    assert set(M.score(speech[0], speech[0], None, "series")) == {"si_snr", "nmse"}


def test_score_averages_channels():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 4000, generator=g)
    est = torch.stack([ref[0], ref[1] + 0.3 * torch.randn(4000, generator=g)])
    s = M.score(ref, est, None, "series")
    assert s["si_snr"] == pytest.approx((M.si_snr(ref[0], est[0]) + M.si_snr(ref[1], est[1])) / 2)


@pytest.mark.parametrize("lag", [0, 7, -13, 40])
def test_align_recovers_delay(speech, lag):
    x = speech[1][0]
    delayed = torch.roll(torch.nn.functional.pad(x, (64, 64)), lag)[64:-64]
    out = M.align(x, delayed, 50)
    inner = slice(64, -64)
    assert torch.equal(out[inner], x[inner])


def test_codebook_stats_by_hand():
    codes = [torch.tensor([[[0, 1, 0, 1]]]), torch.tensor([[[2, 2, 2, 2]]])]  # [items, n_q, F]
    counts = M.code_counts(codes, 4)
    assert counts.tolist() == [[2, 2, 4, 0]]
    st = M.codebook_stats(counts)
    assert st["usage"] == [0.75]
    assert st["entropy_bits"][0] == pytest.approx(1.5)  # p = 1/4, 1/4, 1/2
    assert st["perplexity"][0] == pytest.approx(2**1.5)
    assert M.codebook_stats(torch.tensor([[5, 5, 5, 5]]))["perplexity"][0] == pytest.approx(4.0)


def test_pca_budget_and_quality(speech):
    fit, test = speech[2:], speech[0]
    coders = B.PCABaseline.fit(fit, 32, [8.0, 32.0, 64 * 12.0])
    quality = []
    for budget, pca in zip([8, 32, 64 * 12], coders, strict=True):
        assert pca.bits_per_frame <= budget and pca.n_components * pca.bits == pca.bits_per_frame
        y, bits = pca(test)
        assert y.shape == test.shape
        frames = math.ceil(test.shape[-1] / 32) + 1
        assert bits == frames * pca.bits_per_frame
        assert pca.bitrate(8000) == 8000 / 32 * pca.bits_per_frame
        quality.append(M.si_snr(test[0], y[0]))
    assert quality[0] < quality[1] < quality[2]
    assert quality[2] > 30  # 12 bits on every component


def test_pca_series_normalises():
    t = torch.linspace(0, 20, 600)
    series = [torch.stack([torch.sin(t + k) * 50 + 1000, torch.cos(2 * t + k)]) for k in range(6)]
    pca = B.PCABaseline.fit(series[1:], 4, 64.0, normalise=True)
    y, _ = pca(series[0])
    assert M.si_snr(series[0][0], y[0]) > 20 and M.si_snr(series[0][1], y[1]) > 20
    assert (y[0].mean() - 1000).abs() < 5  # the offset (side information) comes back


def test_pca_rejects_zero_budget(speech):
    from vqaudio.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 1 bit"):
        B.PCABaseline.fit(speech[:2], 32, 0.5)


def _ogg_page(payload_sizes: list[int]) -> bytes:
    segs = []
    for n in payload_sizes:
        segs += [255] * (n // 255) + [n % 255]
    head = b"OggS" + bytes(22) + bytes([len(segs)]) + bytes(segs)
    return head + bytes(sum(payload_sizes))


def test_ogg_packet_bytes():
    stream = _ogg_page([19]) + _ogg_page([300]) + _ogg_page([40, 41]) + _ogg_page([600])
    assert B.ogg_packet_bytes(stream) == 40 + 41 + 600
    with pytest.raises(B.BaselineError):
        B.ogg_packet_bytes(b"junk" * 10)


@pytest.mark.parametrize("codec", B.EXTERNAL, ids=lambda c: c.name)
def test_external_codecs(codec, speech):
    if not codec.available():
        pytest.skip(f"{' / '.join(codec.binaries)} not installed")
    x = torch.cat([s[0] for s in speech[:4]])  # ~10 s
    y, bits = codec(x, 8000)
    assert y.shape == x.shape
    rate = bits / (x.shape[-1] / 8000)
    nominal = {"codec2-3200": 3200, "codec2-2400": 2400, "opus-6k": 6000}[codec.name]
    assert 0.85 * nominal < rate < 1.1 * nominal
    assert M.log_mel_distance(x, y, 8000) < 0.6
    if not M.optional_metrics()["stoi"]:
        assert M.stoi_score(x, y, 8000) > 0.75
    # a 16 kHz input goes through the 8 kHz codec and comes back at 16 kHz
    up = torch.nn.functional.interpolate(x[None, None, :16000], scale_factor=2, mode="linear")[0, 0]
    assert codec(up, 16000)[0].shape == up.shape


def test_external_codec_failure_is_one_line(tmp_path, monkeypatch):
    if not shutil.which("c2enc"):
        pytest.skip("codec2 not installed")
    bad = B.ExternalCodec("codec2-bad", ("c2enc", "c2dec"), 8000, "1234")
    with pytest.raises(B.BaselineError, match="codec2-bad") as err:
        bad(torch.zeros(8000), 8000)
    assert "\n" not in str(err.value)
