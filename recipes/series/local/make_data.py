"""Training data of the generalist series tokenizer: single-channel ``.npy`` series (rows = time, 1 column).

Two sources, written under ``OUT/train/`` with the manifest ``OUT/train.txt`` and ``OUT/info.json``:

- ``ucr/<set>/<n>.npy``: one channel of one item (``n`` counts the channels of the items in order) of the
  **TRAIN** split of every UCR/UEA classification set shipped inside aeon (offline), except those given to
  ``--exclude`` (leave-one-data-set-out). TEST splits are never written: they are the benchmark's
  (``benchmarks/bench_series.py``).
- ``synthetic/<family>/<i>.npy``: seeded series of the families in :data:`FAMILIES` (sums of sines, AR/ARMA,
  random walks, trends, seasonal patterns, steps, spikes, chirps and mixtures of them).

One folder per set and per family, so that training with ``"balance": "folders"`` draws each source equally often
(per file, JapaneseVowels' 3,240 short channels would be a third of the crops).

Files already present are kept (the stage can be rerun); every file is written to a temporary name first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

# aeon's shipped classification sets (TRAIN + TEST .ts files)
SHIPPED = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "JapaneseVowels", "OSULeaf",
           "PickupGestureWiimoteZ")


def _sines(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    k = g.integers(1, 5)
    periods = g.uniform(4, len(t), k)
    return sum(g.uniform(0.2, 1) * np.sin(2 * np.pi * t / p + g.uniform(0, 2 * np.pi)) for p in periods)


def _arma(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    p = g.integers(1, 4)
    roots = g.uniform(0.2, 0.95, p) * g.choice([-1, 1], p)  # real roots inside the unit circle: stationary
    ar = -np.poly(roots)[1:]
    ma = g.uniform(-0.8, 0.8, g.integers(0, 3))
    e = g.standard_normal(len(t) + 50)
    x = np.zeros_like(e)
    for i in range(len(e)):
        x[i] = e[i] + sum(ma[j] * e[i - j - 1] for j in range(len(ma)) if i > j) \
            + sum(ar[j] * x[i - j - 1] for j in range(p) if i > j)
    return x[50:]


def _walk(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    return np.cumsum(g.standard_normal(len(t)) * g.uniform(0.1, 1))


def _trend(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    u = t / len(t)
    shape = g.integers(3)
    base = u if shape == 0 else (u**2 if shape == 1 else np.exp(g.uniform(-3, 3) * u))
    return g.uniform(-3, 3) * base + 0.05 * g.standard_normal(len(t))


def _seasonal(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    period = int(g.integers(4, max(5, len(t) // 3)))
    pattern = np.cumsum(g.standard_normal(period))
    pattern -= np.linspace(0, pattern[-1], period)  # closes the cycle smoothly
    return np.resize(pattern, len(t)) + g.uniform(0, 0.3) * g.standard_normal(len(t))


def _steps(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    edges = np.sort(g.integers(0, len(t), g.integers(1, 8)))
    x = np.zeros(len(t))
    for e in edges:
        x[e:] += g.standard_normal()
    return x + 0.05 * g.standard_normal(len(t))


def _spikes(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    x = 0.1 * g.standard_normal(len(t))
    at = g.integers(0, len(t), g.integers(1, 6))
    x[at] += g.uniform(2, 8, len(at)) * g.choice([-1, 1], len(at))
    return x


def _chirp(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    f0, f1 = g.uniform(0.002, 0.05), g.uniform(0.02, 0.25)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * len(t)))
    return np.sin(phase) * (1 + g.uniform(0, 1) * t / len(t))


def _mixture(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    parts = g.choice(len(BASIC), size=g.integers(2, 4), replace=False)
    return sum(g.uniform(0.3, 1) * _unit(list(BASIC.values())[i](g, t)) for i in parts)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-8)


BASIC: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "sines": _sines, "arma": _arma, "walk": _walk, "trend": _trend, "seasonal": _seasonal, "steps": _steps,
    "spikes": _spikes, "chirp": _chirp}
FAMILIES = {**BASIC, "mixture": _mixture}


def synthetic(family: str, index: int, seed: int, min_len: int = 32, max_len: int = 1024) -> np.ndarray:
    """Series ``index`` of ``family``: float32 ``[T, 1]``, ``T`` log-uniform in ``[min_len, max_len]``, random scale
    and offset; the same ``(family, index, seed)`` always gives the same series."""
    g = np.random.default_rng([seed, list(FAMILIES).index(family), index])
    n = int(np.exp(g.uniform(np.log(min_len), np.log(max_len + 1))))
    x = FAMILIES[family](g, np.arange(n, dtype=np.float64))
    x = x * 10 ** g.uniform(-2, 2) + g.normal(0, 10)
    return x.astype(np.float32)[:, None]


def shipped_train(name: str) -> list[np.ndarray]:
    """Every channel of every TRAIN item of the aeon-shipped set ``name``: float32 ``[T, 1]`` arrays."""
    from aeon.datasets import load_classification

    X, _ = load_classification(name, split="train")
    return [np.asarray(x[c], dtype=np.float32)[:, None] for x in X for c in range(len(x))]


def _save(path: Path, x: np.ndarray) -> None:
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".npy", delete=False) as tmp:
        np.save(tmp, x, allow_pickle=False)
    os.replace(tmp.name, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="data folder (EXP/data)")
    p.add_argument("--sets", default=",".join(SHIPPED), help="comma-separated aeon sets (TRAIN split; default: all shipped)")
    p.add_argument("--exclude", default="", help="comma-separated sets left out (leave-one-data-set-out)")
    p.add_argument("--synthetic", type=int, default=600, help="synthetic series per family (default 600)")
    p.add_argument("--max-per-set", type=int, help="at most N single-channel series per aeon set (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    excluded = {s for s in args.exclude.split(",") if s}
    unknown = sorted((set(sets) | excluded) - set(SHIPPED))
    if unknown:
        print(f"make_data.py: error: {unknown[0]!r} is not an aeon-shipped classification set; "
              f"choose from {', '.join(SHIPPED)}", file=sys.stderr)
        return 2
    try:
        import aeon  # noqa: F401
    except ImportError:
        print("make_data.py: error: the series recipe needs the 'aeon' package in $PYTHON's environment", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    counts: dict[str, int] = {}
    for name in sets:
        if name in excluded:
            continue
        chans = shipped_train(name)[: args.max_per_set]
        for i, x in enumerate(chans):
            files.append(out / "train" / "ucr" / name / f"{i:05d}.npy")
            _save(files[-1], x)
        counts[name] = len(chans)
    for family in FAMILIES:
        for i in range(args.synthetic):
            files.append(out / "train" / "synthetic" / family / f"{i:05d}.npy")
            _save(files[-1], synthetic(family, i, args.seed))
        counts[f"synthetic/{family}"] = args.synthetic
    with tempfile.NamedTemporaryFile("w", dir=out, prefix=".train.txt.", delete=False) as tmp:
        tmp.write("".join(f"{f}\n" for f in files))
    os.replace(tmp.name, out / "train.txt")
    info = {"sets": [s for s in sets if s not in excluded], "excluded": sorted(excluded), "split": "TRAIN",
            "synthetic_per_family": args.synthetic, "seed": args.seed, "series": counts, "files": len(files)}
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"make_data.py: {len(files)} single-channel series in {out / 'train.txt'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
