"""Build of vqaudio._C: C++ CPU kernels always, CUDA kernels whenever nvcc is found.

VQAUDIO_CUDA=1 requires the CUDA build (an error if nvcc is missing), VQAUDIO_CUDA=0 forces a
CPU-only build, unset builds CUDA when nvcc is found. The decision never depends on a visible GPU,
so CI compiles the CUDA kernels too. TORCH_CUDA_ARCH_LIST overrides the default sm_80 and sm_90.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def find_nvcc() -> str | None:
    """The CUDA toolkit root that holds bin/nvcc: CUDA_HOME, CUDA_PATH, PATH, then /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for root in candidates:
        if root and (Path(root) / "bin" / "nvcc").exists():
            return root
    return None


def nvidia_wheel_includes() -> list[str]:
    """Header folders of the nvidia-* wheels (cusparse.h, cublas.h, ...) that torch's CUDA headers include."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for base in spec.submodule_search_locations:
        found += sorted(glob.glob(os.path.join(base, "cu*", "include")))
        found += sorted(glob.glob(os.path.join(base, "*", "include")))
    return list(dict.fromkeys(p for p in found if os.path.isdir(p)))


def want_cuda() -> tuple[bool, str | None]:
    flag = os.environ.get("VQAUDIO_CUDA", "").strip()
    if flag not in ("", "0", "1"):
        sys.exit(f"setup.py: VQAUDIO_CUDA must be 0, 1 or unset, not {flag!r}")
    if flag == "0":
        return False, None
    cuda_home = find_nvcc()
    if flag == "1" and cuda_home is None:
        sys.exit("setup.py: VQAUDIO_CUDA=1 but nvcc was not found (set CUDA_HOME to the CUDA toolkit)")
    return cuda_home is not None, cuda_home


use_cuda, cuda_home = want_cuda()
if use_cuda:
    os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import time
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def extension():
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp"))
    cxx = ["-O3", "-fopenmp", "-ffp-contract=fast", "-fdiagnostics-color=always"]
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[str(ROOT / "csrc")], py_limited_api=False)
    if not use_cuda:
        return CppExtension("vqaudio._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").rglob("*.cu"))
    kwargs["include_dirs"] += nvidia_wheel_includes()
    nvcc = ["-O3", "-lineinfo", "-DVQAUDIO_WITH_CUDA"]
    return CUDAExtension("vqaudio._C", sources, extra_compile_args={"cxx": cxx + ["-DVQAUDIO_WITH_CUDA"], "nvcc": nvcc},
                         **kwargs)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
