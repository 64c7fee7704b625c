"""How numbers are printed, in reports and on the command line alike: rounded, and ``n/a`` for a missing metric."""

from __future__ import annotations

import math

__all__ = ["metric", "rate", "unit"]


def metric(v: float | None) -> str:
    """A metric: 3 decimals (``2.703``), whole numbers from 100 up; ``n/a`` for ``None`` or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def rate(v: float | None) -> str:
    """A bitrate: whole numbers from 100 up (``3048``), else 3 significant digits (``2.56``); ``n/a`` if missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def unit(kind: str) -> str:
    """The bitrate unit of a codec kind: ``bit/s`` for audio, ``bit/step`` for series."""
    return "bit/s" if kind == "audio" else "bit/step"
