"""Batches in the codec API: ``Codec.encode`` of ``[C, T]``, ``[B, C, T]`` and lists of ``[C, T_i]``, ``decode`` of lists;
the same codes as coding the items one at a time (padding-aware batches), and one-line errors for other shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from test_codec import trained_checkpoint

from vqaudio.batch import batches, masked, pad_stack
from vqaudio.codec import Codec, load_codec
from vqaudio.errors import AudioError, TokenFileError
from vqaudio.models.vqvae import VQVAE, VQVAEConfig
from vqaudio.ops.exact_conv import has_exact_conv


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


@pytest.fixture(scope="module")
def clips(speech_files) -> list[torch.Tensor]:
    """30 mono clips of real speech, 0.5 to 3 s at 8 kHz, of random lengths (some odd, none a multiple of hop)."""
    g = np.random.default_rng(0)
    out = []
    for p in speech_files:
        x, sr = sf.read(str(p), dtype="float32")
        n = int(g.uniform(0.5, 3.0) * 8000) | 1
        if sr == 8000 and x.ndim == 1 and len(x) >= n:
            out.append(torch.from_numpy(x[:n].copy())[None])
        if len(out) == 30:
            return out
    pytest.skip("not enough speech files")


def same_codes(many, one) -> None:
    """Equal headers and the same code bits: the encoder's convs (``exact_conv1d``) give a frame's latent the same
    bits at any batch size and padding, so no near-tie can flip. Without the compiled op the encoder runs ATen's
    convs, which round differently at another batch size (~1e-6) and flipped 1 code of 2644 once: 0.1% may differ."""
    assert len(many) == len(one)
    for a, b in zip(many, one, strict=True):
        assert a.header() == b.header() and a.codes.shape == b.codes.shape
        differ = int((a.codes != b.codes).sum())
        allowed = 0 if has_exact_conv() else 1e-3 * a.codes.numel()
        assert differ <= allowed, f"{differ} of {a.codes.numel()} codes differ"


@pytest.mark.parametrize("rate", [8000, 16000])
def test_a_list_encodes_and_decodes_as_one_at_a_time(ckpt, clips, rate):
    codec = load_codec(ckpt)
    items = clips if rate == 8000 else [AF.resample(c, 8000, rate) for c in clips]
    items = items[:-1] + [torch.cat([items[-1], 0.5 * items[-1]])]  # one stereo item among the mono ones
    many = codec.encode(items, rate)
    one = [codec.encode(x, rate) for x in items]
    same_codes(many, one)
    assert many[-1].codes.shape[0] == 2
    decoded = codec.decode(many)
    for (y, sr), c in zip(decoded, many, strict=True):  # decoding a list = decoding its items alone
        ref, ref_sr = codec.decode(c)
        assert sr == ref_sr == rate and y.shape == ref.shape
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)  # float rounding of another conv batch size only


def test_a_batch_tensor_and_items_longer_than_a_chunk(ckpt, clips):
    codec = load_codec(ckpt)
    x = torch.stack([c[:, :4001] for c in clips[:5]])  # [B, C, T]
    same_codes(codec.encode(x, 8000), [codec.encode(c, 8000) for c in x])
    codec.chunk_seconds = 1.0  # 1 s chunks: the items over about 1.1 s are coded one by one, the others batched
    assert sum(c.shape[-1] < 8800 for c in clips) >= 5 and sum(c.shape[-1] > 8800 for c in clips) >= 5
    many = codec.encode(clips, 8000)
    same_codes(many, [codec.encode(c, 8000) for c in clips])
    for (y, _), c in zip(codec.decode(many), many, strict=True):
        torch.testing.assert_close(y, codec.decode(c)[0], atol=1e-5, rtol=0)


def test_the_mask_is_what_makes_it_exact(ckpt, clips):
    """Without masking each layer's input past an item's end, the padded batch gives other codes at its end."""
    model = load_codec(ckpt).model
    rows = [c for c in clips[:8]]
    frames = [-(-r.shape[-1] // model.hop) for r in rows]
    x = pad_stack(rows, max(frames) * model.hop)
    alone = [model.encode(r[None])[0] for r in rows]
    plain = model.encode(x)
    with masked(model.encoder, frames, [r.shape[-1] for r in rows]):
        exact = model.encode(x)
    assert all(torch.equal(exact[i, :, :f], alone[i]) for i, f in enumerate(frames))
    assert sum(not torch.equal(plain[i, :, :f], alone[i]) for i, f in enumerate(frames)) >= 4


def test_series_lists(tmp_path):
    torch.manual_seed(0)
    codec = Codec(VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=2, hidden=8, max_hidden=16, dim=8,
                                    n_q=2, codebook_size=32, strides=[2, 2], kmeans_init=False)), name="series")
    g = torch.Generator().manual_seed(1)
    items = [torch.randn(2, n, generator=g).cumsum(-1) + 10 * k for k, n in enumerate((301, 77, 1000, 5, 640))]
    many = codec.encode(items)
    same_codes(many, [codec.encode(x) for x in items])
    for (y, rate), c in zip(codec.decode(many), many, strict=True):
        assert rate is None
        torch.testing.assert_close(y, codec.decode(c)[0], atol=1e-4, rtol=1e-5)
    with pytest.raises(AudioError, match=r"input\[1\]: series has 1 channel"):
        codec.encode([items[0], items[1][:1]])


def test_per_channel_series_lists_code_every_channel_alone(tmp_path):
    """A single-channel series model batches the channels of all items as rows, each with its own statistics: the
    same codes, statistics and decoded series as coding the items one at a time (what the series benchmark uses)."""
    torch.manual_seed(0)
    codec = Codec(VQVAE(VQVAEConfig(kind="series", sample_rate=None, hidden=8, max_hidden=16, dim=8, n_q=3,
                                    codebook_size=16, strides=[2, 2], kmeans_init=False)), name="series")
    assert codec.per_channel
    g = torch.Generator().manual_seed(2)
    items = [torch.randn(c, n, generator=g).cumsum(-1) * (1 + 10 * k) + k for k, (c, n) in
             enumerate(((3, 301), (1, 77), (2, 1000), (1, 5), (4, 640), (2, 4)))]
    codec.chunk_steps = 512  # the 640- and 1000-step items are coded one by one, the others batched as rows
    many = codec.encode(items, n_q=2)
    same_codes(many, [codec.encode(x, n_q=2) for x in items])
    assert [c.codes.shape[:2] for c in many] == [(x.shape[0], 2) for x in items]
    torch.testing.assert_close(torch.tensor(many[0].stats["mean"]), items[0].mean(-1))
    decoded = codec.decode(many)
    for (y, rate), c, x in zip(decoded, many, items, strict=True):
        assert rate is None and y.shape == x.shape
        torch.testing.assert_close(y, codec.decode(c)[0], atol=1e-4, rtol=1e-5)
    alone = codec.encode(items[0][1:2], n_q=2)  # a channel coded alone = the same channel of its series
    assert torch.equal(alone.codes[0], many[0].codes[1])
    torch.testing.assert_close(codec.decode(alone)[0][0], decoded[0][0][1], atol=1e-4, rtol=1e-5)
    with pytest.raises(AudioError, match=r"input\[1\]: .*3 time step"):
        codec.encode([items[0], items[0][:, :3]])


def test_batches_are_padding_aware():
    assert batches([5, 100, 7, 90, 6], budget=200) == [[1, 3], [2, 4, 0]]
    assert batches([300, 1], budget=200) == [[0], [1]]  # an item over the budget goes alone


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 1, 1, 5), r"input: expected a float tensor \[T\], \[C, T\] or \[B, C, T\], or a list of \[C, T\] "
                              r"tensors, got torch.float32 \[1, 1, 1, 5\]"),
    ([torch.zeros(1, 800), torch.zeros(1, 800, dtype=torch.int16)], r"input\[1\]: expected .* got torch.int16 \[1, 800\]"),
    (["talk.wav"], r"input\[0\]: expected .* got str"),
    ([torch.zeros(1, 800), torch.zeros(1, 0)], r"input\[1\]: is empty"),
    ([torch.full((1, 800), float("nan"))], r"input\[0\]: contains NaN"),
])
def test_other_shapes_are_one_line_errors(ckpt, bad, message):
    with pytest.raises(AudioError, match=message) as info:
        load_codec(ckpt).encode(bad, 8000)
    assert "\n" not in str(info.value)


def test_decode_of_something_else_is_one_line(ckpt, clips):
    codec = load_codec(ckpt)
    codes = codec.encode(clips[0], 8000)
    for bad in (codes.codes, [codes, "x.vqa"]):
        with pytest.raises(TokenFileError, match="decode takes Codes or a list of Codes") as info:
            codec.decode(bad)
        assert "\n" not in str(info.value)
