"""aeon ``.ts`` files (the UCR/UEA archive format) as series input: one series per case.

``load_ts(path) -> TsCases``: the cases as float64 ``[C, T_i]`` tensors (cases may differ in length) and their
class labels, read with aeon's ``load_from_ts_file`` (aeon is pinned in the ``series`` extra).

``vqaudio encode data.ts`` writes one ``.vqa`` per case into a folder (default: ``data/`` next to the input, or
``-o DIR``), named by the case's index, ``00012.vqa``; with class labels each case goes in its label's
sub-folder, ``DIR/<label>/00012.vqa``, the layout ``vqaudio train-prior --labels`` reads. ``vqaudio decode DIR``
then writes one ``.npy`` ``[T, C]`` per case (mirroring the folders).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from vqaudio.errors import AudioError, ConfigError

__all__ = ["TS_SUFFIX", "TsCases", "is_ts_path", "load_ts", "case_outputs", "encode_ts"]

TS_SUFFIX = ".ts"


class TsCases(NamedTuple):
    """``series``: float64 ``[C, T_i]`` per case; ``labels``: the class label of each case, or ``None``."""

    series: list[Tensor]
    labels: list[str] | None


def is_ts_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` ends in ``.ts`` (case-insensitive)."""
    return Path(path).suffix.lower() == TS_SUFFIX


def load_ts(path: str | os.PathLike) -> TsCases:
    """Read an aeon ``.ts`` file; one-line :class:`AudioError` naming the file on any problem (missing values
    included: the codec codes finite series only)."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise AudioError("no such file" if not path.exists() else "not a regular file", name)
    try:
        from aeon.datasets import load_from_ts_file
    except ImportError:
        raise AudioError("reading .ts files needs aeon: pip install 'vqaudio[series]'", name) from None
    try:
        X, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioError(f"cannot read .ts file: {msg}", name) from None
    cases = [torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64))) for x in X]
    if not cases:
        raise AudioError("holds no cases", name)
    for i, x in enumerate(cases):
        if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise AudioError(f"case {i} is empty (shape {list(x.shape)})", name)
        if not bool(torch.isfinite(x).all()):
            raise AudioError(f"case {i} contains missing (NaN) or infinite values", name)
    labels = [str(v) for v in y] if meta.get("classlabel") and y is not None and len(y) == len(cases) else None
    return TsCases(cases, labels)


def _folder_name(label: str) -> str:
    """A label as a folder name: path separators and odd characters become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", label).strip(".")
    return safe or "_"


def case_outputs(path: str | os.PathLike, cases: TsCases, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where each case's ``.vqa`` goes: ``OUT/[<label>/]<index:05d>.vqa`` (``OUT`` defaults to ``path`` without
    its suffix)."""
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else path.with_suffix("")
    if out.resolve() == path.resolve():
        raise ConfigError("the output folder would be the input file; pass -o DIR", str(path))
    folders = _label_folders(cases.labels or [])
    return [out / (folders[cases.labels[i]] if cases.labels else "") / f"{i:05d}.vqa" for i in range(len(cases.series))]


def _label_folders(labels: list[str]) -> dict[str, str]:
    """A folder per distinct label (:func:`_folder_name`); labels whose names would clash (``.`` and ``..``,
    ``a/b`` and ``a_b``) get ``_2``, ``_3``, ... in order of first appearance, so no two classes share a folder."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for label in labels:
        if label in folders:
            continue
        base = name = _folder_name(label)
        n = 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        folders[label] = name
        taken.add(name)
    return folders


def encode_ts(codec, path: str | os.PathLike, out_dir: str | os.PathLike | None = None, n_q: int | None = None,
              force: bool = False, bits_per_sample: float | None = None) -> list[Path]:
    """Encode every case of a ``.ts`` file with ``codec`` to its own ``.vqa`` (:func:`case_outputs`), with ``n_q``
    levels or within ``bits_per_sample`` (:meth:`vqaudio.codec.Codec.encode_any_series`); existing outputs are an
    error before anything is written unless ``force``. Returns the written paths."""
    from vqaudio.codec import save_codes

    cases = load_ts(path)
    outs = case_outputs(path, cases, out_dir)
    existing = [p for p in outs if p.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(f"output exists{more}; pass --force to replace", str(existing[0]))
    codes = [codec.encode_any_series(x, n_q, f"{path} (case {i})", bits_per_sample) for i, x in enumerate(cases.series)]
    for dst, c in zip(outs, codes, strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_codes(dst, c)
    return outs
