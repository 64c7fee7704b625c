"""Stateful streaming versions of the conv stack's layers (EnCodec's ``StreamableConv1d`` and Moshi's streaming
modules, for our non-causal layers): each keeps the few input positions its next outputs need and returns, per
push, every output position whose inputs have all arrived. Pushing a signal in pieces of any size and then
calling ``flush`` gives the layer's output on the whole signal (its zero padding at both ends included), up to
float rounding (convs of other lengths round differently).

``streaming(stack)`` builds the streaming copy of a :class:`~vqaudio.models.conv.Decoder` or
:class:`~vqaudio.models.conv.Encoder` (sharing its weights). Tensors are ``[B, C, n]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.models.conv import Conv, ConvTranspose, ResidualUnit

__all__ = ["StreamLayer", "StreamConv", "StreamConvTranspose", "StreamResidual", "StreamPointwise", "StreamStack",
           "streaming"]


def _cat(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None or a.shape[-1] == 0:
        return b
    if b is None or b.shape[-1] == 0:
        return a
    return torch.cat([a, b], dim=-1)


class StreamLayer:
    """``push(x)`` returns the new final outputs (``None`` when there are none); ``flush()`` the rest."""

    def push(self, x: Tensor | None) -> Tensor | None:
        raise NotImplementedError

    def flush(self) -> Tensor | None:
        raise NotImplementedError


class StreamPointwise(StreamLayer):
    """An activation (or any position-wise module)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def push(self, x):
        return None if x is None or x.shape[-1] == 0 else self.module(x)

    def flush(self):
        return None


class StreamConv(StreamLayer):
    """A stride-1 :class:`Conv`: the left padding as zeros at the start, the last ``span - 1`` inputs kept, the right
    padding as zeros at the end."""

    def __init__(self, conv: Conv) -> None:
        if conv.stride != 1:
            raise ValueError("StreamConv: only stride-1 convs stream (the decoder has no strided conv)")
        c = conv.conv
        self.weight, self.bias, self.dilation = c.weight, c.bias, conv.dilation
        self.span = conv.dilation * (conv.kernel - 1) + 1
        self.pad = conv.pad
        self.buf: Tensor | None = None

    def _run(self) -> Tensor | None:
        n = self.buf.shape[-1] - (self.span - 1)
        if n <= 0:
            return None
        y = F.conv1d(self.buf, self.weight, self.bias, dilation=self.dilation)
        self.buf = self.buf[..., n:]
        return y

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        if self.buf is None:
            x = F.pad(x, (self.pad[0], 0))
        self.buf = _cat(self.buf, x)
        return self._run()

    def flush(self):
        if self.buf is None:
            return None
        self.buf = F.pad(self.buf, (0, self.pad[1]))
        return self._run()


class StreamConvTranspose(StreamLayer):
    """A :class:`ConvTranspose` (kernel ``2s``, stride ``s``) as one matrix product per push: each input frame
    gives ``2s`` outputs per channel, whose first half is added to the second half of the frame before (kept
    as state) and the bias. ``s // 2`` outputs are dropped at the start and ``s - s // 2`` at the end, as the
    layer trims them. (On short pieces, oneDNN's transposed conv costs ~0.7 ms a call, this a few us.)"""

    def __init__(self, conv: ConvTranspose) -> None:
        c = conv.conv
        w = c.weight  # [Cin, Cout, 2s]
        self.s, self.cout = conv.stride, w.shape[1]
        self.weight = w.detach().reshape(w.shape[0], -1)  # [Cin, Cout * 2s]
        self.bias = (torch.zeros(self.cout) if c.bias is None else c.bias.detach()).view(1, -1, 1, 1)
        self.trim = conv.trim
        self.carry: Tensor | None = None  # [B, Cout, s]: the second half of the last frame's outputs
        self.skip = self.trim[0]

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        b, n, s = x.shape[0], x.shape[-1], self.s
        y = torch.matmul(x.transpose(1, 2), self.weight).view(b, n, self.cout, 2 * s)  # [B, n, Cout, 2s]
        first, second = y[..., :s], y[..., s:]
        carry = torch.zeros_like(second[:, :1]) if self.carry is None else self.carry[:, None]
        prev = torch.cat([carry, second[:, :-1]], dim=1) if n > 1 else carry
        out = (first + prev + self.bias.view(1, 1, -1, 1)).permute(0, 2, 1, 3).reshape(b, self.cout, n * s)
        self.carry = second[:, -1]
        return self._skip(out)

    def flush(self):
        if self.carry is None:
            return None
        y = (self.carry + self.bias.view(1, -1, 1))[..., : self.s - self.trim[1]]
        self.carry = None
        return self._skip(y)

    def _skip(self, y: Tensor) -> Tensor | None:
        if self.skip:
            k = min(self.skip, y.shape[-1])
            y, self.skip = y[..., k:], self.skip - k
        return y if y.shape[-1] else None


class StreamStack(StreamLayer):
    """Layers in sequence."""

    def __init__(self, layers: list[StreamLayer]) -> None:
        self.layers = layers

    def push(self, x):
        for layer in self.layers:
            x = layer.push(x)
        return x

    def flush(self):
        x = None
        for layer in self.layers:
            x = _cat(layer.push(x), layer.flush())
        return x


class StreamResidual(StreamLayer):
    """``x + block(x)``: the inputs wait for the block's outputs at the same positions."""

    def __init__(self, unit: ResidualUnit) -> None:
        self.block = streaming(unit.block)
        self.skip: Tensor | None = None

    def _add(self, y: Tensor | None) -> Tensor | None:
        if y is None:
            return None
        out = self.skip[..., : y.shape[-1]] + y
        self.skip = self.skip[..., y.shape[-1] :]
        return out

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        self.skip = _cat(self.skip, x)
        return self._add(self.block.push(x))

    def flush(self):
        return self._add(self.block.flush())


def streaming(stack: nn.Module) -> StreamStack:
    """The streaming copy of a conv stack (an ``nn.Sequential`` of our layers, or a module with ``.layers``)."""
    layers = stack.layers if hasattr(stack, "layers") else stack
    out: list[StreamLayer] = []
    for layer in layers:
        if isinstance(layer, Conv):
            out.append(StreamConv(layer))
        elif isinstance(layer, ConvTranspose):
            out.append(StreamConvTranspose(layer))
        elif isinstance(layer, ResidualUnit):
            out.append(StreamResidual(layer))
        elif isinstance(layer, nn.Sequential):
            out.append(streaming(layer))
        else:
            out.append(StreamPointwise(layer))
    return StreamStack(out)
