"""Series coded at a bit budget: coarser time steps (vqaudio.series_resample), the encoder's choice among them
(Codec.rate_options / encode_at_rate), `.vqa` files that record the step, and `vqaudio encode --bits-per-sample`."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest
import torch
from cli_helpers import one_line, run

from vqaudio.codec import MAX_DECIMATE, RATE_STEPS, WIDE_SEARCH_STEPS, Codec, load_codec, load_codes, save_codes
from vqaudio.errors import AudioError, ConfigError, TokenFileError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.series_resample import coded_steps, decimate, interpolate
from vqaudio.tokenfile import _CRC, _PREFIX, to_bytes


@pytest.fixture(scope="module")
def series() -> Codec:
    return load_codec("series")


def smooth(t: int, c: int = 2, seed: int = 0) -> torch.Tensor:
    """``[c, t]`` slow sines on trends, at scales far from 1."""
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0, 1, t, dtype=torch.float64)
    rows = [(3 * torch.sin(2 * torch.pi * (1 + 2 * torch.rand(1, generator=g)) * s) + 5 * s) * 10 ** i + 7 for i in range(c)]
    return torch.stack(rows).float()


def nmse(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x - y) ** 2).sum() / ((x - x.mean(-1, keepdim=True)) ** 2).sum())


def test_decimate_and_interpolate_keep_a_trend_and_a_slow_wave():
    t = torch.arange(301, dtype=torch.float64)
    line = (2.5 * t - 40).float()[None]
    for d in (1, 2, 3, 8, Fraction(5, 4), Fraction(13, 4)):
        coarse = decimate(line, d)
        assert coarse.shape == (1, coded_steps(301, d)) == (1, -(-301 * Fraction(d).denominator // Fraction(d).numerator))
        at = (torch.arange(coarse.shape[-1], dtype=torch.float64) * float(d) * 2.5 - 40).float()[None]
        torch.testing.assert_close(coarse, at, rtol=0, atol=1e-3)  # a straight line: exact up to float32
        torch.testing.assert_close(interpolate(coarse, d, 301), line, rtol=0, atol=1e-3)
    wave = smooth(400, 3)
    for d in (2, Fraction(9, 4), 4):
        assert nmse(wave, interpolate(decimate(wave, d), d, 400)) < 1e-4
    for bad in (0, Fraction(1, 2), Fraction(1000, 3), Fraction(17, 32), "2", 2.0):
        with pytest.raises(ValueError, match="decimate must be a step"):
            decimate(wave, bad)
    noise = torch.randn(1, 400, generator=torch.Generator().manual_seed(0))
    assert nmse(noise, interpolate(decimate(noise, 4), 4, 400)) > 0.5  # what is above the new Nyquist rate is gone


def test_rate_options_fit_the_real_payload(series):
    hop, bits = series.hop, series.bits_per_code  # 4, 8: one level at full resolution is 2 bits/sample
    # 400 steps at 2 bits/sample (800 bits): 100 frames of one level, or 2 levels at every 2nd step (50 frames), ...
    options = series.rate_options(400, 2)
    firsts = {n: d for d, n in reversed(options)}  # the finest step of each level count
    assert firsts[1] == 1 and firsts[2] == 2 and sorted(firsts) == [1, 2, 3, 4]
    assert (Fraction(5, 4), 1) in options  # a coarser step with as many levels: tried too, on a short series
    assert series.rate_options(150, 2)[0] == (Fraction(5, 4), 1)  # 38 frames of one level = 2.03 bits/sample: over
    def most(length, budget, e):  # the most levels that fit at step e
        return min(series.n_q, int(budget * length // (bits * -(-coded_steps(length, e) // hop))))

    for length, budget in ((150, 2), (37, 1), (1000, 0.5), (24, 4), (3000, 8), (400, 2)):
        options = series.rate_options(length, budget)
        steps = [e for e in RATE_STEPS if coded_steps(length, e) >= hop and most(length, budget, e) >= 1]
        assert options == [(e, most(length, budget, e)) for e in steps]  # short series: every step that fits
        for d, n_q in options:
            frames = -(-coded_steps(length, d) // hop)
            assert 1 <= n_q <= series.n_q and 1 <= d <= MAX_DECIMATE and Fraction(d).denominator <= 4
            assert n_q * bits * frames <= budget * length
    # a long series: the finest step of each level count, then as many others as WIDE_SEARCH_STEPS allows
    options = series.rate_options(200_000, 2)
    firsts = {(d, n) for n, d in {n: d for d, n in reversed(options)}.items()}
    assert options[0] == (1, 1) and len(firsts) == series.n_q and len(options) < 10
    assert sum(coded_steps(200_000, d) for d, n in options if (d, n) not in firsts) <= WIDE_SEARCH_STEPS
    wide = series.rate_options(1000, 2, channels=64)  # many channels: each way codes them all
    assert set(wide) < set(series.rate_options(1000, 2)) and {n for _, n in wide} == {1, 2, 3, 4}
    wide_firsts = set({n: d for d, n in reversed(wide)}.values())
    assert sum(64 * coded_steps(1000, d) for d, _ in wide if d not in wide_firsts) <= WIDE_SEARCH_STEPS
    assert series.rate_options(1000, 0.05) == []  # below one level at every 16th step
    assert series.rate_options(7, 1) == []  # every 2nd step of 7 is shorter than a frame
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ConfigError, match="bits per sample"):
            series.rate_options(100, bad)


def test_encode_at_rate_keeps_the_closest_option_and_decodes_to_the_original_shape(series, tmp_path):
    x = smooth(400)
    codes = series.encode_at_rate(x, 2.0, "x.csv")
    errors = {o: nmse(x, series.decode(series.encode_series(x, o[1], None, o[0]))[0]) for o in series.rate_options(400, 2)}
    assert (codes.decimate, codes.n_q) == min(errors, key=errors.get)
    assert codes.decimate > 1 and errors[(codes.decimate, codes.n_q)] < errors[(1, 1)] / 2  # a smooth series: coarser
    assert codes.codes.numel() * codes.bits <= 2.0 * x.numel() and codes.length == 400
    y = series.decode(codes)[0]
    assert y.shape == x.shape and nmse(x, y) == pytest.approx(errors[(codes.decimate, codes.n_q)], rel=1e-5)
    save_codes(tmp_path / "x.vqa", codes)
    back = load_codes(tmp_path / "x.vqa")
    assert back.decimate == codes.decimate and torch.equal(back.codes, codes.codes)
    assert b'"decimate"' in to_bytes(codes) and b'"decimate"' not in to_bytes(series.encode_series(x, 1))
    torch.testing.assert_close(series.decode(back)[0], y)
    together = series.decode([codes, series.encode_series(x, 2), back])  # batched decoding skips decimated codes
    torch.testing.assert_close(together[0][0], y)
    torch.testing.assert_close(together[2][0], y)
    rough = torch.randn(1, 400, generator=torch.Generator().manual_seed(1)).cumsum(-1) + torch.randn(1, 400)
    assert series.encode_at_rate(rough, 8.0).decimate == 1  # white noise on a walk: every step matters


def test_decimated_codes_are_checked(series, tmp_path):
    codes = series.encode_series(smooth(64), 2, None, 4)
    assert codes.frames == 4 and codes.model_length == 16
    with pytest.raises(AudioError, match="too short to code at every 16 steps"):
        series.encode_series(smooth(40), 1, "short.csv", 16)
    for bad in (0, Fraction(2, 3), Fraction(513, 2)):
        with pytest.raises(ConfigError, match="decimate must be a step"):
            series.encode_series(smooth(40), 1, None, bad)
    data = bytearray(to_bytes(codes))
    at = data.index(b'"decimate":[4,1]') + len(b'"decimate":[')
    data[at : at + 1] = b"2"  # a header that says another step (its CRC made right again)
    hlen = _PREFIX.unpack_from(data)[2]
    struct.pack_into(_CRC.format, data, _PREFIX.size + hlen, zlib.crc32(bytes(data[: _PREFIX.size + hlen])))
    (tmp_path / "bad.vqa").write_bytes(bytes(data))
    with pytest.raises(TokenFileError, match="frames do not match"):
        load_codes(tmp_path / "bad.vqa")


def test_audio_models_have_no_bits_per_sample_mode():
    codec = Codec(VQVAE(VQVAEConfig(hidden=4, max_hidden=8, dim=4, strides=[2, 2], dilations=[1], n_q=2,
                                    codebook_size=16)), name="tiny")
    with pytest.raises(ConfigError, match="bits per sample"):
        codec.rate_options(100, 2)


def test_cli_encodes_series_within_bits_per_sample(tmp_path, capsys):
    x = smooth(300, 3).T.numpy()
    np.savetxt(tmp_path / "s.csv", x, delimiter=",")
    for b in (1, 2, 4):
        run("encode", tmp_path / "s.csv", "-o", tmp_path / f"s{b}.vqa", "--bits-per-sample", b)
        codes = load_codes(tmp_path / f"s{b}.vqa")
        assert codes.codes.numel() * codes.bits <= b * x.size and codes.decimate >= 1
        run("decode", tmp_path / f"s{b}.vqa", "-o", tmp_path / f"s{b}.npy")
        y = np.load(tmp_path / f"s{b}.npy")
        assert y.shape == x.shape and nmse(torch.from_numpy(x.T), torch.from_numpy(y.T)) < 0.01
    capsys.readouterr()
    run("encode", tmp_path / "s.csv", "-o", tmp_path / "x.vqa", "--bits-per-sample", "2", "--n-q", "1", expect=2)
    assert "instead of --n-q" in one_line(capsys)
    run("encode", tmp_path / "s.csv", "-o", tmp_path / "x.vqa", "--bits-per-sample", "0.01", expect=2)
    assert "s.csv" in (msg := one_line(capsys)) and "cannot be coded within 0.01 bits/sample" in msg
    assert not (tmp_path / "x.vqa").exists()


def test_decimated_codes_survive_a_token_stream(series, tmp_path):
    """`vqaudio convert` to a .vqs stream and back keeps the step; both decode the same."""
    codes = series.encode_at_rate(smooth(500), 1.0)
    assert codes.decimate > 1
    save_codes(tmp_path / "a.vqa", codes)
    run("convert", tmp_path / "a.vqa", "-o", tmp_path / "a.vqs")
    run("convert", tmp_path / "a.vqs", "-o", tmp_path / "b.vqa")
    assert (tmp_path / "a.vqa").read_bytes() == (tmp_path / "b.vqa").read_bytes()
    run("decode", tmp_path / "a.vqs", "-o", tmp_path / "s.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), series.decode(codes)[0].T.numpy())


def test_a_prior_refuses_series_coded_at_a_coarser_step(series, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        save_codes(data / f"{i}.vqa", series.encode_series(smooth(200, seed=i), 1))
    save_codes(data / "coarse.vqa", series.encode_series(smooth(200), 1, None, 2))
    capsys.readouterr()
    run("train-prior", "--codec", "series", "--data", data, "--exp", tmp_path / "prior", "--steps", "1", "--n-q", "1",
        "--layers", "2", "--cycle", "2", "--residual-channels", "4", "--gate-channels", "8", "--skip-channels", "4",
        "--head-channels", "4", "--no-progress", expect=2)
    msg = one_line(capsys)
    assert "coarse.vqa" in msg and "--bits-per-sample" in msg and "--n-q" in msg
