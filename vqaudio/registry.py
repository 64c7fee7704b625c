"""Model names and paths: what ``--model NAME_OR_PATH`` and :func:`vqaudio.load_codec` accept, and how a
``.vqa`` file finds the model that decodes it.

- A *shipped* model lives inside the package, ``vqaudio/pretrained/<name>/`` (a checkpoint folder:
  ``config.json`` + safetensors weights); :data:`MODELS` is the one list of them. A shipped name always
  means the shipped model, even where a local folder has that name (pass ``./speech-8k`` for the folder).
  A registered name whose weights are not in the package (a trimmed install, or a model not shipped yet) is found in
  the user model folder, where its recipe's export stage puts it (:attr:`ShippedModel.recipe`); missing
  there too, the error says which recipe makes it.
- The default model depends on the input (:func:`default_model`): ``series`` for series files (``.npy``,
  ``.csv``, ``.tsv``, ``.ts``), ``speech-8k`` for audio.
- A *user* model is a checkpoint folder in the user model folder, :func:`user_model_dir`
  (``$VQAUDIO_MODELS``, default ``~/.cache/vqaudio/models``, under ``$XDG_CACHE_HOME`` when set),
  named by its sub-folder.
- Anything else is a *path*: a checkpoint folder, or a training experiment folder whose best (else last)
  checkpoint is used. A bare name that is neither shipped nor a user model is a path when it exists.

A ``.vqa`` file records its model's name and weights sha256; :func:`find_by_sha256` finds the shipped or
user model with those weights whatever it is called now, so token files keep decoding when a model is
renamed: the ``speech-8k`` of vqaudio 0.1 is shipped as ``speech-8k-asterisk`` since the any-voice model took the
name, and the ``.vqa`` files it wrote (their header says ``speech-8k``) still decode with it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqaudio.errors import CheckpointError

__all__ = ["PRETRAINED_DIR", "DEFAULT_MODEL", "DEFAULT_SERIES_MODEL", "default_model", "MODELS", "MODELS_ENV", "ShippedModel", "ModelEntry", "shipped",
           "resolve", "is_checkpoint_dir", "user_model_dir", "find_by_sha256", "list_models", "model_entry"]


@dataclass(frozen=True)
class ShippedModel:
    """What the registry says about a shipped model: a one-line description, the weights' licence, and the
    recipe that trains and exports it (how to get it when the weights are not installed)."""

    description: str
    licence: str
    recipe: str = ""


PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = "speech-8k"
DEFAULT_SERIES_MODEL = "series"
# Every model shipped inside the package, by name (its folder under PRETRAINED_DIR).
MODELS: dict[str, ShippedModel] = {
    "speech-8k": ShippedModel(
        "speech, 8 kHz mono, hop 84 (95.2 frames/s), 4 x 8-bit codes: 3.05 kbit/s (--n-q 3: 2.29), "
        "for any voice: trained on 47 voice folders (asterisk, klettres, ktuberling) with speed, pitch, microphone, "
        "room and noise augmentation", "GPL-3.0-or-later", "recipes/speech8k/run.sh"),
    "speech-8k-asterisk": ShippedModel(
        "speech-8k of vqaudio 0.1: the same geometry, trained on three voices (the asterisk prompts); "
        "decodes the .vqa files written by it", "CC-BY-SA-3.0", "recipes/asterisk/run.sh"),
    DEFAULT_SERIES_MODEL: ShippedModel(
        "generalist time series, any channel count (each channel alone, RevIN), hop 4, 4 x 8-bit codes: "
        "2 bits/sample per level (2, 4, 6, 8), trained on aeon's shipped UCR/UEA TRAIN splits and synthetic series",
        "Apache-2.0", "recipes/series/run.sh"),
}
MODELS_ENV = "VQAUDIO_MODELS"
CONFIG_NAME = "config.json"
# Checkpoint sub-folders of an experiment folder, in order of preference.
EXPERIMENT_CHECKPOINTS = ("best", "last", "checkpoints/best", "checkpoints/last")


def is_checkpoint_dir(path: Path) -> bool:
    """Whether ``path`` looks like a checkpoint folder (a ``config.json`` next to ``*.safetensors``)."""
    return (path / CONFIG_NAME).is_file() and any(path.glob("*.safetensors"))


def default_model(series: bool) -> str:
    """The model used without ``--model``: ``series`` for series input, ``speech-8k`` for audio."""
    return DEFAULT_SERIES_MODEL if series else DEFAULT_MODEL


def shipped() -> list[str]:
    """Registered names whose model is present in this install, sorted."""
    return sorted(n for n in MODELS if is_checkpoint_dir(PRETRAINED_DIR / n))


def user_model_dir() -> Path:
    """The user model folder: ``$VQAUDIO_MODELS``, else ``$XDG_CACHE_HOME/vqaudio/models`` (``~/.cache``)."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vqaudio" / "models"


def _user_models() -> dict[str, Path]:
    """Checkpoint folders in the user model folder by name, except names of shipped models present in the
    package (those win; a registered model not in the package is found here)."""
    root = user_model_dir()
    try:
        subs = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:
        return {}
    present = set(shipped())
    return {p.name: p for p in subs if not p.name.startswith(".") and p.name not in present and is_checkpoint_dir(p)}


def _is_name(spec: str) -> bool:
    """A bare name (``speech-8k``), not a path (``./speech-8k``, ``exp/best``, ``~/m``)."""
    return bool(spec) and "/" not in spec and os.sep not in spec and not spec.startswith((".", "~"))


def _checkpoint_in(path: Path) -> Path | None:
    if is_checkpoint_dir(path):
        return path
    for sub in EXPERIMENT_CHECKPOINTS:
        if is_checkpoint_dir(path / sub):
            return path / sub
    return None


def _known_names() -> str:
    return ", ".join([*MODELS, *_user_models()]) or "none"


def resolve(name_or_path: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Return ``(name, checkpoint folder)`` for a shipped name, a user model's name or a path (``None``: the default).

    The name is the registered name, or the folder's name for a path (the experiment's name when
    an experiment folder is given). Raises :class:`CheckpointError` with one line saying what is
    wrong and what to pass instead.
    """
    spec = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    if _is_name(spec):
        if spec in MODELS:
            ckpt = PRETRAINED_DIR / spec
            if is_checkpoint_dir(ckpt):
                return spec, ckpt
            user = _user_models().get(spec)
            if user is not None:
                return spec, user
            how = (f"make it with {MODELS[spec].recipe} (its export stage installs it)" if MODELS[spec].recipe
                   else "train one with `vqaudio train`")
            raise CheckpointError(
                f"model {spec!r} is not shipped with this install of vqaudio ({ckpt} is missing) nor in the user "
                f"model folder {user_model_dir()}; {how}, or pass --model PATH"
            )
        user = _user_models().get(spec)
        if user is not None:
            return spec, user
        if not Path(spec).exists():
            raise CheckpointError(f"unknown model {spec!r}: not a folder, nor a shipped or user model ({_known_names()}; "
                                  f"user models live in {user_model_dir()}); pass --model PATH")
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError("model folder does not exist", str(path))
    if not path.is_dir():
        raise CheckpointError("--model must be a checkpoint or experiment folder, not a file", str(path))
    ckpt = _checkpoint_in(path)
    if ckpt is None:
        wanted = " or ".join(f"{s}/" for s in EXPERIMENT_CHECKPOINTS)
        raise CheckpointError(f"not a checkpoint folder (no {CONFIG_NAME} + *.safetensors, nor {wanted} with them)", str(path))
    name = path.resolve().name if ckpt != path else ckpt.resolve().name
    return name, ckpt


def _models() -> list[tuple[str, str, Path]]:
    """``(name, "shipped" | "user", folder)`` of every model installed, shipped first."""
    return [(n, "shipped", PRETRAINED_DIR / n) for n in shipped()] + [
        (n, "user", p) for n, p in _user_models().items()]


def _manifest(folder: Path) -> dict[str, Any] | None:
    """A checkpoint folder's ``config.json`` as JSON, unverified (``None`` if unreadable); loading verifies it."""
    try:
        m = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def find_by_sha256(sha256: str) -> tuple[str, Path] | None:
    """``(name, folder)`` of the shipped or user model whose weights have this sha256, or ``None``."""
    if not isinstance(sha256, str) or not sha256:
        return None
    for name, _, folder in _models():
        m = _manifest(folder)
        if m is not None and m.get("sha256") == sha256:
            return name, folder
    return None


@dataclass(frozen=True)
class ModelEntry:
    """One line of ``vqaudio models``: ``bitrates`` in bit/s (series: bits per sample of a channel) for 1..n_q levels."""

    name: str
    source: str
    folder: str
    sha256: str
    kind: str
    sample_rate: int | None
    bitrates: list[float]
    licence: str
    bytes: int


def _licence(folder: Path, manifest: dict[str, Any]) -> str:
    """The registry's licence for a shipped model; a user model's ``meta.licence``, else the first line of its
    LICENSE/LICENCE file, else ``"n/a"``."""
    meta = (manifest.get("state") or {}).get("meta") or {}
    if isinstance(meta.get("licence"), str):
        return meta["licence"]
    for f in sorted(folder.glob("LICEN[CS]E*")):
        try:
            first = next((ln.strip() for ln in f.read_text(errors="replace").splitlines() if ln.strip()), "")
        except OSError:
            continue
        if first:
            return first[:40]
    return "n/a"


def model_entry(name: str, source: str, folder: Path) -> ModelEntry | None:
    """What ``vqaudio models`` shows of a model folder, from its config alone (no weights read); ``None`` for a
    folder that is not a VQ-VAE checkpoint."""
    m = _manifest(folder)
    if m is None or m.get("model_type") != "vqvae" or not isinstance(m.get("config"), dict):
        return None
    from vqaudio.errors import ConfigError
    from vqaudio.models.vqvae import VQVAEConfig
    from vqaudio.tokenfile import code_bits

    try:
        c = VQVAEConfig.from_dict(m["config"])
    except (ConfigError, TypeError, ValueError):
        return None
    rate = c.sample_rate if c.kind == "audio" else None
    per_level = (rate or 1) / math.prod(c.strides) * code_bits(c.codebook_size)
    bitrates = [round(per_level * n, 3) for n in range(1, c.n_q + 1)]
    licence = MODELS[name].licence if name in MODELS else _licence(folder, m)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return ModelEntry(name, source, str(folder), str(m.get("sha256")), c.kind, rate, bitrates, licence, size)


def list_models() -> list[ModelEntry]:
    """The shipped models, then the user models, as :class:`ModelEntry`."""
    return [e for e in (model_entry(*m) for m in _models()) if e is not None]
