"""Dead-code restart for SimVQ's frozen codebook: re-draw a frozen row so that its mapped code lands on a latent.

A learned codebook restarts a dead code by setting it to a recent encoder vector (:class:`VectorQuantizer`,
as lucidrains' and EnCodec's VQ). SimVQ's codes are ``W c_k + b`` with ``c_k`` a frozen row, so the same
restart re-draws the row instead: ``c_k = W^+ (x - b)`` for a latent ``x`` of the current batch
(:func:`aim_rows_`), which puts the mapped code on ``x`` (on its projection onto the range of ``W`` when
``W`` is singular). The frozen rows stay frozen to gradients; only the restart moves them, and the map
``W``, ``b`` keeps learning for every code. Which codes are dead comes from :class:`CodeCounts`, an EMA of
the global per-batch code histogram (summed over DDP ranks, so every rank re-draws the same rows from the
same global latents, :func:`~.distributed.sample_rows`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .distributed import all_reduce_, sample_rows, step_generator

__all__ = ["CodeCounts", "aim_rows_", "redraw_dead_rows_"]

_RTOL = 1e-4  # singular values of the map below this fraction of the largest are treated as zero (pseudo-inverse)


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
def aim_rows_(linear: nn.Linear, frozen: Tensor, rows: Tensor, targets: Tensor) -> None:
    """Set ``frozen[rows]`` (``frozen [K, D']``, ``rows`` bool ``[K]``) to ``W^+ (targets - b)`` so that
    ``linear(frozen[rows])`` is ``targets [num, D]`` (projected onto the range of ``W [D, D']``)."""
    weight = linear.weight.detach().double()
    pinv = torch.linalg.pinv(weight, rtol=_RTOL)  # [D', D]
    shifted = targets.double() - (0.0 if linear.bias is None else linear.bias.detach().double())
    frozen[rows] = (shifted @ pinv.T).to(frozen.dtype)


@torch.no_grad()
def redraw_dead_rows_(linear: nn.Linear, frozen: Tensor, stats: CodeCounts, threshold: float, x: Tensor) -> int:
    """Re-draw the frozen rows whose EMA count is below ``threshold`` onto random rows of the global batch
    ``x [N, D]`` (their counts reset to ``max(threshold, 1)``); returns how many were re-drawn."""
    dead = stats.counts < threshold
    num = int(dead.sum())
    if num == 0:
        return 0
    targets = sample_rows(x.detach(), num, stats.generator())
    if targets is None:
        return 0
    aim_rows_(linear, frozen, dead, targets)
    stats.counts[dead] = max(float(threshold), 1.0)
    return num
