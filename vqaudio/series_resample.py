"""Coarser time steps for series: decimate before coding, interpolate back after decoding.

A series model spends ``n_q * log2 K / hop`` bits per time step. A smooth series wastes them at full time resolution:
coded at every ``d``-th step (``d`` times the levels for the same bits), it keeps more of its shape. The codec
chooses ``d`` per file at a bit budget (:meth:`vqaudio.codec.Codec.encode_at_rate`) and records it in the token
file (``Codes.decimate``).

Both directions are torchaudio's band-limited (windowed sinc) resampling by the integer factor ``d``, around the
straight line through the series' first and last values. That line is taken out before resampling and put back at
the new time steps. The ends then start and finish at zero, so the resampler's zero padding leaves no edge
artefacts, and a trend survives exactly.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = ["decimate", "interpolate", "decimated_length"]


def decimated_length(length: int, d: int) -> int:
    """Time steps left of ``length`` after decimating by ``d``: ``ceil(length / d)``."""
    return -(-length // d)


def _endpoint_line(x: Tensor, positions: Tensor) -> Tensor:
    """``[..., len(positions)]``: the line through ``x[..., 0]`` (position 0) and ``x[..., -1]`` (position ``T - 1``)."""
    slope = (x[..., -1:] - x[..., :1]) / max(x.shape[-1] - 1, 1)
    return x[..., :1] + slope * positions


def decimate(x: Tensor, d: int) -> Tensor:
    """``x`` float ``[..., T]`` -> float32 ``[..., ceil(T / d)]``: every ``d``-th step, band-limited first."""
    if d == 1:
        return x.float()
    x = x.double()
    line = _endpoint_line(x, torch.arange(x.shape[-1], dtype=torch.float64))
    y = AF.resample(x - line, d, 1)
    return (y + _endpoint_line(x, torch.arange(y.shape[-1], dtype=torch.float64) * d)).float()


def interpolate(y: Tensor, d: int, length: int) -> Tensor:
    """Inverse of :func:`decimate`: ``y`` float ``[..., n]`` -> float32 ``[..., length]`` (``length <= n * d``)."""
    if d == 1:
        return y[..., :length].float()
    y = y.double()
    line = _endpoint_line(y, torch.arange(y.shape[-1], dtype=torch.float64))
    z = AF.resample(y - line, 1, d)[..., :length]
    return (z + _endpoint_line(y, torch.arange(z.shape[-1], dtype=torch.float64) / d)).float()
