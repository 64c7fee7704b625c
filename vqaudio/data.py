"""Training data: random fixed-length crops of audio files or time series, and a deterministic split.

Sources (:func:`build_datasets`, the ``--data`` of ``vqaudio train``):

- a folder, searched recursively (hidden files and folders skipped), of audio files (any suffix
  soundfile reads) or of series files (``.npy`` / ``.csv`` / ``.tsv``, rows = time, columns = channels: see
  :mod:`vqaudio.io`);
- a manifest (``.txt``, ``.lst``, ``.list`` or ``.scp``): one path per line (relative paths are
  relative to the manifest; blank lines and lines starting with ``#`` are skipped);
- ``aeon:NAME``: a UCR/UEA classification set shipped inside the ``aeon`` package (GunPoint,
  ArrowHead, BasicMotions, JapaneseVowels, ...; train and test parts together, loaded offline);
- a single audio or series file.

Items are float32 ``[C, segment]``. Audio is resampled to the model rate and is mono (a random
channel of a multi-channel file per crop). Items shorter than ``segment`` are padded: audio with
zeros (silence), series with NaN, which ``VQVAE.forward`` leaves out of its RevIN statistics and its loss
and feeds to the encoder as zeros (what follows the end of a series it codes).

Randomness is a pure function of ``(seed, index, epoch)``: :meth:`CropDataset.sample` draws the
crop of item ``index`` for epoch ``epoch``, so a training run (or a resumed one, or one over
several processes) sees exactly the same data. ``dataset[index]`` is the deterministic
validation view (a fixed crop per item). The train/valid split puts each source item on one side
by a hash of its name, so it stays stable when files are added.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from vqaudio.augment import AugmentConfig, augment
from vqaudio.errors import AudioError, ConfigError
from vqaudio.io import check_audio_file, is_audio_path, is_series_path, load_audio, load_series

__all__ = ["CropDataset", "AudioCrops", "SeriesCrops", "find_files", "input_files", "is_manifest_path", "read_manifest", "relative_names", "load_aeon", "split_names",
           "build_datasets"]


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    h = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


class CropDataset(Dataset):
    """Base class: ``sample(index, epoch)`` gives a random crop ``[C, segment]``; ``[index]`` a fixed one."""

    def __init__(self, segment: int, seed: int = 0) -> None:
        if segment < 1:
            raise ConfigError(f"segment must be >= 1, got {segment}")
        self.segment, self.seed = segment, seed

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Tensor:
        """The whole item ``[C, T]``."""
        raise NotImplementedError

    def pad(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.segment - x.shape[-1]))

    def crop(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        """``[C, segment]``: random (``g``) or centred (``None``) window of ``x [C, T]``, padded if short."""
        excess = x.shape[-1] - self.segment
        if excess <= 0:
            return self.pad(x)
        start = int(torch.randint(0, excess + 1, (1,), generator=g)) if g is not None else excess // 2
        return x[:, start : start + self.segment]

    def sample(self, index: int, epoch: int) -> Tensor:
        return self.crop(self.load(index), torch.Generator().manual_seed(_mix(self.seed, index, epoch)))

    def __getitem__(self, index: int) -> Tensor:
        return self.crop(self.load(index), None)


class AudioCrops(CropDataset):
    """Mono crops of ``segment`` samples at ``sample_rate`` from audio ``files``."""

    def __init__(self, files: list[Path], sample_rate: int, segment: int, seed: int = 0, cache: bool = True,
                 augment: AugmentConfig | None = None) -> None:
        super().__init__(segment, seed)
        self.files, self.sample_rate, self.cache = list(files), sample_rate, cache
        self.augment = augment if augment is not None and augment.enabled else None
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    @property
    def folders(self) -> list[str]:
        """Each file's parent folder (the groups of ``TrainConfig.balance = "folders"``)."""
        return [str(Path(f).parent) for f in self.files]

    def load(self, index: int) -> Tensor:
        if index in self._cache:
            return self._cache[index]
        wav, _ = load_audio(self.files[index], self.sample_rate)
        if self.cache:
            self._cache[index] = wav
        return wav

    def sample(self, index: int, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(_mix(self.seed, index, epoch))
        wav = self.load(index)
        ch = int(torch.randint(0, wav.shape[0], (1,), generator=g))
        x = self.crop(wav[ch : ch + 1], g)
        return x if self.augment is None else augment(x, self.sample_rate, self.augment, g)

    def __getitem__(self, index: int) -> Tensor:
        return self.crop(self.load(index)[:1], None)


class SeriesCrops(CropDataset):
    """Crops of ``segment`` steps of series ``[C, T_i]`` (all with the same ``C``)."""

    def __init__(self, series: list[Tensor], segment: int, seed: int = 0, names: list[str] | None = None) -> None:
        super().__init__(segment, seed)
        self.series = series
        self.names = names or [str(i) for i in range(len(series))]
        if series and len({s.shape[0] for s in series}) > 1:
            raise AudioError(f"series have different channel counts {sorted({s.shape[0] for s in series})}; all must match")

    @property
    def channels(self) -> int:
        return int(self.series[0].shape[0])

    def __len__(self) -> int:
        return len(self.series)

    @property
    def folders(self) -> list[str]:
        """Each series' folder, from its name (the groups of ``TrainConfig.balance = "folders"``)."""
        return [os.path.dirname(n) for n in self.names]

    def load(self, index: int) -> Tensor:
        return self.series[index]

    def pad(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.segment - x.shape[-1]), value=float("nan"))


MANIFEST_SUFFIXES = frozenset({".txt", ".lst", ".list", ".scp"})


def is_manifest_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a manifest by its suffix (``.txt``, ``.lst``, ``.list``, ``.scp``)."""
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES


def _audio_or_series(path: Path) -> bool:
    return is_audio_path(path) or is_series_path(path)


def find_files(root: str | os.PathLike, accept: Callable[[Path], bool] | None = None) -> list[Path]:
    """Files under ``root`` that ``accept`` takes (default: audio or series), recursive and sorted; hidden paths skipped."""
    root = Path(root)
    accept = accept or _audio_or_series
    return sorted(p for p in root.rglob("*") if p.is_file() and accept(p)
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def input_files(spec: str | os.PathLike, accept: Callable[[Path], bool] | None = None,
                what: str = "an audio or series") -> tuple[list[Path], Path]:
    """``(files, root)`` of one input: the files it names and the folder their relative names start from.

    A folder: :func:`find_files` under it. A manifest (:func:`is_manifest_path`): the files it lists, in
    order (:func:`read_manifest`). A file ``accept`` takes (default: audio or series): itself. Anything
    else, or a manifest listing a file ``accept`` does not take, is an error that names ``what`` is wanted.
    """
    path = Path(spec).expanduser()
    accept = accept or _audio_or_series
    if path.is_dir():
        return find_files(path, accept), path
    if not path.exists():
        raise ConfigError("no such file or folder", str(path))
    if accept(path):
        return [path], path.parent
    if not is_manifest_path(path):
        raise ConfigError(f"not {what} file, nor a manifest ({', '.join(sorted(MANIFEST_SUFFIXES))}: a path per line)",
                          str(path))
    files = read_manifest(path)
    wrong = [str(f) for f in files if not accept(f)]
    if wrong:
        raise AudioError(f"manifest lists {len(wrong)} file(s) that are not {what} file, e.g. {wrong[0]}", str(path))
    return files, path.parent


def relative_names(files: list[Path], root: Path) -> list[str]:
    """Names of ``files`` relative to ``root``, or, if a manifest lists a file outside ``root``, all of them
    relative to the listed files' common folder (so adding such a file to a manifest renames the others)."""
    names = [os.path.relpath(f, root) for f in files]
    if any(n == os.pardir or n.startswith(os.pardir + os.sep) for n in names):
        base = os.path.commonpath([os.path.abspath(f.parent) for f in files])
        names = [os.path.relpath(os.path.abspath(f), base) for f in files]
    return names


def read_manifest(path: str | os.PathLike) -> list[Path]:
    """Paths listed in a manifest file (UTF-8), one per line, relative to the manifest's folder.

    Blank lines and lines starting with ``#`` are skipped. A manifest listing no file, a missing file,
    a folder or the same file twice is an error.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AudioError(f"cannot read manifest ({err})", str(path)) from None
    entries = [(n, path.parent / s) for n, s in enumerate((ln.strip() for ln in lines), 1) if s and not s.startswith("#")]
    if not entries:
        raise AudioError("manifest lists no files", str(path))
    folders = [f"{f} (line {n})" for n, f in entries if f.is_dir()]
    if folders:
        raise AudioError(f"manifest lists {len(folders)} folder(s), e.g. {folders[0]}: list files", str(path))
    missing = [f"{f} (line {n})" for n, f in entries if not f.is_file()]
    if missing:
        raise AudioError(f"manifest lists {len(missing)} missing file(s), e.g. {missing[0]}", str(path))
    first: dict[str, int] = {}
    for n, f in entries:
        key = os.path.abspath(f)
        if key in first:
            raise AudioError(f"manifest lists {f} twice (lines {first[key]} and {n})", str(path))
        first[key] = n
    return [f for _, f in entries]


def load_aeon(name: str) -> tuple[list[Tensor], list[str]]:
    """All series (train + test) of the aeon classification set ``name``: ``[C, T_i]`` float32 each.

    Only sets shipped inside the aeon package are accepted (nothing is downloaded).
    """
    try:
        import aeon.datasets
        from aeon.datasets import load_classification
    except ImportError:
        raise ConfigError("aeon:NAME data needs the 'aeon' package (pip install aeon)") from None
    shipped = Path(aeon.datasets.__file__).parent / "data"
    if not (shipped / name / f"{name}_TRAIN.ts").is_file():
        names = sorted(p.name for p in shipped.iterdir() if (p / f"{p.name}_TRAIN.ts").is_file())
        raise AudioError(f"aeon data set {name!r} is not shipped with aeon (offline); available: {', '.join(names)}")
    X, _ = load_classification(name)
    series = [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in X]
    for i, s in enumerate(series):
        if s.dim() != 2 or s.shape[-1] == 0 or not bool(torch.isfinite(s).all()):
            raise AudioError(f"aeon data set {name!r}: item {i} is empty, not [C, T] or has NaN (missing values are not supported)")
    return series, [f"{name}/{i}" for i in range(len(series))]


def split_names(names: list[str], valid_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices ``(train, valid)``: an item is held out when the hash of its name falls below ``valid_fraction``.

    Both sides get at least one item when there are two or more.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    u = [_mix(seed, n) / 2**63 for n in names]
    valid = [i for i, v in enumerate(u) if v < valid_fraction]
    if valid_fraction > 0 and not valid and len(names) > 1:
        valid = [min(range(len(u)), key=u.__getitem__)]
    if len(valid) == len(names) and len(names) > 1:
        valid = valid[:-1]
    held = set(valid)
    return [i for i in range(len(names)) if i not in held], valid


DEFAULT_AUDIO_SEGMENT = 4096


def build_datasets(
    spec: str,
    segment: int | None,
    sample_rate: int | None = None,
    kind: str | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    cache: bool = True,
    augment: AugmentConfig | None = None,
) -> tuple[CropDataset, CropDataset, dict]:
    """``(train, valid, info)`` for ``--data spec`` (folder, manifest, file or ``aeon:NAME``).

    ``kind`` (``"audio"``/``"series"``) is inferred from the files when ``None``; audio needs
    ``sample_rate``. ``info`` has ``kind``, ``channels``, ``sample_rate`` (``None`` for series) and
    the item counts and ``segment``. A single series file is one item; a single audio file too.
    ``segment=None``: 4096 samples for audio, the longest item for series. ``augment`` applies to the
    training crops of audio (:mod:`vqaudio.augment`), never to validation.
    """
    if spec.startswith("aeon:"):
        series, names = load_aeon(spec[5:])
        found = "series"
    else:
        files, root = input_files(spec)
        if not files:
            raise AudioError("no audio (.wav, .flac, ...) or series (.npy, .csv, .tsv) files found", spec)
        audio = [f for f in files if is_audio_path(f)]
        found = "audio" if audio else "series"
        if audio and len(audio) != len(files):
            raise AudioError(f"mixes audio and series files ({len(audio)} audio, {len(files) - len(audio)} series); use one kind", spec)
        names = [os.path.relpath(f, root) for f in files]
    if kind is not None and kind != found:
        raise ConfigError(f"--data {spec} holds {found} but the model is for {kind}")
    train_idx, valid_idx = split_names(names, valid_fraction, seed)
    if found == "series" and not spec.startswith("aeon:"):
        series = [load_series(f).float() for f in files]  # training crops are float32
    if segment is None:
        segment = DEFAULT_AUDIO_SEGMENT if found == "audio" else max(s.shape[-1] for s in series)
    if found == "audio":
        if not sample_rate:
            raise ConfigError("audio data needs a model sample rate")
        for f in files:  # a corrupt, empty or truncated file fails now, not hours into training
            check_audio_file(f, sample_rate)
        train = AudioCrops([files[i] for i in train_idx], sample_rate, segment, seed, cache, augment)
        valid = AudioCrops([files[i] for i in valid_idx], sample_rate, segment, seed, cache)
        channels = 1
    else:
        if augment is not None and augment.enabled:
            raise ConfigError("augmentation is for audio; this data is series", spec)
        channels = int(series[0].shape[0])
        if len({s.shape[0] for s in series}) > 1:
            raise AudioError(f"series have different channel counts {sorted({s.shape[0] for s in series})}; all must match", spec)
        train, valid = (SeriesCrops([series[i] for i in idx], segment, seed, [names[i] for i in idx])
                        for idx in (train_idx, valid_idx))
    info = {"kind": found, "channels": channels, "sample_rate": sample_rate if found == "audio" else None,
            "train_items": len(train), "valid_items": len(valid), "segment": segment, "source": spec}
    return train, valid, info
