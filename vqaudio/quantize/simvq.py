"""SimVQ (Zhu et al., 2024): a frozen random codebook times a learned linear map; ``SimVQ`` and ``ResidualSimVQ``.

The codes are ``C W^T`` with ``C [K, dim]`` drawn once (``N(0, 1/dim)``) and frozen, and ``W [dim, dim]``
learned through the codebook loss: every code moves with ``W``, so none is left behind (no dead codes
to restart). Each step the mapped codebook is formed (``K x dim``) and searched by the fused op
:func:`vqaudio.ops.quantize`. Reference: lucidrains' ``sim_vq.py`` / ``residual_sim_vq.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio import ops
from vqaudio.errors import ConfigError

from .common import VQOutput, codebook_stats, from_rows, to_rows
from .distributed import broadcast_state
from .residual import Residual

__all__ = ["SimVQ", "ResidualSimVQ"]


class _ScaleGrad(torch.autograd.Function):
    """Forward: ``x`` (a view). Backward: the gradient times ``factor``."""

    @staticmethod
    def forward(x: Tensor, factor: float) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.factor = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class SimVQ(nn.Module):
    """Vector quantiser of ``[B, dim, T]`` latents whose ``K`` codes are ``frozen_codebook @ code_transform.weight^T``.

    ``loss = ||sg[z] - e||² + beta ||z - sg[e]||²`` (means over elements): the first term trains the map,
    the second is the commitment. ``rotation_trick``: the gradient reaches ``z`` through the rotation of
    ``z`` onto its code (:func:`vqaudio.ops.rotate_to`) instead of the straight-through identity. The
    state is ``frozen_codebook`` (a buffer, saved: it is random; under DDP rank 0's is broadcast at the first
    training step) and ``code_transform.weight``.
    ``mask`` (bool ``[B]``) limits the loss and statistics to the items it keeps.
    """

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, rotation_trick: bool = False) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"SimVQ: dim must be an integer >= 1, got {dim!r}")
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
            raise ConfigError(f"SimVQ: codebook_size must be an integer >= 1, got {codebook_size!r}")
        if not math.isfinite(beta) or beta < 0:
            raise ConfigError(f"SimVQ: beta must be a finite number >= 0, got {beta!r}")
        self.dim, self.codebook_size, self.beta, self.rotation_trick = dim, codebook_size, beta, bool(rotation_trick)
        self.register_buffer("frozen_codebook", torch.randn(codebook_size, dim) * dim**-0.5)
        self.code_transform = nn.Linear(dim, dim, bias=False)
        self._synced = False  # DDP: the random codebook (a buffer) broadcast from rank 0 once per process

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}, beta={self.beta}, rotation_trick={self.rotation_trick}"

    def codes(self) -> Tensor:
        """The mapped codebook ``[K, dim]`` (differentiable w.r.t. the map)."""
        return self.code_transform(self.frozen_codebook)

    def _check(self, z: Tensor) -> tuple[int, int]:
        if z.dim() != 3 or z.shape[1] != self.dim:
            raise ValueError(f"SimVQ: expected z of shape [B, {self.dim}, T], got {list(z.shape)}")
        return z.shape[0], z.shape[2]

    def forward(self, z: Tensor, mask: Tensor | None = None) -> VQOutput:
        """Quantise ``z [B, dim, T]``."""
        b, t = self._check(z)
        if self.training and not self._synced:
            broadcast_state(self)
            self._synced = True
        codes = self.codes()
        x = to_rows(z).to(codes.dtype)  # [N, dim]
        # One search gives both loss terms: dist2 = ||x - e||² is differentiable w.r.t. x and the chosen
        # codes. Weighted by beta, it gives x the commitment gradient; the codes' gradient (so the map's)
        # is scaled back up by 1/beta on the small [K, dim] codebook, not on the [N, dim] rows.
        if self.beta > 0:
            indices, dist2 = ops.nearest_code(x, _ScaleGrad.apply(codes, 1.0 / self.beta))
            weight = self.beta
        else:
            indices, dist2 = ops.nearest_code(x.detach(), codes)
            weight = 1.0
        quantized = ops.lookup(x, codes, indices, self.rotation_trick)
        rows = None if mask is None else mask.repeat_interleave(t)
        idx_sel, dist2_sel = (indices, dist2) if rows is None else (indices[rows], dist2[rows])
        denom = max(idx_sel.numel() * self.dim, 1)
        total = dist2_sel.sum()
        loss = (weight * total + (1 + self.beta - weight) * total.detach()) / denom  # value (1 + beta) mean ||x - e||²
        with torch.no_grad():
            perplexity, usage = codebook_stats(torch.bincount(idx_sel, minlength=self.codebook_size).float())
        return VQOutput(from_rows(quantized, b, t).to(z.dtype), indices.view(b, t), loss, perplexity, usage)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Indices int64 ``[B, T]`` of the nearest mapped codes of ``z [B, dim, T]``."""
        b, t = self._check(z)
        codes = self.codes()
        return ops.nearest_code(to_rows(z).to(codes.dtype), codes)[0].view(b, t)

    def decode(self, indices: Tensor) -> Tensor:
        """Mapped codes ``[B, dim, T]`` of int64 ``indices [B, T]``."""
        return self.code_transform(F.embedding(indices, self.frozen_codebook)).transpose(1, 2).contiguous()


class ResidualSimVQ(Residual):
    """Residual SimVQ: ``n_q`` :class:`SimVQ` stages, each with its own frozen codebook and map; the output's
    gradient reaches ``z`` straight through, or rotated onto the sum of the stages with ``rotation_trick``."""

    def __init__(
        self, n_q: int, dim: int, codebook_size: int, quantizer_dropout: float = 0.0, beta: float = 0.25,
        rotation_trick: bool = False,
    ) -> None:
        if n_q < 1:
            raise ConfigError(f"ResidualSimVQ: n_q must be >= 1, got {n_q}")
        layers = [SimVQ(dim, codebook_size, beta) for _ in range(n_q)]
        super().__init__(layers, dim, dim, quantizer_dropout, "rotation" if rotation_trick else "straight_through")
