"""Distributed helpers of the quantisers: no-ops unless ``torch.distributed`` runs with more than one rank."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["distributed", "all_reduce_", "all_reduce_differentiable", "sample_rows", "broadcast_state",
           "step_generator"]


def distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks in place (identity on one rank); returns ``t``."""
    if distributed():
        dist.all_reduce(t)
    return t


def all_reduce_differentiable(t: Tensor) -> Tensor:
    """The sum of ``t`` over ranks as a new tensor whose backward sums the gradients over ranks (identity on
    one rank): every rank computes the same loss of the global sum, DDP then averages, so each rank's
    parameters get the gradient of that global loss."""
    if not distributed():
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def step_generator(seed: Tensor, step: Tensor) -> torch.Generator:
    """CPU generator seeded from a module's saved ``seed`` and ``step`` (int64 scalars): the same on all ranks
    (their state is broadcast from rank 0) and reproducible after a reload."""
    mixed = (int(seed) * 6364136223846793005 + int(step) * 1442695040888963407) % (2**63)
    return torch.Generator().manual_seed(mixed)


def sample_rows(x: Tensor, num: int, generator: torch.Generator) -> Tensor | None:
    """``num`` rows drawn uniformly with replacement from the global batch, identical on all ranks.

    The global batch is every rank's ``x [n_r, D]`` concatenated in rank order. Global row numbers
    come from ``generator`` (seeded identically on all ranks); each rank fills the rows it owns
    and an all-reduce sums the rest in (exact: one nonzero term each). Returns ``[num, D]``, or
    ``None`` if the global batch is empty.
    """
    n_local = x.shape[0]
    offset, total = 0, n_local
    if distributed():
        sizes = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(dist.get_world_size())]
        dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.int64, device=x.device))
        sizes = [int(s) for s in sizes]
        offset, total = sum(sizes[: dist.get_rank()]), sum(sizes)
    if total == 0:
        return None
    picks = torch.randint(total, (num,), generator=generator).to(x.device) - offset
    if not distributed():
        return x[picks]
    mine = (picks >= 0) & (picks < n_local)
    rows = x.new_zeros(num, x.shape[1])
    rows[mine] = x[picks[mine]]
    return all_reduce_(rows)


@torch.no_grad()
def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers of ``module`` to every rank (no-op on one rank)."""
    if not distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        data = tensor.data.view(torch.uint8) if tensor.dtype == torch.bool else tensor.data
        dist.broadcast(data, src=0)
