"""Sampling: top-k / top-p never emit a filtered token, seeded generation is reproducible, priming, labels."""

from __future__ import annotations

import pytest
import torch

from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior
from vqaudio.sampling import filter_logits, generate, generate_naive, make_generator, sample_logits


def _model(n_q: int = 2, n_labels: int = 0) -> WaveNetPrior:
    torch.manual_seed(1)
    cfg = WaveNetConfig(codebook_size=13, n_q=n_q, residual_channels=8, gate_channels=8, skip_channels=8,
                        head_channels=16, layers=4, cycle=2, n_labels=n_labels)
    return WaveNetPrior(cfg).eval()


def test_top_k_never_emits_filtered_token() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g) * 0.3  # flat-ish, so the tail would often be drawn unfiltered
    allowed = torch.topk(logits, 5, dim=-1).indices
    draws = torch.stack([sample_logits(logits, 1.0, top_k=5, generator=g) for _ in range(2000)], 1)  # [4, 2000]
    for row in range(4):
        seen = set(draws[row].tolist())
        assert seen <= set(allowed[row].tolist())
        assert len(seen) == 5  # and every allowed token does come up
    # without the filter the tail is drawn (the test above can fail)
    free = torch.stack([sample_logits(logits, 1.0, generator=g) for _ in range(500)], 1)
    assert not set(free[0].tolist()) <= set(allowed[0].tolist())


def test_top_p_keeps_smallest_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04], [0.04, 0.06, 0.9, 0.0, 0.0]])
    logits = probs.clamp_min(1e-12).log()
    kept = torch.isfinite(filter_logits(logits, top_p=0.8))
    assert kept[0].tolist() == [True, True, True, False, False]  # 0.5 + 0.25 < 0.8 <= 0.9
    assert kept[1].tolist() == [False, False, True, False, False]  # the top token alone covers 0.8
    assert torch.isfinite(filter_logits(logits, top_p=0.75))[0].tolist() == [True, True, False, False, False]
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([sample_logits(logits, 1.0, top_p=0.8, generator=g) for _ in range(3000)], 1)
    assert set(draws[0].tolist()) == {0, 1, 2} and set(draws[1].tolist()) == {2}
    # combined with top-k and a temperature: only the intersection survives
    draws = torch.stack([sample_logits(logits, 2.0, top_k=2, top_p=0.8, generator=g) for _ in range(2000)], 1)
    assert set(draws[0].tolist()) == {0, 1}


def test_filter_arguments() -> None:
    logits = torch.randn(2, 6)
    assert torch.equal(filter_logits(logits), logits)
    assert torch.equal(filter_logits(logits, top_k=0, top_p=1.0), logits)
    assert torch.equal(sample_logits(logits, 0.0), logits.argmax(-1))
    for bad in ({"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}):
        with pytest.raises(ValueError):
            filter_logits(logits, **bad)
    with pytest.raises(ValueError):
        sample_logits(logits, -1.0)


def test_seeded_generation_is_reproducible() -> None:
    model = _model()
    a = generate(model, 3, 25, top_k=8, generator=make_generator(7))
    b = generate(model, 3, 25, top_k=8, generator=make_generator(7))
    c = generate(model, 3, 25, top_k=8, generator=make_generator(8))
    assert a.shape == (3, 2, 25) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= int(a.min()) and int(a.max()) < 13
    assert not torch.equal(a[0], a[1])  # the batch rows are independent draws


def test_cached_and_naive_generation_draw_the_same_sequences() -> None:
    model = _model(n_q=3, n_labels=2)
    prime = torch.randint(0, 13, (3, 6))
    kw = {"temperature": 0.9, "top_p": 0.95, "prime": prime, "label": 1}
    fast = generate(model, 2, 20, generator=make_generator(5), **kw)
    slow = generate_naive(model, 2, 20, generator=make_generator(5), **kw)
    assert fast.shape == (2, 3, 26)
    assert torch.equal(fast, slow)
    assert torch.equal(fast[:, :, :6], prime.expand(2, -1, -1))


def test_generation_argument_errors() -> None:
    model = _model(n_q=2, n_labels=2)
    with pytest.raises(ValueError, match="label"):
        generate(model, 1, 3)
    with pytest.raises(ValueError, match="label"):
        generate(model, 1, 3, label=2)
    with pytest.raises(ValueError, match="prime tokens"):
        generate(model, 1, 3, label=0, prime=torch.full((2, 4), 13))
    with pytest.raises(ValueError, match="prime must be"):
        generate(model, 1, 3, label=0, prime=torch.zeros(3, 4, dtype=torch.long))


def test_draws_follow_the_distribution() -> None:
    """The inverse-CDF sampler: empirical frequencies match softmax(logits / T); zero-probability tokens never."""
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]])
    logits = probs.log()  # -inf where the probability is 0
    g = torch.Generator().manual_seed(0)
    n = 20000
    draws = sample_logits(logits.repeat_interleave(n, 0), 1.0, generator=g).view(2, n)
    freq = torch.stack([torch.bincount(r, minlength=6).double() / n for r in draws])
    assert torch.allclose(freq, probs.double(), atol=0.015)
    assert freq[0, [0, 2, 5]].sum() == 0
    hot = sample_logits(logits[1:].repeat(n, 1), 0.5, generator=g)  # T = 0.5 sharpens: p ∝ p^2
    sharp = probs[1] ** 2 / (probs[1] ** 2).sum()
    assert torch.allclose(torch.bincount(hot, minlength=6).double() / n, sharp.double(), atol=0.015)
