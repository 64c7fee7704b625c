"""``torch.ops.vqaudio.exact_conv1d``: a 1-D convolution whose values do not depend on the tensor they are computed in.

Contract (``x [B, Cin, T]``, ``weight [Cout, Cin, K]``, ``bias [Cout]``, ``xpad`` = ``x`` (through ELU if ``elu``)
with ``pad_left`` zeros before and ``pad_right`` after)::

    y[b, co, t] = bias[co] + sum_ci sum_k weight[co, ci, k] * xpad[b, ci, t * stride + k * dilation]

summed in that one order (``ci`` outer, ``k`` inner, one FMA a term). The compiled CPU kernel
(``csrc/exact_conv.cpp``) gives each SIMD lane one output position with the same instruction sequence for every
lane, so a value has the same bits whatever ``T``, ``B``, the padding, the thread count or the tile it falls in:
offline chunks, stream windows and padded batches of the encoder agree bit for bit (ATen's convs block their
sums by length, batch and thread count). Float32 on the CPU, inference only (no backward): :func:`usable` says
when the encoder may call it. :func:`exact_conv1d_reference` is the same contract in PyTorch ops (any dtype).

``exact_conv1d_narrow`` is the same contract with the same bits, vectorised over output channels instead of positions
(``weight_t [Cin, K, Cout]``, :func:`narrow_weight`; ``Cout`` a multiple of 16): for the few output positions of a
stream push, where a 32-position tile would be mostly slack.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from vqaudio import ops

__all__ = ["exact_conv1d", "exact_conv1d_narrow", "narrow_weight", "exact_conv1d_reference", "has_exact_conv", "enabled_for", "usable", "disabled"]

_DISABLED = [os.environ.get("VQAUDIO_EXACT_CONV", "1").strip() == "0"]


def has_exact_conv() -> bool:
    """Whether the compiled op is loaded (an extension built before it existed lacks it)."""
    if ops.KERNEL != "compiled":
        return False
    try:
        torch.ops.vqaudio.exact_conv1d  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


_HAS = has_exact_conv()
_HAS_NARROW = _HAS and hasattr(torch.ops.vqaudio, "exact_conv1d_narrow")
# the overload itself: a stream decoder calls it ~23 times a push, and the packet's lookup costs ~1 us a call
_NARROW_OP = torch.ops.vqaudio.exact_conv1d_narrow.default if _HAS_NARROW else None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Encoders use ATen's convs while in the block (benchmarks compare both; ``VQAUDIO_EXACT_CONV=0`` for a process)."""
    before = _DISABLED[0]
    _DISABLED[0] = True
    try:
        yield
    finally:
        _DISABLED[0] = before


def enabled_for(device: torch.device) -> bool:
    """Whether encoders on ``device`` use the compiled op (the CPU, op loaded, not :func:`disabled`)."""
    return _HAS and not _DISABLED[0] and device.type == "cpu"


def usable(x: Tensor) -> bool:
    """Whether an encoder may run ``x`` through the compiled op: float32 on the CPU, no autograd, op loaded."""
    return enabled_for(x.device) and x.dtype == torch.float32 and not torch.is_grad_enabled()


def exact_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, dilation: int = 1,
                 padding: tuple[int, int] = (0, 0), elu: bool = False) -> Tensor:
    """``[B, Cin, T] -> [B, Cout, T']`` by the contract above (the compiled op; ``bias=None`` is zeros).
    Raises a ``RuntimeError`` if ``x`` or the weights require grad (the op has no backward)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        raise RuntimeError("exact_conv1d: inference only (no backward); call it under torch.no_grad()")
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    return torch.ops.vqaudio.exact_conv1d(x, weight, bias, stride, dilation, padding[0], padding[1], elu)


NARROW_LANES = 16  # exact_conv1d_narrow's channels per vector: Cout must be a multiple


def narrow_weight(weight: Tensor) -> Tensor | None:
    """``weight [Cout, Cin, K]`` as ``exact_conv1d_narrow``'s ``[Cin, K, Cout]`` (detached), or ``None`` where the op
    cannot take it (not loaded, or ``Cout`` not a multiple of 16)."""
    if not _HAS_NARROW or weight.shape[0] % NARROW_LANES:
        return None
    return weight.detach().permute(1, 2, 0).contiguous()


def exact_conv1d_narrow(x: Tensor, weight_t: Tensor, bias: Tensor | None, stride: int = 1, dilation: int = 1,
                        padding: tuple[int, int] = (0, 0), elu: bool = False, head: Tensor | None = None,
                        residual: Tensor | None = None) -> Tensor:
    """:func:`exact_conv1d` bit for bit, with the weights as ``weight_t [Cin, K, Cout]`` (:func:`narrow_weight`);
    faster for short outputs (a stream push's). ``head [B, Cin, H]``: the input is ``head`` then ``x`` along time
    (a stream's state and new samples, without concatenating them). ``residual [B, Cout, T']``: added to the
    output (``residual + y``, the same bits). Inference only."""
    if bias is None:
        bias = weight_t.new_zeros(weight_t.shape[-1])
    return _NARROW_OP(x, weight_t, bias, stride, dilation, padding[0], padding[1], elu, head, residual)


def _out_length(t: int, kernel: int, stride: int, dilation: int, pad: int) -> int:
    """Output positions of a conv over ``t`` inputs with ``pad`` zeros in all (both ends)."""
    return (t + pad - dilation * (kernel - 1) - 1) // stride + 1


def exact_conv1d_reference(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, dilation: int = 1,
                           padding: tuple[int, int] = (0, 0), elu: bool = False) -> Tensor:
    """The contract in PyTorch ops, in ``x``'s dtype: the same order of sums (without fusing the multiply-adds)."""
    xpad = F.pad(F.elu(x) if elu else x, padding)
    cout, cin, k = weight.shape
    t_out = _out_length(xpad.shape[-1], k, stride, dilation, 0)
    y = (torch.zeros(cout, dtype=x.dtype, device=x.device) if bias is None else bias.to(x.dtype))
    y = y[None, :, None].expand(x.shape[0], cout, t_out).clone()
    w = weight.to(x.dtype)
    for ci in range(cin):
        for kk in range(k):
            start = kk * dilation
            y += w[None, :, ci, kk, None] * xpad[:, ci, None, start : start + (t_out - 1) * stride + 1 : stride]
    return y


def _exact_conv1d_fake(x: Tensor, weight: Tensor, bias: Tensor, stride: int, dilation: int, pad_left: int,
                       pad_right: int, elu: bool = False) -> Tensor:
    torch._check(x.dim() == 3 and weight.dim() == 3 and bias.dim() == 1, lambda: "exact_conv1d: x, weight 3-D, bias 1-D")
    torch._check(weight.shape[1] == x.shape[1], lambda: "exact_conv1d: weight and x differ in Cin")
    t_out = _out_length(x.shape[-1], weight.shape[-1], stride, dilation, pad_left + pad_right)
    return x.new_empty(x.shape[0], weight.shape[0], t_out)


def _exact_conv1d_narrow_fake(x: Tensor, weight_t: Tensor, bias: Tensor, stride: int, dilation: int, pad_left: int,
                              pad_right: int, elu: bool = False, head: Tensor | None = None,
                              residual: Tensor | None = None) -> Tensor:
    torch._check(x.dim() == 3 and weight_t.dim() == 3 and bias.dim() == 1,
                 lambda: "exact_conv1d_narrow: x, weight_t 3-D, bias 1-D")
    torch._check(weight_t.shape[0] == x.shape[1], lambda: "exact_conv1d_narrow: weight_t and x differ in Cin")
    t = x.shape[-1] + (0 if head is None else head.shape[-1])
    t_out = _out_length(t, weight_t.shape[1], stride, dilation, pad_left + pad_right)
    return x.new_empty(x.shape[0], weight_t.shape[2], t_out)


if _HAS:
    torch.library.register_fake("vqaudio::exact_conv1d")(_exact_conv1d_fake)
if _HAS_NARROW:
    torch.library.register_fake("vqaudio::exact_conv1d_narrow")(_exact_conv1d_narrow_fake)
