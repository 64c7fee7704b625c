"""``vqaudio average``: average the weights of several checkpoints of one run into a new model folder."""

from __future__ import annotations

import argparse

HELP = "average the weights of several checkpoints of one training run into a new model folder"


def register(subparsers) -> None:
    p = subparsers.add_parser("average", help=HELP, description=HELP + ". Floating-point tensors are averaged; integer "
                              "ones and those matched by --keep-last come from the last checkpoint given.")
    p.add_argument("models", nargs="+", metavar="CKPT", help="checkpoint or experiment folders of one model, oldest first")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--keep-last", action="append", default=[], metavar="GLOB",
                   help="take tensors whose name matches GLOB from the last checkpoint (e.g. 'quantizer.*' keeps its "
                        "codebooks whole); repeatable")
    p.add_argument("--force", action="store_true", help="replace DIR if it is a checkpoint folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqaudio.average import average_checkpoints

    out, model = average_checkpoints(args.models, args.output, keep_last=tuple(args.keep_last), force=args.force)
    print(f"averaged {len(args.models)} checkpoints into {out} (sha256 {model.checkpoint_sha256[:16]})")
    return 0
