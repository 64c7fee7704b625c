"""Which CUDA toolkit, if any, setup.py builds the CUDA kernels of ``vqaudio._C`` with.

Standard library only: setup.py imports this before torch, and the tests import it without torch.

A toolkit is accepted only when it is complete for what ``torch.utils.cpp_extension.CUDAExtension``
does with ``CUDA_HOME``: it runs ``CUDA_HOME/bin/nvcc``, adds ``CUDA_HOME/include`` (where
``cuda_runtime.h`` must be) and links ``-lcudart`` from ``CUDA_HOME/lib64`` (``lib`` when there is
no ``lib64``). Candidates, in torch's order: ``CUDA_HOME``, else ``CUDA_PATH`` (either one, when set,
is the only candidate), else the ``nvcc`` on ``PATH``, then ``/usr/local/cuda``. For each, the root as
given is tried first, then the root of its nvcc with symlinks resolved, then the root nvcc reports
itself (``nvcc --dryrun``: ``#$ TOP=...``), which sees through wrapper scripts such as a
``/usr/local/bin/nvcc`` that runs ``exec /usr/local/cuda-13.0/bin/nvcc "$@"``.

``VQAUDIO_CUDA``: ``1`` requires a toolkit, ``0`` builds CPU-only, unset builds CUDA when a complete
toolkit is found (:func:`choose_build`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Toolkit", "Search", "BuildChoice", "missing_parts", "cudart_dir", "nvcc_top", "find_toolkit",
           "choose_build"]

DEFAULT_ROOT = Path("/usr/local/cuda")
CUDART_LIBS = ("libcudart.so", "libcudart.a")  # what `ld -lcudart` looks for
_TOP = re.compile(r"^#\$ TOP=(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Toolkit:
    """A complete toolkit: ``root`` is what CUDA_HOME must be for torch's CUDAExtension."""

    root: Path
    nvcc: Path
    lib_dir: Path
    found_by: str  # e.g. "nvcc on PATH at /usr/local/bin/nvcc, root from nvcc --dryrun"


@dataclass(frozen=True)
class Search:
    """The outcome of :func:`find_toolkit`: a toolkit, or None and one line saying why."""

    toolkit: Toolkit | None
    reason: str


@dataclass(frozen=True)
class BuildChoice:
    """What setup.py builds: CUDA kernels with ``toolkit`` or CPU-only; ``reason`` is one line."""

    cuda: bool
    required: bool  # VQAUDIO_CUDA=1: a failed CUDA build is an error, not a CPU-only fallback
    toolkit: Toolkit | None
    reason: str


def cudart_dir(root: Path) -> Path:
    """The folder torch links cudart from: ``root/lib64``, or ``root/lib`` when only that exists."""
    lib64, lib = root / "lib64", root / "lib"
    return lib if not lib64.exists() and lib.exists() else lib64


def missing_parts(root: Path) -> list[str]:
    """What a toolkit at ``root`` lacks for torch's CUDAExtension, as paths under root; [] if complete."""
    if not root.is_dir():
        return ["the folder itself"]
    missing = []
    nvcc = root / "bin" / "nvcc"
    if not (nvcc.is_file() and os.access(nvcc, os.X_OK)):
        missing.append("bin/nvcc")
    if not (root / "include" / "cuda_runtime.h").is_file():
        missing.append("include/cuda_runtime.h")
    lib = cudart_dir(root)
    if not any((lib / name).is_file() for name in CUDART_LIBS):
        missing.append(f"{lib.name}/libcudart.so")
    return missing


def nvcc_top(nvcc: Path, timeout: float = 30.0) -> Path | None:
    """The toolkit root that ``nvcc --dryrun`` reports (its ``#$ TOP=`` line), resolved; None if it says none."""
    cmd = [str(nvcc), "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _TOP.search(out.stderr + "\n" + out.stdout)
    if match is None:
        return None
    return Path(match.group(1).strip().strip('"')).resolve()


def _roots(given: Path | None, nvcc: Path | None) -> Iterator[tuple[Path, str]]:
    """Roots to try for one candidate, lazily (nvcc runs only when the earlier ones fail), with how each was got."""
    seen: set[Path] = set()
    lazy: list[tuple[Callable[[], Path | None], str]] = [(lambda: given, "")]
    if nvcc is not None:
        lazy += [(lambda: nvcc.resolve().parent.parent, "root of the resolved nvcc"),
                 (lambda: nvcc_top(nvcc), "root from nvcc --dryrun")]
    for get, how in lazy:
        root = get()
        if root is not None and root not in seen:
            seen.add(root)
            yield root, how


def _try_candidate(label: str, given: Path | None, nvcc: Path | None) -> tuple[Toolkit | None, str]:
    """The first complete root of one candidate, or None and what each root tried lacks."""
    tried = []
    for root, how in _roots(given, nvcc):
        missing = missing_parts(root)
        if not missing:
            found_by = label + (f", {how}" if how else "")
            return Toolkit(root, root / "bin" / "nvcc", cudart_dir(root), found_by), ""
        tried.append(f"{root} lacks {', '.join(missing)}")
    return None, f"{label}: " + "; ".join(tried)


def find_toolkit(environ: Mapping[str, str] | None = None, which: Callable[[str], str | None] = shutil.which,
                 default: Path = DEFAULT_ROOT) -> Search:
    """The CUDA toolkit to build with (see the module docstring for the candidates and their order)."""
    environ = os.environ if environ is None else environ
    explicit = next(((var, environ[var]) for var in ("CUDA_HOME", "CUDA_PATH") if environ.get(var)), None)
    if explicit is not None:
        var, value = explicit
        root = Path(value)
        candidates = [(f"{var}={value}", root, root / "bin" / "nvcc" if (root / "bin" / "nvcc").exists() else None)]
    else:
        candidates = []
        on_path = which("nvcc")
        if on_path:
            nvcc = Path(on_path)
            candidates.append((f"nvcc on PATH at {nvcc}", nvcc.parent.parent, nvcc))
        if default.exists():
            candidates.append((str(default), default, default / "bin" / "nvcc" if (default / "bin" / "nvcc").exists()
                               else None))
        if not candidates:
            return Search(None, f"no CUDA toolkit: CUDA_HOME and CUDA_PATH are unset, no nvcc on PATH, no {default}")
    failures = []
    for label, given, nvcc in candidates:
        toolkit, why = _try_candidate(label, given, nvcc)
        if toolkit is not None:
            return Search(toolkit, f"CUDA toolkit {toolkit.root} (found from {toolkit.found_by})")
        failures.append(why)
    return Search(None, "no complete CUDA toolkit (nvcc, include/cuda_runtime.h, libcudart): " + " | ".join(failures))


def choose_build(environ: Mapping[str, str] | None = None, search: Callable[[], Search] | None = None) -> BuildChoice:
    """Apply ``VQAUDIO_CUDA`` to the toolkit search. Raises ValueError (one line) for a bad flag or a required
    toolkit that is missing."""
    environ = os.environ if environ is None else environ
    flag = environ.get("VQAUDIO_CUDA", "").strip()
    if flag not in ("", "0", "1"):
        raise ValueError(f"VQAUDIO_CUDA must be 0, 1 or unset, not {flag!r}")
    if flag == "0":
        return BuildChoice(False, False, None, "CPU-only build requested (VQAUDIO_CUDA=0)")
    found = search() if search is not None else find_toolkit(environ)
    if found.toolkit is None:
        if flag == "1":
            raise ValueError(f"VQAUDIO_CUDA=1 but {found.reason} (set CUDA_HOME to a complete CUDA toolkit)")
        return BuildChoice(False, False, None, f"CPU-only build: {found.reason}")
    return BuildChoice(True, flag == "1", found.toolkit, f"CUDA kernels built with the {found.reason}")
