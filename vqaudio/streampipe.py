"""``vqaudio encode/decode --stream``: audio in and codes out as they arrive, through pipes.

``encode``: WAV (any header, e.g. sox's or ffmpeg's with an unknown length) or raw signed 16-bit PCM
(``--rate``/``--channels``) read as it arrives -> a ``.vqs`` token stream (:mod:`vqaudio.tokenstream`), one
packet, flushed, per read that completes frames. ``decode``: a ``.vqs`` stream -> 16-bit WAV with an
unknown-length header (sizes ``0xFFFFFFFF``, as ffmpeg writes to a pipe), flushed per packet. A truncated or
corrupted stream stops at the first bad packet with a one-line error, after the audio of every good
packet has been written. Each process computes on one thread: a push's convs are too small to split (two
threads were 1.5x slower on a shared 2-core machine), the two processes of a pipe use two cores, and the
codes do not depend on the thread count.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch

from vqaudio.errors import AudioError, TokenFileError
from vqaudio.io import WAV_UNKNOWN_SIZES

__all__ = ["wav_blocks", "raw_blocks", "WavWriter", "encode_pipe", "decode_pipe", "READ_SIZE"]

READ_SIZE = 4096  # bytes per read: a read returns what has arrived, up to this
_UNKNOWN = 0xFFFFFFFF
_FORMATS = {(1, 16): "<i2", (1, 24): None, (1, 32): "<i4", (3, 32): "<f4", (1, 8): "u1"}


def _exact(f: BinaryIO, n: int, name: str) -> bytes:
    out = b""
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            raise AudioError(f"truncated WAV header ({len(out)} of {n} bytes)", name)
        out += chunk
    return out


def _pcm_blocks(f: BinaryIO, channels: int, dtype: str, limit: int | None, name: str) -> Iterator[torch.Tensor]:
    """Float32 ``[C, n]`` blocks of interleaved PCM as reads return them (a partial sample is kept for the next);
    a WAV that ends before the data size its header gives is a one-line error (after the blocks before it)."""
    width = np.dtype(dtype).itemsize * channels
    rest, left = b"", limit
    while left is None or left > 0:
        chunk = f.read(READ_SIZE if left is None else min(READ_SIZE, left))
        if not chunk:
            if left is not None:
                raise AudioError(f"truncated WAV stream: its header gives {limit} bytes of data, {limit - left} came",
                                 name)
            break
        left = None if left is None else left - len(chunk)
        data = rest + chunk
        n = len(data) // width * width
        data, rest = data[:n], data[n:]
        if n:
            x = np.frombuffer(data, dtype=dtype).reshape(-1, channels).T
            if dtype == "u1":
                y = (x.astype(np.float32) - 128) / 128
            elif dtype[1] == "i":
                y = x.astype(np.float32) / float(2 ** (8 * np.dtype(dtype).itemsize - 1))
            else:
                y = x.astype(np.float32)
            yield torch.from_numpy(np.ascontiguousarray(y))


def wav_blocks(f: BinaryIO, name: str = "stdin") -> tuple[int, int, Iterator[torch.Tensor]]:
    """``(rate, channels, blocks)`` of a WAV stream read as it arrives (PCM 8/16/32-bit or float32)."""
    riff = _exact(f, 12, name)
    if riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
        raise AudioError("not a WAV stream (use --rate and --channels for raw 16-bit PCM)", name)
    fmt = None
    while True:
        cid, size = struct.unpack("<4sI", _exact(f, 8, name))
        if cid == b"data":
            break
        body = _exact(f, size + (size & 1), name)
        if cid == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, bits, channels, rate)
    if fmt is None:
        raise AudioError("WAV stream has no fmt chunk before its data", name)
    tag, bits, channels, rate = fmt
    dtype = _FORMATS.get((tag, bits))
    if dtype is None or channels < 1 or rate < 1:
        raise AudioError(f"unsupported WAV stream (format {tag}, {bits} bits, {channels} channels); "
                         "send 16-bit PCM or float32", name)
    limit = None if size in WAV_UNKNOWN_SIZES else size
    return rate, channels, _pcm_blocks(f, channels, dtype, limit, name)


def raw_blocks(f: BinaryIO, channels: int, name: str = "stdin") -> Iterator[torch.Tensor]:
    """Blocks of raw signed 16-bit little-endian PCM."""
    return _pcm_blocks(f, channels, "<i2", None, name)


class WavWriter:
    """16-bit WAV to a pipe: a header of unknown length, then each block written and flushed."""

    def __init__(self, f: BinaryIO, rate: int, channels: int) -> None:
        self.f = f
        fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
        self._put(b"RIFF" + struct.pack("<I", _UNKNOWN) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
                  + b"data" + struct.pack("<I", _UNKNOWN))

    def _put(self, data: bytes) -> None:
        self.f.write(data)
        self.f.flush()

    def write(self, y: torch.Tensor) -> None:
        """``y`` float ``[C, n]``, clipped to [-1, 1]."""
        if y.shape[-1]:
            pcm = (y.clamp(-1, 1) * 32767).round().to(torch.int16).T.contiguous().numpy()
            self._put(pcm.astype("<i2").tobytes())


def encode_pipe(codec, src: BinaryIO, dst: BinaryIO, n_q: int | None, name: str, rate: int | None = None,
                channels: int | None = None) -> None:
    """Encode audio from ``src`` (WAV, or raw PCM when ``rate`` is given) to a ``.vqs`` stream on ``dst`` as it
    arrives."""
    from vqaudio.codec import check_samples
    from vqaudio.tokenstream import StreamWriter, stream_header

    if codec.kind != "audio":
        raise AudioError(f"--stream codes audio; model {codec.name!r} codes series", name)
    torch.set_num_threads(1)
    if rate is not None:
        sr, c, blocks = rate, channels or 1, raw_blocks(src, channels or 1, name)
    else:
        sr, c, blocks = wav_blocks(src, name)
    enc = codec.stream_encoder(n_q, sr)
    like = codec._codes(torch.zeros(c, enc.n_q, 0, dtype=torch.int64), 1, c, sr, enc.n_q, None, name)
    like.chunking = codec.stream_chunking  # the stream encoder's window geometry, not the offline chunks
    writer = StreamWriter(dst, stream_header(like))
    length = 0
    for x in blocks:
        check_samples(x, name)  # before its packet is written: a bad block never reaches the output
        length += x.shape[-1]
        writer.write(enc.push(x))
    if not length:  # before flushing: an encoder that was never pushed has no channel count to flush with
        raise AudioError("is empty (0 samples)", name)
    writer.write(enc.flush())
    writer.end(length)


def decode_pipe(codecs, src: BinaryIO, dst: BinaryIO, name: str) -> None:
    """Decode a ``.vqs`` stream from ``src`` to WAV on ``dst`` (the model's rate) as packets arrive. On a bad packet,
    the audio of the packets before it is written (the decoder flushed) before the error is raised."""
    from vqaudio.tokenfile import resampled_length
    from vqaudio.tokenstream import StreamReader

    torch.set_num_threads(1)
    reader = StreamReader(src, name)
    meta = reader.like()
    codec = codecs.for_codes(meta)
    codec.check(meta)
    if codec.kind != "audio":
        raise TokenFileError("--stream decodes audio streams", name)
    dec = codec.stream_decoder()
    out = WavWriter(dst, codec.sample_rate, meta.channels)
    try:
        for codes in reader.packets():
            out.write(dec.push(codes))
    except TokenFileError:
        out.write(dec.flush())
        raise
    out.write(dec.flush(resampled_length(reader.length, codec.sample_rate, meta.orig_sample_rate)))


def stdin_raw() -> BinaryIO:
    """stdin without Python's read-ahead: a read returns what has arrived."""
    return sys.stdin.buffer.raw
