"""Every vqaudio quantiser against its vector-quantize-pytorch counterpart: train-step time and peak memory.

Speed: one training step (forward, then backward of the quantised output with a fixed upstream gradient,
as a decoder would send, together with the quantiser's own loss) at B=32, T=512, D=64, K=1024 (FSQ: levels 8,5,5,5 = 1000 codes), channels-first ``[B, D, T]`` input on both sides, the same
settings on both sides (listed per row below). Steps are timed in interleaved rounds (each round
times one step of every method, after an untimed step of both sides of that row so that neither
pays for the previous row's allocations, the side that goes first alternating) and each ratio is
the median of per-round ratios, so load from other processes affects both sides alike.
Targets: >= 5x for VQ with the rotation trick, low-dim or cosine codes, and SimVQ; >= 2x for FSQ and LFQ.

Memory (``--memory``): the peak resident memory one training step adds, at N = B * T = 2^20 frames,
each side in its own subprocess (VmHWM after clearing it, minus the resident memory before the
step). The peer runs under an address-space cap (``--memory-cap-gib``, default 8): a step that needs
more fails and is reported as more than the cap, so the ratio is then a lower bound.

    python benchmarks/bench_quantizers.py [--threads 2] [--rounds 5] [--only vq-rot,fsq] [--memory]

Set OMP_WAIT_POLICY=PASSIVE on a shared machine (see bench_vq.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _util import set_threads  # noqa: E402

import vqaudio.ops  # noqa: E402
from vqaudio.quantize import FSQ, LFQ, SimVQ, VectorQuantizer  # noqa: E402

B, T, D, K = 32, 512, 64, 1024
LEVELS = [8, 5, 5, 5]
COMMON = dict(decay=0.99, eps=1e-5)  # EMA settings of the VQ rows


def _ours(name: str) -> torch.nn.Module:
    """vqaudio's quantiser of row ``name`` (dead-code restarts and k-means off: the peers' defaults)."""
    vq = dict(beta=0.25, dead_threshold=0.0, **COMMON)
    return {
        "vq": lambda: VectorQuantizer(D, K, **vq),
        "vq-rot": lambda: VectorQuantizer(D, K, rotation_trick=True, **vq),
        "vq-lowdim": lambda: VectorQuantizer(D, K, codebook_dim=8, **vq),
        "vq-cosine": lambda: VectorQuantizer(D, K, l2_normalize=True, **vq),
        "vq-lowdim-cosine-rot": lambda: VectorQuantizer(D, K, codebook_dim=8, l2_normalize=True, rotation_trick=True, **vq),
        "simvq": lambda: SimVQ(D, K, beta=0.25, rotation_trick=True),
        "fsq": lambda: FSQ(LEVELS, dim=D, noise_dropout=0.0),  # the peer's default: no noise substitution
        "lfq": lambda: LFQ(D, K, entropy_loss_weight=0.1, beta=0.25),
        "bsq": lambda: LFQ(D, K, entropy_loss_weight=0.1, beta=0.25, spherical=True),
    }[name]()


def _theirs(name: str) -> torch.nn.Module:
    """vector-quantize-pytorch's counterpart of row ``name``, with the same settings."""
    import vector_quantize_pytorch as vqp

    vq = dict(dim=D, codebook_size=K, commitment_weight=0.25, kmeans_init=False, threshold_ema_dead_code=0,
              channel_last=False, **COMMON)
    return {
        "vq": lambda: vqp.VectorQuantize(**vq, rotation_trick=False),
        "vq-rot": lambda: vqp.VectorQuantize(**vq, rotation_trick=True),
        "vq-lowdim": lambda: vqp.VectorQuantize(**vq, codebook_dim=8, rotation_trick=False),
        "vq-cosine": lambda: vqp.VectorQuantize(**vq, use_cosine_sim=True, rotation_trick=False),
        "vq-lowdim-cosine-rot": lambda: vqp.VectorQuantize(**vq, codebook_dim=8, use_cosine_sim=True, rotation_trick=True),
        "simvq": lambda: vqp.SimVQ(dim=D, codebook_size=K, channel_first=True, rotation_trick=True),
        "fsq": lambda: vqp.FSQ(levels=LEVELS, dim=D, channel_first=True),
        "lfq": lambda: vqp.LFQ(dim=D, codebook_size=K, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                               channel_first=True),
        "bsq": lambda: vqp.LFQ(dim=D, codebook_size=K, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                               channel_first=True, spherical=True),
    }[name]()


ROWS = {  # name: (description, target ratio)
    "vq": ("EMA VQ, straight-through (reference row)", None),
    "vq-rot": ("EMA VQ, rotation trick", 5.0),
    "vq-lowdim": ("EMA VQ, codebook_dim 8 (learned maps)", 5.0),
    "vq-cosine": ("EMA VQ, l2_normalize / use_cosine_sim", 5.0),
    "vq-lowdim-cosine-rot": ("EMA VQ, dim 8 + cosine + rotation", 5.0),
    "simvq": ("SimVQ, rotation trick", 5.0),
    "fsq": ("FSQ 8,5,5,5 (1000 codes), maps 64<->4", 2.0),
    "lfq": ("LFQ 2^10, entropy 0.1, commit 0.25, maps", 2.0),
    "bsq": ("LFQ spherical (BSQ), same", 2.0),
}


def _step(module: torch.nn.Module, z: torch.Tensor, ours: bool) -> Callable[[], None]:
    """One training step of ``module`` on ``z [B, D, T]``: forward, then backward of the quantised output with a
    fixed upstream gradient (what the decoder would send) together with the quantiser's own loss."""
    upstream = torch.randn(z.shape, generator=torch.Generator().manual_seed(1)) / z.numel()

    def step() -> None:
        x = z.detach().requires_grad_(True)
        out = module(x)
        if ours:
            quantized, loss = out.quantized, out.loss
        else:
            quantized, loss = out[0], (out[2] if len(out) > 2 else None)
        losses = [loss] if isinstance(loss, torch.Tensor) and loss.requires_grad else []
        torch.autograd.backward([quantized, *losses], [upstream, *(torch.ones(()) for _ in losses)])

    return step


def bench_speed(names: list[str], rounds: int) -> list[dict]:
    torch.manual_seed(0)
    z = torch.randn(B, D, T)
    calls = {}
    for name in names:
        ours, theirs = _ours(name).train(), _theirs(name).train()
        calls[name] = (_step(ours, z, True), _step(theirs, z, False))
        for fn in calls[name]:
            fn()  # warm-up
    wall = {name: ([], []) for name in names}
    cpu = {name: ([], []) for name in names}
    for r in range(rounds):
        for name, fns in calls.items():
            for fn in fns:  # untimed: the allocator holds this row's buffers again, not the last row's
                fn()
            for side in (0, 1) if r % 2 == 0 else (1, 0):  # alternate which side goes first
                fn = fns[side]
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                wall[name][side].append((time.perf_counter() - t0) * 1e3)
                cpu[name][side].append((time.process_time() - c0) * 1e3)
    rows = []
    for name in names:
        (o, t), (oc, tc) = wall[name], cpu[name]
        rows.append({"name": name, "ours_ms": statistics.median(o), "theirs_ms": statistics.median(t),
                     "ratio": statistics.median(b / a for a, b in zip(o, t, strict=True)),
                     "ours_cpu_ms": statistics.median(oc), "theirs_cpu_ms": statistics.median(tc),
                     "cpu_ratio": statistics.median(b / a for a, b in zip(oc, tc, strict=True)), "target": ROWS[name][1]})
    return rows


def _memory_child(name: str, side: str, n: int, cap_gib: float) -> None:
    """Subprocess: peak extra resident MiB of one training step at ``n`` frames (printed as JSON)."""
    import resource

    torch.manual_seed(0)
    module = (_ours if side == "ours" else _theirs)(name).train()
    z = torch.randn(n // T, D, T)
    _step(module, z[:2], side == "ours")()  # warm-up: thread pools, allocator arenas
    step = _step(module, z, side == "ours")  # its upstream gradient is allocated before the baseline

    def status(field: str) -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) * 1024

    if side == "theirs" and cap_gib > 0:
        cap = status("VmSize:") + int(cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS:")
    result = {"name": name, "side": side, "n": n}
    t0 = time.perf_counter()
    try:
        step()
        result["peak_mib"] = (status("VmHWM:") - base) / 2**20
    except (RuntimeError, MemoryError) as err:
        result["failed"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result))


def bench_memory(names: list[str], n: int, cap_gib: float, threads: int, timeout: float) -> list[dict]:
    rows = []
    for name in names:
        row = {"name": name}
        for side in ("ours", "theirs"):
            cmd = [sys.executable, __file__, "--threads", str(threads), "--memory-child", name, side, str(n),
                   "--memory-cap-gib", str(cap_gib)]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
                row[side] = json.loads(lines[-1]) if lines else {"failed": (res.stderr.strip().splitlines() or ["?"])[-1]}
            except subprocess.TimeoutExpired:
                row[side] = {"failed": f"timed out after {timeout:.0f} s"}
            print(f"  {name} {side}: {row[side]}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="comma-separated rows (default all): " + ",".join(ROWS))
    parser.add_argument("--memory", action="store_true", help="also measure peak memory at --memory-n frames")
    parser.add_argument("--memory-n", type=int, default=2**20)
    parser.add_argument("--memory-cap-gib", type=float, default=8.0)
    parser.add_argument("--memory-timeout", type=float, default=600.0, help="seconds per subprocess")
    parser.add_argument("--memory-child", nargs=3, metavar=("NAME", "SIDE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    set_threads(args.threads)
    if args.memory_child:
        name, side, n = args.memory_child
        _memory_child(name, side, int(n), args.memory_cap_gib)
        return
    names = args.only.split(",") if args.only else list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"bench_quantizers.py: unknown rows {unknown}; choose from {list(ROWS)}")
    from importlib.metadata import version

    load, policy = os.getloadavg()[0], os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"vqaudio kernel {vqaudio.ops.KERNEL}; vector-quantize-pytorch {version('vector-quantize-pytorch')}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {load:.1f}, "
          f"OMP_WAIT_POLICY={policy}")
    speed = bench_speed(names, args.rounds)
    print(f"\nTrain step (fwd + bwd), B={B} T={T} D={D} K={K}, {args.rounds} interleaved rounds; ratios = medians of "
          "per-round (peer time / vqaudio time), wall clock and process CPU time; targets judged on wall clock")
    print(f"  {'row':<22}{'setting':<42}{'vqaudio ms':>11}{'peer ms':>9}{'wall':>7}{'CPU':>7}{'target':>8}")
    for r in speed:
        target = f">={r['target']:g}x" if r["target"] else "-"
        met = "" if not r["target"] else (" met" if r["ratio"] >= r["target"] else " NOT met")
        print(f"  {r['name']:<22}{ROWS[r['name']][0]:<42}{r['ours_ms']:>11.1f}{r['theirs_ms']:>9.1f}"
              f"{r['ratio']:>6.1f}x{r['cpu_ratio']:>6.1f}x{target:>8}{met}")
    results = {"speed": speed}
    if args.memory:
        print(f"\nPeak extra memory of one train step at N = {args.memory_n} frames (peer capped at "
              f"{args.memory_cap_gib:g} GiB of address space)", flush=True)
        memory = bench_memory(names, args.memory_n, args.memory_cap_gib, args.threads, args.memory_timeout)
        print(f"  {'row':<22}{'vqaudio MiB':>12}{'peer MiB':>12}{'ratio':>9}")
        for row in memory:
            o, t = row["ours"], row["theirs"]
            ours = f"{o['peak_mib']:.0f}" if "peak_mib" in o else "failed"
            if "peak_mib" in t:
                theirs, ratio = f"{t['peak_mib']:.0f}", f"{t['peak_mib'] / o['peak_mib']:.1f}x" if "peak_mib" in o else "-"
            else:
                theirs = f"> {args.memory_cap_gib * 1024:.0f}"
                ratio = f">{args.memory_cap_gib * 1024 / o['peak_mib']:.1f}x" if "peak_mib" in o else "-"
            print(f"  {row['name']:<22}{ours:>12}{theirs:>12}{ratio:>9}")
        results["memory"] = memory
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
