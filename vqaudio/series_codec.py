"""Per-channel coding of a multichannel series with a single-channel series VQ-VAE (TOTEM-style generalist).

A generalist series model (``kind="series"``, ``channels=1``) codes every channel of a series ``x [T, C]``
separately: channel ``c`` is normalised by its own mean and standard deviation over time (RevIN,
:class:`~vqaudio.models.vqvae.SeriesStats`), encoded to ``n_q`` residual levels of ``ceil(T / hop)`` frames, and
decoded back to its own scale. The statistics are side information that travels with the codes
(:class:`SeriesCodes`); the payload is ``C * n_q * F * log2(K)`` bits (:func:`payload_bits`).

``encode_series(model, x) -> SeriesCodes`` and ``decode_series(model, codes) -> x̂ [T, C]`` are what the Codec's
per-channel series path calls; channels are coded as one batch ``[C, 1, T]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from vqaudio.models.vqvae import VQVAE, SeriesStats

__all__ = ["SeriesCodes", "encode_series", "decode_series", "payload_bits"]


class SeriesCodes(NamedTuple):
    """``codes`` int64 ``[C, n_q, F]``, RevIN ``mean`` and ``std`` float32 ``[C]``, ``length`` ``T``."""

    codes: Tensor
    mean: Tensor
    std: Tensor
    length: int


def _check_model(model: VQVAE) -> None:
    if model.config.kind != "series" or model.config.channels != 1:
        raise ValueError(f"per-channel series coding needs a series model with channels=1, got kind={model.config.kind!r} "
                         f"channels={model.config.channels}")


def encode_series(model: VQVAE, x: Tensor, n_q: int | None = None) -> SeriesCodes:
    """Codes of every channel of ``x [T, C]`` (rows = time, as :func:`vqaudio.io.load_series` files) with ``n_q``
    levels (default: all of the model's)."""
    _check_model(model)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"encode_series: expected x of shape [T >= 1, C], got {list(x.shape)}")
    param = next(model.parameters())
    batch = x.T.unsqueeze(1).to(param.device, torch.float32)  # [C, 1, T]
    codes, stats = model.encode(batch, n_q=n_q, return_stats=True)
    return SeriesCodes(codes, stats.mean.reshape(-1).cpu(), stats.std.reshape(-1).cpu(), int(x.shape[0]))


def decode_series(model: VQVAE, codes: SeriesCodes, n_q: int | None = None) -> Tensor:
    """``x̂ [T, C]`` float32 from :func:`encode_series`'s output, using its first ``n_q`` levels (default: all)."""
    _check_model(model)
    c = codes.codes if n_q is None else codes.codes[:, :n_q]
    device = next(model.parameters()).device
    stats = SeriesStats(codes.mean.reshape(-1, 1, 1).to(device), codes.std.reshape(-1, 1, 1).to(device))
    y = model.decode(c.to(device), length=codes.length, stats=stats)  # [C, 1, T]
    return y[:, 0].T.cpu()


def payload_bits(model: VQVAE, codes: SeriesCodes, n_q: int | None = None) -> int:
    """Bits of the token payload: ``C * n_q * F * log2(K)`` (the RevIN statistics are side information)."""
    levels = codes.codes.shape[1] if n_q is None else n_q
    return int(codes.codes.shape[0] * levels * codes.codes.shape[2] * math.log2(model.config.codebook_size))
