"""The training loop: learning on real speech, exact resume, checkpoints/logs/plots, the CLI end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader

from vqaudio.checkpoint import load_checkpoint, load_model
from vqaudio.cli import main
from vqaudio.data import build_datasets
from vqaudio.errors import ConfigError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.train import TrainConfig, VQVAETask, fit

TINY = dict(hidden=8, max_hidden=32, dim=16, n_q=2, codebook_size=32, strides=[2, 4])


def _log(exp):
    return [json.loads(ln) for ln in (exp / "log.jsonl").read_text().splitlines()]


def test_training_on_speech_lowers_loss_and_uses_the_codebook(tmp_path, speech_dir):
    train, valid, _ = build_datasets(str(speech_dir), 1024, 8000, valid_fraction=0.2)
    torch.manual_seed(0)
    task = VQVAETask(VQVAE(VQVAEConfig(**TINY)))
    before = task.validate(DataLoader(valid, batch_size=8))
    exp = tmp_path / "exp"
    cfg = TrainConfig(steps=60, batch_size=8, lr=3e-3, warmup_steps=5, valid_every=20, valid_batches=0, log_every=10, progress=False)
    result = fit(task, train, valid, cfg, exp)
    after = result["valid"]
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert after["l1"] < before["l1"] and after["mel"] < before["mel"]
    assert after["usage"] >= 0.5 and after["perplexity"] > 8, after  # most of both 32-code codebooks in use
    train_losses = [r["loss"] for r in _log(exp) if r["split"] == "train"]
    assert len(train_losses) == 6 and train_losses[-1] < 0.8 * train_losses[0]  # means over steps 1-10 vs 51-60
    assert [r["step"] for r in _log(exp) if r["split"] == "valid"] == [20, 40, 60]
    for step in (20, 40, 60):
        for kind in ("spectrogram", "codebook"):
            png = exp / "plots" / f"step-{step:07d}-{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = load_checkpoint(exp / "best")
    assert best.meta["step"] == result["best_step"] and best.meta["metrics"]["loss"] == pytest.approx(result["best"])
    assert load_checkpoint(exp / "last").meta["step"] == 60
    assert isinstance(load_model(exp / "best"), VQVAE)


class _Interrupt(VQVAETask):
    """Dies (like a killed job) on the ``at``-th training step."""

    def __init__(self, model, at, **kw):
        super().__init__(model, plots=False, **kw)
        self.calls, self.at = 0, at

    def training_step(self, batch, model=None):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().training_step(batch, model)


@pytest.mark.parametrize("balance,quantizer", [("items", "vq"), ("folders", "vq"), ("items", "simvq")])
def test_resume_equals_uninterrupted_run(tmp_path, speech_dir, balance, quantizer):
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    cfg = TrainConfig(steps=7, batch_size=4, lr=3e-3, warmup_steps=2, schedule="cosine", valid_every=3, valid_batches=1,
                      checkpoint_every=2, keep_every=2, log_every=1, progress=False, balance=balance)
    # dropout draws from the global RNG: it must be restored; simvq: its map's data init and the restarts of
    # its frozen rows (their counts and generator are in the checkpoint)
    mcfg = VQVAEConfig(**{**TINY, "quantizer_dropout": 0.5, "quantizer": quantizer})

    def model(seed):
        torch.manual_seed(seed)
        return VQVAE(mcfg)

    fit(VQVAETask(model(0), plots=False), train, valid, cfg, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):  # dies in step 6: last checkpoint at step 4, step 5 already logged
        fit(_Interrupt(model(0), at=6), train, valid, cfg, tmp_path / "b")
    assert load_checkpoint(tmp_path / "b" / "last").meta["step"] == 4
    assert max(r["step"] for r in _log(tmp_path / "b")) == 5
    resumed = model(123)  # a fresh process: different initial weights, all replaced by the checkpoint
    fit(VQVAETask(resumed, plots=False), train, valid, cfg, tmp_path / "b", resume=True)

    a, b = load_model(tmp_path / "a" / "last").state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if quantizer == "simvq":  # restarts re-drew frozen rows, after the resume point too
        first = model(0).state_dict()["quantizer.layers.0.frozen_codebook"]
        at_4 = load_model(tmp_path / "a" / "snapshots" / "step-0000004").state_dict()["quantizer.layers.0.frozen_codebook"]
        assert not torch.equal(first, at_4) and not torch.equal(at_4, a["quantizer.layers.0.frozen_codebook"])
    strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs]  # noqa: E731
    assert strip(_log(tmp_path / "a")) == strip(_log(tmp_path / "b"))  # same records, step 5 not duplicated
    assert load_checkpoint(tmp_path / "a" / "best").meta == load_checkpoint(tmp_path / "b" / "best").meta
    snaps = [f"step-000000{i}" for i in (2, 4, 6)]  # step 6 kept by the resumed run only
    for run in "ab":
        assert sorted(p.name for p in (tmp_path / run / "snapshots").iterdir()) == snaps
    for name in snaps:
        assert load_checkpoint(tmp_path / "a" / "snapshots" / name).sha256 == load_checkpoint(tmp_path / "b" / "snapshots" / name).sha256


def _cli(exp, data, *extra):
    return ["train", "--data", str(data), "--exp", str(exp), "--segment", "512", "--batch-size", "4", "--hidden", "4",
            "--max-hidden", "8", "--dim", "8", "--n-q", "2", "--codebook-size", "16", "--strides", "2,4", "--no-progress",
            "--valid-every", "2", "--valid-batches", "1", "--log-every", "1", *extra]


def test_cli_train_end_to_end(tmp_path, speech_dir, capsys):
    exp = tmp_path / "exp"
    assert main(_cli(exp, speech_dir, "--steps", "2", "--encoder-hidden", "2", "--encoder-dilations", "1",
                     "--decoder-frame-dilations", "1,2", "--decoder-frame-kernel", "3", "--decoder-frame-compress", "4")) == 0
    assert "2 steps" in capsys.readouterr().err
    model = load_model(exp / "best")
    assert model.config.strides == [2, 4] and model.config.n_q == 2 and model.hop == 8
    assert (model.config.encoder_hidden, model.config.encoder_max_hidden, model.config.encoder_dilations) == (2, None, [1])
    assert (model.config.decoder_frame_dilations, model.config.decoder_frame_kernel, model.config.decoder_frame_compress) \
        == ([1, 2], 3, 4)
    from vqaudio.registry import resolve

    assert resolve(exp)[1] == exp / "best"
    # an existing run is not overwritten; --resume continues it with more steps
    assert main(_cli(exp, speech_dir, "--steps", "2")) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    assert main(_cli(exp, speech_dir, "--steps", "3", "--resume")) == 0
    assert [r["step"] for r in _log(exp) if r["split"] == "train"] == [1, 2, 3]
    assert json.loads((exp / "train.json").read_text())["train"]["steps"] == 3
    capsys.readouterr()
    # user errors: one line, exit status 2
    for bad in (_cli(tmp_path / "x", speech_dir, "--strides", "2,x"), _cli(tmp_path / "v", speech_dir, "--encoder-dilations", "1,a"),
                _cli(tmp_path / "w", speech_dir, "--decoder-frame-dilations", "x"), _cli(tmp_path / "y", tmp_path / "nowhere"),
                _cli(tmp_path / "z", speech_dir, "--n-q", "0"), _cli(tmp_path / "w", speech_dir, "--config", str(tmp_path / "no.json"))):
        assert main(bad) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_train_series_from_aeon(tmp_path, capsys):
    pytest.importorskip("aeon")
    exp = tmp_path / "exp"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"hidden": 4, "max_hidden": 8, "dim": 4, "n_q": 1, "codebook_size": 8, "strides": [2, 2]},
                               "train": {"steps": 2, "batch_size": 4, "valid_every": 2, "valid_batches": 1, "progress": False}}))
    assert main(["train", "--data", "aeon:BasicMotions", "--exp", str(exp), "--config", str(cfg), "--segment", "64"]) == 0
    model = load_model(exp / "best")
    assert model.config.kind == "series" and model.config.channels == 6 and model.config.sample_rate is None
    assert (exp / "plots" / "step-0000002-series.png").is_file()
    codes, stats = model.encode(torch.randn(1, 6, 100), return_stats=True)
    assert codes.shape == (1, 1, 25) and model.decode(codes, 100, stats).shape == (1, 6, 100)


@pytest.mark.parametrize("bad, field", [
    ({"weight_decay": "x"}, "weight_decay"), ({"betas": [0.9, "x"]}, "betas"), ({"betas": "ab"}, "betas"),
    ({"eps": None}, "eps"), ({"grad_clip": "1"}, "grad_clip"), ({"min_lr_ratio": [0.1]}, "min_lr_ratio"),
    ({"lr": "1e-3"}, "lr"), ({"lr": True}, "lr"), ({"weight_decay": float("nan")}, "weight_decay"),
    ({"schedule": ["cosine"]}, "schedule"), ({"device": {"cpu": 1}}, "device"), ({"best_metric": 3}, "best_metric"),
    ({"progress": "no"}, "progress"), ({"steps": "10"}, "steps"), ({"best_mode": "largest"}, "best_mode"),
])
def test_train_config_rejects_wrongly_typed_values(bad, field):
    from vqaudio.errors import ConfigError

    with pytest.raises(ConfigError, match=field) as info:
        TrainConfig.from_dict(bad)
    assert "\n" not in str(info.value)


def test_cli_wrongly_typed_train_config_is_one_line(tmp_path, capsys):
    for bad in ({"weight_decay": "x"}, {"betas": [0.9, "x"]}):
        cfg = tmp_path / "cfg.json"
        cfg.write_text(json.dumps({"train": bad}))
        for cmd in (["train", "--data", str(tmp_path / "nowhere"), "--exp", str(tmp_path / "e")],
                    ["train-prior", "--codec", str(tmp_path / "nocodec"), "--data", str(tmp_path / "nowhere"),
                     "--exp", str(tmp_path / "p")]):
            assert main([*cmd, "--config", str(cfg)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and str(cfg) in err and next(iter(bad)) in err, err


def test_resume_tolerates_a_truncated_or_corrupt_log(tmp_path, speech_dir, capsys):
    exp = tmp_path / "exp"
    assert main(_cli(exp, speech_dir, "--steps", "2")) == 0
    lines = (exp / "log.jsonl").read_text().splitlines()
    # a corrupt record in the middle and a truncated last line (a killed run, a full disk)
    (exp / "log.jsonl").write_text(lines[0] + "\n" + "\x00\x00garbage\n" + "\n".join(lines[1:]) + '\n{"step": 3, "spl')
    capsys.readouterr()
    assert main(_cli(exp, speech_dir, "--steps", "3", "--resume")) == 0, capsys.readouterr().err
    records = _log(exp)
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    assert [r["step"] for r in records if r["split"] == "valid"] == [2, 3]


def test_diverging_run_is_a_one_line_user_error(tmp_path, speech_dir, capsys):
    from vqaudio.errors import VQAudioError

    assert main(_cli(tmp_path / "exp", speech_dir, "--steps", "3", "--lr", "1e30")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "try a lower --lr" in err, err
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    torch.manual_seed(0)
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e30, progress=False)
    with pytest.raises(VQAudioError, match="at step"):
        fit(VQVAETask(VQVAE(VQVAEConfig(**TINY)), plots=False), train, valid, cfg, tmp_path / "api")


def test_unknown_best_metric_fails_before_training(tmp_path, speech_dir):
    """A best_metric the task does not report is a one-line ConfigError before the first step, not at the first validation."""
    from vqaudio.errors import ConfigError

    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    task = _Interrupt(VQVAE(VQVAEConfig(**TINY)), at=1)  # a training step would raise KeyboardInterrupt
    cfg = TrainConfig(steps=4, batch_size=4, valid_every=2, best_metric="los", progress=False)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.json").write_text("the run's own settings")
    with pytest.raises(ConfigError, match=r"best_metric 'los' is not a validation metric of this task \(it reports: l1, logmag, loss, "):
        fit(task, train, valid, cfg, exp)
    assert task.calls == 0 and not (exp / "last").exists()
    assert (exp / "train.json").read_text() == "the run's own settings"  # nothing written before the check


class _RandomValidate(VQVAETask):
    """Draws random numbers in validate; records the first draw of every training step."""

    def __init__(self, model):
        super().__init__(model, plots=False)
        self.draws = []

    def validate(self, batches, exp_dir=None, step=0):
        torch.rand(100)
        return super().validate(batches, exp_dir, step)

    def training_step(self, batch, model=None):
        self.draws.append(torch.rand(1).item())
        return super().training_step(batch, model)


def test_validation_probe_leaves_the_rng_alone(tmp_path, speech_dir):
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    runs = []
    for name, valid_set in (("probe", valid), ("none", None)):
        torch.manual_seed(0)
        task = _RandomValidate(VQVAE(VQVAEConfig(**TINY)))
        fit(task, train, valid_set, TrainConfig(steps=2, batch_size=4, valid_every=5, progress=False), tmp_path / name)
        runs.append(task.draws)
    assert runs[0] == runs[1] and len(runs[0]) == 2


class _Scripted(VQVAETask):
    """Reports ``score = values[step]`` at each validation (the loss terms too)."""

    def __init__(self, model, values, **kw):
        super().__init__(model, plots=False, **kw)
        self.values = values

    def validate(self, batches, exp_dir=None, step=0):
        return {**super().validate(batches, exp_dir, step), "score": self.values[step], "stoi": self.values[step]}


@pytest.mark.parametrize("metric, mode, best_step", [
    ("score", "auto", 2), ("score", "min", 2), ("score", "max", 4), ("stoi", "auto", 4), ("stoi", "min", 2),
])
def test_best_is_picked_by_the_metric_in_its_direction(tmp_path, speech_dir, metric, mode, best_step):
    """best_mode "auto" maximises the metrics where higher is better (PESQ, STOI, SI-SNR), minimises the rest."""
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    torch.manual_seed(0)
    task = _Scripted(VQVAE(VQVAEConfig(**TINY)), {0: 9.0, 2: 3.0, 4: 5.0, 6: 4.0})
    cfg = TrainConfig(steps=6, batch_size=4, valid_every=2, best_metric=metric, best_mode=mode, progress=False)
    result = fit(task, train, valid, cfg, tmp_path / "exp")
    assert result["best_step"] == best_step and result["best"] == task.values[best_step]
    assert load_checkpoint(tmp_path / "exp" / "best").meta["step"] == best_step
    last = load_checkpoint(tmp_path / "exp" / "last").meta
    assert (last["best"], last["best_metric"], last["best_max"]) == (task.values[best_step], metric, cfg.maximise_best)


def test_resume_under_a_new_best_rule_starts_best_afresh(tmp_path, speech_dir, capsys):
    """best/ of a finished run picked by the lowest score is not compared with the highest score of the new rule."""
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    values = {0: 0.0, 2: 3.0, 4: 5.0, 6: 4.0, 8: 1.0}
    exp = tmp_path / "exp"
    torch.manual_seed(0)
    first = fit(_Scripted(VQVAE(VQVAEConfig(**TINY)), values), train, valid,
                TrainConfig(steps=4, batch_size=4, valid_every=2, best_metric="score", progress=False), exp)
    assert first["best_step"] == 2
    capsys.readouterr()
    again = fit(_Scripted(VQVAE(VQVAEConfig(**TINY)), values), train, valid,
                TrainConfig(steps=8, batch_size=4, valid_every=2, best_metric="score", best_mode="max", progress=False),
                exp, resume=True)
    err = capsys.readouterr().err
    assert "was picked by the lowest validation score and is now picked by the highest validation score" in err, err
    assert again["best_step"] == 6 and again["best"] == 4.0  # step 4's 5.0 was judged under the old rule
    assert load_checkpoint(exp / "best").meta["step"] == 6


def test_resume_under_the_same_best_rule_keeps_best(tmp_path, speech_dir, capsys):
    """A resumed "max" run compares with the best value it saved: a later lower value does not replace best/."""
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    values = {0: 0.0, 2: 3.0, 4: 5.0, 6: 4.0}
    cfg = dict(batch_size=4, valid_every=2, best_metric="score", best_mode="max", progress=False)
    torch.manual_seed(0)
    fit(_Scripted(VQVAE(VQVAEConfig(**TINY)), values), train, valid, TrainConfig(steps=4, **cfg), tmp_path / "exp")
    capsys.readouterr()
    again = fit(_Scripted(VQVAE(VQVAEConfig(**TINY)), values), train, valid, TrainConfig(steps=6, **cfg),
                tmp_path / "exp", resume=True)
    assert "picked by" not in capsys.readouterr().err
    assert again["best_step"] == 4 and again["best"] == 5.0
    assert load_checkpoint(tmp_path / "exp" / "best").meta["step"] == 4


def test_resume_of_a_checkpoint_without_the_best_rule(tmp_path, speech_dir, capsys):
    """Checkpoints from before the rule was saved were picked by the lowest train.json best_metric."""
    from vqaudio.checkpoint import save_checkpoint

    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    values = {0: 0.0, 2: 5.0, 4: 0.5, 6: 0.9}
    exp = tmp_path / "exp"
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**TINY))
    fit(_Scripted(model, values), train, valid, TrainConfig(steps=4, batch_size=4, valid_every=2, best_metric="score",
                                                            progress=False), exp)
    ckpt = load_checkpoint(exp / "last")
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("best_metric", "best_max")}  # as older versions wrote it
    save_checkpoint(exp / "last", model, state=ckpt.state, meta=meta)
    capsys.readouterr()
    again = fit(_Scripted(VQVAE(VQVAEConfig(**TINY)), values), train, valid,
                TrainConfig(steps=6, batch_size=4, valid_every=2, best_metric="stoi", progress=False), exp, resume=True)
    assert "picked by the lowest validation score and is now picked by the highest validation stoi" in capsys.readouterr().err
    assert again["best_step"] == 6 and again["best"] == 0.9


def test_log_means_count_only_the_steps_that_report_a_metric(tmp_path, speech_dir):
    """A metric that starts mid-window (the adversarial terms after a warm-up) is averaged over its own steps."""
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)

    class Late(VQVAETask):
        def training_step(self, batch, model=None):
            loss, metrics = super().training_step(batch, model)
            return loss, {**metrics, **({"late": 2.0} if self.step > 2 else {})}

    torch.manual_seed(0)
    fit(Late(VQVAE(VQVAEConfig(**TINY)), plots=False), train, valid,
        TrainConfig(steps=4, batch_size=4, log_every=4, progress=False), tmp_path / "exp")
    (record,) = [r for r in _log(tmp_path / "exp") if r["split"] == "train"]
    assert record["late"] == 2.0  # steps 3 and 4 only, not (2 + 2) / 4


def test_validation_reports_pesq_and_stoi_of_speech(speech_dir):
    """Audio validation scores each crop with PESQ-NB and STOI (when installed); perceptual=False skips them."""
    from vqaudio.metrics import optional_metrics, score

    if any(optional_metrics().values()):
        pytest.skip("pesq / pystoi not installed")
    _, valid, _ = build_datasets(str(speech_dir), 8000, 8000, valid_fraction=0.3)
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**TINY))
    batches = list(DataLoader(valid, batch_size=4))
    m = VQVAETask(model, plots=False).validate(batches)
    assert 1.0 <= m["pesq_nb"] <= 4.6 and 0.0 <= m["stoi"] <= 1.0 and "pesq_wb" not in m, m
    x = batches[0]  # the clean input against itself: the top of both scales
    top = [score(x[i], x[i], 8000, metrics=("pesq_nb", "stoi")) for i in range(x.shape[0])]
    assert all(t["stoi"] > 0.99 for t in top) and max(t["pesq_nb"] for t in top) > m["pesq_nb"]
    assert not {"pesq_nb", "stoi"} & set(VQVAETask(model, plots=False, perceptual=False).validate(batches))
    # crops too short for both: reported as nan (never best/), not dropped or scored 1e-5
    _, valid, _ = build_datasets(str(speech_dir), 1024, 8000, valid_fraction=0.3)
    m = VQVAETask(model, plots=False).validate(list(DataLoader(valid, batch_size=4)))
    assert math.isnan(m["stoi"]) and math.isnan(m["pesq_nb"]), m


def test_cli_best_metric_and_mode(tmp_path, speech_dir, capsys):
    exp = tmp_path / "exp"
    assert main(_cli(exp, speech_dir, "--steps", "2", "--best-metric", "mel", "--best-mode", "max")) == 0
    saved = json.loads((exp / "train.json").read_text())["train"]
    assert (saved["best_metric"], saved["best_mode"]) == ("mel", "max")
    meta = load_checkpoint(exp / "last").meta
    assert (meta["best_metric"], meta["best_max"]) == ("mel", True)
    capsys.readouterr()
    assert main(_cli(tmp_path / "bad", speech_dir, "--steps", "2", "--best-metric", "nope")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "best_metric 'nope'" in err, err


def test_frozen_submodules_keep_weights_and_codebooks(tmp_path, speech_dir):
    """TrainConfig.frozen: the encoder and the codebooks (EMA buffers) stay as they were, the decoder
    learns, quantiser dropout still applies (the RVQ container trains), and a resume is exact."""
    from vqaudio.errors import ConfigError

    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**{**TINY, "quantizer_dropout": 0.5}))
    fit(VQVAETask(model, plots=False), train, valid, TrainConfig(steps=3, batch_size=4, progress=False), tmp_path / "a")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=6, batch_size=4, lr=3e-3, progress=False, frozen=["encoder", "quantizer.layers"],
                      frozen_from_step=3)
    seen = []
    model.quantizer.register_forward_hook(lambda m, i, o: seen.append(m.training))
    fit(VQVAETask(model, plots=False), train, valid, cfg, tmp_path / "a", resume=True)
    after = model.state_dict()
    for k, v in before.items():
        same = torch.equal(v, after[k])
        assert same == (k.startswith("encoder.") or k.startswith("quantizer.")), k
    assert True in seen  # the RVQ container ran in training mode (quantiser dropout)
    assert all(p.requires_grad is False for p in model.encoder.parameters())
    with pytest.raises(ConfigError, match=r"no submodule 'encoderr' \(its top-level ones: encoder, quantizer, decoder"):
        fit(VQVAETask(model, plots=False), train, valid, TrainConfig(steps=8, batch_size=4, progress=False,
                                                                     frozen=["encoderr"]), tmp_path / "a", resume=True)
    with pytest.raises(ConfigError, match="frozen"):
        TrainConfig(frozen="encoder")


def test_freezing_from_a_step_on_resumes_exactly(tmp_path, speech_dir):
    """frozen_from_step in the middle of a run: before it everything trains, after it the encoder is
    fixed, and a run killed after the switch resumes to the same weights as one that was not."""
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    cfg = TrainConfig(steps=6, batch_size=4, lr=3e-3, checkpoint_every=2, valid_every=3, progress=False,
                      frozen=["encoder", "quantizer.layers"], frozen_from_step=2)

    def model():
        torch.manual_seed(0)
        return VQVAE(VQVAEConfig(**{**TINY, "quantizer_dropout": 0.5}))

    a = model()
    encoders = []
    task = VQVAETask(a, plots=False)
    step = task.training_step

    def spy(batch, model=None):
        encoders.append({k: v.clone() for k, v in a.encoder.state_dict().items()})
        return step(batch, model)

    task.training_step = spy
    fit(task, train, valid, cfg, tmp_path / "a")
    same = [all(torch.equal(e[k], encoders[i + 1][k]) for k in e) for i, e in enumerate(encoders[:-1])]
    assert same == [False, False, True, True, True]  # steps 0 and 1 train the encoder, 2.. do not
    with pytest.raises(KeyboardInterrupt):  # dies in step 5 (0-based 4): resumes from the step-4 checkpoint
        fit(_Interrupt(model(), at=5), train, valid, cfg, tmp_path / "b")
    b = model()
    fit(VQVAETask(b, plots=False), train, valid, cfg, tmp_path / "b", resume=True)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_keep_every_keeps_snapshots_to_average(tmp_path, speech_dir):
    """keep_every=2 keeps the model at steps 2, 4, 6 (model only, with the metrics of validated steps)."""
    train, valid, _ = build_datasets(str(speech_dir), 512, 8000, valid_fraction=0.2)
    torch.manual_seed(0)
    task = _Scripted(VQVAE(VQVAEConfig(**TINY)), {0: 9.0, 3: 3.0, 6: 5.0})
    exp = tmp_path / "exp"
    fit(task, train, valid, TrainConfig(steps=6, batch_size=4, valid_every=3, keep_every=2, progress=False), exp)
    snaps = sorted(p.name for p in (exp / "snapshots").iterdir())
    assert snaps == ["step-0000002", "step-0000004", "step-0000006"]
    metas = [load_checkpoint(exp / "snapshots" / s).meta for s in snaps]
    assert [m["step"] for m in metas] == [2, 4, 6]
    assert metas[0]["metrics"] == metas[1]["metrics"] == {} and metas[2]["metrics"]["score"] == 5.0
    assert not load_checkpoint(exp / "snapshots" / snaps[-1]).state  # no optimizer state
    last = load_checkpoint(exp / "last", with_state=False)
    assert load_checkpoint(exp / "snapshots" / snaps[-1]).sha256 == last.sha256  # the same weights as last/ at step 6
    assert main(["average", *(str(exp / "snapshots" / s) for s in snaps), "-o", str(tmp_path / "avg")]) == 0
    avg = load_checkpoint(tmp_path / "avg").meta
    assert [a["step"] for a in avg["averaged"]] == [2, 4, 6] and avg["train"]["keep_every"] == 2  # exp/train.json
    with pytest.raises(ConfigError, match="keep_every must be an integer >= 0"):
        TrainConfig(keep_every=-1)
    # a new run in a folder holding another run's snapshots would mix them
    (exp / "last" / "config.json").unlink()
    with pytest.raises(ConfigError, match="holds snapshots of an earlier run"):
        fit(task, train, valid, TrainConfig(steps=2, batch_size=4, keep_every=2, progress=False), exp)
