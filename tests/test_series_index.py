"""A regular row index (dates or counts at a constant step) is found only when it writes every cell back exactly."""

from __future__ import annotations

import pytest

from vqaudio.series_index import RegularIndex, regular_index


@pytest.mark.parametrize("cells, fmt", [
    (["0", "1", "2", "3"], "%.0f"),  # pandas' RangeIndex
    (["0.0", "0.5", "1.0", "1.5"], "%.1f"),
    (["0.00", "0.01", "0.02", "0.03"], "%.2f"),
    (["1700000000", "1700000060", "1700000120"], "%.0f"),  # Unix seconds
    (["2024-03-01", "2024-03-02", "2024-03-03"], "%Y-%m-%d"),
    (["2024-02-28 22:00", "2024-02-28 23:00", "2024-02-29 00:00"], "%Y-%m-%d %H:%M"),  # over a leap day
    (["2024-03-01T00:00:00Z", "2024-03-01T00:00:15Z"], "%Y-%m-%dT%H:%M:%SZ"),
    (["31/12/2023", "01/01/2024", "02/01/2024"], "%d/%m/%Y"),
    (["12/31/2023", "01/01/2024", "01/02/2024"], "%m/%d/%Y"),
    (["03/01/2024", "03/02/2024", "03/03/2024"], "%m/%d/%Y"),  # day-first reads Jan 3, Feb 3: not constant
    (["12:00:00.000000", "12:00:00.250000"], "%H:%M:%S.%f"),
])
def test_regular_indexes_are_found_and_written_back(cells, fmt):
    index = regular_index(cells)
    assert index is not None and index.format == fmt
    assert index.cells(len(cells)) == cells
    assert RegularIndex.from_json(index.to_json()) == index


@pytest.mark.parametrize("cells", [
    ["0"],  # one cell
    ["0", "1", "3"],  # a gap
    ["0", "0.5", "1"],  # spelled two ways
    ["2", "1", "0"],  # falling
    ["2024-01", "2024-02", "2024-03"],  # months: no constant step
    ["2024-3-1", "2024-3-2"],  # read, but not written back the same way
    ["Mon", "Tue", "Wed"],
    ["1e3", "2e3"],
    ["9999-12-30", "9999-12-31", "9999-12-31"],
])
def test_other_indexes_are_not_regular(cells):
    assert regular_index(cells) is None


def test_a_long_column_is_checked_to_its_last_cell():
    cells = [f"2024-01-01 00:{m // 60:02d}:{m % 60:02d}" for m in range(3600)]
    assert regular_index(cells).cells(3600) == cells
    assert regular_index([*cells[:-1], "2024-01-01 00:59:58"]) is None  # only the last cell differs
