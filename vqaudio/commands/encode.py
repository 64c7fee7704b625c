"""``vqaudio encode``: audio or series files (or folders of them) to ``.vqa`` token files.

Also holds the batch machinery ``vqaudio decode`` shares: input collection (folders recursively,
output tree mirrored), deterministic sharding, skipping existing outputs, ``--jobs`` workers, tqdm.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from vqaudio.errors import ConfigError, VQAudioError

HELP = "encode audio/series files or folders to .vqa token files"


@dataclass(frozen=True)
class Job:
    """One file to process: ``src`` -> ``dst``; ``rel`` is the path used for sharding (relative to its root)."""

    src: Path
    dst: Path
    rel: str


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` with ``0 <= I < N`` -> ``(I, N)``."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def in_shard(rel: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic, order-independent: the sha1 of the relative path, modulo N."""
    return shard is None or int(hashlib.sha1(rel.encode("utf-8")).hexdigest(), 16) % shard[1] == shard[0]


def collect(inputs: list[str], out: str | None, accept: Callable[[Path], bool], out_suffix: str,
            file_out: Callable[[Path], bool] = lambda p: False, what: str = "an input") -> list[Job]:
    """Map inputs (files, manifests, or folders searched recursively for files ``accept`` takes) to jobs.

    No ``out``: each output sits next to its input with ``out_suffix``. With ``out`` and a single
    file input: ``out`` is the output file (or, if it is an existing folder, the folder it goes in).
    Otherwise ``out`` is a folder: a folder's or manifest's tree is mirrored under it (a manifest's
    paths from its own folder, or from the listed files' common folder), files go at its top.
    ``file_out(out)`` says whether ``out`` names a file even if it does not exist yet; it is an error
    with a manifest. ``what`` names the files ``accept`` takes, for errors ("an audio").
    """
    from vqaudio.data import input_files, is_manifest_path, relative_names

    roots = [Path(p) for p in inputs]
    for r in roots:
        if not r.exists():
            raise ConfigError("no such file or folder", str(r))
    out_dir = Path(out) if out is not None else None
    jobs: list[Job] = []
    if out_dir is not None and (out_dir.is_file() or (file_out(out_dir) and not out_dir.is_dir())):  # -o a file
        if any(r.is_file() and not accept(r) and is_manifest_path(r) for r in roots):
            raise ConfigError("-o names a file, but the input is a manifest of several files: give a folder", str(out_dir))
        if len(roots) == 1 and roots[0].is_file():
            jobs.append(Job(roots[0], out_dir, roots[0].name))
            roots = []  # checked below like every other job: -o IN must not replace the input, even with --force
    for root in roots:
        files, base = input_files(root, accept, what)
        for src, rel in zip(files, map(Path, relative_names(files, base)), strict=True):
            dst = (out_dir / rel if out_dir is not None else src).with_suffix(out_suffix)
            jobs.append(Job(src, dst, rel.as_posix()))
    seen: dict[Path, Path] = {}
    for j in jobs:
        key = j.dst.resolve()
        if key in seen:
            raise ConfigError(f"{seen[key]} and {j.src} would both be written to {j.dst}; pass separate -o folders")
        if key == j.src.resolve() or (j.dst.exists() and os.path.samefile(j.dst, j.src)):
            raise ConfigError(f"output would overwrite the input {j.src}")
        seen[key] = j.src
    return jobs


# --- workers (module level so that --jobs can pickle them) ------------------------------------

_STATE: dict = {}


def _init_worker(threads: int, setup: Callable[[], object]) -> None:
    import torch

    torch.set_num_threads(threads)
    _STATE["ctx"] = setup()


def _call(fn: Callable, job: Job) -> str | None:
    """Run ``fn(ctx, job)``; a user error comes back as its one-line message."""
    try:
        fn(_STATE["ctx"], job)
    except VQAudioError as err:
        return str(err)
    return None


def run_jobs(jobs: list[Job], fn: Callable, setup: Callable[[], object], n_jobs: int, force: bool, desc: str,
             progress: bool) -> int:
    """Run ``fn(setup(), job)`` for every job whose output is missing (all with ``force``).

    Errors are printed as they happen, one line each; the others go on. Returns the exit status:
    0, or 2 if any job failed (a single job's error is raised instead, for the CLI to print).
    """
    from tqdm import tqdm

    todo = [j for j in jobs if force or not j.dst.exists()]
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"vqaudio {desc}: skipped {skipped} existing output(s) (use --force to redo them)", file=sys.stderr)
    if not todo:
        return 0
    from vqaudio.report import make_output_dir

    for d in sorted({j.dst.parent for j in todo}):
        make_output_dir(d)  # a path component that is a file: one line naming it, not a traceback
    if len(jobs) == 1:
        fn(setup(), todo[0])  # errors propagate: the CLI prints the one line and exits 2
        return 0
    errors = 0
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress, file=sys.stderr)
    if n_jobs <= 1:
        ctx = setup()
        results = (_direct(fn, ctx, j) for j in todo)
        pool = None
    else:
        threads = max(1, (os.cpu_count() or 1) // n_jobs)
        pool = ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads, setup))
        results = pool.map(_call, [fn] * len(todo), todo, chunksize=1)
    try:
        for msg in results:
            bar.update(1)
            if msg:
                errors += 1
                bar.write(msg, file=sys.stderr)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if errors:
        print(f"vqaudio {desc}: {errors} of {len(todo)} file(s) failed", file=sys.stderr)
        return 2
    return 0


def _direct(fn: Callable, ctx: object, job: Job) -> str | None:
    try:
        fn(ctx, job)
    except VQAudioError as err:
        return str(err)
    return None


# --- encode -------------------------------------------------------------------------------------

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


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="registered model name or checkpoint/experiment folder (default: the shipped speech-8k)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="J", help="parallel worker processes (default 1)")
    p.add_argument("--force", action="store_true", help="redo outputs that already exist")
    p.add_argument("--shard", metavar="I/N", help="only the inputs with hash(relative path) %% N == I (0 <= I < N)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    p = subparsers.add_parser("encode", help=HELP, description=HELP + ". " + __doc__.splitlines()[2])
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio file, series file (.npy/.csv), folder (recursive) or manifest (.txt/.lst/.list/.scp: a path per line)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input) or folder (mirrors input folders); default: IN with .vqa. "
                        "An audio suffix (e.g. out.wav) encodes and decodes in one go")
    p.add_argument("--n-q", type=int, default=None, metavar="N", help="quantiser levels to keep (default: all of the model's)")
    p.add_argument("--sample-rate", default="original", help="for OUT.wav: 'original' (default), 'model' or Hz")
    add_common(p)
    p.set_defaults(func=run)


def sample_rate_arg(text: str) -> str | int:
    if text in ("original", "model"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"--sample-rate must be 'original', 'model' or a positive integer, got {text!r}")


def device_arg(text: str, flag: str = "--device") -> str:
    """A usable torch device for ``--device``: ``cpu``, ``cuda``, ``cuda:N`` (a GPU that is there) or ``mps``."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{flag} must be cpu, cuda, cuda:N or mps, got {text!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{flag} {text}: no CUDA GPU is available here (use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{flag} {text}: only {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{flag} {text}: Apple MPS is not available here (use --device cpu)")
    elif dev.type != "cpu":
        raise ConfigError(f"{flag} must be cpu, cuda, cuda:N or mps, got {text!r}")
    return str(dev)


def check_jobs(n: int) -> int:
    if n < 1:
        raise ConfigError(f"--jobs must be >= 1, got {n}")
    return n


def run(args: argparse.Namespace) -> int:
    from vqaudio.codec import load_codec
    from vqaudio.io import is_audio_path, is_series_path

    shard, jobs_n, rate = parse_shard(args.shard), check_jobs(args.jobs), sample_rate_arg(args.sample_rate)
    codec = load_codec(args.model)  # fail fast (and once) on a bad --model or --n-q
    if args.n_q is not None and not 1 <= args.n_q <= codec.n_q:
        raise ConfigError(f"--n-q must be in [1, {codec.n_q}] for model {codec.name!r}, got {args.n_q}")
    accept = is_series_path if codec.kind == "series" else is_audio_path
    jobs = collect(args.inputs, args.output, accept, ".vqa", file_out=lambda p: bool(p.suffix),
                   what="a series" if codec.kind == "series" else "an audio")
    jobs = [j for j in jobs if in_shard(j.rel, shard)]
    if not jobs:
        print("vqaudio encode: nothing to encode", file=sys.stderr)
        return 0
    setup = _Setup(args.model)
    if jobs_n <= 1:
        setup = _Preloaded(codec)
    return run_jobs(jobs, _Encode(args.n_q, rate), setup, jobs_n, args.force, "encode", not args.no_progress)


@dataclass(frozen=True)
class _Preloaded:
    value: object

    def __call__(self):
        return self.value
