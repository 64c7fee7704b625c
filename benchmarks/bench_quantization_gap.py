"""Where a codec's quality goes: the decoder on the unquantised latents against 1..n_q codebooks.

    .venv/bin/python benchmarks/bench_quantization_gap.py [--codec speech-8k] [--data DIR|MANIFEST]

Each held-out file goes through the encoder once; the decoder then reconstructs it from ``z_e``
itself (no quantisation: the autoencoder's ceiling) and from the residual VQ's output with each number
of codebooks. The ratios compare every row with the unquantised one measured in the same run. When
all codebooks come close to the ceiling, more bits cannot buy quality; the decoder and its training
objective must. Default data: the asterisk recipe's held-out prompts (as ``bench_quality.py``).
PESQ/STOI need the ``pesq``/``pystoi`` packages.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared machines)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import HEADERS, HIGHER, METRICS, heldout_files  # noqa: E402

from vqaudio import metrics as M  # noqa: E402
from vqaudio.codec import load_codec  # noqa: E402
from vqaudio.errors import ConfigError, VQAudioError  # noqa: E402
from vqaudio.io import load_audio, resample  # noqa: E402
from vqaudio.report import eval_files  # noqa: E402


@torch.no_grad()
def reconstructions(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``x [1, C, T]`` (model rate) -> ``{"unquantised": y, "n_q=1": y, ...}``, each ``[1, C, T]``."""
    xn, stats = model.normalize(x)
    t = x.shape[-1]
    z = model.encoder(F.pad(xn, (0, model.num_frames(t) * model.hop - t)))
    out = {"unquantised": model.decoder(z)}
    for n in range(1, model.config.n_q + 1):
        out[f"n_q={n}"] = model.decoder(model.quantizer(z, n).quantized)
    return {k: model.denormalize(y[..., :t], stats) for k, y in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="speech-8k", help="codec name, checkpoint or experiment folder (default speech-8k)")
    ap.add_argument("--data", help="folder or manifest (default: the asterisk held-out prompts)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        codec = load_codec(args.codec)
        if codec.kind != "audio":
            raise ConfigError(f"{args.codec} is a {codec.kind} model; this benchmark scores speech")
        files, _ = eval_files(args.data) if args.data else heldout_files(
            Path(os.environ.get("ASTERISK", "/usr/share/asterisk/sounds")))
        model, rate = codec.model.eval(), codec.sample_rate
        scores: dict[str, dict[str, list[float]]] = {}
        for f in files:
            wav, sr = load_audio(f)
            x = resample(wav, sr, rate)[None]
            for name, y in reconstructions(model, x).items():
                row = M.score(x[0], y[0], rate, metrics=METRICS)
                for m, v in row.items():
                    scores.setdefault(name, {}).setdefault(m, []).append(v)
    except VQAudioError as err:
        print(f"bench_quantization_gap: error: {err}", file=sys.stderr)
        return 2
    mean = {name: {m: _mean(v) for m, v in row.items()} for name, row in scores.items()}
    top = mean["unquantised"]
    print(f"{len(files)} files, codec {codec.name} ({codec.sha256[:16]}; {rate} Hz, hop {codec.hop}, n_q {codec.n_q})")
    print(f"{'decoder input':<14} " + " ".join(f"{HEADERS[m]:>10}" for m in METRICS) + "   share of the unquantised score")
    for name, row in mean.items():
        ratios = " ".join(f"{_share(row[m], top[m], HIGHER[m]):>6.3f}" for m in METRICS)
        print(f"{name:<14} " + " ".join(f"{row[m]:10.3f}" for m in METRICS) + f"   {ratios}")
    full = mean[f"n_q={codec.n_q}"]
    print("gap, all codebooks vs unquantised: " + ", ".join(
        f"{m} {full[m] - top[m]:+.3f}" for m in METRICS))
    return 0


def _mean(values: list[float]) -> float:
    ok = [v for v in values if math.isfinite(v)]
    return sum(ok) / len(ok) if ok else math.nan


def _share(value: float, top: float, higher: bool) -> float:
    """``value`` as a share of ``top`` (1 = as good as unquantised; below 1 = worse, for either direction)."""
    return value / top if higher else top / value


if __name__ == "__main__":
    sys.exit(main())
