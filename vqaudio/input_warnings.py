"""One-line warnings about audio going into a codec (:class:`vqaudio.errors.VQAudioWarning`, not errors):
a sample rate above the model's (everything above its Nyquist frequency is dropped), clipping, and a series file's
index column (not coded).

Clipping is counted as runs of at least :data:`CLIP_RUN` consecutive samples at full scale
(``|x| >= CLIP_LEVEL``): a single full-scale peak is not clipping, a flat top is.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from vqaudio.errors import VQAudioWarning

__all__ = ["CLIP_LEVEL", "CLIP_RUN", "ClipCounter", "warn_index", "warn_rate"]

CLIP_LEVEL = 0.999
CLIP_RUN = 3


def warn_rate(source: str | None, sample_rate: int, model_rate: int) -> None:
    """Warn when the input's ``sample_rate`` is above the model's: the band above ``model_rate / 2`` is dropped."""
    if sample_rate > model_rate:
        warnings.warn(f"{source or 'input'}: {sample_rate} Hz input, but the model codes {model_rate} Hz: content above "
                      f"{model_rate / 2000:g} kHz is dropped", VQAudioWarning, stacklevel=3)


def warn_index(source: str | None, name: str) -> None:
    """Say that a series file's first column ``name`` is its row index (dates, times, labels or a rising count) and
    is neither coded nor written back (not a constant step in one spelling): the decoded file has the value columns
    only."""
    label = f"first column {name!r}" if name else "first column"
    warnings.warn(f"{source or 'input'}: the {label} is the row index (dates, times, labels or a rising count): not "
                  f"coded, and not written back (its cells are not one constant step in one spelling); the decoded "
                  f"series has the other columns", VQAudioWarning, stacklevel=3)


class ClipCounter:
    """Counts runs of :data:`CLIP_RUN` or more full-scale samples per channel over a stream of blocks ``[C, n]``."""

    def __init__(self) -> None:
        self.runs = 0
        self.tail: Tensor | None = None  # the last CLIP_RUN mask columns of the previous block, [C, CLIP_RUN]

    def push(self, x: Tensor) -> None:
        """Add a block ``[C, n]`` (float, nominally in [-1, 1])."""
        m = x.abs() >= CLIP_LEVEL
        if self.tail is None or self.tail.shape[0] != m.shape[0]:
            self.tail = torch.zeros(m.shape[0], CLIP_RUN, dtype=torch.bool)
        mm = torch.cat([self.tail, m], dim=1)  # [C, CLIP_RUN + n]: column j + CLIP_RUN is sample j of this block
        full = mm[:, CLIP_RUN:].clone()
        for k in range(1, CLIP_RUN):  # sample j and the k before it are all at full scale
            full &= mm[:, CLIP_RUN - k : mm.shape[1] - k]
        self.runs += int((full & ~mm[:, : mm.shape[1] - CLIP_RUN]).sum())  # the CLIP_RUN-th sample of a run
        self.tail = mm[:, -CLIP_RUN:]

    def warn(self, source: str | None) -> None:
        """Warn if any run was seen."""
        if self.runs:
            warnings.warn(f"{source or 'input'}: clipped: {self.runs} run(s) of {CLIP_RUN} or more samples at full "
                          f"scale (|x| >= {CLIP_LEVEL}); the codes keep the distortion", VQAudioWarning, stacklevel=3)
