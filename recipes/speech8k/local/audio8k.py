"""Read any recording of the recipe as 8 kHz mono float32 (sox decodes GSM; soundfile the rest), trim its silences,
and measure its active speech and median F0."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

RATE = 8000
FRAME = 160  # 20 ms


def read_8k(path: Path) -> np.ndarray:
    """``[T]`` float32 at 8 kHz, mono (channels averaged)."""
    if path.suffix.lower() == ".gsm":
        raw = subprocess.run(["sox", "-t", "gsm", "-r", "8000", "-c", "1", str(path), "-t", "f32", "-"],
                             check=True, capture_output=True).stdout
        return np.frombuffer(raw, dtype=np.float32).copy()
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != RATE and len(x):
        x = AF.resample(torch.from_numpy(x), sr, RATE).numpy()
    return x.astype(np.float32)


def active_frames(x: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """Boolean per 20 ms frame: energy within ``floor_db`` of the file's loudest frames (95th percentile)."""
    n = len(x) // FRAME
    if n == 0:
        return np.zeros(0, dtype=bool)
    e = 10 * np.log10(np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    return e > max(np.percentile(e, 95) + floor_db, -70.0)


def trim_silences(x: np.ndarray, keep: float = 0.15, floor_db: float = -40.0) -> np.ndarray:
    """``x`` with leading/trailing silence cut and inner pauses shortened to at most ``2*keep`` seconds."""
    act = active_frames(x, floor_db)
    if not act.any():
        return x[:0]
    pad = int(keep * RATE / FRAME)
    keep_mask = np.convolve(act.astype(float), np.ones(2 * pad + 1), mode="same")[: len(act)] > 0
    idx = np.repeat(keep_mask, FRAME)
    return x[: len(idx)][idx]


def median_f0(x: np.ndarray) -> float:
    """Median pitch (Hz) of the voiced frames by Praat's autocorrelation method (60-500 Hz); nan if none.

    Needs ``praat-parselmouth`` (only the survey uses it: ``pip install praat-parselmouth``).
    """
    import parselmouth

    if len(x) < RATE // 10:
        return float("nan")
    pitch = parselmouth.Sound(x.astype(np.float64), RATE).to_pitch(time_step=0.01, pitch_floor=60, pitch_ceiling=500)
    f0 = pitch.selected_array["frequency"]
    f0 = f0[f0 > 0]
    return float(np.median(f0)) if len(f0) else float("nan")
