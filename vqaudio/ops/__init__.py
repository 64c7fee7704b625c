"""The nearest-codebook op ``torch.ops.vqaudio.nearest_code`` and the wrapper ``quantize`` (straight-through
estimator or the rotation trick, ``torch.ops.vqaudio.rotate_to`` of ``rotation.py``).

The op comes from the compiled extension ``vqaudio._C`` (C++ CPU kernel, CUDA kernel when built
with CUDA). When the extension is missing, or ``VQAUDIO_KERNEL=reference`` is set, the same op is
defined here with the pure-PyTorch reference (``reference.py``) as its kernel, with a warning
naming the reason. Either way the fake (meta) and autograd kernels below are registered from
Python, as in pytorch/extension-cpp, so the op works under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch

from . import channels, reference, rotation
from .channels import quantize_channels
from .rotation import rotate_to

__all__ = ["KERNEL", "KERNEL_REASON", "nearest_code", "quantize", "lookup", "rotate_to", "quantize_channels", "compiled_ops",
           "has_cuda_kernel", "build_record"]


def _load() -> tuple[str, str]:
    """Return (kernel name, reason): the compiled extension, or the reference fallback."""
    choice = os.environ.get("VQAUDIO_KERNEL", "auto").strip().lower()
    if choice not in ("auto", "compiled", "reference"):
        raise ValueError(f"VQAUDIO_KERNEL must be auto, compiled or reference, not {choice!r}")
    if choice == "reference":
        reason = "VQAUDIO_KERNEL=reference"
    else:
        try:
            from vqaudio import _C  # noqa: F401  (registers the op with the dispatcher)

            return "compiled", "vqaudio._C loaded"
        except ImportError as err:
            if choice == "compiled":
                raise
            reason = f"the compiled extension vqaudio._C could not be loaded ({err})"
            warnings.warn(f"vqaudio: {reason}; using the slow pure-PyTorch reference kernel", stacklevel=2)
    lib = torch.library.Library("vqaudio", "DEF")  # noqa: F841 (kept alive below)
    lib.define("nearest_code(Tensor x, Tensor codebook) -> (Tensor, Tensor)")
    lib.impl("nearest_code", reference.nearest_code, "CompositeExplicitAutograd")
    _LIBRARIES.append(lib)
    return "reference", reason


_LIBRARIES: list[torch.library.Library] = []
KERNEL, KERNEL_REASON = _load()
rotation.use_compiled_backward()


@torch.library.register_fake("vqaudio::nearest_code")
def _nearest_code_fake(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    torch._check(x.dim() == 2 and codebook.dim() == 2, lambda: "nearest_code: x and codebook must be 2-D")
    torch._check(x.shape[1] == codebook.shape[1], lambda: "nearest_code: x and codebook differ in D")
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    n = x.shape[0]
    return x.new_empty(n, dtype=torch.int64), x.new_empty(n, dtype=out_dtype)


def _setup_context(ctx, inputs, output) -> None:
    x, codebook = inputs
    indices, _ = output
    ctx.save_for_backward(x, codebook, indices)


def _backward(ctx, grad_indices, grad_dist2):
    """d dist2[n] / d x[n] = 2 (x[n] - e_k), d dist2[n] / d e_k = -2 (x[n] - e_k), k = indices[n].

    On the CPU, one fused pass (``vqaudio::nearest_code_backward``, csrc/nearest_code_backward.cpp) when
    the extension has it; else the PyTorch form below (the reference).
    """
    x, codebook, indices = ctx.saved_tensors
    grad_x = grad_codebook = None
    if grad_dist2 is None:
        return None, None
    if _COMPILED_BACKWARD and x.device.type == "cpu":
        need_x, need_codebook = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_codebook = torch.ops.vqaudio.nearest_code_backward(grad_dist2, x, codebook, indices, need_x,
                                                                         need_codebook)
        return (grad_x if need_x else None), (grad_codebook if need_codebook else None)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    diff = (x.to(acc) - codebook.to(acc)[indices]) * (2.0 * grad_dist2.to(acc)).unsqueeze(1)
    if ctx.needs_input_grad[0]:
        grad_x = diff.to(x.dtype)
    if ctx.needs_input_grad[1]:
        grad_codebook = torch.zeros(codebook.shape, dtype=acc, device=codebook.device)
        grad_codebook = grad_codebook.index_add(0, indices, diff, alpha=-1.0).to(codebook.dtype)
    return grad_x, grad_codebook


def compiled_ops(names: tuple[str, ...], fallback: str) -> bool:
    """Whether the compiled extension defines every op in ``names`` (``vqaudio::NAME``). An extension built before
    they existed lacks them: a warning saying ``fallback`` (what runs instead), or an ImportError under
    ``VQAUDIO_KERNEL=compiled``."""
    if KERNEL != "compiled":
        return False
    try:
        for name in names:
            getattr(torch.ops.vqaudio, name)
    except (AttributeError, RuntimeError):
        message = f"vqaudio._C predates the {'/'.join(names)} op(s) (rebuild it); {fallback}"
        if os.environ.get("VQAUDIO_KERNEL", "").strip().lower() == "compiled":
            raise ImportError(f"VQAUDIO_KERNEL=compiled but {message}") from None
        warnings.warn(f"vqaudio: {message}", stacklevel=3)
        return False
    return True


def _has_cpu_kernel(op: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
    except RuntimeError:  # no such op: the reference kernel, or an extension built before the op existed
        return False


_COMPILED_BACKWARD = _has_cpu_kernel("vqaudio::nearest_code_backward")
if _COMPILED_BACKWARD:

    @torch.library.register_fake("vqaudio::nearest_code_backward")
    def _nearest_code_backward_fake(grad_dist2, x, codebook, indices, x_grad, codebook_grad):
        return (x.new_empty(x.shape if x_grad else (0,)), codebook.new_empty(codebook.shape if codebook_grad else (0,)))


torch.library.register_autograd("vqaudio::nearest_code", _backward, setup_context=_setup_context)
_CHANNELS_COMPILED = _has_cpu_kernel("vqaudio::quantize_channels")
channels.register(defined=_CHANNELS_COMPILED, compiled_cpu=_CHANNELS_COMPILED)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``indices: int64[N]``, ``dist2: float32[N]`` (float64 for float64) of the nearest codebook rows.

    ``x``: ``[N, D]``; ``codebook``: ``[K, D]``, same dtype and device. Ties go to the lowest index.
    ``dist2`` is differentiable: its gradient reaches ``x`` and the selected codebook rows.
    """
    return torch.ops.vqaudio.nearest_code(x, codebook)


@torch.library.custom_op("vqaudio::straight_through", mutates_args=())
def straight_through(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Forward: ``codebook[indices]`` in ``x``'s dtype. Backward: the gradient goes to ``x`` unchanged (the STE)."""
    return codebook[indices].to(x.dtype)


@straight_through.register_fake
def _straight_through_fake(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return x.new_empty((indices.shape[0], codebook.shape[1]))


def _straight_through_backward(ctx, grad_quantized):
    return grad_quantized, None, None


straight_through.register_autograd(_straight_through_backward)


def quantize(
    x: torch.Tensor, codebook: torch.Tensor, rotation_trick: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each row of ``x`` by its nearest codebook row, with the straight-through estimator or the rotation trick.

    Args:
        x: ``[N, D]`` latents (float32/float64/float16/bfloat16).
        codebook: ``[K, D]`` with the same dtype and device.
        rotation_trick: the gradient reaches ``x`` through the rotation and rescaling of each row onto
            its code (:func:`rotate_to`) instead of the identity.

    Returns:
        ``quantized``: ``[N, D]`` equal to ``codebook[indices]``; its gradient flows to ``x`` (identity, or
        rotated), and ``codebook`` gets no gradient through it (codebook and commitment losses are
        computed by the quantiser layer). ``indices``: int64 ``[N]``. ``dist2``: ``[N]`` squared
        distances (differentiable, see :func:`nearest_code`).
    """
    indices, dist2 = torch.ops.vqaudio.nearest_code(x, codebook)
    return lookup(x, codebook, indices, rotation_trick), indices, dist2


def lookup(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor, rotation_trick: bool = False) -> torch.Tensor:
    """``codebook[indices]`` ``[N, D]`` in ``x``'s dtype, whose gradient reaches ``x [N, D]`` straight through
    (the identity) or by the rotation trick; ``codebook`` gets no gradient through it."""
    if rotation_trick:
        return rotate_to(x, codebook.detach()[indices])
    return straight_through(x, codebook.detach(), indices)


def has_cuda_kernel() -> bool:
    """Whether the dispatcher holds a CUDA kernel for ``vqaudio::nearest_code``."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("vqaudio::nearest_code", "CUDA")


def build_record() -> dict | None:
    """What setup.py recorded when it built ``vqaudio._C``: ``{"cuda": bool, "reason": str, "cuda_home": ...,
    "arch_list": ...}``; None when there is no extension or it was built without a record."""
    spec = importlib.util.find_spec("vqaudio._C")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).with_name("_C.build.json")  # RECORD_NAME in setup.py
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
