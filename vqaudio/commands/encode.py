"""``vqaudio encode``: audio or series files (or folders of them) to ``.vqa`` token files.

Inputs, outputs, shards and workers: :mod:`vqaudio.filejobs` (shared with ``vqaudio decode``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from vqaudio.cli_args import add_batch_flags, device_arg, sample_rate_arg
from vqaudio.errors import ConfigError
from vqaudio.filejobs import Job, check_jobs, collect, parse_shard, run_jobs, shard_plan
from vqaudio.pipes import pipe_ends
from vqaudio.progress import progress_wanted

HELP = "encode audio/series files or folders to .vqa token files"
DESCRIPTION = (HELP + ". One input file gives one output (default: IN with .vqa; an existing one needs --force); "
               "folders and manifests are mirrored under -o, skipping outputs that exist. Outputs never replace inputs. "
               "An aeon .ts file gives a folder (default: IN without .ts; -o DIR) of one .vqa per case, in a "
               "sub-folder per class label. Without --model, series files (.npy, .csv, .tsv, .ts) use the series model, "
               "everything else speech-8k.")


@dataclass(frozen=True)
class _Setup:
    """Picklable: loads the codec in each worker."""

    model: str | None
    device: str = "cpu"

    def __call__(self):
        from vqaudio.codec import load_codec

        return load_codec(self.model, device=self.device)


@dataclass(frozen=True)
class _Encode:
    n_q: int | None
    sample_rate: str
    progress: bool = False  # a bar in seconds of audio (single files; a batch counts files instead)
    bits_per_sample: float | None = None  # series: the rate instead of n_q

    def __call__(self, codec, job: Job) -> None:
        self.write(codec, self.encode(codec, job.src), job.dst)

    def encode(self, codec, src):
        from vqaudio.progress import SecondsBar

        with SecondsBar("encode", self.progress) as bar:
            return codec.encode_file(src, self.n_q, progress=bar, bits_per_sample=self.bits_per_sample)

    def write(self, codec, codes, dst: Path) -> None:
        """``dst.vqa``, or an audio/series file to listen to the result (encode + decode)."""
        from vqaudio.codec import save_codes
        from vqaudio.io import is_audio_path, is_series_path
        from vqaudio.progress import SecondsBar

        if dst.suffix.lower() == ".vqa":
            save_codes(dst, codes)
        elif is_audio_path(dst) or is_series_path(dst):
            with SecondsBar("decode", self.progress) as bar:
                codec.decode_to_file(codes, dst, self.sample_rate, progress=bar)
        else:
            raise ConfigError(f"output must end in .vqa, or in an audio/series suffix to decode right away, not {dst.suffix!r}", str(dst))


def register(subparsers) -> None:
    p = subparsers.add_parser("encode", help=HELP, description=DESCRIPTION)
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="audio file, series file (.npy/.csv/.tsv, or an aeon .ts of many cases), folder (recursive), manifest (.txt/.lst/.list/.scp: a path "
                        "per line), or - for stdin (wav, flac, ogg, ...; read whole; the output then goes to stdout "
                        "unless -o names a file)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input) or folder (mirrors input folders); default: IN with .vqa. "
                        "An audio suffix (e.g. out.wav) encodes and decodes in one go; - writes the .vqa to stdout")
    p.add_argument("--n-q", type=int, default=None, metavar="N", help="quantiser levels to keep (default: all of the model's)")
    p.add_argument("--bits-per-sample", type=float, default=None, metavar="B",
                   help="series models, instead of --n-q: code each file within B bits of payload per time step and "
                        "channel; the encoder tries every way that fits (every step with fewer levels, or every 5/4th, "
                        "2nd, 9/4th, ... 16th step with more, resampled back on decoding) and keeps the closest")
    p.add_argument("--sample-rate", default="original", help="for OUT.wav: 'original' (default), 'model' or Hz")
    p.add_argument("--stream", action="store_true",
                   help="real time: read IN (- for stdin; WAV, or raw 16-bit PCM with --rate) as it arrives and write a "
                        ".vqs token stream (-o - or OUT.vqs) as frames complete, flushed per packet")
    p.add_argument("--rate", type=int, default=None, metavar="HZ", help="--stream: raw signed 16-bit PCM input at HZ")
    p.add_argument("--channels", type=int, default=None, metavar="C", help="--stream: channels of raw PCM (default 1)")
    add_batch_flags(p, "shipped or user model name (see `vqaudio models`), or a checkpoint/experiment folder "
                       "(default: series for .npy/.csv/.tsv/.ts files, else speech-8k; ./NAME for a local folder named "
                       "like a model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqaudio.codec import load_codec
    from vqaudio.io import is_audio_path, is_series_path
    from vqaudio.ts_files import is_ts_path

    shard, jobs_n, rate = parse_shard(args.shard), check_jobs(args.jobs), sample_rate_arg(args.sample_rate)
    device = device_arg(args.device)
    model = args.model if args.model is not None else default_model(args.inputs)
    codec = load_codec(model, device=device)  # fail fast (and once) on a bad --model or --n-q
    if args.n_q is not None and not 1 <= args.n_q <= codec.n_q:
        raise ConfigError(f"--n-q must be in [1, {codec.n_q}] for model {codec.name!r}, got {args.n_q}")
    bits = args.bits_per_sample
    if bits is not None:
        if args.n_q is not None or codec.kind != "series" or args.stream:
            raise ConfigError("--bits-per-sample is for series models, instead of --n-q (and not with --stream)"
                              if codec.kind == "series" else
                              f"--bits-per-sample is for series models; model {codec.name!r} codes audio (use --n-q)")
        codec.rate_options(1 << 20, bits)  # a bad B fails here, once (a too small one fails per file)
    if any(is_ts_path(p) for p in args.inputs):
        return _encode_ts_files(args, codec)
    accept = is_series_path if codec.kind == "series" else is_audio_path
    progress = progress_wanted(args.progress)
    stdin, stdout = pipe_ends(args.inputs, args.output)
    if args.stream or args.rate is not None or args.channels is not None:
        return _encode_live(args, codec, stdin, stdout)
    if stdin or stdout:
        return _encode_pipe(args, codec, _Encode(args.n_q, rate, progress, bits), stdin, stdout)
    plan = collect(args.inputs, args.output, accept, lambda p: p.with_suffix(".vqa"), file_out=lambda p: bool(p.suffix),
                   what="a series" if codec.kind == "series" else "an audio", output_hint=_looks_like_output)
    plan = shard_plan(plan, shard, "encode")
    setup = _Preloaded(codec) if jobs_n <= 1 else _Setup(model, device)
    encode = _Encode(args.n_q, rate, progress and not plan.batch, bits)
    return run_jobs(plan, encode, setup, jobs_n, args.force, "encode", progress)


def default_model(inputs: list[str]) -> str:
    """The model for ``inputs`` without ``--model``: ``series`` when they are series files (``.npy``, ``.csv``, ``.tsv``,
    ``.ts``), else ``speech-8k`` (audio files, folders, manifests, stdin); a mix of both is an error."""
    from vqaudio.io import is_series_path
    from vqaudio.registry import default_model as for_kind
    from vqaudio.ts_files import is_ts_path

    series = {p != "-" and (is_series_path(p) or is_ts_path(p)) for p in inputs}
    if len(series) > 1:
        raise ConfigError("the inputs mix series files and audio: encode them apart, or pass --model")
    return for_kind(series.pop())


def _encode_ts_files(args: argparse.Namespace, codec) -> int:
    """Each ``.ts`` input to a folder of per-case ``.vqa`` files (:mod:`vqaudio.ts_files`)."""
    import sys

    from vqaudio.ts_files import encode_ts, is_ts_path

    other = [p for p in args.inputs if not is_ts_path(p)]
    if other:
        raise ConfigError("give .ts files on their own (each becomes a folder of .vqa files)", other[0])
    if codec.kind != "series":
        raise ConfigError(f"a .ts file holds series, but model {codec.name!r} codes audio", args.inputs[0])
    for p in args.inputs:
        out = args.output
        if out is not None and len(args.inputs) > 1:
            out = Path(out) / Path(p).stem
        written = encode_ts(codec, p, out, args.n_q, args.force, args.bits_per_sample)
        print(f"{p}: {len(written)} cases -> {out if out is not None else Path(p).with_suffix('')}", file=sys.stderr)
    return 0


def _encode_pipe(args: argparse.Namespace, codec, encode: _Encode, stdin: bool, stdout: bool) -> int:
    """One input (a file or stdin) to one output (a file or stdout, which gets the .vqa bytes)."""
    from vqaudio.pipes import checked_ends, read_stdin, write_stdout
    from vqaudio.tokenfile import to_bytes

    src, dst = checked_ends(args.inputs, args.output, stdin, stdout, args.force)
    codes = encode.encode(codec, read_stdin() if stdin else src)
    if stdout:
        write_stdout(to_bytes(codes, "stdout"), args.output)
    else:
        encode.write(codec, codes, dst)
    return 0


def _encode_live(args: argparse.Namespace, codec, stdin: bool, stdout: bool) -> int:
    """``--stream``: one input to a .vqs token stream as the input arrives (:mod:`vqaudio.streampipe`)."""
    import contextlib

    from vqaudio.io import atomic_path
    from vqaudio.pipes import checked_ends, open_stdout
    from vqaudio.streampipe import encode_pipe, stdin_raw

    if not args.stream:
        raise ConfigError("--rate and --channels describe raw PCM for --stream")
    if (args.rate is not None and args.rate < 1) or (args.channels is not None and args.channels < 1):
        raise ConfigError("--rate and --channels must be positive integers")
    src, dst = checked_ends(args.inputs, args.output or "-", stdin, stdout or args.output is None, args.force)
    if dst is not None and dst.suffix.lower() != ".vqs":
        raise ConfigError(f"--stream writes a .vqs token stream: name the output OUT.vqs or -, not {dst.suffix!r}", str(dst))
    with contextlib.ExitStack() as stack:
        f_in = stdin_raw() if stdin else stack.enter_context(open(src, "rb", buffering=0))
        if dst is None:  # stdout, or a device such as /dev/null
            f_out = stack.enter_context(open_stdout(args.output))
        else:
            f_out = stack.enter_context(open(stack.enter_context(atomic_path(dst)), "wb"))
        encode_pipe(codec, f_in, f_out, args.n_q, "stdin" if stdin else str(src), args.rate, args.channels)
    return 0


def _looks_like_output(path: Path) -> bool:
    from vqaudio.io import is_audio_path

    return path.suffix.lower() == ".vqa" or is_audio_path(path)


@dataclass(frozen=True)
class _Preloaded:
    value: object

    def __call__(self):
        return self.value
