"""Vector quantisers on ``[B, D, T]`` latents: ``VectorQuantizer`` (VQ-VAE) and ``ResidualVQ``.

The nearest-code search always goes through the fused op :func:`vqaudio.ops.quantize`; no
``N x K`` distance matrix is built here. Codebook statistics (EMA counts and sums, k-means
initialisation, dead-code restart samples) are all-reduced when ``torch.distributed`` is
initialised, so every rank holds a bit-identical codebook after every training step, and a
W-rank step equals a 1-rank step on the concatenated global batch (up to summation order).

References: van den Oord et al. 2017 (VQ-VAE, EMA in the appendix), deepmind/sonnet
``VectorQuantizerEMA``, facebookresearch/encodec ``core_vq.py`` (restarts, k-means init, RVQ),
Zeghidour et al. 2021 / Kumar et al. 2023 (quantiser dropout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio import ops

__all__ = ["VQOutput", "RVQOutput", "VectorQuantizer", "ResidualVQ"]


@dataclass
class VQOutput:
    """Output of :class:`VectorQuantizer`.

    quantized: ``[B, D, T]`` codebook vectors, straight-through (the gradient reaches ``z`` unchanged).
    indices: int64 ``[B, T]``. loss: scalar (codebook + commitment terms, see the class docstring).
    perplexity: scalar ``exp(H(p))`` of this batch's code histogram; usage: scalar fraction of codes used.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    perplexity: Tensor
    usage: Tensor


@dataclass
class RVQOutput:
    """Output of :class:`ResidualVQ`.

    quantized: ``[B, D, T]`` (straight-through); codes: int64 ``[B, n_q, T]``; loss: scalar sum over
    stages; stats: ``perplexity`` and ``usage`` float ``[n_q]`` per stage, ``n_q`` int64 ``[B]`` the
    number of stages each item used (lower than ``n_q`` only under quantiser dropout).
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    stats: dict[str, Tensor]


# ----------------------------------------------------------------------------------------------
# distributed helpers: no-ops unless torch.distributed is initialised with more than one rank


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_(t: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def _sample_rows(x: Tensor, num: int, generator: torch.Generator) -> Tensor | None:
    """``num`` rows drawn uniformly with replacement from the global batch, identical on all ranks.

    The global batch is every rank's ``x [n_r, D]`` concatenated in rank order. Global row numbers
    come from ``generator`` (seeded identically on all ranks); each rank fills the rows it owns
    and an all-reduce sums the rest in (exact: one nonzero term each). Returns ``[num, D]``, or
    ``None`` if the global batch is empty.
    """
    n_local = x.shape[0]
    offset, total = 0, n_local
    if _distributed():
        sizes = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(dist.get_world_size())]
        dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.int64, device=x.device))
        sizes = [int(s) for s in sizes]
        offset, total = sum(sizes[: dist.get_rank()]), sum(sizes)
    if total == 0:
        return None
    picks = torch.randint(total, (num,), generator=generator).to(x.device) - offset
    if not _distributed():
        return x[picks]
    mine = (picks >= 0) & (picks < n_local)
    rows = x.new_zeros(num, x.shape[1])
    rows[mine] = x[picks[mine]]
    return _all_reduce_(rows)


class _StraightThrough(torch.autograd.Function):
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


def _codebook_stats(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Perplexity ``exp(-sum p log p)`` and fraction of used codes of a code histogram ``counts [K]``."""
    p = counts / counts.sum().clamp_min(1.0)
    return torch.special.entr(p).sum().exp(), torch.count_nonzero(counts) / counts.numel()


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
    ) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"VectorQuantizer: dim and codebook_size must be >= 1, got {dim}, {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay must be in [0, 1), got {decay}")
        self.dim, self.codebook_size = dim, codebook_size
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        self.dead_threshold, self.kmeans_init, self.kmeans_iters = dead_threshold, kmeans_init, kmeans_iters
        codebook = nn.init.kaiming_uniform_(torch.empty(codebook_size, dim))
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("embed_sum", torch.zeros(codebook_size, dim))
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("seed", torch.randint(0, 2**62, (), dtype=torch.int64))
        self._synced = False  # DDP: state broadcast from rank 0 once per process

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, beta={self.beta}, ema={self.ema}, "
            f"decay={self.decay}, dead_threshold={self.dead_threshold}, kmeans_init={self.kmeans_init}"
        )

    # ------------------------------------------------------------------------------------------
    def forward(self, z: Tensor, mask: Tensor | None = None) -> VQOutput:
        """Quantise ``z [B, D, T]``; in training mode also update the codebook statistics.

        ``mask``: optional bool ``[B]``; items with ``False`` are quantised but take no part in the
        loss, the statistics or the codebook update (used by quantiser dropout).
        """
        b, d, t = self._check(z)
        x = z.transpose(1, 2).reshape(b * t, d).to(self.codebook.dtype).contiguous()  # [N, D]
        if self.training:
            self._sync_state()
        rows = None if mask is None else mask.repeat_interleave(t)  # rows that count (loss, statistics)
        x_sel = x if rows is None else x[rows]
        if self.training and not bool(self.initialized):
            self._kmeans(x_sel.detach())

        # training updates the codebook in place below: the op's backward needs this step's copy
        codebook = self.codebook.detach().clone() if self.training else self.codebook.detach()
        quantized, indices, dist2 = ops.quantize(x, codebook)  # STE to x
        idx_sel, dist2_sel = (indices, dist2) if rows is None else (indices[rows], dist2[rows])
        denom = max(x_sel.numel(), 1)
        # commitment ||z_e - sg[e]||²: dist2 is that squared distance, differentiable w.r.t. x only
        loss = dist2_sel.sum() * (self.beta / denom)
        if not self.ema:
            loss = loss + (self.codebook[idx_sel] - x_sel.detach()).square().sum() / denom

        with torch.no_grad():
            counts = torch.bincount(idx_sel, minlength=self.codebook_size).to(self.cluster_size.dtype)
            if self.training:
                counts = self._update(x_sel.detach(), idx_sel, counts)
            perplexity, usage = _codebook_stats(counts)

        quantized = quantized.view(b, t, d).transpose(1, 2).to(z.dtype)  # a [B, D, T] view, no copy
        return VQOutput(quantized, indices.view(b, t), loss, perplexity, usage)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Indices int64 ``[B, T]`` of the nearest codes of ``z [B, D, T]`` (pure lookup)."""
        b, d, t = self._check(z)
        x = z.transpose(1, 2).reshape(b * t, d).to(self.codebook.dtype).contiguous()
        return ops.nearest_code(x, self.codebook.detach())[0].view(b, t)

    def decode(self, indices: Tensor) -> Tensor:
        """Codebook vectors ``[B, D, T]`` of int64 ``indices [B, T]``."""
        return F.embedding(indices, self.codebook).transpose(1, 2).contiguous()

    # ------------------------------------------------------------------------------------------
    def _check(self, z: Tensor) -> tuple[int, int, int]:
        if z.dim() != 3 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer: expected z of shape [B, {self.dim}, T], got {list(z.shape)}")
        return z.shape[0], z.shape[1], z.shape[2]

    def _generator(self) -> torch.Generator:
        """CPU generator seeded from (seed, step): the same on all ranks, reproducible after a reload."""
        mixed = (int(self.seed) * 6364136223846793005 + int(self.step) * 1442695040888963407) % (2**63)
        return torch.Generator().manual_seed(mixed)

    @torch.no_grad()
    def _sync_state(self) -> None:
        """DDP: start every rank from rank 0's codebook and statistics (once per process)."""
        if self._synced:
            return
        if _distributed():
            for tensor in [*self.parameters(), *self.buffers()]:
                data = tensor.data.view(torch.uint8) if tensor.dtype == torch.bool else tensor.data
                dist.broadcast(data, src=0)
        self._synced = True

    @torch.no_grad()
    def _kmeans(self, x: Tensor) -> None:
        """Lloyd's k-means on the global batch ``x [N, D]``; sets codebook, EMA state, step = 1."""
        k = self.codebook_size
        centroids = _sample_rows(x, k, self._generator())
        if centroids is None:
            return  # empty global batch: try again on the next one
        stats = x.new_zeros(k, self.dim + 1)
        for _ in range(max(self.kmeans_iters, 1)):
            idx, _ = ops.nearest_code(x, centroids)
            stats.zero_()
            stats[:, 0].index_add_(0, idx, torch.ones_like(idx, dtype=x.dtype))
            stats[:, 1:].index_add_(0, idx, x)
            _all_reduce_(stats)
            counts, sums = stats[:, 0], stats[:, 1:]
            centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
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
            if _distributed():  # one collective for both
                stats = _all_reduce_(torch.cat([counts[:, None], sums], dim=1))
                counts, sums = stats[:, 0], stats[:, 1:]
        else:
            _all_reduce_(counts)
        if not bool(counts.any()):
            return counts  # empty global batch (every item dropped): nothing to average in
        step = int(self.step) + 1
        self.step.fill_(step)
        weight = (1.0 - self.decay) / (1.0 - self.decay**step)  # debiased EMA, see the class docstring
        self.cluster_size.lerp_(counts, weight)
        if self.ema:
            self.embed_sum.lerp_(sums, weight)
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
        samples = _sample_rows(x, num_dead, self._generator())
        if samples is None:
            return
        reset = max(float(self.dead_threshold), 1.0)
        self.codebook.data[dead] = samples
        self.cluster_size[dead] = reset
        if self.ema:
            self.embed_sum[dead] = samples * reset


class ResidualVQ(nn.Module):
    """Residual vector quantisation: stage ``i`` quantises what stages ``0..i-1`` left over.

    ``quantizer_dropout``: in training, each batch item with this probability uses a random number
    of stages in ``[1, n_q]`` (SoundStream / DAC), so one model serves several bitrates; the stages
    it skips do not contribute to its output, loss or codebook statistics. ``codes`` always holds
    all ``n_q`` stages. Inference may use any ``n_q`` up to the number of stages trained.
    ``vq_kwargs`` go to every :class:`VectorQuantizer`.
    """

    def __init__(self, n_q: int, dim: int, codebook_size: int, quantizer_dropout: float = 0.0, **vq_kwargs) -> None:
        super().__init__()
        if n_q < 1:
            raise ValueError(f"ResidualVQ: n_q must be >= 1, got {n_q}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"ResidualVQ: quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.n_q, self.dim, self.codebook_size = n_q, dim, codebook_size
        self.quantizer_dropout = quantizer_dropout
        self.layers = nn.ModuleList(VectorQuantizer(dim, codebook_size, **vq_kwargs) for _ in range(n_q))

    def _n_q(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else n_q
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"ResidualVQ: n_q must be in [1, {self.n_q}], got {n_q}")
        return n_q

    def forward(self, z: Tensor, n_q: int | None = None) -> RVQOutput:
        """Quantise ``z [B, D, T]`` with the first ``n_q`` stages (all by default)."""
        n_q = self._n_q(n_q)
        batch = z.shape[0]
        n_item = torch.full((batch,), n_q, dtype=torch.int64, device=z.device)
        dropout = self.training and self.quantizer_dropout > 0
        if dropout:
            drop = torch.rand(batch, device=z.device) < self.quantizer_dropout
            n_item = torch.where(drop, torch.randint(1, n_q + 1, (batch,), device=z.device), n_item)
        residual, total = z, torch.zeros_like(z)
        loss = z.new_zeros((), dtype=torch.float32)
        codes, perplexity, usage = [], [], []
        for i, layer in enumerate(self.layers[:n_q]):
            mask = n_item > i if dropout else None
            out = layer(residual, mask)
            q = out.quantized.detach()
            residual = residual - q  # detached: later stages' commitment losses also reach the encoder
            if mask is None:
                total, loss = total + q, loss + out.loss
            else:
                total, loss = total + q * mask[:, None, None].to(q.dtype), loss + out.loss * mask.float().mean()
            codes.append(out.indices)
            perplexity.append(out.perplexity)
            usage.append(out.usage)
        stats = {"perplexity": torch.stack(perplexity), "usage": torch.stack(usage), "n_q": n_item}
        return RVQOutput(_StraightThrough.apply(z, total), torch.stack(codes, dim=1), loss, stats)

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """Codes int64 ``[B, n_q, T]`` of ``z [B, D, T]`` (pure lookup, any mode)."""
        n_q = self._n_q(n_q)
        residual, codes = z, []
        for layer in self.layers[:n_q]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices).to(residual.dtype)
            codes.append(indices)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """Latents ``[B, D, T]`` of codes int64 ``[B, n_q', T]``, ``1 <= n_q' <= n_q``."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"ResidualVQ: expected codes [B, n_q' <= {self.n_q}, T], got {list(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"ResidualVQ: codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]"
            )
        quantized = self.layers[0].decode(codes[:, 0])
        for i in range(1, codes.shape[1]):
            quantized = quantized + self.layers[i].decode(codes[:, i])
        return quantized
