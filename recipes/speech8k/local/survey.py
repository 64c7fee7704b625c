#!/usr/bin/env python3
"""Measure every installed voice: files, seconds, active-speech seconds, median F0 (Hz).

    survey.py [-o voices_survey.tsv]
The recipe's speaker sex labels (conf/voices.tsv) come from this median F0 (< 165 Hz male) checked by listening where possible.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2] / "common")]
from audio8k import FRAME, RATE, active_frames, median_f0, read_8k  # noqa: E402
from voices import voices  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=None)
    args = ap.parse_args()
    rows = ["voice\tpackage\tlanguage\tfiles\tseconds\tactive_s\tf0_hz\tduplicates"]
    seen: set[str] = set()
    for v in voices():
        files = v.files()
        if not files:
            continue
        total = active = 0.0
        f0s, dup = [], 0
        for f in files:
            h = hashlib.sha1(f.read_bytes()).hexdigest()
            if h in seen:
                dup += 1
                continue
            seen.add(h)
            try:
                x = read_8k(f)
            except Exception as err:  # noqa: BLE001 - a survey reports, it does not stop
                print(f"{f}: {err}", file=sys.stderr)
                continue
            total += len(x) / RATE
            active += active_frames(x).sum() * FRAME / RATE
            f0 = median_f0(x)
            if f0 == f0:
                f0s.append(f0)
        row = f"{v.id}\t{v.package}\t{v.language}\t{len(files)}\t{total:.0f}\t{active:.0f}\t" \
              f"{np.median(f0s) if f0s else float('nan'):.0f}\t{dup}"
        print(row, flush=True)
        rows.append(row)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
