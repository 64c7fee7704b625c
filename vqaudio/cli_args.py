"""Argument types and flags shared by several ``vqaudio`` subcommands (one definition each)."""

from __future__ import annotations

import argparse

from vqaudio.errors import ConfigError
from vqaudio.progress import add_progress_flag

__all__ = ["sample_rate_arg", "device_arg", "add_batch_flags", "add_postfilter_flag", "postfilter_choice"]


def sample_rate_arg(text: str) -> str | int:
    """``--sample-rate``: ``original``, ``model`` or a positive integer (Hz)."""
    if text in ("original", "model"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"--sample-rate must be 'original', 'model' or a positive integer, got {text!r}")


def device_arg(text: str, flag: str = "--device") -> str:
    """A usable torch device for ``--device``: ``cpu``, ``cuda``, ``cuda:N`` (a GPU that is there), ``mps``, or
    ``auto`` (``cuda`` when a GPU is there, else ``cpu``)."""
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{flag} must be cpu, cuda, cuda:N, mps or auto, got {text!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{flag} {text}: no CUDA GPU is available here (use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{flag} {text}: only {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{flag} {text}: Apple MPS is not available here (use --device cpu)")
    elif dev.type != "cpu":
        raise ConfigError(f"{flag} must be cpu, cuda, cuda:N, mps or auto, got {text!r}")
    return str(dev)


def add_batch_flags(p: argparse.ArgumentParser, model_help: str) -> None:
    """``--model``, ``--device``, ``--jobs``, ``--force``, ``--shard``, ``--[no-]progress`` of ``encode`` and ``decode``."""
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH", help=model_help)
    p.add_argument("--device", default="auto", metavar="cpu|cuda|cuda:N|auto",
                   help="where the model runs (default auto: the GPU when there is one, else the CPU)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="J", help="parallel worker processes (default 1)")
    p.add_argument("--force", action="store_true",
                   help="replace outputs that exist (a single named output that exists is otherwise an error; "
                        "a folder run skips them)")
    p.add_argument("--shard", metavar="I/N", help="only the inputs with hash(relative path) %% N == I (0 <= I < N)")
    add_progress_flag(p)


def add_postfilter_flag(p: argparse.ArgumentParser, help: str) -> None:
    """``--postfilter on|off`` (default: as the model's config says); read it with :func:`postfilter_choice`."""
    p.add_argument("--postfilter", choices=("on", "off"), default=None, help=help)


def postfilter_choice(args: argparse.Namespace) -> bool | None:
    """``--postfilter`` as ``load_codec``'s ``postfilter``: True, False, or None (the model's config decides)."""
    return None if args.postfilter is None else args.postfilter == "on"
