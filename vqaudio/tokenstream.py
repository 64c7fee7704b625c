"""The ``.vqs`` token stream: the codes of a ``.vqa`` file cut into packets that can be written as frames
complete and read before the stream ends (pipes, sockets). docs/format.md is the specification::

    magic    8 bytes  b"\\x89VQS\\r\\n\\x1a\\n"
    version  uint16   1
    hlen     uint32   length of the JSON header
    header   hlen     the .vqa header without "length" and "frames" (unknown while streaming)
    hcrc     uint32   CRC32 of magic .. header
    packets, each ending in the CRC32 of its own bytes:
      b"F"  uint16 f (1..65535)  codes [items, n_q, f] packed as in .vqa (per packet, byte-aligned)  uint32 crc
      b"E"  uint64 length (samples per channel at orig_sample_rate; series: time steps)                uint32 crc

The ``E`` packet ends the stream; a stream without it is truncated. Converting to and from ``.vqa`` is
lossless (:func:`to_codes`, :func:`write_codes`). Any problem is a one-line :class:`TokenFileError` naming the
stream and the first bad packet; the packets before it have been returned already.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vqaudio.errors import TokenFileError
from vqaudio.tokenfile import (
    SERIES_FILE_KEYS,
    Codes,
    _validate,
    pack_codes,
    packing,
    payload_bits,
    step_from_json,
    unpack_codes,
)

__all__ = ["MAGIC", "SUFFIX", "StreamWriter", "StreamReader", "write_codes", "to_codes", "is_stream", "stream_header",
           "codes_from_bytes", "load_any"]

MAGIC = b"\x89VQS\r\n\x1a\n"
VERSION = 1
SUFFIX = ".vqs"
_PREFIX = struct.Struct("<8sHI")
_CRC = struct.Struct("<I")
_FRAMES = struct.Struct("<cH")
_END = struct.Struct("<cQ")
_MAX_HEADER = 1 << 20
_MAX_PACKET = 65535
_HEADER_KEYS = ("kind", "model", "sample_rate", "orig_sample_rate", "channels", "items", "hop", "n_q", "codebook_size",
                "bits", "chunking", "stats")
# version-2 packing; a series coded at every d-th step; what a series file's names, index and shape were
_OPTIONAL_KEYS = ("group", "decimate", *SERIES_FILE_KEYS)


def is_stream(head: bytes) -> bool:
    """Whether bytes start like a ``.vqs`` stream."""
    return head[: len(MAGIC)] == MAGIC


def stream_header(codes: Codes) -> dict[str, Any]:
    """The ``.vqs`` header of codes like ``codes`` (their ``.vqa`` header without length and frames)."""
    return {k: v for k, v in codes.header().items() if k not in ("length", "frames")}


class StreamWriter:
    """Write a ``.vqs`` stream to ``f``, flushing after the header and after every packet."""

    def __init__(self, f: BinaryIO, header: dict[str, Any]) -> None:
        self.f, self.header, self.frames = f, header, 0
        self.k, self.shape = header["codebook_size"], (header["items"], header["n_q"])
        data = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
        head = _PREFIX.pack(MAGIC, VERSION, len(data)) + data
        self._put(head + _CRC.pack(zlib.crc32(head)))

    def _put(self, data: bytes) -> None:
        self.f.write(data)
        self.f.flush()

    def write(self, codes: torch.Tensor) -> None:
        """A packet of codes ``[items, n_q, f]`` (nothing for ``f = 0``; split above 65535 frames)."""
        if tuple(codes.shape[:2]) != self.shape:
            raise ValueError(f"StreamWriter: codes {list(codes.shape)} do not match [items, n_q] = {list(self.shape)}")
        for i in range(0, codes.shape[-1], _MAX_PACKET):
            part = codes[..., i : i + _MAX_PACKET]
            packet = _FRAMES.pack(b"F", part.shape[-1]) + pack_codes(part.cpu().numpy().astype(np.int64), self.k)
            self._put(packet + _CRC.pack(zlib.crc32(packet)))
            self.frames += part.shape[-1]

    def end(self, length: int) -> None:
        """The end packet: the signal's length per channel at its original rate."""
        packet = _END.pack(b"E", length)
        self._put(packet + _CRC.pack(zlib.crc32(packet)))


class StreamReader:
    """Read a ``.vqs`` stream from ``f`` as it arrives: :attr:`header` at once, then :meth:`packets`."""

    def __init__(self, f: BinaryIO, name: str = "stdin") -> None:
        self.f, self.name, self.packet, self.length, self.frames = f, name, 0, None, 0
        prefix = self._read(_PREFIX.size, "header")
        magic, version, hlen = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            self._fail("not a vqaudio token stream (bad magic)")
        if version != VERSION:
            self._fail(f"token stream version {version} is not supported (this vqaudio reads {VERSION})")
        if hlen > _MAX_HEADER:
            self._fail(f"corrupted token stream (header length {hlen})")
        data = self._read(hlen, "header")
        (crc,) = _CRC.unpack(self._read(_CRC.size, "header"))
        if zlib.crc32(prefix + data) != crc:
            self._fail("corrupted token stream header (CRC32 mismatch)")
        try:
            h = json.loads(data.decode("utf-8"))
            self.header = {k: h[k] for k in _HEADER_KEYS} | {k: h[k] for k in _OPTIONAL_KEYS if k in h}
            self.items, self.n_q, self.k = int(h["items"]), int(h["n_q"]), int(h["codebook_size"])
            if (h.get("group", 1), h["bits"]) != packing(self.k) or self.items < 1 or self.n_q < 1:
                raise ValueError("bits/group do not fit the codebook size")
        except TokenFileError:
            raise
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as err:
            self._fail(f"invalid token stream header ({type(err).__name__}: {err})")

    def _fail(self, msg: str):
        raise TokenFileError(msg, path=self.name)

    def _read(self, n: int, what: str) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.f.read(n - len(out))
            if not chunk:
                where = "the header" if what == "header" else f"packet {self.packet} ({what})"
                self._fail(f"truncated token stream in {where}: {len(out)} of {n} bytes")
            out += chunk
        return out

    def packets(self) -> Iterator[torch.Tensor]:
        """Codes ``[items, n_q, f]`` of each frame packet; sets :attr:`length` at the end packet."""
        while True:
            self.packet += 1
            tag = self.f.read(1)
            if not tag:
                self._fail(f"truncated token stream: no end packet after {self.packet - 1} packets")
            if tag == b"E":
                rest = self._read(_END.size - 1, "end")
                (crc,) = _CRC.unpack(self._read(_CRC.size, "end"))
                if zlib.crc32(tag + rest) != crc:
                    self._fail(f"corrupted token stream: end packet {self.packet} (CRC32 mismatch)")
                self.length = _END.unpack(tag + rest)[1]
                if self.f.read(1):
                    self._fail(f"corrupted token stream: bytes after the end packet {self.packet}")
                return
            if tag != b"F":
                self._fail(f"corrupted token stream: packet {self.packet} has an unknown type {tag!r}")
            rest = self._read(_FRAMES.size - 1, "frame count")
            f = _FRAMES.unpack(tag + rest)[1]
            if f == 0:
                self._fail(f"corrupted token stream: packet {self.packet} has 0 frames")
            count = self.items * self.n_q * f
            payload = self._read((payload_bits(self.k, count, 1 if packing(self.k)[0] == 1 else 2) + 7) // 8, "codes")
            (crc,) = _CRC.unpack(self._read(_CRC.size, "CRC"))
            if zlib.crc32(tag + rest + payload) != crc:
                self._fail(f"corrupted token stream: packet {self.packet} (CRC32 mismatch)")
            values = unpack_codes(np.frombuffer(payload, dtype=np.uint8), self.k, count)
            codes = torch.from_numpy(values.astype(np.int64)).reshape(self.items, self.n_q, f)
            if int(codes.max()) >= self.k:
                self._fail(f"corrupted token stream: packet {self.packet} holds code {int(codes.max())} >= {self.k}")
            self.frames += f
            yield codes

    def _codes(self, codes: torch.Tensor, length: int) -> Codes:
        h = self.header
        c = Codes(codes, kind=h["kind"], model=h["model"]["name"], model_sha256=h["model"]["sha256"],
                  sample_rate=h["sample_rate"], orig_sample_rate=h["orig_sample_rate"], length=length,
                  channels=h["channels"], hop=h["hop"], codebook_size=h["codebook_size"], chunking=h["chunking"],
                  stats=h["stats"], source=self.name, decimate=step_from_json(h.get("decimate", 1)),
                  **{k: h.get(k) for k in SERIES_FILE_KEYS})
        return c

    def like(self) -> Codes:
        """A :class:`Codes` of no frames with this stream's metadata, to check it against a model
        (:meth:`vqaudio.codec.Codec.check`)."""
        return self._codes(torch.zeros(self.items, self.n_q, 0, dtype=torch.int64), 1)


def write_codes(f: BinaryIO, codes: Codes, packet_frames: int = 256) -> None:
    """``codes`` as a ``.vqs`` stream (lossless: :func:`to_codes` gives them back)."""
    w = StreamWriter(f, stream_header(codes))
    for i in range(0, codes.frames, packet_frames):
        w.write(codes.codes[..., i : i + packet_frames])
    w.end(codes.length)


def to_codes(f: BinaryIO, name: str) -> Codes:
    """The whole stream as :class:`Codes` (the ``.vqa`` content); errors name ``name``."""
    r = StreamReader(f, name)
    parts = list(r.packets())
    codes = torch.cat(parts, dim=-1) if parts else torch.zeros(r.items, r.n_q, 0, dtype=torch.int64)
    c = r._codes(codes, r.length)
    _validate(c, lambda msg: r._fail(f"invalid token stream ({msg})"))
    return c


def codes_from_bytes(data: bytes, name: str) -> Codes:
    """:class:`Codes` of a ``.vqa`` file's or a ``.vqs`` stream's bytes (told apart by their magic)."""
    import io

    from vqaudio.tokenfile import from_bytes

    return to_codes(io.BytesIO(data), name) if is_stream(data) else from_bytes(data, name)


def load_any(path: str | os.PathLike) -> Codes:
    """:class:`Codes` of a ``.vqa`` or ``.vqs`` file; one-line :class:`TokenFileError` naming it on any problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TokenFileError(f"cannot read token file ({err.strerror or err})", path=str(path)) from None
    return codes_from_bytes(data, str(path))
