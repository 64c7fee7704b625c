"""Are a class-conditioned prior's samples of their class? 1-NN on the set's TRAIN split says.

Reads ``SAMPLES/<label>/*.npy`` (what ``vqaudio sample --label`` writes, one folder per class, named by the class
label as in the set), z-normalises every series (a sample has no scale of its own) and classifies it with aeon's
1-NN Euclidean classifier fitted on the z-normalised TRAIN split of ``SET``. The same classifier on the TEST split
is the reference: what 1-NN makes of real series of the set.

    python local/check_samples.py GunPoint exp/full/prior/samples

Prints one line per class and a summary line; exit 2 on a missing folder or a sample shorter than the set.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np


def znorm(x: np.ndarray) -> np.ndarray:
    """``[N, T]`` -> each row to mean 0, std 1 (a constant row to zeros)."""
    std = x.std(axis=1, keepdims=True)
    return (x - x.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def load_samples(folder: Path, length: int) -> np.ndarray:
    """``[N, length]``: the first channel of each ``.npy`` in ``folder``, cut to ``length`` steps."""
    rows = []
    for f in sorted(folder.glob("*.npy")):
        x = np.load(f, allow_pickle=False)
        x = x.reshape(x.shape[0], -1)[:, 0] if x.ndim > 1 else x
        if x.shape[0] < length:
            raise ValueError(f"{f}: {x.shape[0]} steps, shorter than the set's {length}")
        rows.append(x[:length])
    if not rows:
        raise ValueError(f"{folder}: no .npy samples")
    return np.stack(rows).astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("set", help="an aeon classification set shipped with aeon, e.g. GunPoint")
    p.add_argument("samples", type=Path, help="folder of one sub-folder of .npy samples per class label")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="unsafe cast")  # numba, inside aeon's euclidean distance

    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    from aeon.datasets import load_classification

    x_train, y_train = load_classification(args.set, split="train")
    x_test, y_test = load_classification(args.set, split="test")
    length = x_train.shape[-1]
    knn = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="euclidean")
    knn.fit(znorm(x_train[:, 0]), y_train)
    real = float(np.mean(knn.predict(znorm(x_test[:, 0])) == y_test))
    right = total = 0
    try:
        for label in sorted(set(y_train)):
            s = znorm(load_samples(args.samples / str(label), length))
            hits = int(np.sum(knn.predict(s) == label))
            right, total = right + hits, total + len(s)
            print(f"class {label}: {hits} of {len(s)} samples are 1-NN class {label} ({hits / len(s):.0%})")
    except (OSError, ValueError) as e:
        print(f"check_samples.py: {e}", file=sys.stderr)
        return 2
    print(f"{args.set}: {right / total:.0%} of {total} class-conditioned samples are 1-NN (TRAIN) of their class; "
          f"real TEST series {real:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
