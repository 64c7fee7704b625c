"""``vqaudio export``: copy a trained model (no optimizer state) to a folder to share or ship."""

from __future__ import annotations

import argparse

from vqaudio.cli_args import add_postfilter_flag, postfilter_choice

HELP = "copy a trained model's weights and config (no optimizer state) to a new folder"


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help=HELP, description=HELP + ". The weights keep their sha256, so token "
                              "files made with the source model decode with the export.")
    p.add_argument("model", metavar="MODEL", help="experiment folder (its best/, else last/), checkpoint folder or name")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--include", action="append", default=[], metavar="FILE",
                   help="also copy FILE into the folder (a model card, a licence); repeatable")
    p.add_argument("--force", action="store_true", help="replace DIR if it is a checkpoint folder")
    add_postfilter_flag(p, "turn the formant post-filter of decoded audio on or off in the exported config (default: "
                           "as the source; vqaudio/postfilter.py); the weights and their sha256 stay the same")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqaudio.checkpoint import export_model, read_manifest

    out = export_model(args.model, args.output, include=tuple(args.include), force=args.force,
                       postfilter=postfilter_choice(args))
    m = read_manifest(out)
    meta = (m.get("state") or {}).get("meta") or {}
    step = f" at step {meta['step']}" if "step" in meta else ""
    print(f"exported {args.model}{step} to {out} (sha256 {m['sha256'][:16]}, {m['weights']['bytes'] / 1e6:.1f} MB)")
    return 0
