"""``VectorQuantizer``: nearest-neighbour vector quantisation of ``[B, D, T]`` latents (VQ-VAE).

The nearest-code search always goes through the fused op :func:`vqaudio.ops.quantize`; no
``N x K`` distance matrix is built here. Codebook statistics (EMA counts and sums, k-means
initialisation, dead-code restart samples) are all-reduced when ``torch.distributed`` is
initialised, so every rank holds a bit-identical codebook after every training step, and a
W-rank step equals a 1-rank step on the concatenated global batch (up to summation order).

References: van den Oord et al. 2017 (VQ-VAE, EMA in the appendix), deepmind/sonnet
``VectorQuantizerEMA``, facebookresearch/encodec ``core_vq.py`` (restarts, k-means init).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio import ops
from vqaudio.errors import ConfigError

from .common import VQOutput, check_codebook_dim, codebook_stats, from_rows, projections, to_rows
from .distributed import all_reduce_, broadcast_state, distributed, sample_rows, step_generator

__all__ = ["VectorQuantizer"]


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser of ``[B, D, T]`` latents with a ``[K, D]`` codebook.

    Two ways to learn the codebook:

    - ``ema=False`` (the paper): ``loss = ||sg[z_e] - e||² + beta ||z_e - sg[e]||²`` (means over
      elements); ``codebook`` is an ``nn.Parameter`` trained by the optimiser.
    - ``ema=True`` (paper appendix, sonnet ``VectorQuantizerEMA``): ``codebook`` is a buffer set
      after every training step to ``sums / smoothed counts`` with EMA per-code counts ``n_k`` and
      sums ``m_k``, Laplace smoothing ``(n_k + eps) / (n + K eps) * n`` (``n = sum_k n_k``), and
      ``loss = beta ||z_e - sg[e]||²`` only.

    Debiasing: like sonnet (``moving_averages.ExponentialMovingAverage``), the EMAs start at zero
    and are debiased by ``1 - decay^t``. We store the debiased averages directly, updating them
    with ``avg += w_t (batch - avg)``, ``w_t = (1 - decay) / (1 - decay^t)``, which is algebraically
    the same. Why: zero-started averages that are not debiased are a factor ``1 - decay^t`` too small
    for the first few hundred steps, so the dead-code threshold (in assignments per batch) would flag
    every code and the Laplace smoothing ``eps`` would weigh ~100x too much; averages started from
    the initial codebook instead (as in encodec / vector-quantize-pytorch) keep the random init in
    the codebook for ``~1/(1 - decay)`` steps. Debiased, step 1 sets every used code to the mean of
    its batch vectors and counts are in assignments per batch from the start; the ratio
    ``sums / counts`` is unaffected by the debiasing except through ``eps``. A code never chosen has
    ``m_k = 0`` and goes to the origin; dead-code restart (below) re-seeds such codes.

    Dead-code restart (both modes; in loss mode an EMA of counts is kept for it): after each
    training step, codes whose EMA count is below ``dead_threshold`` are set to random encoder
    vectors of the current (global) batch, with their EMA count reset to ``max(dead_threshold, 1)``.
    ``dead_threshold=0`` disables it. ``kmeans_init``: the first training batch initialises the
    codebook with ``kmeans_iters`` Lloyd steps (assignments by the fused op); it counts as EMA step 1.

    Options from the recent literature (names as in vector-quantize-pytorch; all combine with both
    codebook modes, restarts, k-means init, quantiser dropout and DDP):

    - ``codebook_dim``: codes live in a ``codebook_dim``-dimensional space, entered and left through
      learned linear maps ``project_in`` / ``project_out`` (ViT-VQGAN; DAC uses 8). Lookups, losses and
      statistics are in code space; ``decode`` maps back to ``dim``.
    - ``l2_normalize``: rows and codes are L2-normalised, so the nearest code is the one of highest
      cosine similarity (still found by the fused op: ``||x - e||² = 2 - 2 cos`` on the sphere). EMA
      codes stay on the sphere: each is the normalised sum of its vectors (a code whose sum is zero
      keeps its direction); k-means init is spherical; loss-mode codes are normalised where used.
    - ``rotation_trick``: the output's gradient reaches the input through the rotation and rescaling
      that map it onto its code (Fifty et al., ICLR 2025; :func:`vqaudio.ops.rotate_to`) instead of
      the straight-through identity.

    All updates happen in training mode only; in eval mode ``forward`` is a pure lookup.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 1.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        rotation_trick: bool = False,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ConfigError(f"VectorQuantizer: dim and codebook_size must be >= 1, got {dim}, {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"VectorQuantizer: decay must be in [0, 1), got {decay}")
        self.code_dim = check_codebook_dim("VectorQuantizer", dim, codebook_dim)
        self.dim, self.codebook_size = dim, codebook_size
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        self.dead_threshold, self.kmeans_init, self.kmeans_iters = dead_threshold, kmeans_init, kmeans_iters
        self.rotation_trick, self.l2_normalize = bool(rotation_trick), bool(l2_normalize)
        codebook = nn.init.kaiming_uniform_(torch.empty(codebook_size, self.code_dim))
        if l2_normalize:
            codebook = F.normalize(codebook, dim=1)
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("embed_sum", torch.zeros(codebook_size, self.code_dim))
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("seed", torch.randint(0, 2**62, (), dtype=torch.int64))
        self.project_in, self.project_out = projections(dim, self.code_dim)
        self._synced = False  # DDP: state broadcast from rank 0 once per process

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in (("codebook_dim", self.code_dim), ("l2_normalize", self.l2_normalize),
                                                   ("rotation_trick", self.rotation_trick)) if v not in (self.dim, False))
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, beta={self.beta}, ema={self.ema}, "
            f"decay={self.decay}, dead_threshold={self.dead_threshold}, kmeans_init={self.kmeans_init}{extra}"
        )

    def codes(self) -> Tensor:
        """The codebook as used for lookups ``[K, codebook_dim]``: loss-mode codes normalised under
        ``l2_normalize`` (differentiable), else the stored codebook."""
        if self.l2_normalize and not self.ema:
            return F.normalize(self.codebook, dim=1)
        return self.codebook

    def _code_space(self, x: Tensor) -> Tensor:
        """Rows ``[N, dim]`` into code space ``[N, codebook_dim]`` (projected, normalised as configured)."""
        if self.project_in is not None:
            x = self.project_in(x)
        return F.normalize(x, dim=1) if self.l2_normalize else x

    # ------------------------------------------------------------------------------------------
    def forward(self, z: Tensor, mask: Tensor | None = None) -> VQOutput:
        """Quantise ``z [B, D, T]``; in training mode also update the codebook statistics.

        ``mask``: optional bool ``[B]``; items with ``False`` are quantised but take no part in the
        loss, the statistics or the codebook update (used by quantiser dropout).
        """
        b, _, t = self._check(z)
        if self.training:
            self._sync_state()
        x = self._code_space(to_rows(z).to(self.codebook.dtype))  # [N, codebook_dim]
        rows = None if mask is None else mask.repeat_interleave(t)  # rows that count (loss, statistics)
        x_sel = x if rows is None else x[rows]
        if self.training and not bool(self.initialized):
            self._kmeans(x_sel.detach())

        codes = self.codes()
        # training updates the codebook in place below: the op's backward needs this step's copy
        codebook = codes.detach().clone() if self.training and codes is self.codebook else codes.detach()
        quantized, indices, dist2 = ops.quantize(x, codebook, self.rotation_trick)  # STE or rotation to x
        idx_sel, dist2_sel = (indices, dist2) if rows is None else (indices[rows], dist2[rows])
        denom = max(x_sel.numel(), 1)
        # commitment ||z_e - sg[e]||²: dist2 is that squared distance, differentiable w.r.t. x only
        loss = dist2_sel.sum() * (self.beta / denom)
        if not self.ema:
            loss = loss + (codes[idx_sel] - x_sel.detach()).square().sum() / denom

        with torch.no_grad():
            counts = torch.bincount(idx_sel, minlength=self.codebook_size).to(self.cluster_size.dtype)
            if self.training:
                counts = self._update(x_sel.detach(), idx_sel, counts)
            perplexity, usage = codebook_stats(counts)

        if self.project_out is not None:
            quantized = self.project_out(quantized)
        quantized = from_rows(quantized, b, t).to(z.dtype)  # a [B, D, T] view, no copy
        return VQOutput(quantized, indices.view(b, t), loss, perplexity, usage)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Indices int64 ``[B, T]`` of the nearest codes of ``z [B, D, T]`` (pure lookup)."""
        b, _, t = self._check(z)
        x = self._code_space(to_rows(z).to(self.codebook.dtype))
        return ops.nearest_code(x, self.codes().detach())[0].view(b, t)

    def decode(self, indices: Tensor) -> Tensor:
        """Codebook vectors ``[B, D, T]`` of int64 ``indices [B, T]`` (mapped out of code space)."""
        quantized = F.embedding(indices, self.codes())
        if self.project_out is not None:
            quantized = self.project_out(quantized)
        return quantized.transpose(1, 2).contiguous()

    # ------------------------------------------------------------------------------------------
    def _check(self, z: Tensor) -> tuple[int, int, int]:
        if z.dim() != 3 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer: expected z of shape [B, {self.dim}, T], got {list(z.shape)}")
        return z.shape[0], z.shape[1], z.shape[2]

    def _generator(self) -> torch.Generator:
        """CPU generator seeded from (seed, step): the same on all ranks, reproducible after a reload."""
        return step_generator(self.seed, self.step)

    def _sync_state(self) -> None:
        """DDP: start every rank from rank 0's codebook and statistics (once per process)."""
        if not self._synced:
            broadcast_state(self)
            self._synced = True

    @torch.no_grad()
    def _kmeans(self, x: Tensor) -> None:
        """Lloyd's k-means on the global batch ``x [N, D]``; sets codebook, EMA state, step = 1."""
        k = self.codebook_size
        centroids = sample_rows(x, k, self._generator())
        if centroids is None:
            return  # empty global batch: try again on the next one
        stats = x.new_zeros(k, self.code_dim + 1)
        for _ in range(max(self.kmeans_iters, 1)):
            idx, _ = ops.nearest_code(x, centroids)
            stats.zero_()
            stats[:, 0].index_add_(0, idx, torch.ones_like(idx, dtype=x.dtype))
            stats[:, 1:].index_add_(0, idx, x)
            all_reduce_(stats)
            counts, sums = stats[:, 0], stats[:, 1:]
            centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
            if self.l2_normalize:  # spherical k-means
                centroids = _unit_rows_or(centroids, centroids)
        self.codebook.data.copy_(centroids)
        self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_sum.copy_(centroids * counts[:, None])
        self.step.fill_(1)
        self.initialized.fill_(True)

    def _update(self, x: Tensor, idx: Tensor, counts: Tensor) -> Tensor:
        """One training step of the statistics from rows ``x [N, D]`` coded as ``idx [N]``.

        ``counts [K]`` is the local histogram; returns the global one.
        """
        if self.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, x.to(self.embed_sum.dtype))
            if distributed():  # one collective for both
                stats = all_reduce_(torch.cat([counts[:, None], sums], dim=1))
                counts, sums = stats[:, 0], stats[:, 1:]
        else:
            all_reduce_(counts)
        if not bool(counts.any()):
            return counts  # empty global batch (every item dropped): nothing to average in
        step = int(self.step) + 1
        self.step.fill_(step)
        weight = (1.0 - self.decay) / (1.0 - self.decay**step)  # debiased EMA, see the class docstring
        self.cluster_size.lerp_(counts, weight)
        if self.ema:
            self.embed_sum.lerp_(sums, weight)
            if self.l2_normalize:  # on the sphere: the direction of m_k / n_k is that of m_k
                self.codebook.copy_(_unit_rows_or(self.embed_sum, self.codebook))
            else:
                n = self.cluster_size.sum()
                smoothed = (self.cluster_size + self.eps) * (n / (n + self.codebook_size * self.eps))
                torch.div(self.embed_sum, smoothed[:, None], out=self.codebook)
        if self.dead_threshold > 0:
            self._restart(x)
        return counts

    def _restart(self, x: Tensor) -> None:
        """Re-seed codes whose EMA count is below ``dead_threshold`` from random rows of the global batch."""
        dead = self.cluster_size < self.dead_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        samples = sample_rows(x, num_dead, self._generator())
        if samples is None:
            return
        reset = max(float(self.dead_threshold), 1.0)
        self.codebook.data[dead] = samples
        self.cluster_size[dead] = reset
        if self.ema:
            self.embed_sum[dead] = samples * reset


def _unit_rows_or(x: Tensor, fallback: Tensor) -> Tensor:
    """Rows of ``x [K, D]`` scaled to unit norm; rows of ``fallback`` where ``x``'s row is zero."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return torch.where(norms > 0, x / norms.clamp_min(torch.finfo(x.dtype).tiny), fallback)
