"""Checkpoint averaging: the exact mean, what is kept from the last checkpoint, provenance, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
from safetensors.torch import save as st_save

from vqaudio.average import average_checkpoints, average_weights
from vqaudio.checkpoint import (
    MANIFEST,
    export_model,
    load_checkpoint,
    load_model,
    read_manifest,
    save_checkpoint,
    save_model,
)
from vqaudio.cli import main
from vqaudio.errors import CheckpointError
from vqaudio.models import VQVAE, VQVAEConfig


def _model(seed: int, **kw) -> VQVAE:
    torch.manual_seed(seed)
    cfg = {"hidden": 8, "max_hidden": 16, "dim": 8, "n_q": 2, "codebook_size": 16, "strides": [2, 4], **kw}
    model = VQVAE(VQVAEConfig(**cfg))
    model.train()(torch.randn(4, 1, 256))  # k-means init + one EMA step: codebooks and counters set
    return model


def test_average_weights_is_the_mean_and_keeps_the_rest_from_the_last():
    ws = [{"a": torch.tensor([1.0, 2.0]), "q.codebook": torch.tensor([0.0]), "n": torch.tensor(3),
           "h": torch.tensor([1.0], dtype=torch.float16)},
          {"a": torch.tensor([3.0, 6.0]), "q.codebook": torch.tensor([4.0]), "n": torch.tensor(5),
           "h": torch.tensor([2.0], dtype=torch.float16)}]
    out = average_weights(ws)
    assert torch.equal(out["a"], torch.tensor([2.0, 4.0])) and torch.equal(out["q.codebook"], torch.tensor([2.0]))
    assert torch.equal(out["n"], torch.tensor(5))  # integer: the last one's
    assert out["h"].dtype == torch.float16 and float(out["h"]) == 1.5
    kept = average_weights(ws, keep_last=("q.*",))
    assert torch.equal(kept["q.codebook"], torch.tensor([4.0])) and torch.equal(kept["a"], out["a"])
    assert kept["q.codebook"] is not ws[1]["q.codebook"]  # a copy, not the caller's tensor
    with pytest.raises(ValueError, match="different tensors"):
        average_weights([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])
    with pytest.raises(ValueError, match="'a' is torch.float32\\[3\\] in checkpoint 2"):
        average_weights([{"a": torch.zeros(2)}, {"a": torch.zeros(3)}])
    with pytest.raises(ValueError, match="nothing to average"):
        average_weights([])


def _effective(model: VQVAE) -> dict[str, torch.Tensor]:
    """What the model computes with: weight-normalised weights as ``g v / ||v||``, then every float tensor."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "parametrizations"):
            out[f"{name}.weight"] = module.weight.detach().double()
    for k, t in model.state_dict().items():
        if t.is_floating_point() and ".parametrizations." not in k:
            out[k] = t.double()
    return out


def test_average_checkpoints_end_to_end(tmp_path):
    models = [_model(s) for s in range(3)]
    with torch.no_grad():  # the weight-norm v of one checkpoint much longer: the layer's weights are unchanged
        for name, t in models[1].named_parameters():
            if name.endswith("original1"):
                t.mul_(3.0)
    for i, m in enumerate(models):
        save_checkpoint(tmp_path / f"snap{i}", m, state={"opt": torch.ones(2)}, meta={"step": 100 * (i + 1)})
    srcs = [tmp_path / f"snap{i}" for i in range(3)]
    out, avg = average_checkpoints(srcs, tmp_path / "avg")
    m = read_manifest(out)
    assert avg.checkpoint_sha256 == m["sha256"] and not avg.training
    meta = m["state"]["meta"]
    assert meta["step"] == 300 and [a["step"] for a in meta["averaged"]] == [100, 200, 300]
    assert [a["sha256"] for a in meta["averaged"]] == [read_manifest(s)["sha256"] for s in srcs]
    assert [a["path"] for a in meta["averaged"]] == [str(s.resolve()) for s in srcs]
    assert "file" not in m["state"]  # model only, no optimizer state
    loaded = load_model(out)
    effs = [_effective(x) for x in models]
    got = _effective(loaded)
    assert set(got) == set(effs[0]) and any(k.endswith("conv.weight") for k in got)
    for k, t in got.items():
        want = torch.stack([e[k] for e in effs]).mean(0)
        tol = 1e-6 * float(want.abs().max()) if k.endswith("conv.weight") else 0.0  # g v / ||v||: float32 rounding
        assert torch.allclose(t, want.float().double(), rtol=0, atol=tol), k
    for k, t in loaded.state_dict().items():
        if not t.is_floating_point():
            assert torch.equal(t, models[-1].state_dict()[k]), k  # counters and flags: the last one's
    # the averaged codec decodes what a plain (weight-norm-free) model with the mean weights decodes
    ref = VQVAE(dataclasses.replace(loaded.config, weight_norm=False)).eval()
    ref.load_state_dict({k: torch.stack([e[k] for e in effs]).mean(0).float() for k in ref.state_dict()
                         if k in effs[0]} | {k: v for k, v in loaded.state_dict().items() if not v.is_floating_point()})
    x = torch.randn(1, 1, 512)
    codes = loaded.encode(x)
    assert torch.equal(codes, ref.encode(x))
    torch.testing.assert_close(loaded.decode(codes), ref.decode(codes), rtol=1e-5, atol=1e-5)

    out2, _ = average_checkpoints(srcs, tmp_path / "avg_q", keep_last=("quantizer.*",))
    q = load_checkpoint(out2).weights
    for k in q:
        if k.startswith("quantizer."):
            assert torch.equal(q[k], models[-1].state_dict()[k]), k
    assert read_manifest(out2)["state"]["meta"]["averaged_keep_last"] == ["quantizer.*"]
    # a glob naming one half of a weight-norm pair keeps both halves (g alone would not match its v)
    out3, _ = average_checkpoints(srcs, tmp_path / "avg_v", keep_last=("*.original1",))
    w3 = load_checkpoint(out3).weights
    for k in w3:
        if ".parametrizations." in k:
            assert torch.equal(w3[k], models[-1].state_dict()[k]), k
    # one checkpoint "averaged" alone is itself, bit for bit (no weight norm: g v / ||v|| re-rounds)
    save_model(tmp_path / "plain", _model(5, weight_norm=False))
    one, _ = average_checkpoints([tmp_path / "plain"], tmp_path / "same")
    assert read_manifest(one)["sha256"] == read_manifest(tmp_path / "plain")["sha256"]
    # --force replaces an earlier average
    again, _ = average_checkpoints(srcs[:2], tmp_path / "avg", force=True)
    assert len(read_manifest(again)["state"]["meta"]["averaged"]) == 2


def test_average_keeps_the_training_config_and_export_keeps_the_provenance(tmp_path):
    exp = tmp_path / "exp"
    save_checkpoint(exp / "last", _model(0), meta={"step": 10})
    (exp / "train.json").write_text(json.dumps({"train": {"steps": 10, "lr": 0.1}}))
    save_model(tmp_path / "older", _model(1))
    out, _ = average_checkpoints([tmp_path / "older", exp / "last"], tmp_path / "avg")
    assert read_manifest(out)["state"]["meta"]["train"] == {"steps": 10, "lr": 0.1}
    shipped = export_model(out, tmp_path / "shipped")
    meta = read_manifest(shipped)["state"]["meta"]
    assert meta["train"] == {"steps": 10, "lr": 0.1} and len(meta["averaged"]) == 2 and meta["step"] == 10


def test_average_refuses_mismatched_models_and_protects_outputs(tmp_path):
    save_model(tmp_path / "a", _model(0))
    save_model(tmp_path / "b", _model(1, codebook_size=32))
    with pytest.raises(CheckpointError, match=r"b/config.json: its model config differs"):
        average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointError, match="must not be a source checkpoint"):
        average_checkpoints([tmp_path / "a"], tmp_path / "a", force=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        average_checkpoints([tmp_path / "a", tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(CheckpointError, match="at least one"):
        average_checkpoints([], tmp_path / "out")
    with pytest.raises(CheckpointError, match="a: given twice"):
        average_checkpoints([tmp_path / "a", tmp_path / "a"], tmp_path / "out")
    with pytest.raises(CheckpointError, match="--keep-last 'quantiser.\\*' matches no tensor"):
        average_checkpoints([tmp_path / "a"], tmp_path / "out", keep_last=("quantiser.*",))
    # a checkpoint whose (consistently re-hashed) tensors have another shape: the error names it, not the last
    save_model(tmp_path / "c", _model(2))
    save_model(tmp_path / "bad", _model(3))
    manifest = json.loads((tmp_path / "bad" / MANIFEST).read_text())
    wf = tmp_path / "bad" / manifest["weights"]["file"]
    w = load_checkpoint(tmp_path / "bad").weights
    w["decoder.layers.12.conv.bias"] = torch.zeros(2)
    wf.write_bytes(data := st_save(w))
    manifest["weights"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest["sha256"] = manifest["weights"]["sha256"]
    (tmp_path / "bad" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"bad/model-[0-9a-f]+\.safetensors: cannot average: tensor 'decoder.layers.12"):
        average_checkpoints([tmp_path / "a", tmp_path / "bad", tmp_path / "c"], tmp_path / "out")
    # a training checkpoint (with optimizer state) is never replaced by a model-only folder
    save_checkpoint(tmp_path / "run" / "last", _model(0), state={"opt": torch.ones(2)}, meta={"step": 1})
    with pytest.raises(CheckpointError, match="holds a training state"):
        average_checkpoints([tmp_path / "a"], tmp_path / "run" / "last", force=True)
    assert load_checkpoint(tmp_path / "run" / "last").state["opt"].shape == (2,)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="already exists"):
        average_checkpoints([tmp_path / "a"], tmp_path / "out")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        average_checkpoints([tmp_path / "a"], tmp_path / "out", force=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep me"


def test_cli_average(tmp_path, capsys):
    save_model(tmp_path / "a", _model(0))
    save_model(tmp_path / "b", _model(1))
    assert main(["average", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "avg"),
                 "--keep-last", "quantizer.*"]) == 0
    sha = read_manifest(tmp_path / "avg")["sha256"]
    assert f"averaged 2 checkpoints into {tmp_path / 'avg'} (sha256 {sha[:16]})" in capsys.readouterr().out
    assert main(["average", str(tmp_path / "a"), "-o", str(tmp_path / "avg")]) != 0
    err = capsys.readouterr().err.strip()
    assert "already exists; pass --force" in err and len(err.splitlines()) == 1
