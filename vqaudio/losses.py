"""Reconstruction losses: waveform L1 + multi-resolution log-mel / STFT loss (audio), MSE (series).

The spectral loss follows EnCodec / DAC (L1 between log-mel spectrograms at several window sizes)
plus the log STFT-magnitude term of Parallel WaveGAN's multi-resolution STFT loss and the
power-law compressed magnitude MSE of Braun & Tashev (2021, "A consolidated view of loss functions
for supervised deep learning-based speech enhancement": ``|X|^0.3``, the loss that tracked PESQ
best there; the log terms weigh a -60 dB bin as much as a loud one, the compressed one follows
loudness as PESQ does). Windows and
mel filterbanks (``torchaudio.functional.melscale_fbanks``) are non-persistent buffers, so they
never end up in a checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn

__all__ = ["default_fft_sizes", "default_n_mels", "SpectralLoss", "waveform_l1", "series_mse"]


def default_fft_sizes(sample_rate: int) -> list[int]:
    """Four windows from ~16 ms to ~128 ms, powers of two: ``[128, 256, 512, 1024]`` at 8 kHz."""
    base = 2 ** max(4, round(math.log2(sample_rate * 0.016)))
    return [base * 2**i for i in range(4)]


def default_n_mels(fft_sizes: list[int]) -> list[int]:
    """``n_fft / 8`` mel bands, at most 80 (16, 32, 64, 80 at 8 kHz): no empty mel filters."""
    return [max(8, min(80, n // 8)) for n in fft_sizes]


class SpectralLoss(nn.Module):
    """Multi-resolution spectral distance of ``[B, C, T]`` signals (averaged over resolutions).

    Per FFT size ``n`` (hann window ``n``, hop ``n / 4``, zero-padded centred frames), with
    magnitudes clamped at 1e-5: ``mel`` = mean |log10 mel(x) - log10 mel(y)| on magnitude mel
    spectrograms (EnCodec, DAC), ``logmag`` = mean |log |X| - log |Y|| on the linear STFT
    (Parallel WaveGAN's log STFT-magnitude loss) and ``compressed`` = mean (|X|^c - |Y|^c)^2 with
    ``c = compression`` (Braun & Tashev). The total is ``mel + mag_weight * logmag +
    compressed_weight * compressed``. All are means over items, so the losses of equal-sized shards
    of a batch average to the loss of the whole batch (exact DDP equivalence).
    """

    def __init__(self, sample_rate: int, fft_sizes: list[int] | None = None, n_mels: list[int] | None = None, mag_weight: float = 1.0,
                 compressed_weight: float = 0.0, compression: float = 0.3) -> None:
        super().__init__()
        self.fft_sizes = list(fft_sizes or default_fft_sizes(sample_rate))
        self.n_mels = list(n_mels or default_n_mels(self.fft_sizes))
        if len(self.n_mels) != len(self.fft_sizes):
            raise ValueError(f"SpectralLoss: {len(self.fft_sizes)} FFT sizes but {len(self.n_mels)} mel counts")
        if len(set(self.fft_sizes)) != len(self.fft_sizes):
            raise ValueError(f"SpectralLoss: FFT sizes must be distinct, got {self.fft_sizes}")
        self.mag_weight = mag_weight
        self.compressed_weight, self.compression = compressed_weight, compression
        for n, m in zip(self.fft_sizes, self.n_mels, strict=True):
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)
            fb = AF.melscale_fbanks(n // 2 + 1, 0.0, sample_rate / 2, m, sample_rate, norm="slaney", mel_scale="slaney")
            self.register_buffer(f"mel_{n}", fb, persistent=False)  # [n // 2 + 1, m]

    def _mag(self, x: Tensor, n: int) -> Tensor:
        """Magnitude STFT ``[B*C, frames, n // 2 + 1]`` of ``x [B, C, T]``."""
        spec = torch.stft(x.reshape(-1, x.shape[-1]).float(), n, n // 4, window=getattr(self, f"window_{n}"),
                          center=True, pad_mode="constant", return_complex=True)
        return torch.view_as_real(spec).square().sum(-1).clamp_min(1e-12).sqrt().transpose(1, 2)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``x`` = reconstruction, ``y`` = target, both ``[B, C, T]``. Returns ``(total, {"mel", "logmag"[, "compressed"]})`` (the last when weighted)."""
        mel = logmag = compressed = x.new_zeros((), dtype=torch.float32)
        for n in self.fft_sizes:
            mx, my = self._mag(x, n), self._mag(y, n)
            fb = getattr(self, f"mel_{n}")
            mel = mel + (torch.log10((mx @ fb).clamp_min(1e-5)) - torch.log10((my @ fb).clamp_min(1e-5))).abs().mean()
            mx, my = mx.clamp_min(1e-5), my.clamp_min(1e-5)
            logmag = logmag + (mx.log() - my.log()).abs().mean()
            if self.compressed_weight:
                compressed = compressed + (mx.pow(self.compression) - my.pow(self.compression)).square().mean()
        k = len(self.fft_sizes)
        mel, logmag, compressed = mel / k, logmag / k, compressed / k
        parts = {"mel": mel, "logmag": logmag}
        if self.compressed_weight:
            parts["compressed"] = compressed
        return mel + self.mag_weight * logmag + self.compressed_weight * compressed, parts


def waveform_l1(x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute error of ``[B, C, T]`` waveforms."""
    return F.l1_loss(x, y)


def series_mse(x: Tensor, y: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean squared error of ``[B, C, T]`` series (on RevIN-normalised data, see ``VQVAE``); with ``valid`` (bool,
    like ``x``) the mean over each item's valid steps, then over items (so equal shards still average exactly)."""
    if valid is None:
        return F.mse_loss(x, y)
    w = valid.to(x.dtype)
    per_item = ((x - y).square() * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1)
    return per_item.mean()
