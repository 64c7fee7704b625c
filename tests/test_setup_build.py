"""setup.py's CUDA decision at the real build: a failed CUDA compile or link falls back to CPU-only with one
line (VQAUDIO_CUDA unset) or stops with one line (VQAUDIO_CUDA=1). Each test builds a copy of setup.py over
one-line C++ and CUDA sources in a temporary folder, so it takes seconds, not minutes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from buildtools.cuda_toolkit import find_toolkit

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
FALLBACK = "setup.py: the CUDA build failed ("


def project(tmp_path: Path) -> Path:
    """A copy of the build files with a tiny csrc/ (one C++ function, one CUDA kernel)."""
    root = tmp_path / "proj"
    (root / "csrc" / "cuda").mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "buildtools", root / "buildtools", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "csrc" / "tiny.cpp").write_text("extern \"C\" int vqaudio_tiny() { return 1; }\n")
    (root / "csrc" / "cuda" / "tiny.cu").write_text("__global__ void vqaudio_tiny_kernel(float *x) { x[0] = 1; }\n")
    (root / "vqaudio").mkdir()
    (root / "vqaudio" / "__init__.py").write_text("")
    return root


def fake_toolkit(tmp_path: Path, nvcc_compiles: bool) -> Path:
    """A toolkit that looks complete; its nvcc answers --version like the CUDA torch was built with, then either
    fails every compile or writes an empty object (its libcudart.so is not a library, so the link fails)."""
    root = tmp_path / "fakecuda"
    for d in ("bin", "include", "lib64"):
        (root / d).mkdir(parents=True)
    (root / "include" / "cuda_runtime.h").write_text("")
    (root / "lib64" / "libcudart.so").write_text("not a library\n")
    compile_ = ('out=""; mf=""; while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift;; -MF) mf=$2; shift;; esac; '
                'shift; done\n[ -z "$mf" ] || echo "$out:" > "$mf"\nexec cc -x c -c /dev/null -o "$out"\n'
                if nvcc_compiles else 'echo "fake nvcc: cannot compile" >&2; exit 1\n')
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f'#!/bin/sh\ncase "$*" in *--version*) echo "release {torch.version.cuda or "13.0"}, V0"; exit 0;; '
                    f"esac\n{compile_}")
    nvcc.chmod(0o755)
    return root


def build(root: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "VQAUDIO_CUDA"}  # CI sets VQAUDIO_CUDA=1
    full.update(MAX_JOBS="1", PYTHONDONTWRITEBYTECODE="1", **env)
    return subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=root, env=full,
                          capture_output=True, text=True, timeout=600)


def setup_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("setup.py: ")]


def built(root: Path) -> tuple[Path | None, dict | None]:
    """The extension built in place and its build record."""
    libs = sorted((root / "vqaudio").glob("_C*.so"))
    record = root / "vqaudio" / "_C.build.json"
    return (libs[0] if libs else None), (json.loads(record.read_text()) if record.is_file() else None)


def needs_cudart(lib: Path) -> bool:
    dynamic = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    return "libcudart" in dynamic


@pytest.mark.parametrize(("nvcc_compiles", "why"), [(False, "Error compiling objects for extension"),
                                                     (True, "failed with exit code 1")], ids=["compile", "link"])
def test_failed_cuda_build_falls_back_to_cpu_only(tmp_path, nvcc_compiles, why):
    root = project(tmp_path)
    r = build(root, CUDA_HOME=str(fake_toolkit(tmp_path, nvcc_compiles)))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = setup_lines(r.stdout)
    assert len(lines) == 2 and lines[0].startswith("setup.py: CUDA kernels built with the CUDA toolkit"), lines
    assert lines[1].startswith(FALLBACK) and why in lines[1] and lines[1].endswith("; building CPU-only instead "
                                                               "(VQAUDIO_CUDA=1 makes this an error)"), lines
    lib, record = built(root)
    assert lib is not None and not needs_cudart(lib)
    assert record == {"cuda": False, "reason": "CPU-only build: " + lines[1][len("setup.py: "):].split(";")[0],
                      "cuda_home": None, "arch_list": None}


def test_failed_cuda_build_stops_when_required(tmp_path):
    root = project(tmp_path)
    r = build(root, CUDA_HOME=str(fake_toolkit(tmp_path, nvcc_compiles=False)), VQAUDIO_CUDA="1")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("setup.py: VQAUDIO_CUDA=1 but the CUDA build failed (")
    assert built(root) == (None, None)


def test_incomplete_toolkit_builds_cpu_only_with_one_line(tmp_path):
    root = project(tmp_path)
    toolkit = fake_toolkit(tmp_path, nvcc_compiles=False)
    shutil.rmtree(toolkit / "lib64")
    r = build(root, CUDA_HOME=str(toolkit))
    assert r.returncode == 0, r.stderr[-2000:]
    assert setup_lines(r.stdout) == [f"setup.py: CPU-only build: no complete CUDA toolkit (nvcc, "
                                     f"include/cuda_runtime.h, libcudart): CUDA_HOME={toolkit}: {toolkit} lacks "
                                     f"lib64/libcudart.so"]
    lib, record = built(root)
    assert lib is not None and not record["cuda"]
    required = build(project(tmp_path / "again"), CUDA_HOME=str(toolkit), VQAUDIO_CUDA="1")
    assert required.returncode != 0
    assert required.stderr.strip().splitlines()[-1].startswith("setup.py: VQAUDIO_CUDA=1 but no complete CUDA toolkit")


def test_complete_toolkit_here_builds_and_links_cuda(tmp_path):
    """With this machine's toolkit (found as setup.py finds it) the CUDA sources compile and link cudart."""
    found = find_toolkit()
    if found.toolkit is None:
        pytest.skip(found.reason)
    if not torch.version.cuda:
        pytest.skip("torch is built without CUDA")
    root = project(tmp_path)
    r = build(root, TORCH_CUDA_ARCH_LIST="8.0")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert setup_lines(r.stdout) == [f"setup.py: CUDA kernels built with the {found.reason}"]
    lib, record = built(root)
    assert needs_cudart(lib)
    assert record == {"cuda": True, "reason": f"CUDA kernels built with the {found.reason}",
                      "cuda_home": str(found.toolkit.root), "arch_list": "8.0"}
