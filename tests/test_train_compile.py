"""TrainConfig.compile: the VQ-VAE's encoder and decoder are compiled in place, so checkpoints keep the plain model's
keys and load into an uncompiled model, and the compiled run trains like the eager one."""

from __future__ import annotations

import json

import pytest
import torch

from vqaudio.checkpoint import load_model
from vqaudio.errors import ConfigError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.train import TrainConfig, train_vqvae

TINY = dict(hidden=4, max_hidden=8, dim=8, n_q=2, codebook_size=16, strides=[2, 4])


def test_compiled_training_keeps_keys_and_matches_eager(tmp_path, speech_dir):
    losses = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        # Adam's eps well above float noise, as in the DDP test: rounding-level gradient differences must not be
        # blown up into full-size steps (g / sqrt(v) = +-1 for any g while v is tiny)
        cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, eps=1e-3, valid_every=2, valid_batches=1,
                          checkpoint_every=2, log_every=1, progress=False, compile=compiled)
        train_vqvae(str(speech_dir), tmp_path / name, VQVAEConfig(**TINY), cfg, segment=512, plots=False)
        log = [json.loads(ln) for ln in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in log if r["split"] == "train"]
    model = load_model(tmp_path / "compiled" / "last")
    assert set(model.state_dict()) == set(VQVAE(VQVAEConfig(**TINY)).state_dict())  # no _orig_mod. prefixes
    # step 1: the same weights and batch, only the summation order differs; step 2 follows one update (measured
    # 0.4% apart with eps 1e-8 on the CI machine, where a rounding-level gradient became a full Adam step)
    assert losses["compiled"][0] == pytest.approx(losses["eager"][0], rel=1e-5)
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-2)
    assert json.loads((tmp_path / "compiled" / "train.json").read_text())["train"]["compile"] is True


def test_compile_must_be_a_bool():
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig(compile="yes")
    assert torch.compiler is not None
