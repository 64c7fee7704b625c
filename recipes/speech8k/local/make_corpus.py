#!/usr/bin/env python3
"""Recipe stage 1 of speech8k: build the 8 kHz training corpus and the evaluation sets from the voice table.

    make_corpus.py --voices conf/voices.tsv --heldout ../asterisk/conf/heldout.txt --out EXP/data
                   [--speeds 0.9,1.1] [--pitch-female -300,400] [--max-per-voice N] [--max-eval-per-voice N]
                   [--jobs J] [--check]

For every voice of ``conf/voices.tsv`` (columns ``voice role sex f0_hz``; role ``train``, ``eval`` or ``drop``) whose
Debian package is installed, each recording is decoded (sox for GSM), made 8 kHz mono, and its silences trimmed
(leading/trailing cut, pauses shortened to 0.3 s). Writes, each list atomically:

- ``OUT/wav/<voice>/<name>.wav``: training voices; ``OUT/wav/<voice>+sp<f>/``: Kaldi-style speed perturbation (sox
  ``speed``); ``OUT/wav/<voice>+pitch<c>/``: female voices shifted by ``c`` cents (sox ``pitch``, formants move with it):
  -300 gives extra low voices, +400 extra high ones (children, acted voices: F0 250-290 Hz from the asterisk women);
- ``OUT/eval/<voice>/<name>.wav``: the unseen voices (never trained on, no file of theirs in training);
- ``OUT/train.txt``; ``OUT/eval_unseen.txt``, ``OUT/eval_unseen_{male,female}.txt``; ``OUT/heldout_asterisk.txt``
  (the asterisk recipe's held-out prompts, also kept out of training); ``OUT/info.json`` (per-voice counts, seconds).

A voice listed in the table but not installed is an error naming its folder and package (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2] / "common")]
from audio8k import RATE, read_8k, trim_silences  # noqa: E402
from voices import SND, voices, where  # noqa: E402

MIN_SECONDS = 0.25


def read_table(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader((ln for ln in f if not ln.startswith("#")), delimiter="\t")]
    for r in rows:
        if r["role"] not in ("train", "eval", "drop") or r["sex"] not in ("m", "f", "?"):
            raise SystemExit(f"{path}: bad row {r}")
    return {r["voice"]: r for r in rows}


def _write_list(path: Path, lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write("".join(f"{ln}\n" for ln in lines))
    os.replace(tmp.name, path)


def _save(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.wav")
    sf.write(str(tmp), x, RATE, subtype="PCM_16")
    os.replace(tmp, path)


def _sox(src: Path, dst: Path, effect: list[str]) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp.wav")
    subprocess.run(["sox", "-q", str(src), "-b", "16", str(tmp), *effect, "rate", "-v", str(RATE)], check=True)
    os.replace(tmp, dst)


def convert(job: tuple[str, str, str, list[str]]) -> tuple[str, float] | None:
    """Decode, trim and write one recording, plus its perturbed copies; ``(path, seconds)`` or None if too short."""
    src, dst, _, variants = job
    out = Path(dst)
    if not out.is_file():
        x = trim_silences(read_8k(Path(src)))
        if len(x) < MIN_SECONDS * RATE or not np.isfinite(x).all():
            return None
        peak = float(np.abs(x).max())
        _save(out, x / peak * 0.95 if peak > 0.999 else x)
    for v in variants:  # "<folder>\t<sox effect...>"
        folder, *effect = v.split("\t")
        dv = Path(folder) / out.name
        if not dv.is_file():
            _sox(out, dv, effect)
    return dst, sf.info(dst).duration


def number_list(kind: type) -> Callable[[str], list]:
    """An argparse type: comma-separated numbers of ``kind`` ('' for none), or a one-line usage error."""
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
    return parse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voices", type=Path, required=True)
    ap.add_argument("--heldout", type=Path, required=True, help="asterisk held-out list (<voice folder>/<file>)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--speeds", type=number_list(float), default="0.9,1.1", help="speed perturbation factors ('' for none)")
    ap.add_argument("--pitch-female", type=number_list(int), default="-300,400",
                    help="cents of the female voices' extra copies, one copy per value ('' for none)")
    ap.add_argument("--max-per-voice", type=int, default=None, help="at most N files per voice (smoke runs)")
    ap.add_argument("--max-eval-per-voice", type=int, default=60,
                    help="at most N files per unseen voice, spread over its list (a balanced, affordable evaluation)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--check", action="store_true", help="only check that every listed voice is installed")
    args = ap.parse_args(argv)
    table = read_table(args.voices)
    known = {v.id: v for v in voices()}
    missing = [vid for vid, r in table.items() if r["role"] != "drop" and vid not in known]
    if missing:
        print(f"make_corpus.py: voice {missing[0]} is not installed: no {where(missing[0])}", file=sys.stderr)
        return 2
    if args.check:
        print(f"make_corpus.py: all {sum(r['role'] != 'drop' for r in table.values())} voices of {args.voices} are "
              "installed", file=sys.stderr)
        return 0
    held = {ln.strip() for ln in args.heldout.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    out = args.out.resolve()
    speeds = args.speeds
    pitches = [c for c in args.pitch_female if c != 0]
    jobs, seen = [], set()
    heldout_files = []
    for vid, row in table.items():
        if row["role"] == "drop":
            continue
        voice = known[vid]
        files = []
        for f in voice.files():
            rel = f.relative_to(Path("/") / SND).as_posix() if f.is_relative_to(Path("/") / SND) else None
            (heldout_files if rel is not None and rel in held else files).append(f)
        cap = min(filter(None, (args.max_per_voice, args.max_eval_per_voice if row["role"] == "eval" else None)),
                  default=None)
        if cap:
            files = files[:: max(1, len(files) // cap)][:cap]
        for f in files:
            digest = hashlib.sha1(f.read_bytes()).hexdigest()
            if digest in seen:  # the same recording shipped twice (e.g. ktuberling's sr variants)
                continue
            seen.add(digest)
            name = "__".join(f.with_suffix(".wav").parts[-3:])
            if row["role"] == "eval":
                jobs.append((str(f), str(out / "eval" / vid / name), vid, []))
                continue
            variants = [f"{out / 'wav' / f'{vid}+sp{s:g}'}\tspeed\t{s:g}" for s in speeds]
            if row["sex"] == "f":
                variants += [f"{out / 'wav' / f'{vid}+pitch{c}'}\tpitch\t{c}" for c in pitches]
            jobs.append((str(f), str(out / "wav" / vid / name), vid, variants))
    heldout_files = [str(f) for f in heldout_files]
    missing_held = sorted(held - {Path(p).relative_to(Path("/") / SND).as_posix() for p in heldout_files})
    if missing_held:
        print(f"make_corpus.py: {args.heldout}: {len(missing_held)} held-out prompt(s) not found, e.g. {missing_held[0]}",
              file=sys.stderr)
        return 2
    with ProcessPoolExecutor(args.jobs) as pool:
        done = list(pool.map(convert, jobs, chunksize=8))
    train, evals, stats = [], {"m": [], "f": [], "?": []}, {}
    for job, res in zip(jobs, done, strict=True):
        if res is None:
            continue
        path, secs = res
        vid = job[2]
        st = stats.setdefault(vid, {"role": table[vid]["role"], "sex": table[vid]["sex"], "files": 0, "seconds": 0.0})
        st["files"] += 1
        st["seconds"] = round(st["seconds"] + secs, 2)
        if table[vid]["role"] == "eval":
            evals[table[vid]["sex"]].append(path)
        else:
            train.append(path)
            train += [str(Path(v.split("\t")[0]) / Path(path).name) for v in job[3]]
    _write_list(out / "train.txt", sorted(train))
    _write_list(out / "eval_unseen.txt", sorted(evals["m"] + evals["f"] + evals["?"]))
    for sex, name in (("m", "male"), ("f", "female")):
        _write_list(out / f"eval_unseen_{name}.txt", sorted(evals[sex]))
    _write_list(out / "heldout_asterisk.txt", sorted(heldout_files))
    (out / "info.json").write_text(json.dumps({"voices": stats, "train_files": len(train),
                                               "speeds": speeds, "pitch_female": pitches}, indent=1))
    print(f"make_corpus.py: {len(train)} training files, {sum(map(len, evals.values()))} unseen-voice and "
          f"{len(heldout_files)} asterisk held-out files in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
