"""Speech quality of each quantiser in the same small VQ-VAE: short runs, same bitrate, same steps and seed.

For every quantiser row the same 8 kHz speech VQ-VAE (hop 32: 250 frames/s; one stage of ~1024 codes,
about 2.5 kbit/s) is trained by ``vqaudio.train.train_vqvae`` (the code behind ``vqaudio train``) for
``--steps`` steps with the same data, crops, schedule and seed; then the held-out prompts of the
asterisk recipe that are installed are coded and scored by ``vqaudio.report.evaluate`` (the code behind
``vqaudio eval``): PESQ-NB, STOI, log-mel distance, and the codebook usage and perplexity of their
codes. Usage is also counted over the codes of ``--usage-files`` training prompts coded by the final
model (far more frames than codes, unlike a batch or the few held-out prompts). Training data: the
English and Italian asterisk prompts (``$ASTERISK/en``, ``$ASTERISK/it``) that are not held out.

    python benchmarks/bench_quantizer_quality.py [--steps 400] [--only vq,fsq] [--out DIR] [--json OUT]

Short runs rank quantisers early in training; they are not converged models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared machines)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqaudio.codec import load_codec  # noqa: E402
from vqaudio.io import load_audio  # noqa: E402
from vqaudio.metrics import codebook_stats  # noqa: E402
from vqaudio.models import VQVAEConfig  # noqa: E402
from vqaudio.report import evaluate  # noqa: E402
from vqaudio.train import TrainConfig, train_vqvae  # noqa: E402

MODEL = dict(kind="audio", sample_rate=8000, hidden=16, max_hidden=64, dim=64, strides=[2, 4, 4], n_q=1,
             codebook_size=1024, activation="elu", logmag_weight=0.0)
ROWS = {  # name: (description, quantiser options)
    "vq": ("VQ, EMA, k-means init, restarts", {}),
    "vq-rot": ("VQ + rotation trick", {"rotation_trick": True}),
    "vq-lowdim-cosine": ("VQ, codebook_dim 8, l2-normalised", {"codebook_dim": 8, "l2_normalize": True}),
    "vq-lowdim-cosine-rot": ("VQ, dim 8, l2, rotation trick", {"codebook_dim": 8, "l2_normalize": True,
                                                                "rotation_trick": True}),
    "fsq": ("FSQ 8,5,5,5 (1000 codes)", {"quantizer": "fsq", "levels": [8, 5, 5, 5], "codebook_size": 1000}),
    "fsq-no-noise": ("FSQ 8,5,5,5, noise_dropout 0", {"quantizer": "fsq", "levels": [8, 5, 5, 5], "codebook_size": 1000,
                                                      "noise_dropout": 0.0}),
    "lfq": ("LFQ 2^10, entropy 0.1", {"quantizer": "lfq"}),
    "bsq": ("LFQ spherical (BSQ)", {"quantizer": "lfq", "spherical": True}),
    "bsq-t10": ("BSQ, inv_temperature 10", {"quantizer": "lfq", "spherical": True, "inv_temperature": 10.0}),
    "simvq": ("SimVQ + rotation trick", {"quantizer": "simvq", "rotation_trick": True}),
    "simvq-ste": ("SimVQ, straight-through", {"quantizer": "simvq"}),
}
METRICS = ("pesq_nb", "stoi", "log_mel")


def data_files(asterisk: Path, manifest: Path) -> tuple[list[Path], list[str]]:
    """Write the training manifest (en + it prompts not held out); return the installed held-out prompts."""
    held = [ln.strip() for ln in (ROOT / "recipes/asterisk/conf/heldout.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    heldout = [n for n in held if (asterisk / n).is_file()]
    held_paths = {(asterisk / n).resolve() for n in held if (asterisk / n).exists()}
    train = sorted({p.resolve() for lang in ("en", "it") for p in (asterisk / lang).rglob("*.wav")} - held_paths)
    if not train or not heldout:
        sys.exit(f"bench_quantizer_quality: no speech under {asterisk}/en and {asterisk}/it (asterisk-core-sounds-*-wav)")
    manifest.write_text("".join(f"{p}\n" for p in train))
    return [asterisk / n for n in heldout], heldout


def run_row(name: str, args, manifest: Path, files: list[Path], names: list[str]) -> dict:
    exp = args.out / name
    config = VQVAEConfig(**{**MODEL, **ROWS[name][1]})
    train = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.steps // 10,
                        schedule="cosine", valid_every=args.steps, valid_batches=2, checkpoint_every=args.steps,
                        log_every=max(1, args.steps // 20), seed=args.seed, progress=False, device="cpu")
    t0 = time.perf_counter()
    train_vqvae(str(manifest), exp, config, train, segment=args.segment, valid_fraction=0.05, plots=False)
    seconds = time.perf_counter() - t0
    log = [json.loads(ln) for ln in (exp / "log.jsonl").read_text().splitlines() if ln.strip()]
    last_train = [r for r in log if "usage" in r and "pesq_nb" not in r][-1]
    codec = load_codec(exp / "last")
    result = evaluate(codec, files, names, n_qs=[1], baselines=(), metrics=METRICS, keep=False)
    system = result["systems"]["vqaudio n_q=1"]
    counts = torch.zeros(1, config.codebook_size, dtype=torch.int64)
    for path in manifest.read_text().splitlines()[:: max(1, n_lines(manifest) // args.usage_files)][: args.usage_files]:
        wav, sr = load_audio(path)
        counts[0] += torch.bincount(codec.encode(wav, sr).codes.reshape(-1), minlength=config.codebook_size)
    usage = codebook_stats(counts)
    return {"name": name, "setting": ROWS[name][0], "config": config.to_dict(), "train_seconds": seconds,
            "codebook_size": config.codebook_size, "nominal_bitrate": codec.bitrate(1), "payload_bitrate": system["bitrate"],
            **{m: system["mean"][m] for m in METRICS}, "heldout_usage": result["codebook"]["usage"][0],
            "heldout_perplexity": result["codebook"]["perplexity"][0], "heldout_frames": sum(result["codebook"]["counts"][0]),
            "train_usage": usage["usage"][0], "train_perplexity": usage["perplexity"][0], "train_frames": int(counts.sum()),
            "usage_last_batch": last_train["usage"]}


def n_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--segment", type=int, default=4096, help="training crop in samples")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--usage-files", type=int, default=200, help="training prompts coded for the usage count")
    ap.add_argument("--only", help="comma-separated rows (default all): " + ",".join(ROWS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/vqaudio-quantizer-quality"), help="experiment folders")
    ap.add_argument("--asterisk", type=Path, default=Path(os.environ.get("ASTERISK", "/usr/share/asterisk/sounds")))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names_ = args.only.split(",") if args.only else list(ROWS)
    if any(n not in ROWS for n in names_):
        sys.exit(f"bench_quantizer_quality: unknown rows; choose from {list(ROWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    files, names = data_files(args.asterisk, args.out / "train.txt")
    n_train = len((args.out / "train.txt").read_text().splitlines())
    print(f"{n_train} training files, {len(files)} held-out prompts; {args.steps} steps of {args.batch_size} x "
          f"{args.segment} samples, lr {args.lr}, seed {args.seed}, {torch.get_num_threads()} thread(s)", flush=True)
    rows = []
    for name in names_:
        row = run_row(name, args, args.out / "train.txt", files, names)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nusage / perplexity: over {rows[0]['train_frames']} frames of training prompts; held-out: "
          f"{rows[0]['heldout_frames']} frames")
    print("| quantiser | codes | bit/s | usage | perplexity | held-out usage | PESQ-NB | STOI | log-mel | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['codebook_size']} | {r['payload_bitrate']:.0f} | {100 * r['train_usage']:.1f}% | "
              f"{r['train_perplexity']:.0f} | {100 * r['heldout_usage']:.1f}% | {r['pesq_nb']:.3f} | "
              f"{r['stoi']:.3f} | {r['log_mel']:.3f} | {r['train_seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
