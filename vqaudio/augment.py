"""Training-time audio augmentation: recording conditions a codec must reproduce (level, microphone and room colour,
telephone band, reverberation, background noise).

:class:`AugmentConfig` (the ``"augment"`` section of a training config, saved in ``train.json``) says how likely each
kind is and over which range; :func:`augment` applies them to one training crop ``[C, T]`` with a given
``torch.Generator``, so a run (and its exact resume) sees the same augmented data. The codec's input *and* target are
the augmented crop: the model learns to code any such recording, not to clean it. Validation crops are never augmented.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torchaudio.functional as AF
from torch import Tensor

from vqaudio.config_section import ConfigSection
from vqaudio.errors import ConfigError, is_finite_number

__all__ = ["AugmentConfig", "augment"]


@dataclass
class AugmentConfig(ConfigSection):
    """Probabilities (``p_*``) and ranges (``[low, high]``, drawn uniformly) of each augmentation; all off by default.

    - gain: ``gain_db`` (the crop is scaled down again if its peak would pass ``max_peak``);
    - eq: a bass shelf (100-300 Hz) and a treble shelf (1.5-3 kHz), each ``eq_db``, and a peak (300-3000 Hz) of ``eq_db``/2:
      microphones, rooms and EQ settings;
    - telephone: band-pass 300-3400 Hz (two biquads each side);
    - reverb: an exponentially decaying noise impulse response with RT60 in ``rt60_s``, mixed ``reverb_wet`` wet;
    - noise: white, pink or brown noise at an SNR in ``snr_db``.
    """

    SECTION: ClassVar[str] = "augment"

    p_gain: float = 0.0
    gain_db: list[float] = field(default_factory=lambda: [-18.0, 6.0])
    p_eq: float = 0.0
    eq_db: list[float] = field(default_factory=lambda: [-10.0, 10.0])
    p_telephone: float = 0.0
    p_reverb: float = 0.0
    rt60_s: list[float] = field(default_factory=lambda: [0.1, 0.5])
    reverb_wet: list[float] = field(default_factory=lambda: [0.1, 0.5])
    p_noise: float = 0.0
    snr_db: list[float] = field(default_factory=lambda: [15.0, 40.0])
    max_peak: float = 0.99

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_"):
                if not is_finite_number(v) or not 0 <= v <= 1:
                    raise ConfigError(f"AugmentConfig.{f.name} must be a probability in [0, 1], got {v!r}")
                setattr(self, f.name, float(v))
            elif f.name == "max_peak":
                if not is_finite_number(v) or not 0 < v:
                    raise ConfigError(f"AugmentConfig.max_peak must be a number > 0, got {v!r}")
            elif not (isinstance(v, (list, tuple)) and len(v) == 2 and all(is_finite_number(b) for b in v) and v[0] <= v[1]):
                raise ConfigError(f"AugmentConfig.{f.name} must be [low, high] with low <= high, got {v!r}")
            else:
                setattr(self, f.name, [float(b) for b in v])
        if self.rt60_s[0] <= 0 or not 0 <= self.reverb_wet[0] <= self.reverb_wet[1] <= 1:
            raise ConfigError("AugmentConfig: rt60_s must be > 0 and reverb_wet within [0, 1]")

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in dataclasses.fields(self) if f.name.startswith("p_"))


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _coloured_noise(shape: torch.Size, g: torch.Generator) -> Tensor:
    """White, pink (1/f) or brown (1/f^2) noise ``shape`` with unit RMS."""
    n = torch.randn(shape, generator=g)
    slope = int(torch.randint(0, 3, (), generator=g))  # 0 white, 1 pink, 2 brown
    if slope:
        spec = torch.fft.rfft(n)
        f = torch.arange(spec.shape[-1], dtype=n.dtype).clamp_min(1.0)
        n = torch.fft.irfft(spec / f ** (slope / 2), n=shape[-1])
    return n / n.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)


def _reverb(x: Tensor, sr: int, rt60: float, wet: float, g: torch.Generator) -> Tensor:
    n = max(2, int(min(rt60, 1.0) * sr))
    t = torch.arange(n, dtype=x.dtype) / sr
    ir = torch.randn(n, generator=g) * torch.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    ir = ir / ir.norm().clamp_min(1e-12)
    ir[0] = 0.0
    w = AF.fftconvolve(x, ir.expand(x.shape[0], -1))[..., : x.shape[-1]]
    dry_rms, wet_rms = x.pow(2).mean().sqrt(), w.pow(2).mean().sqrt().clamp_min(1e-12)
    return (1 - wet) * x + wet * w * (dry_rms / wet_rms)


def augment(x: Tensor, sample_rate: int, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """``x [C, T]`` under a random recording condition drawn from ``cfg`` with ``g`` (same draws, same result)."""
    if not cfg.enabled or x.numel() == 0:
        return x
    nyq = sample_rate / 2
    draws = torch.rand(5, generator=g).tolist()  # one draw per kind, always taken: the stream stays aligned
    y = x
    if draws[0] < cfg.p_eq:
        bass_f, treble_f, peak_f = _u(g, 100, 300), min(_u(g, 1500, 3000), 0.45 * sample_rate), _u(g, 300, 3000)
        y = AF.bass_biquad(y, sample_rate, _u(g, *cfg.eq_db), bass_f)
        y = AF.treble_biquad(y, sample_rate, _u(g, *cfg.eq_db), treble_f)
        if peak_f < 0.45 * sample_rate:
            y = AF.equalizer_biquad(y, sample_rate, peak_f, _u(g, *cfg.eq_db) / 2, Q=_u(g, 0.5, 2.0))
    if draws[1] < cfg.p_telephone and nyq > 3600:
        for _ in range(2):
            y = AF.highpass_biquad(y, sample_rate, 300.0)
            y = AF.lowpass_biquad(y, sample_rate, 3400.0)
    if draws[2] < cfg.p_reverb:
        y = _reverb(y, sample_rate, _u(g, *cfg.rt60_s), _u(g, *cfg.reverb_wet), g)
    if draws[3] < cfg.p_noise:
        rms = y.pow(2).mean().sqrt()
        if rms > 0:
            snr = _u(g, *cfg.snr_db)
            y = y + _coloured_noise(y.shape, g) * rms / math.pow(10, snr / 20)
    if draws[4] < cfg.p_gain:
        y = y * math.pow(10, _u(g, *cfg.gain_db) / 20)
    peak = y.abs().max()
    if peak > cfg.max_peak and x.abs().max() <= cfg.max_peak:
        y = y * (cfg.max_peak / peak)
    return y.to(x.dtype)
