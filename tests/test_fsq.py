"""FSQ and ResidualFSQ: the paper's bound and rounding, mixed-radix codes, gradients, residual stages, errors."""

from __future__ import annotations

import math

import pytest
import torch

from vqaudio.errors import ConfigError
from vqaudio.quantize import FSQ, ResidualFSQ


def paper_fsq(z: torch.Tensor, levels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mentzer et al. appendix A.1 on ``z [..., C]`` in float64: normalised codes and mixed-radix indices."""
    lv = torch.tensor(levels, dtype=torch.float64)
    half_l = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_l)
    bounded = torch.tanh(z.double() + shift) * half_l - offset
    half_width = lv // 2
    codes = torch.round(bounded) / half_width
    basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.float64), dim=0)
    indices = ((codes * half_width + half_width) * basis).sum(-1).round().long()
    return codes, indices


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [3, 4], [2, 2, 2], [7]])
def test_codes_and_indices_match_the_paper(levels):
    torch.manual_seed(0)
    fsq = FSQ(levels).eval()
    z = torch.randn(3, len(levels), 50) * 2
    out = fsq(z)
    codes, indices = paper_fsq(z.transpose(1, 2), levels)
    torch.testing.assert_close(out.quantized, codes.float().transpose(1, 2))
    assert torch.equal(out.indices, indices) and torch.equal(fsq.encode(z), indices)
    assert fsq.codebook_size == math.prod(levels)
    assert out.loss.item() == 0


def test_matches_vector_quantize_pytorch():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(1)
    levels = [8, 5, 5, 5]
    ours, theirs = FSQ(levels, noise_dropout=0.0), vqp.FSQ(levels=levels, channel_first=True)  # the peer: no noise
    z = torch.randn(4, 4, 64) * 3
    q, idx = theirs(z)
    out = ours(z)
    torch.testing.assert_close(out.quantized, q)
    assert torch.equal(out.indices, idx.long())


def test_decode_is_a_bijection_onto_the_grid_and_inverts_encode():
    levels = [4, 3, 5]
    fsq = FSQ(levels).eval()
    k = fsq.codebook_size
    grid = fsq.decode(torch.arange(k)[None])[0].T  # [K, 3]
    assert torch.unique(grid, dim=0).shape[0] == k
    for index in (0, 1, 4, 13, 59):  # mixed radix, dimension 0 least significant: digit d = index // prod(L_<d) % L_d
        digits = [index % 4, index // 4 % 3, index // 12 % 5]
        expected = [(digit - level // 2) / (level // 2) for digit, level in zip(digits, levels, strict=True)]
        assert grid[index].tolist() == expected
    z = torch.randn(2, 3, 40) * 3
    torch.testing.assert_close(fsq.decode(fsq.encode(z)), fsq(z).quantized)
    assert grid.abs().max() <= 1
    # an input just inside each cell of the grid gets that cell's code
    lv = torch.tensor(levels, dtype=torch.float64)
    half_l, offset = (lv - 1) * (1 + 1e-3) / 2, torch.where(lv % 2 == 0, 0.5, 0.0)
    preimage = torch.atanh((grid.double() * (lv // 2) + offset) / half_l) - torch.atanh(offset / half_l)
    assert torch.equal(fsq.encode(preimage.float().T[None]), torch.arange(k)[None])


def test_gradient_is_the_bound_derivative_with_straight_through_rounding():
    levels = [8, 5, 5, 5]
    fsq = FSQ(levels).train()
    z = torch.randn(2, 4, 30, dtype=torch.float32, requires_grad=True)
    upstream = torch.randn(2, 4, 30)
    fsq(z).quantized.backward(upstream)
    # direct autograd of the paper's bound with a straight-through round
    zz = z.detach().clone().requires_grad_(True)
    lv = torch.tensor(levels, dtype=torch.float32)[:, None]
    half_l = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    bounded = torch.tanh(zz + torch.atanh(offset / half_l)) * half_l - offset
    rounded = bounded + (bounded.round() - bounded).detach()
    (rounded / (lv // 2)).backward(upstream)
    torch.testing.assert_close(z.grad, zz.grad)


def test_projection_when_dim_differs_from_the_code_dimensions():
    torch.manual_seed(2)
    fsq = FSQ([8, 5, 5, 5], dim=16).train()
    assert set(fsq.state_dict()) == {"project_in.weight", "project_in.bias", "project_out.weight", "project_out.bias"}
    z = torch.randn(3, 16, 20, requires_grad=True)
    out = fsq(z)
    assert out.quantized.shape == (3, 16, 20) and out.indices.shape == (3, 20)
    out.quantized.square().mean().backward()
    assert fsq.project_in.weight.grad.abs().sum() > 0 and fsq.project_out.weight.grad.abs().sum() > 0
    fsq.eval()
    torch.testing.assert_close(fsq.decode(fsq.encode(z.detach())), fsq(z.detach()).quantized)


def test_stats_follow_the_mask():
    fsq = FSQ([3, 3]).train()
    z = torch.tensor([[[-5.0, 0.0], [-5.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]])  # item 0: codes 0 and 4; item 1: 8 twice
    out = fsq(z, mask=torch.tensor([True, False]))
    assert out.indices.tolist() == [[0, 4], [8, 8]]
    assert out.usage.item() == pytest.approx(2 / 9) and out.perplexity.item() == pytest.approx(2.0)
    assert fsq(z).usage.item() == pytest.approx(3 / 9)


def test_residual_fsq_stages_refine_and_decode_matches_forward():
    torch.manual_seed(3)
    levels = [8, 5, 5, 5]
    rfsq = ResidualFSQ(3, 4, levels).eval()
    z = torch.randn(4, 4, 100)
    bounded = torch.tanh(z)  # what the stack approximates
    errors = [(bounded - rfsq.decode(rfsq.encode(z, n_q))).abs().amax(dim=(0, 2)) for n_q in (1, 2, 3)]
    steps = torch.tensor(levels, dtype=torch.float32) - 1
    for n_q, error in enumerate(errors, start=1):  # within half a step of stage n_q: 1 / (L - 1)^n_q
        assert bool((error <= 1.0001 / steps**n_q).all()), (n_q, error)
    assert errors[2].max() < errors[1].max() / 3 < errors[0].max() / 9
    out = rfsq(z)
    assert out.codes.shape == (4, 3, 100) and torch.equal(out.codes, rfsq.encode(z))
    torch.testing.assert_close(rfsq.decode(out.codes), out.quantized)
    assert rfsq.codebook_size == 1000 and int(out.codes.max()) < 1000


def test_residual_fsq_gradient_goes_straight_through_the_stack_and_the_bound():
    torch.manual_seed(4)
    rfsq = ResidualFSQ(2, 3, [5, 5, 5]).train()
    z = torch.randn(2, 3, 25, requires_grad=True)
    upstream = torch.randn(2, 3, 25)
    rfsq(z).quantized.backward(upstream)
    torch.testing.assert_close(z.grad, upstream * (1 - torch.tanh(z.detach()) ** 2))


def test_clamp_bound_has_equal_cells():
    fsq = FSQ([5], bound="clamp").eval()
    z = torch.linspace(-1, 1, 2001)[None, None]
    codes = fsq(z).quantized
    assert (codes - z).abs().max() <= 0.25 + 1e-6  # half a step of 2 / (L - 1)
    assert set(fsq.encode(z).unique().tolist()) == {0, 1, 2, 3, 4}
    grid = FSQ([4], bound="clamp").decode(torch.arange(4)[None])  # even L: symmetric, no zero level
    torch.testing.assert_close(grid[0, 0], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))


def test_residual_fsq_with_projection_and_dropout_trains():
    torch.manual_seed(5)
    rfsq = ResidualFSQ(3, 16, [8, 5, 5, 5], quantizer_dropout=0.5).train()
    opt = torch.optim.Adam(rfsq.parameters(), lr=1e-2)
    z = torch.randn(8, 16, 40)
    first = None
    for _ in range(30):
        out = rfsq(z)
        loss = (out.quantized - z).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert out.stats["n_q"].min() >= 1 and len(set(out.stats["n_q"].tolist())) > 1
    assert rfsq.eval()(z).quantized.sub(z).square().mean().item() < 0.7 * first


@pytest.mark.parametrize("levels", [[1, 5], [], [2.5, 3], "855", [True, 3], [65536, 65536, 2]])
def test_bad_levels_are_config_errors(levels):
    with pytest.raises(ConfigError, match="levels|level"):
        FSQ(levels)
    with pytest.raises(ConfigError, match="levels|level"):
        ResidualFSQ(2, 4, levels)


def test_other_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="dim"):
        FSQ([5, 5], dim=0)
    with pytest.raises(ConfigError, match="scale"):
        FSQ([5, 5], scale=[1.0])
    with pytest.raises(ConfigError, match="n_q"):
        ResidualFSQ(0, 4, [5, 5])


@pytest.mark.parametrize("residual", [False, True])
def test_noise_dropout_substitutes_noise_within_a_cell_in_training_only(residual):
    torch.manual_seed(6)
    levels = [8, 5, 5, 5]
    fsq = ResidualFSQ(1, 4, levels) if residual else FSQ(levels, bound="clamp")
    assert fsq.noise_dropout == 0.5  # the default
    z = torch.rand(4, 4, 500) * 1.8 - 0.9  # inside the clamp, and tanh(z) inside (-1, 1)
    bounded = torch.tanh(z) if residual else z
    rounded = fsq.eval()(z).quantized
    noisy = fsq.train()(z).quantized
    off_grid = (noisy - rounded).abs() > 1e-6
    assert 0.45 < off_grid.float().mean().item() < 0.55  # about half the elements
    cell = 2 / (torch.tensor(levels, dtype=torch.float32)[:, None] - 1)
    assert bool(((noisy - bounded).abs() <= cell / 2 + 1e-6).all())  # noise within the input's own cell
    assert torch.equal(fsq(z).indices if not residual else fsq(z).codes[:, 0], fsq.encode(z) if not residual
                       else fsq.encode(z)[:, 0])  # the codes stay the rounded ones
    exact = ResidualFSQ(1, 4, levels, noise_dropout=0.0) if residual else FSQ(levels, bound="clamp", noise_dropout=0.0)
    torch.testing.assert_close(exact.train()(z).quantized, rounded)


def test_noise_dropout_must_be_a_probability():
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ConfigError, match="noise_dropout"):
            ResidualFSQ(1, 4, [5, 5], noise_dropout=bad)
        with pytest.raises(ConfigError, match="noise_dropout"):
            FSQ([5, 5], noise_dropout=bad)
