"""The codec: audio or series in, ``.vqa`` codes out, and back. One code path for the CLI and the API.

::

    codec = load_codec("speech-8k")                    # or a checkpoint / experiment folder
    codes = codec.encode(wav, sample_rate)             # wav: float32 [C, T]
    save_codes("x.vqa", codes); codes = load_codes("x.vqa")
    wav, sr = codec.decode(codes)                      # back at the original rate (or "model")

**Channel policy.** Audio models are mono: the ``C`` channels of a file are coded as ``C``
separate items (``codes[C, n_q, F]``) and restored as ``C`` channels on decode. Single-channel series
models (the generalist ``series``, TOTEM-style) do the same with any ``C``, each channel with its own RevIN
mean and std (:attr:`Codec.per_channel`); multichannel series models code their ``C`` channels together
(``codes[1, n_q, F]``) and need exactly the model's channel count. Series shorter than one frame
(:attr:`Codec.min_length`) or with a constant channel are refused (:func:`vqaudio.io.check_series_codable`).

**Chunking.** Input is resampled to the model's rate and encoded chunk by chunk, each chunk with
enough context on both sides (the resampler's filter width, the encoder's receptive field) that the
codes equal those of encoding the whole file at once, up to float rounding (a code can flip only
where two codebook entries are within rounding of each other). Decoding streams the same way with
the decoder's receptive field. Memory is bounded by the chunk size, not the file length: files
are read and written block by block (:meth:`Codec.encode_file`, :meth:`Codec.decode_to_file`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as AT
from torch import Tensor

from vqaudio import registry, tokenfile
from vqaudio.errors import AudioError, CheckpointError, ConfigError, TokenFileError
from vqaudio.input_warnings import ClipCounter, warn_index, warn_rate
from vqaudio.io import (
    _AUDIO_FORMATS,
    _DEFAULT_SUBTYPE,
    SeriesTable,
    atomic_path,
    check_not_truncated,
    check_series_codable,
    is_audio_path,
    is_series_path,
    read_series,
    resample_problem,
    save_series,
)
from vqaudio.models.vqvae import VQVAE, SeriesStats, VQVAEConfig
from vqaudio.postfilter import Postfilter
from vqaudio.series_index import RegularIndex
from vqaudio.series_resample import center_series, coded_steps, interpolate
from vqaudio.series_resample import decimate as decimate_series
from vqaudio.streaming import Latency, StreamDecoder, StreamEncoder, latency_of
from vqaudio.tokenfile import Codes, resampled_length, series_step

__all__ = ["Codes", "Codec", "load_codec", "load_codec_for", "find_codec_for", "save_codes", "load_codes", "ChunkedRunner",
           "StreamResampler"]


class ChunkedRunner:
    """Apply ``fn`` to a stream along its last axis in overlapping chunks; the pieces concatenate to
    ``fn(whole stream)``.

    ``fn`` maps input ``[..., n]`` to output ``[..., m]`` where output unit ``k`` (``out_unit``
    samples) is a function of input units (``unit`` samples) ``k - left .. k + right`` only
    (``context``: ``(left, right)``, or one number for both), with zero padding or other edge effects
    confined to units within the context of the ends. Chunks of ``chunk`` units are processed with
    their context of real signal on both sides (except at the stream's ends, exactly as for the
    whole stream), and the context is discarded. ``push(x, eager=True)`` also emits every unit whose
    right context has arrived (streaming with the least delay, in pieces of any size).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], unit: int, out_unit: int, context: int | tuple[int, int],
                 chunk: int) -> None:
        left, right = (context, context) if isinstance(context, int) else context
        if min(unit, out_unit, chunk) < 1 or min(left, right) < 0:
            raise ValueError(f"ChunkedRunner: bad geometry unit={unit} out_unit={out_unit} context={context} chunk={chunk}")
        self.fn, self.unit, self.out_unit, self.chunk = fn, unit, out_unit, chunk
        self.left, self.right = left, right
        self.buf: Tensor | None = None
        self.start = 0  # absolute input sample of buf[..., 0]
        self.done = 0  # units whose output has been emitted

    @property
    def context(self) -> int:
        return max(self.left, self.right)

    @property
    def received(self) -> int:
        return self.start + (0 if self.buf is None else self.buf.shape[-1])

    def push(self, x: Tensor, eager: bool = False) -> Iterator[Tensor]:
        """Add input ``[..., n]``; yield the outputs that are now final (``eager``: all of them, else whole chunks)."""
        self.buf = x if self.buf is None else torch.cat([self.buf, x], dim=-1)
        while self.received >= (self.done + self.chunk + self.right) * self.unit:
            yield self._run(self.done + self.chunk)
        ready = self.received // self.unit - self.right
        if eager and ready > self.done:
            yield self._run(ready)

    def finish(self) -> Iterator[Tensor]:
        """End of stream: yield the rest of the output."""
        if self.buf is not None and self.received > self.done * self.unit:
            yield self._run(None)

    def _run(self, upto: int | None) -> Tensor:
        """Output units ``done .. upto`` (``None``: to the end of the stream)."""
        s = max(0, self.done - self.left)
        end = self.received if upto is None else (upto + self.right) * self.unit
        out = self.fn(self.buf[..., s * self.unit - self.start : end - self.start])
        k = (self.done - s) * self.out_unit
        piece = out[..., k:] if upto is None else out[..., k : (upto - s) * self.out_unit]
        self.done = math.ceil(self.received / self.unit) if upto is None else upto
        keep = min(max(0, self.done - self.left) * self.unit, self.received)
        self.buf, self.start = self.buf[..., keep - self.start :], keep
        return piece


class StreamResampler:
    """Streaming :func:`torchaudio.functional.resample` (windowed sinc): the concatenated output of
    :meth:`push` and :meth:`finish` equals resampling the whole signal at once (``[..., T]`` to
    ``[..., ceil(T * new / orig)]``), up to float rounding.

    Rate pairs whose filter would be too large (8000 -> 8001 Hz: 244 MiB) are refused with :class:`ConfigError`
    (see :func:`vqaudio.io.resample_problem`)."""

    def __init__(self, orig_sr: int, new_sr: int, chunk_seconds: float = 10.0, eager: bool = False) -> None:
        self.identity, self.eager = orig_sr == new_sr, eager
        if self.identity:
            return
        problem = resample_problem(orig_sr, new_sr)
        if problem:
            raise ConfigError(problem)
        self.resample = AT.Resample(orig_sr, new_sr, dtype=torch.float32)  # the kernel io.resample uses
        g = math.gcd(orig_sr, new_sr)
        unit, out_unit = orig_sr // g, new_sr // g  # conv stride: `unit` input samples -> `out_unit` outputs
        context = -(-self.resample.width // unit) + 1
        chunk = max(1, round(chunk_seconds * orig_sr / unit))
        self.runner = ChunkedRunner(self._apply, unit, out_unit, context, chunk)

    def _apply(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.resample(x)

    def push(self, x: Tensor) -> Iterator[Tensor]:
        """Add ``[..., n]`` samples; yield resampled pieces that are final."""
        if self.identity:
            yield x
        else:
            yield from self.runner.push(x, eager=self.eager)

    def finish(self) -> Iterator[Tensor]:
        if not self.identity:
            yield from self.runner.finish()


def stream_resample(blocks: Iterable[Tensor], orig_sr: int, new_sr: int) -> Iterator[Tensor]:
    """Resample a stream of ``[..., n]`` blocks (see :class:`StreamResampler`)."""
    rs = StreamResampler(orig_sr, new_sr)
    for b in blocks:
        yield from rs.push(b)
    yield from rs.finish()


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of the model's weights serialised as safetensors (for models not loaded from a checkpoint)."""
    import hashlib

    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


def _inference_copy(model: VQVAE) -> VQVAE:
    """An eval-mode copy without gradients and without weight-norm parametrisations: each conv gets
    the weight its parametrisation computes (the same values, computed once instead of per call)."""
    import dataclasses

    fast = VQVAE(dataclasses.replace(model.config, weight_norm=False))
    state = {}
    for key in fast.state_dict():
        owner, _, attr = key.rpartition(".")
        state[key] = getattr(model.get_submodule(owner), attr).detach().clone()
    fast.load_state_dict(state)
    return fast.to(next(model.parameters()).device).eval().requires_grad_(False)


def _audio_blocks(src: Path | BinaryIO, blocksize: int, name: str) -> tuple[int, int, int, Iterator[Tensor]]:
    """Open an audio file (or a seekable binary stream, e.g. stdin read into memory) for streaming:
    ``(sample_rate, channels, frames, blocks of float32 [C, n])``; errors name ``name``."""
    if isinstance(src, Path):
        if not src.is_file():
            raise AudioError("no such file" if not src.exists() else "not a regular file", name)
        if src.stat().st_size == 0:
            raise AudioError("file is empty (0 bytes)", name)
    elif src.seek(0, os.SEEK_END) == 0:
        raise AudioError("is empty (0 bytes)", name)
    else:
        src.seek(0)
    try:
        f = sf.SoundFile(str(src) if isinstance(src, Path) else src)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        if isinstance(src, Path):
            raise AudioError(f"cannot read audio (corrupt or unsupported): {err}", name) from None
        src.seek(0)
        head = src.read(4096)
        series = head.startswith(b"\x93NUMPY") or (b"\0" not in head and bool(head.strip())
                                                   and all(32 <= c < 127 or c in b"\t\r\n" for c in head[:512]))
        why = "text or a .npy array, not audio: for a series pass --model series" if series else "corrupt or unsupported"
        raise AudioError(f"cannot read audio ({why}): {getattr(err, 'error_string', None) or 'format not recognised'}",
                         name) from None
    if f.frames == 0 or f.channels == 0:
        f.close()
        raise AudioError("is empty (0 samples)", name)
    try:
        check_not_truncated(src, f.frames, name)
    except AudioError:
        f.close()
        raise

    def blocks() -> Iterator[Tensor]:
        n = 0
        with f:
            try:
                for block in f.blocks(blocksize, dtype="float32", always_2d=True):
                    x = torch.from_numpy(np.ascontiguousarray(block.T))  # values: Codec.encode_stream checks
                    n += x.shape[-1]
                    yield x
            except (sf.LibsndfileError, RuntimeError, ValueError) as err:
                raise AudioError(f"cannot read audio (corrupt or truncated): {err}", name) from None
        if n == 0:
            raise AudioError("is empty (0 samples)", name)
        if n < f.frames and f.format not in ("MPEG", "OGG"):  # compressed: frames can be an estimate
            raise AudioError(f"truncated: header says {f.frames} samples, file holds {n}", name)

    return int(f.samplerate), int(f.channels), int(f.frames), blocks()


SHAPES = "a float tensor [T], [C, T] or [B, C, T], or a list of [C, T] tensors"


MAX_PEAK = 1000.0  # 60 dB above full scale: float samples beyond this are not audio at any usable level


def check_samples(x: Tensor, what: str | None) -> None:
    """One-line :class:`AudioError` for a block ``[C, n]`` with NaN/Inf samples or a peak beyond :data:`MAX_PEAK`
    (float files scaled wrongly; the model would overflow)."""
    if not bool(torch.isfinite(x).all()):
        raise AudioError("contains NaN or Inf samples", what)
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak > MAX_PEAK:
        raise AudioError(f"samples far beyond full scale (peak {peak:.3g}; audio is within +-1): rescale it", what)


def _check_wav(x: Tensor, what: str, dtype: torch.dtype = torch.float32, audio: bool = False) -> Tensor:
    """``x`` as ``dtype`` ``[C, T]`` on the CPU (``[T]``: one channel); one-line :class:`AudioError` otherwise
    (``audio``: its samples pass :func:`check_samples`, else they need only be finite)."""
    try:
        x = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise AudioError(f"expected {SHAPES}, got {type(x).__name__}", what) from None
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or not x.is_floating_point():
        raise AudioError(f"expected {SHAPES}, got {x.dtype} {list(x.shape)}", what)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise AudioError(f"is empty (shape {list(x.shape)})", what)
    if audio:
        check_samples(x, what)
    elif not bool(torch.isfinite(x).all()):
        raise AudioError("contains NaN or Inf samples", what)
    return x.detach().to("cpu", dtype)


MAX_DECIMATE = 16  # the coarsest time step :meth:`Codec.encode_at_rate` tries for a series
# The steps it tries: every p/q from 1 to MAX_DECIMATE with q <= 4 (small resampling kernels), finest first.
RATE_STEPS = sorted({Fraction(p, q) for q in range(1, 5) for p in range(q, MAX_DECIMATE * q + 1)})
# Coded steps, summed over the ways that gain no level, that Codec.rate_options adds for encode_at_rate to try:
# every step for series of up to about 3,800 steps (the steps of RATE_STEPS sum to 17 lengths; each way is a whole
# encode and decode, so a long series tries the finest step of each level count and a few more).
WIDE_SEARCH_STEPS = 1 << 16


class Codec:
    """A trained :class:`~vqaudio.models.vqvae.VQVAE` wrapped for coding whole files (see the module docstring).

    ``name`` and ``sha256`` identify the weights in token files (``sha256`` defaults to
    :func:`weights_sha256`); ``chunk_seconds`` bounds the audio decoded and resampled at once (series:
    ``chunk_steps`` time steps). Longer chunks spread the fixed cost of each conv call. ``postfilter``: whether
    decoded audio passes :class:`vqaudio.postfilter.Postfilter` (default: the model config's ``postfilter``).
    The offline encoder runs whole chunks, the stream encoder layer by layer on state (:mod:`vqaudio.streaming`);
    on the CPU both use the exact convs of :mod:`vqaudio.ops.exact_conv`, so their codes are the same bits.
    """

    def __init__(self, model: VQVAE, name: str = "model", sha256: str | None = None, chunk_seconds: float = 15.0,
                 chunk_steps: int = 1 << 17, postfilter: bool | None = None) -> None:
        self.name, self.sha256 = name, sha256 or weights_sha256(model)
        self.model = _inference_copy(model)
        self.config: VQVAEConfig = model.config
        self.chunk_seconds, self.chunk_steps = chunk_seconds, chunk_steps
        self.device = next(model.parameters()).device
        if postfilter and self.config.kind != "audio":
            raise ConfigError(f"the post-filter is for audio; model {name!r} codes series")
        self.postfilter = self.config.postfilter if postfilter is None else postfilter

    # -- properties ----------------------------------------------------------------------------
    kind = property(lambda self: self.config.kind)
    sample_rate = property(lambda self: self.config.sample_rate if self.config.kind == "audio" else None)
    channels = property(lambda self: self.config.channels)
    hop = functools.cached_property(lambda self: self.model.hop)
    n_q = property(lambda self: self.config.n_q)
    codebook_size = property(lambda self: self.config.codebook_size)
    per_channel = property(lambda self: self.config.kind == "series" and self.config.channels == 1,
                           doc="Whether each channel of a series is coded alone (any channel count).")

    @property
    def min_length(self) -> int:
        """Fewest time steps a series model codes: one frame (``hop``); audio: 1."""
        return self.hop if self.kind == "series" else 1

    @property
    def bits_per_code(self) -> float:
        """Bits per code in token files: ``log2 K`` for powers of two, else the grouped packing's (e.g. 9.9661 for
        ``K = 1000``; :func:`vqaudio.tokenfile.code_bits`)."""
        return tokenfile.code_bits(self.codebook_size)

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second (per time step for series) per channel with ``n_q`` levels, at :attr:`bits_per_code`."""
        n_q = self._n_q(n_q)
        return self.model.frame_rate * n_q * self.bits_per_code

    def __repr__(self) -> str:
        return (f"Codec({self.name!r}, kind={self.kind}, sample_rate={self.sample_rate}, hop={self.hop}, "
                f"n_q={self.n_q}, codebook_size={self.codebook_size})")

    def _n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= self.n_q:
            raise ConfigError(f"n_q must be an integer in [1, {self.n_q}] for model {self.name!r}, got {n_q!r}")
        return n_q

    @property
    def chunk_frames(self) -> int:
        """Frames per encoder/decoder chunk."""
        steps = self.chunk_seconds * self.config.sample_rate if self.kind == "audio" else self.chunk_steps
        return max(1, round(steps / self.hop))

    @functools.cached_property
    def encoder_overlap(self) -> int:
        """Frames of context each side of an encoder chunk (computed once: the codec's model copy is fixed)."""
        left, right = self.model.encoder_context
        return max(-(-left // self.hop), -(-right // self.hop))

    @functools.cached_property
    def decoder_overlap(self) -> int:
        """Frames of context each side of a decoder chunk (computed once)."""
        return max(self.model.decoder_context)

    @property
    def latency(self) -> Latency:
        """Algorithmic latency of streaming encode + decode (``.samples``, ``.ms``; :func:`vqaudio.streaming.latency_of`):
        a decoded sample is final once the input sample ``latency.samples`` after it has been pushed."""
        return latency_of(self.model)

    # -- streaming -----------------------------------------------------------------------------
    def stream_encoder(self, n_q: int | None = None, sample_rate: int | None = None,
                       stats: SeriesStats | None = None) -> StreamEncoder:
        """A :class:`~vqaudio.streaming.StreamEncoder`: ``push(x [C, t])`` returns the codes ``[C, n_q, f]`` of every
        frame now complete, ``flush()`` the rest; together exactly :meth:`encode`'s codes. ``sample_rate``: the
        input's, if not the model's (resampled as it arrives; the resampler adds its filter's delay).
        Series: ``stats`` are the whole series' RevIN statistics (``model.normalize``)."""
        n_q = self._n_q(n_q)
        resampler = None
        if self.kind == "audio" and sample_rate is not None and sample_rate != self.sample_rate:
            problem = resample_problem(sample_rate, self.sample_rate)
            if problem:
                raise ConfigError(f"input sample rate: {problem}")
            resampler = StreamResampler(sample_rate, self.sample_rate, self.chunk_seconds, eager=True)
        return StreamEncoder(self.model, n_q, stats, self.device, resampler)

    def stream_decoder(self, stats: SeriesStats | None = None) -> StreamDecoder:
        """A :class:`~vqaudio.streaming.StreamDecoder` at the model's rate: ``push(codes [C, n_q, f])`` returns the
        audio ``[C, t]`` now final, ``flush(length=None)`` the rest; together :meth:`decode`'s audio to float rounding."""
        return StreamDecoder(self.model, stats, self.device, self.new_postfilter())

    def new_postfilter(self) -> Postfilter | None:
        """A fresh :class:`~vqaudio.postfilter.Postfilter` for one decoded signal, or None when it is off."""
        return Postfilter(self.sample_rate, self.hop) if self.postfilter else None

    # -- encoding ------------------------------------------------------------------------------
    def _encoder(self, n_q: int, stats: SeriesStats | None) -> ChunkedRunner:
        """The offline encoder: whole chunks of :attr:`chunk_frames` frames with :attr:`encoder_overlap` frames of
        context each side (exact convs on the CPU: the same code bits as any other chunking, or the stream's)."""
        def fn(x: Tensor) -> Tensor:  # [items, C, n] -> [items, n_q, ceil(n / hop)], int32 until the end (memory)
            return self.model.encode(x.to(self.device), n_q, stats=stats).to("cpu", torch.int32)

        return ChunkedRunner(fn, self.hop, 1, self.encoder_overlap, self.chunk_frames)

    @property
    def chunking(self) -> dict[str, int]:
        """The offline encoder's chunk geometry, recorded in token files (``Codes.chunking``)."""
        return {"chunk_frames": self.chunk_frames, "overlap_frames": self.encoder_overlap}

    @property
    def stream_chunking(self) -> dict[str, int]:
        """How the stream encoder runs, recorded in token streams written by :meth:`stream_encoder`: layer by layer
        on state (``{"stream_layers": 1}``; streams written before recorded their encoder's windows)."""
        return {"stream_layers": 1}

    def _codes(self, codes: Tensor, length: int, channels: int, orig_sr: int | None, n_q: int,
               stats: SeriesStats | None, source: str | None, decimate: Fraction | int = 1) -> Codes:
        st = None if stats is None else {k: getattr(stats, k).reshape(-1).tolist() for k in ("mean", "std")}
        return Codes(codes.long(), kind=self.kind, model=self.name, model_sha256=self.sha256, sample_rate=self.sample_rate,
                     orig_sample_rate=orig_sr if self.kind == "audio" else None, length=length, channels=channels,
                     hop=self.hop, codebook_size=self.codebook_size,
                     chunking=self.chunking, stats=st,
                     source=source, decimate=decimate)

    def encode_stream(self, blocks: Iterable[Tensor], sample_rate: int | None, n_q: int | None = None,
                      source: str | None = None, progress: Callable[[float], None] | None = None) -> Codes:
        """Encode audio arriving as blocks ``[C, n]`` at ``sample_rate``; memory is bounded by the chunk size.

        ``progress(seconds)`` is called with the seconds of input each block adds."""
        if self.kind != "audio":
            raise AudioError(f"model {self.name!r} codes series, not audio", source)
        n_q = self._n_q(n_q)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}", source)
        problem = resample_problem(sample_rate, self.sample_rate)
        if problem:  # the input's rate: an odd-rate file
            raise AudioError(problem, source)
        resampler = StreamResampler(sample_rate, self.sample_rate, self.chunk_seconds)
        encoder = self._encoder(n_q, None)
        clips = ClipCounter()
        out: list[Tensor] = []
        length, channels = 0, None
        with torch.inference_mode():
            for block in blocks:
                channels = channels or block.shape[0]
                if block.shape[0] != channels:
                    raise AudioError(f"channel count changed from {channels} to {block.shape[0]}", source)
                check_samples(block, source)
                length += block.shape[-1]
                clips.push(block)
                if progress is not None:
                    progress(block.shape[-1] / sample_rate)
                for y in resampler.push(block):
                    out += encoder.push(y.unsqueeze(1))  # mono model: channels become items [C, 1, n]
            for y in resampler.finish():
                out += encoder.push(y.unsqueeze(1))
            out += encoder.finish()
        if not length:
            raise AudioError("is empty (0 samples)", source)
        warn_rate(source, sample_rate, self.sample_rate)
        clips.warn(source)
        return self._codes(torch.cat(out, dim=-1), length, channels, sample_rate, n_q, None, source)

    def encode(self, wav: Tensor | list[Tensor], sample_rate: int | None = None,
               n_q: int | None = None) -> Codes | list[Codes]:
        """Codes of ``wav`` float ``[C, T]`` (or ``[T]``): ``Codes.codes`` int64 ``[items, n_q, ceil(T' / hop)]``.

        Audio: ``sample_rate`` is ``wav``'s rate (resampled to the model's); each channel is one item.
        Series: ``wav`` is ``[C, T]`` (``sample_rate`` is ignored): any ``C`` for a single-channel model (a channel
        per item), else the model's ``C`` (one item).

        A batch, ``[B, C, T]`` or a list of ``[C, T_i]`` of any lengths, gives a list of :class:`Codes`, the same
        codes as encoding the items one at a time, computed in padding-aware batches (:mod:`vqaudio.batch`).
        """
        if isinstance(wav, list | tuple) or (isinstance(wav, Tensor) and wav.dim() == 3):
            from vqaudio.batch import encode_many

            items = [_check_wav(x, f"input[{i}]", self._input_dtype, self.kind == "audio") for i, x in enumerate(wav)]
            return encode_many(self, items, sample_rate, n_q)
        wav = _check_wav(wav, "input", self._input_dtype)
        if self.kind == "series":
            return self.encode_series(wav, n_q, None)
        step = max(1, round(self.chunk_seconds * sample_rate)) if isinstance(sample_rate, int) else wav.shape[-1]
        return self.encode_stream((wav[:, i : i + step] for i in range(0, wav.shape[-1], step)), sample_rate, n_q)

    @property
    def _input_dtype(self) -> torch.dtype:
        """Series are read in float64 (an offset of 1e9 with steps of 1 survives until it is subtracted), audio float32."""
        return torch.float64 if self.kind == "series" else torch.float32

    def encode_series(self, x: Tensor, n_q: int | None = None, source: str | None = None,
                      decimate: Fraction | int = 1) -> Codes:
        """Codes of a series ``x`` float ``[C, T]`` (checked finite); errors name ``source``. ``decimate``: code
        every ``p/q``-th step (a Fraction or int; :mod:`vqaudio.series_resample`; decoding interpolates back to ``T``
        steps)."""
        n_q = self._n_q(n_q)
        try:
            decimate = series_step(decimate)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if x.shape[0] != self.channels and not self.per_channel:
            raise AudioError(f"series has {x.shape[0]} channel(s) but model {self.name!r} codes {self.channels}", source)
        check_series_codable(x, self.min_length, source)
        length, channels = x.shape[-1], x.shape[0]
        x, offset = center_series(x)  # float32 from here on: the offset is added back to the recorded mean
        if decimate != 1:
            if coded_steps(length, decimate) < self.min_length:
                raise AudioError(f"series has {length} time step(s): too short to code at every {decimate} steps "
                                 f"(the model codes at least {self.min_length})", source)
            x = decimate_series(x, decimate)
        with torch.inference_mode():
            x = x.unsqueeze(1) if self.per_channel else x.unsqueeze(0)  # [C, 1, T]: a channel per item; [1, C, T]
            stats = self.model.coding_stats(x)  # RevIN statistics of the whole series, shared by every chunk
            encoder = self._encoder(n_q, stats)
            step = encoder.chunk * self.hop
            out = [c for i in range(0, x.shape[-1], step) for c in encoder.push(x[..., i : i + step])]
            out += encoder.finish()
        stats = SeriesStats(stats.mean.double() + offset.view_as(stats.mean), stats.std)
        return self._codes(torch.cat(out, dim=-1), length, channels, None, n_q, stats, source, decimate)

    def encode_any_series(self, x: Tensor, n_q: int | None = None, source: str | None = None,
                          bits_per_sample: float | None = None) -> Codes:
        """:meth:`encode_at_rate` when ``bits_per_sample`` is given, else :meth:`encode_series` with ``n_q``."""
        if bits_per_sample is not None:
            return self.encode_at_rate(x, bits_per_sample, source)
        return self.encode_series(x, n_q, source)

    def rate_options(self, length: int, bits_per_sample: float, channels: int = 1) -> list[tuple[Fraction, int]]:
        """``[(step, n_q), ...]``, finest step first: the ways to code a series of ``length`` steps within
        ``bits_per_sample`` of real payload (``n_q * bits_per_code * frames / length``, ``frames =
        ceil(coded_steps / hop)``), each step of :data:`RATE_STEPS` that leaves at least a frame with the most levels
        that fit. The finest step of each level count is always there; the other steps (as many levels, coarser) are
        there while the steps they code (times ``channels``) add up to at most :data:`WIDE_SEARCH_STEPS`: a short
        series often fits a little better at a step of 5/4 or 4/3 than at every step with the same levels, and on
        long or many-channel series each way costs a whole encode and decode. Empty when none fits."""
        if self.kind != "series":
            raise ConfigError(f"model {self.name!r} codes audio: bits per sample are for series models")
        if not (isinstance(bits_per_sample, int | float) and not isinstance(bits_per_sample, bool)
                and math.isfinite(bits_per_sample) and bits_per_sample > 0):
            raise ConfigError(f"bits per sample must be a positive number, got {bits_per_sample!r}")
        firsts, others, most = [], [], 0
        for step in RATE_STEPS:
            steps = coded_steps(length, step)
            if steps < self.min_length:
                break
            frames = -(-steps // self.hop)
            n_q = min(self.n_q, int(bits_per_sample * length / (self.bits_per_code * frames) + 1e-9))
            if n_q > most:
                firsts.append((step, n_q))
                most = n_q
            elif n_q:
                others.append((step, n_q, steps))
        work, extra = WIDE_SEARCH_STEPS // max(1, channels), []
        for step, n_q, steps in others:  # finest first
            if steps > work:
                break
            work -= steps
            extra.append((step, n_q))
        return sorted(firsts + extra)

    def encode_at_rate(self, x: Tensor, bits_per_sample: float, source: str | None = None) -> Codes:
        """Codes of a series ``x`` float32 ``[C, T]`` within ``bits_per_sample`` of real payload: each way of
        :meth:`rate_options` is coded and decoded, and the one with the least squared error is kept (the encoder's
        choice, recorded in the codes: the decoder needs nothing else)."""
        if not isinstance(x, Tensor) or x.dim() not in (1, 2):
            what = f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise AudioError(f"encode_at_rate codes one series, a float tensor [T] or [C, T], got {what} (for a batch, "
                             f"call it per series)", source)
        x = x if x.dim() == 2 else x[None]
        options = self.rate_options(x.shape[-1], bits_per_sample, x.shape[0])
        if not options:
            raise AudioError(f"series of {x.shape[-1]} step(s) cannot be coded within {bits_per_sample:g} bits/sample "
                             f"(model {self.name!r}: one level is {self.bits_per_code / self.hop:g} at full resolution, "
                             f"down to {self.bits_per_code / (self.hop * MAX_DECIMATE):g} at every {MAX_DECIMATE} steps)",
                             source)
        best, best_err = None, math.inf
        for d, n_q in options:
            codes = self.encode_series(x, n_q, source, d)
            err = float((self.decode(codes)[0].double() - x.double()).square().sum())
            if err < best_err:
                best, best_err = codes, err
        return best

    def encode_file(self, path: str | os.PathLike | BinaryIO, n_q: int | None = None, name: str | None = None,
                    progress: Callable[[float, float], None] | None = None,
                    bits_per_sample: float | None = None) -> Codes:
        """Codes of an audio file (streamed from disk) or, for series models, a ``.npy``/``.csv``/``.tsv`` series.

        ``path`` may also be a seekable binary stream (e.g. stdin read into :class:`io.BytesIO`): audio in any
        format soundfile detects from its content (WAV, FLAC, OGG, ...), series as ``.npy`` or CSV text.
        ``name`` names the input in errors (default: the path; ``"stdin"`` for a stream). Audio only:
        ``progress(seconds, total_seconds)`` as blocks are read (e.g. a :class:`vqaudio.progress.SecondsBar`).
        Series only: ``bits_per_sample`` instead of ``n_q`` codes at that rate (:meth:`encode_at_rate`)."""
        if bits_per_sample is not None and (n_q is not None or self.kind != "series"):
            raise ConfigError("bits per sample is for series models, instead of n_q" if self.kind == "series" else
                              f"bits per sample is for series models; model {self.name!r} codes audio (use n_q)")
        if hasattr(path, "read"):
            return self._encode_stream_file(path, n_q, name or "stdin", progress, bits_per_sample)
        path = Path(path)
        name = name or str(path)
        if path.suffix.lower() == ".ts":
            raise AudioError("an aeon .ts file holds many cases: encode it with `vqaudio encode` (a .vqa per case) or "
                             "vqaudio.ts_files.encode_ts", name)
        if self.kind == "series":
            if not is_series_path(path):
                raise AudioError(f"model {self.name!r} codes series: expected a .npy, .csv or .tsv file", name)
            return self._encode_table(read_series(path), n_q, name, bits_per_sample)
        if not is_audio_path(path):
            what = "a series file" if is_series_path(path) else f"not an audio file ({path.suffix or 'no suffix'})"
            raise AudioError(f"{what}, but model {self.name!r} codes audio", name)
        return self._encode_audio(path, n_q, name, progress)

    def _encode_audio(self, src: Path | BinaryIO, n_q: int | None, name: str,
                      progress: Callable[[float, float], None] | None) -> Codes:
        sr, _, frames, blocks = _audio_blocks(src, 1 << 16, name)
        total = frames / sr
        return self.encode_stream(blocks, sr, n_q, source=name,
                                  progress=None if progress is None else lambda s: progress(s, total))

    def _encode_stream_file(self, f: BinaryIO, n_q: int | None, name: str,
                            progress: Callable[[float, float], None] | None, bits_per_sample: float | None) -> Codes:
        if self.kind == "audio":
            return self._encode_audio(f, n_q, name, progress)
        f.seek(0)
        data = f.read()
        suffix = ".npy" if data.startswith(b"\x93NUMPY") else ".csv"
        with tempfile.TemporaryDirectory() as tmp:  # the series readers take paths; series are small
            (Path(tmp) / f"stdin{suffix}").write_bytes(data)
            try:
                table = read_series(Path(tmp) / f"stdin{suffix}")
            except AudioError as err:
                raise AudioError(str(err).split(": ", 1)[-1], name) from None
        return self._encode_table(table, n_q, name, bits_per_sample)

    def _encode_table(self, table: SeriesTable, n_q: int | None, name: str, bits_per_sample: float | None) -> Codes:
        """Codes of a series file's values, with its column names and index column name."""
        codes = self.encode_any_series(table.values, n_q, name, bits_per_sample)
        codes.columns, codes.index = table.columns, table.index
        codes.ndim = 1 if table.ndim == 1 else None
        codes.index_values = None if table.index_values is None else table.index_values.to_json()
        if table.index is not None and table.index_values is None:  # a regular index is rebuilt: nothing is lost
            warn_index(name, table.index)
        return codes

    # -- decoding ------------------------------------------------------------------------------
    def check(self, codes: Codes) -> None:
        """Raise :class:`TokenFileError` (naming ``codes.source``) unless ``codes`` were made by this model."""
        def fail(msg: str):
            raise TokenFileError(msg, codes.source)

        if codes.model_sha256 != self.sha256:
            fail(f"encoded with model {codes.model!r} (weights sha256 {codes.model_sha256[:12]}…), not with "
                 f"{self.name!r} ({self.sha256[:12]}…); pass the right --model")
        c = self.config
        mine = (self.kind, self.sample_rate, self.hop, self.codebook_size)
        if (codes.kind, codes.sample_rate, codes.hop, codes.codebook_size) != mine:
            fail(f"token file ({codes.kind}, {codes.sample_rate} Hz, hop {codes.hop}, K={codes.codebook_size}) does not "
                 f"match model {self.name!r} ({self.kind}, {self.sample_rate} Hz, hop {self.hop}, K={self.codebook_size})")
        if codes.n_q > c.n_q:
            fail(f"has {codes.n_q} quantiser levels but model {self.name!r} has {c.n_q}")
        if self.kind == "series" and (codes.stats is None or (codes.items != codes.channels if self.per_channel
                                                              else codes.channels != c.channels or codes.items != 1)):
            fail(f"series token file ({codes.channels} channels, {codes.items} coded items) does not match model "
                 f"{self.name!r} ({c.channels} channel(s){', each channel alone' if self.per_channel else ''})")

    def _output_rate(self, codes: Codes, sample_rate: str | int) -> int | None:
        if self.kind == "series":
            return None
        if sample_rate == "original":
            return codes.orig_sample_rate
        if sample_rate == "model":
            return self.sample_rate
        if isinstance(sample_rate, int) and not isinstance(sample_rate, bool) and sample_rate > 0:
            return sample_rate
        raise ConfigError(f"sample_rate must be 'original', 'model' or a positive integer, got {sample_rate!r}")

    def decode_plan(self, codes: Codes, sample_rate: str | int) -> tuple[int | None, int, SeriesStats | None]:
        """Check ``codes`` against the model; ``(output rate, output length, series statistics)`` of decoding them."""
        self.check(codes)
        rate = self._output_rate(codes, sample_rate)
        problem = None if rate is None else resample_problem(self.sample_rate, rate)
        if problem and sample_rate == "original":  # the token file's recorded rate
            raise TokenFileError(f"original rate: {problem}; decode at the model's rate (--sample-rate model)", codes.source)
        if problem:
            raise ConfigError(f"output sample rate: {problem}")
        stats = None
        if codes.stats is not None:
            shape = (2, -1, 1, 1) if self.per_channel else (2, 1, -1, 1)  # a channel per item, or one item of C channels
            both = torch.tensor([codes.stats["mean"], codes.stats["std"]], dtype=torch.float64)  # float64 output
            stats = SeriesStats(*both.view(shape).unbind())
        length = codes.model_length if rate is None else resampled_length(codes.length, rate, codes.orig_sample_rate)
        if rate == codes.orig_sample_rate:  # audio at its own rate; series (interpolated back when decimated)
            length = codes.length
        return rate, length, stats

    def decode_stream(self, codes: Codes, sample_rate: str | int = "original") -> tuple[int | None, int, Iterator[Tensor]]:
        """``(rate, length, blocks)``: the decoded signal as blocks ``[C, n]`` totalling ``length`` (audio float32,
        series float64: at the original scale and offset).

        ``sample_rate``: ``"original"`` (the input file's), ``"model"``, or a rate in Hz (audio only).
        """
        rate, length, stats = self.decode_plan(codes, sample_rate)
        model_length = codes.model_length

        def fn(c: Tensor) -> Tensor:  # [items, n_q, f] -> [items, C, f * hop]
            return self.model.decode(c.to(self.device), stats=stats).cpu()

        def blocks() -> Iterator[Tensor]:
            if codes.decimate != 1:  # a series coded at every p/q-th step: decoded whole, then interpolated back
                coarse = torch.cat(list(blocks_at_model_rate()), dim=-1)
                yield interpolate(coarse, codes.decimate, length)
                return
            yield from blocks_at_model_rate()

        def blocks_at_model_rate() -> Iterator[Tensor]:
            decoder = ChunkedRunner(fn, 1, self.hop, self.decoder_overlap, self.chunk_frames)
            resampler = StreamResampler(self.sample_rate, rate, self.chunk_seconds) if rate else None
            postfilter = self.new_postfilter()
            todo_model, todo = model_length, length if codes.decimate == 1 else model_length
            with torch.inference_mode():
                step = self.chunk_frames
                pieces = (y for i in range(0, codes.frames, step) for y in decoder.push(codes.codes[..., i : i + step]))
                pieces = (y[:, 0] if self.kind == "audio" or self.per_channel else y[0]  # [C, n]
                          for y in _chain(pieces, decoder.finish))
                if postfilter:  # on the whole frames, before the padding of the last one is cut
                    pieces = _chain((postfilter.push(y) for y in pieces), lambda: (postfilter.flush(),))
                for y in pieces:
                    y = y[..., :todo_model]  # the last chunk is padded to whole frames
                    todo_model -= y.shape[-1]
                    for z in (resampler.push(y) if resampler else (y,)):
                        if todo > 0:
                            yield z[..., :todo]
                            todo -= min(todo, z.shape[-1])
                for z in resampler.finish() if resampler else ():
                    if todo > 0:
                        yield z[..., :todo]
                        todo -= min(todo, z.shape[-1])

        return rate, length, blocks()

    def decode(self, codes: Codes | list[Codes], sample_rate: str | int = "original"
               ) -> tuple[Tensor, int | None] | list[tuple[Tensor, int | None]]:
        """``(wav float32 [C, T], rate)``: decoded audio at the original rate (default) or the model's
        (``"model"``), with the original channels; series: ``(float64 [C, T], None)`` at the original scale.

        A list of :class:`Codes` gives a list of ``(wav, rate)``, the same as decoding them one at a time,
        computed in padding-aware batches (:mod:`vqaudio.batch`)."""
        if isinstance(codes, list | tuple):
            from vqaudio.batch import decode_many

            return decode_many(self, list(codes), sample_rate)
        if not isinstance(codes, Codes):
            raise TokenFileError(f"decode takes Codes or a list of Codes, got {type(codes).__name__}")
        rate, _, blocks = self.decode_stream(codes, sample_rate)
        return torch.cat(list(blocks), dim=-1), rate

    def decode_to_file(self, codes: Codes, path: str | os.PathLike | BinaryIO, sample_rate: str | int = "original",
                       suffix: str | None = None, progress: Callable[[float, float], None] | None = None) -> None:
        """Decode into an audio file (streamed, atomic; integer formats clip to [-1, 1]) or, for
        series, a ``.npy``/``.csv``/``.tsv`` file. ``path`` may be a seekable binary stream (e.g. :class:`io.BytesIO`
        for stdout); then ``suffix`` (``".wav"``, ``".flac"``, ``".npy"``, ...) names the format. Audio only:
        ``progress(seconds, total_seconds)`` as blocks are written."""
        stream = hasattr(path, "write")
        name = "stdout" if stream else str(path)
        suffix = (suffix or ("" if stream else Path(path).suffix)).lower()
        if self.kind == "series":
            if not is_series_path(f"x{suffix}"):
                raise AudioError("series decode needs a .npy, .csv or .tsv output", name)
            x = self.decode(codes)[0]
            index = None if codes.index_values is None else RegularIndex.from_json(codes.index_values)
            if stream:
                with tempfile.TemporaryDirectory() as tmp:  # save_series takes paths; series are small
                    save_series(Path(tmp) / f"out{suffix}", x, codes.columns, codes.ndim or 2, codes.index, index)
                    path.write((Path(tmp) / f"out{suffix}").read_bytes())
            else:
                save_series(path, x, codes.columns, codes.ndim or 2, codes.index, index)
            return
        if not is_audio_path(f"x{suffix}"):
            raise AudioError(f"unsupported audio output suffix {suffix!r}", name)
        if not stream and not Path(path).parent.is_dir():
            raise AudioError("output folder does not exist", name)
        rate, length, blocks = self.decode_stream(codes, sample_rate)
        fmt = _AUDIO_FORMATS[suffix]
        subtype = _DEFAULT_SUBTYPE.get(suffix) or sf.default_subtype(fmt)
        clip = not (subtype.startswith("FLOAT") or subtype.startswith("DOUBLE"))
        try:
            with contextlib.ExitStack() as stack:
                target = path if stream else str(stack.enter_context(atomic_path(path)))
                f = stack.enter_context(sf.SoundFile(target, "w", rate, codes.channels, subtype, format=fmt))
                for block in blocks:
                    f.write((block.clamp(-1, 1) if clip else block).T.numpy())
                    if progress is not None:
                        progress(block.shape[-1] / rate, length / rate)
        except OSError as err:  # mkstemp / os.replace: e.g. the destination is a folder, or no permission
            raise AudioError(f"cannot write audio: {err.strerror or err}", name) from None
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
            raise AudioError(f"cannot write audio: {err}", name) from None


def _chain(first: Iterable[Tensor], then: Callable[[], Iterable[Tensor]]) -> Iterator[Tensor]:
    yield from first
    yield from then()


def save_codes(path: str | os.PathLike, codes: Codes) -> None:
    """Write ``codes`` to a ``.vqa`` token file, atomically (see docs/format.md)."""
    tokenfile.write(path, codes)


def load_codes(path: str | os.PathLike) -> Codes:
    """Read and validate a ``.vqa`` token file; :class:`TokenFileError` naming the file on any problem."""
    return tokenfile.read(path)


def load_codec(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               chunk_seconds: float = 15.0, postfilter: bool | None = None) -> Codec:
    """Load a codec by shipped or user model name (``None``: the default model) or checkpoint/experiment folder
    (:func:`vqaudio.registry.resolve`). ``postfilter``: None = as the model's config says (see :class:`Codec`)."""
    from vqaudio.checkpoint import load_model

    name, folder = registry.resolve(name_or_path)
    model = load_model(folder)
    if not isinstance(model, VQVAE):
        raise CheckpointError(f"is a {type(model).__name__} checkpoint, not a VQ-VAE codec model", str(folder))
    return Codec(model.to(device), name=name, sha256=model.checkpoint_sha256, chunk_seconds=chunk_seconds,
                 postfilter=postfilter)


def find_codec_for(codes: Codes) -> tuple[str, Path]:
    """``(name, folder)`` of the shipped or user model that made ``codes``, found by the weights sha256 their
    header records (whatever the model is called now); :class:`TokenFileError` saying which model is needed."""
    found = registry.find_by_sha256(codes.model_sha256)
    if found is None:
        raise TokenFileError(
            f"needs model {codes.model!r} (weights sha256 {codes.model_sha256[:16]}), which is neither shipped nor in "
            f"the user model folder {registry.user_model_dir()} (${registry.MODELS_ENV}): copy its folder there "
            f"(vqaudio export EXP -o {registry.user_model_dir() / codes.model}) or pass --model PATH", codes.source)
    return found


def load_codec_for(codes: Codes, device: str | torch.device = "cpu", chunk_seconds: float = 15.0,
                   postfilter: bool | None = None) -> Codec:
    """The codec that decodes ``codes``: the shipped or user model with the weights their header names
    (:func:`find_codec_for`), under its current name."""
    name, folder = find_codec_for(codes)
    codec = load_codec(folder, device, chunk_seconds, postfilter)
    codec.name = name
    return codec
