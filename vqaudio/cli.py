"""The ``vqaudio`` command line. Each subcommand lives in ``vqaudio/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a library call.

User errors (:class:`vqaudio.errors.VQAudioError`) print one line and exit with status 2, warnings
(:class:`vqaudio.errors.VQAudioWarning`) one line each; a bad flag prints
its subcommand's usage (status 2); a closed stdout (``vqaudio info x | head -2``) ends quietly with status 141,
as a process killed by SIGPIPE. Building the parser imports no torch: ``--version`` and ``--help`` are quick.
Thread defaults (``OMP_WAIT_POLICY=PASSIVE``, threads = usable CPUs): :mod:`vqaudio.threads`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys

from vqaudio.errors import VQAudioError, printed_warnings
from vqaudio.threads import apply_cli_defaults


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


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parse_args``, except that an unknown flag is reported with its subcommand's usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (sub.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _stdout_closed() -> int:
    """The reader of stdout went away: no traceback, no second error at exit; the status of SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests)
        pass
    return 128 + 13


class _Terminated(BaseException):
    """SIGTERM (``kill``, a job scheduler, a container stop) raised in the main thread, so that temporary outputs
    are removed on the way out as on Ctrl-C (:func:`vqaudio.io.atomic_path` cleans up on any exception)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    apply_cli_defaults()  # OMP_WAIT_POLICY=PASSIVE, threads = usable CPUs: before any command imports torch
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        previous = None
    try:
        with printed_warnings(args.command):
            result = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here rather than at exit
    except VQAudioError as err:
        print(f"vqaudio {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vqaudio {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"vqaudio {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        return _stdout_closed()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
