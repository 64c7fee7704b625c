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


def check_noise_dropout(owner: str, noise_dropout: float) -> None:
    """``noise_dropout`` must be a probability."""
    if isinstance(noise_dropout, bool) or not isinstance(noise_dropout, (int, float)) or not 0 <= noise_dropout <= 1:
        raise ConfigError(f"{owner}: noise_dropout must be a number in [0, 1], got {noise_dropout!r}")


class _BoundRound(torch.autograd.Function):
    """Per channel of ``z [B, C, T]``: ``digit = round(a * bound(z + shift) + b)`` (integers in ``[0, L)``) and the
    code ``(digit - c0) * step``, with ``bound`` tanh or a clamp to ``[-1, 1]``. Backward: the derivative of
    ``a * bound(z + shift) * step``, the rounding passed straight through (its slope is saved by the forward,
    which has ``tanh(z + shift)`` at hand, when ``z`` needs a gradient). Returns ``(codes, digits)``."""

    @staticmethod
    def forward(ctx, z: Tensor, grid: Tensor, tanh: bool) -> tuple[Tensor, Tensor]:
        shift, a, b, c0, step = grid.unbind(0)  # each [C, 1]
        u = z + shift
        t = torch.tanh(u) if tanh else u.clamp(-1.0, 1.0)
        digit = torch.round(t * a + b)
        if ctx.needs_input_grad[0]:
            slope = 1 - t.square() if tanh else (u.abs() <= 1).to(u.dtype)
            ctx.save_for_backward(slope * (a * step))
        ctx.mark_non_differentiable(digit)
        return (digit - c0) * step, digit

    @staticmethod
    def backward(ctx, grad, _):
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None


def substitute_noise(value: Tensor, continuous: Tensor, cell: Tensor, p: float, low: Tensor, high: Tensor) -> Tensor:
    """``value`` (rounded codes) with each element replaced, with probability ``p``, by ``continuous`` (the same
    codes before rounding) plus uniform noise over a cell of width ``cell``, clamped to ``[low, high]``;
    gradients go to ``value`` only (noise substitution, Parker et al. 2024, section 3.2)."""
    noisy = torch.minimum(torch.maximum(continuous + (torch.rand_like(continuous) - 0.5) * cell, low), high)
    keep = torch.rand_like(continuous) >= p
    return value + torch.where(keep, torch.zeros_like(value), (noisy - value).detach())


class FSQ(nn.Module):
    """Finite scalar quantiser of ``[B, dim, T]`` latents with ``prod(levels)`` implicit codes.

    Channel ``d`` of the (projected) input is bounded by ``tanh`` to ``levels[d]`` integer values,
    rounded with the straight-through estimator (the bound stays differentiable), and normalised to
    ``[-1, 1]`` as in the paper (even ``L``: levels ``-L/2 .. L/2 - 1`` over ``L/2``); ``indices`` are the
    mixed-radix numbers of the levels (dimension 0 least significant). When ``dim != len(levels)``,
    learned maps ``project_in`` / ``project_out`` lead into and out of the ``len(levels)``-dimensional
    code space. ``loss`` is 0. ``noise_dropout``: in training, each code element is, with this probability,
    the bounded input plus uniform noise over its cell instead of its rounded value (see :class:`ResidualFSQ`).

    For residual stages: ``bound="clamp"`` codes inputs that are bounded already, clamped to ``[-1, 1]``,
    on the symmetric grid ``2j / (L - 1) - 1`` (equal cells: what a stage leaves is within
    ``1 / (L - 1)``; the same grid as the paper's for odd ``L``), and ``scale`` (per code dimension)
    makes the quantiser code ``z / scale`` and return ``code * scale``.
    """

    def __init__(
        self, levels: Sequence[int], dim: int | None = None, scale: Sequence[float] | None = None, bound: str = "tanh",
        noise_dropout: float = 0.5,
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
        # the digits' mixed-radix sum in float32 is exact below 2**24 codes (one int64 pass fewer per step)
        self._float_index = self.codebook_size <= 2**24
        self.register_buffer("_basis_float", basis.float()[:, None], persistent=False)
        self.scaled = scale is not None
        self.project_in, self.project_out = projections(self.dim, c)
        check_noise_dropout("FSQ", noise_dropout)
        self.noise_dropout = noise_dropout

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
        if self.training and self.noise_dropout > 0:
            codes = self._substitute_noise(x.detach(), codes)
        if self.scaled:
            codes = codes * self._scale
        if self._float_index:
            return codes, (digits * self._basis_float).sum(dim=1).long()
        return codes, (digits.long() * self._basis).sum(dim=1)

    def _substitute_noise(self, x: Tensor, codes: Tensor) -> Tensor:
        """``codes`` with noise substitution (``noise_dropout``) from the unrounded codes of the input ``x``."""
        shift, a, b, c0, step = self._grid.unbind(0)
        u = x + shift
        continuous = ((torch.tanh(u) if self.bound == "tanh" else u.clamp(-1.0, 1.0)) * a + b - c0) * step
        return substitute_noise(codes, continuous, step, self.noise_dropout, -c0 * step, (self._levels - 1 - c0) * step)

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

    ``noise_dropout`` (default 0.5): in training, each element of the output is, with this probability, the
    bounded input plus uniform noise over the last stage's cell instead of its rounded value (the noise
    substitution of Parker et al., 2024, section 3.2; vector-quantize-pytorch's ``noise_dropout``). With the
    straight-through gradient alone the encoder is blind to the grid: in the 500-step speech runs the four
    code dimensions ended up correlated (0.86-0.95) and the rounded codes used 85% of the 1000 codes with
    perplexity 80; under noise, which is independent per dimension, spreading and decorrelating the code
    dimensions pays off in the reconstruction: 100% usage, perplexity 278 (docs/benchmarks.md).
    """

    def __init__(
        self, n_q: int, dim: int, levels: Sequence[int], quantizer_dropout: float = 0.0, noise_dropout: float = 0.5,
    ) -> None:
        levels = check_levels("ResidualFSQ", levels)
        if n_q < 1:
            raise ConfigError(f"ResidualFSQ: n_q must be >= 1, got {n_q}")
        check_noise_dropout("ResidualFSQ", noise_dropout)
        steps = torch.tensor(levels, dtype=torch.float64) - 1
        # the stages round exactly: the stack substitutes the noise (for the sum of the stages it uses)
        layers = [FSQ(levels, scale=(steps ** -i).tolist() if i else None, bound="clamp", noise_dropout=0.0)
                  for i in range(n_q)]
        super().__init__(layers, dim, len(levels), quantizer_dropout, gradient="straight_through")
        self.noise_dropout = noise_dropout
        self.register_buffer("_steps", steps.float()[:, None], persistent=False)  # [C, 1]: L_d - 1

    def _training_value(self, z: Tensor, total: Tensor, n_item: Tensor) -> Tensor:
        """With probability ``noise_dropout`` per element, ``z`` plus uniform noise over the last stage's cell
        (width ``2 / (L_d - 1)^n`` after ``n`` stages) instead of the rounded value."""
        if self.noise_dropout == 0:
            return total
        cell = 2.0 * self._steps ** -n_item.to(z.dtype)[:, None, None]  # [B, C, 1]
        one = torch.ones((), dtype=z.dtype, device=z.device)
        return substitute_noise(total, z.detach().to(total.dtype), cell, self.noise_dropout, -one, one)

    def _into_code_space(self, z: Tensor) -> Tensor:
        return torch.tanh(super()._into_code_space(z))
