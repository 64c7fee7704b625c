"""The series tokenizer against SAX, PAA, SFA, DCT and PCA at equal bits per sample (offline, aeon's shipped sets).

    .venv/bin/python benchmarks/bench_series.py [--model series] [--loo-models DIR] [--sets GunPoint,...]
        [--bits 1,2,4] [--train-info EXP/data/info.json] [--json OUT.json] [--no-minirocket]

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
- ``vq``: the model through the codec API, as ``vqaudio encode --bits-per-sample R`` codes a file: each series by
  :meth:`~vqaudio.codec.Codec.encode_at_rate` (every channel coded alone with its own RevIN statistics), which tries
  each time step ``d`` = p/q from 1 to 16 (q <= 4) with the most residual levels whose real payload (``n_q * log2 K``
  bits per frame of ``hop`` coded steps) fits in ``R * T`` bits, and keeps the closest; then
  :meth:`~vqaudio.codec.Codec.decode`. A rate it cannot reach is ``n/a``. ``H`` is the empirical entropy of its
  tokens on TEST (bits/sample an entropy coder could reach); ``step`` the most chosen ``d``. The bag of tokens uses
  the codes at full time resolution with ``R * hop / log2(K)`` levels.

Models: ``--model`` (default ``series``, the shipped or installed generalist; any model name or folder) is ``vq``.
Zero-shot is leave-one-data-set-out: with ``--loo-models DIR``, the model ``DIR/<SET>`` (a checkpoint or experiment
folder, trained by ``EXCLUDE=<SET> recipes/series/run.sh``: no data of that set at all) is ``loo`` on that set.

Usefulness: 1-NN Euclidean accuracy (channels concatenated) and MiniRocket accuracy (aeon's MiniRocket features,
scikit-learn's RidgeClassifierCV) on raw series against the same on reconstructions, TRAIN and TEST both coded, for
the models and the best baseline of the set at each rate. Symbolic words: a bag-of-tokens 1-NN (each series a
histogram of its tokens per channel and level, Euclidean) against 1-NN on SAX words (aeon's, with aeon's SAX MINDIST)
and on SFA words (the ``sfa`` coder's equi-depth bins, with aeon's SFA MINDIST) at the same bits, all on the
discrete symbols alone.

Verdicts at each rate, for ``vq`` and for ``loo`` (the zero-shot targets are ``loo``'s at 2 bits/sample): NMSE at most
half the best baseline's on average over sets, better than every baseline on >= 80% of the sets, 1-NN accuracy on
reconstructions within 1 point of raw. Sets of unequal length (JapaneseVowels, PickupGestureWiimoteZ) are left out
(PCA and aeon's SAX need one length). ``--train-info`` (the recipe's ``data/info.json``) marks the sets whose TRAIN
split the ``vq`` model saw.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared machines)
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqaudio.codec import Codec, load_codec  # noqa: E402

EQUAL_LENGTH = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "OSULeaf")
BASELINES = ("sax", "paa", "sfa", "dct", "pca")
MODELS = ("vq", "loo")  # the given model; the leave-one-out model of the set
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


def sax_words(z: np.ndarray, w: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(words [N, w], breakpoints)`` of aeon's SAX on rows ``z [N, T]``."""
    from aeon.transformations.collection.dictionary_based import SAX

    sax = SAX(n_segments=w, alphabet_size=2**bits)
    return np.asarray(sax.fit_transform(z[:, None, :]))[:, 0].astype(np.int64), np.asarray(sax.breakpoints, np.float64)


def sfa_words(ztr: np.ndarray, zte: np.ndarray, k: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(words_train, words_test, breakpoints [k, 2**bits])``: the ``sfa`` coder's equi-depth bins of the first ``k``
    DFT values as symbols (upper bin edges as aeon's MINDIST wants them, the last one infinite)."""
    ctr, cte = dft(ztr, k), dft(zte, k)
    edges = np.quantile(ctr, np.linspace(0, 1, 2**bits + 1), axis=0).T[:, 1:].copy()  # [k, 2**bits] upper edges
    edges[:, -1] = np.inf
    words = [np.stack([np.searchsorted(edges[j, :-1], c[:, j], side="right") for j in range(k)], 1) for c in (ctr, cte)]
    return words[0].astype(np.int64), words[1].astype(np.int64), edges


def nn_from_distances(d: np.ndarray, ytr: np.ndarray, yte: np.ndarray) -> float:
    """1-NN accuracy (%) from distances ``d [M, N]`` of TEST to TRAIN items."""
    return 100.0 * float((ytr[d.argmin(1)] == yte).mean())


def word_accuracy(kind: str, ztr: np.ndarray, zte: np.ndarray, n: int, m: int, choice: dict, ytr, yte) -> float:
    """1-NN accuracy (%) on SAX or SFA words with aeon's MINDIST (squared distances summed over channels; aeon 1.6's
    pairwise MINDIST functions fail on numpy input, so the pairwise loop is here)."""
    from aeon.distances import mindist_sax_distance, mindist_sfa_distance

    k, b, t = choice["k"], choice["b"], ztr.shape[1]
    if kind == "sax":
        (wtr, bp), (wte, _) = sax_words(ztr, k, b), sax_words(zte, k, b)
        dist = lambda u, v: mindist_sax_distance(u, v, bp, t)  # noqa: E731
    else:
        wtr, wte, bp = sfa_words(ztr, zte, k, b)
        dist = lambda u, v: mindist_sfa_distance(u, v, bp)  # noqa: E731
    c = len(ztr) // n  # rows are (series, channel)
    wtr, wte = wtr.reshape(n, c, -1), wte.reshape(m, c, -1)
    d = np.array([[sum(dist(wte[i, ch], wtr[j, ch]) ** 2 for ch in range(c)) for j in range(n)] for i in range(m)])
    return nn_from_distances(d, ytr, yte)


def bag_of_tokens(codes: np.ndarray, n: int, k: int) -> np.ndarray:
    """``[n, C * n_q * K]``: each series' token histogram per channel and level (relative counts) from ``codes
    [n * C, n_q, F]``."""
    rows, n_q, f = codes.shape
    onehot = np.zeros((rows, n_q, k))
    for q in range(n_q):
        np.add.at(onehot[:, q], (np.repeat(np.arange(rows), f), codes[:, q].ravel()), 1.0 / f)
    return onehot.reshape(n, -1)


def euclid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[M, N]`` of rows of ``a [M, D]`` to rows of ``b [N, D]``."""
    return (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None]


def minirocket(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    """MiniRocket accuracy (%): aeon's MiniRocket features (seeded) and RidgeClassifierCV; NaN for series shorter than
    its 9-tap kernels."""
    if xtr.shape[-1] < 9:
        return float("nan")
    from aeon.transformations.collection.convolution_based import MiniRocket
    from sklearn.linear_model import RidgeClassifierCV

    mr = MiniRocket(random_state=0)
    ftr = mr.fit_transform(xtr.astype(np.float32))
    clf = RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)).fit(ftr, ytr)
    return 100.0 * float(clf.score(mr.transform(xte.astype(np.float32)), yte))


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
def fail(message: str) -> NoReturn:
    """A one-line error on stderr, exit status 2 (as the CLI's)."""
    print(f"bench_series.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def loo_model_dir(path: Path) -> Path | None:
    """The leave-one-out model in ``path``: its recipe export ``path/model``, or ``path`` itself when it is a checkpoint
    or experiment folder; ``None`` when there is none (yet)."""
    from vqaudio.registry import EXPERIMENT_CHECKPOINTS, is_checkpoint_dir

    for p in (path / "model", path):
        if is_checkpoint_dir(p) or any(is_checkpoint_dir(p / sub) for sub in EXPERIMENT_CHECKPOINTS):
            return p
    return None


def load_series_codec(spec: str) -> Codec:
    """The codec of a ``channels=1`` series model (each channel coded alone) by name (``series``), checkpoint or
    experiment folder; :func:`fail` otherwise."""
    try:
        codec = load_codec(spec)
    except Exception as err:
        msg = str(err).splitlines()[0]
        fail(msg if msg.startswith(spec) else f"{spec}: {msg}")
    if not codec.per_channel:
        fail(f"{spec}: needs a series model with channels=1")
    return codec


def vq_code(codec: Codec, series: np.ndarray, n_q: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(x̂ [N * C, T], codes [N * C, n_q, F], payload bits)`` of ``series [N, C, T]`` (rows: series, then channel)
    through the codec API, each channel coded alone."""
    codes = codec.encode(list(torch.as_tensor(series, dtype=torch.float32)), n_q=n_q)
    recon = torch.cat([y for y, _ in codec.decode(codes)]).double().numpy()
    tokens = torch.cat([c.codes for c in codes]).numpy()
    return recon, tokens, tokens.size * codec.bits_per_code


def vq_code_at_rate(codec: Codec, series: np.ndarray, rate: float) -> tuple[np.ndarray, list, int]:
    """``(x̂ [N * C, T], codes, payload bits)`` of ``series [N, C, T]`` coded one series at a time within ``rate``
    bits/sample by :meth:`~vqaudio.codec.Codec.encode_at_rate` (the encoder's choice of time step and levels)."""
    recon, codes = [], []
    for x in torch.as_tensor(series, dtype=torch.float32):
        c = codec.encode_at_rate(x, rate)
        recon.append(codec.decode(c)[0].double().numpy())
        codes.append(c)
    bits = sum(c.codes.numel() for c in codes) * codec.bits_per_code
    return np.concatenate(recon), codes, bits


def entropy_of(codes: list, k: int) -> float:
    """Empirical token entropy (bits) of a list of :class:`~vqaudio.codec.Codes`: per level, over the files coded
    with the same time step and levels, times the tokens there."""
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for c in codes:
        groups.setdefault((c.decimate, c.n_q), []).append(c.codes.reshape(-1, c.n_q, c.frames).numpy())
    total = 0.0
    for rows in groups.values():
        flat = [r.transpose(1, 0, 2).reshape(r.shape[1], -1) for r in rows]  # [n_q, tokens] each
        for q in range(flat[0].shape[0]):
            level = np.concatenate([f[q] for f in flat])
            p = np.bincount(level, minlength=k) / level.size
            total += float(-(p[p > 0] * np.log2(p[p > 0])).sum()) * level.size
    return total


def one_nn(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    """1-NN Euclidean accuracy (%) of ``xte [M, D]`` against ``xtr [N, D]``."""
    return nn_from_distances(euclid(xte, xtr), ytr, yte)


def run_set(name: str, models: dict[str, Codec], rates: list[int], use_minirocket: bool = True) -> dict:
    """Every number of one set: baselines and ``models`` (``vq``, and ``loo`` when given) at each rate."""
    Xtr, ytr, Xte, yte = load_set(name)
    n, c, t = Xtr.shape
    m_te = len(Xte)
    rtr, rte = Xtr.reshape(-1, t), Xte.reshape(-1, t)  # one row per series and channel
    ztr, mtr, str_ = znorm(rtr)
    zte, mte, ste = znorm(rte)
    res = {"set": name, "train": n, "test": m_te, "channels": c, "length": t, "rates": {}, "models": sorted(models),
           "1nn_raw": one_nn(Xtr.reshape(n, -1), ytr, Xte.reshape(m_te, -1), yte)}
    if use_minirocket:
        res["minirocket_raw"] = minirocket(Xtr, ytr, Xte, yte)
    for r in rates:
        row, recons = {}, {}
        for m in BASELINES:
            t0 = time.process_time()
            qtr, qte, choice = baseline(m, ztr, zte, r * t)
            xtr_hat, xte_hat = qtr * str_ + mtr, qte * ste + mte
            row[m] = {"nmse": float(np.nanmean(nmse(rte, xte_hat))), "bits_per_sample": choice["bits"] / t,
                      **choice, "cpu_s": time.process_time() - t0}
            recons[m] = (xtr_hat, xte_hat)
        words = {}
        for key, model in models.items():
            hop, k = model.hop, model.codebook_size
            if model.rate_options(t, r):
                t0 = time.process_time()
                xtr_hat, _, _ = vq_code_at_rate(model, Xtr, r)
                xte_hat, codes, bits = vq_code_at_rate(model, Xte, r)
                steps = Counter(str(c.decimate) for c in codes)  # "5/4": every 1.25th step
                common, count = steps.most_common(1)[0]
                row[key] = {"nmse": float(np.nanmean(nmse(rte, xte_hat))), "bits_per_sample": bits / rte.size,
                            "entropy_bits_per_sample": entropy_of(codes, k) / rte.size,
                            "decimate": common, "decimate_share": count / len(codes),
                            "n_q": int(np.bincount([c.n_q for c in codes]).argmax()), "cpu_s": time.process_time() - t0}
                recons[key] = (xtr_hat, xte_hat)
            n_q = r * hop / math.log2(k)
            if n_q == int(n_q) and 1 <= n_q <= model.n_q:  # the symbols at full time resolution, for the bag
                _, codes_tr, _ = vq_code(model, Xtr, int(n_q))
                _, codes, _ = vq_code(model, Xte, int(n_q))
                words[key] = nn_from_distances(euclid(bag_of_tokens(codes, m_te, k), bag_of_tokens(codes_tr, n, k)),
                                               ytr, yte)
        best = min(BASELINES, key=lambda m: row[m]["nmse"])
        row["best_baseline"] = best
        for m in {best, *models} & set(recons):
            a, b = recons[m]
            row[m]["1nn"] = one_nn(a.reshape(n, -1), ytr, b.reshape(m_te, -1), yte)
            if use_minirocket:
                row[m]["minirocket"] = minirocket(a.reshape(n, c, t), ytr, b.reshape(m_te, c, t), yte)
        for kind in ("sax", "sfa"):
            words[kind] = word_accuracy(kind, ztr, zte, n, m_te, row[kind], ytr, yte)
        row["words_1nn"] = words
        res["rates"][r] = row
    return res


def verdicts(results: list[dict], rate: int, key: str = "vq") -> list[str]:
    """The target lines for model ``key`` (``vq`` or ``loo``) at ``rate`` bits/sample."""
    rows = [(r["set"], r["rates"][rate], r["1nn_raw"]) for r in results if rate in r["rates"] and key in r["rates"][rate]]
    what = {"vq": "vq", "loo": "zero-shot (leave-one-out) vq"}[key]
    if not rows:
        return [f"verdict: {what}: no set coded at {rate} bits/sample"]
    ratio = [row[key]["nmse"] / row[row["best_baseline"]]["nmse"] for _, row, _ in rows]
    wins = [all(row[key]["nmse"] < row[m]["nmse"] for m in BASELINES) for _, row, _ in rows]
    drop = [raw - row[key]["1nn"] for _, row, raw in rows]
    mean_ratio, share, worst = float(np.mean(ratio)), float(np.mean(wins)), max(drop)
    return [
        f"verdict: {what}: NMSE / best baseline at {rate} bits/sample, mean over {len(rows)} sets {mean_ratio:.2f}x "
        f"(target <= 0.5x): {'PASS' if mean_ratio <= 0.5 else 'FAIL'}",
        f"verdict: {what}: better than every baseline on {100 * share:.0f}% of the sets (target >= 80%): "
        f"{'PASS' if share >= 0.8 else 'FAIL'}",
        f"verdict: {what}: 1-NN accuracy on reconstructions vs raw, worst drop {worst:.1f} points, mean "
        f"{float(np.mean(drop)):.1f} (target <= 1): {'PASS' if worst <= 1.0 else 'FAIL'}",
    ]


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _step(cell: dict | None) -> str:
    """The time step most series were coded at, with its share: ``4 (87%)``."""
    return "n/a" if not cell else f"{cell['decimate']} ({100 * cell['decimate_share']:.0f}%)"


def table(results: list[dict], rate: int, seen: set[str] | None) -> str:
    """Rate-distortion: NMSE of every method on TEST, the models' real bits and token entropy."""
    keys = [k for k in MODELS if any(k in r["rates"].get(rate, {}) for r in results)] or ["vq"]
    head = ["set", "seen", *BASELINES, *keys, "best", *(f"{k} bits" for k in keys), *(f"{k} H" for k in keys),
            *(f"{k} step" for k in keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = r["rates"].get(rate)
        if row is None:
            continue
        seen_s = "?" if seen is None else ("TRAIN" if r["set"] in seen else "no")
        cells = [r["set"], seen_s, *(f"{row[m]['nmse']:.4f}" for m in BASELINES),
                 *(_f(row.get(k, {}).get("nmse"), ".4f") for k in keys), row["best_baseline"],
                 *(_f(row.get(k, {}).get("bits_per_sample"), ".2f") for k in keys),
                 *(_f(row.get(k, {}).get("entropy_bits_per_sample"), ".2f") for k in keys),
                 *(_step(row.get(k)) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def usefulness_table(results: list[dict], rate: int) -> str:
    """Accuracy (%) on raw series and on reconstructions (1-NN, MiniRocket), and 1-NN on the symbols alone."""
    keys = [k for k in MODELS if any(k in r["rates"].get(rate, {}) for r in results)] or ["vq"]
    head = ["set", "1nn raw", "1nn best", *(f"1nn {k}" for k in keys), "mr raw", "mr best", *(f"mr {k}" for k in keys),
            *(f"bag {k}" for k in keys), "sax words", "sfa words"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = r["rates"].get(rate)
        if row is None:
            continue
        best = row[row["best_baseline"]]
        cells = [r["set"], _f(r["1nn_raw"], ".1f"), _f(best.get("1nn"), ".1f"),
                 *(_f(row.get(k, {}).get("1nn"), ".1f") for k in keys), _f(r.get("minirocket_raw"), ".1f"),
                 _f(best.get("minirocket"), ".1f"), *(_f(row.get(k, {}).get("minirocket"), ".1f") for k in keys),
                 *(_f(row["words_1nn"].get(k), ".1f") for k in keys), _f(row["words_1nn"]["sax"], ".1f"),
                 _f(row["words_1nn"]["sfa"], ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="series",
                   help="model name or folder (default: series, the shipped or installed generalist)")
    p.add_argument("--loo-models", type=Path, metavar="DIR",
                   help="leave-one-out models: DIR/<SET> trained without SET (a checkpoint or experiment folder, or a "
                        "recipe run with its exported model in DIR/<SET>/model)")
    p.add_argument("--sets", default=",".join(EQUAL_LENGTH), help="comma-separated aeon sets (equal length)")
    p.add_argument("--bits", default="1,2,4", help="bits per sample (default 1,2,4)")
    p.add_argument("--train-info", type=Path, help="the recipe's data/info.json: marks the sets the model saw")
    p.add_argument("--no-minirocket", action="store_true", help="skip the MiniRocket accuracies (the slowest part)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_series_codec(args.model)
    sets = args.sets.split(",")
    loo = {}
    if args.loo_models is not None:
        found = {s: p for s in sets if (p := loo_model_dir(args.loo_models / s)) is not None}
        for s in sorted(set(sets) - set(found)):
            if (args.loo_models / s).exists():  # a recipe run that has not exported its model yet
                print(f"# {s}: no leave-one-out model in {args.loo_models / s} yet: no loo row", file=sys.stderr)
        loo = {s: load_series_codec(str(p)) for s, p in found.items()}
        if not loo:
            fail(f"{args.loo_models}: no leave-one-out model for any of {args.sets}")
    seen = set(json.loads(args.train_info.read_text())["sets"]) if args.train_info else None
    rates = [int(b) for b in args.bits.split(",")]
    results, t0 = [], time.process_time()
    for name in sets:
        models = {"vq": model, **({"loo": loo[name]} if name in loo else {})}
        results.append(run_set(name, models, rates, not args.no_minirocket))
        print(f"# {name}: done ({time.process_time() - t0:.0f} CPU s so far)", file=sys.stderr, flush=True)
    print(f"model {args.model}: hop {model.hop}, K {model.codebook_size}, n_q <= {model.n_q}"
          f"{f'; leave-one-out models for {len(loo)} set(s) in {args.loo_models}' if loo else ''}; NMSE on TEST (lower "
          f"is better); bits = real payload bits/sample; H = token entropy bits/sample; step = the time step most "
          f"series were coded at (encode_at_rate's choice) and their share; accuracies in % (1nn: 1-NN "
          f"Euclidean, mr: MiniRocket, bag: 1-NN on token histograms at full time resolution, sax/sfa words: 1-NN "
          f"with MINDIST)")
    for r in rates:
        print(f"\n## {r} bits/sample\n\n{table(results, r, seen)}\n\n{usefulness_table(results, r)}\n")
        print("\n".join(verdicts(results, r) + (verdicts(results, r, "loo") if loo else [])))
    print(f"\nCPU time {time.process_time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
