"""``-`` as the input or output of ``vqaudio encode`` / ``decode``: stdin or stdout, binary-safe.

One input or one output only (``-`` is never a folder). The input is read whole before coding (``--stream``
reads it as it arrives instead: :mod:`vqaudio.streampipe`); stdout carries the output's bytes and nothing else (messages, warnings and
progress go to stderr), and is refused when it is a terminal.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import BinaryIO

from vqaudio.errors import ConfigError

__all__ = ["STDIO", "pipe_ends", "checked_ends", "read_stdin", "check_stdout", "write_stdout"]

STDIO = "-"


def pipe_ends(inputs: list[str], output: str | None) -> tuple[bool, bool]:
    """``(stdin, stdout)``: whether the input is ``-`` and whether the output is stdout (``-o -``, or no ``-o``
    after an input ``-``). More than one input with either is a one-line :class:`ConfigError`."""
    src = STDIO in inputs
    dst = output == STDIO or (src and output is None)
    if src and len(inputs) > 1:
        raise ConfigError("- (stdin) must be the only input")
    if output == STDIO and (len(inputs) > 1 or Path(inputs[0]).is_dir()):
        raise ConfigError(f"-o - (stdout) takes one input file, got {' '.join(inputs)}")
    if src and output is not None and not dst and Path(output).is_dir():
        raise ConfigError("the input is stdin, so -o must name a file, not a folder", output)
    return src, dst


def checked_ends(inputs: list[str], output: str | None, stdin: bool, stdout: bool,
                 force: bool) -> tuple[Path | None, Path | None]:
    """``(src, dst)`` of a run with a pipe end (``None`` for stdin / stdout), checked before any work: stdout
    is not a terminal, a named output is not the input and needs ``force`` if it exists (its folder is made)."""
    from vqaudio.filejobs import check_named_output

    src = None if stdin else Path(inputs[0])
    dst = None if stdout else Path(output)
    if stdout:
        check_stdout()
    else:
        check_named_output(dst, src, force)
    return src, dst


def read_stdin() -> io.BytesIO:
    """All of stdin, as a seekable binary stream."""
    return io.BytesIO(sys.stdin.buffer.read())


def check_stdout() -> BinaryIO:
    """Binary stdout; a terminal is refused (one line) before any work is done."""
    if sys.stdout.isatty():
        raise ConfigError("stdout is a terminal: redirect it (> FILE, | COMMAND) or give -o FILE")
    return sys.stdout.buffer


def write_stdout(data: bytes) -> None:
    """Write ``data`` to stdout (refused on a terminal) and flush it."""
    out = check_stdout()
    out.write(data)
    out.flush()
