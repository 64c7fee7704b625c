"""The series tokenizer against SAX, PAA, SFA, DCT and PCA at equal bits per sample (offline, aeon's shipped sets).

    .venv/bin/python benchmarks/bench_series.py --model EXP/vqvae/best [--sets GunPoint,...] [--bits 1,2,4]
        [--train-info EXP/data/info.json] [--json OUT.json]

Every method codes each channel of each series separately, gets the series' mean and standard deviation as free
side information (so it codes the z-normalised channel) and spends at most ``R * T`` bits on a channel of ``T``
samples at ``R`` bits/sample. Distortion: NMSE per series and channel ``sum (x - x̂)^2 / sum (x - mean x)^2`` on the
TEST split, averaged per set. Baselines are tuned on the TRAIN split at each rate (quantisers fitted on TRAIN; the
split of the budget between coefficients and bits per coefficient picked by NMSE on half of TRAIN
with the quantisers fitted on the other half, then refitted on all of TRAIN):

- ``sax``: aeon's SAX (Gaussian breakpoints, ``w`` segments x ``log2 a`` bits), decoded through PAA here: each symbol
  becomes aeon's ``breakpoints_mid`` value, held over its segment (aeon's ``inverse_sax`` is wrong up to 1.5.0).
- ``paa``: PAA with ``k`` segments and a ``b``-bit Lloyd-Max scalar quantiser learned on TRAIN.
- ``sfa``: SFA (Schäfer & Högqvist 2012) implemented here: the first ``k`` real/imaginary DFT coefficients after the
  mean, each binned equi-depth on TRAIN (multiple coefficient binning, ``b`` bits); decoded with the bin midpoints
  and an inverse FFT (aeon's SFA is a sliding-window bag of words with no decoder, so it is not used).
- ``dct``: the first ``k`` orthonormal DCT-II coefficients (scipy), each divided by its TRAIN standard deviation and
  quantised by one ``b``-bit Lloyd-Max quantiser learned on TRAIN.
- ``pca``: ``k`` principal components of the TRAIN channels, quantised as the DCT's.
- ``vq``: the model, per channel through :func:`vqaudio.series_codec.encode_series` with ``R * hop / log2(K)``
  residual levels (a rate it cannot reach is ``n/a``); its payload is ``n_q * log2(K)`` bits per frame of ``hop``
  samples (reported exactly, it exceeds ``R`` slightly when ``T`` is not a multiple of ``hop``). ``H`` is the
  empirical entropy of its tokens on TEST (bits/sample an entropy coder could reach).

Usefulness: 1-NN Euclidean accuracy (channels concatenated) on raw series against the same on reconstructions, TRAIN
and TEST both coded, for the model and for the best baseline of the set at each rate. Verdicts at 2 bits/sample:
the model's NMSE at most half the best baseline's on average over sets, better than every baseline on >= 80% of the
sets, 1-NN accuracy within 1 point of raw. Sets of unequal length (JapaneseVowels, PickupGestureWiimoteZ) are left
out (PCA and aeon's SAX need one length). ``--train-info`` (the recipe's ``data/info.json``) marks the sets whose TRAIN
split the model saw: only the others are zero-shot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared machines)
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqaudio.checkpoint import load_model  # noqa: E402
from vqaudio.series_codec import decode_series, encode_series, payload_bits  # noqa: E402

EQUAL_LENGTH = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "OSULeaf")
BASELINES = ("sax", "paa", "sfa", "dct", "pca")
EPS = 1e-8


def load_set(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train [N, C, T], y_train, X_test [M, C, T], y_test)`` float64 of an aeon-shipped set."""
    from aeon.datasets import load_classification

    Xtr, ytr = load_classification(name, split="train")
    Xte, yte = load_classification(name, split="test")
    return np.asarray(Xtr, np.float64), ytr, np.asarray(Xte, np.float64), yte


def znorm(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, std)`` of ``rows [N, T]`` per row (the free side information)."""
    mean, std = rows.mean(1, keepdims=True), rows.std(1, keepdims=True)
    return (rows - mean) / np.maximum(std, EPS), mean, std


def nmse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """NMSE per row of ``x, y [N, T]``; rows with no variance are NaN (left out of the means)."""
    den = ((x - x.mean(1, keepdims=True)) ** 2).sum(1)
    return np.where(den > EPS, ((x - y) ** 2).sum(1) / np.maximum(den, EPS), np.nan)


# -- scalar quantisers learned on TRAIN ----------------------------------------------------------------------------
def lloyd(c: np.ndarray, bits: int, iters: int = 20) -> np.ndarray:
    """Lloyd-Max levels ``[k, 2**bits]`` (sorted) of each column of ``c [N, k]`` (quantile start)."""
    n_levels = 2**bits
    levels = np.quantile(c, (np.arange(n_levels) + 0.5) / n_levels, axis=0).T.copy()  # [k, L]
    for _ in range(iters):
        idx = quantize(c, levels)
        for j in range(n_levels):
            hit = idx == j
            cnt = hit.sum(0)
            levels[:, j] = np.where(cnt > 0, (c * hit).sum(0) / np.maximum(cnt, 1), levels[:, j])
        levels.sort(1)
    return levels


def quantize(c: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level per entry of ``c [N, k]`` (``levels [k, L]`` sorted)."""
    mid = (levels[:, 1:] + levels[:, :-1]) / 2
    return np.stack([np.searchsorted(mid[j], c[:, j]) for j in range(c.shape[1])], 1)


def dequantize(idx: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return np.take_along_axis(levels.T, idx, 0) if idx.size else np.zeros_like(idx, float)


def equi_depth(c: np.ndarray, bits: int) -> np.ndarray:
    """SFA's multiple coefficient binning: equi-depth bins of each column of ``c [N, k]``, represented by the midpoints
    of the bins (outer bins closed at the TRAIN minimum and maximum): levels ``[k, 2**bits]``."""
    n = 2**bits
    edges = np.quantile(c, np.linspace(0, 1, n + 1), axis=0).T  # [k, n+1]
    return (edges[:, 1:] + edges[:, :-1]) / 2


# -- transforms: analysis [N, T] -> [N, k], synthesis [N, k] -> [N, T] ----------------------------------------------
def segments(t: int, k: int) -> list[np.ndarray]:
    return np.array_split(np.arange(t), k)  # as aeon's PAA


def paa(z: np.ndarray, k: int) -> np.ndarray:
    return np.stack([z[:, s].mean(1) for s in segments(z.shape[1], k)], 1)


def inverse_paa(c: np.ndarray, t: int) -> np.ndarray:
    out = np.empty((c.shape[0], t))
    for j, s in enumerate(segments(t, c.shape[1])):
        out[:, s] = c[:, j : j + 1]
    return out


def dft(z: np.ndarray, k: int) -> np.ndarray:
    f = scipy.fft.rfft(z, norm="ortho")[:, 1:]  # the mean is side information
    return np.stack([f.real, f.imag], 2).reshape(len(z), -1)[:, :k]


def inverse_dft(c: np.ndarray, t: int) -> np.ndarray:
    f = np.zeros((c.shape[0], t // 2 + 1), complex)
    pairs = np.zeros((c.shape[0], 2 * (t // 2)))
    pairs[:, : c.shape[1]] = c
    f[:, 1:] = pairs[:, 0::2] + 1j * pairs[:, 1::2]
    return scipy.fft.irfft(f, n=t, norm="ortho")


def dct_coefs(z: np.ndarray, k: int) -> np.ndarray:
    return scipy.fft.dct(z, norm="ortho")[:, :k]


def inverse_dct(c: np.ndarray, t: int) -> np.ndarray:
    full = np.zeros((c.shape[0], t))
    full[:, : c.shape[1]] = c
    return scipy.fft.idct(full, norm="ortho")


class TransformCoder:
    """``k`` coefficients of a linear transform with ``b`` bits each (``k * b <= budget``), quantisers fitted on TRAIN.

    ``shared``: ``"pooled"`` one quantiser for all coefficients (PAA), ``"scaled"`` one quantiser of the coefficients
    divided by their TRAIN standard deviation (DCT, PCA: per-coefficient quantisers learned from a few dozen rows
    clip the TEST values they never saw), ``""`` one per coefficient (SFA's binning).
    """

    def __init__(self, name: str, t: int, k_max: int, fit_levels: Callable[[np.ndarray, int], np.ndarray],
                 shared: str = "") -> None:
        self.name, self.t, self.k_max, self.fit_levels, self.shared = name, t, k_max, fit_levels, shared
        self.basis: np.ndarray | None = None

    def fit_basis(self, z: np.ndarray) -> None:
        if self.name == "pca":
            self.basis = np.linalg.svd(z, full_matrices=False)[2]  # [r, T] (rows z-normalised: no centring)

    def analysis(self, z: np.ndarray, k: int) -> np.ndarray:
        if self.name == "pca":
            return z @ self.basis[:k].T
        return {"paa": paa, "sfa": dft, "dct": dct_coefs}[self.name](z, k)

    def synthesis(self, c: np.ndarray) -> np.ndarray:
        if self.name == "pca":
            return c @ self.basis[: c.shape[1]]
        return {"paa": inverse_paa, "sfa": inverse_dft, "dct": inverse_dct}[self.name](c, self.t)

    def fit(self, z: np.ndarray, k: int, b: int) -> np.ndarray:
        """Fit the basis and the ``b``-bit quantisers of ``k`` coefficients on ``z``; the levels ``[k, 2**b]``."""
        self.fit_basis(z)
        c = self.analysis(z, k)
        if self.shared == "pooled":
            return np.repeat(self.fit_levels(c.reshape(-1, 1), b), k, 0)
        if self.shared == "scaled":  # one quantiser of the coefficients divided by their TRAIN std, rescaled per column
            scale = np.maximum(c.std(0), EPS)[:, None]
            return self.fit_levels((c / scale.T).reshape(-1, 1), b)[0][None] * scale
        return self.fit_levels(c, b)

    def apply(self, z: np.ndarray, k: int, levels: np.ndarray) -> np.ndarray:
        return self.synthesis(dequantize(quantize(self.analysis(z, k), levels), levels))

    def code(self, ztr: np.ndarray, zte: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(ẑ_train, ẑ_test, choice)``: the ``(k, b)`` with ``k * b <= budget`` that does best on the odd TRAIN
        rows when fitted on the even ones (fitting and scoring on the same rows would favour over-fitted quantisers),
        then refitted on all of TRAIN."""
        fit_rows, val_rows = (ztr[0::2], ztr[1::2]) if len(ztr) >= 4 else (ztr, ztr)
        best = None
        for b in range(1, 9):
            k = min(budget // b, self.k_max, len(fit_rows) if self.name == "pca" else self.k_max)
            if k < 1:
                break
            err = np.nanmean(nmse(val_rows, self.apply(val_rows, k, self.fit(fit_rows, k, b))))
            if best is None or err < best[0]:
                best = (err, k, b)
        _, k, b = best
        levels = self.fit(ztr, k, b)
        return self.apply(ztr, k, levels), self.apply(zte, k, levels), {"k": k, "b": b, "bits": k * b}


def sax_code(ztr: np.ndarray, zte: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """aeon's SAX words, decoded through PAA with ``breakpoints_mid``; ``(w, a)`` tuned on TRAIN."""
    from aeon.transformations.collection.dictionary_based import SAX

    t, best = ztr.shape[1], None
    for b in range(1, 9):
        w = min(budget // b, t)
        if w < 1:
            break
        sax = SAX(n_segments=w, alphabet_size=2**b)
        out = []
        for z in (ztr, zte):
            words = np.asarray(sax.fit_transform(z[:, None, :]))[:, 0].astype(int)  # [N, w]
            out.append(inverse_paa(sax.breakpoints_mid[words], t))
        err = np.nanmean(nmse(ztr, out[0]))  # SAX fits nothing on TRAIN: no over-fitting to guard against
        if best is None or err < best[0]:
            best = (err, out, {"k": w, "b": b, "bits": w * b})
    return best[1][0], best[1][1], best[2]


def baseline(method: str, ztr: np.ndarray, zte: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray, dict]:
    t = ztr.shape[1]
    if method == "sax":
        return sax_code(ztr, zte, budget)
    coder = {"paa": TransformCoder("paa", t, t, lloyd, shared="pooled"),
             "sfa": TransformCoder("sfa", t, 2 * (t // 2), equi_depth),
             "dct": TransformCoder("dct", t, t, lloyd, shared="scaled"),
             "pca": TransformCoder("pca", t, min(len(ztr), t), lloyd, shared="scaled")}[method]
    return coder.code(ztr, zte, budget)


# -- the model -----------------------------------------------------------------------------------------------------
def vq_code(model: torch.nn.Module, rows: np.ndarray, n_q: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, int]:
    """``(x̂ [N, T], codes [N, n_q, F], payload bits)`` of ``rows [N, T]``, each row a channel coded alone."""
    recon, codes, bits = [], [], 0
    for i in range(0, len(rows), chunk):
        x = torch.as_tensor(rows[i : i + chunk].T, dtype=torch.float32)  # [T, n]: n channels
        c = encode_series(model, x, n_q=n_q)
        recon.append(decode_series(model, c).T.double().numpy())
        codes.append(c.codes.numpy())
        bits += payload_bits(model, c)
    return np.concatenate(recon), np.concatenate(codes), bits


def entropy_bits(codes: np.ndarray, k: int) -> float:
    """Sum over levels of the empirical entropy (bits/token) of ``codes [N, n_q, F]``."""
    total = 0.0
    for q in range(codes.shape[1]):
        p = np.bincount(codes[:, q].ravel(), minlength=k) / codes[:, q].size
        total += float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return total


def one_nn(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    """1-NN Euclidean accuracy (%) of ``xte [M, D]`` against ``xtr [N, D]``."""
    d = (xte**2).sum(1)[:, None] - 2 * xte @ xtr.T + (xtr**2).sum(1)[None]
    return 100.0 * float((ytr[d.argmin(1)] == yte).mean())


def run_set(name: str, model, rates: list[int]) -> dict:
    Xtr, ytr, Xte, yte = load_set(name)
    n, c, t = Xtr.shape
    rtr, rte = Xtr.reshape(-1, t), Xte.reshape(-1, t)  # one row per series and channel
    ztr, mtr, str_ = znorm(rtr)
    zte, mte, ste = znorm(rte)
    res = {"set": name, "train": n, "test": len(Xte), "channels": c, "length": t, "rates": {},
           "1nn_raw": one_nn(Xtr.reshape(n, -1), ytr, Xte.reshape(len(Xte), -1), yte)}
    hop, k = model.hop, model.config.codebook_size
    for r in rates:
        row, recons = {}, {}
        for m in BASELINES:
            t0 = time.process_time()
            qtr, qte, choice = baseline(m, ztr, zte, r * t)
            xtr_hat, xte_hat = qtr * str_ + mtr, qte * ste + mte
            row[m] = {"nmse": float(np.nanmean(nmse(rte, xte_hat))), "bits_per_sample": choice["bits"] / t,
                      **choice, "cpu_s": time.process_time() - t0}
            recons[m] = (xtr_hat, xte_hat)
        n_q = r * hop / math.log2(k)
        if n_q == int(n_q) and 1 <= n_q <= model.config.n_q:
            t0 = time.process_time()
            xtr_hat, _, _ = vq_code(model, rtr, int(n_q))
            xte_hat, codes, bits = vq_code(model, rte, int(n_q))
            row["vq"] = {"nmse": float(np.nanmean(nmse(rte, xte_hat))), "bits_per_sample": bits / rte.size,
                         "entropy_bits_per_sample": entropy_bits(codes, k) / hop, "n_q": int(n_q),
                         "cpu_s": time.process_time() - t0}
            recons["vq"] = (xtr_hat, xte_hat)
        best = min(BASELINES, key=lambda m: row[m]["nmse"])
        row["best_baseline"] = best
        for m in {best, "vq"} & set(recons):
            a, b = recons[m]
            row[m]["1nn"] = one_nn(a.reshape(n, -1), ytr, b.reshape(len(Xte), -1), yte)
        res["rates"][r] = row
    return res


def verdicts(results: list[dict], rate: int) -> list[str]:
    rows = [(r["set"], r["rates"][rate], r["1nn_raw"]) for r in results if rate in r["rates"] and "vq" in r["rates"][rate]]
    if not rows:
        return [f"verdict: no set coded at {rate} bits/sample"]
    ratio = [row["vq"]["nmse"] / row[row["best_baseline"]]["nmse"] for _, row, _ in rows]
    wins = [all(row["vq"]["nmse"] < row[m]["nmse"] for m in BASELINES) for _, row, _ in rows]
    drop = [raw - row["vq"]["1nn"] for _, row, raw in rows]
    mean_ratio, share, worst = float(np.mean(ratio)), float(np.mean(wins)), max(drop)
    return [
        f"verdict: NMSE vq / best baseline at {rate} bits/sample, mean over {len(rows)} sets {mean_ratio:.2f}x "
        f"(target <= 0.5x): {'PASS' if mean_ratio <= 0.5 else 'FAIL'}",
        f"verdict: vq better than every baseline on {100 * share:.0f}% of the sets (target >= 80%): "
        f"{'PASS' if share >= 0.8 else 'FAIL'}",
        f"verdict: 1-NN accuracy on vq reconstructions vs raw, worst drop {worst:.1f} points, mean "
        f"{float(np.mean(drop)):.1f} (target <= 1): {'PASS' if worst <= 1.0 else 'FAIL'}",
    ]


def table(results: list[dict], rate: int, seen: set[str] | None) -> str:
    head = ["set", "seen", *BASELINES, "vq", "vq bits", "vq H", "best", "1nn raw", "1nn best", "1nn vq"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = r["rates"].get(rate)
        if row is None:
            continue
        vq = row.get("vq")
        best = row["best_baseline"]
        seen_s = "?" if seen is None else ("TRAIN" if r["set"] in seen else "no")
        cells = [r["set"], seen_s, *(f"{row[m]['nmse']:.4f}" for m in BASELINES),
                 f"{vq['nmse']:.4f}" if vq else "n/a", f"{vq['bits_per_sample']:.2f}" if vq else "",
                 f"{vq['entropy_bits_per_sample']:.2f}" if vq else "", best, f"{r['1nn_raw']:.1f}",
                 f"{row[best]['1nn']:.1f}", f"{vq['1nn']:.1f}" if vq else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder (EXP/vqvae/best, an exported model folder)")
    p.add_argument("--sets", default=",".join(EQUAL_LENGTH), help="comma-separated aeon sets (equal length)")
    p.add_argument("--bits", default="1,2,4", help="bits per sample (default 1,2,4)")
    p.add_argument("--train-info", type=Path, help="the recipe's data/info.json: marks the sets the model saw")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_model(args.model).eval()
    if model.config.kind != "series" or model.config.channels != 1:
        print(f"bench_series.py: error: {args.model}: needs a series model with channels=1", file=sys.stderr)
        return 2
    seen = set(json.loads(args.train_info.read_text())["sets"]) if args.train_info else None
    rates = [int(b) for b in args.bits.split(",")]
    results, t0 = [], time.process_time()
    for name in args.sets.split(","):
        results.append(run_set(name, model, rates))
        print(f"# {name}: done ({time.process_time() - t0:.0f} CPU s so far)", file=sys.stderr, flush=True)
    print(f"model {args.model}: hop {model.hop}, K {model.config.codebook_size}, n_q <= {model.config.n_q}; NMSE on TEST "
          f"(lower is better); bits = real payload bits/sample; H = token entropy bits/sample; 1-NN accuracy in %")
    for r in rates:
        print(f"\n## {r} bits/sample\n\n{table(results, r, seen)}\n")
        print("\n".join(verdicts(results, r)))
    print(f"\nCPU time {time.process_time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
