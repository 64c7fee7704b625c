"""The ``.vqa`` token file: codes of one audio or series file plus what it takes to decode them.

Layout (all integers little-endian; docs/format.md is the specification)::

    magic      8 bytes   b"\\x89VQA\\r\\n\\x1a\\n"
    version    uint16    1 (plain packing) or 2 (grouped packing)
    hlen       uint32    length of the JSON header in bytes
    header     hlen      UTF-8 JSON object (see :class:`Codes` and docs/format.md)
    hcrc       uint32    CRC32 of magic .. header
    payload    the codes in C order, bit-packed, MSB first (below)
    crc        uint32    CRC32 of everything before it

Version 1: every code ``bits = ceil(log2(codebook_size))`` wide. Version 2, written when the codebook
size is not a power of two (FSQ's 8 * 5 * 5 * 5 = 1000): every ``group`` consecutive codes are one
base-K number stored in ``bits = ceil(group * log2 K)`` bits, the last, shorter group in as few bits as
its codes need; ``group <= 64`` is chosen for the fewest bits per code (1000: 59 codes in 588 bits,
9.9661 bits per code against log2 1000 = 9.9658 and 10 for version 1). Powers of two keep version 1,
which older readers read. Reading validates every byte; any problem is a one-line
:class:`vqaudio.errors.TokenFileError` naming the file. Writes are atomic.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.errors import TokenFileError
from vqaudio.io import atomic_path
from vqaudio.series_index import RegularIndex

__all__ = ["MAGIC", "FORMAT_VERSION", "SUFFIX", "Codes", "write", "read", "to_bytes", "from_bytes", "pack_bits",
           "unpack_bits", "code_bits", "packing", "pack_codes", "unpack_codes"]

MAGIC = b"\x89VQA\r\n\x1a\n"
FORMAT_VERSION = 2  # the newest version read and written (version 1: plain packing, still written for powers of two)
_MAX_GROUP = 64  # codes per group of the grouped packing (at most 64 32-bit limbs per group)
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
    channel coded separately). Series models code all channels together (``items == 1``) or, single-channel
    models such as ``series``, each channel separately (``items == channels``).
    ``length`` is the original number of samples per channel (at ``orig_sample_rate``); for series
    both sample rates are ``None``, and ``decimate`` (a :class:`~fractions.Fraction` ``p/q >= 1``, default 1) says the
    series was coded at every ``p/q``-th step (:mod:`vqaudio.series_resample`): its codes cover
    ``ceil(length * q / p)`` steps. ``stats`` holds the series normalisation (``{"mean": [C],
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
    decimate: Fraction | int = 1
    columns: list[str] | None = None
    index: str | None = None
    ndim: int | None = None
    index_values: dict | None = None  # a regular index column (vqaudio.series_index.RegularIndex.to_json)

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
        """Samples per channel at the model's rate: ``ceil(length * sample_rate / orig_sample_rate)``; series:
        ``ceil(length / decimate)``."""
        if self.decimate != 1:
            return coded_steps(self.length, self.decimate)
        return resampled_length(self.length, self.sample_rate, self.orig_sample_rate)

    @property
    def bits(self) -> int | float:
        """Bits per code on disk (:func:`code_bits`)."""
        return code_bits(self.codebook_size)

    @property
    def version(self) -> int:
        """The format version the codes are written in: 1 for plain packing, 2 for grouped (see :func:`packing`)."""
        return 1 if packing(self.codebook_size)[0] == 1 else 2

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
            "bits": packing(self.codebook_size)[1],
            "frames": self.frames,
            "chunking": self.chunking,
            "stats": self.stats,
        } | ({"group": packing(self.codebook_size)[0]} if self.version == 2 else {}) | (
            {"decimate": [Fraction(self.decimate).numerator, Fraction(self.decimate).denominator]}
            if self.decimate != 1 else {}) | {k: getattr(self, k) for k in SERIES_FILE_KEYS if getattr(self, k) is not None}


# Optional header keys (and Codes fields) of series read from a file: the CSV's column names, its index column's name
# and, when regular, its values; the array's dimensions. Written only when set.
SERIES_FILE_KEYS = ("columns", "index", "ndim", "index_values")
MAX_STEP_NUMERATOR, MAX_STEP_DENOMINATOR = 256, 16  # bounds on a series' coded step p/q (resampler size)


def series_step(value: Fraction | int) -> Fraction:
    """``value`` as the step of a series coded at every ``p/q``-th step: a :class:`~fractions.Fraction` (or int) of
    at least 1 with ``p <= 256`` and ``q <= 16``; anything else is a ``ValueError``."""
    ok = isinstance(value, Fraction | int) and not isinstance(value, bool) and value >= 1
    if ok:
        value = Fraction(value)
        ok = value.numerator <= MAX_STEP_NUMERATOR and value.denominator <= MAX_STEP_DENOMINATOR
    if not ok:
        raise ValueError(f"decimate must be a step p/q >= 1 with p <= {MAX_STEP_NUMERATOR} and q <= "
                         f"{MAX_STEP_DENOMINATOR}, got {value!r}")
    return value


def step_from_json(value: Any) -> Fraction | Any:
    """The header's ``decimate`` (``[p, q]``, or absent: 1) as a Fraction; anything else is returned as it is, for
    :func:`_validate` to reject."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return Fraction(value[0], value[1]) if value[1] > 0 else value
    return value


def coded_steps(length: int, step: Fraction | int) -> int:
    """Steps a series of ``length`` has at every ``step``-th step: ``ceil(length * q / p)``, a resampling from rate
    ``p`` to ``q``."""
    step = Fraction(step)
    return resampled_length(length, step.denominator, step.numerator)


def code_bits(codebook_size: int) -> int | float:
    """Bits per code on disk: ``log2 K`` (an int) for a power of two ``K``, else the grouped packing's average
    ``bits / group`` (:func:`packing`; within 0.2% of ``log2 K``, e.g. 588 / 59 = 9.9661 for ``K = 1000``)."""
    group, bits = packing(codebook_size)
    return bits if group == 1 else bits / group


def _plain_bits(codebook_size: int) -> int:
    """``ceil(log2 K)``: the width of one code in version 1 files."""
    return max(1, (int(codebook_size) - 1).bit_length())


def _group_bits(codebook_size: int, group: int) -> int:
    """Bits of ``group`` codes as one base-K number: ``ceil(group * log2 K)`` (exact integer arithmetic)."""
    return max(1, (int(codebook_size) ** group - 1).bit_length())


@functools.lru_cache(maxsize=256)
def packing(codebook_size: int) -> tuple[int, int]:
    """``(group, bits)``: codes per group and the bits of a full group, for the fewest bits per code over
    ``group <= 64`` (ties to the smaller group). ``(1, log2 K)`` for powers of two (version 1 files)."""
    best = (1, _plain_bits(codebook_size))
    if codebook_size & (codebook_size - 1) == 0:
        return best
    for group in range(2, _MAX_GROUP + 1):
        bits = _group_bits(codebook_size, group)
        if bits * best[0] < best[1] * group:
            best = (group, bits)
    return best


def _limbs_to_bits(limbs: np.ndarray, bits: int) -> np.ndarray:
    """uint64 ``limbs [L, G]`` (32-bit limbs, least significant first) as uint8 bits ``[G * bits]``, MSB first."""
    be = np.ascontiguousarray(limbs[::-1].T).astype(">u4")  # [G, L]: most significant limb first
    planes = np.unpackbits(be.view(np.uint8).reshape(be.shape[0], -1), axis=1)
    return planes[:, planes.shape[1] - bits :].reshape(-1)


def _bits_to_limbs(planes: np.ndarray, bits: int, n_limbs: int) -> np.ndarray:
    """Inverse of :func:`_limbs_to_bits`: uint8 bits ``[G * bits]`` as uint64 limbs ``[L, G]``."""
    planes = planes.reshape(-1, bits)
    full = np.zeros((planes.shape[0], 32 * n_limbs), dtype=np.uint8)
    full[:, full.shape[1] - bits :] = planes
    be = np.packbits(full, axis=1).view(">u4")  # [G, L]
    return np.ascontiguousarray(be[:, ::-1].T).astype(np.uint64)


def _encode_groups(digits: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Groups ``digits [G, g]`` (the first most significant) as base-``k`` numbers: uint8 bits ``[G * bits]``."""
    n_limbs, kk, mask = -(-bits // 32), np.uint64(k), np.uint64(0xFFFFFFFF)
    limbs = np.zeros((n_limbs, digits.shape[0]), dtype=np.uint64)
    for i in range(digits.shape[1]):  # Horner: value = value * k + digit, limb by limb (products < 2^64)
        carry = digits[:, i].astype(np.uint64)
        for j in range(n_limbs):
            t = limbs[j] * kk + carry
            limbs[j], carry = t & mask, t >> np.uint64(32)
    return _limbs_to_bits(limbs, bits)


def _decode_groups(planes: np.ndarray, k: int, group: int, bits: int) -> np.ndarray:
    """Inverse of :func:`_encode_groups`: int64 digits ``[G, group]``; the first digit may exceed ``k - 1``
    when the stored number is ``>= k^group`` (a corrupted payload: the caller's range check reports it)."""
    n_limbs, kk, shift = -(-bits // 32), np.uint64(k), np.uint64(32)
    limbs = _bits_to_limbs(planes, bits, n_limbs)
    digits = np.empty((limbs.shape[1], group), dtype=np.int64)
    for i in range(group - 1, 0, -1):  # long division by k, most significant limb first (t < k * 2^32 <= 2^64)
        rem = np.zeros(limbs.shape[1], dtype=np.uint64)
        for j in range(n_limbs - 1, -1, -1):
            t = (rem << shift) | limbs[j]
            limbs[j], rem = t // kk, t % kk
        digits[:, i] = rem
    top = limbs[0] + (limbs[1] << shift) if n_limbs > 1 else limbs[0]  # value // k^(group-1) < 2^(bits-...) <= 2k
    digits[:, 0] = np.minimum(top, np.uint64(2**62)).astype(np.int64)
    return digits


def pack_codes(values: np.ndarray, codebook_size: int) -> bytes:
    """The payload of codes ``values`` (any shape, C order, each in ``[0, K)``) with :func:`packing`."""
    group, bits = packing(codebook_size)
    if group == 1:
        return pack_bits(values, bits)
    flat = np.ascontiguousarray(values).reshape(-1).astype(np.int64)
    full, rest = divmod(flat.size, group)
    block = 8 * max(1, _BLOCK // (8 * group))  # groups per block: a multiple of 8 keeps blocks byte-aligned
    chunks = [_encode_groups(flat[a * group : min(full, a + block) * group].reshape(-1, group), codebook_size, bits)
              for a in range(0, full, block)]
    if rest:  # the last, shorter group in as few bits as its codes need, after the last block
        tail = _encode_groups(flat[full * group :].reshape(1, rest), codebook_size, _group_bits(codebook_size, rest))
        chunks[-1:] = [np.concatenate(chunks[-1:] + [tail])]
    return b"".join(np.packbits(c).tobytes() for c in chunks)


def unpack_codes(data: bytes | np.ndarray, codebook_size: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes as int64 ``[count]``."""
    group, bits = packing(codebook_size)
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if group == 1:
        return unpack_bits(raw, bits, count)
    full, rest = divmod(count, group)
    planes = np.unpackbits(raw, count=full * bits + (_group_bits(codebook_size, rest) if rest else 0))
    out = np.empty(count, dtype=np.int64)
    block = 8 * max(1, _BLOCK // (8 * group))
    for start in range(0, full, block):
        stop = min(full, start + block)
        digits = _decode_groups(planes[start * bits : stop * bits], codebook_size, group, bits)
        out[start * group : stop * group] = digits.reshape(-1)
    if rest:
        tail = planes[full * bits :]
        out[full * group :] = _decode_groups(tail, codebook_size, rest, _group_bits(codebook_size, rest)).reshape(-1)
    return out


def payload_bits(codebook_size: int, count: int, version: int) -> int:
    """Bits of the payload of ``count`` codes in a file of ``version`` (1: plain, 2: grouped)."""
    if version == 1:
        return count * _plain_bits(codebook_size)
    group, bits = packing(codebook_size)
    full, rest = divmod(count, group)
    return full * bits + (_group_bits(codebook_size, rest) if rest else 0)


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
    try:
        series_step(c.decimate)
    except ValueError as err:
        fail(str(err))
    if c.decimate != 1 and c.kind != "series":
        fail("decimate is for series files only")
    for name in ("length", "channels", "hop"):
        if not is_int(getattr(c, name), 1):
            fail(f"{name} must be a positive integer, got {getattr(c, name)!r}")
    if not is_int(c.codebook_size, 2) or _plain_bits(c.codebook_size) > _MAX_BITS:
        fail(f"codebook_size must be an integer in [2, 2**{_MAX_BITS}], got {c.codebook_size!r}")
    if c.codes.dim() != 3 or c.codes.dtype != torch.int64:
        fail(f"codes must be int64 [items, n_q, frames], got {c.codes.dtype} {list(c.codes.shape)}")
    items, n_q, frames = c.codes.shape
    want_items = (c.channels,) if c.kind == "audio" else (1, c.channels)  # series: together, or a channel per item
    if items not in want_items:
        want = " or ".join(str(n) for n in dict.fromkeys(want_items))
        fail(f"{c.kind} codes need {want} item(s) for {c.channels} channel(s), got {items}")
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
    if c.columns is not None and not (c.kind == "series" and isinstance(c.columns, list) and len(c.columns) == c.channels
                                      and all(isinstance(n, str) for n in c.columns)):
        fail(f"columns must be [{c.channels} names] on series files")
    if c.index is not None and not (c.kind == "series" and isinstance(c.index, str)):
        fail("index must be a column name on series files")
    if c.ndim is not None and not (c.kind == "series" and c.ndim in (1, 2) and not isinstance(c.ndim, bool)
                                   and (c.ndim == 2 or c.channels == 1)):
        fail("ndim must be 1 (one channel) or 2 on series files")
    if c.index_values is not None:
        if c.index is None:
            fail("index_values needs an index (its column name)")
        try:
            RegularIndex.from_json(c.index_values)
        except ValueError as err:
            fail(str(err))
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
    head = _PREFIX.pack(MAGIC, codes.version, len(header)) + header
    head += _CRC.pack(zlib.crc32(head))
    payload = pack_codes(codes.codes.cpu().numpy(), codes.codebook_size)
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
    if version not in (1, 2):
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
        meta.update(codebook_size=h["codebook_size"], chunking=h["chunking"], stats=h["stats"],
                    decimate=step_from_json(h.get("decimate", 1)), **{k: h.get(k) for k in SERIES_FILE_KEYS})
        items, n_q, frames, bits = (h[k] for k in ("items", "n_q", "frames", "bits"))
        group = h["group"] if version == 2 else 1
        model_name, sha = model["name"], model["sha256"]
    except KeyError as err:
        fail(f"invalid token file header (no field {err})")
    except TypeError:
        fail("invalid token file header (not a JSON object of the expected fields)")
    except (UnicodeDecodeError, ValueError) as err:
        fail(f"invalid token file header ({type(err).__name__}: {err})")
    except RecursionError:  # e.g. a header of deeply nested [[[[...
        fail("invalid token file header (JSON nested too deeply)")
    for key, v in (("items", items), ("n_q", n_q), ("frames", frames), ("bits", bits), ("group", group)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            fail(f"invalid token file header ({key} = {v!r})")
    k = meta["codebook_size"]
    if version == 1:
        if not 1 <= bits <= _MAX_BITS:  # before unpacking: unpack_bits handles 1..32 bits per code
            fail(f"invalid token file header (bits = {bits}, expected 1 to {_MAX_BITS})")
        if not isinstance(k, int) or isinstance(k, bool) or bits != _plain_bits(k):
            fail(f"invalid token file header (bits = {bits} for codebook size {k!r})")
    elif not isinstance(k, int) or isinstance(k, bool) or not 2 <= k < 2**_MAX_BITS or (group, bits) != packing(k):
        fail(f"invalid token file header (group = {group}, bits = {bits} for codebook size {k!r})")
    count = items * n_q * frames
    pend = hend + _CRC.size + (payload_bits(k, count, version) + 7) // 8
    if size < pend + _CRC.size:
        fail(f"truncated token file ({size} bytes, expected {pend + _CRC.size})")
    if size > pend + _CRC.size:
        fail(f"corrupted token file ({size - pend - _CRC.size} unexpected trailing bytes)")
    (crc,) = _CRC.unpack_from(data, pend)
    if zlib.crc32(data[:pend]) != crc:
        fail("corrupted token file payload (CRC32 mismatch)")
    raw = np.frombuffer(data, dtype=np.uint8, count=pend - hend - _CRC.size, offset=hend + _CRC.size)
    values = unpack_bits(raw, bits, count) if version == 1 else unpack_codes(raw, k, count)
    codes = Codes(torch.from_numpy(values).reshape(items, n_q, frames), model=model_name, model_sha256=sha, source=name,
                  **meta)
    _validate(codes, lambda msg: fail(f"invalid token file ({msg})"))
    return codes
