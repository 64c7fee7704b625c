"""Data-dependent initialisation of SimVQ's map (the first training batch).

A freshly built encoder's latents have an arbitrary scale, in the speech quality runs far below that of
SimVQ's random mapped codebook: every frame then goes to the same few codes (perplexity 1.0-1.5 for the
first 100 steps) and training starts from a collapsed codebook. As k-means does for a learned codebook
(:class:`VectorQuantizer`'s ``kmeans_init``), :func:`match_second_moment_` fits the map ``W`` to the
first training batch instead: the mapped codebook ``C W^T + b`` is centred on the batch's latents and
shaped like their covariance (``W = s S_z^{1/2} S_C^{-1/2}``, ``b = mean(z) - W mean(C)``), so the codes
spread over the directions the data has. The scale ``s`` is that of a k-means fixed point: centroids are
the means of their cells, so their covariance is the data's less the within-cell part,
``s^2 = 1 - D(s)`` with ``D`` the relative distortion of the batch on the codes (a few iterations from
``s = 1``; on the quality runs' first batches ``s`` settles near 0.46: perplexity 110 instead of 41 at
``s = 1``, where the outer codes take most frames). (A new encoder's frames sit close to one point,
the biases of its last layer: 0.76 from the origin, 0.05 apart, in the quality runs' model; a map without
a bias could not move codes that are symmetric about the origin there.)

Statistics are summed over DDP ranks, so every rank computes the same map. :class:`InitOnFirstBatch`
holds the flag: a module loaded from a checkpoint counts as initialised.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .distributed import all_reduce_

__all__ = ["InitOnFirstBatch", "fit_map_"]

_EPS = 1e-6  # eigenvalues below this fraction of the largest count as zero (directions the data lacks)


class InitOnFirstBatch:
    """Mixin for an ``nn.Module``: ``needs_data_init()`` is true until ``data_initialized()`` is called or a
    state dict is loaded (a checkpoint's maps are trained already)."""

    def _init_on_first_batch(self) -> None:
        self._data_init_done = False
        self.register_load_state_dict_post_hook(lambda module, keys: module.data_initialized())

    def needs_data_init(self) -> bool:
        return self.training and not self._data_init_done

    def data_initialized(self) -> None:
        self._data_init_done = True


def _mean_cov(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[C]`` and covariance ``[C, C]`` (float64) of rows ``x [N, C]`` over every DDP rank."""
    x = x.detach().double()
    c = x.shape[1]
    stats = all_reduce_(torch.cat([x.new_tensor([x.shape[0]]), x.sum(0), (x.T @ x).reshape(-1)]))
    n = stats[0].clamp_min(1.0)
    mean = stats[1 : 1 + c] / n
    return mean, stats[1 + c :].view(c, c) / n - torch.outer(mean, mean)


def _sym_power(m: Tensor, p: float) -> Tensor:
    """``m^p`` of a symmetric positive semi-definite matrix; eigenvalues below ``_EPS`` of the largest are
    dropped (their directions map to 0)."""
    vals, vecs = torch.linalg.eigh(m)
    keep = vals > _EPS * vals.max().clamp_min(1e-30)
    powered = torch.where(keep, vals.clamp_min(1e-30) ** p, torch.zeros_like(vals))
    return (vecs * powered) @ vecs.T


@torch.no_grad()
def fit_map_(linear: nn.Linear, frozen: Tensor, x: Tensor, iterations: int = 3) -> None:
    """Set ``linear`` (weight ``[D, D']``, bias ``[D]``) so that ``linear(frozen [K, D'])`` has the mean of the
    rows ``x [N, D]`` and their covariance times ``s^2``, ``s`` from ``iterations`` fixed-point steps
    ``s^2 = 1 - D(s)`` (see the module docstring). No-op when the rows do not vary."""
    mean_x, cov_x = _mean_cov(x)
    variance = cov_x.diagonal().sum()
    if not bool(variance > 0):
        return
    c = frozen.detach().double()
    mean_c = c.mean(0)
    shape = _sym_power(cov_x, 0.5) @ _sym_power((c - mean_c).T @ (c - mean_c) / c.shape[0], -0.5)
    rows = x.detach().to(linear.weight.dtype).contiguous()
    scale = 1.0
    for step in range(iterations + 1):
        weight = scale * shape
        linear.weight.copy_(weight.to(linear.weight.dtype))
        linear.bias.copy_((mean_x - weight @ mean_c).to(linear.bias.dtype))
        if step == iterations:
            break
        dist2 = torch.ops.vqaudio.nearest_code(rows, linear(frozen))[1]
        total = all_reduce_(torch.stack([dist2.double().sum(), dist2.new_tensor(dist2.numel(), dtype=torch.float64)]))
        distortion = float(total[0] / total[1].clamp_min(1.0) / variance)
        scale = max(1.0 - distortion, 1e-2) ** 0.5
