"""A series file's row index (a first column of dates, times or counts) rebuilt on decoding when it is regular.

A CSV's index column is not coded (:mod:`vqaudio.io` leaves it out of the values). When every cell is its first cell
plus a constant step, written the same way (``2024-03-01 00:00``, ``2024-03-01 01:00``, ...; or ``0.0``, ``0.5``,
...), three values describe the whole column: :class:`RegularIndex` keeps them in the token file's header and writes
the column back, cell for cell, into a decoded CSV. Any other index (irregular steps, gaps, mixed spellings) is
dropped, as before: storing it would cost bytes per row.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["RegularIndex", "regular_index"]

# Date and time spellings tried in order (strptime/strftime); a column is regular in one only if every cell is
# rendered back exactly.
DATE_FORMATS = (
    "%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y/%m/%d", "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S", "%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y", "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S", "%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%H:%M:%S", "%H:%M:%S.%f",
)
_NUMBER = re.compile(r"-?\d+(\.(\d+))?")


@dataclass(frozen=True)
class RegularIndex:
    """The index column ``start, start + step, ...``: ``format`` is a strftime spelling (``step`` in microseconds)
    or ``"%.Nf"`` for numbers (``step`` a number)."""

    start: str
    step: float
    format: str

    def iter_cells(self) -> Iterator[str]:
        """The cells of the column, as the file wrote them (without end)."""
        if self.format.startswith("%.") and self.format.endswith("f"):
            first = float(self.start)
            yield from (self.format % (first + k * self.step) for k in itertools.count())
            return
        first = dt.datetime.strptime(self.start, self.format)
        step = dt.timedelta(microseconds=int(self.step))
        yield from ((first + k * step).strftime(self.format) for k in itertools.count())

    def cells(self, n: int) -> list[str]:
        """The first ``n`` cells of the column."""
        return list(itertools.islice(self.iter_cells(), n))

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "step": self.step, "format": self.format}

    @classmethod
    def from_json(cls, value: Any) -> RegularIndex:
        """From a header's ``index_values``; a malformed one is a :class:`ValueError`."""
        if not (isinstance(value, dict) and set(value) == {"start", "step", "format"}
                and isinstance(value["start"], str) and isinstance(value["format"], str)
                and isinstance(value["step"], int | float) and not isinstance(value["step"], bool)
                and math.isfinite(value["step"]) and value["step"] > 0):
            raise ValueError("index_values must be {'start': text, 'step': a positive number, 'format': text}")
        index = cls(value["start"], float(value["step"]), value["format"])
        try:
            index.cells(2)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"index_values: {value['start']!r} is not written as {value['format']!r}") from None
        return index


def _number_index(cells: list[str]) -> RegularIndex | None:
    m = _NUMBER.fullmatch(cells[0])
    if m is None or _NUMBER.fullmatch(cells[1]) is None:
        return None
    decimals = len(m.group(2) or "")
    step = round(float(cells[1]) - float(cells[0]), decimals)
    return RegularIndex(cells[0], step, f"%.{decimals}f") if step > 0 else None


def _date_indexes(cells: list[str]) -> Iterator[RegularIndex]:
    for fmt in DATE_FORMATS:
        try:
            a, b = (dt.datetime.strptime(c, fmt) for c in cells[:2])
        except ValueError:
            continue
        step = (b - a) // dt.timedelta(microseconds=1)
        if step > 0 and a.strftime(fmt) == cells[0]:  # "2024-3-1" parses but is not written back the same way
            yield RegularIndex(cells[0], float(step), fmt)


def regular_index(cells: list[str]) -> RegularIndex | None:
    """The :class:`RegularIndex` that writes ``cells`` back exactly, or ``None`` (fewer than 2 cells, or not
    regular). Day-first and month-first dates are both tried: the one that fits every cell wins."""
    if len(cells) < 2:
        return None
    number = _number_index(cells)
    for index in ([number] if number is not None else _date_indexes(cells)):
        try:
            if all(a == b for a, b in zip(index.iter_cells(), cells, strict=False)):  # stops at the first cell that differs
                return index
        except (ValueError, OverflowError):  # a date past year 9999
            continue
    return None
