"""Nearest-code quantisation of channels-first latents as one op: ``torch.ops.vqaudio.quantize_channels``.

``quantize_channels(z [B, D, T], codebook [K, D], rotation_trick) -> (quantized [B, D, T], indices [B, T],
dist2 [B, T])`` is :func:`vqaudio.ops.nearest_code` on the frames ``z[b, :, t]`` followed by the lookup of
:func:`vqaudio.ops.lookup`, without transposing ``z`` into rows: ``quantized[b, :, t] = codebook[indices[b, t]]``
(contiguous, channels-first), ``dist2`` the squared distances. Its registered backward is the sum of theirs,

    grad_z = G(grad_quantized) + 2 grad_dist2 (z - e),   grad_codebook[k] = -sum_{frames coded k} 2 grad_dist2 (z - e)

with ``G`` the identity (straight-through) or the rotation trick's ``lambda R^T`` (:mod:`.rotation`);
``quantized`` gives the codebook no gradient. On the CPU, forward and backward are the compiled kernels
of ``csrc/quantize_channels.cpp`` (one pass each, reading ``z`` in place); elsewhere, or without the
extension, the PyTorch composition below (the reference).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rotation import rotation_vjp

__all__ = ["quantize_channels", "reference_forward", "reference_backward", "register"]


def quantize_channels(z: Tensor, codebook: Tensor, rotation_trick: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(quantized [B, D, T], indices int64 [B, T], dist2 [B, T])`` of ``z [B, D, T]`` and ``codebook [K, D]``
    (same dtype and device); see the module docstring for the gradients."""
    return torch.ops.vqaudio.quantize_channels(z, codebook, rotation_trick)


def reference_forward(z: Tensor, codebook: Tensor, rotation_trick: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The op on rows: :func:`nearest_code` of the transposed frames, then the lookup."""
    if z.dim() != 3:
        raise ValueError(f"quantize_channels: z must be 3-D [B, D, T], got shape {list(z.shape)}")
    b, d, t = z.shape
    indices, dist2 = torch.ops.vqaudio.nearest_code(z.transpose(1, 2).reshape(b * t, d), codebook)
    quantized = codebook[indices].to(z.dtype).view(b, t, d).transpose(1, 2).contiguous()
    return quantized, indices.view(b, t), dist2.view(b, t)


def reference_backward(grad_quantized: Tensor, grad_dist2: Tensor, z: Tensor, codebook: Tensor, indices: Tensor,
                       rotation_trick: bool, z_grad: bool, codebook_grad: bool) -> tuple[Tensor, Tensor]:
    """``(grad_z, grad_codebook)`` in PyTorch ops (an output not asked for is empty)."""
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    b, d, t = z.shape
    x = z.transpose(1, 2).reshape(b * t, d).to(acc)
    e = codebook.to(acc)[indices.reshape(-1)]
    diff = (x - e) * (2.0 * grad_dist2.reshape(-1).to(acc)).unsqueeze(1)
    grad_z, grad_codebook = z.new_empty(0), codebook.new_empty(0)
    if z_grad:
        g = grad_quantized.transpose(1, 2).reshape(b * t, d).to(acc)
        gx = rotation_vjp(x, e, g) if rotation_trick else g
        grad_z = (gx + diff).view(b, t, d).transpose(1, 2).to(z.dtype).contiguous()
    if codebook_grad:
        grad_codebook = torch.zeros(codebook.shape, dtype=acc, device=codebook.device)
        grad_codebook = grad_codebook.index_add(0, indices.reshape(-1), diff, alpha=-1.0).to(codebook.dtype)
    return grad_z, grad_codebook


def _fake(z: Tensor, codebook: Tensor, rotation_trick: bool) -> tuple[Tensor, Tensor, Tensor]:
    torch._check(z.dim() == 3 and codebook.dim() == 2, lambda: "quantize_channels: z [B, D, T], codebook [K, D]")
    torch._check(z.shape[1] == codebook.shape[1], lambda: "quantize_channels: z and codebook differ in D")
    b, _, t = z.shape
    dist_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    return (torch.empty_like(z, memory_format=torch.contiguous_format), z.new_empty((b, t), dtype=torch.int64),
            z.new_empty((b, t), dtype=dist_dtype))


def _backward_fake(grad_quantized, grad_dist2, z, codebook, indices, rotation_trick, z_grad, codebook_grad):
    return (z.new_empty(z.shape if z_grad else (0,)), codebook.new_empty(codebook.shape if codebook_grad else (0,)))


def _setup_context(ctx, inputs, output) -> None:
    z, codebook, rotation_trick = inputs
    ctx.rotation_trick = rotation_trick
    ctx.save_for_backward(z, codebook, output[1])


def _make_backward(compiled_cpu: bool):
    def backward(ctx, grad_quantized, grad_indices, grad_dist2):
        z, codebook, indices = ctx.saved_tensors
        need_z, need_codebook = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_quantized is None and grad_dist2 is None) or not (need_z or need_codebook):
            return None, None, None
        if grad_quantized is None:
            grad_quantized = torch.zeros_like(z)
        if grad_dist2 is None:
            grad_dist2 = torch.zeros(indices.shape, dtype=torch.float64 if z.dtype == torch.float64 else torch.float32,
                                     device=z.device)
        fn = torch.ops.vqaudio.quantize_channels_backward if compiled_cpu and z.device.type == "cpu" else reference_backward
        grad_z, grad_codebook = fn(grad_quantized, grad_dist2, z, codebook, indices, ctx.rotation_trick, need_z,
                                   need_codebook)
        return (grad_z if need_z else None), (grad_codebook if need_codebook else None), None

    return backward


_LIBS: list[torch.library.Library] = []  # kept alive: their registrations last as long as they do


def register(defined: bool, compiled_cpu: bool) -> None:
    """Register the op's fake, autograd and reference kernels (called once by :mod:`vqaudio.ops`).

    ``defined``: whether the loaded extension defines the op (else it is defined here, with the reference as
    its kernel everywhere); ``compiled_cpu``: whether the extension holds the CPU kernels of the op and its
    backward. The reference serves every device without its own kernel (the CPU's comes first).
    """
    lib = torch.library.Library("vqaudio", "FRAGMENT")
    if not defined:
        lib.define("quantize_channels(Tensor z, Tensor codebook, bool rotation_trick) -> (Tensor, Tensor, Tensor)")
    lib.impl("quantize_channels", reference_forward, "CompositeExplicitAutograd")
    _LIBS.append(lib)
    if compiled_cpu:
        torch.library.register_fake("vqaudio::quantize_channels_backward")(_backward_fake)
    torch.library.register_fake("vqaudio::quantize_channels")(_fake)
    torch.library.register_autograd("vqaudio::quantize_channels", _make_backward(compiled_cpu),
                                    setup_context=_setup_context)
