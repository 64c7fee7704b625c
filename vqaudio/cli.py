"""The ``vqaudio`` command line. Each subcommand lives in ``vqaudio/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a library call.

User errors (:class:`vqaudio.errors.VQAudioError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from vqaudio.errors import VQAudioError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand found in ``vqaudio.commands``."""
    import vqaudio.commands as commands

    parser = argparse.ArgumentParser(
        prog="vqaudio", description="Discrete tokens for audio and time series: train, encode, decode, model and sample."
    )
    parser.add_argument("--version", action="version", version=f"vqaudio {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"vqaudio.commands.{info.name}")
        module.register(sub)
    return parser


def _version() -> str:
    from vqaudio import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except VQAudioError as err:
        print(f"vqaudio {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vqaudio {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
