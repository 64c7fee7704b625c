"""Checkpoints: round trip, training state, atomic replacement, tampering and truncation detected."""

from __future__ import annotations

import json

import pytest
import torch

from vqaudio.checkpoint import MANIFEST, load_checkpoint, load_model, read_manifest, save_checkpoint, save_model
from vqaudio.errors import CheckpointError
from vqaudio.models import VQVAE, VQVAEConfig


def _model(**kw) -> VQVAE:
    return VQVAE(VQVAEConfig(hidden=8, max_hidden=16, dim=8, n_q=2, codebook_size=16, strides=[2, 4], **kw))


def _files(path):
    return sorted(p.name for p in path.iterdir())


def test_round_trip(tmp_path):
    model = _model()
    model.train()(torch.randn(4, 1, 256))  # k-means init + EMA step: buffers differ from a fresh model
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, VQVAE) and not loaded.training and loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(1, 1, 300)
    model.eval()
    assert torch.equal(model.encode(x), loaded.encode(x))
    m = read_manifest(tmp_path / "m")
    assert loaded.checkpoint_sha256 == m["sha256"] == m["weights"]["sha256"] and m["state"] is None
    assert m["config"]["strides"] == [2, 4] and m["model_type"] == "vqvae"
    assert _files(tmp_path / "m") == sorted([MANIFEST, m["weights"]["file"]])


def test_series_model_and_wavenet_prior(tmp_path):
    series = VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=3, hidden=4, max_hidden=8, dim=4, n_q=1, codebook_size=8, strides=[2]))
    save_model(tmp_path / "s", series)
    assert load_model(tmp_path / "s").config == series.config
    wavenet = pytest.importorskip("vqaudio.models.wavenet")
    prior = wavenet.WaveNetPrior(wavenet.WaveNetConfig(codebook_size=8, n_q=2, residual_channels=4, gate_channels=4,
                                                       skip_channels=4, head_channels=4, layers=2, cycle=2))
    save_model(tmp_path / "p", prior)
    back = load_model(tmp_path / "p")
    assert type(back).__name__ == "WaveNetPrior" and back.config_dict() == prior.config_dict()


def test_training_state_and_overwrite(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters())
    state = {"optim.0.exp_avg": torch.randn(3), "rng.torch": torch.get_rng_state()}
    meta = {"step": 7, "rng": {"python": [3, [1, 2], None]}}
    save_checkpoint(tmp_path / "c", model, state=state, meta=meta)
    first = _files(tmp_path / "c")
    ck = load_checkpoint(tmp_path / "c")
    assert ck.meta == meta and torch.equal(ck.state["rng.torch"], state["rng.torch"])
    assert load_checkpoint(tmp_path / "c", with_state=False).meta is None
    # saving again replaces the files: only the new manifest's files remain, no temporaries
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(tmp_path / "c", model, state={"x": torch.zeros(1)}, meta={"step": 8})
    m = read_manifest(tmp_path / "c")
    assert _files(tmp_path / "c") == sorted([MANIFEST, m["weights"]["file"], m["state"]["file"]]) != first
    assert load_checkpoint(tmp_path / "c").meta == {"step": 8}
    save_checkpoint(tmp_path / "c", model, meta={"metrics": {"loss": 1.5}})  # JSON only: no state file
    m = read_manifest(tmp_path / "c")
    assert _files(tmp_path / "c") == sorted([MANIFEST, m["weights"]["file"]])
    assert load_checkpoint(tmp_path / "c").meta == {"metrics": {"loss": 1.5}} and load_checkpoint(tmp_path / "c").state == {}
    del opt


def test_old_checkpoint_survives_a_failed_save(tmp_path, monkeypatch):
    model = _model()
    save_model(tmp_path / "c", model)
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    import vqaudio.checkpoint as ck

    monkeypatch.setattr(ck.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_model(tmp_path / "c", model)
    monkeypatch.undo()
    load_model(tmp_path / "c")  # still the old, complete checkpoint
    assert read_manifest(tmp_path / "c")["weights"]["file"] in before


def _weights(path):
    return path / read_manifest(path)["weights"]["file"]


def test_tampered_weights_detected(tmp_path):
    save_model(tmp_path / "c", _model())
    w = _weights(tmp_path / "c")
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01  # flip one bit inside a tensor
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as err:
        load_model(tmp_path / "c")
    assert w.name in str(err.value) and "\n" not in str(err.value)


def test_truncated_weights_detected(tmp_path):
    save_model(tmp_path / "c", _model())
    w = _weights(tmp_path / "c")
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_model(tmp_path / "c")
    assert w.name in str(err.value)


def test_consistent_forgery_with_wrong_tensors_detected(tmp_path):
    """Re-hashed weights that do not fit the config (missing/extra/mis-shaped) are still rejected."""
    import hashlib

    from safetensors.torch import save

    save_model(tmp_path / "c", _model())
    path = tmp_path / "c"
    good = load_checkpoint(path).weights
    key = next(k for k in good if good[k].dim() == 3)
    for change, what in [
        (lambda w: w.pop(key), "missing"),
        (lambda w: w.__setitem__("bogus", torch.zeros(1)), "unexpected"),
        (lambda w: w.__setitem__(key, torch.zeros(1, 1, 1)), "model needs"),
    ]:
        w = dict(good)
        change(w)
        data = save(w)
        m = json.loads((path / MANIFEST).read_text())
        (path / m["weights"]["file"]).write_bytes(data)
        m["weights"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        m["sha256"] = m["weights"]["sha256"]
        (path / MANIFEST).write_text(json.dumps(m))
        with pytest.raises(CheckpointError, match=what):
            load_model(path)


def test_bad_manifests(tmp_path):
    save_model(tmp_path / "c", _model())
    path = tmp_path / "c"
    good = (path / MANIFEST).read_text()
    m = json.loads(good)
    cases = [
        "{truncated",
        json.dumps({**m, "format": "other"}),
        json.dumps({**m, "version": 99}),
        json.dumps({**m, "model_type": "gpt"}),
        json.dumps({**m, "config": {**m["config"], "n_q": 0}}),
        json.dumps({**m, "config": {**m["config"], "unknown_key": 1}}),
        json.dumps({**m, "weights": {**m["weights"], "file": "../../etc/passwd"}}),
        json.dumps({**m, "sha256": "0" * 64}),
        json.dumps({**m, "weights": {**m["weights"], "file": "nope.safetensors"}}),
    ]
    for text in cases:
        (path / MANIFEST).write_text(text)
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    (path / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent")


def test_export_model_keeps_identity_drops_state(tmp_path, capsys, monkeypatch):
    from vqaudio.checkpoint import export_model
    from vqaudio.cli import main

    model = _model()
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.json").write_text(json.dumps({"train": {"steps": 7, "lr": 0.1}}))
    save_checkpoint(exp / "best", model, state={"opt": torch.ones(3)}, meta={"step": 5, "metrics": {"loss": 1.5}})
    card = tmp_path / "README.md"
    card.write_text("model card\n")
    out = export_model(exp, tmp_path / "shipped", include=(card,))
    m = read_manifest(out)
    assert m["sha256"] == read_manifest(exp / "best")["sha256"]
    assert m["state"] == {"meta": {"step": 5, "metrics": {"loss": 1.5}, "train": {"steps": 7, "lr": 0.1}}}
    assert _files(out) == sorted([MANIFEST, m["weights"]["file"], "README.md"])
    assert (out / "README.md").read_text() == "model card\n"
    assert torch.equal(load_model(out).quantizer.layers[0].codebook, model.quantizer.layers[0].codebook)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    with pytest.raises(CheckpointError, match="already exists; pass --force"):
        export_model(exp, out)
    other = _model()
    other.quantizer.layers[0].codebook.add_(1.0)
    save_model(exp / "best", other)
    with pytest.raises(CheckpointError, match="holds 'README.md', which the output would delete"):
        export_model(exp, out, force=True)  # the model card would be lost
    assert read_manifest(out)["sha256"] == m["sha256"]
    card.write_text("model card v2\n")
    assert main(["export", str(exp), "-o", str(out), "--force", "--include", str(card)]) == 0
    assert "to " + str(out) in capsys.readouterr().out
    assert read_manifest(out)["sha256"] == read_manifest(exp / "best")["sha256"] != m["sha256"]
    assert (out / "README.md").read_text() == "model card v2\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # re-exporting an export keeps the training config it carries
    assert read_manifest(export_model(out, tmp_path / "again"))["state"]["meta"]["train"] == {"steps": 7, "lr": 0.1}

    # a failed swap puts the previous export back
    import os as _os

    real_replace = _os.replace

    def flaky(a, b):
        if str(a).endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real_replace(a, b)

    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr("vqaudio.checkpoint.os.replace", flaky)
    with pytest.raises(CheckpointError, match="cannot write the output folder .No space left on device."):
        export_model(exp, out, include=(card,), force=True)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == before and load_model(out) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "a.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a checkpoint folder; refusing"):
        export_model(exp, keep, force=True)
    assert (keep / "a.txt").read_text() == "x"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "README.md").write_text("other")
    for bad, match in (((tmp_path / "nope.txt",), "not a file"), ((exp,), "not a file"), ((exp / "best" / MANIFEST,), "clash"),
                       ((card, tmp_path / "sub" / "README.md"), "two files named 'README.md'")):
        with pytest.raises(CheckpointError, match=match):
            export_model(exp, tmp_path / "new", include=bad)
    for dst in (exp / "best", exp / "best" / "x", exp):
        with pytest.raises(CheckpointError, match="must not be a source checkpoint"):
            export_model(exp / "best", dst, force=True)
    assert load_model(exp / "best") is not None
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "y").exists()
