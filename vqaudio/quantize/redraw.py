"""Dead-code restart for SimVQ's frozen codebook: re-draw a frozen row so that its mapped code goes to a latent.

A learned codebook restarts a dead code by setting it to a recent encoder vector (:class:`VectorQuantizer`,
as lucidrains' and EnCodec's VQ). SimVQ's codes are ``W c_k + b`` with ``c_k`` a frozen row, so the same
restart re-draws the row instead (:func:`aim_rows_`): for a latent ``x`` of the current batch, ``c_k`` is
the row that brings its code closest to ``x`` among rows no longer than the drawn ones,

    c_k = argmin ||W c + b - x||  subject to  ||c|| <= R,

``R`` the longest row of the codebook as drawn (a fixed bound: the longest present row would shrink as
re-drawn rows replace long ones),

that is ``W^+ (x - b)`` when that is short enough, else the Tikhonov solution ``(W^T W + l I)^{-1} W^T (x - b)``
whose norm is ``R`` (``l`` by bisection). The bound matters because one step of the map moves code ``k`` by
``dW c_k``: a row 100 times longer than the rest moves its code 100 times faster. With the exact inverse
alone the rows grew to norms of 500-6000 in 500 steps of the speech quality runs (the map shrank in the
directions the data lacks), the codes they carry jumped at every step and ended unused. The frozen rows
stay frozen to gradients; only the restart moves them, and the map keeps learning for every code. Which
codes are dead comes from :class:`CodeCounts`, an EMA of the global per-batch code histogram (summed over
DDP ranks, so every rank re-draws the same rows from the same global latents,
:func:`~.distributed.sample_rows`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .distributed import all_reduce_, sample_rows, step_generator

__all__ = ["CodeCounts", "aim_rows_", "redraw_dead_rows_"]


class CodeCounts(nn.Module):
    """Debiased EMA ``counts [K]`` of the global code histogram per training batch (state: ``counts``, ``step``,
    ``seed``; saved, so a resumed run re-draws the same rows). ``decay`` in ``[0, 1)``."""

    def __init__(self, codebook_size: int, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("counts", torch.zeros(codebook_size))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("seed", torch.randint(0, 2**62, (), dtype=torch.int64))

    def generator(self) -> torch.Generator:
        """CPU generator seeded from (seed, step): the same on all ranks, reproducible after a reload."""
        return step_generator(self.seed, self.step)

    @torch.no_grad()
    def update_(self, local: Tensor) -> Tensor:
        """Add this batch's local histogram ``local [K]``; returns the global one (summed over ranks)."""
        counts = all_reduce_(local.to(self.counts.dtype))
        if bool(counts.any()):  # an empty global batch (every item dropped) leaves the statistics alone
            step = int(self.step) + 1
            self.step.fill_(step)
            self.counts.lerp_(counts, (1.0 - self.decay) / (1.0 - self.decay**step))
        return counts


@torch.no_grad()
def aim_rows_(linear: nn.Linear, frozen: Tensor, rows: Tensor, targets: Tensor, max_norm: float,
              iterations: int = 20) -> None:
    """Set ``frozen[rows]`` (``frozen [K, D']``, ``rows`` bool ``[K]``) to the rows ``c`` of norm at most
    ``max_norm`` that bring ``linear(c)`` (``W [D, D']``) closest to ``targets [num, D]``: the pseudo-inverse
    solution, or the Tikhonov one ``(W^T W + l I)^{-1} W^T (t - b)`` of norm ``max_norm``, ``l`` from
    at most ``iterations`` Newton steps on ``1/||c(l)|| = 1/max_norm`` (concave in ``l``: from ``l = 0`` they rise
    monotonically to the root, as in Moré and Sorensen's trust-region solver)."""
    u, sigma, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
    shifted = targets.double() - (0.0 if linear.bias is None else linear.bias.detach().double())
    keep = sigma > sigma.max() * max(sigma.shape) * torch.finfo(torch.float64).eps  # as torch.linalg.pinv
    proj = torch.where(keep, (shifted @ u) * sigma, 0.0)  # [num, r]: sigma_i <u_i, t - b>
    s2 = torch.where(keep, sigma.square(), 1.0)  # (1 where dropped: those terms are 0 anyway)
    lam = torch.zeros(proj.shape[0], 1, dtype=torch.float64, device=proj.device)
    for _ in range(iterations):
        q = proj / (s2 + lam)  # the coefficients of c(l) in the right singular basis
        norm2 = q.square().sum(1, keepdim=True)
        slope = (q.square() / (s2 + lam)).sum(1, keepdim=True) * norm2.clamp_min(1e-300) ** -1.5
        step = (norm2.clamp_min(1e-300) ** -0.5 - 1.0 / max_norm) / slope.clamp_min(1e-300)
        step = torch.where(norm2 > max_norm**2, step, 0.0)  # rows already short enough keep l
        lam = lam - step
        if not bool((step.abs() > 1e-12 * lam.abs()).any()):  # converged (quadratically: a few steps)
            break
    c = proj / (s2 + lam)
    c = c * (max_norm / c.norm(dim=1, keepdim=True).clamp_min(1e-300)).clamp(max=1.0)  # the last rounding
    frozen[rows] = (c @ vh).to(frozen.dtype)


@torch.no_grad()
def redraw_dead_rows_(linear: nn.Linear, frozen: Tensor, stats: CodeCounts, threshold: float,
                      latents: Callable[[], Tensor], max_norm: float) -> int:
    """Re-draw the frozen rows whose EMA count is below ``threshold`` towards random rows of the global batch
    ``latents() [N, D]`` (:func:`aim_rows_`, rows of norm at most ``max_norm``; their counts reset to
    ``max(threshold, 1)``); returns how many. ``latents`` is called only when some row is dead (the same
    decision on every DDP rank: the counts are global), so a step without dead codes copies no latents."""
    dead = stats.counts < threshold
    num = int(dead.sum())
    if num == 0:
        return 0
    targets = sample_rows(latents().detach(), num, stats.generator())
    if targets is None:
        return 0
    aim_rows_(linear, frozen, dead, targets, max_norm)
    stats.counts[dead] = max(float(threshold), 1.0)
    return num
