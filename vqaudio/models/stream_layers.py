"""Stateful streaming versions of the conv stack's layers (EnCodec's ``StreamableConv1d`` and Moshi's streaming
modules, for our non-causal layers): each keeps the few input positions its next outputs need and returns, per
push, every output position whose inputs have all arrived. Pushing a signal in pieces of any size and then
calling ``flush`` gives the layer's output on the whole signal (its zero padding at both ends included), up to
float rounding (ATen's convs of other lengths round differently), or bit for bit with ``exact=True``: the convs
then run through :func:`~vqaudio.ops.exact_conv.exact_conv1d` (``exact_conv1d_narrow``, the same bits, on a
push's short outputs), each ELU fused into the conv after it, as :class:`~vqaudio.models.conv.Encoder` runs offline
(the stream encoder's mode; the CPU stream decoder's too, for speed: transposed convs then run as kernel-2 exact
convs, :class:`StreamConvTransposeExact`).

``streaming(stack, exact=False)`` builds the streaming copy of a :class:`~vqaudio.models.conv.Decoder` or
:class:`~vqaudio.models.conv.Encoder` (sharing its weights). Tensors are ``[B, C, n]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.models.conv import Conv, ConvTranspose, ResidualUnit, fused_elu
from vqaudio.ops.exact_conv import exact_conv1d, exact_conv1d_narrow, narrow_weight

__all__ = ["StreamLayer", "StreamConv", "StreamConvTranspose", "StreamConvTransposeExact", "StreamResidual", "StreamPointwise", "StreamStack",
           "streaming"]

NARROW_MAX = 256  # a push's conv with fewer output positions runs vectorised over channels (exact_conv1d_narrow)


def _skip_start(layer: StreamConvTranspose | StreamConvTransposeExact, y: Tensor | None) -> Tensor | None:
    """``y`` less the transposed conv's first ``layer.skip`` outputs still to drop (its left trim)."""
    if y is None:
        return None
    if layer.skip:
        k = min(layer.skip, y.shape[-1])
        y, layer.skip = y[..., k:], layer.skip - k
    return y if y.shape[-1] else None


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
    """A :class:`Conv` of any stride: the left padding as zeros at the start, the inputs its next outputs read kept,
    the right padding as zeros at the end. ``exact``: through ``exact_conv1d``; ``elu``: the inputs go through ELU
    first (fused into the exact op; ELU(0) = 0, so the padding zeros may be added before it)."""

    def __init__(self, conv: Conv, exact: bool = False, elu: bool = False) -> None:
        c = conv.conv
        self._setup(c.weight, c.bias, conv.stride, conv.dilation, conv.pad, exact, elu)

    def _setup(self, weight: Tensor, bias: Tensor | None, stride: int, dilation: int, pad: tuple[int, int],
               exact: bool, elu: bool) -> None:
        self.weight, self.bias, self.dilation, self.stride = weight, bias, dilation, stride
        self.span = dilation * (weight.shape[-1] - 1) + 1
        self.pad, self.exact, self.elu = pad, exact, elu
        self.weight_t = narrow_weight(weight) if exact else None  # for exact_conv1d_narrow
        self.buf: Tensor | None = None
        self.residual: Callable[[int], Tensor] | None = None  # residual(n): what to add to the next n outputs

    def _run(self) -> Tensor | None:
        n = (self.buf.shape[-1] - self.span) // self.stride + 1
        if n <= 0:
            return None
        x = self.buf[..., : (n - 1) * self.stride + self.span]
        if self.exact and self.weight_t is not None and n < NARROW_MAX:
            y = exact_conv1d_narrow(x, self.weight_t, self.bias, self.stride, self.dilation, elu=self.elu)
        elif self.exact:
            y = exact_conv1d(x, self.weight, self.bias, self.stride, self.dilation, elu=self.elu)
        else:
            y = F.conv1d(F.elu(x) if self.elu else x, self.weight, self.bias, self.stride, dilation=self.dilation)
        if self.residual is not None:
            y = self.residual(n) + y
        self.buf = self.buf[..., n * self.stride :]
        return self._out(y)

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        if self.buf is None:
            x = F.pad(x, (self.pad[0], 0))
        elif self.exact and self.weight_t is not None and x.shape[-1] < NARROW_MAX:
            return self._run_narrow(x)
        self.buf = _cat(self.buf, x)
        return self._run()

    def _run_narrow(self, x: Tensor) -> Tensor | None:
        """``_run`` on the state then ``x`` without concatenating them (the op reads both); the state left is a view
        of ``x`` once the outputs have consumed the old state."""
        h = self.buf.shape[-1]
        n = (h + x.shape[-1] - self.span) // self.stride + 1
        if n <= 0:
            self.buf = _cat(self.buf, x)
            return None
        used = (n - 1) * self.stride + self.span  # the op reads head + x[:used - h]
        x_used = x[..., : used - h] if used - h < x.shape[-1] else x  # a stride-1 conv reads all of x: no slice
        y = exact_conv1d_narrow(x_used, self.weight_t, self.bias, self.stride, self.dilation,
                                elu=self.elu, head=self.buf, residual=None if self.residual is None else self.residual(n))
        drop = n * self.stride
        self.buf = x[..., drop - h :] if drop >= h else _cat(self.buf[..., drop:], x)
        return self._out(y)

    def _out(self, y: Tensor) -> Tensor:
        """The conv's outputs as the layer's (a subclass's layout)."""
        return y

    def flush(self):
        if self.buf is None:
            return None
        self.buf = F.pad(self.buf, (0, self.pad[1]))
        return self._run()


class StreamConvTransposeExact(StreamConv):
    """A :class:`ConvTranspose` (kernel ``2s``, stride ``s``) as an exact conv of kernel 2 (its ELU fused if ``elu``):
    output samples ``[j s, (j + 1) s)`` of the untrimmed transposed conv are ``s`` channels of one conv output
    ``j = 0 .. F``, read from input frames ``j - 1`` and ``j`` (zeros outside), with weights
    ``W'[co s + p, ci, :] = (w[ci, co, s + p], w[ci, co, p])``. The stream keeps one input frame; ``s // 2``
    samples are dropped at the start and ``s - s // 2`` at the end, as the layer trims them."""

    def __init__(self, conv: ConvTranspose, elu: bool = False) -> None:
        c, s = conv.conv, conv.stride
        w = c.weight.detach()  # [Cin, Cout, 2s]
        cin, cout = w.shape[0], w.shape[1]
        weight = w.view(cin, cout, 2, s).flip(2).permute(1, 3, 0, 2).reshape(cout * s, cin, 2)
        bias = None if c.bias is None else c.bias.detach().repeat_interleave(s)
        self._setup(weight, bias, 1, 1, (1, 1), True, elu)
        self.s, self.cout, self.trim, self.skip = s, cout, conv.trim, conv.trim[0]

    def _out(self, y: Tensor) -> Tensor:
        b, _, j = y.shape  # [B, Cout s, J]
        return y.view(b, self.cout, self.s, j).transpose(2, 3).reshape(b, self.cout, j * self.s)

    def push(self, x):
        return _skip_start(self, super().push(x))

    def flush(self):
        y = super().flush()  # the last frame's second half: its last trim[1] samples are trimmed
        return _skip_start(self, None if y is None else y[..., : y.shape[-1] - self.trim[1]])


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
        return _skip_start(self, out)

    def flush(self):
        if self.carry is None:
            return None
        y = (self.carry + self.bias.view(1, -1, 1))[..., : self.s - self.trim[1]]
        self.carry = None
        return _skip_start(self, y)


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
    """``x + block(x)``: the inputs wait for the block's outputs at the same positions. The block's last conv adds
    them to its outputs (in ``exact_conv1d_narrow``, on a push; ``skip + y`` either way)."""

    def __init__(self, unit: ResidualUnit, exact: bool = False) -> None:
        self.block = streaming(unit.block, exact)
        self.skip: Tensor | None = None
        last = self.block.layers[-1]
        self.fused = type(last) is StreamConv  # a plain conv (a ResidualUnit's 1x1) adds the skip itself
        if self.fused:
            last.residual = self._take

    def _take(self, n: int) -> Tensor:
        """The next ``n`` inputs kept (the skip of the block's next ``n`` outputs)."""
        out, self.skip = self.skip[..., :n], self.skip[..., n:]
        return out

    def _add(self, y: Tensor | None) -> Tensor | None:
        if y is None or self.fused:
            return y
        return self._take(y.shape[-1]) + y

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        self.skip = _cat(self.skip, x)
        return self._add(self.block.push(x))

    def flush(self):
        return self._add(self.block.flush())


def streaming(stack: nn.Module, exact: bool = False) -> StreamStack:
    """The streaming copy of a conv stack (an ``nn.Sequential`` of our layers, or a module with ``.layers``).
    ``exact``: convs through ``exact_conv1d`` with each ``nn.ELU`` (alpha 1) before a conv fused into it, as
    :func:`vqaudio.models.conv.run_exact` (CPU float32 without autograd only)."""
    layers = list(stack.layers if hasattr(stack, "layers") else stack)
    out: list[StreamLayer] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if exact and fused_elu(layers, i):
            out.append(StreamConv(layers[i + 1], exact, elu=True))
            i += 1
        elif exact and fused_elu(layers, i, ConvTranspose):
            out.append(StreamConvTransposeExact(layers[i + 1], elu=True))
            i += 1
        elif isinstance(layer, Conv):
            out.append(StreamConv(layer, exact))
        elif isinstance(layer, ConvTranspose):
            out.append(StreamConvTransposeExact(layer) if exact else StreamConvTranspose(layer))
        elif isinstance(layer, ResidualUnit):
            out.append(StreamResidual(layer, exact))
        elif isinstance(layer, nn.Sequential):
            out.append(streaming(layer, exact))
        else:
            out.append(StreamPointwise(layer))
        i += 1
    return StreamStack(out)
