"""The nearest_code op: compiled kernels against the reference, ties, dtypes, errors, autograd."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vqaudio.ops as ops
from vqaudio.ops import reference

compiled = pytest.mark.skipif(ops.KERNEL != "compiled", reason=f"compiled extension not loaded: {ops.KERNEL_REASON}")


def cuda_skip_reason() -> str | None:
    """Why the tests on a CUDA device cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if ops.KERNEL == "compiled" and not ops.has_cuda_kernel():
        record = ops.build_record() or {"reason": "it has no build record"}
        return f"vqaudio._C was built without the CUDA kernels: {record['reason']}"
    return None


cuda = pytest.mark.skipif(cuda_skip_reason() is not None, reason=cuda_skip_reason() or "")
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def available_isas() -> list[str]:
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isas = ["base"]
    if " avx2" in flags and " fma" in flags:
        isas.append("avx2")
    if all(f" {f}" in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        isas.append("avx512")
    return isas


@pytest.fixture(params=available_isas())
def isa(request, monkeypatch):
    """Run a test once per CPU micro-kernel this machine supports."""
    monkeypatch.setenv("VQAUDIO_CPU_ISA", request.param)
    return request.param


def exact_dist2(x: torch.Tensor, codebook: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """||x[n] - codebook[idx[n]]||² computed directly in float64."""
    return (x.double() - codebook.double()[idx]).square().sum(1)


def assert_matches_reference(x, codebook, idx, dist2, max_differ=0.01):
    """Indices equal the reference's except on proven near-ties; dist2 within rounding."""
    ref_idx, _ = reference.nearest_code(x, codebook)
    eps = torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).eps
    d = x.shape[1]

    def bound(shift: torch.Tensor) -> torch.Tensor:
        xn = (x.double() - shift).square().sum(1)
        en = (codebook.double() - shift).square().sum(1)
        return xn + en[idx] + en[ref_idx] + 2 * (xn * en[idx]).sqrt()

    # Rounding bound of ||e||² - 2x·e + ||x||² accumulated over D terms in the kernel's precision;
    # the kernels may expand around the origin or around the codebook mean.
    tol = 4 * (d + 2) * eps * (bound(torch.zeros(())) + bound(codebook.double().mean(0)))
    d_kernel, d_ref = exact_dist2(x, codebook, idx), exact_dist2(x, codebook, ref_idx)
    differ = idx != ref_idx
    assert (d_kernel[differ] - d_ref[differ]).abs().le(tol[differ]).all(), "a differing row is not a near-tie"
    assert differ.float().mean().item() <= max_differ, f"{int(differ.sum())} rows differ"
    assert dist2.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    assert (dist2.double() - d_kernel).abs().le(tol).all(), "dist2 outside rounding tolerance"
    assert (dist2 >= 0).all()


SHAPES = [  # (N, K, D): every D in {1, 3, 64, 67, 256} and every K in {1, 2, 1000, 4096}
    (5000, 1, 64), (5000, 2, 3), (20000, 1000, 1), (3000, 1000, 67), (1500, 4096, 64), (700, 4096, 256),
    (2000, 1000, 256), (100_000, 2, 67), (123, 2, 1), (9, 1000, 3),
]


@compiled
@pytest.mark.parametrize("n,k,d", SHAPES)
def test_compiled_matches_reference_fp32(n, k, d, isa):
    g = torch.Generator().manual_seed(n + k + d)
    x, e = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    assert idx.dtype == torch.int64 and idx.shape == (n,) and dist2.shape == (n,)
    assert_matches_reference(x, e, idx, dist2)


@compiled
@pytest.mark.parametrize("dtype", FLOATS)
def test_compiled_all_dtypes(dtype, isa):
    g = torch.Generator().manual_seed(1)
    x, e = torch.randn(3001, 67, generator=g).to(dtype), torch.randn(513, 67, generator=g).to(dtype)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    assert_matches_reference(x, e, idx, dist2)


@compiled
def test_data_with_offset_and_scale(isa):
    """Latents far from the origin: the ||x||² term dominates and cancellation is worst."""
    g = torch.Generator().manual_seed(2)
    x = 50 + 0.1 * torch.randn(4000, 64, generator=g)
    e = 50 + 0.1 * torch.randn(512, 64, generator=g)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    assert_matches_reference(x, e, idx, dist2, max_differ=0.01)


def duplicated_codebook(k_unique: int, d: int, copies: int, g: torch.Generator) -> torch.Tensor:
    base = torch.randn(k_unique, d, generator=g)
    order = torch.randperm(k_unique * copies, generator=g)
    return base.repeat(copies, 1)[order]


def first_occurrence(codebook: torch.Tensor) -> torch.Tensor:
    """For each code, the lowest index of an identical row."""
    same = (codebook[:, None, :] == codebook[None, :, :]).all(-1)
    return same.float().argmax(1)


@pytest.mark.parametrize("kernel", ["compiled", "reference"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_exact_ties_go_to_lowest_index(kernel, dtype, isa):
    if kernel == "compiled" and ops.KERNEL != "compiled":
        pytest.skip(ops.KERNEL_REASON)
    g = torch.Generator().manual_seed(3)
    e = duplicated_codebook(37, 19, 3, g).to(dtype)
    x = torch.cat([torch.randn(500, 19, generator=g).to(dtype), e[torch.randperm(len(e), generator=g)[:50]]])
    fn = torch.ops.vqaudio.nearest_code if kernel == "compiled" else reference.nearest_code
    idx, dist2 = fn(x, e)
    assert torch.equal(idx, first_occurrence(e)[idx]), "a tie was not broken to the lowest index"
    assert (dist2[-50:] == 0).all(), "an exact match has a non-zero distance"


def grid_midpoints(d: int, dtype: torch.dtype, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A shuffled codebook on a uniform grid (with duplicates) and rows on it and halfway between codes.

    Every row is an exact tie between two or more codes in real arithmetic, and every value is exact
    in ``dtype``: an expansion ||e||² - 2x·e rounds those ties apart, direct differences keep them.
    """
    levels = torch.arange(-24, 25, dtype=torch.float64) / 8 + 3  # off-centre, so centring is not exact
    e = levels[torch.randint(len(levels), (600, d), generator=g)]
    x = (levels[torch.randint(len(levels) - 1, (4000, d), generator=g)] + 1 / 16).clone()
    on_grid = torch.rand(4000, d, generator=g) < 0.3
    x[on_grid] -= 1 / 16
    return x.to(dtype), e.to(dtype)


@compiled
@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", FLOATS)
def test_small_dim_ties_exact(d, dtype, isa):
    """Up to kDirectMaxDim dimensions the kernel compares direct differences: every tie on a grid goes
    to the lowest index, exactly as in the reference."""
    g = torch.Generator().manual_seed(5 + d)
    x, e = grid_midpoints(d, dtype, g)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    ref_idx, _ = reference.nearest_code(x, e)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(dist2.double(), exact_dist2(x, e, idx))  # grid values: exact in float32


@compiled
def test_ties_identical_across_isas(monkeypatch):
    g = torch.Generator().manual_seed(4)
    e = duplicated_codebook(200, 64, 4, g)
    x = torch.randn(3000, 64, generator=g)
    results = []
    for name in available_isas():
        monkeypatch.setenv("VQAUDIO_CPU_ISA", name)
        results.append(torch.ops.vqaudio.nearest_code(x, e)[0])
    ref = reference.nearest_code(x, e)[0]
    for r in results:
        assert torch.equal(r, first_occurrence(e)[r])
        assert (r != ref).float().mean() < 0.01


@pytest.mark.parametrize("kernel", ["compiled", "reference"])
def test_non_contiguous_inputs(kernel, isa):
    if kernel == "compiled" and ops.KERNEL != "compiled":
        pytest.skip(ops.KERNEL_REASON)
    fn = torch.ops.vqaudio.nearest_code if kernel == "compiled" else reference.nearest_code
    g = torch.Generator().manual_seed(5)
    x = torch.randn(67, 2000, generator=g).T  # strides (1, 2000)
    e = torch.randn(300, 134, generator=g)[:, ::2]  # strides (134, 2)
    assert not x.is_contiguous() and not e.is_contiguous()
    idx, dist2 = fn(x, e)
    idx_c, dist2_c = fn(x.contiguous(), e.contiguous())
    assert torch.equal(idx, idx_c) and torch.equal(dist2, dist2_c)
    assert_matches_reference(x, e, idx, dist2)


@pytest.mark.parametrize("kernel", ["compiled", "reference"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_empty_rows(kernel, dtype):
    if kernel == "compiled" and ops.KERNEL != "compiled":
        pytest.skip(ops.KERNEL_REASON)
    fn = torch.ops.vqaudio.nearest_code if kernel == "compiled" else reference.nearest_code
    idx, dist2 = fn(torch.empty(0, 8, dtype=dtype), torch.randn(5, 8).to(dtype))
    assert idx.shape == (0,) and idx.dtype == torch.int64
    assert dist2.shape == (0,) and dist2.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


ERRORS = [
    ("empty codebook", lambda: (torch.randn(4, 3), torch.randn(0, 3)), ValueError, "codebook is empty"),
    ("D mismatch", lambda: (torch.randn(4, 3), torch.randn(5, 4)), ValueError, "x has D = 3 but codebook has D = 4"),
    ("int x", lambda: (torch.ones(4, 3, dtype=torch.int64), torch.randn(5, 3)), TypeError, "x has dtype"),
    ("int codebook", lambda: (torch.randn(4, 3), torch.ones(5, 3, dtype=torch.int32)), TypeError, "codebook has dtype"),
    ("float8 x", lambda: (torch.zeros(4, 3, dtype=torch.float8_e4m3fn), torch.zeros(5, 3, dtype=torch.float8_e4m3fn)),
     TypeError, "x has dtype"),
    ("dtype mismatch", lambda: (torch.randn(4, 3), torch.randn(5, 3).double()), TypeError, "must match"),
    ("1-D x", lambda: (torch.randn(4), torch.randn(5, 4)), ValueError, "x must be 2-D"),
    ("3-D codebook", lambda: (torch.randn(4, 3), torch.randn(5, 3, 1)), ValueError, "codebook must be 2-D"),
    ("NaN in x", lambda: (torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]), torch.randn(5, 2)), ValueError,
     "x contains NaN or Inf"),
    ("Inf in x", lambda: (torch.tensor([[0.0, float("-inf")]]), torch.randn(5, 2)), ValueError, "x contains NaN or Inf"),
    ("NaN in codebook", lambda: (torch.randn(4, 2), torch.tensor([[0.0, 0.0], [float("nan"), 1.0]])), ValueError,
     "codebook contains NaN or Inf"),
    ("Inf in codebook fp16", lambda: (torch.randn(4, 2).half(), torch.tensor([[float("inf"), 0.0]]).half()), ValueError,
     "codebook contains NaN or Inf"),
]


@pytest.mark.parametrize("kernel", ["compiled", "reference"])
@pytest.mark.parametrize("name,make,exc,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(kernel, name, make, exc, message):
    if kernel == "compiled" and ops.KERNEL != "compiled":
        pytest.skip(ops.KERNEL_REASON)
    fn = torch.ops.vqaudio.nearest_code if kernel == "compiled" else reference.nearest_code
    with pytest.raises(exc, match=message):
        fn(*make())


def test_nan_detected_in_any_row(isa):
    """The finiteness check covers every row, including the last partial block, and every position."""
    for row in (0, 5, 6, 17, 999):
        x = torch.randn(1000, 13)
        x[row, row % 13] = float("nan")
        with pytest.raises(ValueError, match="x contains NaN"):
            torch.ops.vqaudio.nearest_code(x, torch.randn(7, 13))


@pytest.mark.parametrize("kernel", ["compiled", "reference"])
def test_large_finite_values_are_not_mistaken_for_inf(kernel, isa):
    if kernel == "compiled" and ops.KERNEL != "compiled":
        pytest.skip(ops.KERNEL_REASON)
    fn = torch.ops.vqaudio.nearest_code if kernel == "compiled" else reference.nearest_code
    x = torch.full((8, 4), 3e19)  # ||x||² overflows float32, the values do not
    idx, _ = fn(x, torch.randn(3, 4))
    assert idx.shape == (8,)
    idx, dist2 = fn(torch.tensor([[3e38]]), torch.tensor([[-3e38]]))  # the difference overflows
    assert idx.tolist() == [0] and dist2.item() == float("inf")


@pytest.mark.parametrize("kernel", ["compiled", "reference"])
def test_zero_dimensional_vectors(kernel):
    if kernel == "compiled" and ops.KERNEL != "compiled":
        pytest.skip(ops.KERNEL_REASON)
    fn = torch.ops.vqaudio.nearest_code if kernel == "compiled" else reference.nearest_code
    idx, dist2 = fn(torch.empty(4, 0), torch.empty(3, 0))
    assert idx.tolist() == [0, 0, 0, 0] and dist2.tolist() == [0.0] * 4


def test_reference_device_mismatch():
    with pytest.raises(ValueError, match="x is on cpu but codebook is on meta"):
        reference.check_inputs(torch.randn(4, 3), torch.empty(5, 3, device="meta"))


@cuda
def test_device_mismatch_cuda():
    with pytest.raises(ValueError, match="but codebook is on"):
        torch.ops.vqaudio.nearest_code(torch.randn(4, 3), torch.randn(5, 3, device="cuda"))


@compiled
def test_cuda_kernel_is_registered():
    """setup.py records whether it built the CUDA kernels (and why not); the loaded extension must agree."""
    record = ops.build_record()
    if record is None:
        pytest.skip("vqaudio._C has no build record (built by an older setup.py): rebuild it to test this")
    if not record["cuda"]:
        assert not ops.has_cuda_kernel(), "the build record says CPU-only but vqaudio._C has a CUDA kernel (stale record)"
        pytest.skip(f"the build has no CUDA kernels: {record['reason']}")
    assert ops.has_cuda_kernel(), f"setup.py built the CUDA kernels ({record['reason']}) but vqaudio._C has none"


def test_cpu_kernel_is_registered():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("vqaudio::nearest_code", "CPU") or ops.KERNEL == "reference"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(50, 9, generator=g, dtype=dtype, requires_grad=True)
    e = torch.randn(11, 9, generator=g, dtype=dtype, requires_grad=True)
    # opcheck's AOT check sums every output into one accumulator, which fails on the int64 indices
    # that come first in our schema; AOT autograd is covered by the torch.compile test below.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.vqaudio.nearest_code.default, (x, e), test_utils=utils)
    torch.library.opcheck(torch.ops.vqaudio.nearest_code.default, (x.detach()[:0], e.detach()))
    idx = torch.ops.vqaudio.nearest_code(x.detach(), e.detach())[0]
    torch.library.opcheck(torch.ops.vqaudio.straight_through.default, (x, e.detach(), idx))


def test_quantize_straight_through():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 8, generator=g, requires_grad=True)
    e = torch.randn(16, 8, generator=g, requires_grad=True)
    q, idx, _ = ops.quantize(x, e)
    assert torch.equal(q, e.detach()[idx]), "forward must be exactly the codebook rows"
    upstream = torch.randn(64, 8, generator=g)
    q.backward(upstream)
    assert torch.equal(x.grad, upstream), "STE: x.grad must equal the upstream gradient"
    assert e.grad is None, "the codebook gets no gradient through quantized"


def test_dist2_gradient_gradcheck():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.vqaudio.nearest_code(a, b)[1], (x, e))


def test_dist2_gradient_values():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    e = torch.tensor([[1.0, 1.0], [5.0, 5.0]], requires_grad=True)
    _, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    dist2.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([[0.0, 2.0], [-2.0, -2.0]]))
    assert torch.allclose(e.grad, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def test_quantize_under_torch_compile_fullgraph():
    g = torch.Generator().manual_seed(9)
    e = torch.randn(32, 6, generator=g)

    def step(x: torch.Tensor) -> torch.Tensor:
        q, _, dist2 = ops.quantize(x, e)
        return (q * q).sum() + 0.25 * dist2.sum()

    x1 = torch.randn(40, 6, generator=g, requires_grad=True)
    q, idx, _ = ops.quantize(x1.detach(), e)
    expected = 2 * q + 0.5 * (x1.detach() - e[idx])  # STE of (q·q) plus d(0.25·dist2)/dx
    step(x1).backward()
    assert torch.allclose(x1.grad, expected)
    for backend in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        x2 = x1.detach().clone().requires_grad_()
        torch.compile(step, fullgraph=True, backend=backend)(x2).backward()
        assert torch.allclose(x2.grad, expected), backend


def test_against_faiss():
    faiss = pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(10)
    x, e = torch.randn(20000, 64, generator=g), torch.randn(1024, 64, generator=g)
    index = faiss.IndexFlatL2(64)
    index.add(e.numpy())
    fd, fi = index.search(x.numpy(), 1)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    fi = torch.from_numpy(fi[:, 0])
    differ = idx != fi
    gap = (exact_dist2(x, e, idx) - exact_dist2(x, e, fi)).abs()
    assert differ.float().mean() < 0.001
    assert (gap[differ] < 1e-3).all(), "a row differing from FAISS is not a near-tie"
    assert torch.allclose(dist2, torch.from_numpy(fd[:, 0]), rtol=1e-4, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), k=st.integers(1, 70), d=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_random_shapes_property(n, k, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x, e = scale * torch.randn(n, d, generator=g), scale * torch.randn(k, d, generator=g)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    assert ((idx >= 0) & (idx < k)).all()
    if n:
        assert_matches_reference(x, e, idx, dist2, max_differ=1.0)


@compiled
def test_extra_memory_is_bounded():
    """N = 400k, K = 1024: the distance matrix would be 1.6 GB; the op may use the outputs (4.8 MB) and tiles."""
    code = textwrap.dedent("""
        import torch, vqaudio.ops
        torch.set_num_threads(2)
        x, e = torch.randn(400_000, 64), torch.randn(1024, 64)
        torch.ops.vqaudio.nearest_code(x[:1000], e)
        def rss(field):
            return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(field))
        open('/proc/self/clear_refs', 'w').write('5')
        base = rss('VmRSS:')
        out = torch.ops.vqaudio.nearest_code(x, e)
        print((rss('VmHWM:') - base) / 1024)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    extra_mib = float(res.stdout.strip().splitlines()[-1])
    assert extra_mib < 32, f"extra memory {extra_mib:.1f} MiB"


@pytest.mark.parametrize("how", ["env", "missing"])
def test_reference_fallback(how):
    setup = "import sys; sys.modules['vqaudio._C'] = None\n" if how == "missing" else ""
    code = setup + textwrap.dedent("""
        import warnings
        warnings.simplefilter('always')
        with warnings.catch_warnings(record=True) as caught:
            import torch, vqaudio.ops as ops
        x, e = torch.randn(100, 4), torch.randn(9, 4)
        idx, _ = torch.ops.vqaudio.nearest_code(x, e)
        assert torch.equal(idx, ops.reference.nearest_code(x, e)[0])
        q, _, _ = ops.quantize(x, e)
        print(ops.KERNEL, '|', ops.KERNEL_REASON, '|', [str(w.message) for w in caught])
    """)
    env = dict(os.environ, VQAUDIO_KERNEL="reference" if how == "env" else "auto")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    kernel, reason, warned = res.stdout.strip().split(" | ")
    assert kernel == "reference"
    if how == "missing":
        assert "could not be loaded" in reason and "reference kernel" in warned
    else:
        assert reason == "VQAUDIO_KERNEL=reference"


# ----------------------------------------------------------------------------------------- CUDA
@cuda
@compiled
@pytest.mark.parametrize("n,k,d", SHAPES[:7])
@pytest.mark.parametrize("dtype", FLOATS)
def test_cuda_matches_reference(n, k, d, dtype):
    g = torch.Generator().manual_seed(n * 7 + k + d)
    x, e = torch.randn(n, d, generator=g).to(dtype), torch.randn(k, d, generator=g).to(dtype)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x.cuda(), e.cuda())
    assert idx.is_cuda and dist2.is_cuda
    assert_matches_reference(x, e, idx.cpu(), dist2.cpu())


@cuda
@compiled
@pytest.mark.parametrize("dtype", FLOATS)
def test_cuda_ties_and_strides(dtype):
    g = torch.Generator().manual_seed(11)
    e = duplicated_codebook(300, 67, 3, g).to(dtype)
    x = torch.randn(67, 5000, generator=g).T.to(dtype)
    idx, _ = torch.ops.vqaudio.nearest_code(x.cuda(), e.cuda())
    idx = idx.cpu()
    assert torch.equal(idx, first_occurrence(e)[idx])
    cpu_idx, _ = torch.ops.vqaudio.nearest_code(x, e)
    assert (idx != cpu_idx).float().mean() < 0.01


@cuda
@compiled
@pytest.mark.parametrize("d", [1, 3, 4])
@pytest.mark.parametrize("dtype", FLOATS)
def test_cuda_small_dim_ties_exact(d, dtype):
    g = torch.Generator().manual_seed(5 + d)
    x, e = grid_midpoints(d, dtype, g)
    idx, dist2 = torch.ops.vqaudio.nearest_code(x.cuda(), e.cuda())
    ref_idx, _ = reference.nearest_code(x, e)
    assert torch.equal(idx.cpu(), ref_idx)
    assert torch.equal(dist2.cpu().double(), exact_dist2(x, e, ref_idx))


@cuda
@compiled
def test_cuda_matches_cpu_bit_for_bit():
    """Same centring, FMA main loop and unfused norms/dist2 as the FMA CPU kernels (or, for small D,
    the same FMA direct sweep): identical results."""
    if "avx2" not in available_isas():
        pytest.skip("the CPU kernels without FMA round differently")
    g = torch.Generator().manual_seed(12)
    base = torch.randn(64, generator=g)
    e = torch.stack([base[torch.randperm(64, generator=g)] for _ in range(512)])  # many near-ties
    x = 0.3 + 0.1 * torch.randn(3000, 64, generator=g)
    for cols in (slice(None), slice(0, 3)):  # the expansion, and the direct sweep of small D
        xs, es = x[:, cols].contiguous(), e[:, cols].contiguous()
        cpu_idx, cpu_d = torch.ops.vqaudio.nearest_code(xs, es)
        gpu_idx, gpu_d = torch.ops.vqaudio.nearest_code(xs.cuda(), es.cuda())
        assert torch.equal(cpu_idx, gpu_idx.cpu())
        assert torch.equal(cpu_d, gpu_d.cpu())


@cuda
@compiled
def test_cuda_errors_and_empty():
    with pytest.raises(ValueError, match="x contains NaN"):
        torch.ops.vqaudio.nearest_code(torch.tensor([[float("nan"), 0.0]], device="cuda"), torch.randn(3, 2, device="cuda"))
    with pytest.raises(ValueError, match="codebook contains NaN"):
        torch.ops.vqaudio.nearest_code(torch.randn(3, 2, device="cuda"), torch.tensor([[float("inf"), 0.0]], device="cuda"))
    idx, dist2 = torch.ops.vqaudio.nearest_code(torch.empty(0, 5, device="cuda"), torch.randn(3, 5, device="cuda"))
    assert idx.shape == (0,) and dist2.shape == (0,)
    idx, dist2 = torch.ops.vqaudio.nearest_code(torch.empty(4, 0, device="cuda"), torch.empty(3, 0, device="cuda"))
    assert idx.tolist() == [0] * 4 and dist2.tolist() == [0.0] * 4
    with pytest.raises(TypeError, match="x has dtype"):
        torch.ops.vqaudio.nearest_code(torch.ones(4, 3, device="cuda", dtype=torch.int32), torch.randn(3, 3, device="cuda"))


@cuda
@compiled
def test_cuda_opcheck_and_ste():
    x = torch.randn(300, 16, device="cuda", requires_grad=True)
    e = torch.randn(40, 16, device="cuda", requires_grad=True)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.vqaudio.nearest_code.default, (x, e), test_utils=utils)
    q, idx, _ = ops.quantize(x, e)
    up = torch.randn_like(q)
    q.backward(up)
    assert torch.equal(x.grad, up)


def test_bench_nearest_cuda_peers_and_no_gpu(capsys):
    """The GPU benchmark's peers find the reference's codes; without a GPU it exits 2 with one line."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "bench_nearest_cuda.py"
    spec = importlib.util.spec_from_file_location("bench_nearest_cuda", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(500, 16, generator=g, dtype=torch.float64), torch.randn(64, 16, generator=g, dtype=torch.float64)
    ref_idx, ref_d = reference.nearest_code(x, e)
    for peer in (bench.matmul_argmin, bench.cdist_argmin):
        idx, dist2 = peer(x, e)
        assert torch.equal(idx, ref_idx) and torch.allclose(dist2, ref_d, atol=1e-9)
    if not torch.cuda.is_available():
        assert bench.main(["--rounds", "1"]) == 2
        assert capsys.readouterr().err.strip() == "bench_nearest_cuda: no CUDA device"


# ---------------------------------------------------------------- the fused CPU backward of dist2
compiled_backward = pytest.mark.skipif(not ops._COMPILED_BACKWARD, reason="vqaudio._C without nearest_code_backward")


def reference_backward(grad_dist2, x, codebook, indices):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    diff = (x.to(acc) - codebook.to(acc)[indices]) * (2.0 * grad_dist2.to(acc)).unsqueeze(1)
    grad_codebook = torch.zeros(codebook.shape, dtype=acc).index_add(0, indices, diff, alpha=-1.0)
    return diff.to(x.dtype), grad_codebook.to(codebook.dtype)


@compiled_backward
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_backward_matches_reference(dtype, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(21)
        x, e = torch.randn(3000, 19, generator=g).to(dtype), torch.randn(40, 19, generator=g).to(dtype)
        idx = torch.randint(0, 7, (3000,), generator=g)  # many rows per code: the scatter adds them up
        grad = torch.randn(3000, generator=g)
        rx, re = reference_backward(grad, x, e, idx)
        tol = {torch.float64: 1e-12, torch.float32: 1e-4}.get(dtype, 2e-2)
        for need_x, need_e in ((True, True), (True, False), (False, True)):
            gx, ge = torch.ops.vqaudio.nearest_code_backward(grad, x, e, idx, need_x, need_e)
            assert gx.dtype == ge.dtype == dtype
            assert torch.equal(gx, rx) if need_x else gx.numel() == 0  # the same arithmetic, row by row
            if need_e:  # summed in another order: equal within rounding
                torch.testing.assert_close(ge, re, rtol=tol, atol=tol * 10)
            else:
                assert ge.numel() == 0
    finally:
        torch.set_num_threads(before)


@compiled_backward
def test_compiled_backward_through_autograd_and_opcheck():
    g = torch.Generator().manual_seed(22)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    _, dist2 = torch.ops.vqaudio.nearest_code(x, e)
    dist2.sum().backward()  # an expanded (stride 0) upstream gradient
    idx = torch.ops.vqaudio.nearest_code(x.detach(), e.detach())[0]
    rx, re = reference_backward(torch.ones(64, dtype=torch.float64), x.detach(), e.detach(), idx)
    torch.testing.assert_close(x.grad, rx)
    torch.testing.assert_close(e.grad, re)
    args = (torch.randn(64, generator=g), x.detach().float(), e.detach().float(), idx, True, True)
    torch.library.opcheck(torch.ops.vqaudio.nearest_code_backward.default, args)
    with pytest.raises(ValueError, match="out of range"):
        torch.ops.vqaudio.nearest_code_backward(args[0], args[1], args[2], idx + 100, True, True)
