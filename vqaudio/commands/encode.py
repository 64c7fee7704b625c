"""``vqaudio encode``: audio or series files (or folders of them) to ``.vqa`` token files.

Inputs, outputs, shards and workers: :mod:`vqaudio.filejobs` (shared with ``vqaudio decode``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from vqaudio.cli_args import add_batch_flags, sample_rate_arg
from vqaudio.errors import ConfigError
from vqaudio.filejobs import Job, check_jobs, collect, parse_shard, run_jobs, shard_plan

HELP = "encode audio/series files or folders to .vqa token files"
DESCRIPTION = (HELP + ". One input file gives one output (default: IN with .vqa; an existing one needs --force); "
               "folders and manifests are mirrored under -o, skipping outputs that exist. Outputs never replace inputs.")


@dataclass(frozen=True)
class _Setup:
    """Picklable: loads the codec in each worker."""

    model: str | None

    def __call__(self):
        from vqaudio.codec import load_codec

        return load_codec(self.model)


@dataclass(frozen=True)
class _Encode:
    n_q: int | None
    sample_rate: str

    def __call__(self, codec, job: Job) -> None:
        from vqaudio.codec import save_codes
        from vqaudio.io import is_audio_path, is_series_path

        codes = codec.encode_file(job.src, self.n_q)
        if job.dst.suffix.lower() == ".vqa":
            save_codes(job.dst, codes)
        elif is_audio_path(job.dst) or is_series_path(job.dst):  # encode + decode: listen to the result
            codec.decode_to_file(codes, job.dst, self.sample_rate)
        else:
            raise ConfigError(f"output must end in .vqa, or in an audio/series suffix to decode right away, not {job.dst.suffix!r}", str(job.dst))


def register(subparsers) -> None:
    p = subparsers.add_parser("encode", help=HELP, description=DESCRIPTION)
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio file, series file (.npy/.csv), folder (recursive) or manifest (.txt/.lst/.list/.scp: a path per line)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input) or folder (mirrors input folders); default: IN with .vqa. "
                        "An audio suffix (e.g. out.wav) encodes and decodes in one go")
    p.add_argument("--n-q", type=int, default=None, metavar="N", help="quantiser levels to keep (default: all of the model's)")
    p.add_argument("--sample-rate", default="original", help="for OUT.wav: 'original' (default), 'model' or Hz")
    add_batch_flags(p, "shipped or user model name (see `vqaudio models`), or a checkpoint/experiment folder "
                       "(default: the shipped speech-8k; ./NAME for a local folder named like a model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqaudio.codec import load_codec
    from vqaudio.io import is_audio_path, is_series_path

    shard, jobs_n, rate = parse_shard(args.shard), check_jobs(args.jobs), sample_rate_arg(args.sample_rate)
    codec = load_codec(args.model)  # fail fast (and once) on a bad --model or --n-q
    if args.n_q is not None and not 1 <= args.n_q <= codec.n_q:
        raise ConfigError(f"--n-q must be in [1, {codec.n_q}] for model {codec.name!r}, got {args.n_q}")
    accept = is_series_path if codec.kind == "series" else is_audio_path
    plan = collect(args.inputs, args.output, accept, lambda p: p.with_suffix(".vqa"), file_out=lambda p: bool(p.suffix),
                   what="a series" if codec.kind == "series" else "an audio", output_hint=_looks_like_output)
    plan = shard_plan(plan, shard, "encode")
    setup = _Preloaded(codec) if jobs_n <= 1 else _Setup(args.model)
    return run_jobs(plan, _Encode(args.n_q, rate), setup, jobs_n, args.force, "encode", not args.no_progress)


def _looks_like_output(path: Path) -> bool:
    from vqaudio.io import is_audio_path

    return path.suffix.lower() == ".vqa" or is_audio_path(path)


@dataclass(frozen=True)
class _Preloaded:
    value: object

    def __call__(self):
        return self.value
