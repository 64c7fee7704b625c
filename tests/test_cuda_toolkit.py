"""buildtools.cuda_toolkit: which CUDA toolkit setup.py accepts, over fake toolkits in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildtools.cuda_toolkit import Search, choose_build, cudart_dir, find_toolkit, missing_parts, nvcc_top

NOWHERE = Path("/nonexistent/cuda")


def make_toolkit(root: Path, *, lib: str | None = "lib64", header: bool = True, top: Path | None = None) -> Path:
    """A fake toolkit: bin/nvcc (a script that answers ``--dryrun`` with ``#$ TOP=<top>/bin/..`` when ``top``
    is given, else fails), include/cuda_runtime.h, <lib>/libcudart.so."""
    (root / "bin").mkdir(parents=True)
    answer = f'echo "#\\$ TOP={top}/bin/.." >&2; exit 0' if top else 'echo "nvcc: fake" >&2; exit 1'
    write_script(root / "bin" / "nvcc", f'case "$*" in *--dryrun*) {answer};; esac\nexit 1\n')
    if header:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime.h").write_text("")
    if lib:
        (root / lib).mkdir()
        (root / lib / "libcudart.so").write_text("")
    return root


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def search(env: dict[str, str] | None = None, nvcc_on_path: Path | None = None, default: Path = NOWHERE) -> Search:
    return find_toolkit(env or {}, which=lambda name: str(nvcc_on_path) if nvcc_on_path else None, default=default)


def test_complete_toolkit_in_cuda_home(tmp_path):
    root = make_toolkit(tmp_path / "cuda-13.0")
    found = search({"CUDA_HOME": str(root)})
    assert found.toolkit is not None and found.toolkit.root == root and found.toolkit.lib_dir == root / "lib64"
    assert found.toolkit.nvcc == root / "bin" / "nvcc"
    assert found.reason == f"CUDA toolkit {root} (found from CUDA_HOME={root})"


def test_wrapper_script_on_path_is_followed_through_nvcc_dryrun(tmp_path):
    """The fresh-machine case: /usr/local/bin/nvcc is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`, and
    /usr/local has bin/nvcc but neither the CUDA headers nor the libraries."""
    real = tmp_path / "cuda-13.0"
    make_toolkit(real, top=real)
    wrapper = write_script(tmp_path / "local" / "bin" / "nvcc", f'exec {real}/bin/nvcc "$@"\n')
    found = search(nvcc_on_path=wrapper)
    assert found.toolkit is not None and found.toolkit.root == real.resolve()
    assert found.toolkit.found_by == f"nvcc on PATH at {wrapper}, root from nvcc --dryrun"
    assert missing_parts(tmp_path / "local") == ["include/cuda_runtime.h", "lib64/libcudart.so"]


def test_symlinked_nvcc_is_resolved_without_running_it(tmp_path):
    real = make_toolkit(tmp_path / "opt" / "cuda-12.8")  # its nvcc answers nothing: only the symlink can lead here
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").symlink_to(real / "bin" / "nvcc")
    found = search(nvcc_on_path=tmp_path / "bin" / "nvcc")
    assert found.toolkit is not None and found.toolkit.root == real.resolve()
    assert found.toolkit.found_by.endswith("root of the resolved nvcc")


def test_cuda_home_pointing_at_the_wrapper_folder_is_followed(tmp_path):
    """CUDA_HOME=/usr/local (bin/nvcc is a wrapper there) leads to the real toolkit, not to -L/usr/local/lib64."""
    real = tmp_path / "cuda-13.0"
    make_toolkit(real, top=real)
    write_script(tmp_path / "local" / "bin" / "nvcc", f'exec {real}/bin/nvcc "$@"\n')
    found = search({"CUDA_HOME": str(tmp_path / "local")})
    assert found.toolkit is not None and found.toolkit.root == real.resolve()


def test_toolkit_without_libraries_is_refused_with_what_it_lacks(tmp_path):
    root = make_toolkit(tmp_path / "cuda", lib=None)
    found = search({"CUDA_HOME": str(root)})
    assert found.toolkit is None
    assert found.reason == ("no complete CUDA toolkit (nvcc, include/cuda_runtime.h, libcudart): "
                            f"CUDA_HOME={root}: {root} lacks lib64/libcudart.so")
    choice = choose_build({"CUDA_HOME": str(root)}, search=lambda: found)
    assert not choice.cuda and choice.reason == f"CPU-only build: {found.reason}"
    with pytest.raises(ValueError, match=r"^VQAUDIO_CUDA=1 but no complete CUDA toolkit .* lacks lib64/libcudart.so"):
        choose_build({"VQAUDIO_CUDA": "1"}, search=lambda: found)


def test_toolkit_without_headers_is_refused(tmp_path):
    root = make_toolkit(tmp_path / "cuda", header=False)
    assert missing_parts(root) == ["include/cuda_runtime.h"]
    assert search({"CUDA_PATH": str(root)}).toolkit is None


def test_lib_folder_follows_torchs_rule(tmp_path):
    """torch links cudart from lib64, or from lib only when there is no lib64 at all."""
    only_lib = make_toolkit(tmp_path / "a", lib="lib")
    assert cudart_dir(only_lib) == only_lib / "lib" and missing_parts(only_lib) == []
    empty_lib64 = make_toolkit(tmp_path / "b", lib="lib")
    (empty_lib64 / "lib64").mkdir()
    assert missing_parts(empty_lib64) == ["lib64/libcudart.so"]


def test_lib_folder_matches_torch_cpp_extension(tmp_path, monkeypatch):
    """The folders checked are those torch.utils.cpp_extension passes to the compiler and the linker."""
    cpp_extension = pytest.importorskip("torch.utils.cpp_extension")
    for lib in ("lib64", "lib"):
        root = make_toolkit(tmp_path / lib, lib=lib)
        monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(root))
        monkeypatch.setattr(cpp_extension, "IS_HIP_EXTENSION", False)
        assert str(cudart_dir(root)) in cpp_extension.library_paths(device_type="cuda")
        assert str(root / "include") in cpp_extension.include_paths(device_type="cuda")


def test_cuda_home_is_the_only_candidate_when_set(tmp_path):
    """As in torch: an explicit CUDA_HOME (or CUDA_PATH) is never silently replaced by another toolkit."""
    good = make_toolkit(tmp_path / "good")
    broken = make_toolkit(tmp_path / "broken", lib=None)
    found = search({"CUDA_HOME": str(broken)}, nvcc_on_path=good / "bin" / "nvcc", default=good)
    assert found.toolkit is None and f"CUDA_HOME={broken}" in found.reason
    assert search({"CUDA_HOME": str(good), "CUDA_PATH": str(broken)}).toolkit.root == good
    assert search({"CUDA_PATH": str(good)}).toolkit.root == good


def test_path_then_default_folder(tmp_path):
    broken = make_toolkit(tmp_path / "broken", lib=None)
    default = make_toolkit(tmp_path / "cuda")
    found = search(nvcc_on_path=broken / "bin" / "nvcc", default=default)
    assert found.toolkit.root == default and found.toolkit.found_by == str(default)


def test_nothing_found_says_where_it_looked(tmp_path):
    found = search(default=tmp_path / "cuda")
    assert found.toolkit is None
    assert found.reason == f"no CUDA toolkit: CUDA_HOME and CUDA_PATH are unset, no nvcc on PATH, no {tmp_path / 'cuda'}"
    assert search({"CUDA_HOME": str(tmp_path / "gone")}).reason.endswith(f"{tmp_path / 'gone'} lacks the folder itself")


def test_nvcc_top(tmp_path):
    top = tmp_path / "cuda-13.0"
    answers = make_toolkit(top, top=top)
    assert nvcc_top(answers / "bin" / "nvcc") == top.resolve()
    silent = make_toolkit(tmp_path / "other")
    assert nvcc_top(silent / "bin" / "nvcc") is None
    assert nvcc_top(tmp_path / "missing" / "nvcc") is None
    hangs = write_script(tmp_path / "slow" / "nvcc", "sleep 5\n")
    assert nvcc_top(hangs, timeout=0.2) is None


def test_not_executable_nvcc_is_not_a_toolkit(tmp_path):
    root = make_toolkit(tmp_path / "cuda")
    (root / "bin" / "nvcc").chmod(0o644)
    assert missing_parts(root) == ["bin/nvcc"]


def test_vqaudio_cuda_flag(tmp_path):
    root = make_toolkit(tmp_path / "cuda")
    env = {"CUDA_HOME": str(root)}

    def never() -> Search:
        raise AssertionError("VQAUDIO_CUDA=0 must not look for a toolkit")

    assert choose_build({**env, "VQAUDIO_CUDA": "0"}, search=never).reason == "CPU-only build requested (VQAUDIO_CUDA=0)"
    unset = choose_build(env)
    assert unset.cuda and not unset.required and unset.toolkit.root == root
    required = choose_build({**env, "VQAUDIO_CUDA": "1"})
    assert required.cuda and required.required
    with pytest.raises(ValueError, match="^VQAUDIO_CUDA must be 0, 1 or unset, not 'yes'$"):
        choose_build({"VQAUDIO_CUDA": "yes"})
    with pytest.raises(ValueError, match="^VQAUDIO_CUDA=1 but no CUDA toolkit"):
        choose_build({"VQAUDIO_CUDA": "1"}, search=lambda: search(default=tmp_path / "none"))
