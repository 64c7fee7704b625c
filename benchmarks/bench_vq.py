"""One EMA vector-quantiser training step: vqaudio.VectorQuantizer against vector_quantize_pytorch.

Prints, for one run on this machine (2 threads by default):
  * ms per train step (forward + backward) at B=32, T=512, D=64, K=1024 of
    ``vqaudio.quantize.VectorQuantizer`` and ``vector_quantize_pytorch.VectorQuantize`` with the
    same settings (EMA, decay 0.99, eps 1e-5, beta / commitment weight 0.25, no k-means, no dead-code
    restarts, the same codebook copied in), and the ratio. Steps are timed in interleaved rounds
    (each round times one step of each) and the ratio is the median of per-round ratios, so load
    from other processes affects both sides alike;
  * index agreement of the two for the same codebook and input (mismatches, and the largest gap
    between the two chosen codes' distances: near-ties only if it is ~1e-6 relative);
  * the nearest-code kernel used (``vqaudio.ops.KERNEL``);
  * training throughput of a small VQ-VAE (``vqaudio.models.vqvae``, 8 kHz, hop 32): seconds of
    audio per second of wall time.

    python benchmarks/bench_vq.py [--threads 2] [--rounds 5] [--quick]

On a shared, oversubscribed machine set OMP_WAIT_POLICY=PASSIVE (both methods run in the same
process, so it applies to both): with the default spinning policy every parallel region waits for
descheduled threads, which swamps the small ops of a quantiser step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import median, set_threads, time_ms  # noqa: E402

import vqaudio.ops  # noqa: E402
from vqaudio.quantize import VectorQuantizer  # noqa: E402

B, T, D, K = 32, 512, 64, 1024
SETTINGS = dict(beta=0.25, decay=0.99, eps=1e-5)


def make_pair(seed: int = 0):
    """vqaudio and vector_quantize_pytorch quantisers with the same settings and codebook."""
    from vector_quantize_pytorch import VectorQuantize

    torch.manual_seed(seed)
    ours = VectorQuantizer(D, K, ema=True, dead_threshold=0.0, kmeans_init=False, **SETTINGS)
    ref = VectorQuantize(
        dim=D,
        codebook_size=K,
        decay=SETTINGS["decay"],
        eps=SETTINGS["eps"],
        commitment_weight=SETTINGS["beta"],
        kmeans_init=False,
        threshold_ema_dead_code=0,
    )
    with torch.no_grad():
        ref._codebook.embed.copy_(ours.codebook[None])
        ref._codebook.embed_avg.copy_(ours.codebook[None])  # cluster_size starts at 1: avg = embed
    return ours, ref


def step_ours(vq: VectorQuantizer, z: torch.Tensor) -> None:
    z = z.detach().requires_grad_(True)
    out = vq(z)
    (out.quantized.square().mean() + out.loss).backward()


def step_ref(vq, x: torch.Tensor) -> None:
    x = x.detach().requires_grad_(True)
    quantized, _, loss = vq(x)
    (quantized.square().mean() + loss).backward()


def bench_step(rounds: int) -> None:
    ours, ref = make_pair()
    ours.train(), ref.train()
    z = torch.randn(B, D, T)
    x = z.transpose(1, 2).contiguous()  # vector_quantize_pytorch wants [B, T, D]
    x_rows = z.transpose(1, 2).reshape(-1, D).contiguous()
    step_ours(ours, z), step_ref(ref, x)  # warm-up
    wall: dict[str, list[float]] = {"ours": [], "ref": [], "op": []}
    cpu: dict[str, list[float]] = {"ours": [], "ref": [], "op": []}
    calls = {
        "ours": lambda: step_ours(ours, z),
        "ref": lambda: step_ref(ref, x),
        "op": lambda: vqaudio.ops.nearest_code(x_rows, ours.codebook),
    }
    for _ in range(rounds):
        for name, fn in calls.items():
            c0 = time.process_time()
            wall[name] += time_ms(fn, repeats=1, warmup=0)
            cpu[name].append((time.process_time() - c0) * 1e3)
    ratio = statistics.median(r / o for o, r in zip(wall["ours"], wall["ref"], strict=True))
    ratio_cpu = statistics.median(r / o for o, r in zip(cpu["ours"], cpu["ref"], strict=True))
    print(f"\nEMA VQ train step (fwd + bwd), B={B} T={T} D={D} K={K}, {rounds} interleaved rounds")
    print(f"  {'method':<34}{'wall ms (median)':>18}{'min':>9}{'CPU ms (median)':>17}")
    names = {
        "ours": "vqaudio VectorQuantizer",
        "ref": "vector_quantize_pytorch",
        "op": "(vqaudio nearest_code op alone)",
    }
    for key, label in names.items():
        print(f"  {label:<34}{median(wall[key]):>18.1f}{min(wall[key]):>9.1f}{median(cpu[key]):>17.1f}")
    print(
        f"  speed-up vqaudio vs vector_quantize_pytorch: {ratio:.1f}x wall, {ratio_cpu:.1f}x CPU time "
        "(medians of per-round ratios; target >= 8x)"
    )


def check_indices() -> None:
    ours, ref = make_pair(seed=1)
    ours.eval(), ref.eval()
    z = torch.randn(B, D, T)
    with torch.no_grad():
        idx_ours = ours.encode(z).flatten()
        idx_ref = ref(z.transpose(1, 2).contiguous())[1].flatten()
    x = z.transpose(1, 2).reshape(-1, D).double()
    e = ours.codebook.double()
    mismatch = (idx_ours != idx_ref).nonzero().flatten()
    gap = 0.0
    if mismatch.numel():
        d_ours = (x[mismatch] - e[idx_ours[mismatch]]).square().sum(1)
        d_ref = (x[mismatch] - e[idx_ref[mismatch]]).square().sum(1)
        gap = float(((d_ref - d_ours) / d_ours.clamp_min(1e-12)).abs().max())
    print(f"\nindex agreement on the same codebook and input ({idx_ours.numel()} vectors):")
    print(f"  mismatches: {mismatch.numel()}; largest relative distance gap at a mismatch: {gap:.2e}")


def bench_vqvae(budget_s: float) -> None:
    try:
        from vqaudio.models.vqvae import VQVAE, VQVAEConfig
    except ImportError as err:
        print(f"\nVQ-VAE training throughput: skipped ({err})")
        return
    torch.manual_seed(0)
    config = VQVAEConfig(kind="audio", sample_rate=8000, strides=[2, 4, 4])
    model = VQVAE(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    batch, seconds = 4, 1.0
    wav = 0.3 * torch.randn(batch, 1, int(seconds * config.sample_rate))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        model(wav).loss.backward()
        opt.step()

    t0 = time.perf_counter()
    times = time_ms(train_step, repeats=10, warmup=1, budget_s=budget_s)
    audio_s = batch * seconds
    print(
        f"\nVQ-VAE training throughput (8 kHz, hop {model.hop}, n_q {config.n_q}, K {config.codebook_size}, "
        f"batch {batch} x {seconds:g} s, AdamW; {len(times)} steps after 1 warm-up, "
        f"{time.perf_counter() - t0:.0f} s)"
    )
    print(f"  {median(times):.0f} ms/step -> {audio_s / (median(times) / 1e3):.1f} s of audio per s of wall time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds and a short VQ-VAE run")
    args = parser.parse_args()
    set_threads(args.threads)
    rounds = 3 if args.quick else args.rounds
    load, policy = os.getloadavg()[0], os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"vqaudio nearest-code kernel: {vqaudio.ops.KERNEL} ({vqaudio.ops.KERNEL_REASON}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at start, OMP_WAIT_POLICY={policy}"
    )
    if load > (os.cpu_count() or 1) and policy.upper() != "PASSIVE":
        print(
            "note: the machine is oversubscribed; spinning OpenMP threads then dominate small ops. "
            "For numbers that reflect the work done, rerun with OMP_WAIT_POLICY=PASSIVE or --threads 1."
        )
    bench_step(rounds)
    check_indices()
    bench_vqvae(budget_s=5.0 if args.quick else 15.0)


if __name__ == "__main__":
    main()
