"""``ResidualVQ``: residual vector quantisation (SoundStream / EnCodec / DAC) with quantiser dropout.

References: Zeghidour et al. 2021 (SoundStream), facebookresearch/encodec ``core_vq.py``, Kumar et al.
2023 (DAC, quantiser dropout).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import RVQOutput, StraightThrough
from .vq import VectorQuantizer

__all__ = ["ResidualVQ"]


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
        return RVQOutput(StraightThrough.apply(z, total), torch.stack(codes, dim=1), loss, stats)

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
