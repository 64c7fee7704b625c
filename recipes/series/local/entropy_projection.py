"""What entropy-coded tokens would buy a series model at a bit budget (a measurement; no format change).

A static context model is counted from the model's own training series (the tokens of every series of
``TRAIN_LIST`` coded at time steps 1, 2 and 7/2, all levels): the first level given the previous token of the same
level, each further level given the level above it in the same frame, each smoothed towards its level's unigram
(additive, ``alpha`` chosen on a tenth of the training tokens). A static model is what a decoder could ship next to
the weights. On the TEST split of each ``SET`` every way to code a series (each time step of
``vqaudio.codec.RATE_STEPS``, each n_q) is coded; per series and channel the least-error way whose payload fits
``RATE`` bits/sample is kept twice: with the payload the ``.vqa`` spends now (8 bits a token) and with the ideal
code length under the context model plus 2 bits (an arithmetic coder's end). Prints mean NMSE both ways.

    python local/entropy_projection.py exp/full/loo/OSULeaf/model exp/full/loo/OSULeaf/data/train.txt OSULeaf 1,2,4

A zero-shot projection when the model is a leave-one-out model and ``TRAIN_LIST`` its training list.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import bench_series  # noqa: E402  (load_set: the same TEST splits as the benchmark)

from vqaudio.codec import RATE_STEPS, load_codec  # noqa: E402
from vqaudio.series_resample import coded_steps  # noqa: E402

TRAIN_STEPS = (Fraction(1), Fraction(2), Fraction(7, 2))


def count_tables(seqs: list[np.ndarray], n_q: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(unigram [n_q, K], previous-token counts [n_q, K, K], level-above counts [n_q, K, K])``."""
    uni, prev, up = np.ones((n_q, k)), np.zeros((n_q, k, k)), np.zeros((n_q, k, k))
    for s in seqs:
        for q in range(n_q):
            np.add.at(uni[q], s[q], 1)
            np.add.at(prev[q], (s[q, :-1], s[q, 1:]), 1)
            if q:
                np.add.at(up[q], (s[q - 1], s[q]), 1)
    return uni / uni.sum(1, keepdims=True), prev, up


def code_bits(s: np.ndarray, tables, alpha: float, contexts: list[str]) -> float:
    """Ideal code length (bits) of tokens ``s [n_q', F]`` under the tables, level ``q`` by ``contexts[q]``."""
    uni, prev, up = tables
    total = 0.0
    for q in range(s.shape[0]):
        u = uni[q][s[q]]
        if contexts[q] == "prev":
            c, n = prev[q][s[q, :-1], s[q, 1:]], prev[q][s[q, :-1]].sum(1)
            p = np.concatenate([u[:1], (c + alpha * u[1:]) / (n + alpha)])
        elif contexts[q] == "up":
            c, n = up[q][s[q - 1], s[q]], up[q][s[q - 1]].sum(1)
            p = (c + alpha * u) / (n + alpha)
        else:
            p = u
        total -= float(np.log2(p).sum())
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("train_list")
    ap.add_argument("sets", help="comma-separated aeon set names")
    ap.add_argument("rates", nargs="?", default="2", help="bits/sample, comma-separated (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    k, n_q = codec.codebook_size, codec.n_q
    t0 = time.time()
    seqs = []
    for f in Path(args.train_list).read_text().split():
        x = torch.as_tensor(np.load(f).T.copy())
        if bool((x.std(-1) == 0).any()):
            continue
        for d in TRAIN_STEPS:
            if coded_steps(x.shape[-1], d) >= codec.min_length:
                seqs += list(codec.encode_series(x, n_q, None, d).codes.numpy())
    print(f"{len(seqs)} token sequences of the training series in {time.time() - t0:.0f} s", flush=True)
    hold = set(np.random.default_rng(0).permutation(len(seqs))[: len(seqs) // 10].tolist())
    fit = count_tables([s for i, s in enumerate(seqs) if i not in hold], n_q, k)
    held = [s for i, s in enumerate(seqs) if i in hold]
    best = None
    for alpha in (4, 16, 64):
        for ctx in ("uni", "prev", "up"):
            contexts = ["prev"] + [ctx] * (n_q - 1)
            b = sum(code_bits(s, fit, alpha, contexts) for s in held) / sum(s.size for s in held)
            print(f"alpha {alpha}, levels 2+ by {ctx}: {b:.3f} bits/token on held-out training tokens")
            best = min(best or (b, alpha, contexts), (b, alpha, contexts))
    _, alpha, contexts = best
    tables = count_tables(seqs, n_q, k)
    rates = [float(r) for r in args.rates.split(",")]
    for name in args.sets.split(","):
        _, _, xte, _ = bench_series.load_set(name)
        length = xte.shape[-1]
        rows = []  # per series and channel: (sum of squares about the mean, [(error, raw bits, coded bits, step, n_q)])
        for row in torch.as_tensor(xte).reshape(-1, 1, length):
            ways = []
            for d in RATE_STEPS:
                steps = coded_steps(length, d)
                if steps < codec.min_length:
                    break
                for q in range(1, n_q + 1):
                    codes = codec.encode_series(row, q, None, d)
                    err = float((codec.decode(codes)[0].double() - row.double()).square().sum())
                    raw = codes.codes.numel() * codec.bits_per_code
                    ways.append((err, raw, code_bits(codes.codes.numpy()[0], tables, alpha, contexts) + 2, str(d), q))
            rows.append((float((row.double() - row.double().mean()).square().sum()), ways))
        for rate in rates:
            budget = rate * length
            nmse = {"raw": [], "coded": []}
            chosen = []
            for var, ways in rows:
                for key, col in (("raw", 1), ("coded", 2)):
                    fits = [w for w in ways if w[col] <= budget]
                    w = min(fits) if fits else None
                    nmse[key].append(w[0] / var if w else np.nan)
                    if key == "coded" and w:
                        chosen.append(w)
            common = Counter((w[3], w[4]) for w in chosen).most_common(3)
            print(f"{name} at {rate:g} bits/sample: NMSE {np.nanmean(nmse['raw']):.4f} (payload as now), "
                  f"{np.nanmean(nmse['coded']):.4f} (entropy-coded, {np.mean([w[2] for w in chosen]) / length:.2f} "
                  f"bits/sample spent); most chosen (step, n_q): {common}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
