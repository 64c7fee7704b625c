"""Checkpoints without pickle: safetensors tensors + a JSON manifest, written atomically.

A checkpoint is a folder::

    config.json                      the manifest (below), written last, by one atomic rename
    model-<sha256[:16]>.safetensors  model weights (state_dict)
    state-<sha256[:16]>.safetensors  optional training state tensors (optimizer moments, RNG states)

``config.json``::

    {"format": "vqaudio-checkpoint", "version": 1, "model_type": "vqvae" | "wavenet",
     "config": {...model config...},
     "weights": {"file": ..., "sha256": ..., "bytes": ...},
     "state": null | {["file": ..., "sha256": ..., "bytes": ...,] "meta": {...JSON: step, RNG, metrics...}},
     "sha256": <weights sha256, the model's identity>}

Tensor files carry their content hash in their name and are never overwritten, so saving over an
existing checkpoint first writes the new files, then swaps the manifest in with ``os.replace``,
then deletes the files the old manifest named: a reader (or a crash at any moment) sees either the
old or the new checkpoint, complete. Loading checks the manifest, the sha256 and size of every
file it names, and that the tensors match the model exactly (no missing, extra or mis-shaped
ones); every problem is a one-line :class:`vqaudio.errors.CheckpointError` naming the file.
Files are only parsed with ``json`` and ``safetensors``, never ``torch.load``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from vqaudio.errors import CheckpointError, ConfigError
from vqaudio.io import atomic_path

__all__ = ["MANIFEST", "SNAPSHOTS", "FORMAT", "MODEL_TYPES", "Checkpoint", "save_checkpoint", "load_checkpoint", "save_model",
           "load_model", "read_manifest", "model_type_of", "model_config", "build_model", "load_weights", "export_model",
           "optimizer_state", "load_optimizer_state", "read_experiment_train",
           "write_model_folder", "EXPORT_META"]

MANIFEST = "config.json"
SNAPSHOTS = "snapshots"  # an experiment's folder of kept models (TrainConfig.keep_every)
FORMAT, VERSION = "vqaudio-checkpoint", 1
# model_type -> (module, model class, config class); config classes have to_dict / from_dict
MODEL_TYPES: dict[str, tuple[str, str, str]] = {
    "vqvae": ("vqaudio.models.vqvae", "VQVAE", "VQVAEConfig"),
    "wavenet": ("vqaudio.models.wavenet", "WaveNetPrior", "WaveNetConfig"),
}


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: the manifest's parts and the verified tensors."""

    path: Path
    model_type: str
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    sha256: str
    weights_file: str
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] | None = None  # training-state JSON, None if the checkpoint has none


def _classes(model_type: str) -> tuple[type, type]:
    module, model_cls, config_cls = MODEL_TYPES[model_type]
    mod = importlib.import_module(module)
    return getattr(mod, model_cls), getattr(mod, config_cls)


def model_type_of(model: nn.Module) -> str:
    """The registered ``model_type`` of ``model`` (unwraps DDP)."""
    model = getattr(model, "module", model)
    for name, (module, cls, _) in MODEL_TYPES.items():
        if type(model).__name__ == cls and type(model).__module__ == module:
            return name
    raise TypeError(f"checkpoint: unknown model class {type(model).__qualname__}; register it in MODEL_TYPES")


def _config_of(model: nn.Module) -> dict[str, Any]:
    model = getattr(model, "module", model)
    if hasattr(model, "config_dict"):
        return model.config_dict()
    return (getattr(model, "config", None) or model.cfg).to_dict()


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def _write_blob(folder: Path, stem: str, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{sha[:16]}.safetensors"
    if not (folder / name).is_file() or (folder / name).stat().st_size != len(data):
        with atomic_path(folder / name) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    return {"file": name, "sha256": sha, "bytes": len(data)}


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    state: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (weights + config) and optionally training ``state`` tensors and ``meta`` JSON.

    ``meta`` must be JSON-serialisable (numbers, strings, lists, dicts); without ``state`` tensors it
    is stored in the manifest alone. Returns the folder.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    old = _referenced(folder)
    weights = _write_blob(folder, "model", _tensor_bytes(getattr(model, "module", model).state_dict()))
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "model_type": model_type_of(model), "config": _config_of(model),
        "weights": weights, "state": None, "sha256": weights["sha256"],
    }
    if state:
        manifest["state"] = {**_write_blob(folder, "state", _tensor_bytes(state)), "meta": meta or {}}
    elif meta is not None:
        manifest["state"] = {"meta": meta}  # JSON only, no tensor file
    text = json.dumps(manifest, indent=2, allow_nan=False)
    with atomic_path(folder / MANIFEST) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    for name in old - _referenced(folder):
        (folder / name).unlink(missing_ok=True)
    return folder


def _referenced(folder: Path) -> set[str]:
    """Tensor files named by the current manifest (empty if none or unreadable)."""
    try:
        m = json.loads((folder / MANIFEST).read_text())
        return {b["file"] for b in (m.get("weights"), m.get("state")) if isinstance(b, dict) and "file" in b}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The validated ``config.json`` of a checkpoint folder (tensor files not read)."""
    folder = Path(path)
    file = folder / MANIFEST
    if not folder.is_dir():
        raise CheckpointError("checkpoint folder does not exist", str(folder))
    try:
        m = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"not a checkpoint folder (no {MANIFEST})", str(folder)) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"unreadable or invalid JSON ({err})", str(file)) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CheckpointError(f"not a vqaudio checkpoint manifest (format is not {FORMAT!r})", str(file))
    if m.get("version") != VERSION:
        raise CheckpointError(f"unsupported checkpoint version {m.get('version')!r} (this vqaudio reads {VERSION})", str(file))
    if m.get("model_type") not in MODEL_TYPES:
        raise CheckpointError(f"unknown model_type {m.get('model_type')!r} (known: {', '.join(MODEL_TYPES)})", str(file))
    if not isinstance(m.get("config"), dict):
        raise CheckpointError("missing or invalid 'config' object", str(file))
    for key in ("weights", "state"):
        blob = m.get(key)
        if key == "state" and (blob is None or (isinstance(blob, dict) and set(blob) == {"meta"})):
            continue
        ok = isinstance(blob, dict) and isinstance(blob.get("file"), str) and isinstance(blob.get("sha256"), str)
        ok = ok and isinstance(blob.get("bytes"), int) and Path(blob["file"]).name == blob["file"]
        if not ok:
            raise CheckpointError(f"missing or invalid '{key}' entry", str(file))
    if m.get("sha256") != m["weights"]["sha256"]:
        raise CheckpointError("manifest sha256 does not match its weights entry", str(file))
    return m


def _read_blob(folder: Path, blob: dict[str, Any]) -> dict[str, torch.Tensor]:
    file = folder / blob["file"]
    try:
        data = file.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read tensor file ({err.strerror})", str(file)) from None
    if len(data) != blob["bytes"]:
        raise CheckpointError(f"truncated or altered: {len(data)} bytes, manifest says {blob['bytes']}", str(file))
    if hashlib.sha256(data).hexdigest() != blob["sha256"]:
        raise CheckpointError("sha256 mismatch: the file was modified or corrupted", str(file))
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"invalid safetensors data ({err})", str(file)) from None


def load_checkpoint(path: str | os.PathLike, with_state: bool = True) -> Checkpoint:
    """Read and verify a checkpoint folder (weights, and training state if ``with_state``)."""
    folder = Path(path)
    m = read_manifest(folder)
    ckpt = Checkpoint(folder, m["model_type"], m["config"], _read_blob(folder, m["weights"]), m["sha256"], m["weights"]["file"])
    if with_state and m["state"] is not None:
        ckpt.state = _read_blob(folder, m["state"]) if "file" in m["state"] else {}
        ckpt.meta = m["state"].get("meta") or {}
    return ckpt


def model_config(ckpt: Checkpoint) -> Any:
    """The checkpoint's model config as its dataclass (missing keys take their defaults)."""
    try:
        return _classes(ckpt.model_type)[1].from_dict(ckpt.config)
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"invalid model config ({err})", str(ckpt.path / MANIFEST)) from None


def build_model(ckpt: Checkpoint) -> nn.Module:
    """Instantiate the checkpoint's model from its config and load its verified weights."""
    config = model_config(ckpt)
    try:
        model = _classes(ckpt.model_type)[0](config)
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"invalid model config ({err})", str(ckpt.path / MANIFEST)) from None
    load_weights(model, ckpt.weights, str(ckpt.path / ckpt.weights_file))
    model.checkpoint_sha256 = ckpt.sha256
    return model


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(weights)`` after checking names, shapes and dtypes exactly."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise CheckpointError(f"tensors do not match the model: missing {missing[:5]}, unexpected {extra[:5]}", where)
    for k, t in expected.items():
        if weights[k].shape != t.shape or weights[k].dtype != t.dtype:
            raise CheckpointError(f"tensor {k!r} is {weights[k].dtype}{list(weights[k].shape)}, model needs {t.dtype}{list(t.shape)}", where)
    model.load_state_dict(weights)


def save_model(path: str | os.PathLike, model: nn.Module) -> Path:
    """Save a model's weights and config (no training state) to the folder ``path``."""
    return save_checkpoint(path, model)


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load the model of a checkpoint folder (a ``VQVAE`` or ``WaveNetPrior``) in eval mode.

    Its ``checkpoint_sha256`` attribute is the weights' sha256 (the model's identity).
    """
    return build_model(load_checkpoint(path, with_state=False)).eval()


def jsonable(x: Any) -> Any:
    """``x`` as JSON types, recursively: tuples and NumPy arrays as lists, NumPy scalars as numbers,
    dict keys as strings (optimizer and RNG states in training checkpoints)."""
    if isinstance(x, (tuple, list)):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as ``(tensors, JSON)`` for a checkpoint (no pickle): tensors named
    ``optim.{param id}.{name}``, and ``{"param_groups", "optim_scalars"}``."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v
            else:
                scalars.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": jsonable(sd["param_groups"]), "optim_scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_state` saved."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, st in meta["optim_scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# what an exported model's meta keeps from its source's
EXPORT_META = ("step", "metrics", "best_step", "train", "averaged", "averaged_keep_last")


def export_model(src: str | os.PathLike, dst: str | os.PathLike, include: tuple[str | os.PathLike, ...] = (),
                 force: bool = False, postfilter: bool | None = None) -> Path:
    """Copy the model of ``src`` (a registered name, checkpoint or experiment folder) to a new folder ``dst``.

    ``dst`` gets the verified weights (same sha256: token files keep decoding) and config, without
    optimizer state; its meta keeps the training step, the validation metrics, the training config
    (:func:`read_experiment_train`) and, for an averaged model, its sources. ``include`` files (a
    model card, a licence) are copied next to them. ``postfilter`` (None: as ``src``) sets the config's
    ``postfilter`` (audio: :mod:`vqaudio.postfilter` on decoded audio). Written by :func:`write_model_folder`.
    """
    from vqaudio.registry import resolve

    _, folder = resolve(src)
    ckpt = load_checkpoint(folder)
    model = build_model(ckpt)
    if postfilter is not None:
        model.config = dataclasses.replace(model.config, postfilter=postfilter)  # validated: audio models only
    meta = {k: ckpt.meta[k] for k in EXPORT_META if ckpt.meta and k in ckpt.meta}
    train = read_experiment_train(ckpt)
    if train is not None:
        meta["train"] = train
    return write_model_folder(dst, model, meta, include, force, sources=(folder,), sha256=ckpt.sha256)


def read_experiment_train(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The training config of a checkpoint: its experiment's ``train.json`` (``ckpt`` is the
    experiment's ``best/``, ``last/`` or one of its ``snapshots/``), else the ``train`` entry of its
    own meta, else ``None``."""
    exp = ckpt.path.parent.parent if ckpt.path.parent.name == SNAPSHOTS else ckpt.path.parent
    try:
        return json.loads((exp / "train.json").read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return (ckpt.meta or {}).get("train")


def write_model_folder(dst: str | os.PathLike, model: nn.Module, meta: dict[str, Any],
                       include: tuple[str | os.PathLike, ...] = (), force: bool = False,
                       sources: tuple[Path, ...] = (), sha256: str | None = None) -> Path:
    """Save ``model`` with ``meta`` (no optimizer state) and the ``include`` files as the new folder ``dst``.

    The folder is built under a temporary name and renamed into place. An existing ``dst`` is
    replaced only with ``force``, only if it is a checkpoint folder holding nothing but its
    checkpoint files and files named like ``include`` ones, and a failed swap puts it back. ``dst``
    must not be, hold or lie inside any of the ``sources`` folders; with ``sha256`` the saved
    weights must have that hash (an export is a bit-exact copy).
    """
    from vqaudio.registry import is_checkpoint_dir

    dst = Path(dst)
    there = dst.resolve()
    for folder in sources:
        here = folder.resolve()
        if there == here or here in there.parents or there in here.parents:
            raise CheckpointError(f"the output folder must not be a source checkpoint ({folder}), inside it, or hold it", str(dst))
    files = [Path(f) for f in include]
    for f in files:
        if not f.is_file():
            raise CheckpointError("--include: not a file", str(f))
        if f.name == MANIFEST or f.suffix == ".safetensors":
            raise CheckpointError(f"--include: a file named {f.name!r} would clash with the checkpoint", str(f))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise CheckpointError(f"--include: two files named {next(n for n in names if names.count(n) > 1)!r}")
    if dst.exists() or dst.is_symlink():
        if not force:
            raise CheckpointError("already exists; pass --force to replace it", str(dst))
        if not dst.is_dir() or dst.is_symlink() or not is_checkpoint_dir(dst):
            raise CheckpointError("exists and is not a checkpoint folder; refusing to replace it", str(dst))
        if "file" in (read_manifest(dst).get("state") or {}):
            raise CheckpointError("holds a training state (optimizer, RNG) that a model-only folder would lose; "
                                  "refusing to replace it", str(dst))
        extra = sorted(p.name for p in dst.iterdir() if p.name not in _referenced(dst) | {MANIFEST, *names})
        if extra:
            raise CheckpointError(f"holds {extra[0]!r}, which the output would delete (--include it, or move it); "
                                  "refusing to replace it", str(dst))
    if not dst.parent.is_dir():
        raise CheckpointError("parent folder does not exist", str(dst.parent))
    tmp = old = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
        save_checkpoint(tmp, model, meta=meta)
        if sha256 is not None and read_manifest(tmp)["sha256"] != sha256:
            raise CheckpointError("re-serialised weights differ from the source (sha256); nothing written", str(dst))
        for f in files:
            shutil.copyfile(f, tmp / f.name)
        os.chmod(tmp, 0o777 & ~_umask())
        if dst.exists():
            old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".old"))
            os.replace(dst, old)  # onto an empty folder: allowed
        os.replace(tmp, dst)
        tmp = None
    except OSError as err:
        raise CheckpointError(f"cannot write the output folder ({err.strerror or err})", str(dst)) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if not dst.exists() and any(old.iterdir()):
                os.replace(old, dst)  # the swap failed half-way: put the previous folder back
            else:
                shutil.rmtree(old, ignore_errors=True)
    return dst


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
