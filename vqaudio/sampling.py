"""Sampling from the WaveNet prior: temperature, top-k and nucleus (top-p) filtering, seeded, primed, cached.

``generate`` uses the per-layer ring-buffer cache of :class:`vqaudio.models.wavenet.WaveNetPrior` (one step is
O(layers)); ``generate_naive`` recomputes the full teacher-forced forward over the prefix at every frame and
exists as the reference for tests and benchmarks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqaudio.models.wavenet import WaveNetPrior

__all__ = ["filter_logits", "sample_logits", "generate", "generate_naive", "make_generator"]


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf the logits[..., K] outside the top-k and outside the smallest nucleus of mass >= top_p.

    Ties at the k-th value are all kept. ``top_k`` of 0/None and ``top_p`` of None/1.0 disable a filter.
    The most likely token always survives.
    """
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    out = logits
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly more likely tokens
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row: logits[B, K] -> int64[B]. ``temperature == 0`` is greedy (argmax)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    # Inverse-CDF draw (one uniform per row; several times faster than torch.multinomial for one sample).
    # A filtered token has probability 0, so no u falls in its (empty) interval [cdf[j-1], cdf[j]).
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:].contiguous()
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * total
    last = torch.searchsorted(cdf, total)  # the last token of positive probability (guards u rounding to total)
    return torch.minimum(torch.searchsorted(cdf, u, right=True), last)[:, 0]


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device``, seeded with ``seed`` (a fresh random seed if None)."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def _prepare(model: WaveNetPrior, n: int, prime: Tensor | None, label: Tensor | int | None, device) -> tuple:
    Q, K = model.cfg.n_q, model.cfg.codebook_size
    if prime is not None:
        prime = prime.to(device=device, dtype=torch.long)
        if prime.dim() == 2:
            prime = prime[None]
        if prime.dim() != 3 or prime.shape[1] != Q:
            raise ValueError(f"prime must be [n_q={Q}, P] or [N, {Q}, P], got {tuple(prime.shape)}")
        if prime.numel() and (prime.min() < 0 or prime.max() >= K):
            raise ValueError(f"prime tokens must be in [0, {K}), got [{int(prime.min())}, {int(prime.max())}]")
        prime = prime.expand(n, -1, -1) if prime.shape[0] == 1 else prime
        if prime.shape[0] != n:
            raise ValueError(f"prime has {prime.shape[0]} sequences, expected 1 or {n}")
    if label is not None:
        label = torch.as_tensor(label, dtype=torch.long, device=device).reshape(-1).expand(n)
        if model.cfg.n_labels == 0 or label.min() < 0 or label.max() >= model.cfg.n_labels:
            raise ValueError(f"label must be in [0, {model.cfg.n_labels}), got {label.tolist()[:4]}")
    elif model.cfg.n_labels > 0:
        raise ValueError(f"this prior is conditioned on a label in [0, {model.cfg.n_labels}); give one")
    return prime, label


@torch.inference_mode()
def generate(
    model: WaveNetPrior,
    n: int,
    frames: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    prime: Tensor | None = None,
    label: Tensor | int | None = None,
) -> Tensor:
    """Sample ``n`` sequences of ``frames`` new frames with the cache.

    prime: int64[n_q, P] or [n, n_q, P] tokens to continue; label: int or int64[n] (conditioned priors).
    Returns codes int64[n, n_q, P + frames] (the prime first, then the new frames).
    """
    device = model.embed.weight.device
    prime, label = _prepare(model, n, prime, label, device)
    Q = model.cfg.n_q
    state, ctx = model.init_state(n, label, prime)
    out = torch.empty(n, Q, frames, dtype=torch.long, device=device)
    for t in range(frames):
        frame = out[:, :, t]
        _sample_frame(model, ctx, frame, temperature, top_k, top_p, generator)
        if t + 1 < frames:
            ctx = model.step(state, model.embed_frame(frame))
    return out if prime is None else torch.cat([prime, out], dim=2)


@torch.inference_mode()
def generate_naive(
    model: WaveNetPrior,
    n: int,
    frames: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    prime: Tensor | None = None,
    label: Tensor | int | None = None,
) -> Tensor:
    """Same contract and same draws as :func:`generate`, recomputing the full forward over the prefix per frame."""
    device = model.embed.weight.device
    prime, label = _prepare(model, n, prime, label, device)
    Q = model.cfg.n_q
    seq = prime if prime is not None else torch.empty(n, Q, 0, dtype=torch.long, device=device)
    for _ in range(frames):
        seq = torch.cat([seq, seq.new_zeros(n, Q, 1)], dim=2)  # the new frame's value is never looked at
        _sample_frame(model, model.context(seq, label)[:, -1], seq[:, :, -1], temperature, top_k, top_p, generator)
    return seq


def _sample_frame(model: WaveNetPrior, ctx: Tensor, frame: Tensor, temperature: float, top_k: int | None,
                  top_p: float | None, generator: torch.Generator | None) -> None:
    """Draw the n_q stages of one frame in order into ``frame`` int64[B, n_q], from its context ctx[B, H]."""
    acc = ctx
    for q in range(model.cfg.n_q):
        frame[:, q] = z = sample_logits(model.stage_head(acc, q), temperature, top_k, top_p, generator)
        if q + 1 < model.cfg.n_q:
            acc = acc + model.stage_embedding(z, q)
