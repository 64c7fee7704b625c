"""Finite scalar quantisation (Mentzer et al., ICLR 2024): ``FSQ`` and ``ResidualFSQ``.

Each of the ``len(levels)`` code dimensions is bounded to ``L_d`` values and rounded on its own; the
code is the mixed-radix number of the rounded values, so there is no codebook to learn, look up or
restart, and no auxiliary loss. Reference: the paper's appendix A.1 and lucidrains'
``finite_scalar_quantization.py`` / ``residual_fsq.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqaudio.errors import ConfigError

from .common import VQOutput, codebook_stats, project_channels, projections
from .residual import Residual

__all__ = ["FSQ", "ResidualFSQ", "check_levels"]

_EPS = 1e-3  # the bound's margin: tanh never reaches the half-way points between the outer levels


def check_levels(owner: str, levels: Sequence[int]) -> list[int]:
    """``levels`` as a list of integers >= 2 whose product (the codebook size) fits int64 indices."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
        raise ConfigError(f"{owner}: levels must be a non-empty list of integers >= 2, got {levels!r}")
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int) or level < 2:
            raise ConfigError(f"{owner}: every level must be an integer >= 2, got {list(levels)}")
    if math.prod(levels) > 2**31:
        raise ConfigError(f"{owner}: levels {list(levels)} make {math.prod(levels)} codes, more than 2**31")
    return list(levels)


class _BoundRound(torch.autograd.Function):
    """Per channel of ``z [B, C, T]``: ``digit = round(a * bound(z + shift) + b)`` (integers in ``[0, L)``) and the
    code ``(digit - c0) * step``, with ``bound`` tanh or a clamp to ``[-1, 1]``. Backward: the derivative of
    ``a * bound(z + shift) * step``, the rounding passed straight through. Returns ``(codes, digits)``."""

    @staticmethod
    def forward(z: Tensor, grid: Tensor, tanh: bool) -> tuple[Tensor, Tensor]:
        shift, a, b, c0, step = grid.unbind(0)  # each [C, 1]
        u = z + shift
        t = torch.tanh(u) if tanh else u.clamp(-1.0, 1.0)
        digit = torch.round(t * a + b)
        return (digit - c0) * step, digit

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        z, grid, tanh = inputs
        shift, a, _, _, step = grid.unbind(0)
        u = z + shift
        slope = 1 - torch.tanh(u).square() if tanh else (u.abs() <= 1).to(u.dtype)
        ctx.save_for_backward(slope * (a * step))
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad, _):
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None


class FSQ(nn.Module):
    """Finite scalar quantiser of ``[B, dim, T]`` latents with ``prod(levels)`` implicit codes.

    Channel ``d`` of the (projected) input is bounded by ``tanh`` to ``levels[d]`` integer values,
    rounded with the straight-through estimator (the bound stays differentiable), and normalised to
    ``[-1, 1]`` as in the paper (even ``L``: levels ``-L/2 .. L/2 - 1`` over ``L/2``); ``indices`` are the
    mixed-radix numbers of the levels (dimension 0 least significant). When ``dim != len(levels)``,
    learned maps ``project_in`` / ``project_out`` lead into and out of the ``len(levels)``-dimensional
    code space. ``loss`` is 0.

    For residual stages: ``bound="clamp"`` codes inputs that are bounded already, clamped to ``[-1, 1]``,
    on the symmetric grid ``2j / (L - 1) - 1`` (equal cells: what a stage leaves is within
    ``1 / (L - 1)``; the same grid as the paper's for odd ``L``), and ``scale`` (per code dimension)
    makes the quantiser code ``z / scale`` and return ``code * scale``.
    """

    def __init__(
        self, levels: Sequence[int], dim: int | None = None, scale: Sequence[float] | None = None, bound: str = "tanh"
    ) -> None:
        super().__init__()
        levels = check_levels("FSQ", levels)
        if bound not in ("tanh", "clamp"):
            raise ConfigError(f"FSQ: bound must be 'tanh' or 'clamp', got {bound!r}")
        c = len(levels)
        self.levels, self.code_dim, self.dim, self.bound = levels, c, c if dim is None else dim, bound
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"FSQ: dim must be an integer >= 1, got {dim!r}")
        self.codebook_size = math.prod(levels)
        scale_t = torch.ones(c, dtype=torch.float64) if scale is None else torch.as_tensor(scale, dtype=torch.float64)
        if scale_t.shape != (c,) or not bool((scale_t > 0).all()):
            raise ConfigError(f"FSQ: scale must be {c} positive numbers, got {scale!r}")
        lv = torch.tensor(levels, dtype=torch.float64)
        if bound == "tanh":  # the paper: round(tanh(z + shift) * half_l - offset) in [-L//2, (L-1)//2] over L//2
            half_l = (lv - 1) * (1 + _EPS) / 2
            offset = torch.where(lv % 2 == 0, 0.5, 0.0)
            half_width = lv // 2
            grid = [torch.atanh(offset / half_l), half_l, half_width - offset, half_width, 1 / half_width]
        else:  # symmetric: round((clamp(z) + 1) (L - 1) / 2) in [0, L), code 2j / (L - 1) - 1
            half = (lv - 1) / 2
            grid = [torch.zeros_like(lv), half, half, half, 1 / half]
        self.register_buffer("_grid", torch.stack(grid).float()[:, :, None], persistent=False)  # [5, C, 1]
        self.register_buffer("_scale", scale_t.float()[:, None], persistent=False)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int64)[:, None], persistent=False)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), dim=0)
        self.register_buffer("_basis", basis[:, None], persistent=False)
        self.scaled = scale is not None
        self.project_in, self.project_out = projections(self.dim, c)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, dim={self.dim}, codebook_size={self.codebook_size}, bound={self.bound}"

    def _check(self, z: Tensor) -> None:
        if z.dim() != 3 or z.shape[1] != self.dim:
            raise ValueError(f"FSQ: expected z of shape [B, {self.dim}, T], got {list(z.shape)}")

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes ``[B, C, T]`` (differentiable, scaled) and indices ``[B, T]`` of ``z [B, dim, T]``."""
        x = project_channels(self.project_in, z).float()
        if self.scaled:
            x = x / self._scale
        codes, digits = _BoundRound.apply(x, self._grid, self.bound == "tanh")
        if self.scaled:
            codes = codes * self._scale
        return codes, (digits.long() * self._basis).sum(dim=1)

    def forward(self, z: Tensor, mask: Tensor | None = None) -> VQOutput:
        """Quantise ``z [B, dim, T]``; ``mask`` (bool ``[B]``) limits the statistics to the items it keeps."""
        self._check(z)
        codes, indices = self._quantize(z)
        selected = indices if mask is None else indices[mask]
        with torch.no_grad():
            counts = torch.bincount(selected.reshape(-1), minlength=self.codebook_size).float()
            perplexity, usage = codebook_stats(counts)
        quantized = project_channels(self.project_out, codes).to(z.dtype)
        return VQOutput(quantized, indices, z.new_zeros((), dtype=torch.float32), perplexity, usage)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Indices int64 ``[B, T]`` of ``z [B, dim, T]``."""
        self._check(z)
        return self._quantize(z)[1]

    def decode(self, indices: Tensor) -> Tensor:
        """Latents ``[B, dim, T]`` of int64 ``indices [B, T]``."""
        digits = (indices[:, None, :] // self._basis) % self._levels  # [B, C, T]
        _, _, _, c0, step = self._grid.unbind(0)
        codes = (digits - c0) * step
        if self.scaled:
            codes = codes * self._scale
        return project_channels(self.project_out, codes)


class ResidualFSQ(Residual):
    """Residual FSQ: the (projected) input is bounded once, ``z' = tanh(z)``, then ``n_q`` :class:`FSQ` stages
    with the same ``levels`` and the clamp bound (symmetric grid) code it; stage ``i`` codes its residual
    scaled up by ``(L_d - 1)^i`` (what a stage leaves is within ``1 / (L_d - 1)`` of its scale). The
    output approximates ``z'``; its gradient reaches ``z'`` straight through (the identity of the
    stack), then ``z`` through tanh. After lucidrains' ``ResidualFSQ`` (soft clamp, then hard-clamped
    stages).

    Learned maps shared by the stages lead into and out of the ``len(levels)``-dimensional code space
    when ``dim != len(levels)``.
    """

    def __init__(self, n_q: int, dim: int, levels: Sequence[int], quantizer_dropout: float = 0.0) -> None:
        levels = check_levels("ResidualFSQ", levels)
        if n_q < 1:
            raise ConfigError(f"ResidualFSQ: n_q must be >= 1, got {n_q}")
        steps = torch.tensor(levels, dtype=torch.float64) - 1
        layers = [FSQ(levels, scale=(steps ** -i).tolist() if i else None, bound="clamp") for i in range(n_q)]
        super().__init__(layers, dim, len(levels), quantizer_dropout, gradient="straight_through")

    def _into_code_space(self, z: Tensor) -> Tensor:
        return torch.tanh(super()._into_code_space(z))
