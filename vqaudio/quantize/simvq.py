"""SimVQ (Zhu et al., 2024): a frozen random codebook times a learned linear map; ``SimVQ`` and ``ResidualSimVQ``.

The codes are ``C W^T + b`` with ``C [K, dim]`` drawn once (``N(0, 1/dim)``) and frozen, and the map
``W [dim, dim]``, ``b [dim]`` learned through the codebook loss: every code moves with the map. The first
training batch fits the map to the latents (:mod:`.data_init`), and a code that still falls out of use has its
frozen row re-drawn so that its mapped code goes to a recent latent (:mod:`.redraw`). Each step the mapped codebook is formed (``K x dim``) and searched by the fused
channels-first op :func:`vqaudio.ops.quantize_channels`. References: the paper's code (youngsheen/SimVQ,
whose map has a bias), lucidrains' ``sim_vq.py`` / ``residual_sim_vq.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio import ops
from vqaudio.errors import ConfigError

from .common import VQOutput, codebook_stats, from_rows, to_rows
from .data_init import InitOnFirstBatch, fit_map_
from .distributed import broadcast_state
from .redraw import CodeCounts, redraw_dead_rows_
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


class SimVQ(nn.Module, InitOnFirstBatch):
    """Vector quantiser of ``[B, dim, T]`` latents whose ``K`` codes are ``code_transform(frozen_codebook)``.

    ``loss = ||sg[z] - e||² + beta ||z - sg[e]||²`` (means over elements): the first term trains the map,
    the second is the commitment. ``rotation_trick``: the gradient reaches ``z`` through the rotation of
    ``z`` onto its code (:func:`vqaudio.ops.rotate_to`) instead of the straight-through identity. The
    state is ``frozen_codebook`` (a buffer, saved: it is random; under DDP rank 0's is broadcast at the first
    training step) and ``code_transform`` (weight and bias). ``data_init``: the first training batch sets the
    map so that the mapped codes have the mean and covariance of its latents (:mod:`.data_init`; a random
    map leaves a new encoder's latents all on the same few codes), unless the state was loaded.
    Dead-code restart (:mod:`.redraw`): before each training step after the first, the frozen rows of codes
    whose EMA count (``decay``, in assignments per batch, ``code_counts``) is below ``dead_threshold`` are
    re-drawn so that their mapped codes go to random latents of the (global) batch, as far as rows no longer
    than the longest drawn one (``max_row_norm``) allow (:func:`.redraw.aim_rows_`); ``dead_threshold=0``
    disables it. ``mask`` (bool ``[B]``) limits the loss and statistics to the items it keeps.
    """

    def __init__(
        self, dim: int, codebook_size: int, beta: float = 0.25, rotation_trick: bool = False, data_init: bool = True,
        dead_threshold: float = 1.0, decay: float = 0.99,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"SimVQ: dim must be an integer >= 1, got {dim!r}")
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
            raise ConfigError(f"SimVQ: codebook_size must be an integer >= 1, got {codebook_size!r}")
        if not math.isfinite(beta) or beta < 0:
            raise ConfigError(f"SimVQ: beta must be a finite number >= 0, got {beta!r}")
        if not math.isfinite(dead_threshold) or dead_threshold < 0:
            raise ConfigError(f"SimVQ: dead_threshold must be a finite number >= 0, got {dead_threshold!r}")
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"SimVQ: decay must be in [0, 1), got {decay!r}")
        self.dim, self.codebook_size, self.beta, self.rotation_trick = dim, codebook_size, beta, bool(rotation_trick)
        self.register_buffer("frozen_codebook", torch.randn(codebook_size, dim) * dim**-0.5)
        self.register_buffer("max_row_norm", self.frozen_codebook.norm(dim=1).max())  # re-drawn rows stay within
        self.code_transform = nn.Linear(dim, dim)  # with a bias, as the paper's code (youngsheen/SimVQ)
        self.dead_threshold = float(dead_threshold)
        self.code_counts = CodeCounts(codebook_size, decay)
        self._synced = False  # DDP: the random codebook (a buffer) broadcast from rank 0 once per process
        self._init_on_first_batch()
        if not data_init:
            self.data_initialized()

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, beta={self.beta}, rotation_trick={self.rotation_trick}, "
                f"dead_threshold={self.dead_threshold}, decay={self.code_counts.decay}")

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
        def latents() -> Tensor:  # the kept items' frames as rows [N, dim] (a copy: made only when needed)
            return to_rows(z if mask is None else z[mask])

        if self.needs_data_init():
            fit_map_(self.code_transform, self.frozen_codebook, latents())
            self.data_initialized()
        elif self.training and self.dead_threshold > 0 and int(self.code_counts.step) > 0:
            redraw_dead_rows_(self.code_transform, self.frozen_codebook, self.code_counts, self.dead_threshold,
                              latents, float(self.max_row_norm))
        codes = self.codes()
        if self.beta > 0:
            # One search gives both loss terms: dist2 = ||z - e||² is differentiable w.r.t. z and the chosen
            # codes. Weighted by beta, it gives z the commitment gradient; the codes' gradient (so the map's)
            # is scaled back up by 1/beta on the small [K, dim] codebook, not on the frames. The fused op
            # reads z channels-first and returns the codes (gradient: straight through or rotated) that way.
            quantized, indices, dist2 = ops.quantize_channels(z.to(codes.dtype), _ScaleGrad.apply(codes, 1.0 / self.beta),
                                                              self.rotation_trick)
            weight = self.beta
        else:  # no commitment: the search's gradient reaches the codes only
            x = to_rows(z).to(codes.dtype)  # [N, dim]
            indices, dist2 = ops.nearest_code(x.detach(), codes)
            quantized = from_rows(ops.lookup(x, codes, indices, self.rotation_trick), b, t)
            indices, dist2, weight = indices.view(b, t), dist2.view(b, t), 1.0
        idx_sel, dist2_sel = (indices, dist2) if mask is None else (indices[mask], dist2[mask])
        denom = max(idx_sel.numel() * self.dim, 1)
        total = dist2_sel.sum()
        loss = (weight * total + (1 + self.beta - weight) * total.detach()) / denom  # value (1 + beta) mean ||z - e||²
        with torch.no_grad():
            counts = torch.bincount(idx_sel.reshape(-1), minlength=self.codebook_size).float()
            if self.training:
                counts = self.code_counts.update_(counts)
            perplexity, usage = codebook_stats(counts)
        return VQOutput(quantized.to(z.dtype), indices, loss, perplexity, usage)

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
        rotation_trick: bool = False, data_init: bool = True, dead_threshold: float = 1.0, decay: float = 0.99,
    ) -> None:
        if n_q < 1:
            raise ConfigError(f"ResidualSimVQ: n_q must be >= 1, got {n_q}")
        layers = [SimVQ(dim, codebook_size, beta, data_init=data_init, dead_threshold=dead_threshold, decay=decay)
                  for _ in range(n_q)]
        super().__init__(layers, dim, dim, quantizer_dropout, "rotation" if rotation_trick else "straight_through")
