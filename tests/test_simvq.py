"""SimVQ and ResidualSimVQ: mapped-codebook lookups through the fused op, losses and gradients by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqaudio.errors import ConfigError
from vqaudio.ops.rotation import rotation_vjp
from vqaudio.quantize import ResidualSimVQ, SimVQ


def rows_of(z: torch.Tensor) -> torch.Tensor:
    return z.transpose(1, 2).reshape(-1, z.shape[1])


def test_lookup_is_the_nearest_mapped_code_through_the_fused_op(monkeypatch):
    torch.manual_seed(0)
    vq = SimVQ(8, 64).eval()
    seen = []

    class Spy:  # records the codebook each search op is given
        def __init__(self, real):
            self.real = real

        def __call__(self, x, codebook, *args):
            seen.append(codebook.clone())
            return self.real(x, codebook, *args)

        def __getattr__(self, name):
            return getattr(self.real, name)

    # training searches through the fused channels-first op, encode through nearest_code
    for name in ("nearest_code", "quantize_channels"):
        monkeypatch.setattr(torch.ops.vqaudio, name, Spy(getattr(torch.ops.vqaudio, name)))
    z = torch.randn(3, 8, 20)
    out = vq(z)
    mapped = vq.frozen_codebook @ vq.code_transform.weight.T + vq.code_transform.bias
    torch.testing.assert_close(seen[0], mapped)
    expected = torch.cdist(rows_of(z).double(), mapped.double()).argmin(1).view(3, 20)
    assert torch.equal(out.indices, expected) and torch.equal(vq.encode(z), expected)
    assert len(seen) == 2
    torch.testing.assert_close(seen[1], mapped)
    torch.testing.assert_close(out.quantized, mapped[expected].transpose(1, 2))
    torch.testing.assert_close(vq.decode(expected), out.quantized)


def test_losses_and_gradients_by_hand():
    torch.manual_seed(1)
    beta = 0.25
    vq = SimVQ(4, 16, beta=beta).train()
    z = torch.randn(2, 4, 10, requires_grad=True)
    out = vq(z)
    mapped = (vq.frozen_codebook @ vq.code_transform.weight.T + vq.code_transform.bias).detach()
    x, e = rows_of(z.detach()), mapped[out.indices.reshape(-1)]
    assert out.loss.item() == pytest.approx((1 + beta) * (x - e).square().mean().item(), rel=1e-5)
    out.loss.backward()
    torch.testing.assert_close(rows_of(z.grad), beta * 2 * (x - e) / x.numel())  # commitment only reaches z
    # the codebook term reaches the map: d/dW mean ||W c_k + b - sg[x]||² = 2/n sum (W c + b - x) c^T
    c = vq.frozen_codebook[out.indices.reshape(-1)]
    torch.testing.assert_close(vq.code_transform.weight.grad, 2 * (e - x).T @ c / x.numel())
    torch.testing.assert_close(vq.code_transform.bias.grad, 2 * (e - x).sum(0) / x.numel())
    assert not vq.frozen_codebook.requires_grad


@pytest.mark.parametrize("rotation_trick", [False, True])
def test_output_gradient_straight_through_or_rotated(rotation_trick):
    torch.manual_seed(2)
    vq = SimVQ(6, 32, rotation_trick=rotation_trick).train()
    z = torch.randn(2, 6, 9, requires_grad=True)
    out = vq(z)
    upstream = torch.randn(2, 6, 9)
    out.quantized.backward(upstream)
    expected = rotation_vjp(rows_of(z.detach()), rows_of(out.quantized.detach()), rows_of(upstream)) if rotation_trick \
        else rows_of(upstream)
    torch.testing.assert_close(rows_of(z.grad), expected)
    grad_w = vq.code_transform.weight.grad  # the output gives the map no gradient (it learns by its loss)
    assert grad_w is None or not grad_w.any()


def test_training_the_map_reduces_the_error_and_keeps_codes_in_use():
    torch.manual_seed(3)
    vq = SimVQ(4, 32).train()
    opt = torch.optim.Adam(vq.parameters(), lr=0.02)
    z = torch.randn(8, 4, 64) * 3 + 1
    before = vq.eval()(z)
    vq.train()
    for _ in range(100):
        out = vq(z)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = vq.eval()(z)
    assert after.loss.item() < 0.5 * before.loss.item()
    assert after.usage.item() >= before.usage.item()


def test_state_dict_and_residual_stack():
    torch.manual_seed(4)
    rvq = ResidualSimVQ(3, 6, 16, quantizer_dropout=0.5, rotation_trick=True)
    assert {"layers.0.frozen_codebook", "layers.0.code_transform.weight"} <= set(rvq.state_dict())
    z = torch.randn(4, 6, 12, requires_grad=True)
    out = rvq.train()(z)
    (out.quantized.square().mean() + out.loss).backward()
    assert torch.isfinite(z.grad).all() and rvq.layers[0].code_transform.weight.grad is not None
    clone = ResidualSimVQ(3, 6, 16)
    clone.load_state_dict(rvq.state_dict())
    rvq.eval(), clone.eval()
    codes = rvq.encode(z.detach())
    assert torch.equal(clone.encode(z.detach()), codes)
    torch.testing.assert_close(rvq.decode(codes), rvq(z.detach()).quantized)
    errors = [(z.detach() - rvq.decode(rvq.encode(z.detach(), n))).square().mean().item() for n in (1, 2, 3)]
    assert errors[0] > errors[2]


@pytest.mark.parametrize("kwargs,match", [(dict(dim=0), "dim"), (dict(codebook_size=0), "codebook_size"),
                                          (dict(beta=-1.0), "beta"), (dict(dead_threshold=-1.0), "dead_threshold"),
                                          (dict(decay=1.0), "decay")])
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SimVQ(**{"dim": 4, "codebook_size": 8, **kwargs})
    with pytest.raises(ConfigError, match="n_q"):
        ResidualSimVQ(0, 4, 8)


def test_losses_and_gradients_with_beta_zero():
    torch.manual_seed(5)
    vq = SimVQ(4, 16, beta=0.0).train()
    z = torch.randn(2, 4, 10, requires_grad=True)
    out = vq(z)
    mapped = (vq.frozen_codebook @ vq.code_transform.weight.T + vq.code_transform.bias).detach()
    x, e = rows_of(z.detach()), mapped[out.indices.reshape(-1)]
    assert out.loss.item() == pytest.approx((x - e).square().mean().item(), rel=1e-5)
    out.loss.backward()
    assert z.grad is None or z.grad.abs().sum() == 0  # no commitment
    c = vq.frozen_codebook[out.indices.reshape(-1)]
    torch.testing.assert_close(vq.code_transform.weight.grad, 2 * (e - x).T @ c / x.numel())


def small_latents() -> torch.Tensor:
    """A new encoder's output: frames close to one point away from the origin, anisotropic."""
    torch.manual_seed(7)
    scales = torch.logspace(-3, -1.5, 16)
    return torch.randn(8, 16, 64) * scales[None, :, None] + 0.2 * torch.randn(1, 16, 1)


def test_data_init_fits_the_map_to_the_first_batch():
    z = small_latents()
    torch.manual_seed(0)
    collapsed = SimVQ(16, 256, data_init=False).train()(z)
    torch.manual_seed(0)
    vq = SimVQ(16, 256).train()
    out = vq(z)
    codes, rows = vq.codes().detach().double(), rows_of(z).double()
    torch.testing.assert_close(codes.mean(0), rows.mean(0), rtol=1e-4, atol=1e-8)  # the latents' mean ...
    cov_codes, cov_rows = torch.cov(codes.T, correction=0), torch.cov(rows.T, correction=0)
    s2 = (cov_codes.trace() / cov_rows.trace()).item()  # ... their covariance times s^2 ...
    torch.testing.assert_close(cov_codes, s2 * cov_rows, rtol=1e-3, atol=1e-9)
    distortion = torch.ops.vqaudio.nearest_code(rows_of(z), vq.codes().detach())[1].double().mean() / cov_rows.trace()
    assert 0 < s2 < 1 and abs(s2 - (1 - distortion.item())) < 0.05  # ... at the k-means fixed point s^2 = 1 - D
    # a random map leaves these latents on a handful of codes; the fitted one spreads them
    assert collapsed.perplexity.item() < 10 and out.perplexity.item() > 80


def test_data_init_happens_once_and_not_after_loading_a_state():
    z = small_latents()
    vq = SimVQ(16, 64).train()
    vq(z)
    fitted = vq.code_transform.weight.detach().clone()
    vq(z * 100)
    torch.testing.assert_close(vq.code_transform.weight, fitted)  # the second batch does not refit
    loaded = SimVQ(16, 64)
    loaded.load_state_dict(SimVQ(16, 64).state_dict())
    before = loaded.code_transform.weight.detach().clone()
    loaded.train()(z)
    torch.testing.assert_close(loaded.code_transform.weight, before)  # a checkpoint's map is kept
    evaluated = SimVQ(16, 64).eval()
    before = evaluated.code_transform.weight.detach().clone()
    evaluated(z)
    torch.testing.assert_close(evaluated.code_transform.weight, before)  # inference never fits


def closest_short_row(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, radius: float) -> torch.Tensor:
    """argmin ||W c + b - x|| over ||c|| <= radius, by projected gradient descent (float64)."""
    w, b, x = w.double(), b.double(), x.double()
    c = torch.zeros(w.shape[1], dtype=torch.float64)
    step = 1 / torch.linalg.matrix_norm(w, 2).square()
    for _ in range(20000):
        c = c - step * (w.T @ (w @ c + b - x))
        c = c * min(1.0, radius / max(c.norm().item(), 1e-300))
    return c


def redraw_all_onto(vq: SimVQ, x: torch.Tensor) -> torch.Tensor:
    """Mark every code dead and run a training step on a batch whose frames are all ``x [dim]``."""
    vq.code_counts.step.fill_(1)  # statistics exist; every count 0 < threshold
    vq.code_counts.counts.zero_()
    vq(x[None, :, None].expand(2, -1, 5).contiguous())
    return vq.frozen_codebook


@pytest.mark.parametrize("weights", [[2.0, 1.0, 0.5, 0.25], [2.0, 1.0, 0.5, 1e-6]])
def test_dead_rows_are_redrawn_to_the_closest_code_to_a_latent_among_short_rows(weights):
    torch.manual_seed(9)
    vq = SimVQ(4, 16, data_init=False).train()
    with torch.no_grad():
        vq.code_transform.weight.copy_(torch.diag(torch.tensor(weights)) @ torch.linalg.qr(torch.randn(4, 4))[0])
        vq.code_transform.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    radius = vq.frozen_codebook.norm(dim=1).max().item()
    assert radius == vq.max_row_norm.item()
    w, b = vq.code_transform.weight.detach(), vq.code_transform.bias.detach()
    near = b + w @ (0.5 * radius * F.normalize(torch.randn(4), dim=0))  # reachable: the code lands on it
    rows = redraw_all_onto(vq, near)
    torch.testing.assert_close(vq.codes().detach(), near.expand(16, -1), atol=1e-5, rtol=0)
    far = torch.tensor([3.0, -2.0, 1.0, 2.5])  # out of reach (and, for the second map, 2.1 along a weak direction)
    rows = redraw_all_onto(vq, far)
    expected = closest_short_row(w, b, far, radius)
    assert rows.norm(dim=1).max() <= radius * (1 + 1e-5)  # an exact inverse would need a norm ~1e6 for the second
    torch.testing.assert_close(rows.double(), expected.expand(16, -1), atol=1e-4, rtol=0)


def test_live_rows_stay_and_redrawn_counts_restart():
    torch.manual_seed(8)
    vq = SimVQ(8, 64, dead_threshold=0.5).train()
    vq(torch.randn(4, 8, 32))  # first step: data init, counts start
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 17, 40]] = True
    vq.code_counts.counts.fill_(5.0)
    vq.code_counts.counts[dead] = 0.1
    before = vq.frozen_codebook.clone()
    vq(torch.randn(4, 8, 32))
    assert torch.equal(vq.frozen_codebook[~dead], before[~dead])  # live rows stay
    assert not torch.equal(vq.frozen_codebook[dead], before[dead]) and not vq.frozen_codebook.requires_grad
    # re-drawn codes restart at count max(threshold, 1) (then this step's counts are averaged in)
    assert (vq.code_counts.counts[dead] >= 0.99 * 0.9).all()


def test_without_restart_dead_codes_keep_their_rows_and_the_state_resumes_exactly():
    torch.manual_seed(10)
    off = SimVQ(8, 64, dead_threshold=0.0).train()
    frozen0 = off.frozen_codebook.clone()
    for _ in range(3):
        off(torch.randn(4, 8, 16) + 3)
    assert torch.equal(off.frozen_codebook, frozen0)  # dead_threshold 0: no restarts
    a = SimVQ(8, 64).train()
    frozen0 = a.frozen_codebook.clone()  # default dead_threshold 1
    a(torch.randn(4, 8, 16) + 3)
    a(torch.randn(4, 8, 16) + 3)
    assert not torch.equal(a.frozen_codebook, frozen0)  # restarts fired (latents far from most codes)
    assert {"code_counts.counts", "code_counts.step", "code_counts.seed"} <= set(a.state_dict())
    b = SimVQ(8, 64).train()
    b.load_state_dict(a.state_dict())
    z = torch.randn(4, 8, 16) + 3
    out_a, out_b = a(z), b(z)
    assert torch.equal(a.frozen_codebook, b.frozen_codebook)  # the same rows re-drawn onto the same latents
    assert torch.equal(out_a.indices, out_b.indices)
    assert torch.equal(a.code_counts.counts, b.code_counts.counts)


def test_redraw_rows_of_a_frozen_codebook_unchanged_without_dead_codes():
    torch.manual_seed(11)
    vq = SimVQ(4, 8, dead_threshold=1e-9).train()
    z = torch.randn(8, 4, 64)
    vq(z)
    frozen = vq.frozen_codebook.clone()
    vq.code_counts.counts.fill_(1.0)
    vq(z)
    assert torch.equal(vq.frozen_codebook, frozen)
