"""File jobs of ``vqaudio encode`` and ``vqaudio decode``: inputs to outputs, the rule for existing outputs,
deterministic sharding, ``--jobs`` worker processes.

**Outputs that exist** (the rule every writing command follows, README "Outputs"):

- a *named* output (the output of a single input file, whether ``-o`` names it or it is the default
  next to the input) that exists is an error, exit status 2: ``PATH: already exists; pass --force to replace it``;
- a *batch* run (a folder, a manifest, or several inputs) skips the outputs that exist, says how many,
  and exits 0; ``--force`` redoes them;
- an input is never written over, not even with ``--force``;
- inputs that match no file are an error (exit 2).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from vqaudio.errors import ConfigError, VQAudioError

__all__ = ["Job", "Plan", "parse_shard", "in_shard", "shard_plan", "collect", "run_jobs", "exists_error", "check_named_output"]


def exists_error(path: str | os.PathLike) -> ConfigError:
    """The one error for a named output that exists (every writing command words it the same)."""
    return ConfigError("already exists; pass --force to replace it", str(path))


def check_named_output(dst: Path, src: Path | None, force: bool) -> None:
    """A single named output: never the input ``src`` (not even with ``force``), and an existing one needs
    ``force``; its folder is created."""
    from vqaudio.report import make_output_dir

    if src is not None and (dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(dst, src))):
        raise ConfigError(f"output would overwrite the input {src}")
    if (dst.exists() or dst.is_symlink()) and not force:
        raise exists_error(dst)
    make_output_dir(dst.parent)


@dataclass(frozen=True)
class Job:
    """One file to process: ``src`` -> ``dst``; ``rel`` is the path used for sharding (relative to its root)."""

    src: Path
    dst: Path
    rel: str


@dataclass(frozen=True)
class Plan:
    """The jobs of a run; ``batch``: a folder, manifest or several inputs (existing outputs are skipped),
    else one named output (an existing one is an error)."""

    jobs: list[Job]
    batch: bool


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


def collect(inputs: list[str], out: str | None, accept: Callable[[Path], bool], name_out: Callable[[Path], Path],
            file_out: Callable[[Path], bool] = lambda p: False, what: str = "an input",
            output_hint: Callable[[Path], bool] = lambda p: False) -> Plan:
    """Map inputs (files, manifests, or folders searched recursively for files ``accept`` takes) to jobs.

    ``name_out(path)`` is the default output name of an input ``path`` (e.g. ``x.wav`` -> ``x.vqa``). No
    ``out``: each output sits next to its input. With ``out`` and a single file input: ``out`` is the
    output file (or, if it is an existing folder, the folder it goes in). Otherwise ``out`` is a folder:
    a folder's or manifest's tree is mirrored under it, files go at its top. ``file_out(out)`` says
    whether ``out`` names a file even if it does not exist yet; it is an error with a manifest. ``what``
    names the files ``accept`` takes, for errors ("an audio"). ``output_hint(path)``: a missing last
    input that looks like an output (``encode in.wav out.vqa``) gets a hint to use ``-o``.
    """
    from vqaudio.data import input_files, is_manifest_path, relative_names

    roots = [Path(p) for p in inputs]
    for r in roots:
        if not r.exists():
            if out is None and len(roots) > 1 and r == roots[-1] and output_hint(r):
                raise ConfigError(f"no such file or folder (to name the output, use -o {r})", str(r))
            raise ConfigError("no such file or folder", str(r))
        if not (r.is_file() or r.is_dir()):
            raise ConfigError("not a regular file (a pipe or device: read it as stdin, with - < FILE)", str(r))
    batch = len(roots) > 1 or not roots[0].is_file() or (not accept(roots[0]) and is_manifest_path(roots[0]))
    out_dir = Path(out) if out is not None else None
    jobs: list[Job] = []
    if out_dir is not None and (out_dir.is_file() or (file_out(out_dir) and not out_dir.is_dir())):  # -o a file
        if any(r.is_file() and not accept(r) and is_manifest_path(r) for r in roots):
            raise ConfigError("-o names a file, but the input is a manifest of several files: give a folder", str(out_dir))
        if len(roots) == 1 and roots[0].is_file():
            jobs.append(Job(roots[0], out_dir, roots[0].name))
            roots = []  # checked below like every other job: -o IN must not replace the input, even with --force
    matched = bool(jobs)
    for root in roots:
        files, base = input_files(root, accept, what)
        matched = matched or bool(files)
        for src, rel in zip(files, map(Path, relative_names(files, base)), strict=True):
            dst = name_out(out_dir / rel if out_dir is not None else src)
            jobs.append(Job(src, dst, rel.as_posix()))
    if not matched:
        raise ConfigError(f"no {what.split()[-1]} files found in {', '.join(inputs)}")
    inputs_seen = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    for j in jobs:
        key = j.dst.resolve()
        if key in seen:
            raise ConfigError(f"{seen[key]} and {j.src} would both be written to {j.dst}; pass separate -o folders")
        if key in inputs_seen or (j.dst.exists() and os.path.samefile(j.dst, j.src)):
            raise ConfigError(f"output would overwrite the input {j.src if key == j.src.resolve() else j.dst}")
        seen[key] = j.src
    return Plan(jobs, batch)


def shard_plan(plan: Plan, shard: tuple[int, int] | None, desc: str) -> Plan:
    """The jobs of ``plan`` in ``shard`` (all without one); an empty shard is said, not an error."""
    if shard is None:
        return plan
    jobs = [j for j in plan.jobs if in_shard(j.rel, shard)]
    if not jobs:
        print(f"vqaudio {desc}: shard {shard[0]}/{shard[1]} holds none of the {len(plan.jobs)} input file(s)",
              file=sys.stderr)
    return Plan(jobs, plan.batch)


# --- workers (module level so that --jobs can pickle them) ------------------------------------

_STATE: dict = {}


def _init_worker(threads: int, setup: Callable[[], object], desc: str) -> None:
    import torch

    from vqaudio.errors import printed_warnings

    torch.set_num_threads(threads)
    _STATE["warnings"] = printed_warnings(desc)  # one line each, as in the main process, for the worker's life
    _STATE["warnings"].__enter__()
    _STATE["ctx"] = setup()


def _call(fn: Callable, job: Job) -> str | None:
    """Run ``fn(ctx, job)`` in a worker; a user error comes back as its one-line message."""
    return _direct(fn, _STATE["ctx"], job)


def _direct(fn: Callable, ctx: object, job: Job) -> str | None:
    try:
        fn(ctx, job)
    except VQAudioError as err:
        return str(err)
    return None


def run_jobs(plan: Plan, fn: Callable, setup: Callable[[], object], n_jobs: int, force: bool, desc: str,
             progress: bool) -> int:
    """Run ``fn(setup(), job)`` for the jobs of ``plan`` (see the module docstring for existing outputs).

    Errors of a batch are printed as they happen, one line each; the others go on. Returns the exit
    status: 0, or 2 if any job failed (a single job's error is raised instead, for the CLI to print).
    """
    from tqdm import tqdm

    from vqaudio.report import make_output_dir

    jobs = plan.jobs
    if not plan.batch and not force:
        for j in jobs:
            if j.dst.exists() or j.dst.is_symlink():
                raise exists_error(j.dst)
    todo = [j for j in jobs if force or not (j.dst.exists() or j.dst.is_symlink())]
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"vqaudio {desc}: skipped {skipped} of {len(jobs)} output(s) that exist (--force redoes them)",
              file=sys.stderr)
    if not todo:
        return 0
    for d in sorted({j.dst.parent for j in todo}):
        make_output_dir(d)  # a path component that is a file: one line naming it, not a traceback
    if not plan.batch:
        fn(setup(), todo[0])  # errors propagate: the CLI prints the one line and exits 2
        return 0
    errors = 0
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress, file=sys.stderr)
    if n_jobs <= 1:
        ctx = setup()
        results = (_direct(fn, ctx, j) for j in todo)
        pool = None
    else:
        from vqaudio.threads import usable_cpus

        threads = max(1, usable_cpus() // n_jobs)
        pool = ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                   initargs=(threads, setup, desc))
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


def check_jobs(n: int) -> int:
    """``--jobs``: at least 1."""
    if n < 1:
        raise ConfigError(f"--jobs must be >= 1, got {n}")
    return n
