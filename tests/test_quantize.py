"""VectorQuantizer and ResidualVQ: maths against hand computations, restarts, stats, RVQ behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vqaudio.ops
from vqaudio.quantize import ResidualVQ, VectorQuantizer

# Codebook and batches for the hand computations: codes e0 = (0, 0), e1 = (10, 0), e2 = (0, 10).
CODEBOOK = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
BATCH1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0], [11.0, -1.0]]).T[None]  # [1, 2, 4] -> codes 0 0 1 1
BATCH2 = torch.tensor([[1.0, 1.0], [10.0, 2.0], [9.0, 0.0]]).T[None]  # [1, 2, 3] -> codes 0 1 1


def make_vq(**kwargs) -> VectorQuantizer:
    vq = VectorQuantizer(2, 3, **kwargs)
    vq.codebook.data.copy_(CODEBOOK)
    return vq


def test_ema_update_matches_sonnet_debiased_ema_by_hand():
    decay, eps, beta = 0.9, 1e-5, 0.25
    vq = make_vq(beta=beta, decay=decay, eps=eps, dead_threshold=0.0).train()
    z = BATCH1.clone().requires_grad_(True)
    out1 = vq(z)
    assert out1.indices.tolist() == [[0, 0, 1, 1]]
    # commitment only, against the codebook before the update: squared errors 1 + 1 + 2 + 2 over 8 elements
    assert out1.loss.item() == pytest.approx(beta * 6 / 8)
    out1.loss.backward()  # after the in-place EMA update: the gradient still uses the codebook of the forward
    x, e = BATCH1[0].T, CODEBOOK[torch.tensor([0, 0, 1, 1])]
    torch.testing.assert_close(z.grad[0].T, beta * 2 * (x - e) / 8)
    out2 = vq(BATCH2)
    assert out2.indices.tolist() == [[0, 1, 1]]

    # sonnet: zero-started EMAs read through the debiasing 1 - decay^t, then Laplace smoothing
    batch_counts = [[2, 2, 0], [1, 2, 0]]
    batch_sums = [[(1, 1), (20, 0), (0, 0)], [(1, 1), (19, 2), (0, 0)]]
    ema_n, ema_m = [0.0] * 3, [[0.0, 0.0] for _ in range(3)]
    for counts, sums in zip(batch_counts, batch_sums, strict=True):
        ema_n = [decay * a + (1 - decay) * c for a, c in zip(ema_n, counts, strict=True)]
        ema_m = [
            [decay * a + (1 - decay) * s for a, s in zip(am, sm, strict=True)]
            for am, sm in zip(ema_m, sums, strict=True)
        ]
    debias = 1 - decay**2
    n_k = [a / debias for a in ema_n]
    m_k = [[a / debias for a in row] for row in ema_m]
    n = sum(n_k)
    smoothed = [(c + eps) / (n + 3 * eps) * n for c in n_k]
    expected = [[m / s for m in row] for row, s in zip(m_k, smoothed, strict=True)]

    torch.testing.assert_close(vq.cluster_size, torch.tensor(n_k), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vq.embed_sum, torch.tensor(m_k), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vq.codebook, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    # closed forms (eps -> 0): n_0 = 0.28 / 0.19, m_0 = (0.19, 0.19) / 0.19, n_1 = 2, m_1 = (3.7, 0.2) / 0.19
    assert vq.codebook[0].tolist() == pytest.approx([19 / 28, 19 / 28], rel=1e-4)
    assert vq.codebook[1].tolist() == pytest.approx([185 / 19, 10 / 19], rel=1e-4)
    assert vq.codebook[2].abs().max() == 0  # never chosen, no restart: goes to the origin
    assert int(vq.step) == 2


def test_first_ema_step_sets_codes_to_batch_means():
    vq = make_vq(decay=0.99, eps=1e-5, dead_threshold=0.0).train()
    vq(BATCH1)
    torch.testing.assert_close(vq.codebook[:2], torch.tensor([[0.5, 0.5], [10.0, 0.0]]), rtol=1e-4, atol=1e-4)


def test_loss_mode_losses_and_gradients_by_hand():
    beta = 0.25
    vq = make_vq(ema=False, beta=beta, dead_threshold=0.0).train()
    assert isinstance(vq.codebook, torch.nn.Parameter)
    z = BATCH1.clone().requires_grad_(True)
    out = vq(z)
    assert out.loss.item() == pytest.approx((1 + beta) * 6 / 8)
    out.loss.backward()
    x = BATCH1[0].T  # [4, 2]
    e = CODEBOOK[torch.tensor([0, 0, 1, 1])]
    torch.testing.assert_close(z.grad[0].T, beta * 2 * (x - e) / 8)  # commitment only reaches z
    grad_e = torch.zeros(3, 2)
    grad_e[0] = 2 * ((e[0] - x[0]) + (e[1] - x[1])) / 8
    grad_e[1] = 2 * ((e[2] - x[2]) + (e[3] - x[3])) / 8
    torch.testing.assert_close(vq.codebook.grad, grad_e)  # codebook loss only reaches the codebook
    torch.testing.assert_close(vq.codebook.detach(), CODEBOOK)  # loss mode: only the optimiser moves it


@pytest.mark.parametrize("ema", [True, False])
def test_straight_through_gradient_is_identity(ema):
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16, ema=ema).train()
    z = torch.randn(2, 4, 9, requires_grad=True)
    upstream = torch.randn(2, 4, 9)
    out = vq(z)
    assert not torch.equal(out.quantized, z)
    (out.quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)


def test_indices_are_the_brute_force_nearest_codes():
    torch.manual_seed(1)
    vq = VectorQuantizer(5, 37).eval()
    z = torch.randn(3, 5, 11)
    out = vq(z)
    x = z.transpose(1, 2).reshape(-1, 5)
    expected = torch.cdist(x.double(), vq.codebook.double()).argmin(dim=1).view(3, 11)
    assert torch.equal(out.indices, expected)
    assert torch.equal(vq.encode(z), expected)
    assert torch.equal(out.quantized, vq.codebook[expected].permute(0, 2, 1))


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    d=st.integers(1, 6),
    t=st.integers(1, 9),
    k=st.integers(1, 12),
    n_q=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_rvq_codes_are_greedy_nearest_codes_of_the_residuals(b, d, t, k, n_q, seed):
    torch.manual_seed(seed)
    rvq = ResidualVQ(n_q, d, k).eval()
    z = torch.randn(b, d, t)
    out = rvq(z)
    residual = z.transpose(1, 2).reshape(-1, d).double()
    for stage, layer in enumerate(rvq.layers):
        e = layer.codebook.double()
        d2 = torch.cdist(residual, e).square()
        chosen = out.codes[:, stage].reshape(-1)
        best = d2.min(dim=1).values
        assert bool((d2.gather(1, chosen[:, None]).squeeze(1) <= best + 1e-9 * (1 + best)).all())
        residual = residual - e[chosen]
    torch.testing.assert_close(
        out.quantized.double(), z.double() - residual.view(b, t, d).transpose(1, 2), rtol=1e-5, atol=1e-5
    )


def test_eval_mode_is_a_pure_lookup_and_training_mode_is_not():
    torch.manual_seed(2)
    vq = VectorQuantizer(4, 8, kmeans_init=True)
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.eval()(torch.randn(2, 4, 16))
    assert all(torch.equal(v, before[k]) for k, v in vq.state_dict().items())
    vq.train()(torch.randn(2, 4, 16))
    changed = {k for k, v in vq.state_dict().items() if not torch.equal(v, before[k])}
    assert {"codebook", "cluster_size", "embed_sum", "step", "initialized"} <= changed


@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_is_reseeded_from_the_batch(ema):
    vq = make_vq(ema=ema, decay=0.9, dead_threshold=0.5).train()
    vq.codebook.data[2] = torch.tensor([1000.0, 1000.0])  # never chosen
    z = BATCH1
    out = vq(z)
    assert 2 not in out.indices
    rows = z[0].T
    new = vq.codebook.detach()[2]
    assert any(torch.equal(new, r) for r in rows), new  # one of this batch's encoder outputs
    assert vq.cluster_size[2].item() == 1.0  # reset count max(threshold, 1)
    if ema:
        torch.testing.assert_close(vq.embed_sum[2], new)
    # codes that were used are not restarted
    assert vq.cluster_size[0].item() == pytest.approx(2.0) and vq.cluster_size[1].item() == pytest.approx(2.0)


def test_no_restart_when_disabled():
    vq = make_vq(ema=False, dead_threshold=0.0).train()
    vq.codebook.data[2] = torch.tensor([1000.0, 1000.0])
    vq(BATCH1)
    assert vq.codebook[2].tolist() == [1000.0, 1000.0]


def test_perplexity_and_usage_by_hand():
    vq = VectorQuantizer(2, 4).eval()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    z = torch.tensor([[0.1, 0.0], [0.0, -0.2], [9.0, 0.0], [0.0, 11.0]]).T[None]  # codes 0 0 1 2
    out = vq(z)
    assert out.indices.tolist() == [[0, 0, 1, 2]]
    # p = (1/2, 1/4, 1/4, 0): H = 1.5 ln 2, perplexity 2^1.5
    assert out.perplexity.item() == pytest.approx(2**1.5, rel=1e-5)
    assert out.usage.item() == pytest.approx(0.75)


def test_kmeans_init_finds_clusters_with_the_fused_op(monkeypatch):
    calls = []
    real = vqaudio.ops.nearest_code

    def counting(x, codebook):
        calls.append(codebook.shape[0])
        return real(x, codebook)

    monkeypatch.setattr(vqaudio.ops, "nearest_code", counting)
    torch.manual_seed(3)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    labels = torch.arange(4).repeat(64)
    x = centres[labels] + 0.1 * torch.randn(256, 2)
    vq = VectorQuantizer(2, 16, kmeans_init=True, kmeans_iters=8, dead_threshold=0.0).train()
    initial = vq.codebook.clone()
    out = vq(x.T[None])
    assert len(calls) >= 8 and bool(vq.initialized) and int(vq.step) == 2  # k-means counts as step 1
    # Lloyd fixed point: every used code is (up to the last EMA step) the mean of its points
    idx = torch.cdist(x, vq.codebook).argmin(dim=1)
    for k in idx.unique():
        torch.testing.assert_close(vq.codebook[k], x[idx == k].mean(dim=0), rtol=1e-2, atol=1e-2)
    # every centre has a code on it, and the error is far below that of the random initial codebook
    assert torch.cdist(centres, vq.codebook).min(dim=1).values.max() < 0.2
    error = torch.cdist(x, vq.codebook).min(dim=1).values.square().mean()
    assert error < 0.05 < torch.cdist(x, initial).min(dim=1).values.square().mean()
    assert out.perplexity.item() > 3.5


def test_rvq_residual_decreases_with_stages():
    torch.manual_seed(4)
    rvq = ResidualVQ(4, 8, 32, kmeans_init=True).train()
    for _ in range(5):
        rvq(torch.randn(8, 8, 32))
    rvq.eval()
    z = torch.randn(8, 8, 32)
    errors = [(z - rvq.decode(rvq.encode(z, n_q))).square().mean().item() for n_q in range(1, 5)]
    assert z.square().mean().item() > errors[0]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors


@pytest.mark.parametrize("ema", [True, False])
def test_rvq_decode_encode_equals_forward(ema):
    torch.manual_seed(5)
    rvq = ResidualVQ(3, 6, 16, ema=ema, kmeans_init=True)
    rvq.train()(torch.randn(4, 6, 20))
    rvq.eval()
    z = torch.randn(2, 6, 13)
    out = rvq(z)
    codes = rvq.encode(z)
    assert codes.dtype == torch.int64 and codes.shape == (2, 3, 13)
    assert torch.equal(codes, out.codes)
    assert torch.equal(rvq.decode(codes), out.quantized)


def test_rvq_lower_n_q_at_inference():
    torch.manual_seed(6)
    rvq = ResidualVQ(4, 6, 16, kmeans_init=True)
    rvq.train()(torch.randn(4, 6, 20))
    rvq.eval()
    z = torch.randn(2, 6, 10)
    full = rvq.encode(z)
    for n_q in (1, 2, 3):
        out = rvq(z, n_q=n_q)
        assert out.codes.shape == (2, n_q, 10)
        assert torch.equal(rvq.encode(z, n_q), full[:, :n_q])  # codes of fewer stages are a prefix
        assert torch.equal(rvq.decode(full[:, :n_q]), out.quantized)
    assert not torch.equal(rvq.decode(full[:, :1]), rvq.decode(full))
    with pytest.raises(ValueError):
        rvq.encode(z, 5)
    with pytest.raises(ValueError):
        rvq.decode(torch.zeros(2, 5, 10, dtype=torch.int64))
    with pytest.raises(ValueError):
        rvq.decode(torch.full((2, 2, 10), 16))


def test_rvq_quantizer_dropout_varies_n_q_per_item():
    torch.manual_seed(7)
    n_q, batch, t = 4, 64, 5
    rvq = ResidualVQ(n_q, 3, 8, quantizer_dropout=1.0, ema=False, dead_threshold=0.0).train()
    z = torch.randn(batch, 3, t)
    out = rvq(z)
    n_item = out.stats["n_q"]
    assert n_item.shape == (batch,) and int(n_item.min()) >= 1 and int(n_item.max()) <= n_q
    assert len(set(n_item.tolist())) >= 3
    for i in range(batch):  # loss mode leaves codebooks unchanged, so decode reproduces the output
        expected = rvq.decode(out.codes[i : i + 1, : int(n_item[i])])
        torch.testing.assert_close(out.quantized[i : i + 1], expected)
    # the skipped stages of an item take no part in the usage statistics
    for stage, layer in enumerate(rvq.layers):
        assert layer.cluster_size.sum().item() == pytest.approx(t * int((n_item > stage).sum()))
    # no dropout without training
    assert bool((rvq.eval()(z).stats["n_q"] == n_q).all())
    # dropout = 0: every item uses every stage
    assert bool((ResidualVQ(n_q, 3, 8).train()(z).stats["n_q"] == n_q).all())


def test_rvq_straight_through_and_loss_with_dropout():
    torch.manual_seed(8)
    rvq = ResidualVQ(3, 4, 8, quantizer_dropout=0.5).train()
    z = torch.randn(6, 4, 7, requires_grad=True)
    upstream = torch.randn(6, 4, 7)
    out = rvq(z)
    (out.quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)
    assert out.loss.ndim == 0 and math.isfinite(out.loss.item()) and out.loss.item() > 0


@pytest.mark.parametrize("t", [1, 7, 33])
def test_shapes_for_odd_lengths(t):
    rvq = ResidualVQ(2, 5, 16, kmeans_init=True).train()
    out = rvq(torch.randn(3, 5, t))
    assert out.quantized.shape == (3, 5, t) and out.codes.shape == (3, 2, t)
    assert out.stats["perplexity"].shape == (2,) and out.stats["usage"].shape == (2,)
    assert rvq.decode(rvq.encode(torch.randn(1, 5, t))).shape == (1, 5, t)


def test_fully_masked_batch_leaves_the_state_alone():
    torch.manual_seed(10)
    vq = VectorQuantizer(4, 8).train()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    z = torch.randn(2, 4, 5, requires_grad=True)
    out = vq(z, mask=torch.tensor([False, False]))
    assert all(torch.equal(v, before[k]) for k, v in vq.state_dict().items())
    assert out.loss.item() == 0 and out.usage.item() == 0
    out.loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_wrong_shapes_raise():
    vq = VectorQuantizer(4, 8)
    with pytest.raises(ValueError):
        vq(torch.randn(2, 5, 3))
    with pytest.raises(ValueError):
        vq(torch.randn(4, 3))


@pytest.mark.parametrize("ema", [True, False])
def test_state_dict_round_trip(ema):
    torch.manual_seed(9)
    data = [torch.randn(4, 6, 12) for _ in range(4)]
    rvq = ResidualVQ(3, 6, 16, ema=ema, kmeans_init=True, dead_threshold=2.0).train()
    for z in data[:3]:
        rvq(z)
    torch.manual_seed(123)  # a different random init and restart seed before loading
    clone = ResidualVQ(3, 6, 16, ema=ema, kmeans_init=True, dead_threshold=2.0)
    clone.load_state_dict(rvq.state_dict())
    assert torch.equal(clone.eval().encode(data[3]), rvq.eval().encode(data[3]))
    # training continues identically, dead-code restarts included
    out_a, out_b = rvq.train()(data[3]), clone.train()(data[3])
    assert torch.equal(out_a.codes, out_b.codes)
    for key, value in rvq.state_dict().items():
        assert torch.equal(value, clone.state_dict()[key]), key


@pytest.mark.parametrize("family", ["vq", "vq_projected", "fsq", "lfq", "simvq"])
def test_decode_with_tables_equals_decode(family):
    """``decode(codes, decode_tables())`` (the stream decoder's lookups) gives ``decode(codes)``'s latents, and the
    same errors for bad codes."""
    from vqaudio.quantize import ResidualFSQ, ResidualLFQ, ResidualSimVQ

    torch.manual_seed(9)
    make = {"vq": lambda: ResidualVQ(3, 6, 16, kmeans_init=True),
            "vq_projected": lambda: ResidualVQ(3, 6, 16, codebook_dim=4, kmeans_init=True),
            "fsq": lambda: ResidualFSQ(3, 6, [5, 3, 3]),
            "lfq": lambda: ResidualLFQ(3, 6, 16),
            "simvq": lambda: ResidualSimVQ(3, 6, 16)}
    rvq = make[family]()
    rvq.train()(torch.randn(4, 6, 20))
    rvq.eval()
    codes = rvq.encode(torch.randn(2, 6, 13))
    tables = rvq.decode_tables()
    assert tables.shape[:2] == (3, rvq.codebook_size)
    for n_q in (1, 3):
        torch.testing.assert_close(rvq.decode(codes[:, :n_q], tables), rvq.decode(codes[:, :n_q]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="codes must lie in"):
        rvq.decode(torch.full((2, 2, 10), rvq.codebook_size), tables)
