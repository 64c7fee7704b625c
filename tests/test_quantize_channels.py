"""torch.ops.vqaudio.quantize_channels: the fused channels-first search + lookup and its one-pass backward,
against the composition of nearest_code, lookup and rotate_to on rows; fake kernels and opcheck."""

from __future__ import annotations

import pytest
import torch

from vqaudio import ops
from vqaudio.ops import channels


def rows_of(z: torch.Tensor) -> torch.Tensor:
    return z.transpose(1, 2).reshape(-1, z.shape[1])


def composed(z: torch.Tensor, codebook: torch.Tensor, rotation_trick: bool):
    """The same quantisation from the row ops (each tested on its own)."""
    b, d, t = z.shape
    x = rows_of(z)
    indices, dist2 = ops.nearest_code(x, codebook)
    quantized = ops.lookup(x, codebook, indices, rotation_trick)
    return quantized.view(b, t, d).transpose(1, 2), indices.view(b, t), dist2.view(b, t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rotation_trick", [False, True])
@pytest.mark.parametrize("shape", [(3, 8, 37), (2, 64, 48), (1, 5, 1)])
def test_matches_the_row_ops_forward_and_backward(dtype, rotation_trick, shape):
    torch.manual_seed(0)
    b, d, t = shape
    z = torch.randn(b, d, t, dtype=dtype, requires_grad=True)
    codebook = torch.randn(40, d, dtype=dtype, requires_grad=True)
    quantized, indices, dist2 = ops.quantize_channels(z, codebook, rotation_trick)
    ref_q, ref_i, ref_d = composed(z, codebook, rotation_trick)
    assert quantized.is_contiguous() and quantized.shape == z.shape and indices.shape == dist2.shape == (b, t)
    assert torch.equal(indices, ref_i) and torch.equal(quantized, ref_q)
    torch.testing.assert_close(dist2, ref_d)
    grad_q, grad_d = torch.randn_like(quantized), torch.randn_like(dist2)
    got = torch.autograd.grad([quantized, dist2], [z, codebook], [grad_q, grad_d])
    want = torch.autograd.grad([ref_q, ref_d], [z, codebook], [grad_q, grad_d])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tol)
    assert got[0].is_contiguous()  # channels-first, like z: no transposed copy on the way back


@pytest.mark.parametrize("rotation_trick", [False, True])
def test_compiled_backward_equals_the_reference(rotation_trick):
    if not channels_compiled():
        pytest.skip("the extension has no quantize_channels CPU kernels")
    torch.manual_seed(1)
    z, codebook = torch.randn(4, 16, 50), torch.randn(30, 16)
    _, indices, dist2 = ops.quantize_channels(z, codebook, rotation_trick)
    args = (torch.randn_like(z), torch.randn_like(dist2), z, codebook, indices, rotation_trick)
    for need in [(True, True), (True, False), (False, True)]:
        got = torch.ops.vqaudio.quantize_channels_backward(*args, *need)
        want = channels.reference_backward(*args, *need)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def channels_compiled() -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key("vqaudio::quantize_channels", "CPU")


def test_dist2_gradient_is_the_true_derivative():
    torch.manual_seed(2)
    z = torch.randn(2, 6, 11, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, e: ops.quantize_channels(a, e, True)[2], (z, codebook))


def test_quantized_gives_the_codebook_no_gradient():
    z, codebook = torch.randn(2, 4, 7), torch.randn(5, 4, requires_grad=True)
    quantized = ops.quantize_channels(z, codebook, False)[0]
    (grad,) = torch.autograd.grad(quantized.sum(), codebook, allow_unused=True)
    assert grad is None or not grad.any()


def test_empty_and_bad_inputs():
    codebook = torch.randn(5, 4)
    q, i, d = ops.quantize_channels(torch.randn(2, 4, 0), codebook, False)
    assert q.shape == (2, 4, 0) and i.shape == d.shape == (2, 0)
    with pytest.raises((ValueError, RuntimeError), match="D = 3"):
        ops.quantize_channels(torch.randn(2, 3, 5), codebook, False)
    with pytest.raises((ValueError, RuntimeError), match="3-D"):
        ops.quantize_channels(torch.randn(4, 5), codebook, False)
    with pytest.raises((ValueError, RuntimeError), match="NaN or Inf"):
        ops.quantize_channels(torch.full((1, 4, 3), float("nan")), codebook, False)


@pytest.mark.parametrize("rotation_trick", [False, True])
def test_opcheck(rotation_trick):
    torch.manual_seed(3)
    z = torch.randn(2, 5, 9, requires_grad=True)
    codebook = torch.randn(7, 5, requires_grad=True)
    # opcheck's AOT check sums every output into one accumulator, which fails on the int64 indices
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.vqaudio.quantize_channels.default, (z, codebook, rotation_trick), test_utils=utils)
    if channels_compiled():
        _, indices, dist2 = ops.quantize_channels(z.detach(), codebook.detach(), rotation_trick)
        args = (torch.randn(2, 5, 9), torch.randn_like(dist2), z.detach(), codebook.detach(), indices, rotation_trick,
                True, True)
        torch.library.opcheck(torch.ops.vqaudio.quantize_channels_backward.default, args)
