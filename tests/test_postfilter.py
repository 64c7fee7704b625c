"""The formant post-filter: the op (compiled kernel against the PyTorch reference), streaming in pieces, what it does
to a spectrum, and its place in decoding (offline, batched, streamed, the CLI switch, export)."""

from __future__ import annotations

import math

import pytest
import torch
from test_models import tiny

from vqaudio.checkpoint import read_manifest, save_checkpoint
from vqaudio.cli import main
from vqaudio.codec import Codec, load_codec, load_codes
from vqaudio.errors import ConfigError
from vqaudio.ops.postfilter import formant_postfilter, formant_postfilter_reference, has_compiled_postfilter, history
from vqaudio.postfilter import ORDER, Postfilter, subframe_for

ARGS = dict(order=10, gamma_num=0.55, gamma_den=0.7, tilt=0.3, sample_rate=8000)


def ar_signal(n: int, seed: int = 0, poles=((0.97, 500.0), (0.95, 1500.0))) -> torch.Tensor:
    """White noise through resonances (radius, Hz) at 8 kHz: a vowel-like spectrum, float32 [n]."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, generator=g, dtype=torch.float64)
    a = torch.tensor([1.0], dtype=torch.float64)
    for r, f in poles:
        w = 2 * math.pi * f / 8000
        a = torch.nn.functional.conv1d(a[None, None], torch.tensor([[[r * r, -2 * r * math.cos(w), 1.0]]],
                                                                  dtype=torch.float64), padding=2)[0, 0]
    y = torch.zeros(n, dtype=torch.float64)
    for t in range(n):
        acc = e[t]
        for k in range(1, len(a)):
            if t - k >= 0:
                acc -= a[k] * y[t - k]
        y[t] = acc
    return (0.1 * y / y.std()).float()


@pytest.fixture(scope="module")
def vowel() -> torch.Tensor:
    return ar_signal(84 * 60)


@pytest.mark.skipif(not has_compiled_postfilter(), reason="vqaudio._C without the formant_postfilter op")
@pytest.mark.parametrize("subframe, order", [(84, 10), (40, 6), (160, 16)])
def test_compiled_kernel_matches_the_reference(vowel, subframe, order):
    args = {**ARGS, "order": order}
    h = history(subframe, order)
    n = vowel.shape[-1] // subframe * subframe
    x = torch.stack([torch.cat([torch.zeros(h), vowel[:n]]), torch.cat([vowel[:h], 3 * vowel[:n].flip(0)])])
    a = torch.ops.vqaudio.formant_postfilter(x, h, subframe, *args.values())
    b = formant_postfilter_reference(x, h, subframe, *args.values())
    assert a.shape == b.shape == (2, n)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.equal(a, x[:, h:])  # it filters


@pytest.mark.skipif(not has_compiled_postfilter(), reason="vqaudio._C without the formant_postfilter op")
def test_opcheck(vowel):
    h = history(84, 10)
    x = torch.cat([torch.zeros(h), vowel[: 84 * 4]])[None]
    torch.library.opcheck(torch.ops.vqaudio.formant_postfilter.default, (x, h, 84, *ARGS.values()))


@pytest.mark.parametrize("bad, message", [(dict(context=10), "context must be"), (dict(extra=5), "multiple of subframe"),
                                          (dict(order=30), "order in")])
def test_bad_arguments_are_one_line_errors(vowel, bad, message):
    h = history(84, 10)
    x = torch.cat([torch.zeros(h), vowel[: 84 * 2 + bad.get("extra", 0)]])[None]
    args = {**ARGS, "order": bad.get("order", 10)}
    for fn in (formant_postfilter, formant_postfilter_reference):
        with pytest.raises((ValueError, RuntimeError), match=message):
            fn(x, bad.get("context", h), 84, *args.values())


@pytest.mark.parametrize("seed", [0, 1])
def test_pieces_of_any_size_equal_the_whole(vowel, seed):
    """A streamed signal is filtered exactly as the whole: each subframe reads a fixed span of history."""
    x = torch.stack([vowel, -0.5 * vowel])[:, :5000]
    whole = Postfilter.apply(x, 8000, 84)
    pf, out, i = Postfilter(8000, 84), [], 0
    g = torch.Generator().manual_seed(seed)
    while i < x.shape[-1]:
        n = int(torch.randint(1, 300, (1,), generator=g))
        out.append(pf.push(x[:, i : i + n]))
        i += n
    streamed = torch.cat([*out, pf.flush()], dim=-1)
    assert streamed.shape == whole.shape == x.shape
    assert torch.equal(streamed, whole)


def test_it_sharpens_formants_and_keeps_the_level(vowel):
    """On a two-resonance signal the peak rises against the valley after it and the weak band far from both falls;
    the energy stays."""
    y = Postfilter.apply(vowel[None], 8000, 84)[0]

    def spectrum_db(s: torch.Tensor) -> torch.Tensor:
        frames = s[1000:].unfold(0, 256, 128) * torch.hann_window(256)
        return 10 * torch.log10(torch.fft.rfft(frames).abs().square().mean(0) + 1e-12)  # [129] bins of 31.25 Hz

    gain = spectrum_db(y) - spectrum_db(vowel)  # dB per bin of 31.25 Hz
    peak, valley, floor = 16, 32, slice(80, 112)  # 500 Hz, 1000 Hz, and 2.5-3.5 kHz (30 dB below the peak)
    assert gain[peak] > gain[valley] and gain[peak] - gain[floor].mean() > 2.0  # seen: +0.6 dB and +3.7 dB
    ex, ey = vowel[1000:].square().sum(), y[1000:].square().sum()
    assert 0.8 < (ey / ex).item() < 1.25
    assert Postfilter.apply(torch.zeros(1, 1000), 8000, 84).abs().max() == 0  # silence stays silence


def test_subframe_is_whole_hops_of_at_least_10_ms():
    assert subframe_for(8000, 84) == 84 and subframe_for(8000, 32) == 96 and subframe_for(16000, 320) == 320
    assert Postfilter(8000, 32).context == history(96, ORDER)


@pytest.fixture(scope="module")
def pf_codec() -> Codec:
    torch.manual_seed(0)
    model = tiny(strides=[2, 3], postfilter=True)  # hop 6: subframe 84
    return Codec(model, name="tiny")


def test_decode_passes_the_postfilter_in_every_path(pf_codec, vowel, tmp_path):
    """Offline decode is the unfiltered decode through Postfilter; batched and streamed decodes give the same."""
    plain = Codec(pf_codec.model, name="tiny", sha256=pf_codec.sha256, postfilter=False)
    assert pf_codec.postfilter and not plain.postfilter
    x = vowel[None, :3001]
    codes = pf_codec.encode(x, 8000)
    y, _ = pf_codec.decode(codes)
    y0, _ = plain.decode(codes)
    frames_out = codes.frames * pf_codec.hop
    raw = pf_codec.model.decode(codes.codes)[:, 0, :frames_out]
    torch.testing.assert_close(y, Postfilter.apply(raw, 8000, pf_codec.hop)[:, : x.shape[-1]], atol=1e-6, rtol=0)
    assert y.shape == y0.shape == x.shape and (y - y0).abs().max() > 1e-3
    other = pf_codec.encode(vowel[None, 500:2200].flip(-1), 8000)
    batch = pf_codec.decode([codes, other])
    torch.testing.assert_close(batch[0][0], y, atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1][0], pf_codec.decode(other)[0], atol=1e-5, rtol=0)
    dec = pf_codec.stream_decoder()
    pieces = [dec.push(codes.codes[..., i : i + 7]) for i in range(0, codes.frames, 7)]
    streamed = torch.cat([*pieces, dec.flush(length=x.shape[-1])], dim=-1)
    torch.testing.assert_close(streamed, y, atol=1e-5, rtol=0)


def test_cli_no_postfilter_and_export_switch(pf_codec, vowel, tmp_path):
    import soundfile as sf

    save_checkpoint(tmp_path / "ckpt", pf_codec.model)
    off = tmp_path / "off"
    assert main(["export", str(tmp_path / "ckpt"), "-o", str(off), "--postfilter", "off"]) == 0
    assert read_manifest(off)["sha256"] == read_manifest(tmp_path / "ckpt")["sha256"]  # same weights
    assert not load_codec(off).postfilter and load_codec(tmp_path / "ckpt").postfilter
    wav = tmp_path / "in.wav"
    sf.write(wav, vowel[:4000].numpy(), 8000)
    vqa = tmp_path / "in.vqa"
    assert main(["encode", str(wav), "--model", str(tmp_path / "ckpt"), "-o", str(vqa)]) == 0
    on_wav, off_wav = tmp_path / "on.wav", tmp_path / "off.wav"
    assert main(["decode", str(vqa), "--model", str(tmp_path / "ckpt"), "-o", str(on_wav)]) == 0
    assert main(["decode", str(vqa), "--model", str(tmp_path / "ckpt"), "--no-postfilter", "-o", str(off_wav)]) == 0
    codes = load_codes(vqa)
    expect_on = load_codec(tmp_path / "ckpt").decode(codes)[0][0].numpy()
    expect_off = load_codec(tmp_path / "ckpt", postfilter=False).decode(codes)[0][0].numpy()
    got_on, got_off = sf.read(on_wav, dtype="float32")[0], sf.read(off_wav, dtype="float32")[0]
    assert abs(got_on - expect_on).max() < 1e-4 and abs(got_off - expect_off).max() < 1e-4
    assert abs(got_on - got_off).max() > 1e-3


def test_series_models_have_no_postfilter(tmp_path):
    with pytest.raises(ConfigError, match="postfilter"):
        tiny(kind="series", sample_rate=None, postfilter=True)
    with pytest.raises(ConfigError, match="post-filter is for audio"):
        Codec(tiny(kind="series", sample_rate=None), postfilter=True)


def test_shipped_speech_model_has_it_on():
    assert load_codec("speech-8k").postfilter and not load_codec("speech-8k-asterisk").postfilter
    assert not load_codec("speech-8k", postfilter=False).postfilter


def test_an_extension_without_an_op_falls_back_with_a_warning(monkeypatch):
    from vqaudio import ops

    if ops.KERNEL != "compiled":
        pytest.skip("the compiled extension is not loaded")
    assert ops.compiled_ops(("formant_postfilter",), "unused") == has_compiled_postfilter()
    with pytest.warns(UserWarning, match="predates the no_such_op op"):
        assert not ops.compiled_ops(("no_such_op",), "the reference runs")
    monkeypatch.setenv("VQAUDIO_KERNEL", "compiled")
    with pytest.raises(ImportError, match="VQAUDIO_KERNEL=compiled but vqaudio._C predates"):
        ops.compiled_ops(("no_such_op",), "the reference runs")


def test_info_says_whether_decoding_post_filters(capsys):
    assert main(["info", "speech-8k"]) == 0
    assert "\npostfilter: on\n" in capsys.readouterr().out
    assert main(["info", "speech-8k-asterisk"]) == 0
    assert "\npostfilter: off\n" in capsys.readouterr().out
