"""Benchmark the WaveNet prior's generation: ring-buffer cache vs full recompute, and speed vs real time.

    .venv/bin/python benchmarks/bench_prior.py [--tokens 2000] [--n-q 4,2] [--threads 2]

Both paths draw the *same* tokens from the same seed (checked): the full-recompute path runs the whole
teacher-forced conv stack over the whole prefix for every frame, the cached path one O(layers) step per frame. Tokens
are ``frames * n_q``; real time is the codec frame rate (``--sample-rate / --hop`` frames/s) times n_q.
Nothing is extrapolated: both paths generate the full ``--tokens``.

OMP_WAIT_POLICY defaults to PASSIVE here: on a shared machine with more runnable processes than cores, OpenMP
threads that spin at every barrier make the tiny per-step ops of generation 10-50x slower with 2 threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior  # noqa: E402
from vqaudio.sampling import generate, generate_naive, make_generator  # noqa: E402


def _time(fn) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(args: argparse.Namespace, n_q: int) -> float | None:
    """Time one configuration; returns the cached-vs-full-recompute speed-up (None with --skip-naive)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = WaveNetConfig(codebook_size=args.codebook_size, n_q=n_q, layers=args.layers, cycle=args.cycle)
    model = WaveNetPrior(cfg).eval()
    frames = args.tokens // n_q
    tokens = frames * n_q
    fps = args.sample_rate / args.hop
    print(f"\nprior: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, layers={cfg.layers}, "
          f"receptive field {model.receptive_field} frames, K={cfg.codebook_size}, n_q={n_q}; "
          f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"generating {tokens} tokens per sequence = {frames} frames x {n_q} = {frames / fps:.2f} s of audio "
          f"at {args.sample_rate} Hz / hop {args.hop} ({fps:.0f} frames/s, {fps * n_q:.0f} tokens/s real time)")
    generate(model, args.batch, 8, generator=make_generator(0))  # warm-up
    t_fast, fast = _time(lambda: generate(model, args.batch, frames, generator=make_generator(0)))
    tps = args.batch * tokens / t_fast
    print(f"cached:           {t_fast:7.2f} s  {tps:8.0f} tokens/s  {t_fast / frames * 1e3:7.3f} ms/frame  "
          f"real-time factor {args.batch * frames / fps / t_fast:5.1f}x (audio seconds per wall second)")
    torch.set_num_threads(1)
    t_one, _ = _time(lambda: generate(model, args.batch, frames, generator=make_generator(0)))
    torch.set_num_threads(args.threads)
    print(f"cached, 1 thread: {t_one:7.2f} s  {args.batch * tokens / t_one:8.0f} tokens/s  "
          f"{t_one / frames * 1e3:7.3f} ms/frame  real-time factor {args.batch * frames / fps / t_one:5.1f}x (for reference)")
    if args.extra_batch:
        t_b, _ = _time(lambda: generate(model, args.extra_batch, frames, generator=make_generator(0)))
        print(f"cached, batch {args.extra_batch}:  {t_b:7.2f} s  {args.extra_batch * tokens / t_b:8.0f} tokens/s  "
              f"real-time factor {args.extra_batch * frames / fps / t_b:5.1f}x (all sequences together)")
    if args.skip_naive:
        return None
    t_slow, slow = _time(lambda: generate_naive(model, args.batch, frames, generator=make_generator(0)))
    print(f"full recompute:   {t_slow:7.2f} s  {args.batch * tokens / t_slow:8.0f} tokens/s  "
          f"{t_slow / frames * 1e3:7.3f} ms/frame  real-time factor {args.batch * frames / fps / t_slow:5.2f}x")
    ratio = t_slow / t_fast
    print(f"speed-up cached vs full recompute ({args.threads} threads each): {ratio:.1f}x (target >= 20x; "
          f"{t_slow / t_one:.1f}x with the 1-thread cached time); identical tokens: {torch.equal(fast, slow)}")
    return ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--n-q", default="4,2", help="comma-separated quantiser levels per frame, one run each")
    ap.add_argument("--codebook-size", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--cycle", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1, help="sequences generated at once (both paths)")
    ap.add_argument("--extra-batch", type=int, default=8, help="also time the cached path on this many sequences (0: no)")
    ap.add_argument("--sample-rate", type=int, default=8000)
    ap.add_argument("--hop", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args(argv)
    ratios = {q: bench(args, q) for q in (int(v) for v in args.n_q.split(","))}
    if not args.skip_naive:
        print("\nsummary, speed-up at", ", ".join(f"n_q={q} ({args.tokens // q} frames): {r:.1f}x" for q, r in ratios.items()),
              "- the full recompute costs O(prefix) per frame, the cache O(layers): the ratio grows with the frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
