"""Progress bars (tqdm, on stderr): on a terminal by default, never in a log file unless ``--progress`` asks.

``--progress`` / ``--no-progress`` (:func:`add_progress_flag`) override; :func:`progress_wanted` decides.
:class:`SecondsBar` counts one long file in seconds of audio (its rate is the speed in x realtime).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_progress_flag", "progress_wanted", "SecondsBar"]


def add_progress_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--progress`` / ``--no-progress`` (default: bars only when stderr is a terminal)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: only when stderr is a terminal)")


def progress_wanted(flag: bool | None) -> bool:
    """The ``--progress`` flag, or, when it was not given, whether stderr is a terminal."""
    if flag is not None:
        return flag
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


class SecondsBar:
    """A bar over one file in seconds of audio, created on the first update (when the total is known).

    Call it as ``bar(seconds, total_seconds)``, the progress callback of :meth:`vqaudio.codec.Codec.encode_file`
    and :meth:`~vqaudio.codec.Codec.decode_to_file`; a disabled bar does nothing.
    """

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, seconds: float, total: float) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="s", file=sys.stderr, leave=False, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}, "
                                       "{rate_fmt}]")
        self.bar.update(min(seconds, self.bar.total - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> SecondsBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
