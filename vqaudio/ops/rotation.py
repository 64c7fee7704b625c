"""The rotation trick (Fifty et al., ICLR 2025) as an op: ``torch.ops.vqaudio.rotate_to(e, q)``.

Forward: ``q`` itself (the quantised vectors, in ``e``'s dtype). Backward: the gradient reaches ``e``
through the rotation and rescaling that map ``e`` onto ``q`` (held constant, the paper's stop-gradient
``q~ = sg[lambda R] e``), instead of the straight-through identity; ``q`` gets no gradient.

Per row, with ``u = e/||e||``, ``v = q/||q||``, ``r = (u + v)/||u + v||`` and ``lambda = ||q||/||e||``,
``R = I - 2 r r^T + 2 v u^T``: the product ``(I - 2 v v^T)(I - 2 r r^T)`` of two Householder reflections,
which rotates ``u`` onto ``v`` in the plane of the two and leaves its orthogonal complement alone. The
registered backward applies its transpose as the rank-2 update

    grad_e = lambda (g - 2 r (r . g) + 2 u (v . g))

in ``O(D)`` per row; no ``D x D`` matrix is formed. Rows where ``e`` or ``q`` is (numerically) zero have
no rotation and pass the gradient straight through; where they point (within rounding) in opposite
directions, the bisector ``r`` is undefined and taken as 0 (``R = I + 2 v u^T = I - 2 u u^T``, the
reflection that maps ``u`` onto ``v = -u``). float16/bfloat16 rows are computed in float32.
On the CPU the backward is the compiled kernel ``vqaudio::rotate_to_backward`` (``csrc/rotate_to.cpp``,
one fused pass per row); elsewhere, or without the extension, :func:`rotation_vjp` in PyTorch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rotate_to", "rotation_vjp", "use_compiled_backward"]

# Norms below this count as zero (no direction): those rows fall back to the straight-through gradient.
_TINY = 1e-12
_COMPILED_CPU = False  # set by use_compiled_backward() once vqaudio._C is loaded


@torch.library.custom_op("vqaudio::rotate_to", mutates_args=())
def rotate_to(e: Tensor, q: Tensor) -> Tensor:
    """``q`` (a copy, in ``e``'s dtype) whose gradient reaches ``e`` by the rotation trick.

    Args:
        e: ``[..., D]`` vectors before quantisation (e.g. encoder outputs), float dtype.
        q: ``[..., D]`` their quantised values (same shape and device).

    Returns:
        ``[..., D]`` equal to ``q``; backward: ``grad_e = lambda R^T grad`` per row (see the module docstring).
    """
    if e.shape != q.shape:
        raise ValueError(f"rotate_to: e {list(e.shape)} and q {list(q.shape)} must have the same shape")
    return q.to(e.dtype, copy=True)


@rotate_to.register_fake
def _rotate_to_fake(e: Tensor, q: Tensor) -> Tensor:
    torch._check(e.shape == q.shape, lambda: "rotate_to: e and q must have the same shape")
    return e.new_empty(e.shape)


def _opposite(dtype: torch.dtype) -> float:
    """``|u + v|^2`` at or below this counts as opposite directions (64 eps of the accumulation dtype)."""
    return 64 * torch.finfo(dtype).eps


def rotation_vjp(e: Tensor, q: Tensor, grad: Tensor) -> Tensor:
    """``lambda R^T grad`` per row of ``[..., D]`` tensors: the backward of :func:`rotate_to`, in ``e``'s dtype."""
    acc = torch.float64 if e.dtype == torch.float64 else torch.float32
    e_, q_, g = e.to(acc), q.to(acc), grad.to(acc)
    e_norm = torch.linalg.vector_norm(e_, dim=-1, keepdim=True)
    q_norm = torch.linalg.vector_norm(q_, dim=-1, keepdim=True)
    defined = (e_norm > _TINY) & (q_norm > _TINY)
    u = e_ / e_norm.clamp_min(_TINY)
    v = q_ / q_norm.clamp_min(_TINY)
    w = u + v  # r = w / |w|; 2 r (r . g) = 2 w (w . g) / |w|^2
    ww = w.square().sum(-1, keepdim=True)
    # (nearly) opposite u and v: the bisector is noise, take r = 0 (R = I + 2 v u^T, the reflection u -> v = -u)
    inv = torch.where(ww > _opposite(acc), 1.0 / ww.clamp_min(_TINY), 0.0)
    rotated = g - (2.0 * inv) * w * (w * g).sum(-1, keepdim=True) + 2.0 * u * (v * g).sum(-1, keepdim=True)
    scale = q_norm / e_norm.clamp_min(_TINY)
    return torch.where(defined, scale * rotated, g).to(e.dtype)


def _setup_context(ctx, inputs, output) -> None:
    e, _ = inputs
    ctx.save_for_backward(e, output)  # the output equals q: q itself need not be kept alive


def _backward(ctx, grad):
    e, q = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None
    if _COMPILED_CPU and e.device.type == "cpu":
        return torch.ops.vqaudio.rotate_to_backward(e, q, grad), None
    return rotation_vjp(e, q, grad), None


rotate_to.register_autograd(_backward, setup_context=_setup_context)


def use_compiled_backward() -> bool:
    """Route CPU backwards to ``vqaudio::rotate_to_backward`` when the loaded extension has it (with a fake
    kernel for tracing); returns whether it does. Called by :mod:`vqaudio.ops` after loading the extension."""
    global _COMPILED_CPU
    try:
        has = torch._C._dispatch_has_kernel_for_dispatch_key("vqaudio::rotate_to_backward", "CPU")
    except RuntimeError:  # no such op: an extension built before it existed, or the reference kernel
        has = False
    if has and not _COMPILED_CPU:
        torch.library.register_fake("vqaudio::rotate_to_backward")(
            lambda e, q, grad: torch.empty_like(e, memory_format=torch.contiguous_format))
    _COMPILED_CPU = has
    return has
