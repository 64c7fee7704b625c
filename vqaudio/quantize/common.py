"""What every quantiser shares: the output types, the straight-through function, code statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqaudio.errors import ConfigError

__all__ = ["VQOutput", "RVQOutput", "StraightThrough", "codebook_stats", "to_rows", "from_rows", "projections",
           "project_channels", "check_codebook_dim"]


@dataclass
class VQOutput:
    """Output of a single-stage quantiser (:class:`VectorQuantizer`, ``FSQ``, ``LFQ``, ``SimVQ``).

    quantized: ``[B, D, T]`` quantised latents, differentiable (straight-through or the quantiser's own
    gradient). indices: int64 ``[B, T]``. loss: scalar auxiliary loss (0 where the quantiser has none).
    perplexity: scalar ``exp(H(p))`` of this batch's code histogram; usage: scalar fraction of codes used.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    perplexity: Tensor
    usage: Tensor


@dataclass
class RVQOutput:
    """Output of a residual quantiser (``ResidualVQ``, ``ResidualFSQ``, ``ResidualLFQ``, ``ResidualSimVQ``).

    quantized: ``[B, D, T]`` (differentiable); codes: int64 ``[B, n_q, T]``; loss: scalar sum over
    stages; stats: ``perplexity`` and ``usage`` float ``[n_q]`` per stage, ``n_q`` int64 ``[B]`` the
    number of stages each item used (lower than ``n_q`` only under quantiser dropout).
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    stats: dict[str, Tensor]


class StraightThrough(torch.autograd.Function):
    """Forward: ``value``. Backward: the gradient goes to ``z`` unchanged."""

    @staticmethod
    def forward(z: Tensor, value: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def codebook_stats(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Perplexity ``exp(-sum p log p)`` and fraction of used codes of a code histogram ``counts [K]``."""
    p = counts / counts.sum().clamp_min(1.0)
    return torch.special.entr(p).sum().exp(), torch.count_nonzero(counts) / counts.numel()


def to_rows(z: Tensor) -> Tensor:
    """``z [B, D, T]`` as contiguous rows ``[B * T, D]`` (one row per frame)."""
    b, d, t = z.shape
    return z.transpose(1, 2).reshape(b * t, d).contiguous()


def from_rows(x: Tensor, b: int, t: int) -> Tensor:
    """Rows ``[B * T, D]`` back to ``[B, D, T]`` (a transposed view, no copy)."""
    return x.view(b, t, x.shape[1]).transpose(1, 2)


def check_codebook_dim(owner: str, dim: int, codebook_dim: int | None) -> int:
    """The code-space dimension: ``codebook_dim`` (checked to lie in ``[1, dim]``) or ``dim``."""
    if codebook_dim is None:
        return dim
    if isinstance(codebook_dim, bool) or not isinstance(codebook_dim, int) or not 1 <= codebook_dim <= dim:
        raise ConfigError(f"{owner}: codebook_dim must be an integer in [1, dim = {dim}], got {codebook_dim!r}")
    return codebook_dim


def projections(dim: int, code_dim: int) -> tuple[nn.Linear | None, nn.Linear | None]:
    """Learned maps into and out of a ``code_dim`` code space (``nn.Linear`` with bias), or ``(None, None)``
    when ``code_dim == dim``."""
    if code_dim == dim:
        return None, None
    return nn.Linear(dim, code_dim), nn.Linear(code_dim, dim)


def project_channels(linear: nn.Linear | None, z: Tensor) -> Tensor:
    """``linear`` applied to the channels of ``z [B, C, T]``: ``[B, C', T]`` (identity for ``None``)."""
    if linear is None:
        return z
    b, _, t = z.shape
    # one batched GEMM on the channels-first layout: no transposed copies of z, forward or backward
    # (measured 2-3x faster than F.linear on the transposed view at [32, 64, 512])
    bias = linear.bias[None, :, None].expand(b, -1, t)
    return torch.baddbmm(bias, linear.weight.expand(b, -1, -1), z)
