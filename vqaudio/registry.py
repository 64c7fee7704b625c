"""Model names and paths: what ``--model NAME_OR_PATH`` and :func:`vqaudio.load_codec` accept.

A *registered name* is a model shipped inside the package, in ``vqaudio/pretrained/<name>/`` (a
checkpoint folder: ``config.json`` + safetensors weights). Anything else is a *path*: a checkpoint
folder, or a training experiment folder whose best (else last) checkpoint is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from vqaudio.errors import CheckpointError

__all__ = ["PRETRAINED_DIR", "DEFAULT_MODEL", "MODELS", "shipped", "resolve", "is_checkpoint_dir"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = "speech-8k"
# Every name vqaudio knows, shipped or not, with a one-line description.
MODELS: dict[str, str] = {
    "speech-8k": "speech, 8 kHz mono, hop 84 (95.2 frames/s), 4 x 8-bit codes: 3.05 kbit/s (--n-q 3: 2.29), "
                 "trained on the asterisk prompts (CC-BY-SA 3.0)",
}
CONFIG_NAME = "config.json"
# Checkpoint sub-folders of an experiment folder, in order of preference.
EXPERIMENT_CHECKPOINTS = ("best", "last", "checkpoints/best", "checkpoints/last")


def is_checkpoint_dir(path: Path) -> bool:
    """Whether ``path`` looks like a checkpoint folder (a ``config.json`` next to ``*.safetensors``)."""
    return (path / CONFIG_NAME).is_file() and any(path.glob("*.safetensors"))


def shipped() -> list[str]:
    """Registered names whose model is present in this install, sorted."""
    return sorted(n for n in MODELS if is_checkpoint_dir(PRETRAINED_DIR / n))


def _checkpoint_in(path: Path) -> Path | None:
    if is_checkpoint_dir(path):
        return path
    for sub in EXPERIMENT_CHECKPOINTS:
        if is_checkpoint_dir(path / sub):
            return path / sub
    return None


def resolve(name_or_path: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Return ``(name, checkpoint folder)`` for a registered name or a path (``None``: the default).

    The name is the registered name, or the folder's name for a path (the experiment's name when
    an experiment folder is given). Raises :class:`CheckpointError` with one line saying what is
    wrong and what to pass instead.
    """
    spec = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    path = Path(spec).expanduser()
    looks_like_path = os.sep in spec or spec.startswith(".") or path.exists()
    if not looks_like_path:
        if spec in MODELS:
            ckpt = PRETRAINED_DIR / spec
            if is_checkpoint_dir(ckpt):
                return spec, ckpt
            raise CheckpointError(
                f"model {spec!r} is not shipped with this install of vqaudio ({ckpt} is missing); "
                "train one with `vqaudio train` and pass its folder with --model PATH"
            )
        names = ", ".join(sorted(MODELS)) or "none"
        raise CheckpointError(f"unknown model {spec!r}: not a folder, nor a registered name ({names}); pass --model PATH")
    if not path.exists():
        raise CheckpointError("model folder does not exist", path=str(path))
    if not path.is_dir():
        raise CheckpointError("--model must be a checkpoint or experiment folder, not a file", path=str(path))
    ckpt = _checkpoint_in(path)
    if ckpt is None:
        wanted = " or ".join(f"{s}/" for s in EXPERIMENT_CHECKPOINTS)
        raise CheckpointError(f"not a checkpoint folder (no {CONFIG_NAME} + *.safetensors, nor {wanted} with them)", path=str(path))
    name = path.resolve().name if ckpt != path else ckpt.resolve().name
    return name, ckpt
