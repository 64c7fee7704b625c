"""Coarser time steps for series: resample before coding, back after decoding.

A series model spends ``n_q * log2 K / hop`` bits per time step. A smooth series wastes them at full time resolution:
coded at every ``step``-th time step (``step = p/q >= 1``, not always a whole number), it can have more levels for the
same bits and keep more of its shape. The codec chooses the step per file at a bit budget
(:meth:`vqaudio.codec.Codec.encode_at_rate`) and records it in the token file (``Codes.decimate``, bounded by
:func:`vqaudio.tokenfile.series_step`).

Both directions are torchaudio's band-limited (windowed sinc) resampling by the ratio ``p : q``, around the straight
line through the series' first and last values. That line is taken out before resampling and put back at the new
time steps. The ends then start and finish at zero, so the resampler's zero padding leaves no edge artefacts, and a
trend survives exactly. The bounds on ``p`` and ``q`` keep the resampler's kernel small.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torchaudio.functional as AF
from torch import Tensor

from vqaudio.tokenfile import coded_steps, series_step

__all__ = ["decimate", "interpolate", "coded_steps"]


def _endpoint_line(x: Tensor, positions: Tensor) -> Tensor:
    """``[..., len(positions)]``: the line through ``x[..., 0]`` (position 0) and ``x[..., -1]`` (position ``T - 1``)."""
    slope = (x[..., -1:] - x[..., :1]) / max(x.shape[-1] - 1, 1)
    return x[..., :1] + slope * positions


def decimate(x: Tensor, step: Fraction | int) -> Tensor:
    """``x`` float ``[..., T]`` -> float32 ``[..., ceil(T * q / p)]``: the series at every ``step = p/q``-th time
    step, band-limited first."""
    step = series_step(step)
    if step == 1:
        return x.float()
    x = x.double()
    line = _endpoint_line(x, torch.arange(x.shape[-1], dtype=torch.float64))
    y = AF.resample(x - line, step.numerator, step.denominator)
    return (y + _endpoint_line(x, torch.arange(y.shape[-1], dtype=torch.float64) * float(step))).float()


def interpolate(y: Tensor, step: Fraction | int, length: int) -> Tensor:
    """Inverse of :func:`decimate`: ``y`` float ``[..., n]`` -> float32 ``[..., length]`` (``length <= n * step``)."""
    step = series_step(step)
    if step == 1:
        return y[..., :length].float()
    y = y.double()
    line = _endpoint_line(y, torch.arange(y.shape[-1], dtype=torch.float64))
    z = AF.resample(y - line, step.denominator, step.numerator)[..., :length]
    return (z + _endpoint_line(y, torch.arange(z.shape[-1], dtype=torch.float64) / float(step))).float()
