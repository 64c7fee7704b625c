"""Validation figures (matplotlib, Agg canvas: no display needed), written atomically as PNG."""

from __future__ import annotations

import os

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from vqaudio.io import atomic_path

__all__ = ["save_figure", "plot_spectrograms", "plot_series", "plot_codebook_usage"]


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Render ``fig`` to a PNG at ``path`` (temporary file + rename)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _log_spec(x: Tensor, n_fft: int) -> np.ndarray:
    spec = torch.stft(x.float(), n_fft, n_fft // 4, window=torch.hann_window(n_fft), pad_mode="constant", return_complex=True).abs()
    return (20 * torch.log10(spec.clamp_min(1e-5))).numpy()


def plot_spectrograms(path: str | os.PathLike, inputs: list[Tensor], recons: list[Tensor], sample_rate: int) -> None:
    """Input vs reconstruction log-magnitude spectrograms, one row per pair of ``[T]`` waveforms."""
    n_fft = 256 if sample_rate <= 16000 else 1024
    rows = len(inputs)
    fig = Figure(figsize=(10, 2.4 * rows))
    for r, (x, y) in enumerate(zip(inputs, recons, strict=True)):
        sx, sy = _log_spec(x, n_fft), _log_spec(y, n_fft)
        vmax = float(sx.max())
        extent = (0, x.shape[-1] / sample_rate, 0, sample_rate / 2000)
        for c, (s, title) in enumerate([(sx, "input"), (sy, "reconstruction")]):
            ax = fig.add_subplot(rows, 2, 2 * r + c + 1)
            ax.imshow(s, origin="lower", aspect="auto", extent=extent, vmin=vmax - 80, vmax=vmax, cmap="magma")
            ax.set_title(f"{title} {r}", fontsize=9)
            ax.set_xlabel("s", fontsize=8)
            ax.set_ylabel("kHz", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_series(path: str | os.PathLike, inputs: list[Tensor], recons: list[Tensor], max_channels: int = 4) -> None:
    """Input vs reconstruction of ``[C, T]`` series, one panel per item (first ``max_channels`` channels)."""
    fig = Figure(figsize=(10, 2.2 * len(inputs)))
    for r, (x, y) in enumerate(zip(inputs, recons, strict=True)):
        ax = fig.add_subplot(len(inputs), 1, r + 1)
        for c in range(min(max_channels, x.shape[0])):
            (line,) = ax.plot(x[c].numpy(), lw=1.2, label=f"ch{c}")
            ax.plot(y[c].numpy(), lw=1.0, ls="--", color=line.get_color())
        ax.set_title(f"item {r}: input (solid) vs reconstruction (dashed)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_codebook_usage(path: str | os.PathLike, counts: Tensor) -> None:
    """Histogram of code use per quantiser stage; ``counts [n_q, K]``, codes sorted by frequency."""
    n_q, k = counts.shape
    fig = Figure(figsize=(8, 1.8 * n_q + 0.6))
    for q in range(n_q):
        c = counts[q].float()
        p = c / c.sum().clamp_min(1)
        perplexity = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
        ax = fig.add_subplot(n_q, 1, q + 1)
        ax.bar(np.arange(k), torch.sort(c, descending=True).values.numpy(), width=1.0)
        ax.set_title(f"stage {q}: {int((c > 0).sum())}/{k} codes used, perplexity {perplexity:.1f}", fontsize=9)
        ax.set_xlim(-0.5, k - 0.5)
    fig.tight_layout()
    save_figure(fig, path)
