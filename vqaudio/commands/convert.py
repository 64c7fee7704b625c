"""``vqaudio convert``: a ``.vqa`` token file to a ``.vqs`` token stream and back, losslessly."""

from __future__ import annotations

import argparse
import io

from vqaudio.errors import ConfigError

HELP = "convert a .vqa token file to a .vqs token stream or back (lossless)"
FORMATS = ("vqa", "vqs")


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help=HELP, description=HELP + ". The output's format is its suffix, or --to "
                              "(default for -o -: the other format than the input's). Codes and header are kept as "
                              "they are, so converting back gives the same bytes.")
    p.add_argument("input", metavar="IN", help=".vqa or .vqs file, or - for stdin (either, told apart by its magic)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.vqa, OUT.vqs, or - for stdout")
    p.add_argument("--to", choices=FORMATS, default=None, help="output format (default: from OUT's suffix)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def convert_bytes(data: bytes, name: str, to: str | None) -> bytes:
    """The bytes of ``data`` (a .vqa file or a .vqs stream) in format ``to`` (``None``: the other one)."""
    from vqaudio import tokenfile, tokenstream

    codes = tokenstream.codes_from_bytes(data, name)
    to = to or ("vqa" if tokenstream.is_stream(data) else "vqs")
    if to == "vqa":
        return tokenfile.to_bytes(codes, name)
    buf = io.BytesIO()
    tokenstream.write_codes(buf, codes)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vqaudio.io import atomic_path
    from vqaudio.pipes import STDIO, checked_ends, is_device, read_stdin, write_stdout

    stdin, stdout = args.input == STDIO, args.output == STDIO or is_device(args.output)
    src, dst = checked_ends([args.input], args.output, stdin, stdout, args.force)
    to = args.to
    if dst is not None:
        suffix = dst.suffix.lower().lstrip(".")
        if suffix not in FORMATS or (to is not None and to != suffix):
            raise ConfigError(f"the output must end in .vqa or .vqs (matching --to), not {dst.suffix!r}", str(dst))
        to = suffix
    if stdin:
        data, name = read_stdin().getvalue(), "stdin"
    else:
        try:
            data, name = Path(src).read_bytes(), str(src)
        except OSError as err:
            raise ConfigError(f"cannot read ({err.strerror or err})", str(src)) from None
    out = convert_bytes(data, name, to)
    if stdout:
        write_stdout(out, args.output)
    else:
        with atomic_path(dst) as tmp:
            tmp.write_bytes(out)
    return 0
