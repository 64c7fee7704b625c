"""``vqaudio models``: the shipped models and those in the user model folder, with what sets them apart."""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "list the shipped models and the models in the user model folder"


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help=HELP, description=HELP + ": name, kind, sample rate, bitrates, licence, "
                              "size. User models are checkpoint folders in $VQAUDIO_MODELS (default "
                              "~/.cache/vqaudio/models), named by their folder; `--model NAME` and `vqaudio decode` "
                              "find them there.")
    p.add_argument("--json", action="store_true", help="print JSON (with each model's folder and weights sha256)")
    p.set_defaults(func=run)


def _bitrates(e) -> str:
    if e.kind == "audio":
        return " ".join(f"{b / 1000:.2f}" for b in e.bitrates) + " kbit/s"
    return " ".join(f"{b:.3g}" for b in e.bitrates) + " bits/sample"


def table() -> list[str]:
    """The lines ``vqaudio models`` prints."""
    from vqaudio.registry import MODELS_ENV, list_models, user_model_dir

    rows = [("NAME", "SOURCE", "KIND", "RATE", "BITRATES (n_q = 1, 2, ...)", "LICENCE", "SIZE")]
    rows += [(e.name, e.source, e.kind, f"{e.sample_rate} Hz" if e.sample_rate else "-", _bitrates(e), e.licence,
              f"{e.bytes / 1e6:.1f} MB") for e in list_models()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines + [f"user models: {user_model_dir()} (${MODELS_ENV})"]


def run(args: argparse.Namespace) -> int:
    from vqaudio.registry import DEFAULT_MODEL, DEFAULT_SERIES_MODEL, list_models, user_model_dir

    if args.json:
        print(json.dumps({"default": DEFAULT_MODEL, "default_series": DEFAULT_SERIES_MODEL,
                          "user_model_dir": str(user_model_dir()),
                          "models": [dataclasses.asdict(e) for e in list_models()]}, indent=2))
    else:
        print("\n".join(table()))
    return 0
