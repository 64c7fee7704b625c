"""Reference coders the evaluation puts next to a codec: PCA at the same bit budget, Codec2 and Opus.

Every baseline maps a mono reference ``[T]`` at ``sample_rate`` to ``(reconstruction [T], bits)``
(``bits``: the size of what it would transmit), so its bitrate is ``bits / seconds``.

- :class:`PCABaseline`: frames of ``2 * hop`` samples (sqrt-Hann window, hop ``hop``) projected onto
  the top ``n`` principal components of frames of a fitting set, each coefficient quantised
  uniformly to ``b`` bits over ``±k`` standard deviations (or its largest fitted magnitude); ``n * b``
  fits the target bits per frame, and the ``(b, k)`` with the least fitting error wins. The
  basis, mean and ranges are side information (not counted, like a codebook).
- :class:`ExternalCodec`: Codec2 (``c2enc``/``c2dec`` on 8 kHz raw s16, modes 3200 and 2400) and
  Opus (``opusenc --bitrate 6``/``opusdec``) when their binaries are on ``PATH``; bits are the real
  size of the encoded stream (Opus: its packets, without the Ogg header pages and page framing).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from vqaudio.errors import ConfigError, VQAudioError
from vqaudio.io import resample

__all__ = ["PCABaseline", "ExternalCodec", "EXTERNAL", "available_external", "BaselineError"]


class BaselineError(VQAudioError):
    """An external baseline codec failed on a file."""


def _frames(x: Tensor, hop: int) -> Tensor:
    """``x [C, T]`` -> windowed frames ``[C, N, 2 * hop]`` with ``N = ceil(T / hop) + 1`` (zero-padded ends)."""
    n = math.ceil(x.shape[-1] / hop) + 1
    x = torch.nn.functional.pad(x, (hop, n * hop - x.shape[-1]))
    return x.unfold(-1, 2 * hop, hop) * _window(hop)


def _window(hop: int) -> Tensor:
    """sqrt of a periodic Hann window of ``2 * hop``: analysis x synthesis windows overlap-add to one."""
    return torch.hann_window(2 * hop, periodic=True, dtype=torch.float64).sqrt()


def _overlap_add(frames: Tensor, hop: int, length: int) -> Tensor:
    """Inverse of :func:`_frames`: ``[C, N, 2 * hop]`` -> ``[C, length]``."""
    c, n, _ = frames.shape
    frames = frames * _window(hop)
    out = torch.nn.functional.fold(frames.transpose(1, 2), (1, (n + 1) * hop), (1, 2 * hop), stride=(1, hop))
    return out.reshape(c, -1)[:, hop : hop + length]


@dataclass
class PCABaseline:
    """PCA transform coder; build with :meth:`fit`. ``basis [n, 2*hop*C]``, ``mean [2*hop*C]``, ``scale [n]``."""

    hop: int
    bits: int
    basis: Tensor
    mean: Tensor
    scale: Tensor
    normalise: bool = False

    @property
    def n_components(self) -> int:
        return int(self.basis.shape[0])

    @property
    def bits_per_frame(self) -> int:
        return self.n_components * self.bits

    def bitrate(self, sample_rate: float) -> float:
        """Bits per second (per time step for series) at ``sample_rate`` frames of ``hop``."""
        return sample_rate / self.hop * self.bits_per_frame

    @staticmethod
    def _vectors(x: Tensor, hop: int, normalise: bool) -> tuple[Tensor, Tensor, Tensor]:
        """``x [C, T]`` -> frame vectors ``[N, C * 2 * hop]`` plus the per-channel mean/std used (series)."""
        x = x.double()
        mu = x.mean(-1, keepdim=True) if normalise else torch.zeros(x.shape[0], 1, dtype=torch.float64)
        sd = x.std(-1, keepdim=True).clamp_min(1e-8) if normalise and x.shape[-1] > 1 else torch.ones_like(mu)
        f = _frames((x - mu) / sd, hop)  # [C, N, 2h]
        return f.transpose(0, 1).reshape(f.shape[1], -1), mu, sd

    @classmethod
    def fit(cls, signals: list[Tensor], hop: int, bits_per_frame: float | list[float], normalise: bool = False,
            max_frames: int = 20_000, seed: int = 0) -> PCABaseline | list[PCABaseline]:
        """Fit on ``signals`` (``[C, T]`` each) for at most ``bits_per_frame`` bits per ``hop`` samples
        (a list of budgets gives a list of coders sharing one decomposition).

        Tries every ``b`` in 1..12 with ``n = floor(bits_per_frame / b)`` components and a few ranges, and
        keeps the one with the lowest quantised reconstruction error of the fitting frames (at most
        ``max_frames``, drawn with ``seed``). ``normalise``: z-score each signal per channel first (series;
        the statistics are side information)."""
        budgets = bits_per_frame if isinstance(bits_per_frame, list) else [bits_per_frame]
        if min(budgets) < 1:
            raise ConfigError(f"PCA baseline needs at least 1 bit per frame, got {min(budgets):.3g}")
        vecs = torch.cat([cls._vectors(s, hop, normalise)[0] for s in signals])
        if vecs.shape[0] > max_frames:
            vecs = vecs[torch.randperm(vecs.shape[0], generator=torch.Generator().manual_seed(seed))[:max_frames]]
        mean = vecs.mean(0)
        _, s, vh = torch.linalg.svd(vecs - mean, full_matrices=False)
        std = s / math.sqrt(max(1, vecs.shape[0] - 1))
        coef = (vecs - mean) @ vh.T  # [N, D]; the basis is orthonormal, so errors add up per component
        tail = (coef**2).sum(0).flip(0).cumsum(0).flip(0).tolist() + [0.0]  # energy of components n..D-1
        peak = coef.abs().amax(0)
        out = []
        for budget in budgets:
            best: tuple[float, PCABaseline] | None = None
            for b in range(1, 13):
                n = min(int(budget // b), vh.shape[0])
                if n < 1:
                    break
                for scale in [k * std[:n] for k in (1.5, 2, 3, 4, 6)] + [peak[:n]]:
                    cand = cls(hop, b, vh[:n].clone(), mean, scale.clamp_min(1e-12), normalise)
                    err = float(((cand._dequantise(cand._quantise(coef[:, :n])) - coef[:, :n]) ** 2).sum()) + tail[n]
                    if best is None or err < best[0]:
                        best = (err, cand)
            out.append(best[1])
        return out if isinstance(bits_per_frame, list) else out[0]

    def _quantise(self, coef: Tensor) -> Tensor:
        """Coefficients ``[N, n]`` -> integer levels ``[N, n]`` in ``[0, 2**bits)`` (uniform over ``±scale``)."""
        levels = 1 << self.bits
        return ((coef / self.scale + 1) / 2 * levels).floor().clamp(0, levels - 1)

    def _dequantise(self, q: Tensor) -> Tensor:
        return ((q + 0.5) / (1 << self.bits) * 2 - 1) * self.scale

    def __call__(self, x: Tensor) -> tuple[Tensor, int]:
        """``x [C, T]`` -> ``(reconstruction float32 [C, T], bits)``."""
        c, t = x.shape
        v, mu, sd = self._vectors(x, self.hop, self.normalise)
        y = self._dequantise(self._quantise((v - self.mean) @ self.basis.T)) @ self.basis + self.mean  # [N, C*2h]
        frames = y.reshape(y.shape[0], c, -1).transpose(0, 1)
        out = _overlap_add(frames, self.hop, t) * sd + mu
        return out.float(), v.shape[0] * self.bits_per_frame


@dataclass(frozen=True)
class ExternalCodec:
    """A command-line codec run on a temporary file; ``rate`` is the sample rate it is fed (Hz)."""

    name: str
    binaries: tuple[str, ...]
    rate: int
    mode: str
    max_lag: int = 0  # samples at ``rate`` searched to undo the codec's delay before scoring

    def available(self) -> bool:
        return all(shutil.which(b) for b in self.binaries)

    def __call__(self, x: Tensor, sample_rate: int) -> tuple[Tensor, int]:
        """Mono ``x [T]`` at ``sample_rate`` -> ``(reconstruction float32 [T] at sample_rate, bits)``."""
        y = resample(x.float()[None], sample_rate, self.rate)[0].clamp(-1, 1)
        pcm = (y.numpy() * 32767).round().astype("<i2")
        with tempfile.TemporaryDirectory(prefix="vqaudio-baseline-") as tmp:
            tmp = Path(tmp)
            if self.binaries[0] == "c2enc":
                (tmp / "in.raw").write_bytes(pcm.tobytes())
                self._run(["c2enc", self.mode, "in.raw", "enc.bit"], tmp)
                self._run(["c2dec", self.mode, "enc.bit", "out.raw"], tmp)
                bits = (tmp / "enc.bit").stat().st_size * 8
                out = np.frombuffer((tmp / "out.raw").read_bytes(), dtype="<i2").astype(np.float32) / 32768
            else:
                sf.write(tmp / "in.wav", pcm, self.rate, subtype="PCM_16")
                self._run(["opusenc", "--quiet", "--bitrate", self.mode, "in.wav", "enc.opus"], tmp)
                self._run(["opusdec", "--quiet", "--rate", str(self.rate), "enc.opus", "out.wav"], tmp)
                bits = ogg_packet_bytes((tmp / "enc.opus").read_bytes()) * 8
                out = sf.read(tmp / "out.wav", dtype="float32", always_2d=True)[0][:, 0]
        out = torch.from_numpy(np.ascontiguousarray(out))
        if self.max_lag:
            from vqaudio.metrics import align

            out = align(y, out, self.max_lag).float()
        out = torch.nn.functional.pad(out[: y.shape[-1]], (0, max(0, y.shape[-1] - out.shape[-1])))
        return resample(out[None], self.rate, sample_rate)[0][: x.shape[-1]], bits

    def _run(self, cmd: list[str], cwd: Path) -> None:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise BaselineError(f"{self.name}: `{' '.join(cmd)}` failed ({msg[-1] if msg else r.returncode})")


def ogg_packet_bytes(data: bytes, skip_pages: int = 2) -> int:
    """Bytes of packet data in an Ogg stream after its first ``skip_pages`` pages (Opus: the two header pages)."""
    pos, page, total = 0, 0, 0
    while pos + 27 <= len(data):
        if data[pos : pos + 4] != b"OggS":
            raise BaselineError("opusenc wrote a malformed Ogg stream")
        nseg = data[pos + 26]
        size = sum(data[pos + 27 : pos + 27 + nseg])
        total += size if page >= skip_pages else 0
        pos, page = pos + 27 + nseg + size, page + 1
    return total


EXTERNAL = (
    ExternalCodec("codec2-3200", ("c2enc", "c2dec"), 8000, "3200", max_lag=400),
    ExternalCodec("codec2-2400", ("c2enc", "c2dec"), 8000, "2400", max_lag=400),
    ExternalCodec("opus-6k", ("opusenc", "opusdec"), 8000, "6", max_lag=400),
)


def available_external() -> dict[str, str | None]:
    """``{name: None if its binaries are on PATH else why not}`` for :data:`EXTERNAL`."""
    return {c.name: None if c.available() else f"{' / '.join(c.binaries)} not on PATH" for c in EXTERNAL}
