"""Errors that users can cause. The CLI prints ``str(err)`` (one line) and exits non-zero."""

from __future__ import annotations

import contextlib
import math
import numbers
import sys
import warnings
from collections.abc import Iterator
from typing import Any


class VQAudioError(Exception):
    """Base class of every user-facing vqaudio error; its message is a single line."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        text = f"{path}: {message}" if path else message
        super().__init__(" ".join(str(text).split()))  # one line, always


class AudioError(VQAudioError):
    """An audio or series file cannot be read or is unusable (empty, corrupt, NaN, wrong rate)."""


class TokenFileError(VQAudioError):
    """A ``.vqa`` token file is truncated, corrupted, foreign, or does not match the model."""


class CheckpointError(VQAudioError):
    """A checkpoint is missing, tampered with, or inconsistent with its config."""


class ConfigError(VQAudioError):
    """A configuration or command-line value is invalid."""


class TrainingError(VQAudioError):
    """Training cannot go on: the loss or the gradient norm is NaN or infinite (the run diverged)."""


def is_finite_number(v: Any) -> bool:
    """A finite real number (int, float or a NumPy scalar of them), not a bool: what config checks accept."""
    import numpy as np  # here, not at the top: the CLI's start-up (--version, --help) imports this module

    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


class VQAudioWarning(UserWarning):
    """Something users should know about their input that does not stop the work (a one-line message naming
    the file): content above the model's band is dropped, the input is clipped. The CLI prints it as
    ``vqaudio COMMAND: warning: ...``."""


@contextlib.contextmanager
def printed_warnings(command: str) -> Iterator[None]:
    """Within the block, each :class:`VQAudioWarning` is printed as one line ``vqaudio COMMAND: warning: ...`` on
    stderr (between progress bars), every time; other warnings as usual."""
    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, VQAudioWarning):
                return original(message, category, filename, lineno, file, line)
            from tqdm import tqdm

            tqdm.write(f"vqaudio {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

        warnings.showwarning = show
        warnings.simplefilter("always", VQAudioWarning)
        yield
