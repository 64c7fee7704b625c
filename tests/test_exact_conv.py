"""``vqaudio::exact_conv1d`` (csrc/exact_conv.cpp): the contract against the PyTorch reference in float64, opcheck,
and the point of the op: an output value has the same bits whatever tensor it is computed in (length, offset,
batch, padding, thread count). Also the nearest-code op's per-row results, which the codes rely on likewise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqaudio.ops.exact_conv import (
    exact_conv1d,
    exact_conv1d_narrow,
    exact_conv1d_reference,
    has_exact_conv,
    narrow_weight,
)

pytestmark = pytest.mark.skipif(not has_exact_conv(), reason="vqaudio._C without exact_conv1d")

# (Cin, Cout, kernel, stride, dilation, pad_left, pad_right): the speech-8k encoder's shapes and odd ones
SHAPES = [(1, 16, 7, 1, 1, 3, 3), (16, 8, 7, 1, 3, 9, 9), (8, 16, 1, 1, 1, 0, 0), (16, 32, 6, 3, 1, 1, 2),
          (64, 128, 14, 7, 1, 3, 4), (5, 13, 3, 2, 2, 1, 3), (3, 9, 4, 1, 1, 3, 0), (128, 64, 3, 1, 1, 1, 1)]


def _args(cin, cout, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(cout, cin, k, generator=g) / (cin * k) ** 0.5, torch.randn(cout, generator=g)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("elu", [False, True])
def test_matches_the_reference_in_float64(shape, elu):
    cin, cout, k, s, d, pl, pr = shape
    w, b = _args(cin, cout, k)
    x = torch.randn(3, cin, 97 * s + 5)
    y = exact_conv1d(x, w, b, s, d, (pl, pr), elu)
    ref = exact_conv1d_reference(x.double(), w.double(), b.double(), s, d, (pl, pr), elu)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=2e-5)
    # the reference is the convolution it claims to be
    xa = F.elu(x.double()) if elu else x.double()
    torch.testing.assert_close(ref, F.conv1d(F.pad(xa, (pl, pr)), w.double(), b.double(), stride=s, dilation=d))


def test_elu_is_accurate_over_the_float_range():
    x = torch.cat([torch.linspace(-100, 5, 200_001), -torch.logspace(-30, 1.5, 20_000), torch.tensor([0.0, -0.0])])
    y = exact_conv1d(x[None, None], torch.ones(1, 1, 1), None, elu=True)[0, 0]
    ref = F.elu(x.double())
    err = (y.double() - ref).abs() / ref.abs().clamp_min(1e-30)
    assert err.max() < 3e-6
    assert exact_conv1d(torch.tensor([[[float("nan")]]]), torch.ones(1, 1, 1), None, elu=True).isnan().all()


@pytest.mark.parametrize("shape", SHAPES)
def test_a_value_has_the_same_bits_in_any_tensor(shape):
    """Output positions of a long signal, computed inside windows of many lengths and offsets (interior: the
    window's zero padding is outside their field), batches of other items and 1 or 2 threads: bit-identical."""
    cin, cout, k, s, d, pl, pr = shape
    w, b = _args(cin, cout, k, seed=1)
    x = torch.randn(1, cin, 400 * s)
    whole = exact_conv1d(x, w, b, s, d, (pl, pr), True)
    span = d * (k - 1)
    g = torch.Generator().manual_seed(2)
    before = torch.get_num_threads()
    try:
        for trial in range(40):
            torch.set_num_threads(1 + trial % 2)
            a = int(torch.randint(1, 150, (1,), generator=g)) * s + (-pl) % s  # xpad index a + pl on the stride grid
            n = int(torch.randint(span + 1, 240 * s, (1,), generator=g))
            batch = int(torch.randint(1, 5, (1,), generator=g))
            win = torch.randn(batch, cin, n)
            win[batch // 2] = x[0, :, a : a + n]
            y = exact_conv1d(win, w, b, s, d, (0, 0), True)[batch // 2]
            # window output j = whole output (a + pl) / s + j
            off = (a + pl) // s
            m = min(y.shape[-1], whole.shape[-1] - off)
            assert torch.equal(y[:, :m], whole[0, :, off : off + m]), (trial, a, n, batch)
    finally:
        torch.set_num_threads(before)


def test_opcheck_and_errors():
    w, b = _args(4, 8, 3)
    x = torch.randn(2, 4, 50)
    torch.library.opcheck(torch.ops.vqaudio.exact_conv1d, (x, w, b, 2, 1, 1, 1, True),
                          test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(ValueError, match="weight must be"):
        exact_conv1d(torch.randn(1, 3, 20), w, b)
    with pytest.raises(TypeError, match="float32"):
        exact_conv1d(x.double(), w.double(), b.double())
    with pytest.raises(ValueError, match="shorter than the kernel span"):
        exact_conv1d(torch.randn(1, 4, 2), w, b)
    with pytest.raises(RuntimeError, match="inference only"):
        exact_conv1d(x, w.requires_grad_(), b)
    assert exact_conv1d(torch.randn(0, 4, 10), w.detach(), b).shape == (0, 8, 8)


# (Cin, Cout, kernel, stride, dilation, pad_left, pad_right): the stream decoder's shapes (its transposed convs as
# kernel-2 convs of Cout * stride channels) and odd ones
NARROW_SHAPES = [(64, 256, 7, 1, 1, 3, 3), (128, 64, 7, 1, 9, 27, 27), (64, 128, 1, 1, 1, 0, 0), (256, 896, 2, 1, 1, 1, 1),
                 (64, 96, 2, 1, 1, 1, 1), (32, 16, 7, 1, 3, 9, 9), (1, 32, 7, 1, 1, 3, 3), (16, 32, 6, 3, 1, 1, 2),
                 (5, 48, 3, 2, 2, 1, 3)]


@pytest.mark.parametrize("shape", NARROW_SHAPES)
@pytest.mark.parametrize("elu", [False, True])
def test_narrow_gives_the_same_bits_as_exact_conv1d(shape, elu):
    """``exact_conv1d_narrow`` (lanes over channels) equals ``exact_conv1d`` (lanes over positions) bit for bit, for
    short and long outputs, batches and the short last block of positions; and the reference to float rounding."""
    cin, cout, k, s, d, pl, pr = shape
    w, b = _args(cin, cout, k, seed=4)
    wt = narrow_weight(w)
    assert wt.shape == (cin, k, cout)
    span = d * (k - 1) + 1
    for n_out in (1, 2, 3, 5, 14, 57, 300):
        x = torch.randn(2, cin, max(1, (n_out - 1) * s + span - pl - pr)) * 3
        y = exact_conv1d_narrow(x, wt, b, s, d, (pl, pr), elu)
        assert torch.equal(y, exact_conv1d(x, w, b, s, d, (pl, pr), elu)), n_out
    ref = exact_conv1d_reference(x.double(), w.double(), b.double(), s, d, (pl, pr), elu)
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=2e-5)
    assert torch.equal(exact_conv1d_narrow(x, wt, None, s, d, (pl, pr), elu), exact_conv1d(x, w, None, s, d, (pl, pr), elu))
    for h in (1, 3, 16, 17, x.shape[-1] - 1, x.shape[-1]):  # the input given as head + x (views): the same bits
        head, rest = x[..., :h], x[..., h:]
        assert torch.equal(exact_conv1d_narrow(rest, wt, b, s, d, (pl, pr), elu, head=head), y), h
    time_major = x.transpose(1, 2).contiguous().transpose(1, 2)  # time steps apart: copied first
    assert torch.equal(exact_conv1d_narrow(time_major, wt, b, s, d, (pl, pr), elu), y)
    skip = torch.randn(2, cout, y.shape[-1] + 3)[..., 1:-2]  # a residual (a view), added: skip + y's bits
    skip[0, 0, 0] = -0.0
    assert torch.equal(exact_conv1d_narrow(x, wt, b, s, d, (pl, pr), elu, residual=skip), skip + y)


def test_narrow_opcheck_and_errors():
    w, b = _args(4, 16, 3)
    wt = narrow_weight(w)
    x = torch.randn(2, 4, 50)
    torch.library.opcheck(torch.ops.vqaudio.exact_conv1d_narrow, (x, wt, b, 2, 1, 1, 1, True),
                          test_utils=("test_schema", "test_faketensor"))
    assert narrow_weight(torch.randn(8, 4, 3)) is None  # Cout not a multiple of 16: exact_conv1d only
    with pytest.raises(ValueError, match="multiple of 16"):
        torch.ops.vqaudio.exact_conv1d_narrow(x, torch.randn(4, 3, 8), torch.randn(8), 1, 1, 0, 0, False)
    with pytest.raises(ValueError, match="weight_t must be"):
        exact_conv1d_narrow(torch.randn(1, 3, 20), wt, b)
    with pytest.raises(TypeError, match="float32"):
        exact_conv1d_narrow(x.double(), wt.double(), b.double())
    with pytest.raises(ValueError, match="shorter than the kernel span"):
        exact_conv1d_narrow(torch.randn(1, 4, 2), wt, b)
    with pytest.raises(ValueError, match="head must be"):
        exact_conv1d_narrow(x, wt, b, head=torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="residual must be"):
        exact_conv1d_narrow(x, wt, b, residual=torch.randn(2, 16, 3))
    torch.library.opcheck(torch.ops.vqaudio.exact_conv1d_narrow, (x, wt, b, 1, 2, 0, 1, False, torch.randn(2, 4, 7)),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.vqaudio.exact_conv1d_narrow,
                          (x, wt, b, 1, 1, 0, 0, False, None, torch.randn(2, 16, 48)),
                          test_utils=("test_schema", "test_faketensor"))
    assert exact_conv1d_narrow(torch.randn(0, 4, 10), wt, b).shape == (0, 16, 8)


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_uses_it_only_without_autograd_on_the_cpu(causal):
    """Same latents as ATen's convs to float rounding (the same padding, symmetric or causal); training (autograd)
    keeps ATen's (it has a backward)."""
    from vqaudio.models.conv import Encoder
    from vqaudio.ops import exact_conv

    enc = Encoder(1, 8, [2, 3], hidden=4, max_hidden=16, dilations=(1, 3), causal=causal).eval()
    x = torch.randn(2, 1, 60 * 6)
    with torch.no_grad():
        assert exact_conv.usable(x)
        fast = enc(x)
        with exact_conv.disabled():
            aten = enc(x)
    torch.testing.assert_close(fast, aten, rtol=0, atol=1e-5)
    assert not exact_conv.usable(x)  # autograd on
    enc.train()
    y = enc(x)
    assert y.requires_grad
    y.sum().backward()


def test_nearest_code_rows_do_not_depend_on_the_other_rows():
    """The codes rely on this too: a row's index and distance have the same bits whatever the number of rows
    and the row's place in a tile (rows are packed one by one; every row runs the same instructions)."""
    g = torch.Generator().manual_seed(3)
    codebook = torch.randn(256, 64, generator=g)
    x = torch.randn(1000, 64, generator=g)
    idx, dist = torch.ops.vqaudio.nearest_code(x, codebook)
    for a, n in ((0, 1), (1, 7), (3, 5), (13, 100), (500, 499), (999, 1)):
        i2, d2 = torch.ops.vqaudio.nearest_code(x[a : a + n].clone(), codebook)
        assert torch.equal(i2, idx[a : a + n]) and torch.equal(d2, dist[a : a + n]), (a, n)
