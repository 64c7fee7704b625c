"""The ``.vqa`` token file: codes of one audio or series file plus what it takes to decode them.

Layout (all integers little-endian; docs/format.md is the specification)::

    magic      8 bytes   b"\\x89VQA\\r\\n\\x1a\\n"
    version    uint16    FORMAT_VERSION
    hlen       uint32    length of the JSON header in bytes
    header     hlen      UTF-8 JSON object (see :class:`Codes` and docs/format.md)
    hcrc       uint32    CRC32 of magic .. header
    payload    ceil(items * n_q * frames * bits / 8) bytes: codes in C order, each ``bits`` wide, MSB first
    crc        uint32    CRC32 of everything before it

``bits = ceil(log2(codebook_size))``. Reading validates every byte; any problem is a one-line
:class:`vqaudio.errors.TokenFileError` naming the file. Writes are atomic.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.errors import TokenFileError
from vqaudio.io import atomic_path

__all__ = ["MAGIC", "FORMAT_VERSION", "SUFFIX", "Codes", "write", "read", "to_bytes", "from_bytes", "pack_bits",
           "unpack_bits", "code_bits"]

MAGIC = b"\x89VQA\r\n\x1a\n"
FORMAT_VERSION = 1
SUFFIX = ".vqa"
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_CRC = struct.Struct("<I")
_MAX_HEADER = 1 << 24  # 16 MiB: a larger header length field is corruption, not data
_MAX_BITS = 32
_BLOCK = 1 << 17  # codes per packing block (a multiple of 8, so blocks start on byte boundaries): ~5 MB scratch
KINDS = ("audio", "series")


@dataclass(eq=False)
class Codes:
    """Codes of one file and the metadata needed to decode them (what a ``.vqa`` file holds).

    ``codes``: int64 ``[items, n_q, frames]``. Audio models are mono: ``items == channels`` (each
    channel coded separately). Series models code all channels together: ``items == 1``.
    ``length`` is the original number of samples per channel (at ``orig_sample_rate``); for series
    both sample rates are ``None``. ``stats`` holds the series normalisation (``{"mean": [C],
    "std": [C]}``) or is ``None``. ``source`` is the file the codes were read from, if any.
    """

    codes: torch.Tensor
    kind: str
    model: str
    model_sha256: str
    sample_rate: int | None
    orig_sample_rate: int | None
    length: int
    channels: int
    hop: int
    codebook_size: int
    chunking: dict[str, int] | None = None
    stats: dict[str, list[float]] | None = None
    source: str | None = None

    @property
    def n_q(self) -> int:
        return int(self.codes.shape[1])

    @property
    def frames(self) -> int:
        return int(self.codes.shape[2])

    @property
    def items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def model_length(self) -> int:
        """Samples per channel at the model's rate: ``ceil(length * sample_rate / orig_sample_rate)``."""
        return resampled_length(self.length, self.sample_rate, self.orig_sample_rate)

    @property
    def bits(self) -> int:
        return code_bits(self.codebook_size)

    def header(self) -> dict[str, Any]:
        """The JSON header of the file (every field but the codes)."""
        return {
            "kind": self.kind,
            "model": {"name": self.model, "sha256": self.model_sha256},
            "sample_rate": self.sample_rate,
            "orig_sample_rate": self.orig_sample_rate,
            "length": self.length,
            "channels": self.channels,
            "items": self.items,
            "hop": self.hop,
            "n_q": self.n_q,
            "codebook_size": self.codebook_size,
            "bits": self.bits,
            "frames": self.frames,
            "chunking": self.chunking,
            "stats": self.stats,
        }


def code_bits(codebook_size: int) -> int:
    """Bits per code on disk: ``ceil(log2(K))`` for ``K >= 2``."""
    return max(1, (int(codebook_size) - 1).bit_length())


def resampled_length(length: int, sr: int | None, orig_sr: int | None) -> int:
    """Samples after resampling ``length`` samples from ``orig_sr`` to ``sr``: ``ceil(length * sr / orig_sr)``."""
    if sr is None or orig_sr is None or sr == orig_sr:
        return length
    g = math.gcd(sr, orig_sr)  # exact integer ceil, as torchaudio's resample computes it
    return -(-length * (sr // g) // (orig_sr // g))


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers ``< 2**bits`` into a big-endian bit stream, ``bits`` per value.

    ``values``: any shape (flattened in C order). Returns ``ceil(values.size * bits / 8)`` bytes; the
    last byte is zero-padded. Vectorised with numpy, in blocks so memory stays O(block).
    """
    flat = np.ascontiguousarray(values).reshape(-1)
    out = []
    for start in range(0, flat.size, _BLOCK):
        be = flat[start : start + _BLOCK].astype(">u4").view(np.uint8).reshape(-1, 4)
        planes = np.unpackbits(be, axis=1)[:, 32 - bits :]  # [n, bits], MSB first
        out.append(np.packbits(planes.reshape(-1)))
    return b"".join(a.tobytes() for a in out)


def unpack_bits(data: bytes | np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values as int64 ``[count]``."""
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    out = np.empty(count, dtype=np.int64)
    step = _BLOCK * bits // 8
    for i, start in enumerate(range(0, count, _BLOCK)):
        n = min(_BLOCK, count - start)
        planes = np.unpackbits(raw[i * step : i * step + step], count=n * bits).reshape(n, bits)
        full = np.zeros((n, 32), dtype=np.uint8)
        full[:, 32 - bits :] = planes
        out[start : start + n] = np.packbits(full, axis=1).view(">u4").reshape(-1)
    return out


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_float32(x: Any) -> bool:
    """Whether ``x`` is a real number (not a bool) that is finite as float32 (stats are decoded in float32);
    an integer too large for a float (a 400-digit one) is ``False``, not an OverflowError."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        f = float(x)
    except OverflowError:
        return False
    return math.isfinite(f) and abs(f) <= _FLOAT32_MAX


def _validate(c: Codes, fail) -> None:
    """Check the metadata's types and mutual consistency; ``fail(msg)`` raises."""

    def is_int(v, lo=0):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    if c.kind not in KINDS:
        fail(f"unknown kind {c.kind!r} (expected one of {', '.join(KINDS)})")
    if not isinstance(c.model, str) or not isinstance(c.model_sha256, str):
        fail("model name and sha256 must be strings")
    if (len(c.model_sha256) != 64 or any(ch not in "0123456789abcdef" for ch in c.model_sha256)):
        fail("model sha256 is not 64 lowercase hex digits")
    if c.kind == "audio":
        if not (is_int(c.sample_rate, 1) and is_int(c.orig_sample_rate, 1)):
            fail("audio needs positive integer sample_rate and orig_sample_rate")
    elif c.sample_rate is not None or c.orig_sample_rate is not None:
        fail("series files have no sample rates")
    for name in ("length", "channels", "hop"):
        if not is_int(getattr(c, name), 1):
            fail(f"{name} must be a positive integer, got {getattr(c, name)!r}")
    if not is_int(c.codebook_size, 2) or code_bits(c.codebook_size) > _MAX_BITS:
        fail(f"codebook_size must be an integer in [2, 2**{_MAX_BITS}], got {c.codebook_size!r}")
    if c.codes.dim() != 3 or c.codes.dtype != torch.int64:
        fail(f"codes must be int64 [items, n_q, frames], got {c.codes.dtype} {list(c.codes.shape)}")
    items, n_q, frames = c.codes.shape
    want_items = c.channels if c.kind == "audio" else 1
    if items != want_items:
        fail(f"{c.kind} codes need {want_items} item(s) for {c.channels} channel(s), got {items}")
    if n_q < 1:
        fail("n_q must be at least 1")
    want_frames = -(-c.model_length // c.hop)
    if frames != want_frames:
        fail(f"{frames} frames do not match length {c.length} at hop {c.hop} (expected {want_frames})")
    if c.chunking is not None and not (
        isinstance(c.chunking, dict) and all(isinstance(k, str) and is_int(v) for k, v in c.chunking.items())
    ):
        fail("chunking must be an object of non-negative integers")
    if c.stats is not None:
        ok = c.kind == "series" and isinstance(c.stats, dict) and set(c.stats) == {"mean", "std"}
        for key in ("mean", "std") if ok else ():
            v = c.stats[key]
            ok = ok and isinstance(v, list) and len(v) == c.channels
            ok = ok and all(_is_float32(x) for x in v)
        if not ok:
            fail(f"stats must be {{'mean': [{c.channels} numbers], 'std': [{c.channels} numbers]}} on series files")
    if c.codes.numel():
        lo, hi = int(c.codes.min()), int(c.codes.max())
        if lo < 0 or hi >= c.codebook_size:
            bad = lo if lo < 0 else hi
            fail(f"code {bad} out of range for codebook size {c.codebook_size}")


def to_bytes(codes: Codes, name: str = "token file") -> bytes:
    """The bytes of the ``.vqa`` file of ``codes``; :class:`TokenFileError` (naming ``name``) if the codes or
    metadata are inconsistent."""

    def fail(msg: str):
        raise TokenFileError(f"cannot write token file: {msg}", path=name)

    _validate(codes, fail)
    header = json.dumps(codes.header(), separators=(",", ":"), sort_keys=True).encode("utf-8")
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    head += _CRC.pack(zlib.crc32(head))
    payload = pack_bits(codes.codes.cpu().numpy(), codes.bits)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + payload + _CRC.pack(crc)


def write(path: str | os.PathLike, codes: Codes) -> None:
    """Write ``codes`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    Raises :class:`TokenFileError` (naming ``path``) if the codes or metadata are inconsistent.
    """
    path = Path(path)
    data = to_bytes(codes, str(path))
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as err:
        raise TokenFileError(f"cannot write token file: {err.strerror or err}", path=str(path)) from None


def read(path: str | os.PathLike) -> Codes:
    """Read and fully validate a ``.vqa`` file; returns :class:`Codes` with ``codes`` int64 ``[items, n_q, F]``.

    Raises :class:`TokenFileError` naming the file if it is missing, truncated, corrupted (CRC),
    foreign (magic), from a newer format version, inconsistent, or holds out-of-range codes.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TokenFileError(f"cannot read token file ({err.strerror or err})", path=str(path)) from None
    return from_bytes(data, str(path))


def from_bytes(data: bytes, name: str) -> Codes:
    """:func:`read` of a ``.vqa`` file's bytes (e.g. from stdin); errors name ``name``."""

    def fail(msg: str):
        raise TokenFileError(msg, path=name)

    size = len(data)
    if data[: len(MAGIC)] != MAGIC[: min(size, len(MAGIC))]:
        fail("not a vqaudio token file (bad magic)")
    if size < _PREFIX.size + _CRC.size:
        fail(f"truncated token file ({size} bytes)")
    _, version, hlen = _PREFIX.unpack_from(data)
    if version > FORMAT_VERSION:
        fail(f"token file format version {version} is newer than this vqaudio reads ({FORMAT_VERSION}); upgrade vqaudio")
    if version != FORMAT_VERSION:
        fail(f"unsupported token file format version {version}")
    hend = _PREFIX.size + hlen
    if hlen > _MAX_HEADER:
        fail(f"corrupted token file (header length {hlen})")
    if size < hend + _CRC.size:
        fail(f"truncated token file ({size} bytes, the header alone needs {hend + _CRC.size})")
    (hcrc,) = _CRC.unpack_from(data, hend)
    if zlib.crc32(data[:hend]) != hcrc:
        fail("corrupted token file header (CRC32 mismatch)")
    try:
        h = json.loads(data[_PREFIX.size : hend].decode("utf-8"))
        model = h["model"]
        meta = {k: h[k] for k in ("kind", "sample_rate", "orig_sample_rate", "length", "channels", "hop")}
        meta.update(codebook_size=h["codebook_size"], chunking=h["chunking"], stats=h["stats"])
        items, n_q, frames, bits = (h[k] for k in ("items", "n_q", "frames", "bits"))
        model_name, sha = model["name"], model["sha256"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        fail(f"invalid token file header ({type(err).__name__}: {err})")
    except RecursionError:  # e.g. a header of deeply nested [[[[...
        fail("invalid token file header (JSON nested too deeply)")
    for key, v in (("items", items), ("n_q", n_q), ("frames", frames), ("bits", bits)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            fail(f"invalid token file header ({key} = {v!r})")
    if not 1 <= bits <= _MAX_BITS:  # before unpacking: unpack_bits handles 1..32 bits per code
        fail(f"invalid token file header (bits = {bits}, expected 1 to {_MAX_BITS})")
    if not isinstance(meta["codebook_size"], int) or bits != code_bits(meta["codebook_size"]):
        fail(f"invalid token file header (bits = {bits} for codebook size {meta['codebook_size']!r})")
    count = items * n_q * frames
    pend = hend + _CRC.size + (count * bits + 7) // 8
    if size < pend + _CRC.size:
        fail(f"truncated token file ({size} bytes, expected {pend + _CRC.size})")
    if size > pend + _CRC.size:
        fail(f"corrupted token file ({size - pend - _CRC.size} unexpected trailing bytes)")
    (crc,) = _CRC.unpack_from(data, pend)
    if zlib.crc32(data[:pend]) != crc:
        fail("corrupted token file payload (CRC32 mismatch)")
    values = unpack_bits(np.frombuffer(data, dtype=np.uint8, count=pend - hend - _CRC.size, offset=hend + _CRC.size), bits, count)
    codes = Codes(torch.from_numpy(values).reshape(items, n_q, frames), model=model_name, model_sha256=sha, source=name,
                  **meta)
    _validate(codes, lambda msg: fail(f"invalid token file ({msg})"))
    return codes
