"""Residual quantisation (SoundStream / EnCodec / DAC): ``Residual``, the stack any quantiser family
uses, and ``ResidualVQ``.

References: Zeghidour et al. 2021 (SoundStream), facebookresearch/encodec ``core_vq.py``, Kumar et al.
2023 (DAC, quantiser dropout), lucidrains/vector-quantize-pytorch (shared projections, rotation trick).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqaudio.errors import ConfigError
from vqaudio.ops import rotate_to

from .common import RVQOutput, StraightThrough, check_codebook_dim, project_channels, projections
from .distributed import broadcast_state
from .vq import VectorQuantizer

__all__ = ["Residual", "ResidualVQ"]

GRADIENTS = ("straight_through", "rotation", "stages")


class Residual(nn.Module):
    """Stage ``i`` quantises what stages ``0..i-1`` left over; the output is the sum of the stages.

    ``layers``: single-stage quantisers of ``code_dim``-dimensional ``[B, code_dim, T]`` latents, each
    with ``forward(z, mask) -> VQOutput``, ``encode(z) -> [B, T]``, ``decode(indices) -> [B, code_dim, T]``
    and ``codebook_size``. When ``code_dim != dim``, learned maps ``project_in`` / ``project_out``
    (shared by all stages) lead into and out of code space.

    ``gradient`` says how the output's gradient reaches the input ``z`` (in code space):

    - ``"straight_through"``: the identity (the stages' outputs are detached; each stage's own loss
      still reaches ``z`` through its residual);
    - ``"rotation"``: the rotation trick applied to the whole stack, ``z`` rotated onto the sum of
      the stages (:func:`vqaudio.ops.rotate_to`; with one stage, exactly the single-stage trick);
    - ``"stages"``: the sum of each stage's own gradient (FSQ's bounded rounding, LFQ), residuals
      detached between stages, as in vector-quantize-pytorch's ``ResidualFSQ`` / ``ResidualLFQ``.

    ``quantizer_dropout``: in training, each batch item with this probability uses a random number
    of stages in ``[1, n_q]`` (SoundStream / DAC), so one model serves several bitrates; the stages
    it skips do not contribute to its output, loss or codebook statistics. ``codes`` always holds
    all ``n_q`` stages. Inference may use any ``n_q`` up to the number of stages trained.
    """

    def __init__(
        self, layers: Sequence[nn.Module], dim: int, code_dim: int, quantizer_dropout: float = 0.0,
        gradient: str = "straight_through",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if len(layers) < 1:
            raise ConfigError(f"{name}: n_q must be >= 1, got {len(layers)}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ConfigError(f"{name}: quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        if gradient not in GRADIENTS:
            raise ConfigError(f"{name}: gradient must be one of {GRADIENTS}, got {gradient!r}")
        self.n_q, self.dim, self.code_dim = len(layers), dim, code_dim
        self.codebook_size = layers[0].codebook_size
        self.quantizer_dropout, self.gradient = quantizer_dropout, gradient
        self.layers = nn.ModuleList(layers)
        self.project_in, self.project_out = projections(dim, code_dim)
        self._synced = False  # DDP: the shared projections broadcast from rank 0 once per process

    def _into_code_space(self, z: Tensor) -> Tensor:
        """``z [B, dim, T]`` as the stages' input ``[B, code_dim, T]`` (the projection; families may add a bound)."""
        return project_channels(self.project_in, z)

    def _training_value(self, z: Tensor, total: Tensor, n_item: Tensor) -> Tensor:
        """The value the stack passes on in training, from ``z`` (code space), the sum of the stages ``total``
        and each item's number of stages ``n_item [B]``; the sum itself (families may substitute noise)."""
        return total

    def _n_q(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else n_q
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"{type(self).__name__}: n_q must be in [1, {self.n_q}], got {n_q}")
        return n_q

    def forward(self, z: Tensor, n_q: int | None = None) -> RVQOutput:
        """Quantise ``z [B, D, T]`` with the first ``n_q`` stages (all by default)."""
        n_q = self._n_q(n_q)
        if self.training and not self._synced:
            for module in (self.project_in, self.project_out):
                if module is not None:
                    broadcast_state(module)
            self._synced = True
        z = self._into_code_space(z)
        batch = z.shape[0]
        n_item = torch.full((batch,), n_q, dtype=torch.int64, device=z.device)
        dropout = self.training and self.quantizer_dropout > 0
        if dropout:
            drop = torch.rand(batch, device=z.device) < self.quantizer_dropout
            n_item = torch.where(drop, torch.randint(1, n_q + 1, (batch,), device=z.device), n_item)
        stages = self.gradient == "stages"
        residual, total = z, torch.zeros_like(z)
        loss = z.new_zeros((), dtype=torch.float32)
        codes, perplexity, usage = [], [], []
        for i, layer in enumerate(self.layers[:n_q]):
            mask = n_item > i if dropout else None
            out = layer(residual, mask)
            q = out.quantized.detach()
            residual = residual - q  # detached: later stages' own losses also reach the encoder
            part = out.quantized if stages else q
            if mask is None:
                total, loss = total + part, loss + out.loss
            else:
                total, loss = total + part * mask[:, None, None].to(q.dtype), loss + out.loss * mask.float().mean()
            codes.append(out.indices)
            perplexity.append(out.perplexity)
            usage.append(out.usage)
        if self.training:
            total = self._training_value(z, total, n_item)
        if self.gradient == "straight_through":
            quantized = StraightThrough.apply(z, total)
        elif self.gradient == "rotation":
            quantized = rotate_to(z.transpose(1, 2), total.transpose(1, 2)).transpose(1, 2)
        else:
            quantized = total
        stats = {"perplexity": torch.stack(perplexity), "usage": torch.stack(usage), "n_q": n_item}
        return RVQOutput(project_channels(self.project_out, quantized), torch.stack(codes, dim=1), loss, stats)

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """Codes int64 ``[B, n_q, T]`` of ``z [B, D, T]`` (pure lookup, any mode)."""
        n_q = self._n_q(n_q)
        residual, codes = self._into_code_space(z), []
        for layer in self.layers[:n_q]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices).to(residual.dtype)
            codes.append(indices)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor, tables: Tensor | None = None) -> Tensor:
        """Latents ``[B, D, T]`` of codes int64 ``[B, n_q', T]``, ``1 <= n_q' <= n_q``. ``tables``: the stages'
        :meth:`decode_tables`, to look the codes up in (the same sum; for decoding a few frames at a time)."""
        self._check_codes(codes)
        if tables is not None:
            quantized = tables[0][codes[:, 0]]  # [B, T, D']
            for i in range(1, codes.shape[1]):
                quantized = quantized + tables[i][codes[:, i]]
            return project_channels(self.project_out, quantized.transpose(1, 2))
        quantized = self.layers[0].decode(codes[:, 0])
        for i in range(1, codes.shape[1]):
            quantized = quantized + self.layers[i].decode(codes[:, i])
        return project_channels(self.project_out, quantized)

    @torch.no_grad()
    def decode_tables(self) -> Tensor:
        """Every stage's decoded code vectors ``[n_q, K, D']`` (its ``decode`` of each index, in code space): a stage's
        decode of a few frames (a stream push's) is then one lookup instead of its projections and checks."""
        device = next(itertools.chain(self.parameters(), self.buffers())).device
        index = torch.arange(self.codebook_size, device=device)[None]
        return torch.stack([layer.decode(index)[0].T for layer in self.layers]).contiguous()

    def _check_codes(self, codes: Tensor) -> None:
        name = type(self).__name__
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"{name}: expected codes [B, n_q' <= {self.n_q}, T], got {list(codes.shape)}")
        if codes.numel():
            low, high = (int(v) for v in torch.aminmax(codes))
            if low < 0 or high >= self.codebook_size:
                raise ValueError(f"{name}: codes must lie in [0, {self.codebook_size}), got [{low}, {high}]")


class ResidualVQ(Residual):
    """Residual vector quantisation with :class:`VectorQuantizer` stages (see :class:`Residual`).

    ``codebook_dim``: the stages work in a ``codebook_dim``-dimensional code space entered and left
    through learned maps shared by all stages (as vector-quantize-pytorch's ``ResidualVQ``).
    ``rotation_trick``: the gradient reaches ``z`` through the rotation of ``z`` onto the sum of the
    stages instead of the identity. ``vq_kwargs`` go to every :class:`VectorQuantizer` (``ema``, ...).

    ``l2_normalize``: each stage codes the direction of its residual with unit codes, and the gradient
    is the sum of the stages' own (``gradient="stages"``: each passes through its normalisation, and its
    own rotation with ``rotation_trick``), as in vector-quantize-pytorch. An identity gradient around
    normalised lookups would push on the input's norm, which nothing else holds: in the quality runs it
    shrank until the gradient through the normalisation (``1/||z||``) reached 1e14 within 200 steps.
    """

    def __init__(
        self, n_q: int, dim: int, codebook_size: int, quantizer_dropout: float = 0.0, codebook_dim: int | None = None,
        rotation_trick: bool = False, **vq_kwargs,
    ) -> None:
        if n_q < 1:
            raise ConfigError(f"ResidualVQ: n_q must be >= 1, got {n_q}")
        code_dim = check_codebook_dim("ResidualVQ", dim, codebook_dim)
        per_stage = bool(vq_kwargs.get("l2_normalize", False))
        layers = [VectorQuantizer(code_dim, codebook_size, rotation_trick=per_stage and rotation_trick, **vq_kwargs)
                  for _ in range(n_q)]
        gradient = "stages" if per_stage else "rotation" if rotation_trick else "straight_through"
        super().__init__(layers, dim, code_dim, quantizer_dropout, gradient)
