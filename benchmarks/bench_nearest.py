"""Nearest-codebook search: vqaudio's fused kernel against FAISS IndexFlatL2 (k=1) and naive torch.

Prints, for one run on this machine (2 threads by default):
  * the standard shape N=65536, K=1024, D=64 fp32: ms per call of each method, the ratio
    vqaudio / FAISS, and achieved GFLOP/s (2·N·K·D per call) against the sgemm rate measured in the
    same run (torch.mm, same shape and a large square one);
  * a sweep of shapes with the vqaudio / FAISS ratio each;
  * peak extra memory (RSS high-water mark above the inputs, in a fresh process) at N=1,000,000.

Methods are timed in interleaved rounds (each round runs every method once) and the ratio is the
median of per-round ratios, so load from other processes affects both sides of each ratio alike.

    python benchmarks/bench_nearest.py [--threads 2] [--rounds 9] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

import vqaudio.ops

STANDARD = (65536, 1024, 64)
SWEEP = [(65536, 256, 32), (65536, 512, 64), (16384, 4096, 64), (16384, 1024, 256), (8192, 8192, 128),
         (65536, 1024, 16), (65536, 1024, 3), (100000, 64, 64), (4096, 1024, 67), (1000, 2, 1)]


def naive(x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The usual torch expression: ||x||² − 2 x·eᵀ + ||e||² (materialises N×K), then argmin."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ e.T + (e * e).sum(1)
    best, idx = d.min(1)
    return idx, best


def methods(x: torch.Tensor, e: torch.Tensor) -> dict:
    import faiss

    index = faiss.IndexFlatL2(e.shape[1])
    index.add(e.numpy())
    xn = x.numpy()
    return {
        "vqaudio": lambda: torch.ops.vqaudio.nearest_code(x, e),
        "faiss": lambda: index.search(xn, 1),
        "naive_torch": lambda: naive(x, e),
    }


def timed_rounds(fns: dict, rounds: int) -> dict[str, list[float]]:
    for f in fns.values():
        f()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times: dict, a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def check_agreement(x: torch.Tensor, e: torch.Tensor, fns: dict) -> str:
    idx, _ = fns["vqaudio"]()
    _, fi = fns["faiss"]()
    differ = int((idx.numpy() != fi[:, 0]).sum())
    return f"{differ} of {len(idx)} rows differ from FAISS (near-ties)"


def memory_child(method: str, n: int, k: int, d: int) -> None:
    """Run one method once in this process and print its peak RSS above the inputs, in MiB."""
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    fn = methods(x, e)[method]
    fn_small = methods(x[:4096].clone(), e)[method]
    fn_small()  # load libraries and thread pools before the baseline

    def rss(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    base = rss("VmRSS:")
    out = fn()
    peak = rss("VmHWM:")
    del out
    print(f"{(peak - base) / 1024:.1f}")


def peak_extra_mib(method: str, n: int, k: int, d: int, threads: int) -> str:
    cmd = [sys.executable, __file__, "--memory-child", method, "--shape", f"{n},{k},{d}", "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return res.stdout.strip().splitlines()[-1] if res.returncode == 0 else f"failed: {res.stderr.strip()[-200:]}"


def sgemm_gflops(m: int, n: int, k: int, rounds: int) -> float:
    a, b = torch.randn(m, k), torch.randn(n, k)
    t = timed_rounds({"mm": lambda: a @ b.T}, rounds)["mm"]
    return 2 * m * n * k / statistics.median(t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and sweep shapes")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    args = ap.parse_args()

    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, *map(int, args.shape.split(",")))
        return

    rounds = 3 if args.quick else args.rounds
    print(f"vqaudio kernel: {vqaudio.ops.KERNEL} ({torch.ops.vqaudio.cpu_isa() if vqaudio.ops.KERNEL == 'compiled' else 'reference'}), "
          f"threads: {args.threads}, torch {torch.__version__}, faiss {faiss.__version__}")

    n, k, d = STANDARD
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    fns = methods(x, e)
    fns["sgemm_same_shape"] = lambda: x @ e.T
    times = timed_rounds(fns, rounds)
    flops = 2 * n * k * d
    square = sgemm_gflops(2048, 2048, 2048, rounds)
    print(f"\nstandard shape N={n} K={k} D={d} fp32 ({check_agreement(x, e, fns)})")
    print(f"{'method':<18}{'ms/call':>10}{'GFLOP/s':>10}{'× FAISS time':>14}")
    for name in fns:
        ms = statistics.median(times[name]) * 1e3
        print(f"{name:<18}{ms:>10.1f}{flops / ms / 1e6:>10.1f}{ratio(times, name, 'faiss'):>14.2f}")
    vq_gflops = flops / statistics.median(times["vqaudio"]) / 1e9
    print(f"vqaudio / FAISS time: {ratio(times, 'vqaudio', 'faiss'):.2f}  (target <= 0.70)")
    print(f"vqaudio GFLOP/s / sgemm GFLOP/s, same shape: {1 / ratio(times, 'vqaudio', 'sgemm_same_shape'):.2f}; "
          f"/ square 2048³ sgemm ({square:.0f} GFLOP/s): {vq_gflops / square:.2f}  (target >= 0.85)")

    print(f"\nsweep ({'quick' if args.quick else 'full'}): vqaudio / FAISS time, median of {rounds} interleaved rounds")
    print(f"{'N':>8}{'K':>6}{'D':>5}{'vqaudio ms':>12}{'faiss ms':>10}{'ratio':>8}")
    sweep = SWEEP[:4] if args.quick else SWEEP
    for n2, k2, d2 in sweep:
        xs, es = torch.randn(n2, d2, generator=g), torch.randn(k2, d2, generator=g)
        f2 = methods(xs, es)
        f2.pop("naive_torch")
        t2 = timed_rounds(f2, rounds)
        print(f"{n2:>8}{k2:>6}{d2:>5}{statistics.median(t2['vqaudio']) * 1e3:>12.2f}"
              f"{statistics.median(t2['faiss']) * 1e3:>10.2f}{ratio(t2, 'vqaudio', 'faiss'):>8.2f}")

    big = (1_000_000, 1024, 64)
    print(f"\npeak extra memory at N={big[0]}, K={big[1]}, D={big[2]} (outputs: 12 MB of indices + dist2 included)")
    for name in ("vqaudio", "faiss", "naive_torch"):
        print(f"{name:<18}{peak_extra_mib(name, *big, args.threads):>10} MiB")


if __name__ == "__main__":
    main()
