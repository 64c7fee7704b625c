"""Nearest-codebook search on a CUDA GPU: vqaudio's fused kernel against the peers in plain torch.

    python benchmarks/bench_nearest_cuda.py [--rounds 20]

For each shape (N latents of dimension D against K codes): vqaudio ``nearest_code`` (forward, and
forward + backward of ``dist2``), against the expansion ``||x||² - 2 x·e + ||e||²`` with one matmul
and ``argmin`` (what most VQ libraries do; it materialises the N×K distances) and ``torch.cdist``
+ ``argmin``. Times are medians of CUDA-event timings; peak memory is what each adds on top of its
inputs. Prints ratios against the peers measured in the same run, and whether the indices agree.
Needs a GPU and a ``vqaudio._C`` built with the CUDA kernel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqaudio import ops  # noqa: E402

SHAPES = [(16384, 256, 64), (65536, 1024, 64), (262144, 1024, 128), (65536, 8192, 256), (1048576, 1024, 64)]


def matmul_argmin(x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = x.pow(2).sum(1, keepdim=True) - 2 * x @ e.t() + e.pow(2).sum(1)
    dist2, idx = d.min(1)
    return idx, dist2


def cdist_argmin(x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist2, idx = torch.cdist(x, e).min(1)
    return idx, dist2.square()


def forward_backward(search, x: torch.Tensor, e: torch.Tensor) -> None:
    """``search(x, e)`` and the backward of its ``dist2`` (the commitment/codebook gradient)."""
    search(x, e)[1].sum().backward()


def timed(fn, rounds: int) -> tuple[float, float]:
    """(median ms, peak extra MiB) of ``fn()`` on the current device."""
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(rounds):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_nearest_cuda: no CUDA device", file=sys.stderr)
        return 2
    if not ops.has_cuda_kernel():
        print("bench_nearest_cuda: vqaudio._C has no CUDA kernel (build with VQAUDIO_CUDA=1)", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; float32; median of {args.rounds} rounds")
    print(f"{'N':>8} {'K':>5} {'D':>4} | {'vqaudio':>9} {'matmul':>9} {'cdist':>9} | {'x matmul':>8} {'x cdist':>8} | "
          f"{'MiB vq':>7} {'MiB mm':>7} | {'fwd+bwd':>8} {'x matmul':>8} | same idx")
    for n, k, d in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(n, d, device="cuda", generator=g)
        e = torch.randn(k, d, device="cuda", generator=g)
        t_vq, m_vq = timed(partial(ops.nearest_code, x, e), args.rounds)
        t_mm, m_mm = timed(partial(matmul_argmin, x, e), args.rounds)
        t_cd, _ = timed(partial(cdist_argmin, x, e), args.rounds)
        xg, eg = x.clone().requires_grad_(True), e.clone().requires_grad_(True)
        t_vqb, _ = timed(partial(forward_backward, ops.nearest_code, xg, eg), args.rounds)
        t_mmb, _ = timed(partial(forward_backward, matmul_argmin, xg, eg), args.rounds)
        same = (ops.nearest_code(x, e)[0] == matmul_argmin(x, e)[0]).float().mean().item()
        print(f"{n:>8} {k:>5} {d:>4} | {t_vq:7.3f}ms {t_mm:7.3f}ms {t_cd:7.3f}ms | {t_mm / t_vq:7.2f}x {t_cd / t_vq:7.2f}x | "
              f"{m_vq:7.1f} {m_mm:7.1f} | {t_vqb:6.3f}ms {t_mmb / t_vqb:7.2f}x | {same:.4f}")
    print("x matmul / x cdist: the peer's time over vqaudio's (above 1: vqaudio is faster); same idx: share of rows where "
          "vqaudio and the matmul expansion pick the same code (float32 rounding of the expansion can flip near-ties)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
