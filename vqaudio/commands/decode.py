"""``vqaudio decode``: ``.vqa`` token files (or folders of them) back to audio or series files."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from vqaudio.cli_args import add_batch_flags, device_arg, sample_rate_arg
from vqaudio.commands.encode import _Preloaded
from vqaudio.errors import ConfigError, TokenFileError
from vqaudio.filejobs import Job, Plan, check_jobs, collect, parse_shard, run_jobs, shard_plan
from vqaudio.pipes import pipe_ends
from vqaudio.progress import progress_wanted

HELP = "decode .vqa token files back to audio (or series)"
AUDIO_TYPES, SERIES_TYPES = ("wav", "flac", "ogg"), ("npy", "csv", "tsv")  # --type: what -o - writes
DECODED = ".decoded"  # IN.vqa -> IN.decoded.wav: never the name of the file that was encoded
DESCRIPTION = (HELP + f". Outputs are named IN{DECODED}.wav (series: IN{DECODED}.npy) unless -o names the file, so a "
               "decode never lands on the recording it was made from. One input file gives one output (an existing "
               "one needs --force); folders and manifests are mirrored under -o, skipping outputs that exist.")


@dataclass
class _Codecs:
    """Codecs loaded on first use: ``--model``, else the model each file's weights sha256 names (shipped or in
    the user model folder, :func:`vqaudio.codec.find_codec_for`)."""

    model: str | None
    device: str = "cpu"
    postfilter: bool | None = None  # None: as each model's config says
    cache: dict = field(default_factory=dict)

    def __call__(self):  # setup(): a fresh cache per worker
        return _Codecs(self.model, self.device, self.postfilter)

    def load(self, spec):
        from vqaudio.codec import load_codec

        if spec not in self.cache:
            self.cache[spec] = load_codec(spec, device=self.device, postfilter=self.postfilter)
        return self.cache[spec]

    def for_codes(self, codes):
        from vqaudio.codec import find_codec_for

        return self.load(self.model if self.model is not None else find_codec_for(codes)[1])


@dataclass(frozen=True)
class _Decode:
    sample_rate: str | int
    progress: bool = False  # a bar in seconds of audio (single files; a batch counts files instead)

    def __call__(self, codecs: _Codecs, job: Job) -> None:
        from vqaudio.tokenstream import load_any

        codes = load_any(job.src)
        self.decode(codecs.for_codes(codes), codes, job.dst)

    def decode(self, codec, codes, dst, suffix: str | None = None) -> None:
        from vqaudio.progress import SecondsBar

        with SecondsBar("decode", self.progress) as bar:
            codec.decode_to_file(codes, dst, self.sample_rate, suffix=suffix, progress=bar)


def register(subparsers) -> None:
    p = subparsers.add_parser("decode", help=HELP, description=DESCRIPTION)
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help=".vqa file, folder (recursive), manifest (.txt/.lst/.list/.scp: a path per line), or - for a "
                        ".vqa on stdin (the output then goes to stdout unless -o names a file)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help=f"output file (one input) or folder (mirrors input folders); default: IN{DECODED}.wav next to IN "
                        f"(series: IN{DECODED}.npy); - writes to stdout (see --type)")
    p.add_argument("--type", "-t", choices=AUDIO_TYPES + SERIES_TYPES, default=None,
                   help="format written to stdout (-o -): wav (default), flac or ogg; npy (default), csv or tsv for series")
    p.add_argument("--sample-rate", default="original", metavar="original|model|HZ",
                   help="rate of the decoded audio: the input file's (default), the model's, or a number in Hz")
    p.add_argument("--stream", action="store_true",
                   help="real time: read a .vqs token stream (IN or - for stdin) as it arrives and write 16-bit WAV at "
                        "the model's rate (-o - or a file) as packets come, flushed per packet")
    p.add_argument("--no-postfilter", action="store_true",
                   help="skip the formant post-filter of models that have one (speech-8k; like c2dec --nopf)")
    add_batch_flags(p, "model name or checkpoint/experiment folder (default: the shipped or user model whose "
                       "weights sha256 the file records; see `vqaudio models`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqaudio.io import is_audio_path

    shard, jobs_n, rate = parse_shard(args.shard), check_jobs(args.jobs), sample_rate_arg(args.sample_rate)
    codecs = _Codecs(args.model, device_arg(args.device), False if args.no_postfilter else None)
    progress = progress_wanted(args.progress)
    stdin, stdout = pipe_ends(args.inputs, args.output)
    if args.stream:
        return _decode_live(args, codecs, stdin, stdout)
    if stdin or stdout:
        return _decode_pipe(args, codecs, _Decode(rate, progress), stdin, stdout)

    def is_vqa(p: Path) -> bool:
        return p.suffix.lower() in (".vqa", ".vqs")

    plan = collect(args.inputs, args.output, is_vqa, lambda p: p.with_suffix(DECODED + ".wav"),
                   file_out=lambda p: bool(p.suffix), what="a .vqa", output_hint=is_audio_path)
    plan = shard_plan(plan, shard, "decode")
    if _kind(codecs, plan.jobs) == "series":  # series models write .npy, except to an -o file named by the user
        named = Path(args.output) if args.output is not None else None
        plan = Plan([j if j.dst == named else Job(j.src, j.dst.with_suffix(".npy"), j.rel) for j in plan.jobs], plan.batch)
    setup = _Preloaded(codecs) if jobs_n <= 1 else codecs()  # workers load their own
    return run_jobs(plan, _Decode(rate, progress and not plan.batch), setup, jobs_n, args.force, "decode", progress)


def _decode_pipe(args: argparse.Namespace, codecs: _Codecs, decode: _Decode, stdin: bool, stdout: bool) -> int:
    """One .vqa (a file or stdin) to one output (a file, or stdout in the --type format)."""
    import io

    from vqaudio.pipes import checked_ends, read_stdin, write_stdout
    from vqaudio.tokenstream import codes_from_bytes, load_any

    src, dst = checked_ends(args.inputs, args.output, stdin, stdout, args.force)
    codes = codes_from_bytes(read_stdin().getvalue(), "stdin") if stdin else load_any(src)
    codec = codecs.for_codes(codes)
    if not stdout:
        decode.decode(codec, codes, dst)
        return 0
    fmt = args.type or ("npy" if codec.kind == "series" else "wav")
    if (fmt in SERIES_TYPES) != (codec.kind == "series"):
        raise ConfigError(f"--type {fmt} does not fit {'an audio' if codec.kind == 'audio' else 'a series'} model (use {' or '.join(SERIES_TYPES if codec.kind == 'series' else AUDIO_TYPES)})")
    buf = io.BytesIO()
    decode.decode(codec, codes, buf, suffix="." + fmt)
    write_stdout(buf.getvalue(), args.output)
    return 0


def _decode_live(args: argparse.Namespace, codecs: _Codecs, stdin: bool, stdout: bool) -> int:
    """``--stream``: a .vqs token stream to WAV as it arrives (:mod:`vqaudio.streampipe`)."""
    import contextlib

    from vqaudio.io import atomic_path
    from vqaudio.pipes import checked_ends, open_stdout
    from vqaudio.streampipe import decode_pipe, stdin_raw

    src, dst = checked_ends(args.inputs, args.output or "-", stdin, stdout or args.output is None, args.force)
    if dst is not None and dst.suffix.lower() != ".wav":
        raise ConfigError(f"--stream writes WAV: name the output OUT.wav or -, not {dst.suffix!r}", str(dst))
    with contextlib.ExitStack() as stack:
        f_in = stdin_raw() if stdin else stack.enter_context(open(src, "rb", buffering=0))
        # a file is written under a temporary name and renamed at the end: a failed stream leaves no partial file
        f_out = stack.enter_context(open_stdout(args.output) if dst is None else open(stack.enter_context(atomic_path(dst)), "wb"))
        decode_pipe(codecs, f_in, f_out, "stdin" if stdin else str(src))
    return 0


def _kind(codecs: _Codecs, jobs: list[Job]) -> str:
    """The kind of model: from ``--model``, else from the first readable token file (``"audio"`` if none)."""
    from vqaudio.tokenstream import load_any

    if codecs.model is not None:
        return codecs.load(codecs.model).kind  # fail fast on a bad --model
    for j in jobs:
        try:
            return load_any(j.src).kind
        except TokenFileError:
            continue
    return "audio"
