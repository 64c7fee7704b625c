"""Training-time augmentation (vqaudio.augment): each kind does what it says, draws are reproducible, only training
crops are augmented, the config is checked and saved, resumes are exact; and warm starts (train --init)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vqaudio.augment import AugmentConfig, augment
from vqaudio.checkpoint import load_model, save_model
from vqaudio.cli import main
from vqaudio.data import build_datasets
from vqaudio.errors import ConfigError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.train import TrainConfig, VQVAETask, fit, train_vqvae

SR = 8000
TINY = dict(hidden=8, max_hidden=16, dim=8, n_q=2, codebook_size=16, strides=[2, 4])


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _band_energy(x: torch.Tensor, lo: float, hi: float) -> float:
    spec = torch.fft.rfft(x[0]).abs() ** 2
    f = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


@pytest.fixture
def crop(speech_crops) -> torch.Tensor:
    return speech_crops[0] * 0.5  # [1, 2048], headroom for gain


def test_disabled_is_the_identity_and_draws_are_reproducible(crop):
    assert torch.equal(augment(crop, SR, AugmentConfig(), _g()), crop)
    cfg = AugmentConfig(p_gain=1, p_eq=1, p_telephone=0.5, p_reverb=0.5, p_noise=1)
    a, b, c = augment(crop, SR, cfg, _g(1)), augment(crop, SR, cfg, _g(1)), augment(crop, SR, cfg, _g(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == crop.shape and a.dtype == crop.dtype and torch.isfinite(a).all()


def test_gain_stays_in_range_and_under_the_peak(crop):
    for seed in range(20):
        y = augment(crop, SR, AugmentConfig(p_gain=1, gain_db=[-12, 12]), _g(seed))
        ratio_db = 20 * math.log10(float(y.abs().max() / crop.abs().max()))
        assert -12.01 <= ratio_db <= 12.01
        assert float(y.abs().max()) <= 0.99 + 1e-6


def test_noise_has_the_drawn_snr(crop):
    for seed in range(10):
        y = augment(crop, SR, AugmentConfig(p_noise=1, snr_db=[20, 20]), _g(seed))
        snr = 10 * math.log10(float(crop.pow(2).sum() / (y - crop).pow(2).sum()))
        assert abs(snr - 20) < 0.1


def test_telephone_band_removes_the_lows(crop):
    y = augment(crop, SR, AugmentConfig(p_telephone=1), _g())
    before, after = _band_energy(crop, 0, 150), _band_energy(y, 0, 150)
    assert after < 0.05 * before
    assert _band_energy(y, 800, 2500) > 0.5 * _band_energy(crop, 800, 2500)


def test_eq_and_reverb_change_the_colour_not_the_length(crop):
    y = augment(crop, SR, AugmentConfig(p_eq=1, eq_db=[9, 9]), _g())  # +9 dB bass and treble shelves
    assert _band_energy(y, 0, 150) > 3 * _band_energy(crop, 0, 150)
    r = augment(crop, SR, AugmentConfig(p_reverb=1, rt60_s=[0.4, 0.4], reverb_wet=[0.5, 0.5]), _g())
    assert r.shape == crop.shape and not torch.allclose(r, crop)
    # the reverberated crop is smeared: its envelope correlates less with the dry one's fine structure
    assert float(torch.nn.functional.cosine_similarity(r.flatten(), crop.flatten(), dim=0)) < 0.95


@pytest.mark.parametrize("bad", [{"p_noise": 1.5}, {"p_gain": -0.1}, {"snr_db": [30, 10]}, {"gain_db": [1]},
                                 {"rt60_s": [0, 0.3]}, {"reverb_wet": [0.5, 2]}, {"p_eq": "x"}, {"loud": 1}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError, match="AugmentConfig"):
        AugmentConfig.from_dict(bad)


def test_only_training_crops_are_augmented(speech_dir):
    cfg = AugmentConfig(p_noise=1, snr_db=[10, 10])
    train, valid, _ = build_datasets(str(speech_dir), 1024, SR, valid_fraction=0.2, augment=cfg)
    plain_train, plain_valid, _ = build_datasets(str(speech_dir), 1024, SR, valid_fraction=0.2)
    assert torch.equal(valid.sample(0, 0), plain_valid.sample(0, 0))
    assert torch.equal(train[0], plain_train[0])  # the fixed (validation-view) crop is never augmented
    assert not torch.equal(train.sample(0, 0), plain_train.sample(0, 0))
    assert torch.equal(train.sample(0, 0), train.sample(0, 0))
    with pytest.raises(ConfigError, match="series"):
        build_datasets("aeon:GunPoint", None, augment=cfg)


def test_cli_saves_the_augment_config_and_resumes_exactly(tmp_path, speech_dir):
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"model": TINY, "train": {"batch_size": 4, "log_every": 1, "valid_every": 2, "schedule": "constant",
                                                         "valid_batches": 1, "checkpoint_every": 2},
                                "augment": {"p_noise": 0.5, "p_eq": 0.5, "p_gain": 0.5}}))
    args = ["train", "--data", str(speech_dir), "--config", str(conf), "--segment", "512", "--no-progress", "--no-plots"]
    assert main([*args, "--exp", str(tmp_path / "a"), "--steps", "4"]) == 0
    saved = json.loads((tmp_path / "a" / "train.json").read_text())["task"]["augment"]
    assert saved["p_noise"] == 0.5 and saved["p_telephone"] == 0.0
    assert main([*args, "--exp", str(tmp_path / "b"), "--steps", "2"]) == 0
    # resume without --config: the augmentation comes from the run's train.json
    assert main(["train", "--data", str(speech_dir), "--exp", str(tmp_path / "b"), "--resume", "--steps", "4",
                 "--segment", "512", "--no-progress", "--no-plots"]) == 0
    a, b = load_model(tmp_path / "a" / "last").state_dict(), load_model(tmp_path / "b" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_warm_starts_from_a_model(tmp_path, speech_dir):
    torch.manual_seed(7)
    source = VQVAE(VQVAEConfig(**TINY))
    save_model(tmp_path / "src", source)
    cfg = TrainConfig(steps=1, batch_size=4, lr=1e-12, valid_every=1, valid_batches=1, checkpoint_every=1,
                      progress=False)
    train_vqvae(str(speech_dir), tmp_path / "warm", VQVAEConfig(**TINY), cfg, segment=512, plots=False,
                init=tmp_path / "src")
    warm = load_model(tmp_path / "warm" / "last").state_dict()
    start = source.state_dict()
    enc = [k for k in start if k.startswith("encoder.")]
    assert all(torch.allclose(warm[k], start[k], atol=1e-6) for k in enc)
    assert json.loads((tmp_path / "warm" / "train.json").read_text())["task"]["init"] == str(tmp_path / "src")
    with pytest.raises(ConfigError, match=r"--init .*differs .*'dim'"):
        train_vqvae(str(speech_dir), tmp_path / "bad", VQVAEConfig(**{**TINY, "dim": 4}), cfg, segment=512, plots=False,
                    init=tmp_path / "src")
    # a warm start may change the loss (a fine-tune with another objective), never the architecture
    tuned = VQVAEConfig(**{**TINY, "compressed_weight": 5.0, "spectral_weight": 0.5})
    train_vqvae(str(speech_dir), tmp_path / "tuned", tuned, cfg, segment=512, plots=False, init=tmp_path / "src")
    model = load_model(tmp_path / "tuned" / "last")
    assert model.config.compressed_weight == 5.0 and model.config.spectral_weight == 0.5
    assert all(torch.allclose(model.state_dict()[k], start[k], atol=1e-6) for k in enc)


def test_fit_with_an_augmenting_dataset_records_it(tmp_path, speech_dir):
    aug = AugmentConfig(p_gain=1)
    train, valid, _ = build_datasets(str(speech_dir), 512, SR, valid_fraction=0.2, augment=aug)
    cfg = TrainConfig(steps=1, batch_size=2, valid_every=1, valid_batches=1, checkpoint_every=1, progress=False)
    fit(VQVAETask(VQVAE(VQVAEConfig(**TINY)), plots=False, augment=aug), train, valid, cfg, tmp_path / "e")
    assert json.loads((tmp_path / "e" / "train.json").read_text())["task"]["augment"]["p_gain"] == 1.0
