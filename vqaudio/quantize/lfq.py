"""Lookup-free quantisation (MAGVIT-v2, Yu et al. 2024) and its spherical variant BSQ (Zhao et al. 2024):
``LFQ`` and ``ResidualLFQ``.

Each of the ``b = log2(K)`` code dimensions is quantised to its sign, so the code is the ``b``-bit number of
the signs and no codebook is searched. The entropy regulariser pushes every frame to a confident code
(low per-sample entropy) and the batch to use all codes (high entropy of the batch's mean code
distribution). The code distribution of a frame, a softmax over all ``K`` codes of
``2 * inv_temperature * x . c`` as in vector-quantize-pytorch, factorises over the bits (the codes are the
corners of a cube): ``p(bit d = 1) = sigmoid(4 * inv_temperature * m * x_d)`` with ``m`` the per-dimension
magnitude of the codes. So the per-sample entropy is a sum of ``b`` binary entropies, computed exactly,
and the batch's mean distribution over the ``K`` codes is the mean of Kronecker products, computed
exactly as one ``[2^(b/2), N] x [N, 2^(b/2)]`` matrix product of the two halves of the bits: no ``N x K``
tensor is formed (vector-quantize-pytorch builds ``N x K`` logits for both terms).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.errors import ConfigError

from .common import StraightThrough, VQOutput, codebook_stats, project_channels, projections
from .distributed import all_reduce_, all_reduce_differentiable
from .residual import Residual

__all__ = ["LFQ", "ResidualLFQ", "check_lfq_size", "code_distribution"]


def check_lfq_size(owner: str, codebook_size: int) -> int:
    """``log2(codebook_size)``: the number of bits of a code (``codebook_size`` a power of two >= 2)."""
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 2 or (
            codebook_size & (codebook_size - 1)):
        raise ConfigError(f"{owner}: codebook_size must be a power of two >= 2 (2**bits), got {codebook_size!r}")
    return codebook_size.bit_length() - 1


def _half_codes(logits: Tensor) -> Tensor:
    """``[N, 2^c]`` probabilities of every value of ``c`` bits (MSB first) under independent bits with
    ``logits [N, c]``: ``exp(sum_d logsigmoid(-l_d) + sum_d l_d bit_d)``."""
    c = logits.shape[1]
    bits = (torch.arange(2**c, device=logits.device)[None, :] >> torch.arange(c - 1, -1, -1, device=logits.device)[:, None]) & 1
    return torch.exp(F.logsigmoid(-logits).sum(1, keepdim=True) + logits @ bits.to(logits.dtype))


def code_distribution(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Sum over rows of the code distributions of independent bits, and the row count (DDP: global).

    ``logits [N, b]``: per-bit logits of ``p(bit = 1)``, bit 0 most significant. Returns ``sums [2^b]``
    (differentiable; ``sums / count`` is the mean distribution, index = the code) and ``count`` (float
    scalar). Memory ``O(N 2^(b/2) + 2^b)``: the Kronecker product of the two halves' distributions is
    summed over rows by one matrix product.
    """
    high, low = logits[:, : logits.shape[1] // 2], logits[:, logits.shape[1] // 2 :]
    sums = (_half_codes(high).T @ _half_codes(low)).reshape(-1)
    count = all_reduce_(torch.tensor(float(logits.shape[0]), device=logits.device))
    return all_reduce_differentiable(sums), count


class LFQ(nn.Module):
    """Lookup-free quantiser of ``[B, dim, T]`` latents with ``codebook_size = 2**b`` codes (``dim`` defaults to
    ``b``; ``codebook_size`` to ``2**dim``).

    The (projected) input ``x [B, b, T]`` is quantised to ``m * sign(x)`` with the straight-through
    estimator; the index is the number whose bits are ``x > 0`` (channel 0 most significant). ``m`` is
    ``codebook_scale``, or ``codebook_scale / sqrt(b)`` with ``spherical=True`` (BSQ: ``x`` is first
    L2-normalised to radius ``codebook_scale`` over the channels, so input and codes lie on one sphere).
    When ``dim != b``, learned maps ``project_in`` / ``project_out`` lead into and out of code space.

    ``loss`` in training: ``entropy_loss_weight * (H_sample - diversity_gamma * H_batch) + beta * ||x - sg[q]||²``
    (mean over elements; see the module docstring for the entropies, in nats). In eval mode it is 0.
    ``mask`` (bool ``[B]``) limits the loss and statistics to the items it keeps.
    """

    def __init__(
        self, dim: int | None = None, codebook_size: int | None = None, entropy_loss_weight: float = 0.1,
        diversity_gamma: float = 1.0, beta: float = 0.25, inv_temperature: float = 100.0, spherical: bool = False,
        codebook_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if codebook_size is None and isinstance(dim, int) and not isinstance(dim, bool) and 1 <= dim <= 30:
            codebook_size = 2**dim  # as vector-quantize-pytorch: one bit per input dimension
        bits = check_lfq_size("LFQ", codebook_size)
        dim = bits if dim is None else dim
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"LFQ: dim must be an integer >= 1, got {dim!r}")
        for name, value in (("entropy_loss_weight", entropy_loss_weight), ("diversity_gamma", diversity_gamma),
                            ("beta", beta)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"LFQ: {name} must be a finite number >= 0, got {value!r}")
        for name, value in (("inv_temperature", inv_temperature), ("codebook_scale", codebook_scale)):
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"LFQ: {name} must be a finite number > 0, got {value!r}")
        self.dim, self.codebook_size, self.code_dim = dim, codebook_size, bits
        self.entropy_loss_weight, self.diversity_gamma, self.beta = entropy_loss_weight, diversity_gamma, beta
        self.inv_temperature, self.spherical, self.codebook_scale = inv_temperature, bool(spherical), codebook_scale
        self.magnitude = codebook_scale / math.sqrt(bits) if spherical else codebook_scale
        self.register_buffer("_weights", 2 ** torch.arange(bits - 1, -1, -1, dtype=torch.int64)[:, None], persistent=False)
        self.project_in, self.project_out = projections(dim, bits)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, entropy_loss_weight={self.entropy_loss_weight}, "
                f"diversity_gamma={self.diversity_gamma}, beta={self.beta}, spherical={self.spherical}, "
                f"codebook_scale={self.codebook_scale}")

    def _check(self, z: Tensor) -> None:
        if z.dim() != 3 or z.shape[1] != self.dim:
            raise ValueError(f"LFQ: expected z of shape [B, {self.dim}, T], got {list(z.shape)}")

    def _code_space(self, z: Tensor) -> Tensor:
        x = project_channels(self.project_in, z).float()
        return F.normalize(x, dim=1) * self.codebook_scale if self.spherical else x

    def forward(self, z: Tensor, mask: Tensor | None = None) -> VQOutput:
        """Quantise ``z [B, dim, T]``; in training mode also compute the regulariser (see the class docstring)."""
        self._check(z)
        x = self._code_space(z)  # [B, b, T]
        positive = x > 0
        q = torch.where(positive, self.magnitude, -self.magnitude)
        indices = (positive.long() * self._weights).sum(dim=1)  # [B, T]
        loss = z.new_zeros((), dtype=torch.float32)
        x_sel, q_sel, idx_sel = (x, q, indices) if mask is None else (x[mask], q[mask], indices[mask])
        if self.training and x_sel.numel():
            rows = x_sel.transpose(1, 2).reshape(-1, self.code_dim)  # [N, b]
            logits = (4 * self.inv_temperature * self.magnitude) * rows
            sample_entropy = (F.softplus(logits) - logits * torch.sigmoid(logits)).sum(1).mean()
            sums, count = code_distribution(logits)
            p = sums / count
            batch_entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
            commitment = (x_sel - q_sel).square().mean()
            loss = self.entropy_loss_weight * (sample_entropy - self.diversity_gamma * batch_entropy)
            loss = loss + self.beta * commitment
        with torch.no_grad():
            counts = torch.bincount(idx_sel.reshape(-1), minlength=self.codebook_size).float()
            perplexity, usage = codebook_stats(counts)
        quantized = project_channels(self.project_out, StraightThrough.apply(x, q)).to(z.dtype)
        return VQOutput(quantized, indices, loss, perplexity, usage)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Indices int64 ``[B, T]`` of ``z [B, dim, T]``."""
        self._check(z)
        return ((self._code_space(z) > 0).long() * self._weights).sum(dim=1)

    def decode(self, indices: Tensor) -> Tensor:
        """Latents ``[B, dim, T]`` of int64 ``indices [B, T]``."""
        bits = (indices[:, None, :] // self._weights) % 2  # [B, b, T]
        return project_channels(self.project_out, (2 * bits - 1).float() * self.magnitude)


class ResidualLFQ(Residual):
    """Residual LFQ: ``n_q`` :class:`LFQ` stages of ``b = log2(codebook_size)`` bits; stage ``i`` has
    ``codebook_scale = 2^-i`` (as vector-quantize-pytorch's ``ResidualLFQ``), each with its own
    regulariser on its residual. Learned maps shared by the stages lead into and out of code space when
    ``dim != b``. The gradient is the sum of the stages' own straight-through gradients (as there; with
    ``spherical``, each through its normalisation: an identity gradient around it would shrink the input
    until ``1/||z||`` blows up). ``lfq_kwargs`` go to every stage.
    """

    def __init__(self, n_q: int, dim: int, codebook_size: int, quantizer_dropout: float = 0.0, **lfq_kwargs) -> None:
        bits = check_lfq_size("ResidualLFQ", codebook_size)
        if n_q < 1:
            raise ConfigError(f"ResidualLFQ: n_q must be >= 1, got {n_q}")
        if "codebook_scale" in lfq_kwargs:
            raise ConfigError("ResidualLFQ: the stages' codebook_scale is 2**-i; it cannot be set")
        layers = [LFQ(bits, codebook_size, codebook_scale=2.0**-i, **lfq_kwargs) for i in range(n_q)]
        super().__init__(layers, dim, bits, quantizer_dropout, gradient="stages")
