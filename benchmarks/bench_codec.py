"""Codec throughput: encode and decode a 10-minute 8 kHz speech file, printed as x realtime.

The model is ``--model`` (default: the shipped ``speech-8k``; any name, checkpoint or experiment
folder), or with ``--untrained`` the VQ-VAE architecture with untrained weights (throughput does not
depend on the weights): ``VQVAEConfig`` at 8 kHz, strides 2-4-4 = hop 32 (250 frames/s), 4 levels of
256 codes and a small width (``--hidden 8 --max-hidden 64``, 0.12 M parameters).
Encode is file -> .vqa (streamed read, encoder chunks of ``--chunk-seconds`` with the exact CPU convs of
``vqaudio.ops.exact_conv``, or ATen's with ``VQAUDIO_EXACT_CONV=0``, nearest-code search, bit packing); decode is .vqa -> wav (chunked decoder, streamed write). Best of ``--repeats`` runs;
also prints peak RSS. Run from the repository root::

    .venv/bin/python benchmarks/bench_codec.py                 # speech-8k, 10 min of speech, 2 threads
    .venv/bin/python benchmarks/bench_codec.py --untrained --hidden 32 --max-hidden 256
    .venv/bin/python benchmarks/bench_codec.py --minutes 1 --against-aten 5   # exact vs ATen convs, alternated

On a machine shared with other jobs, OpenMP threads that spin while waiting for each other can
make 2 threads many times slower than 1: ``OMP_WAIT_POLICY=PASSIVE`` avoids that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _util import set_threads  # noqa: E402

from vqaudio.codec import Codec, load_codec, load_codes, save_codes  # noqa: E402
from vqaudio.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from vqaudio.ops import exact_conv  # noqa: E402

SPEECH = Path("/usr/share/asterisk/sounds/en_US_f_Allison")  # a voice folder, not the <lang> link


def make_file(path: Path, seconds: float, sr: int = 8000) -> str:
    """Tile asterisk prompts (or, without them, noise bursts) into a ``seconds``-long mono WAV."""
    parts = [sf.read(str(p), dtype="float32")[0] for p in sorted(SPEECH.glob("*.wav"))[:200]] if SPEECH.is_dir() else []
    parts = [p for p in parts if p.ndim == 1] or [np.random.default_rng(0).normal(0, 0.1, sr).astype(np.float32)]
    need, i = int(seconds * sr), 0
    with sf.SoundFile(str(path), "w", sr, 1, "PCM_16") as f:
        while need > 0:
            block = parts[i % len(parts)][:need]
            f.write(block)
            need, i = need - len(block), i + 1
    return "asterisk speech" if SPEECH.is_dir() else "noise"


def against_aten(codec: Codec, src: Path) -> tuple[float, float]:
    """Seconds to encode ``src`` with ATen's convs, then with ``exact_conv1d`` (:mod:`vqaudio.ops.exact_conv`)."""
    times = []
    for ctx in (exact_conv.disabled(), contextlib.nullcontext()):
        with ctx:
            t0 = time.perf_counter()
            codec.encode_file(src)
            times.append(time.perf_counter() - t0)
    return times[0], times[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="speech-8k", help="codec name, checkpoint or experiment folder")
    ap.add_argument("--untrained", action="store_true", help="an untrained VQ-VAE of --hidden/--max-hidden instead")
    ap.add_argument("--hidden", type=int, default=8, help="VQVAEConfig.hidden (--untrained)")
    ap.add_argument("--max-hidden", type=int, default=64, help="VQVAEConfig.max_hidden (--untrained)")
    ap.add_argument("--repeats", type=int, default=2, help="report the best of this many runs")
    ap.add_argument("--chunk-seconds", type=float, default=15.0)
    ap.add_argument("--against-aten", type=int, default=0, metavar="N",
                    help="also encode N times with ATen's convs and N times with the exact ones, alternately, in this "
                         "process, and print the per-round time ratios (a loaded machine: compare within rounds)")
    args = ap.parse_args()
    set_threads(args.threads)
    if args.untrained:
        torch.manual_seed(0)
        model = VQVAE(VQVAEConfig(kmeans_init=False, hidden=args.hidden, max_hidden=args.max_hidden))
        codec = Codec(model, name="bench-untrained", chunk_seconds=args.chunk_seconds)
    else:
        codec = load_codec(args.model, chunk_seconds=args.chunk_seconds)
        model = codec.model
    config = model.config
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        src, vqa, out = Path(tmp) / "in.wav", Path(tmp) / "in.vqa", Path(tmp) / "out.wav"
        what = make_file(src, seconds)
        codec.encode(torch.zeros(1, 8000), 8000)  # warm-up (allocator, kernels)
        t_enc = t_dec = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            save_codes(vqa, codec.encode_file(src))
            t_enc = min(t_enc, time.perf_counter() - t0)
            t0 = time.perf_counter()
            codec.decode_to_file(load_codes(vqa), out)
            t_dec = min(t_dec, time.perf_counter() - t0)
        size = vqa.stat().st_size
        rounds = [against_aten(codec, src) for _ in range(args.against_aten)]
    params = sum(p.numel() for p in model.parameters())
    weights = "untrained weights" if args.untrained else f"{codec.name} ({codec.sha256[:16]})"
    print(f"model: VQ-VAE, {weights}, {params / 1e6:.2f} M parameters, hidden={config.hidden}, "
          f"max_hidden={config.max_hidden}, dim={config.dim}, strides={config.strides} (hop {codec.hop}), "
          f"{config.sample_rate} Hz, n_q={config.n_q}, K={config.codebook_size}")
    ch = codec.chunking
    convs = "ATen" if os.environ.get("VQAUDIO_EXACT_CONV", "1").strip() == "0" else "exact_conv1d"
    print(f"input: {args.minutes:g} min of {what} at 8 kHz; {args.threads} threads; best of {args.repeats}; encoder "
          f"chunks of {ch['chunk_frames']} + {ch['overlap_frames']} frames ({convs} convs); "
          f"decoder chunks of {args.chunk_seconds:g} s + {codec.decoder_overlap} frames of overlap")
    print(f"encode (file -> .vqa): {t_enc:6.2f} s  = {seconds / t_enc:7.1f} x realtime")
    print(f"decode (.vqa -> wav):  {t_dec:6.2f} s  = {seconds / t_dec:7.1f} x realtime")
    if rounds:
        ratios = ", ".join(f"{a / e:.2f}" for a, e in rounds)
        print(f"encode ATen convs / exact convs, per round: {ratios} (median ATen {seconds / median(a for a, _ in rounds):.1f}x,"
              f" exact {seconds / median(e for _, e in rounds):.1f}x realtime)")
    print(f"token file: {size} bytes = {8 * size / seconds / 1000:.2f} kbit/s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
