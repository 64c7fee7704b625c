"""The rotation-trick op ``vqaudio::rotate_to``: its registered backward against the paper's equations.

The direct implementation below builds, per row, the two Householder matrices of Fifty et al. (ICLR 2025,
section 4.2) as explicit D x D tensors, ``R = (I - 2 v v^T)(I - 2 r r^T)``, and applies ``q~ = lambda R e``
with ``R`` and ``lambda = ||q||/||e||`` computed from a frozen copy of ``e`` (the paper's stop-gradient).
"""

from __future__ import annotations

import pytest
import torch

import vqaudio.ops as ops
from vqaudio.ops.rotation import rotate_to, rotation_vjp

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def householder_rotation(e: torch.Tensor, e_frame: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``lambda R e`` with ``R`` and ``lambda`` built from ``e_frame`` and ``q`` (rows of ``[N, D]``), explicitly."""
    eye = torch.eye(e.shape[1], dtype=e.dtype)
    u = e_frame / e_frame.norm(dim=1, keepdim=True)
    v = q / q.norm(dim=1, keepdim=True)
    r = (u + v) / (u + v).norm(dim=1, keepdim=True)
    h_r = eye - 2 * r[:, :, None] * r[:, None, :]  # [N, D, D] reflection across r's normal plane
    h_v = eye - 2 * v[:, :, None] * v[:, None, :]
    rotation = h_v @ h_r
    scale = q.norm(dim=1, keepdim=True) / e_frame.norm(dim=1, keepdim=True)
    return scale * (rotation @ e[:, :, None])[:, :, 0]


def rows(n: int, d: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), 2 * torch.randn(n, d, generator=g, dtype=dtype)


def test_householder_product_maps_e_onto_q():
    e, q = rows(20, 7, 0)
    torch.testing.assert_close(householder_rotation(e, e, q), q)


@pytest.mark.parametrize("dtype", FLOATS)
def test_forward_is_q_exactly(dtype):
    e, q = rows(50, 9, 1, torch.float32)
    e, q = e.to(dtype), q.to(dtype)
    out = rotate_to(e, q)
    assert out.dtype == dtype and torch.equal(out, q)
    assert out.data_ptr() != q.data_ptr()  # a copy, not an alias


@pytest.mark.parametrize("n,d", [(1, 2), (17, 3), (6, 32)])
def test_backward_is_the_jacobian_of_the_papers_equation_gradcheck(n, d):
    """gradcheck in float64: the op's registered backward (analytic) against finite differences of the
    explicit Householder implementation ``lambda R e`` with the frame frozen at the evaluation point."""
    e0, q = rows(n, d, 2 + d)

    def surrogate(e: torch.Tensor) -> torch.Tensor:
        # value: the paper's lambda R e (numerical Jacobian lambda R); gradient: the op's backward only
        op = rotate_to(e, q)
        return householder_rotation(e, e0, q).detach() + (op - op.detach())

    assert torch.autograd.gradcheck(surrogate, (e0.clone().requires_grad_(True),), eps=1e-6, atol=1e-8)


def test_vjp_equals_autograd_of_the_householder_implementation():
    e, q = rows(200, 16, 3)
    g = torch.randn(200, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    e1 = e.clone().requires_grad_(True)
    rotate_to(e1, q).backward(g)
    e2 = e.clone().requires_grad_(True)
    householder_rotation(e2, e.clone(), q).backward(g)
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-12, atol=1e-12)


def test_rotation_preserves_gradient_norm_up_to_the_scale_and_special_cases():
    e, q = rows(100, 8, 5)
    g = torch.randn(100, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    grad = rotation_vjp(e, q, g)
    torch.testing.assert_close(grad.norm(dim=1), g.norm(dim=1) * q.norm(dim=1) / e.norm(dim=1))
    # q along e: no rotation, only the rescaling ||q|| / ||e||
    torch.testing.assert_close(rotation_vjp(e, 3 * e, g), 3 * g)
    # a zero row (no direction) passes the gradient straight through
    e[0] = 0
    q[1] = 0
    grad = rotation_vjp(e, q, g)
    assert torch.equal(grad[0], g[0]) and torch.equal(grad[1], g[1])
    # the gradient of a row only depends on that row
    torch.testing.assert_close(grad[2:], rotation_vjp(e[2:], q[2:], g[2:]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_backward_is_computed_in_float32(dtype):
    e, q = rows(30, 12, 7, torch.float32)
    g = torch.randn(30, 12, generator=torch.Generator().manual_seed(8))
    expected = rotation_vjp(e.to(dtype).float(), q.to(dtype).float(), g.to(dtype).float())
    e_h = e.to(dtype).requires_grad_(True)
    rotate_to(e_h, q.to(dtype)).backward(g.to(dtype))
    assert e_h.grad.dtype == dtype
    torch.testing.assert_close(e_h.grad, expected.to(dtype))


def test_batched_shapes_rotate_along_the_last_dim():
    e, q = rows(24, 5, 9)
    g = torch.randn(24, 5, dtype=torch.float64)
    flat = rotation_vjp(e, q, g)
    e3 = e.view(4, 6, 5).clone().requires_grad_(True)
    rotate_to(e3, q.view(4, 6, 5)).backward(g.view(4, 6, 5))
    torch.testing.assert_close(e3.grad.reshape(24, 5), flat)
    # a transposed (non-contiguous) view
    et = e.view(4, 6, 5).transpose(0, 1).clone().requires_grad_(True)
    qt = q.view(4, 6, 5).transpose(0, 1)
    rotate_to(et, qt).backward(g.view(4, 6, 5).transpose(0, 1))
    torch.testing.assert_close(et.grad.transpose(0, 1).reshape(24, 5), flat)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    e, q = rows(40, 6, 10, dtype)
    torch.library.opcheck(torch.ops.vqaudio.rotate_to.default, (e.requires_grad_(True), q))
    torch.library.opcheck(torch.ops.vqaudio.rotate_to.default, (e.detach()[:0], q[:0]))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        rotate_to(torch.zeros(3, 4), torch.zeros(3, 5))


def test_quantize_with_rotation_trick_forward_codes_and_rotated_gradient():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(16, 8, generator=g, dtype=torch.float64, requires_grad=True)
    q, idx, _ = ops.quantize(x, e, rotation_trick=True)
    assert torch.equal(q, e.detach()[idx])
    upstream = torch.randn(64, 8, generator=g, dtype=torch.float64)
    q.backward(upstream)
    torch.testing.assert_close(x.grad, rotation_vjp(x.detach(), e.detach()[idx], upstream))
    assert e.grad is None  # the code gets no gradient through the rotation


def test_quantize_with_rotation_trick_under_torch_compile_fullgraph():
    g = torch.Generator().manual_seed(12)
    e = torch.randn(32, 6, generator=g)

    def step(x: torch.Tensor) -> torch.Tensor:
        q, _, dist2 = ops.quantize(x, e, rotation_trick=True)
        return (q * q).sum() + 0.25 * dist2.sum()

    x1 = torch.randn(40, 6, generator=g, requires_grad=True)
    step(x1).backward()
    for backend in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        x2 = x1.detach().clone().requires_grad_()
        torch.compile(step, fullgraph=True, backend=backend)(x2).backward()
        torch.testing.assert_close(x2.grad, x1.grad, msg=backend)


# ------------------------------------------------------------------ the compiled CPU backward kernel
compiled_backward = pytest.mark.skipif(
    not torch._C._dispatch_has_kernel_for_dispatch_key("vqaudio::rotate_to_backward", "CPU")
    if hasattr(torch.ops.vqaudio, "rotate_to_backward") else True,
    reason="vqaudio._C without rotate_to_backward (reference kernel or an older build)")


@compiled_backward
@pytest.mark.parametrize("dtype", FLOATS)
def test_compiled_backward_matches_the_reference(dtype):
    e, q = rows(300, 37, 13, torch.float32)
    g = torch.randn(300, 37, generator=torch.Generator().manual_seed(14))
    e[0], q[1] = 0, 0  # zero rows: straight through
    q[2] = -3 * e[2]  # opposite: r = 0
    q[3] = -e[3] + 1e-4 * torch.randn(37, generator=torch.Generator().manual_seed(15))  # nearly opposite
    e, q, g = e.to(dtype), q.to(dtype), g.to(dtype)
    out = torch.ops.vqaudio.rotate_to_backward(e, q, g)
    ref = rotation_vjp(e, q, g)
    assert out.dtype == dtype
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)  # row 3 is ill-conditioned (nearly opposite)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    assert torch.equal(out[0], g[0]) and torch.equal(out[1], g[1])


@compiled_backward
def test_compiled_backward_strides_shapes_and_opcheck():
    e, q = rows(24, 5, 16, torch.float32)
    g = torch.randn(24, 5)
    flat = torch.ops.vqaudio.rotate_to_backward(e, q, g)
    e3, q3, g3 = (t.view(4, 6, 5).transpose(0, 1) for t in (e, q, g))  # non-contiguous
    out = torch.ops.vqaudio.rotate_to_backward(e3, q3, g3)
    torch.testing.assert_close(out.transpose(0, 1).reshape(24, 5), flat)
    assert torch.ops.vqaudio.rotate_to_backward(e[:0], q[:0], g[:0]).shape == (0, 5)
    with pytest.raises(ValueError, match="same shape"):
        torch.ops.vqaudio.rotate_to_backward(e, q[:3], g)
    for dtype in (torch.float32, torch.float64):
        torch.library.opcheck(torch.ops.vqaudio.rotate_to_backward.default, (e.to(dtype), q.to(dtype), g.to(dtype)))


def test_reference_backward_path_passes_gradcheck(monkeypatch):
    import vqaudio.ops.rotation as rotation

    monkeypatch.setattr(rotation, "_COMPILED_CPU", False)
    e0, q = rows(9, 4, 17)

    def surrogate(e: torch.Tensor) -> torch.Tensor:
        op = rotate_to(e, q)
        return householder_rotation(e, e0, q).detach() + (op - op.detach())

    assert torch.autograd.gradcheck(surrogate, (e0.clone().requires_grad_(True),), eps=1e-6, atol=1e-8)
