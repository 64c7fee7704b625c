"""``-`` as the input or output of ``vqaudio encode`` / ``decode`` / ``convert``: stdin or stdout, binary-safe.
An output that names a device or a FIFO (``-o /dev/null``, a named pipe) is written like stdout: in place, as
one stream (there is no file to replace, so no ``--force``; a rename over it would replace the device).

One input or one output only (``-`` is never a folder). The input is read whole before coding (``--stream``
reads it as it arrives instead: :mod:`vqaudio.streampipe`); stdout carries the output's bytes and nothing else (messages, warnings and
progress go to stderr), and is refused when it is a terminal.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vqaudio.errors import ConfigError

__all__ = ["STDIO", "is_device", "pipe_ends", "checked_ends", "read_stdin", "check_stdout", "write_stdout",
           "open_stdout"]

STDIO = "-"


def is_device(output: str | None) -> bool:
    """Whether ``output`` names an existing file that is neither a regular file nor a folder: a character device
    (``/dev/null``, ``/dev/stdout``), a FIFO or a socket. Such an output is written like stdout."""
    if output is None or output == STDIO:
        return False
    try:
        mode = os.stat(output).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def pipe_ends(inputs: list[str], output: str | None) -> tuple[bool, bool]:
    """``(stdin, stdout)``: whether the input is ``-`` and whether the output is stdout (``-o -``, no ``-o``
    after an input ``-``, or ``-o`` a device such as ``/dev/null``: :func:`is_device`). More than one input
    with either is a one-line :class:`ConfigError`."""
    src = STDIO in inputs
    device = is_device(output)
    dst = output == STDIO or (src and output is None) or device
    if src and len(inputs) > 1:
        raise ConfigError("- (stdin) must be the only input")
    if (output == STDIO or device) and (len(inputs) > 1 or Path(inputs[0]).is_dir()):
        what = "- (stdout)" if output == STDIO else f"{output} (a device, written as one stream)"
        raise ConfigError(f"-o {what} takes one input file, got {' '.join(inputs)}")
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
        if not is_device(output):
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


def write_stdout(data: bytes, output: str | None = STDIO) -> None:
    """Write ``data`` to stdout (refused on a terminal), or to the device ``output`` names (:func:`is_device`),
    and flush it."""
    with open_stdout(output) as out:
        out.write(data)
        out.flush()


@contextlib.contextmanager
def open_stdout(output: str | None = STDIO) -> Iterator[BinaryIO]:
    """Binary stdout (``output`` ``-`` or ``None``; refused on a terminal), or the device ``output`` opened for
    writing in place (a terminal device is refused the same way). Closed on exit, stdout excepted."""
    if output is None or output == STDIO:
        yield check_stdout()
        return
    try:
        f = open(output, "wb")  # noqa: SIM115 - closed below
    except OSError as err:
        raise ConfigError(f"cannot write ({err.strerror or err})", output) from None
    with f:
        if f.isatty():
            raise ConfigError("is a terminal: redirect the output or give -o FILE", output)
        yield f
