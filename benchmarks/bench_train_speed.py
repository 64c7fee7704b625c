"""Training throughput of a speech VQ-VAE step on the CPU, per option, as ratios against fp32 eager in the same run.

    .venv/bin/python benchmarks/bench_train_speed.py [--model speech-8k] [--batch 16] [--segment 8192] [--steps 6]
                                                     [--rounds 3] [--options eager,bf16,compile,threads1]

One training step is exactly what ``vqaudio train`` runs: the VQ-VAE forward with its losses, backward, gradient
clipping and an AdamW step, on real speech crops (the asterisk prompts, augmented as the speech8k recipe does).
Options (each measured on a fresh copy of the same model and batch; rounds interleave them, the median is kept):

- ``eager``: float32, the default (the reference of every ratio);
- ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the forward and losses (AVX512-BF16 CPUs);
- ``compile``: ``torch.compile`` of the encoder and the decoder (a whole-model graph fails in backward: the EMA
  codebook update in the forward modifies a tensor saved for the backward); the first steps, compiling, are not
  timed;
- ``threads1``: float32 eager on one thread instead of all of them;
- ``loader``: the cost of making one batch of augmented crops on the training thread, as a share of a step
  (what moving data loading off the training thread could save at most).

It also prints the loss of each option on the same batch: bf16 and compile must stay close to float32.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqaudio.augment import AugmentConfig  # noqa: E402
from vqaudio.checkpoint import load_model  # noqa: E402
from vqaudio.data import AudioCrops  # noqa: E402
from vqaudio.registry import resolve  # noqa: E402

SPEECH = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
AUGMENT = AugmentConfig(p_gain=0.5, p_eq=0.5, p_telephone=0.15, p_reverb=0.2, p_noise=0.3)


def crops(batch: int, segment: int, sample_rate: int) -> tuple[AudioCrops, torch.Tensor]:
    files = sorted(SPEECH.glob("*.wav"))[:200]
    if not files:
        raise SystemExit(f"bench_train_speed: no speech under {SPEECH} (apt-get install asterisk-core-sounds-en-wav)")
    data = AudioCrops(files, sample_rate, segment, seed=0, augment=AUGMENT)
    return data, torch.stack([data.sample(i, 0) for i in range(batch)])


def make_step(model: torch.nn.Module, option: str):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    if option == "compile":  # the conv stacks, in place (same state-dict keys); the quantiser's in-place EMA
        model.encoder.compile()  # updates break a whole-model graph
        model.decoder.compile()
    net = model

    def step(x: torch.Tensor) -> float:
        if option == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = net(x).loss
        else:
            loss = net(x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="speech-8k")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--segment", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per option and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--options", default="eager,bf16,compile,threads1,loader")
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    base = load_model(resolve(args.model)[1])
    base.train()
    data, x = crops(args.batch, args.segment, base.config.sample_rate)
    options = args.options.split(",")
    steps = {o: make_step(copy.deepcopy(base), o) for o in options if o != "loader"}
    losses = {}
    for o, s in steps.items():  # warm-up (and compilation), and the loss on the same batch with the same draws
        torch.manual_seed(0)  # quantiser dropout draws its levels from the global generator
        losses[o] = s(x)
    for s in steps.values():
        s(x)
    times: dict[str, list[float]] = {o: [] for o in options}
    for _ in range(args.rounds):
        for o in options:
            torch.set_num_threads(1 if o == "threads1" else threads)
            t0 = time.perf_counter()
            if o == "loader":
                for i in range(args.steps):
                    torch.stack([data.sample(j, i + 1) for j in range(args.batch)])
            else:
                for _ in range(args.steps):
                    steps[o](x)
            times[o].append((time.perf_counter() - t0) / args.steps)
    torch.set_num_threads(threads)
    ref = statistics.median(times["eager"]) if "eager" in times else float("nan")
    print(f"model {args.model}, batch {args.batch} x {args.segment} samples, {threads} threads, {args.steps} steps x "
          f"{args.rounds} rounds (median)")
    print(f"{'option':<10} {'s/step':>8} {'steps/s':>8} {'vs eager':>9} {'loss':>9}")
    for o in options:
        t = statistics.median(times[o])
        loss = f"{losses[o]:9.4f}" if o in losses else f"{'-':>9}"
        label = "share" if o == "loader" else "x"
        print(f"{o:<10} {t:8.3f} {1 / t:8.2f} {ref / t if o != 'loader' else t / ref:8.2f}{label[0]} {loss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
