"""Streaming encode and decode (vqaudio/streaming.py) with the shipped speech-8k model on real speech: the same
code bits for any push sizes and thread counts, equal to the offline ``encode`` bit for bit, audio equal to
``decode`` to float rounding, and the declared ``codec.latency`` checked by perturbing the input after it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import exact_codes
from test_model_names import FIXTURE, signal

from vqaudio.codec import load_codec, load_codes
from vqaudio.errors import AudioError

DECODE_ATOL = 1e-5  # streamed vs offline audio: float rounding of conv windows of other lengths (seen: ~5e-7)


@pytest.fixture(scope="module")
def codec():
    return load_codec("speech-8k")


@pytest.fixture(scope="module")
def speech(speech_files) -> torch.Tensor:
    """About 12 s of prompts from the asterisk voices, concatenated: float32 [1, T] at 8 kHz."""
    parts, n = [], 0
    for p in speech_files[::7]:
        x, sr = sf.read(str(p), dtype="float32")
        if sr == 8000 and x.ndim == 1:
            parts.append(x)
            n += len(x)
        if n > 12 * 8000:
            break
    return torch.from_numpy(np.concatenate(parts))[None]


def random_pushes(x: torch.Tensor, push, seed: int, largest: int = 400) -> list[torch.Tensor]:
    """``push`` pieces of ``x`` of random sizes (a fifth of them 1 sample) along the last axis; the outputs."""
    g = torch.Generator().manual_seed(seed)
    out, i = [], 0
    while i < x.shape[-1]:
        n = 1 if torch.rand(1, generator=g) < 0.2 else int(torch.randint(1, largest, (1,), generator=g))
        out.append(push(x[..., i : i + n]))
        i += n
    return out


def stream_encode(codec, x: torch.Tensor, seed: int, **kw) -> torch.Tensor:
    enc = codec.stream_encoder(**kw)
    return torch.cat([*random_pushes(x, enc.push, seed), enc.flush()], dim=-1)


def one_push(codec, x: torch.Tensor, **kw) -> torch.Tensor:
    """The stream encoder fed the whole input at once."""
    enc = codec.stream_encoder(**kw)
    return torch.cat([enc.push(x), enc.flush()], dim=-1)


def stream_codes(codec, x: torch.Tensor):
    """``codec.encode(x)``'s Codes holding the stream encoder's codes (to decode them offline)."""
    c = codec.encode(x, 8000)
    c.codes = one_push(codec, x)
    return c


@pytest.mark.parametrize("seed, threads", [(0, 1), (1, 2)])
@exact_codes
def test_streamed_codes_equal_offline_encode_exactly(codec, speech, seed, threads):
    """Pushes of 1 to 400 samples, the offline encoder (15 s chunks) and the batch API: the same bits (the encoder's
    convs are ``exact_conv1d``), whatever the torch thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        offline = codec.encode(speech, 8000).codes
        streamed = stream_encode(codec, speech, seed)
        batch = codec.encode([speech, speech[:, 1000:]], 8000)
    finally:
        torch.set_num_threads(before)
    assert offline.shape == (1, 4, -(-speech.shape[-1] // codec.hop))
    assert torch.equal(streamed, offline)
    assert torch.equal(batch[0].codes, offline)
    assert torch.equal(batch[1].codes, codec.encode(speech[:, 1000:], 8000).codes)
    assert torch.equal(one_push(codec, speech), offline)


@exact_codes
def test_stereo_every_length_near_a_block_and_n_q(codec, speech):
    x = torch.cat([speech[:, :30_000], speech[:, 5_000:35_000]])  # [2, T]: channels are items
    for length in (1, 83, 84, 85, 16 * 84 - 1, 16 * 84 + 275, 30_000):
        y = x[:, :length]
        streamed = stream_encode(codec, y, length, n_q=2)
        assert torch.equal(streamed, one_push(codec, y, n_q=2)), length
        assert torch.equal(streamed, codec.encode(y, 8000, n_q=2).codes), length


def test_fixture_and_resampled_input():
    """The fixture (0.5 s at 16 kHz, written by speech-8k-asterisk): the stream encoder resamples as it goes; same
    codes as encode."""
    codec = load_codec("speech-8k-asterisk")
    x, sr = signal()
    x = torch.from_numpy(x)[None]
    offline = codec.encode(x, sr).codes
    fixture = load_codes(FIXTURE).codes
    assert (offline != fixture).sum() <= 2  # written by the earlier chunking: near-ties may differ
    streamed = stream_encode(codec, x, 3, sample_rate=sr)
    assert (streamed != offline).sum() <= 0.002 * offline.numel()  # the resampler's and the chunks' rounding
    dec = codec.stream_decoder()
    y = torch.cat([*random_pushes(fixture, dec.push, 4, largest=5), dec.flush()], -1)
    ref, _ = codec.decode(load_codes(FIXTURE), "model")
    assert y.shape[-1] == fixture.shape[-1] * codec.hop >= ref.shape[-1]
    torch.testing.assert_close(y[..., : ref.shape[-1]], ref, atol=DECODE_ATOL, rtol=0)


def test_streamed_audio_equals_decode(codec, speech):
    codes = codec.encode(speech, 8000)
    ref, rate = codec.decode(codes, "model")
    dec = codec.stream_decoder()
    pieces = random_pushes(codes.codes, dec.push, 5, largest=6)
    y = torch.cat([*pieces, dec.flush(length=speech.shape[-1])], dim=-1)
    assert rate == 8000 and y.shape == ref.shape == speech.shape
    err = (y - ref).abs().max().item()
    print(f"streamed vs offline decode: max |diff| {err:.2e}")
    assert err <= DECODE_ATOL
    assert sum(p.shape[-1] > 0 for p in pieces) > len(pieces) // 2  # audio comes out as codes go in


def test_latency_holds_and_is_tight(codec, speech):
    """After ``n`` input samples every decoded sample ``t <= n - 1 - latency`` is out, and changing the
    input after ``n`` changes none of the audio already out. The bound is the receptive fields'."""
    lat = codec.latency
    assert (lat.samples, lat.ms) == (274 + 11 * 84, 1000 * (274 + 11 * 84) / 8000)  # speech-8k: 149.75 ms
    x = speech[:, :40_000]
    cut = 20_000 + 37
    y = x.clone()
    y[:, cut:] = torch.randn(1, x.shape[-1] - cut) * 0.3  # perturbed after the cut

    def emitted_at_cut(sig: torch.Tensor) -> torch.Tensor:
        enc, dec = codec.stream_encoder(), codec.stream_decoder()
        out = [dec.push(enc.push(p)) for p in random_pushes(sig[:, :cut], lambda p: p, 6)]
        return torch.cat(out, -1)

    a, b = emitted_at_cut(x), emitted_at_cut(y)
    assert a.shape[-1] >= cut - lat.samples  # everything up to `latency` before the newest sample is out
    assert a.shape[-1] < cut - lat.samples + codec.hop  # and no more than the receptive fields allow
    assert torch.equal(a, b)
    whole_y, _ = codec.decode(stream_codes(codec, y), "model")
    torch.testing.assert_close(a, whole_y[:, : a.shape[-1]], atol=DECODE_ATOL, rtol=0)  # what was out is final
    # tight: the encoder's frame f sees sample f hop + 274, the decoder's frame f - 11 sees code f
    m, hop, f = codec.model, codec.hop, 200
    z = m.encoder(m._pad(x[:, None]))
    x2 = x.clone()
    x2[:, f * hop + lat.encoder] += 0.1
    changed = (m.encoder(m._pad(x2[:, None])) != z).any(1)[0].nonzero()
    assert changed.min().item() == f
    c = codec.encode(x, 8000).codes
    c2 = c.clone()
    c2[:, 0, f] = (c2[:, 0, f] + 1) % codec.codebook_size
    moved = (m.decode(c2) != m.decode(c)).flatten().nonzero()
    assert moved.min().item() // hop == f - lat.decoder


@exact_codes
def test_series_stream(tmp_path: Path):
    from vqaudio.codec import Codec
    from vqaudio.models.vqvae import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=3, hidden=8, max_hidden=16, dim=8, n_q=2,
                              codebook_size=32, strides=[2, 2], kmeans_init=False))
    codec = Codec(model, name="series")
    x = torch.randn(3, 5001).cumsum(-1)
    codes = codec.encode(x)
    _, stats = model.normalize(x[None])
    streamed = stream_encode(codec, x, 7, stats=stats)
    assert torch.equal(streamed, one_push(codec, x, stats=stats))
    assert torch.equal(streamed, codes.codes)
    assert codec.latency.ms is None


@pytest.mark.parametrize("strides,kernel,act,hidden,causal,frame", [([2, 3, 5], 7, "elu", 4, False, ()),
                                                                     ([4, 1, 2], 3, "snake", 4, False, ()),
                                                                     ([3], 4, "elu", 4, False, ()), ([2, 4], 7, "elu", 16, False, ()),
                                                                     ([2, 4], 7, "elu", 16, True, ()), ([3, 2], 5, "snake", 16, True, ()),
                                                                     ([2, 4], 7, "elu", 16, False, (1, 3)),
                                                                     ([3, 2], 5, "elu", 16, True, (2,)),
                                                                     ([2, 4], 7, "elu", 16, False, ((1, 3), 3, 4))])
@pytest.mark.parametrize("exact", [False, pytest.param(True, marks=exact_codes)])
def test_stream_layers_equal_the_decoder(strides, kernel, act, hidden, causal, frame, exact):
    """The layer-by-layer streaming decoder of odd geometries (odd and even kernels, stride 1, snake, causal, residual
    units at the frame rate, also of their own kernel and bottleneck: ``(dilations, kernel, compress)``) equals
    the decoder on the whole input, for pushes of 0 to 5 frames; ``exact``: the convs (transposed ones as kernel-2
    convs) through ``exact_conv1d`` and, where their output channels are a multiple of 16, ``exact_conv1d_narrow``
    (``hidden`` 16), with ELUs fused, as ``StreamDecoder`` runs them on the CPU."""
    from vqaudio.models.conv import Decoder
    from vqaudio.models.stream_layers import streaming

    torch.manual_seed(0)
    own = dict(frame_dilations=frame)
    if frame and isinstance(frame[0], tuple):  # (dilations, kernel, compress)
        own = dict(zip(("frame_dilations", "frame_kernel", "frame_compress"), frame, strict=True))
    dec = Decoder(1, 8, strides, hidden=hidden, max_hidden=4 * hidden, kernel=kernel, dilations=(1, 3), act=act,
                  norm=False, causal=causal, **own).eval()
    z = torch.randn(2, 8, 37)
    with torch.inference_mode():
        whole = dec(z)
        stack = streaming(dec, exact)
        g = torch.Generator().manual_seed(1)
        out, i = [], 0
        while i < z.shape[-1]:
            n = int(torch.randint(0, 6, (1,), generator=g))
            out.append(stack.push(z[..., i : i + n]))
            i += n
        out.append(stack.flush())
    y = torch.cat([o for o in out if o is not None], -1)
    assert y.shape == whole.shape
    torch.testing.assert_close(y, whole, atol=1e-5, rtol=0)


@exact_codes
def test_train_a_causal_model_and_its_latency_holds(tmp_path, speech_dir, speech):
    """``vqaudio train --causal both`` makes a model whose declared latency is one hop - 1 samples (no lookahead),
    and streaming holds it: after ``n`` samples every decoded sample ``t <= n - 1 - latency`` is out, final, and
    untouched by what follows."""
    from vqaudio.checkpoint import load_model
    from vqaudio.cli import main
    from vqaudio.codec import Codec

    exp = tmp_path / "exp"
    assert main(["train", "--data", str(speech_dir), "--exp", str(exp), "--segment", "512", "--batch-size", "4",
                 "--hidden", "4", "--max-hidden", "8", "--dim", "8", "--n-q", "2", "--codebook-size", "16",
                 "--strides", "2,4", "--causal", "both", "--steps", "3", "--no-progress", "--valid-every", "3",
                 "--valid-batches", "1", "--no-plots"]) == 0
    model = load_model(exp / "last")
    assert model.config.encoder_causal and model.config.decoder_causal
    codec = Codec(model, name="causal")
    lat = codec.latency
    assert (lat.samples, lat.encoder, lat.decoder) == (7, 7, 0)  # hop 8: a frame is out once its last sample is in
    x = speech[:, :6000]
    y = x.clone()
    cut = 3001
    y[:, cut:] = 0.3 * torch.randn(1, x.shape[-1] - cut)
    outs = []
    for sig in (x, y):
        enc, dec = codec.stream_encoder(), codec.stream_decoder()
        outs.append(torch.cat(random_pushes(sig[:, :cut], lambda p, e=enc, d=dec: d.push(e.push(p)), 8), -1))
    assert outs[0].shape[-1] >= cut - lat.samples and torch.equal(outs[0], outs[1])
    whole, _ = codec.decode(stream_codes(codec, y), "model")
    torch.testing.assert_close(outs[0], whole[:, : outs[0].shape[-1]], atol=DECODE_ATOL, rtol=0)
    assert torch.equal(stream_encode(codec, x, 9), one_push(codec, x))
    assert torch.equal(one_push(codec, x), codec.encode(x, 8000).codes)


@exact_codes
def test_codes_do_not_depend_on_threads(codec, speech, monkeypatch):
    """The stream's layers themselves (without ``one_thread``) give the same bits at 1 or 2 threads."""
    from vqaudio import streaming

    x = speech[:, : 5 * 8000]
    monkeypatch.setattr(streaming, "one_thread", contextlib.nullcontext)  # the layers themselves, at 1 and 2 threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = one_push(codec, x)
        torch.set_num_threads(2)
        two = one_push(codec, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(one, codec.encode(x, 8000).codes)


@exact_codes  # it watches the encoder's exact_conv1d calls
def test_pushes_run_on_one_thread_and_restore_the_callers(codec, speech, monkeypatch):
    """Encoder and decoder pushes compute on one intra-op thread (too small to split) and leave the caller's
    thread count as it was."""
    from vqaudio.models import stream_layers

    seen: list[tuple[str, int]] = []
    stack = ["caller"]  # which stream's layers are running

    def spy(conv):
        def wrapped(*args, **kw):
            seen.append((stack[-1], torch.get_num_threads()))
            return conv(*args, **kw)
        return wrapped

    def tagged(tag, method):
        def wrapped(*args):
            stack.append(tag)
            try:
                return method(*args)
            finally:
                stack.pop()
        return wrapped

    for name in ("exact_conv1d", "exact_conv1d_narrow"):  # the stream layers' convs, encoder and decoder
        monkeypatch.setattr(stream_layers, name, spy(getattr(stream_layers, name)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        enc, dec = codec.stream_encoder(), codec.stream_decoder()
        for tag, stream in (("encoder", enc), ("decoder", dec)):
            stream.stack.push, stream.stack.flush = tagged(tag, stream.stack.push), tagged(tag, stream.stack.flush)
        for i in range(0, 4000, 160):
            dec.push(enc.push(speech[:, i : i + 160]))
        dec.push(enc.flush())
        dec.flush()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert {tag for tag, _ in seen} == {"encoder", "decoder"} and {n for _, n in seen} == {1}


def test_push_takes_t_as_one_channel_and_refuses_bad_shapes(codec, speech):
    """``push([t])`` is one channel (as ``Codec.encode`` reads ``[T]``); a tensor of another rank or dtype, or a change
    of channel count mid-stream, is a one-line AudioError instead of codes of the wrong shape."""
    x = speech[0, :4000]
    a, b = codec.stream_encoder(), codec.stream_encoder()
    one = torch.cat([a.push(x), a.flush()], dim=-1)
    two = torch.cat([b.push(x[None]), b.flush()], dim=-1)
    assert one.shape[:2] == (1, codec.n_q) and torch.equal(one, two)
    e = codec.stream_encoder()
    for bad in (x[None, None], x.to(torch.int16), torch.zeros(0, 0, 3)):
        with pytest.raises(AudioError, match="push takes float samples"):
            e.push(bad)
    e.push(x[None])
    with pytest.raises(AudioError, match="2 channel"):
        e.push(torch.stack([x, x]))
