"""The WaveNet prior's cached generation step as two ops: ``vqaudio::wavenet_step_`` and ``vqaudio::wavenet_head``.

``wavenet_step_`` runs one frame through every layer of the conv stack, ``wavenet_head`` computes one stage's
logits from the frame context. Their compiled CPU kernels (``csrc/wavenet_step.cpp``) replace about seven
small ATen ops per layer and five per stage, whose dispatch cost dominates generation at small batch.
:func:`wavenet_step_reference` and :func:`wavenet_head_reference` are the same contracts in PyTorch ops, used
for every other device or dtype, when the extension is missing or ``VQAUDIO_KERNEL=reference`` is set, and
by the tests.

Shapes (B batch, R residual channels, G gate channels, L layers, k kernel size):
    x [B, R]; buffer [sum_l d_l (k-1), B, R], layer l's ring buffer = rows off_l .. off_l + d_l (k-1);
    conv_w [L, k R, G] (tap-major: tap i multiplies x_{t-(k-1-i) d}); conv_b [L, 1 or B, G];
    res_w [L, G/2, R], res_b [L, R] (pre-scaled by ``residual_scale``); gated [B, L, G/2] (written); t >= 0.

The compiled kernels have no backward: :func:`wavenet_step` and :func:`wavenet_head` call them only with
autograd off (inference mode or no_grad) and every tensor float32 on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqaudio import ops

__all__ = ["wavenet_step", "wavenet_step_reference", "wavenet_head", "wavenet_head_reference", "has_compiled_step"]


_COMPILED = ops.compiled_ops(("wavenet_step_", "wavenet_head"), "prior generation uses the slower PyTorch ops")

if _COMPILED:

    @torch.library.register_fake("vqaudio::wavenet_step_")
    def _wavenet_step_fake(x, buffer, t, dilations, kernel_size, conv_w, conv_b, res_w, res_b, residual_scale, gated):
        return x.new_empty(x.shape)

    @torch.library.register_fake("vqaudio::wavenet_head")
    def _wavenet_head_fake(acc, stage_bias, w1, b1, w2, b2):
        return acc.new_empty(acc.shape[0], w2.shape[1])


def has_compiled_step() -> bool:
    """Whether float32 CPU steps and heads run in the compiled kernels."""
    return _COMPILED


def _use_compiled(*tensors: Tensor) -> bool:
    """The compiled kernels take float32 CPU tensors and have no backward."""
    return (_COMPILED and not torch.is_grad_enabled()
            and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors))


def wavenet_step_reference(x: Tensor, buffer: Tensor, t: int, dilations: list[int], kernel_size: int, conv_w: Tensor,
                           conv_b: Tensor, res_w: Tensor, res_b: Tensor, residual_scale: float, gated: Tensor) -> Tensor:
    """The contract in PyTorch ops (see the module docstring); updates ``buffer`` and ``gated`` in place."""
    if t < 0:
        raise ValueError(f"wavenet_step_: t must be >= 0, got {t}")
    k, off = kernel_size, 0
    for i, d in enumerate(dilations):
        n = d * (k - 1)
        ring = buffer[off : off + n]
        off += n
        taps = [ring[(t - (k - 1 - j) * d) % n] for j in range(k - 1)] + [x]
        a = torch.addmm(conv_b[i], torch.cat(taps, dim=1), conv_w[i])
        ring[t % n].copy_(x)
        ta, sb = a.chunk(2, dim=1)
        g = torch.tanh(ta) * torch.sigmoid(sb)
        gated[:, i].copy_(g)
        x = torch.add(torch.addmm(res_b[i], g, res_w[i]), x, alpha=residual_scale)
    return x


def wavenet_step(x: Tensor, buffer: Tensor, t: int, dilations: list[int], kernel_size: int, conv_w: Tensor,
                 conv_b: Tensor, res_w: Tensor, res_b: Tensor, residual_scale: float, gated: Tensor) -> Tensor:
    """x_next [B, R] after all layers; the compiled kernel for float32 CPU tensors, else the reference."""
    args = (x, buffer, t, dilations, kernel_size, conv_w, conv_b, res_w, res_b, residual_scale, gated)
    if _use_compiled(x, buffer, conv_w, conv_b, res_w, res_b, gated):
        return torch.ops.vqaudio.wavenet_step_(*args)
    return wavenet_step_reference(*args)


def wavenet_head_reference(acc: Tensor, stage_bias: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """Logits [B, K] = relu(relu(acc + stage_bias) @ w1 + b1) @ w2 + b2; acc [B, H], w1 [H, H1], w2 [H1, K]."""
    return torch.addmm(b2, torch.relu(torch.addmm(b1, torch.relu(acc + stage_bias), w1)), w2)


def wavenet_head(acc: Tensor, stage_bias: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """One stage's logits (see :func:`wavenet_head_reference`); the compiled kernel for float32 CPU tensors."""
    if _use_compiled(acc, stage_bias, w1, b1, w2, b2):
        return torch.ops.vqaudio.wavenet_head(acc, stage_bias, w1, b1, w2, b2)
    return wavenet_head_reference(acc, stage_bias, w1, b1, w2, b2)
