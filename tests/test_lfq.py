"""LFQ / BSQ and ResidualLFQ: sign codes, the factorised entropy regulariser against the direct N x K one,
vector_quantize_pytorch parity, residual stages, errors, bounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from vqaudio.errors import ConfigError
from vqaudio.quantize import LFQ, ResidualLFQ
from vqaudio.quantize.lfq import code_distribution


def all_codes(bits: int, magnitude: float) -> torch.Tensor:
    """``[2^bits, bits]`` codes, index bit 0 (MSB) first."""
    k = torch.arange(2**bits)
    return ((k[:, None] >> torch.arange(bits - 1, -1, -1)) & 1).double() * 2 * magnitude - magnitude


def direct_entropies(x: torch.Tensor, magnitude: float, inv_temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """vector-quantize-pytorch's definition on rows ``x [N, b]``, with the N x K softmax built explicitly (no clamp)."""
    logits = 2 * inv_temperature * x @ all_codes(x.shape[1], magnitude).to(x.dtype).T  # [N, K]
    p = logits.softmax(dim=1)
    per_sample = -(p * p.log()).sum(1).mean()
    mean = p.mean(0)
    return per_sample, -(mean * mean.log()).sum()


def rows_of(z: torch.Tensor) -> torch.Tensor:
    return z.transpose(1, 2).reshape(-1, z.shape[1])


@pytest.mark.parametrize("bits", [1, 2, 5, 6])
def test_code_distribution_is_the_mean_of_the_per_row_code_distributions(bits):
    g = torch.Generator().manual_seed(bits)
    logits = torch.randn(37, bits, generator=g, dtype=torch.float64) * 2
    sums, count = code_distribution(logits)
    p_one = torch.sigmoid(logits)  # p(bit = 1)
    codes = all_codes(bits, 0.5) + 0.5  # [K, b] bits
    direct = (codes[None] * p_one[:, None] + (1 - codes[None]) * (1 - p_one[:, None])).prod(-1)  # [N, K]
    assert count.item() == 37
    torch.testing.assert_close(sums, direct.sum(0))


@pytest.mark.parametrize("spherical", [False, True])
def test_codes_indices_and_entropies(spherical):
    torch.manual_seed(0)
    lfq = LFQ(4, 16, entropy_loss_weight=1.0, diversity_gamma=1.0, beta=0.0, inv_temperature=2.0, spherical=spherical)
    z = torch.randn(3, 4, 20, requires_grad=True)
    out = lfq.train()(z)
    x = rows_of(z.detach())
    if spherical:
        x = torch.nn.functional.normalize(x, dim=1)
    m = 0.5 if spherical else 1.0
    torch.testing.assert_close(rows_of(out.quantized.detach()), torch.where(x > 0, m, -m))
    expected_idx = ((x > 0).long() * torch.tensor([8, 4, 2, 1])).sum(1)
    assert torch.equal(out.indices.reshape(-1), expected_idx)
    # the loss is H_sample - H_batch of the direct N x K definition, and so is its gradient
    zz = z.detach().clone().requires_grad_(True)
    xx = rows_of(zz)
    if spherical:
        xx = torch.nn.functional.normalize(xx, dim=1)
    h_sample, h_batch = direct_entropies(xx.double(), m, 2.0)
    torch.testing.assert_close(out.loss.double(), h_sample - h_batch, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    (h_sample - h_batch).backward()
    torch.testing.assert_close(z.grad, zz.grad.float(), rtol=1e-4, atol=1e-6)


def test_commitment_term_and_eval_loss():
    lfq = LFQ(3, 8, entropy_loss_weight=0.0, beta=0.5)
    z = torch.tensor([[[0.5, -2.0]], [[1.0, 1.0]], [[-0.1, 3.0]]]).reshape(1, 3, 2)
    out = lfq.train()(z)
    assert out.loss.item() == pytest.approx(0.5 * ((0.5**2 + 1 + 0 + 0 + 0.9**2 + 4) / 6), rel=1e-6)
    assert out.indices.tolist() == [[6, 3]]
    assert lfq.eval()(z).loss.item() == 0


def test_matches_vector_quantize_pytorch():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(1)
    for spherical in (False, True):
        theirs = vqp.LFQ(dim=5, codebook_size=32, entropy_loss_weight=1.0, commitment_loss_weight=0.0,
                         channel_first=True, spherical=spherical).train()
        ours = LFQ(5, 32, entropy_loss_weight=1.0, beta=0.0, inv_temperature=1.0, spherical=spherical).train()
        z = torch.randn(2, 5, 30)
        (q, idx, _), breakdown = theirs(z, inv_temperature=1.0, return_loss_breakdown=True)
        out = ours(z)
        torch.testing.assert_close(out.quantized, q)
        assert torch.equal(out.indices, idx)
        # vector-quantize-pytorch clamps probabilities at 1e-5 inside the logs: equal up to that
        torch.testing.assert_close(out.loss, breakdown.per_sample_entropy - breakdown.batch_entropy, rtol=1e-3, atol=1e-3)


def test_defaults_follow_vector_quantize_pytorch():
    assert (LFQ(codebook_size=1024).dim, LFQ(codebook_size=1024).project_in) == (10, None)
    assert LFQ(dim=6).codebook_size == 64
    with pytest.raises(ConfigError, match="power of two"):
        LFQ()


def test_decode_inverts_encode_with_projection():
    torch.manual_seed(2)
    lfq = LFQ(16, 1024).eval()
    assert lfq.project_in.weight.shape == (10, 16)
    z = torch.randn(2, 16, 50)
    codes = lfq.encode(z)
    assert int(codes.max()) < 1024 and torch.equal(codes, lfq(z).indices)
    torch.testing.assert_close(lfq.decode(codes), lfq(z).quantized)
    bits = lfq.decode(torch.arange(1024)[None])
    assert torch.unique(bits[0].T, dim=0).shape[0] == 1024


def test_training_spreads_usage_over_the_codebook():
    """With the batch term, a projection trained on the regulariser alone uses most of 64 codes."""
    torch.manual_seed(3)
    lfq = LFQ(8, 64, entropy_loss_weight=1.0, beta=0.0, inv_temperature=10.0).train()
    opt = torch.optim.Adam(lfq.parameters(), lr=0.05)
    z = torch.randn(16, 8, 64)
    start = lfq(z).usage.item()
    for _ in range(60):
        out = lfq(z)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert lfq.eval()(z).usage.item() > max(0.9, start)


def test_mask_limits_loss_and_stats():
    lfq = LFQ(2, 4, beta=1.0, entropy_loss_weight=0.0).train()
    z = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[-2.0, -2.0], [-2.0, -2.0]]])
    out = lfq(z, mask=torch.tensor([True, False]))
    assert out.loss.item() == 0 and out.usage.item() == 0.25
    assert lfq(z).usage.item() == 0.5


def test_residual_lfq_scales_and_round_trip():
    torch.manual_seed(4)
    rlfq = ResidualLFQ(3, 10, 1024).eval()
    assert [layer.codebook_scale for layer in rlfq.layers] == [1.0, 0.5, 0.25] and rlfq.project_in is None
    z = torch.randn(2, 10, 40)
    out = rlfq(z)
    assert out.codes.shape == (2, 3, 40) and torch.equal(out.codes, rlfq.encode(z))
    torch.testing.assert_close(rlfq.decode(out.codes), out.quantized)
    errors = [(z - rlfq.decode(rlfq.encode(z, n_q))).square().mean().item() for n_q in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]


def test_residual_lfq_trains_with_dropout_and_projection():
    torch.manual_seed(5)
    rlfq = ResidualLFQ(2, 12, 256, quantizer_dropout=0.5, spherical=True).train()
    z = torch.randn(4, 12, 30, requires_grad=True)
    out = rlfq(z)
    (out.quantized.square().mean() + out.loss).backward()
    assert torch.isfinite(z.grad).all() and rlfq.project_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(codebook_size=1000), "power of two"), (dict(codebook_size=1), "power of two"),
    (dict(codebook_size=16, entropy_loss_weight=-1.0), "entropy_loss_weight"),
    (dict(codebook_size=16, inv_temperature=0.0), "inv_temperature"), (dict(codebook_size=16, dim=0), "dim"),
])
def test_bad_options_are_config_errors(kwargs, match):
    kwargs = {"dim": 4, **kwargs}
    with pytest.raises(ConfigError, match=match):
        LFQ(**kwargs)
    if "codebook_size" in kwargs and kwargs["codebook_size"] != 16:
        with pytest.raises(ConfigError, match=match):
            ResidualLFQ(2, 4, kwargs["codebook_size"])
    with pytest.raises(ConfigError, match="codebook_scale"):
        ResidualLFQ(2, 4, 16, codebook_scale=2.0)


def test_regulariser_never_forms_an_n_by_k_tensor():
    """2^20 codes, 4096 frames: an N x K float tensor would take 16 GiB; the address space may grow by 2 GiB."""
    code = textwrap.dedent("""
        import resource, torch
        from vqaudio.quantize import LFQ
        lfq = LFQ(20, 2**20).train()
        lfq(torch.randn(1, 20, 4))  # warm-up: thread pools and allocator arenas mapped before the cap
        size = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize:')) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), size + (2 << 30)))
        out = lfq(torch.randn(4, 20, 1024, requires_grad=True))
        out.loss.backward()
        print(float(out.loss))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert torch.isfinite(torch.tensor(float(res.stdout.strip().splitlines()[-1])))


def test_residual_bsq_has_no_radial_gradient():
    """Spherical stages pass the gradient through their normalisation (see ResidualLFQ)."""
    torch.manual_seed(6)
    rlfq = ResidualLFQ(1, 8, 256, spherical=True, entropy_loss_weight=0.0, beta=0.0).train()
    z = torch.randn(2, 8, 30, requires_grad=True)
    rlfq(z).quantized.backward(torch.randn(2, 8, 30))
    radial = (z.grad * z.detach()).sum(1) / z.detach().norm(dim=1)
    assert radial.abs().max() < 1e-5 * z.grad.norm(dim=1).max()
