"""1D convolutional encoder and decoder (SEANet-style, as in EnCodec / DAC, without the LSTM).

Encoder ``[B, C, T] -> [B, D, T / hop]``: a conv in, then per stride ``s`` a block of residual units
(dilations 1, 3, 9 by default) and a strided conv (kernel ``2s``) that doubles the channels; an
activation and a conv out to ``D``. The decoder mirrors it with transposed convs. ``T`` must be
a multiple of ``hop = prod(strides)`` (the VQ-VAE pads to it); the decoder returns ``F * hop``.

Padding, and why chunks can reproduce whole-file codes exactly
--------------------------------------------------------------
Every layer is position-independent: a stride-1 conv pads ``d (k - 1)`` zeros split evenly
around its input, a strided conv (kernel ``2s``) pads ``s // 2`` zeros left and ``s - s // 2``
right, a transposed conv trims ``s // 2`` samples left and ``s - s // 2`` right of its output. Zeros are
only added at the two ends of the tensor being processed, never reflected or replicated, and
there is no normalisation over time and no recurrence. Hence encoder frame ``f`` is a fixed
function of input samples ``[f * hop - left, f * hop + right]`` (``Encoder.context``) whatever the
length of the input, as long as the input starts on the frame grid (a multiple of ``hop``).
Encoding a chunk ``x[a:b]`` with ``a % hop == 0`` gives exactly the whole-file frames
``f`` with ``f * hop - left >= a`` (or ``a == 0``) and ``f * hop + right < b`` (or ``b == T``);
frames closer to a chunk cut see zero padding instead of signal and must be discarded.
Likewise a decoder output sample in frame ``f`` (samples ``[f * hop, (f + 1) * hop)``) depends only
on frames ``[f - left, f + right]`` (``Decoder.context``).

Exact encoder convs
-------------------
On the CPU without autograd (a codec's offline chunks, its batches and its stream windows), :class:`Encoder` runs
every conv through ``torch.ops.vqaudio.exact_conv1d`` (:mod:`vqaudio.ops.exact_conv`), each ELU fused into the conv
after it: a value's bits then depend only on its receptive field, not on the length, batch or thread count of the
call, so any chunking gives the same codes bit for bit. Training, CUDA and the decoder use ATen's convs.

Causal stacks (``causal=True``, ``VQVAEConfig.encoder_causal`` / ``decoder_causal``) put every conv's zeros on
the left and trim transposed convs on the right: encoder frame ``f`` then depends on samples up to
``f * hop + hop - 1`` (the frame's own samples, no lookahead), decoder frame ``f`` on codes up to ``f``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vqaudio.ops.exact_conv import exact_conv1d, usable

__all__ = ["Snake", "Conv", "ConvTranspose", "ResidualUnit", "Encoder", "Decoder", "channel_plan"]


class Snake(nn.Module):
    """``x + sin²(alpha x) / alpha`` with a learned per-channel ``alpha`` (Ziyin et al. 2020, DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).square()


def activation(name: str, channels: int) -> nn.Module:
    """``"elu"`` or ``"snake"``."""
    if name == "elu":
        return nn.ELU()
    if name == "snake":
        return Snake(channels)
    raise ValueError(f"unknown activation {name!r} (expected 'elu' or 'snake')")


# Range maps: ``input_range(a, b)`` is the inclusive range of input indices that output indices
# ``[a, b]`` depend on. Composing them gives exact receptive fields.


class Conv(nn.Module):
    """Conv1d ``[B, Cin, T] -> [B, Cout, T / stride]`` with zero padding at the tensor ends only.

    Stride 1: ``dilation * (kernel - 1)`` zeros split evenly (the extra one on the right).
    Stride ``s``: ``kernel - s`` zeros, ``(kernel - s) // 2`` on the left; ``T`` must be a multiple of ``s``.
    ``causal``: all the zeros on the left, so output ``i`` depends on inputs up to ``i * s + s - 1`` only.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, norm: bool = True,
                 causal: bool = False) -> None:
        super().__init__()
        total = dilation * (kernel - 1) if stride == 1 else kernel - stride
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)
        # Symmetric padding is done by the convolution itself (no padded copy of the input).
        inner = self.pad[0] if self.pad[0] == self.pad[1] else 0
        conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, padding=inner)
        self.conv = weight_norm(conv) if norm else conv
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        self.outer = (0, 0) if inner else self.pad

    def forward(self, x: Tensor, elu: bool = False, exact: bool = False) -> Tensor:
        """``exact``: through :func:`~vqaudio.ops.exact_conv.exact_conv1d` (the caller checked it is usable);
        ``elu``: ``x`` goes through ELU first (fused into the exact op)."""
        if exact:
            return exact_conv1d(x, self.conv.weight, self.conv.bias, self.stride, self.dilation, self.pad, elu)
        x = F.elu(x) if elu else x
        return self.conv(F.pad(x, self.outer) if any(self.outer) else x)

    def input_range(self, a: int, b: int) -> tuple[int, int]:
        return a * self.stride - self.pad[0], b * self.stride - self.pad[0] + self.dilation * (self.kernel - 1)


class ConvTranspose(nn.Module):
    """ConvTranspose1d with kernel ``2 s``, stride ``s``: ``[B, Cin, F] -> [B, Cout, F * s]``.

    The full output (``(F + 1) s``) is trimmed by ``s // 2`` on the left and the rest on the right,
    mirroring :class:`Conv`'s padding so frame ``i`` lands on samples around ``[i s, (i + 1) s)``.
    ``causal``: all ``s`` on the right, so outputs ``[i s, (i + 1) s)`` depend on inputs ``i - 1`` and ``i`` only.
    """

    def __init__(self, cin: int, cout: int, stride: int, norm: bool = True, causal: bool = False) -> None:
        super().__init__()
        conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        self.conv = weight_norm(conv) if norm else conv
        self.stride, self.kernel = stride, 2 * stride
        self.trim = (0, stride) if causal else (stride // 2, stride - stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[..., self.trim[0] : y.shape[-1] - self.trim[1]]

    def input_range(self, a: int, b: int) -> tuple[int, int]:
        # untrimmed position j gets input i iff i * s <= j <= i * s + kernel - 1
        a, b = a + self.trim[0], b + self.trim[0]
        return -((self.kernel - 1 - a) // self.stride), b // self.stride


class ResidualUnit(nn.Module):
    """``x + conv1x1(act(conv_k,d(act(x))))`` with a bottleneck of ``channels // compress``."""

    def __init__(self, channels: int, dilation: int, kernel: int = 7, act: str = "elu", norm: bool = True, compress: int = 2,
                 causal: bool = False) -> None:
        super().__init__()
        hidden = max(1, channels // compress)
        self.block = nn.Sequential(
            activation(act, channels),
            Conv(channels, hidden, kernel, dilation=dilation, norm=norm, causal=causal),
            activation(act, hidden),
            Conv(hidden, channels, 1, norm=norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)

    def input_range(self, a: int, b: int) -> tuple[int, int]:
        return _compose(list(self.block), a, b)


def fused_elu(layers: list[nn.Module], i: int, before: type[nn.Module] | None = None) -> bool:
    """Whether ``layers[i]`` is an ELU (alpha 1) that the exact paths fuse into the layer after it, a ``before``
    (default :class:`Conv`; the stream decoder also fuses one into a :class:`ConvTranspose`)."""
    layer = layers[i]
    return (isinstance(layer, nn.ELU) and layer.alpha == 1.0 and i + 1 < len(layers)
            and isinstance(layers[i + 1], before or Conv))


def run_exact(layers: list[nn.Module], x: Tensor) -> Tensor:
    """``layers`` applied in order with exact convs: an ``nn.ELU`` followed by a :class:`Conv` is one fused call, a
    :class:`ResidualUnit` adds its block run likewise. Modules are still called (their forward pre-hooks run, e.g.
    :func:`vqaudio.batch.masked`'s, which zero a conv's input past an item's end: ELU(0) = 0, so zeroing before the
    fused ELU is the same)."""
    i = 0
    while i < len(layers):
        layer = layers[i]
        if fused_elu(layers, i):
            x, i = layers[i + 1](x, elu=True, exact=True), i + 2
            continue
        if isinstance(layer, Conv):
            x = layer(x, exact=True)
        elif isinstance(layer, ResidualUnit):
            x = x + run_exact(list(layer.block), x)
        else:
            x = layer(x)
        i += 1
    return x


def _compose(layers: list[nn.Module], a: int, b: int) -> tuple[int, int]:
    """Input range of output range ``[a, b]`` through ``layers`` applied in order."""
    for layer in reversed(layers):
        if hasattr(layer, "input_range"):
            a, b = layer.input_range(a, b)
    return a, b


def channel_plan(hidden: int, n_blocks: int, max_hidden: int) -> list[int]:
    """Channels before each strided block and after the last: ``hidden * 2^i`` capped at ``max_hidden``."""
    return [min(hidden * 2**i, max_hidden) for i in range(n_blocks + 1)]


class Encoder(nn.Module):
    """``x [B, C, T] -> z [B, D, T / hop]`` with ``hop = prod(strides)``; ``T % hop == 0``."""

    def __init__(
        self,
        channels: int,
        dim: int,
        strides: list[int],
        hidden: int = 32,
        max_hidden: int = 512,
        kernel: int = 7,
        dilations: tuple[int, ...] = (1, 3, 9),
        act: str = "elu",
        norm: bool = True,
        causal: bool = False,
    ) -> None:
        super().__init__()
        chans = channel_plan(hidden, len(strides), max_hidden)
        c = dict(norm=norm, causal=causal)
        layers: list[nn.Module] = [Conv(channels, chans[0], kernel, **c)]
        for i, s in enumerate(strides):
            layers += [ResidualUnit(chans[i], d, kernel, act, **c) for d in dilations]
            layers += [activation(act, chans[i]), Conv(chans[i], chans[i + 1], 2 * s, stride=s, **c)]
        layers += [activation(act, chans[-1]), Conv(chans[-1], dim, 3, **c)]
        self.layers = nn.Sequential(*layers)
        self.hop = math.prod(strides)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.hop:
            raise ValueError(f"Encoder: input length {x.shape[-1]} is not a multiple of hop {self.hop}")
        if not self.training and usable(x):
            return run_exact(list(self.layers), x)
        return self.layers(x)

    @property
    def context(self) -> tuple[int, int]:
        """``(left, right)``: frame ``f`` depends exactly on samples ``[f * hop - left, f * hop + right]``."""
        f = 1 << 20  # far from any edge
        a, b = _compose(list(self.layers), f, f)
        return f * self.hop - a, b - f * self.hop

    @property
    def receptive_field(self) -> int:
        """Number of input samples one frame depends on (``left + right + 1``)."""
        left, right = self.context
        return left + right + 1


class Decoder(nn.Module):
    """``z [B, D, F] -> x [B, C, F * hop]``, the mirror of :class:`Encoder`.

    ``frame_dilations``: residual units at the frame rate, right after the input conv (none by default): sequence
    capacity where it is cheapest (the role of EnCodec's LSTM, as dilated convs), of ``frame_kernel`` (default
    ``kernel``) and a ``channels // frame_compress`` bottleneck. They are causal, so they add history
    (``(frame_kernel - 1) * sum(frame_dilations)`` frames) and no lookahead: the streaming latency stays.
    """

    def __init__(
        self,
        channels: int,
        dim: int,
        strides: list[int],
        hidden: int = 32,
        max_hidden: int = 512,
        kernel: int = 7,
        dilations: tuple[int, ...] = (1, 3, 9),
        act: str = "elu",
        norm: bool = True,
        causal: bool = False,
        frame_dilations: tuple[int, ...] = (),
        frame_kernel: int | None = None,
        frame_compress: int = 2,
    ) -> None:
        super().__init__()
        chans = channel_plan(hidden, len(strides), max_hidden)[::-1]
        c = dict(norm=norm, causal=causal)
        layers: list[nn.Module] = [Conv(dim, chans[0], kernel, **c)]
        layers += [ResidualUnit(chans[0], d, frame_kernel or kernel, act, norm=norm, compress=frame_compress, causal=True)
                   for d in frame_dilations]
        for i, s in enumerate(reversed(strides)):
            layers += [activation(act, chans[i]), ConvTranspose(chans[i], chans[i + 1], s, **c)]
            layers += [ResidualUnit(chans[i + 1], d, kernel, act, **c) for d in dilations]
        layers += [activation(act, chans[-1]), Conv(chans[-1], channels, kernel, **c)]
        self.layers = nn.Sequential(*layers)
        self.hop = math.prod(strides)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)

    @property
    def context(self) -> tuple[int, int]:
        """``(left, right)`` in frames: samples of frame ``f`` depend exactly on frames ``[f - left, f + right]``."""
        f = 1 << 20
        lo, hi = f, f
        for t in range(f * self.hop, (f + 1) * self.hop):
            a, b = _compose(list(self.layers), t, t)
            lo, hi = min(lo, a), max(hi, b)
        return f - lo, hi - f

    @property
    def receptive_field(self) -> int:
        """Number of frames one output sample can depend on, over all its positions in a frame."""
        left, right = self.context
        return left + right + 1
