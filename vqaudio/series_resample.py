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

__all__ = ["decimate", "interpolate", "center_series", "coded_steps"]


def _resample_around_line(x: Tensor, orig: int, new: int) -> Tensor:
    """``x`` float ``[..., T]`` resampled from rate ``orig`` to ``new`` (``ceil(T * new / orig)`` steps, float64)
    around the line through its end points: step ``i`` of the result sits at input position ``i * orig / new``."""
    x = x.double()
    slope = (x[..., -1:] - x[..., :1]) / max(x.shape[-1] - 1, 1)
    y = AF.resample(x - (x[..., :1] + slope * torch.arange(x.shape[-1], dtype=torch.float64)), orig, new)
    return y + x[..., :1] + slope * (torch.arange(y.shape[-1], dtype=torch.float64) * (orig / new))


def decimate(x: Tensor, step: Fraction | int) -> Tensor:
    """``x`` float ``[..., T]`` -> float32 ``[..., ceil(T * q / p)]``: the series at every ``step = p/q``-th time
    step, band-limited first."""
    step = series_step(step)
    if step == 1:
        return x.float()
    return _resample_around_line(x, step.numerator, step.denominator).float()


def interpolate(y: Tensor, step: Fraction | int, length: int) -> Tensor:
    """Inverse of :func:`decimate`: ``y`` float ``[..., n]`` -> ``[..., length]`` (``length <= n * step``), float64 for
    float64 ``y`` (a decoded series at its original offset), else float32."""
    step = series_step(step)
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    if step == 1:
        return y[..., :length].to(dtype)
    return _resample_around_line(y, step.denominator, step.numerator)[..., :length].to(dtype)


def center_series(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x - mean, mean)``: ``x`` float ``[..., T]`` without its mean over time, float32, and that mean, float64
    ``[..., 1]``. Subtracted in float64, so a series far from zero (1e9 + steps of 1) keeps its steps in float32."""
    mean = x.double().mean(-1, keepdim=True)
    return (x.double() - mean).float(), mean
