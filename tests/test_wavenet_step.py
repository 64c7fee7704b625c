"""The compiled prior-generation ops (vqaudio::wavenet_step_, vqaudio::wavenet_head) against their references."""

from __future__ import annotations

import math

import pytest
import torch

from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior
from vqaudio.ops.wavenet_step import has_compiled_step, wavenet_head_reference, wavenet_step_reference

compiled = pytest.mark.skipif(not has_compiled_step(), reason="compiled wavenet ops not loaded (no vqaudio._C, or VQAUDIO_KERNEL=reference)")


def _step_args(B: int, R: int, G: int, dilations: list[int], k: int, label_rows: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    L, total = len(dilations), sum(d * (k - 1) for d in dilations)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return (r(B, R), r(total, B, R), 0, dilations, k, r(L, k * R, G) / math.sqrt(k * R), r(L, label_rows, G),
            r(L, G // 2, R) / math.sqrt(G), r(L, R), math.sqrt(0.5), torch.zeros(B, L, G // 2))


@compiled
@pytest.mark.parametrize(("B", "k", "label_rows"), [(1, 2, 1), (3, 3, 3), (40, 2, 40), (19, 4, 1)])
def test_step_matches_reference(B: int, k: int, label_rows: int) -> None:
    """Several consecutive steps (ring buffers wrap, negative tap offsets at small t); batches over the grain."""
    args = list(_step_args(B, 8, 12, [1, 2, 4, 1, 3], k, label_rows))
    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    g = torch.Generator().manual_seed(1)
    for t in range(13):
        x = torch.randn(B, 8, generator=g)
        args[0], ref[0], args[2], ref[2] = x, x.clone(), t, t
        out = torch.ops.vqaudio.wavenet_step_(*args)
        expected = wavenet_step_reference(*ref)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(args[1], ref[1], atol=1e-5, rtol=1e-5)  # every layer's ring buffer
        torch.testing.assert_close(args[10], ref[10], atol=1e-5, rtol=1e-5)  # gated activations


@compiled
def test_step_accepts_a_broadcast_input() -> None:
    args = list(_step_args(4, 8, 12, [1, 2], 2, 1))
    args[0] = torch.randn(8).expand(4, -1)  # the start vector of every sequence: stride 0
    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    torch.testing.assert_close(torch.ops.vqaudio.wavenet_step_(*args), wavenet_step_reference(*ref), atol=1e-5, rtol=0)


@compiled
@pytest.mark.parametrize("B", [1, 37])
def test_head_matches_reference(B: int) -> None:
    g = torch.Generator().manual_seed(2)
    H, H1, K = 16, 24, 50
    args = (torch.randn(B, H, generator=g), torch.randn(H, generator=g), torch.randn(H, H1, generator=g),
            torch.randn(H1, generator=g), torch.randn(H1, K, generator=g), torch.randn(K, generator=g))
    torch.testing.assert_close(torch.ops.vqaudio.wavenet_head(*args), wavenet_head_reference(*args), atol=1e-4, rtol=1e-5)


@compiled
def test_opcheck() -> None:
    torch.library.opcheck(torch.ops.vqaudio.wavenet_step_.default, _step_args(3, 8, 12, [1, 2, 4], 2, 3))
    g = torch.Generator().manual_seed(3)
    head = (torch.randn(2, 8, generator=g), torch.randn(8, generator=g), torch.randn(8, 6, generator=g),
            torch.randn(6, generator=g), torch.randn(6, 5, generator=g), torch.randn(5, generator=g))
    torch.library.opcheck(torch.ops.vqaudio.wavenet_head.default, head)


@compiled
def test_bad_inputs_are_named() -> None:
    args = list(_step_args(2, 8, 12, [1, 2], 2, 1))
    bad = list(args)
    bad[0] = args[0].double()
    with pytest.raises(TypeError, match="wavenet_step_: x must be float32"):
        torch.ops.vqaudio.wavenet_step_(*bad)
    bad = list(args)
    bad[1] = args[1][:2]
    with pytest.raises(ValueError, match=r"wavenet_step_: buffer must be \[3, 2, 8\]"):
        torch.ops.vqaudio.wavenet_step_(*bad)
    bad = list(args)
    bad[1] = args[1].transpose(1, 2).contiguous().transpose(1, 2)
    with pytest.raises(ValueError, match="must be contiguous"):
        torch.ops.vqaudio.wavenet_step_(*bad)
    with pytest.raises(ValueError, match="wavenet_head: shapes do not chain"):
        torch.ops.vqaudio.wavenet_head(torch.randn(1, 4), torch.randn(4), torch.randn(5, 6), torch.randn(6),
                                       torch.randn(6, 3), torch.randn(3))


def test_head_keeps_gradients_outside_inference_mode() -> None:
    """With autograd on, the head takes the differentiable reference path (the compiled kernel has no backward)."""
    model = WaveNetPrior(WaveNetConfig(codebook_size=7, n_q=2, residual_channels=4, gate_channels=4, skip_channels=4,
                                       head_channels=8, layers=2, cycle=2))
    logits = model.stage_head(torch.randn(3, 8), 1)
    logits.sum().backward()
    assert model.head_w2.grad is not None and model.head_w2.grad[1].abs().sum() > 0


def test_step_reference_is_differentiable() -> None:
    args = list(_step_args(2, 8, 12, [1, 2], 2, 1))
    args[0].requires_grad_(True)
    args[5].requires_grad_(True)
    out = wavenet_step_reference(*args)
    out = wavenet_step_reference(out, *args[1:2], 1, *args[3:])
    out.sum().backward()
    assert args[0].grad.abs().sum() > 0 and args[5].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="t must be >= 0"):
        wavenet_step_reference(*args[:2], -1, *args[3:])


def _float_model(n_labels: int) -> WaveNetPrior:
    torch.manual_seed(4)
    model = WaveNetPrior(WaveNetConfig(codebook_size=13, n_q=3, residual_channels=8, gate_channels=12, skip_channels=10,
                                       head_channels=16, kernel_size=3, layers=6, cycle=3, n_labels=n_labels)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.mark.parametrize("n_labels", [0, 3])
def test_generation_path_matches_full_forward(n_labels: int) -> None:
    """float32 under inference mode (the compiled ops when built): cached logits == teacher-forced forward."""
    model = _float_model(n_labels)
    B, Q, F = 3, 3, 36
    codes = torch.randint(0, 13, (B, Q, F))
    label = torch.tensor([2, 0, 1]) if n_labels else None
    full = model(codes, label)
    with torch.inference_mode():
        for P in (0, 1, 7):
            state, ctx = model.init_state(B, label, codes[:, :, :P] if P else None)
            for t in range(P, F):
                acc = ctx
                for q in range(Q):
                    torch.testing.assert_close(model.stage_head(acc, q), full[:, q, t], atol=2e-5, rtol=0)
                    acc = acc + model.stage_embedding(codes[:, q, t], q)
                ctx = model.step(state, model.embed_frame(codes[:, :, t]))


def test_a_scalar_label_is_one_label_for_the_batch() -> None:
    model = _float_model(3)
    codes = torch.randint(0, 13, (2, 3, 5))
    with torch.inference_mode():
        _, ctx0 = model.init_state(2, torch.tensor(1), codes)
        _, ctx1 = model.init_state(2, torch.tensor([1, 1]), codes)
        torch.testing.assert_close(ctx0, ctx1)
        with pytest.raises(ValueError, match="label must hold 1 or 2 ids"):
            model.init_state(2, torch.tensor([0, 1, 2]))
