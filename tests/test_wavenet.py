"""WaveNet prior: cached incremental logits == teacher-forced forward, receptive field, config round trip."""

from __future__ import annotations

import pytest
import torch

from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior


def _model(n_q: int = 3, n_labels: int = 0, kernel_size: int = 2, seed: int = 0) -> WaveNetPrior:
    torch.manual_seed(seed)
    cfg = WaveNetConfig(
        codebook_size=11, n_q=n_q, residual_channels=8, gate_channels=12, skip_channels=10, head_channels=16,
        kernel_size=kernel_size, layers=6, cycle=3, n_labels=n_labels,
    )
    return WaveNetPrior(cfg).double().eval()


def _randomise(model: WaveNetPrior) -> None:
    """Non-zero biases everywhere so that a wrong cache or padding cannot hide behind zeros."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)


def _incremental_logits(model: WaveNetPrior, codes: torch.Tensor, label, prime_len: int = 0) -> torch.Tensor:
    """Logits[B, Q, F, K] of every token from the cache, teacher-forcing the given codes (after prime_len)."""
    B, Q, F = codes.shape
    prime = codes[:, :, :prime_len] if prime_len else None
    state, ctx = model.init_state(B, label, prime)
    out = []
    for t in range(prime_len, F):
        if t % 2:  # the generation path: running sum of the frame's earlier stages' embeddings
            acc, logits = ctx, []
            for q in range(Q):
                logits.append(model.stage_head(acc, q))
                acc = acc + model.stage_embedding(codes[:, q, t], q)
        else:  # the stateless path: stage q from all earlier stages at once
            logits = [model.stage_logits(ctx, codes[:, :, t], q) for q in range(Q)]
        out.append(torch.stack(logits, dim=1))
        ctx = model.step(state, model.embed_frame(codes[:, :, t]))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize(("n_q", "n_labels", "kernel_size"), [(1, 0, 2), (3, 0, 2), (3, 4, 2), (2, 3, 3)])
def test_cached_logits_match_full_forward(n_q: int, n_labels: int, kernel_size: int) -> None:
    model = _model(n_q, n_labels, kernel_size)
    _randomise(model)
    B, F = 3, 40  # longer than the receptive field, so the ring buffers wrap
    assert model.receptive_field < F
    codes = torch.randint(0, 11, (B, n_q, F))
    label = torch.tensor([0, 2, 1]) if n_labels else None
    full = model(codes, label)
    for prime_len in (0, 1, 5, 33):
        inc = _incremental_logits(model, codes, label, prime_len)
        torch.testing.assert_close(inc, full[:, :, prime_len:], atol=1e-5, rtol=0)


def test_cached_logits_float32() -> None:
    model = _model(3, 2).float()
    codes = torch.randint(0, 11, (2, 3, 30))
    label = torch.tensor([1, 0])
    torch.testing.assert_close(_incremental_logits(model, codes, label), model(codes, label), atol=1e-5, rtol=0)


def test_label_changes_logits() -> None:
    model = _model(2, 3)
    _randomise(model)
    codes = torch.randint(0, 11, (1, 2, 12))
    a, b = model(codes, torch.tensor([0])), model(codes, torch.tensor([2]))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_receptive_field(kernel_size: int) -> None:
    model = _model(2, 0, kernel_size)
    _randomise(model)
    rf = model.receptive_field
    assert rf == (kernel_size - 1) * (1 + 2 + 4) * 2 + 1
    F = rf + 10
    t = F - 1  # the frame whose logits we watch
    codes = torch.randint(0, 11, (1, 2, F))
    base = model(codes)[:, :, t]
    outside, inside = codes.clone(), codes.clone()
    outside[:, :, t - rf - 1] = (outside[:, :, t - rf - 1] + 1) % 11  # one frame too far back
    inside[:, :, t - rf] = (inside[:, :, t - rf] + 1) % 11  # the oldest frame it can see
    torch.testing.assert_close(model(outside)[:, :, t], base, atol=0, rtol=0)
    assert (model(inside)[:, :, t] - base).abs().max() > 1e-6
    # causality: the current and future frames never change the context; stage q sees only stages < q
    later = codes.clone()
    later[:, 1, t] = (later[:, 1, t] + 1) % 11
    diff = (model(later)[:, :, t] - base).abs().amax(-1)[0]
    assert diff[0] == 0 and diff[1] == 0


def test_config_round_trip_and_checks() -> None:
    cfg = WaveNetConfig(codebook_size=7, n_q=2, layers=4, cycle=2, n_labels=3)
    assert WaveNetConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.dilations == [1, 2, 1, 2]
    with pytest.raises(ValueError):
        WaveNetConfig(gate_channels=7)
    with pytest.raises(ValueError, match="unknown keys"):
        WaveNetConfig.from_dict({"layer": 3})
    model = WaveNetPrior(cfg)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 2, 5, dtype=torch.long))  # label missing
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 5, dtype=torch.long), torch.tensor([0]))  # wrong n_q
