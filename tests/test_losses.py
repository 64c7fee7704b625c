"""Reconstruction losses: zero at identity, ordered by distortion, scale-aware, differentiable."""

from __future__ import annotations

import torch

from vqaudio.losses import SpectralLoss, default_fft_sizes, default_n_mels, series_mse, waveform_l1


def test_defaults_for_8k():
    assert default_fft_sizes(8000) == [128, 256, 512, 1024]
    assert default_n_mels([128, 256, 512, 1024]) == [16, 32, 64, 80]
    assert default_fft_sizes(16000) == [256, 512, 1024, 2048]


def test_no_empty_mel_filters_and_no_checkpointed_buffers():
    for sr in (8000, 16000, 44100):
        loss = SpectralLoss(sr)
        for n in loss.fft_sizes:
            assert (getattr(loss, f"mel_{n}").sum(0) > 0).all()
        assert loss.state_dict() == {}


def test_spectral_loss_orders_distortions(speech_crops):
    loss = SpectralLoss(8000)
    y = speech_crops[:4]
    zero, parts = loss(y, y)
    assert zero == 0 and parts["mel"] == 0 and parts["logmag"] == 0
    g = torch.Generator().manual_seed(0)
    small = loss(y + 0.002 * torch.randn(y.shape, generator=g), y)[0]
    large = loss(y + 0.05 * torch.randn(y.shape, generator=g), y)[0]
    silence = loss(torch.zeros_like(y), y)[0]
    assert 0 < small < large < silence
    # a pure delay hurts L1 far more than the spectral loss, which ignores phase
    shifted = torch.roll(y, 3, dims=-1)
    assert loss(shifted, y)[0] < 0.2 * loss(torch.zeros_like(y), y)[0]
    assert waveform_l1(shifted, y) > 0.5 * waveform_l1(torch.zeros_like(y), y)


def test_spectral_loss_gradient_and_short_inputs():
    loss = SpectralLoss(8000)
    x = torch.randn(2, 1, 100, requires_grad=True)  # shorter than the largest window
    total, _ = loss(x, torch.randn(2, 1, 100))
    total.backward()
    assert x.grad is not None and x.grad.isfinite().all() and x.grad.abs().sum() > 0


def test_compressed_term_follows_loudness_not_log_level(speech_crops):
    """The power-law term (Braun & Tashev) is off by default, zero at identity, weighted into the total, and
    weighs an error in a loud signal more than the same relative error in a quiet one (log terms: equal)."""
    y = speech_crops[:4]
    plain, weighted = SpectralLoss(8000), SpectralLoss(8000, compressed_weight=5.0)
    assert weighted(y, y)[1]["compressed"] == 0
    x = y * 1.5
    base, parts = plain(x, y)
    assert "compressed" not in parts  # neither computed nor reported when its weight is 0
    total, parts = weighted(x, y)
    assert parts["compressed"] > 0 and torch.isclose(total, base + 5.0 * parts["compressed"])
    loud, quiet = weighted(x, y)[1], weighted(x * 0.1, y * 0.1)[1]
    assert loud["mel"] / quiet["mel"] < 1.2  # level-blind but for the 1e-5 magnitude floor
    assert loud["compressed"] / quiet["compressed"] > 3.5  # (10 ** 0.3) ** 2 = 3.98


def test_simple_losses():
    x, y = torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[[1.0, 0.0, 4.0]]])
    assert waveform_l1(x, y) == 1.0 and series_mse(x, y) == 5.0 / 3.0


def test_compressed_loss_config_is_checked_and_invisible_at_its_default():
    from vqaudio.errors import ConfigError
    from vqaudio.models import VQVAEConfig

    assert "compressed_weight" not in VQVAEConfig().to_dict() and "compression" not in VQVAEConfig().to_dict()
    assert VQVAEConfig(compressed_weight=5.0).to_dict()["compressed_weight"] == 5.0
    for bad, match in (({"compression": 0.0}, "compression must be in"), ({"compressed_weight": -1.0}, "must be >= 0")):
        try:
            VQVAEConfig(**bad)
        except ConfigError as err:
            assert match in str(err) and "\n" not in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")
