"""Evaluation metrics of a reconstruction against its reference, and codebook statistics.

Waveform metrics take mono float32 ``[T]`` tensors at the same rate (multi-channel files are scored
per channel and averaged by :func:`score`):

- :func:`si_snr` (dB, higher is better), scale-invariant SNR of zero-mean signals;
- :func:`log_mel_distance` (lower is better), mean absolute difference of log10 mel spectrograms;
- :func:`mrstft_distance` (lower is better), spectral convergence + log-magnitude L1, averaged over
  three STFT resolutions (torchaudio transforms);
- :func:`pesq_score` (MOS-LQO; narrow-band at 8 kHz, wide-band at 16 kHz) and :func:`stoi_score`,
  when the optional ``pesq`` / ``pystoi`` packages are installed (:func:`optional_metrics` says which).

Series (``kind="series"``, ``[C, T]``) get SI-SNR per channel and the normalised MSE.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torchaudio.transforms as AT
from torch import Tensor

from vqaudio.io import resample

__all__ = ["si_snr", "nmse", "log_mel_distance", "mrstft_distance", "pesq_score", "stoi_score", "optional_metrics",
           "code_counts", "codebook_stats", "audio_metrics", "score", "align", "AUDIO_METRICS", "SERIES_METRICS", "HIGHER_IS_BETTER"]

AUDIO_METRICS = ("si_snr", "log_mel", "mrstft", "pesq_nb", "pesq_wb", "stoi")
SERIES_METRICS = ("si_snr", "nmse")
HIGHER_IS_BETTER = {"si_snr": True, "log_mel": False, "mrstft": False, "pesq_nb": True, "pesq_wb": True,
                    "stoi": True, "nmse": False}
_EPS = 1e-8


def _pair(ref: Tensor, est: Tensor) -> tuple[Tensor, Tensor]:
    ref, est = ref.detach().double().reshape(-1), est.detach().double().reshape(-1)
    n = min(ref.numel(), est.numel())
    if n == 0:
        raise ValueError("empty signal")
    return ref[:n], est[:n]


def si_snr(ref: Tensor, est: Tensor) -> float:
    """Scale-invariant SNR in dB of ``est [T]`` against ``ref [T]`` (means removed; lengths cut to the shorter)."""
    ref, est = _pair(ref, est)
    ref, est = ref - ref.mean(), est - est.mean()
    target = (est @ ref) / (ref @ ref + _EPS) * ref
    noise = est - target
    return float(10 * torch.log10((target @ target + _EPS) / (noise @ noise + _EPS)))


def nmse(ref: Tensor, est: Tensor) -> float:
    """Mean squared error of ``est [T]`` divided by the variance of ``ref [T]``."""
    ref, est = _pair(ref, est)
    return float(((ref - est) ** 2).mean() / (ref.var(unbiased=False) + _EPS))


def _n_fft(sample_rate: int) -> int:
    """A ~32 ms power-of-two FFT size (256 at 8 kHz, 512 at 16 kHz)."""
    return 1 << max(6, round(math.log2(0.032 * sample_rate)))


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int) -> AT.MelSpectrogram:
    n_fft = _n_fft(sample_rate)
    n_mels = 64 if sample_rate <= 8000 else 80
    return AT.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, power=1.0)


def log_mel_distance(ref: Tensor, est: Tensor, sample_rate: int) -> float:
    """Mean ``|log10 mel(ref) - log10 mel(est)|`` (magnitude mel, ~32 ms windows, floor 1e-5) of ``[T]`` signals."""
    ref, est = (x.float() for x in _pair(ref, est))
    mel = _mel(sample_rate)
    a, b = (torch.log10(mel(x).clamp_min(1e-5)) for x in (ref, est))
    return float((a - b).abs().mean())


@functools.lru_cache(maxsize=8)
def _stfts(sample_rate: int) -> tuple[AT.Spectrogram, ...]:
    base = _n_fft(sample_rate)
    return tuple(AT.Spectrogram(n_fft=n, hop_length=n // 4, power=1.0) for n in (base // 2, base, base * 2))


def mrstft_distance(ref: Tensor, est: Tensor, sample_rate: int) -> float:
    """Multi-resolution STFT distance of ``[T]`` signals: mean over 3 FFT sizes of spectral convergence
    ``||S_ref - S_est||_F / ||S_ref||_F`` plus mean ``|log S_ref - log S_est|``."""
    ref, est = (x.float() for x in _pair(ref, est))
    total = 0.0
    specs = _stfts(sample_rate)
    for spec in specs:
        a, b = spec(ref), spec(est)
        sc = torch.linalg.norm(a - b) / torch.linalg.norm(a).clamp_min(1e-7)
        mag = (torch.log(a.clamp_min(1e-7)) - torch.log(b.clamp_min(1e-7))).abs().mean()
        total += float(sc + mag)
    return total / len(specs)


@functools.cache
def optional_metrics() -> dict[str, str | None]:
    """``{"pesq": None or why unavailable, "stoi": ...}``: ``None`` means the metric can be computed."""
    out: dict[str, str | None] = {}
    for name, module in (("pesq", "pesq"), ("stoi", "pystoi")):
        try:
            __import__(module)
            out[name] = None
        except ImportError:
            out[name] = f"the optional package {module!r} is not installed (pip install {module})"
    return out


def pesq_score(ref: Tensor, est: Tensor, sample_rate: int, mode: str = "nb") -> float:
    """PESQ MOS-LQO of ``[T]`` signals: ``mode="nb"`` at 8 kHz, ``"wb"`` at 16 kHz (resampled there first).

    ``nan`` when PESQ finds no speech or the package is missing."""
    if optional_metrics()["pesq"]:
        return math.nan
    from pesq import PesqError, pesq

    rate = 8000 if mode == "nb" else 16000
    ref, est = (resample(x.float(), sample_rate, rate).numpy() for x in _pair(ref, est))
    try:
        return float(pesq(rate, ref, est, mode))
    except (PesqError, ValueError):
        return math.nan


def stoi_score(ref: Tensor, est: Tensor, sample_rate: int) -> float:
    """STOI (0..1) of ``[T]`` signals (pystoi resamples to 10 kHz); ``nan`` when the package is missing
    or when fewer than 30 frames of speech are left after pystoi's silence removal (it returns 1e-5 then)."""
    if optional_metrics()["stoi"]:
        return math.nan
    from pystoi import stoi

    ref, est = _pair(ref, est)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(ref.numpy(), est.numpy(), sample_rate, extended=False))
    too_short = any("Not enough STFT frames" in str(w.message) for w in caught)  # pystoi's placeholder 1e-5
    return value if math.isfinite(value) and not too_short else math.nan


def align(ref: Tensor, est: Tensor, max_lag: int) -> Tensor:
    """``est [T']`` shifted by the integer lag in ``[-max_lag, max_lag]`` that maximises its
    cross-correlation with ``ref [T]``, cut or zero-padded to ``T`` samples (for codecs with delay)."""
    n = ref.shape[-1]
    est = torch.nn.functional.pad(est[:n], (0, max(0, n - est.shape[-1])))
    if max_lag <= 0:
        return est
    size = 1 << (2 * n - 1).bit_length()
    xc = torch.fft.irfft(torch.fft.rfft(ref.double(), size) * torch.fft.rfft(est.double(), size).conj(), size)
    lags = torch.cat([xc[: max_lag + 1], xc[size - max_lag :]])  # lags 0..max_lag, then -max_lag..-1
    i = int(lags.argmax())
    lag = i if i <= max_lag else i - (2 * max_lag + 1)
    return torch.roll(torch.nn.functional.pad(est, (max_lag, max_lag)), lag)[max_lag : max_lag + n]


def audio_metrics(sample_rate: int, names: tuple[str, ...] = AUDIO_METRICS) -> tuple[str, ...]:
    """Those of ``names`` that can be computed here at ``sample_rate``: the optional packages installed,
    ``pesq_wb`` only from 16 kHz up."""
    avail = optional_metrics()
    return tuple(m for m in names if not (m.startswith("pesq") and avail["pesq"]) and not (m == "stoi" and avail["stoi"])
                 and not (m == "pesq_wb" and sample_rate < 16000))


def score(ref: Tensor, est: Tensor, sample_rate: int | None, kind: str = "audio",
          metrics: tuple[str, ...] | None = None) -> dict[str, float]:
    """Metrics of a reconstruction ``est [C, T']`` of ``ref [C, T]`` (audio at ``sample_rate``), averaged
    over channels. ``metrics`` defaults to :data:`AUDIO_METRICS` (``pesq_wb`` only from 16 kHz up;
    unavailable optional ones left out) or :data:`SERIES_METRICS`."""
    if ref.dim() == 1:
        ref, est = ref[None], est[None]
    if kind == "series":
        names = metrics or SERIES_METRICS
        fns = {"si_snr": si_snr, "nmse": nmse}
    else:
        names = metrics or audio_metrics(sample_rate)
        fns = {"si_snr": si_snr, "log_mel": lambda a, b: log_mel_distance(a, b, sample_rate),
               "mrstft": lambda a, b: mrstft_distance(a, b, sample_rate),
               "pesq_nb": lambda a, b: pesq_score(a, b, sample_rate, "nb"),
               "pesq_wb": lambda a, b: pesq_score(a, b, sample_rate, "wb"),
               "stoi": lambda a, b: stoi_score(a, b, sample_rate)}
    return {m: sum(fns[m](ref[c], est[c]) for c in range(ref.shape[0])) / ref.shape[0] for m in names}


def code_counts(codes: list[Tensor], codebook_size: int) -> Tensor:
    """Occurrences of each code per stage: int64 ``[n_q, K]`` from codes ``[items, n_q, F]`` (a list of files)."""
    n_q = codes[0].shape[1]
    counts = torch.zeros(n_q, codebook_size, dtype=torch.int64)
    for c in codes:
        for q in range(n_q):
            counts[q] += torch.bincount(c[:, q].reshape(-1), minlength=codebook_size)
    return counts


def codebook_stats(counts: Tensor) -> dict[str, list[float]]:
    """Per stage, from ``counts [n_q, K]``: ``usage`` (share of codes used), ``perplexity`` (``exp`` of the
    entropy in nats, at most ``K``) and ``entropy_bits``."""
    p = counts.double() / counts.sum(1, keepdim=True).clamp_min(1)
    h = -(p * p.clamp_min(1e-300).log()).sum(1)
    return {"usage": (counts > 0).double().mean(1).tolist(), "perplexity": h.exp().tolist(),
            "entropy_bits": (h / math.log(2)).tolist()}
