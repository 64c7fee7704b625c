"""Reading and writing audio and time series as ``[C, T]`` float32 tensors.

Audio goes through soundfile (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, AU, CAF, W64, RF64, ...) and
is resampled with :func:`torchaudio.functional.resample`. Series are ``.npy``, ``.csv`` or ``.tsv`` files in
the same layout: **rows are time steps, columns are channels** (a ``T x C`` table; a 1-D ``.npy``
is one channel). A ``.csv`` may start with a header row of names (kept: decoding writes them back) and may have an
index column, not coded: a first column of dates, times or labels, or a rising numeric one named like
:data:`INDEX_NAMES` (pandas' ``to_csv`` writes its index so).

Every write goes to a temporary file in the destination folder and is renamed into place
(:func:`atomic_path`), so readers never see a half-written file. Unusable input raises
:class:`vqaudio.errors.AudioError` with one line naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from vqaudio.errors import AudioError
from vqaudio.series_index import RegularIndex, regular_index

__all__ = [
    "AUDIO_SUFFIXES",
    "SERIES_SUFFIXES",
    "atomic_path",
    "check_audio_file",
    "check_not_truncated",
    "header_frames",
    "is_audio_path",
    "check_series_codable",
    "is_series_path",
    "load_audio",
    "load_series",
    "read_series",
    "SeriesTable",
    "resample",
    "resample_kernel_size",
    "resample_problem",
    "save_audio",
    "save_series",
]

# suffix -> soundfile container format
_AUDIO_FORMATS = {
    ".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG",
    ".mp3": "MP3", ".aif": "AIFF", ".aiff": "AIFF", ".aifc": "AIFF", ".au": "AU", ".snd": "AU",
    ".caf": "CAF", ".w64": "W64", ".rf64": "RF64",
}  # fmt: skip
_DEFAULT_SUBTYPE = {".opus": "OPUS"}
AUDIO_SUFFIXES = frozenset(s for s, fmt in _AUDIO_FORMATS.items() if fmt in sf.available_formats())
SERIES_SUFFIXES = frozenset({".npy", ".csv", ".tsv"})


def is_audio_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a suffix soundfile can read (case-insensitive)."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def is_series_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``.npy``, ``.csv`` or ``.tsv`` series file (case-insensitive)."""
    return Path(path).suffix.lower() in SERIES_SUFFIXES


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it.

    The temporary name keeps the suffix of ``path`` (some writers pick the format from it) and
    gets the permissions a plain ``open(path, "w")`` would have.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Data-chunk sizes a WAV writer puts in a header it cannot seek back to (a pipe): unknown length, read to the end.
# 0 and 0xFFFFFFFF (ffmpeg), 0x7FFFF000 (sox).
WAV_UNKNOWN_SIZES = frozenset({0, 0x7FFFF000, 0xFFFFFFFF})
_WAV_SAMPLE_TAGS = {1, 3, 6, 7, 0xFFFE}  # PCM, float, A-law, mu-law, extensible: block_align bytes per frame


def _head(src: str | os.PathLike | BinaryIO, n: int) -> tuple[bytes, int]:
    """The first ``n`` bytes of a file or a seekable binary stream, and its size (the stream's position is kept)."""
    if hasattr(src, "read"):
        pos = src.tell()
        src.seek(0)
        head = src.read(n)
        size = src.seek(0, os.SEEK_END)
        src.seek(pos)
        return head, size
    with open(src, "rb") as f:
        return f.read(n), os.fstat(f.fileno()).st_size


def header_frames(path: str | os.PathLike | BinaryIO) -> int | None:
    """Sample frames per channel that a WAV or AIFF header declares when its sample data chunk runs past
    the end of the file (a truncated file); ``None`` when the chunk is complete, or unknown (other
    formats, compressed WAV, a streaming header with size 0, 0xFFFFFFFF or sox's 0x7FFFF000, an unparsable header).

    libsndfile silently shortens a truncated WAV/AIFF to the bytes present (``frames`` then agrees
    with what it reads), so detecting truncation needs the header's own count. The WAV count uses
    channels x bytes per sample, as libsndfile does for PCM, not a possibly wrong ``block_align``.
    """
    try:
        head, file_size = _head(path, 1 << 20)
    except OSError:
        return None
    if len(head) < 12:
        return None
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        order = "little" if head[:4] == b"RIFF" else "big"
        pos, block, tag = 12, 0, None
        while pos + 8 <= len(head):
            cid, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], order)
            if cid == b"fmt " and pos + 8 + 16 <= len(head):
                tag = int.from_bytes(head[pos + 8 : pos + 10], order)
                channels = int.from_bytes(head[pos + 10 : pos + 12], order)
                bits = int.from_bytes(head[pos + 22 : pos + 24], order)
                block = channels * ((bits + 7) // 8) or int.from_bytes(head[pos + 20 : pos + 22], order)
            elif cid == b"data":
                if tag not in _WAV_SAMPLE_TAGS or block == 0 or size in WAV_UNKNOWN_SIZES or pos + 8 + size <= file_size:
                    return None
                return size // block
            pos += 8 + size + (size & 1)
        return None
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        pos, frames = 12, None
        while pos + 8 <= len(head):
            cid, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "big")
            if cid == b"COMM" and pos + 8 + 6 <= len(head):
                frames = int.from_bytes(head[pos + 10 : pos + 14], "big") or None
            elif cid == b"SSND":
                return None if pos + 8 + size <= file_size else frames
            pos += 8 + size + (size & 1)
        return frames
    return None


def check_not_truncated(path: str | os.PathLike | BinaryIO, frames: int, name: str | None = None) -> None:
    """Raise :class:`AudioError` when ``path``'s header declares more than the ``frames`` libsndfile reads.

    libsndfile silently shortens a truncated WAV/AIFF to what is there (see :func:`header_frames`).
    """
    declared = header_frames(path)
    if declared is not None and declared > frames:
        raise AudioError(f"truncated: header says {declared} samples, file holds {frames}", name or str(path))


def _check_readable(path: Path, suffixes: frozenset[str], kind: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise AudioError(f"unsupported {kind} file suffix {path.suffix!r} (expected one of {', '.join(sorted(suffixes))})", str(path))
    if not path.exists():
        raise AudioError("no such file", str(path))
    if not path.is_file():
        raise AudioError("not a regular file", str(path))
    if path.stat().st_size == 0:
        raise AudioError("file is empty (0 bytes)", str(path))


def _check_values(x: torch.Tensor, path: Path) -> torch.Tensor:
    if x.shape[0] == 0:
        raise AudioError("has zero channels", str(path))
    if x.shape[1] == 0:
        raise AudioError("is empty (0 samples)", str(path))
    if not bool(torch.isfinite(x).all()):
        raise AudioError("contains NaN or Inf samples", str(path))
    return x


def check_series_codable(x: torch.Tensor, min_length: int, name: str | None = None) -> None:
    """One-line :class:`AudioError` naming ``name`` unless the series ``x [C, T]`` has at least ``min_length`` steps
    and no constant channel (RevIN divides by each channel's std: a constant carries no shape to code)."""
    if x.shape[-1] < min_length:
        raise AudioError(f"series has {x.shape[-1]} time step(s), but the model codes at least {min_length}", name)
    low, high = torch.aminmax(x, dim=-1)
    flat = low == high
    if bool(flat.any()):
        c = int(flat.nonzero()[0, 0])
        which = "the series is" if x.shape[0] == 1 else f"channel {c} (of {x.shape[0]}) is"
        raise AudioError(f"{which} constant ({float(x[c, 0]):g} throughout): nothing to code", name)
    spread = (high.double() - low.double()).max()
    if not 1e-30 < float(spread) < 1e30:  # the model works in float32 (about 1e-38 to 3e38), std and all
        raise AudioError(f"values spread over {float(spread):g}: outside the 1e-30 to 1e30 the model codes (rescale "
                         f"the series first)", name)


# torchaudio's windowed-sinc kernel has ``new/g`` phases of ``orig/g + 2 * ceil(6 * orig / (0.99 * min(orig, new)))``
# taps for g = gcd(orig, new) (both divided by g): rates with a small gcd (8000 -> 8001, 44101 -> 8000) would need
# gigabytes and minutes. Refused above this many kernel elements (64 MiB of float32, a few times that while it is
# built); common rate pairs need at most 36,000 (441:80), and lopsided ones such as 44056 -> 8000 Hz (5507:1000)
# 5.6 million.
MAX_RESAMPLE_KERNEL = 1 << 24


def resample_kernel_size(orig_sr: int, sample_rate: int) -> int:
    """Elements of the kernel :func:`torchaudio.functional.resample` builds for ``orig_sr`` -> ``sample_rate`` Hz
    (its default 6 zero crossings and roll-off 0.99)."""
    g = math.gcd(orig_sr, sample_rate)
    o, n = orig_sr // g, sample_rate // g
    width = math.ceil(6 * o / (min(o, n) * 0.99))
    return n * (o + 2 * width)


def resample_problem(orig_sr: int, sample_rate: int) -> str | None:
    """Why resampling ``orig_sr`` to ``sample_rate`` Hz is refused (one line), or ``None`` when it is fine:
    refused when the resampling kernel (:func:`resample_kernel_size`) exceeds :data:`MAX_RESAMPLE_KERNEL`."""
    if orig_sr == sample_rate or resample_kernel_size(orig_sr, sample_rate) <= MAX_RESAMPLE_KERNEL:
        return None
    g = math.gcd(orig_sr, sample_rate)
    return (f"cannot resample {orig_sr} Hz to {sample_rate} Hz: the reduced ratio {orig_sr // g}:{sample_rate // g} "
            f"would need a {resample_kernel_size(orig_sr, sample_rate) * 4 >> 20} MiB filter (at most "
            f"{MAX_RESAMPLE_KERNEL * 4 >> 20} MiB); convert it to a common rate such as 8000, 16000, 22050, 44100 or 48000 "
            f"Hz first (sox and ffmpeg convert any rate)")


def resample(wav: torch.Tensor, orig_sr: int, sample_rate: int) -> torch.Tensor:
    """Resample ``wav[..., T]`` from ``orig_sr`` to ``sample_rate`` Hz (windowed sinc, torchaudio).

    Raises :class:`AudioError` for rate pairs with a small common divisor (see :func:`resample_problem`).
    """
    if orig_sr == sample_rate:
        return wav
    problem = resample_problem(orig_sr, sample_rate)
    if problem:
        raise AudioError(problem)
    return AF.resample(wav, orig_sr, sample_rate)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read an audio file.

    Returns ``(wav, orig_sr)``: ``wav`` is float32 ``[C, T]`` in [-1, 1] for integer formats,
    resampled to ``sample_rate`` when given (``T`` then counts samples at the new rate), and
    ``orig_sr`` is the file's own sample rate.
    """
    path = Path(path)
    _check_readable(path, AUDIO_SUFFIXES, "audio")
    if sample_rate is not None and (not isinstance(sample_rate, int) or sample_rate <= 0):
        raise AudioError(f"target sample rate must be a positive integer, got {sample_rate!r}", str(path))
    try:
        data, orig_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioError(f"cannot read audio (corrupt or unsupported): {err}", str(path)) from None
    check_not_truncated(path, data.shape[0])
    wav = _check_values(torch.from_numpy(np.ascontiguousarray(data.T)), path)
    if sample_rate is not None:
        problem = resample_problem(int(orig_sr), sample_rate)
        if problem:
            raise AudioError(problem, str(path))
        wav = resample(wav, int(orig_sr), sample_rate).contiguous()
    return wav, int(orig_sr)


def check_audio_file(path: str | os.PathLike, sample_rate: int | None = None) -> int:
    """Check ``path`` from its header alone (cheap: no samples read) and return its frames per channel.

    Raises the one-line :class:`AudioError` that :func:`load_audio` would for an unreadable, corrupt,
    empty or truncated file, or a rate that cannot be resampled to ``sample_rate``. NaN samples are
    only found by reading them.
    """
    path = Path(path)
    _check_readable(path, AUDIO_SUFFIXES, "audio")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioError(f"cannot read audio (corrupt or unsupported): {err}", str(path)) from None
    if info.frames == 0 or info.channels == 0:
        raise AudioError("is empty (0 samples)", str(path))
    check_not_truncated(path, info.frames)
    problem = resample_problem(int(info.samplerate), sample_rate) if sample_rate is not None else None
    if problem:
        raise AudioError(problem, str(path))
    return int(info.frames)


def save_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, subtype: str | None = None) -> None:
    """Write ``wav`` (``[C, T]``, or ``[T]`` for mono; float, nominally in [-1, 1]) atomically.

    The format comes from the suffix of ``path``; ``subtype`` is soundfile's (default: the
    format's default, e.g. 16-bit PCM for WAV/FLAC, so values outside [-1, 1] clip).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        raise AudioError(f"unsupported audio file suffix {path.suffix!r} (expected one of {', '.join(sorted(AUDIO_SUFFIXES))})", str(path))
    wav = torch.as_tensor(wav).detach().to("cpu", torch.float32)
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2:
        raise AudioError(f"audio to write must be [C, T], got shape {list(wav.shape)}", str(path))
    _check_values(wav, path)
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}", str(path))
    if not path.parent.is_dir():
        raise AudioError("output folder does not exist", str(path))
    subtype = subtype or _DEFAULT_SUBTYPE.get(suffix)
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), wav.T.numpy(), sample_rate, format=_AUDIO_FORMATS[suffix], subtype=subtype)
    except OSError as err:  # mkstemp / os.replace: e.g. the destination is a folder, or no permission
        raise AudioError(f"cannot write audio: {err.strerror or err}", str(path)) from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioError(f"cannot write audio: {err}", str(path)) from None


def _csv_delimiter(f) -> str:
    """``;`` or tab when the first non-blank line has them (spreadsheet exports in many locales), else ``,``."""
    first = next((line for line in f if line.strip()), "")
    f.seek(0)
    return ";" if ";" in first else "\t" if "\t" in first else ","


# Header names of a numeric first column that is the row index when its values rise strictly (pandas writes its
# index with an empty name): the index is not coded, like a column of dates or labels. Compared in lower case, without
# a unit in brackets ("Time (s)", "t [ms]") and with "_", "-" and spaces alike.
INDEX_NAMES = frozenset({"", "index", "idx", "i", "n", "no", "#", "id", "t", "time", "times", "timestamp", "time stamp",
                         "date", "datetime", "date time", "unnamed: 0", "step", "steps", "time step", "timestep",
                         "sample", "samples", "frame", "epoch", "seconds", "sec", "s", "ms", "year", "elapsed",
                         "elapsed time", "time s", "time ms"})


def _index_name(name: str) -> str:
    """A header name as :data:`INDEX_NAMES` holds it: ``"Time (s)"`` -> ``"time"``, ``"time_step"`` -> ``"time step"``."""
    name = re.sub(r"\s*[(\[][^()\[\]]*[)\]]\s*$", "", name.strip().lower())
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@dataclass
class SeriesTable:
    """A series file's values and names: ``values`` float64 ``[C, T]``; ``columns`` the header's names of those C
    value columns (``None`` without a header); ``index`` the name of a first column that was the row index and is
    not among the values (dates, times or labels, or a rising numeric column named like :data:`INDEX_NAMES`); ``ndim``
    the array's dimensions in the file (1: a ``.npy`` vector)."""

    values: torch.Tensor
    columns: list[str] | None = None
    index: str | None = None
    ndim: int = 2  # 1 for a 1-D ``.npy`` array ``[T]`` (one channel): decoding writes one back
    index_values: RegularIndex | None = None  # the index column when it is regular: decoding writes it back


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None, str | None, RegularIndex | None]:
    """``(T x C table, column names or None, index column name or None, the index if regular)`` of a comma-, semicolon- or tab-separated
    file (``.tsv``: tabs) with an optional header row and an optional index column (see :class:`SeriesTable`)."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its byte-order mark (Excel's "Unicode text")
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise AudioError("cannot read CSV (not valid UTF-16 text)", str(path)) from None
    if b"\0" in data:
        raise AudioError("cannot read CSV (not text)", str(path))
    try:
        text = data.decode("utf-8-sig")  # UTF-8, with or without the byte-order mark spreadsheets write
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # legacy spreadsheet exports (Windows-1252 and Latin-1 letters in names)
    f = io.StringIO(text, newline="")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else _csv_delimiter(f)
    rows = [[c.strip() for c in r] for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        return np.zeros((0, 0)), None, None, None
    # A first column of text (dates, times, labels) beside numbers is the row index; the first row is the header
    # when any of its other cells is text.
    text_index = (len(rows[0]) >= 2 and all(len(r) >= 2 and r[0] and not _is_number(r[0]) for r in rows[1:])
                  and any(_is_number(c) for r in rows[1:2] for c in r[1:]))
    first = rows[0][1:] if text_index else rows[0]
    header = rows[0] if not all(_is_number(c) for c in first) else None
    if header is not None:
        rows = rows[1:]
        if header[0].startswith("#"):  # numpy.savetxt's header line: "# a,b"
            header = [header[0].lstrip("#").strip(), *header[1:]]
    if not rows:
        raise AudioError("has a header row but no data rows", str(path))
    width = len(header) if header is not None else len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise AudioError(f"row {i + 1} has {len(r)} columns, expected {width}", str(path))
        for j, c in enumerate(r):
            if not c:
                raise AudioError(f"row {i + 1}, column {j + 1} is empty (a series must have every value)", str(path))
    index = None
    if text_index:
        index = header[0] if header is not None else ""
    start = 1 if text_index else 0
    table = np.empty((len(rows), width - start), dtype=np.float64)
    for i, r in enumerate(rows):
        for j in range(start, width):
            try:
                table[i, j - start] = float(r[j])
            except ValueError:
                name = f" ({header[j]!r})" if header is not None and header[j] else ""
                hint = " (write decimals with '.', not ',')" if delimiter != "," and "," in r[j] else ""
                raise AudioError(f"row {i + 1}, column {j + 1}{name} is not a number: {r[j][:40]!r}{hint}",
                                 str(path)) from None
    if (not text_index and header is not None and width >= 2 and _index_name(header[0]) in INDEX_NAMES
            and len(rows) >= 2 and bool(np.all(np.diff(table[:, 0]) > 0))):
        index, table = header[0], table[:, 1:]
    columns = None if header is None else header[1:] if index is not None else header
    return table, columns, index, None if index is None else regular_index([r[0] for r in rows])


def load_series(path: str | os.PathLike) -> torch.Tensor:
    """Read a ``.npy``, ``.csv`` or ``.tsv`` time series as float64 ``[C, T]``: :func:`read_series`'s values."""
    return read_series(path).values


def read_series(path: str | os.PathLike) -> SeriesTable:
    """Read a ``.npy``, ``.csv`` or ``.tsv`` time series: its values as float64 ``[C, T]`` (as exact as the file: a series far
    from zero keeps its steps until the codec subtracts its mean) and, for a CSV, its column names and index column.

    Both formats hold a ``T x C`` table (rows = time, columns = channels); a 1-D ``.npy`` array
    is a single channel.
    """
    path = Path(path)
    _check_readable(path, SERIES_SUFFIXES, "series")
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            what = "a .npz archive (np.savez): save one array with np.save" if magic[:2] == b"PK" else "no NumPy header"
            raise AudioError(f"not a .npy array ({what})", str(path))
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise AudioError(f"cannot read .npy (corrupt, truncated or pickled): {err}", str(path)) from None
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
            raise AudioError(f"series must be real numbers, got dtype {arr.dtype}", str(path))
        ndim = arr.ndim
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise AudioError(f"series .npy must be 1-D [T] or 2-D [T, C], got shape {list(arr.shape)}", str(path))
        columns = index = index_values = None
    else:
        (arr, columns, index, index_values), ndim = _read_csv(path), 2
    x = torch.from_numpy(np.ascontiguousarray(arr.T, dtype=np.float64))
    return SeriesTable(_check_values(x, path), columns, index, ndim, index_values)


def save_series(path: str | os.PathLike, x: torch.Tensor, columns: list[str] | None = None, ndim: int = 2,
                index: str | None = None, index_values: RegularIndex | None = None) -> None:
    """Write ``x`` (``[C, T]``, or ``[T]``) as ``.npy``, ``.csv`` or ``.tsv`` (a ``T x C`` table), atomically: float64 stays
    float64 (a decoded series at its original offset), any other dtype is written as float32. A CSV's header row
    holds ``columns`` (C names, e.g. the input's) or ``ch0, ch1, ...``; with ``index_values`` (a CSV or TSV) the
    first column is that index, headed ``index``. ``ndim=1`` writes one channel to a ``.npy`` as a vector ``[T]``
    (as it was read)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SERIES_SUFFIXES:
        raise AudioError(f"unsupported series file suffix {path.suffix!r} (expected .npy, .csv or .tsv)", str(path))
    x = torch.as_tensor(x).detach()
    x = x.to("cpu", torch.float64 if x.dtype == torch.float64 else torch.float32)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise AudioError(f"series to write must be [C, T], got shape {list(x.shape)}", str(path))
    _check_values(x, path)
    if not path.parent.is_dir():
        raise AudioError("output folder does not exist", str(path))
    table = x.T.contiguous().numpy()
    try:
        with atomic_path(path) as tmp:
            if suffix == ".npy":
                with open(tmp, "wb") as f:
                    np.save(f, table[:, 0] if ndim == 1 and table.shape[1] == 1 else table, allow_pickle=False)
            else:
                names = columns if columns is not None and len(columns) == table.shape[1] else [
                    f"ch{i}" for i in range(table.shape[1])]
                buf = io.StringIO()
                delimiter = "\t" if suffix == ".tsv" else ","
                writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")  # quotes names holding one, or "\n"
                writer.writerow(names if index_values is None else [index or "", *names])
                # the shortest text that reads back as the same float64 (repr), or float32's 9 digits
                cell = repr if table.dtype == np.float64 else (lambda v: f"{v:.9g}")
                rows = (map(cell, row.tolist()) for row in table)
                if index_values is not None:
                    rows = ([i, *r] for i, r in zip(index_values.cells(len(table)), rows, strict=True))
                writer.writerows(rows)
                Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
    except OSError as err:  # mkstemp / os.replace / the write: e.g. the destination is a folder, disk full
        raise AudioError(f"cannot write series: {err.strerror or err}", str(path)) from None
