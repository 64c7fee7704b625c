"""Adversarial training: the MS-STFT discriminator, hinge / feature losses, the Adversary, and fit with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train import _Interrupt

from vqaudio.adversarial import AdversarialConfig, Adversary
from vqaudio.checkpoint import load_checkpoint, load_model
from vqaudio.cli import main
from vqaudio.data import build_datasets
from vqaudio.errors import ConfigError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.models.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, feature_loss, generator_loss
from vqaudio.train import TrainConfig, VQVAETask, fit

TINY = dict(hidden=4, max_hidden=8, dim=8, n_q=2, codebook_size=16, strides=[2, 4], quantizer_dropout=0.5)
ADV = AdversarialConfig(weight=0.5, feature_weight=1.0, channels=4, fft_sizes=[64, 128])


def test_discriminator_shapes_and_losses():
    torch.manual_seed(0)
    d = MultiScaleSTFTDiscriminator([64, 128], channels=4)
    x = torch.randn(3, 1, 1000)
    logits, feats = d(x)
    assert len(logits) == len(feats) == 2 and all(len(f) == 5 for f in feats)
    assert logits[0].shape[:2] == (3, 1) and logits[0].shape[2] == 1000 // 16 + 1  # frames of hop 16
    assert sum(p.numel() for p in d.state_dict().values()) > 0 and "window" not in str(list(d.state_dict()))
    two, minus_two = [torch.full((2, 5), 2.0)], [torch.full((2, 5), -2.0)]
    assert discriminator_loss(two, minus_two) == 0 and discriminator_loss(minus_two, two) == 6
    assert generator_loss(minus_two) == 3 and generator_loss(two) == 0
    assert feature_loss(feats, feats) == 0
    y = x.clone().requires_grad_(True)
    fake_logits, fake_feats = d(y)
    g = generator_loss(fake_logits) + feature_loss([[f.detach() for f in s] for s in feats], d(y + 0.1)[1])
    g.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_adversary_updates_only_the_discriminator_and_starts_late():
    torch.manual_seed(1)
    adv = Adversary(AdversarialConfig(weight=1.0, start_step=3, channels=4), [64, 128, 256, 512])
    assert [s.n_fft for s in adv.discriminator.scales] == [64, 128, 256]  # the three smallest model sizes
    x = torch.randn(2, 1, 512)
    recon = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    before = {k: v.clone() for k, v in adv.discriminator.state_dict().items()}
    assert adv.step(x, recon, step=2) == ({}, {})
    assert all(torch.equal(v, adv.discriminator.state_dict()[k]) for k, v in before.items())
    terms, metrics = adv.step(x, recon, step=3)
    assert set(terms) == {"adv", "feat"} and metrics["d_loss"] > 0 and "d_grad_norm" in metrics
    assert any(not torch.equal(v, adv.discriminator.state_dict()[k]) for k, v in before.items())
    grads = [p.grad.clone() for p in adv.discriminator.parameters()]
    (terms["adv"] + terms["feat"]).backward()  # the generator's backward
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, adv.discriminator.parameters(), strict=True))
    # state round trip
    tensors, meta = adv.state()
    other = Adversary(AdversarialConfig(weight=1.0, channels=4), [64, 128, 256])
    other.load_state(tensors, json.loads(json.dumps(meta)))
    for k, v in adv.discriminator.state_dict().items():
        assert torch.equal(v, other.discriminator.state_dict()[k])
    assert other.optimizer.state_dict()["state"][0]["exp_avg"].equal(adv.optimizer.state_dict()["state"][0]["exp_avg"])


def test_discriminator_warms_up_alone():
    """During warmup_steps after start_step the discriminator learns but the generator gets no terms."""
    torch.manual_seed(1)
    adv = Adversary(AdversarialConfig(weight=1.0, start_step=2, warmup_steps=2, channels=4), [64, 128, 256])
    x = torch.randn(2, 1, 512)
    recon = x + 0.3 * torch.randn_like(x)
    for step in (2, 3):
        before = {k: v.clone() for k, v in adv.discriminator.state_dict().items()}
        terms, metrics = adv.step(x, recon, step=step)
        assert terms == {} and metrics["d_loss"] > 0
        assert any(not torch.equal(v, adv.discriminator.state_dict()[k]) for k, v in before.items())
    terms, _ = adv.step(x, recon, step=4)
    assert set(terms) == {"adv", "feat"}
    with pytest.raises(ConfigError, match="warmup_steps"):
        AdversarialConfig(weight=1.0, warmup_steps=-1)


def test_config_validation():
    assert not AdversarialConfig().enabled and AdversarialConfig(feature_weight=1).enabled
    for bad in ({"weight": -1}, {"weight": "x"}, {"weight": True}, {"weight": float("nan")}, {"start_step": 1.5},
                {"fft_sizes": [8]}, {"betas": [0.5]}, {"betas": [0.5, True]}, {"channels": 0}, {"lr": 0}, {"nope": 1}):
        with pytest.raises(ConfigError):
            AdversarialConfig.from_dict(bad)
    cfg = AdversarialConfig(weight=np.float32(2.0), betas=[np.float64(0.5), 0.9])  # as TrainConfig: NumPy scalars
    assert cfg.weight == 2.0 and type(cfg.weight) is float and cfg.betas == [0.5, 0.9]
    with pytest.raises(ConfigError, match="audio model"):
        VQVAETask(VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=2, **TINY)), adversarial=ADV)
    assert VQVAETask(VQVAE(VQVAEConfig(**TINY)), adversarial=AdversarialConfig()).adversary is None  # weights 0: off


def test_fit_with_adversary_resumes_exactly(tmp_path, speech_dir):
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    cfg = TrainConfig(steps=6, batch_size=4, lr=3e-3, valid_every=3, valid_batches=1, checkpoint_every=2, log_every=1,
                      progress=False)
    adv = AdversarialConfig(**{**ADV.to_dict(), "start_step": 1})

    def model(seed):
        torch.manual_seed(seed)
        return VQVAE(VQVAEConfig(**TINY))

    torch.manual_seed(0)
    a = VQVAETask(model(0), plots=False, adversarial=adv)
    fit(a, train, valid, cfg, tmp_path / "a")
    log = [json.loads(ln) for ln in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    train_log = [r for r in log if r["split"] == "train"]
    assert "adv" not in train_log[0] and all({"adv", "feat", "d_loss"} <= set(r) for r in train_log[1:])
    assert json.loads((tmp_path / "a" / "train.json").read_text())["task"]["adversarial"]["weight"] == 0.5
    last = load_checkpoint(tmp_path / "a" / "last")
    assert any(k.startswith("task.adv.d.") for k in last.state) and "adversary" in last.meta["task"]
    assert not any("adv" in k for k in load_checkpoint(tmp_path / "a" / "best", with_state=False).weights)

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):  # dies in step 5: last checkpoint at step 4
        fit(_Interrupt(model(0), at=5, adversarial=adv), train, valid, cfg, tmp_path / "b")
    torch.manual_seed(7)  # a fresh process: another discriminator init, replaced by the checkpoint's
    fit(VQVAETask(model(123), plots=False, adversarial=adv), train, valid, cfg, tmp_path / "b", resume=True)
    ga, gb = load_model(tmp_path / "a" / "last").state_dict(), load_model(tmp_path / "b" / "last").state_dict()
    for k in ga:
        assert torch.equal(ga[k], gb[k]), k
    sa, sb = last.state, load_checkpoint(tmp_path / "b" / "last").state
    for k in (k for k in sa if k.startswith("task.")):
        assert torch.equal(sa[k], sb[k]), k


def test_switch_adversary_on_when_resuming(tmp_path, speech_dir, capsys):
    """A reconstruction-only run continued with --adv-weight: a new discriminator, trained from the resumed step."""
    common = ["train", "--data", str(speech_dir), "--exp", str(tmp_path / "exp"), "--segment", "512", "--batch-size", "4",
              "--hidden", "4", "--max-hidden", "8", "--dim", "8", "--n-q", "2", "--codebook-size", "16", "--strides", "2,4",
              "--no-progress", "--valid-every", "2", "--valid-batches", "1", "--log-every", "1", "--no-plots"]
    assert main([*common, "--steps", "2"]) == 0
    assert load_checkpoint(tmp_path / "exp" / "last").meta.get("task") is None
    capsys.readouterr()
    assert main([*common, "--steps", "4", "--resume", "--adv-weight", "0.1", "--feature-weight", "1"]) == 0
    assert "starting a new one at step 2" in capsys.readouterr().err
    log = [json.loads(ln) for ln in (tmp_path / "exp" / "log.jsonl").read_text().splitlines()]
    assert [("adv" in r) for r in log if r["split"] == "train"] == [False, False, True, True]
    info = json.loads((tmp_path / "exp" / "train.json").read_text())
    assert info["task"]["adversarial"]["feature_weight"] == 1.0
    # resuming again without flags keeps the run's adversarial settings (from train.json)
    assert main([*common, "--steps", "5", "--resume"]) == 0
    log = [json.loads(ln) for ln in (tmp_path / "exp" / "log.jsonl").read_text().splitlines()]
    assert "adv" in [r for r in log if r["split"] == "train"][-1]
    assert main([*common, "--steps", "6", "--resume", "--adv-weight", "-1"]) == 2
    assert "AdversarialConfig.weight" in capsys.readouterr().err
