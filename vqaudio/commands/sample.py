"""``vqaudio sample``: draw token sequences from a trained prior and decode them with its codec."""

from __future__ import annotations

import argparse
import sys

from vqaudio.errors import ConfigError

HELP = "sample new audio/series from a trained token prior (writes .vqa token files and decoded files)"


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help=HELP, description=HELP + ".")
    p.add_argument("--prior", required=True, metavar="P", help="prior checkpoint or train-prior experiment folder")
    p.add_argument("--codec", metavar="C",
                   help="codec name or folder (default: the prior's codec when it is a shipped or user model, found by "
                        "its weights sha256; without one, only .vqa token files are written)")
    p.add_argument("-n", type=int, default=1, metavar="N", help="number of sequences (generated as one batch)")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--seconds", type=float, metavar="S", help="length of new material in seconds (time steps for series)")
    length.add_argument("--frames", type=int, metavar="F", help="length of new material in codec frames")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="softmax temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="keep the K most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (1: off)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (reproducible output)")
    p.add_argument("--prime", metavar="FILE", help=".vqa (or audio with --codec) whose tokens the samples continue")
    p.add_argument("--label", metavar="ID", help="label id or name, for priors trained with labels")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="replace existing sample_NNN files in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqaudio import registry
    from vqaudio.cli_args import device_arg
    from vqaudio.codec import load_codec
    from vqaudio.prior import load_prior, sample

    if not 0 <= args.temperature < float("inf"):
        raise ConfigError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.top_k < 0:
        raise ConfigError(f"--top-k must be >= 0, got {args.top_k}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    device = device_arg(args.device)
    model = load_prior(args.prior).to(device)
    codec_spec = args.codec
    found = registry.find_by_sha256(model.cfg.codec.get("sha256"))  # a shipped or user model: no --codec needed
    if codec_spec is None and found is not None:
        codec_spec = found[1]
    codec = load_codec(codec_spec, device=device) if codec_spec is not None else None
    paths = sample(model, codec, n=args.n, seconds=args.seconds, frames=args.frames, temperature=args.temperature,
                   top_k=args.top_k or None, top_p=args.top_p, seed=args.seed, prime=args.prime, label=args.label,
                   out_dir=args.output, force=args.force)
    for path in paths:
        print(path, file=sys.stdout)
    return 0
