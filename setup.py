"""Build of vqaudio._C: C++ CPU kernels always, CUDA kernels whenever a complete CUDA toolkit is found.

The toolkit search and the meaning of VQAUDIO_CUDA live in buildtools/cuda_toolkit.py: 1 requires
the CUDA build (a missing toolkit or a failed CUDA compile or link stops the install with one line),
0 forces a CPU-only build, unset builds CUDA when a complete toolkit is found and otherwise, or when
the CUDA compile or link fails, builds CPU-only and says why in one line. The decision never depends
on a visible GPU, so CI compiles the CUDA kernels too. TORCH_CUDA_ARCH_LIST overrides the default
sm_80 and sm_90. What was built, and why, is recorded next to the extension (vqaudio/_C.build.json,
read by vqaudio.ops.build_record).
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # buildtools/ is not installed; a PEP 517 backend does not put ROOT on sys.path

from buildtools.cuda_toolkit import BuildChoice, choose_build  # noqa: E402

RECORD_NAME = "_C.build.json"  # next to vqaudio/_C*.so; the name vqaudio.ops.build_record reads

try:
    CHOICE = choose_build()
except ValueError as err:
    sys.exit(f"setup.py: {err}")
if CHOICE.cuda:
    os.environ["CUDA_HOME"] = str(CHOICE.toolkit.root)  # read by torch.utils.cpp_extension at import time
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


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


def extension(cuda: bool):
    """vqaudio._C: the C++ sources, plus the .cu sources when ``cuda``."""
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp"))
    cxx = ["-O3", "-fopenmp", "-ffp-contract=fast", "-fdiagnostics-color=always"]
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[str(ROOT / "csrc")], py_limited_api=False)
    if not cuda:
        return CppExtension("vqaudio._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").rglob("*.cu"))
    kwargs["include_dirs"] += nvidia_wheel_includes()
    nvcc = ["-O3", "-lineinfo", "-DVQAUDIO_WITH_CUDA"]
    return CUDAExtension("vqaudio._C", sources, extra_compile_args={"cxx": cxx + ["-DVQAUDIO_WITH_CUDA"], "nvcc": nvcc},
                         **kwargs)


def first_line(err: BaseException) -> str:
    text = " ".join(str(a) for a in err.args) if err.args else type(err).__name__
    return (text.strip().splitlines() or [type(err).__name__])[0]


class BuildWithFallback(BuildExtension):
    """torch's BuildExtension that, when the CUDA build fails and VQAUDIO_CUDA is unset, builds CPU-only instead.

    The retry runs torch's build_extensions again on a copy of the compiler taken before the first run
    patched it, with the extension's fields replaced by the CPU-only ones (setuptools' private fields,
    such as the output file name, are kept).
    """

    choice: BuildChoice = CHOICE

    def build_extensions(self) -> None:
        print(f"setup.py: {self.choice.reason}", flush=True)
        pristine = copy.copy(self.compiler)
        try:
            super().build_extensions()
        except Exception as err:
            if not self.choice.cuda:
                raise
            why = f"the CUDA build failed ({first_line(err)})"
            if self.choice.required:
                raise SystemExit(f"setup.py: VQAUDIO_CUDA=1 but {why}") from err
            print(f"setup.py: {why}; building CPU-only instead (VQAUDIO_CUDA=1 makes this an error)", flush=True)
            self.choice = BuildChoice(False, False, None, f"CPU-only build: {why}")
            self.compiler = pristine
            cpu = extension(cuda=False)
            for ext in self.extensions:
                vars(ext).update({k: v for k, v in vars(cpu).items() if not k.startswith("_")})
            super().build_extensions()

    def run(self) -> None:
        super().run()
        record = {"cuda": self.choice.cuda, "reason": self.choice.reason,
                  "cuda_home": str(self.choice.toolkit.root) if self.choice.toolkit else None,
                  "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if self.choice.cuda else None}
        for ext in self.extensions:
            target = Path(self.get_ext_fullpath(ext.name)).with_name(RECORD_NAME)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(target)


setup(
    ext_modules=[extension(CHOICE.cuda)],
    cmdclass={"build_ext": BuildWithFallback.with_options(use_ninja=True)},
)
