"""scripts/setup.sh with apt-get, dpkg, sudo and Python replaced by logging stubs: what it installs, in which
order, and that an optional metric package that cannot be installed never fails the setup."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_APT = ["asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
            "asterisk-core-sounds-it-wav", "codec2", "opus-tools", "sox", "shellcheck"]
SPEECH_APT = ["asterisk-prompt-es-co", "asterisk-prompt-fr-armelle", "asterisk-prompt-it-menardi-wav", "klettres-data",
              "ktuberling-data", "fillets-ng-data-cs", "fillets-ng-data-nl"]
VENV_PYTHON = r"""#!/bin/bash
# .venv/bin/python stub: logs its arguments; `-m pip install` fails when an argument is listed in $FAIL;
# `-c` prints the eval extra ($EVAL_PKGS) for the metadata query and a summary line otherwise.
echo "python $*" >> "$LOG"
if [ "$1" = -c ]; then
  case "$2" in *'requires("vqaudio")'*) printf '%s\n' $EVAL_PKGS;; *) echo "setup: summary";; esac
  exit 0
fi
for a in "$@"; do
  for f in $FAIL; do [ "$a" = "$f" ] && { echo "pip: cannot build $a" >&2; exit 1; }; done
done
exit 0
"""
STUBS = {
    "python3": '#!/bin/bash\n[ "$1 $2" = "-m venv" ] || exit 9\nmkdir -p "$3/bin"\ncp "$STUBS/venv-python" "$3/bin/python"\n',
    "dpkg": '#!/bin/bash\nfor p in $INSTALLED; do [ "$2" = "$p" ] && exit 0; done\nexit 1\n',
    "apt-get": '#!/bin/bash\necho "apt-get $*" >> "$LOG"\n',
    "sudo": '#!/bin/bash\n"$@"\n',
    "venv-python": VENV_PYTHON,
}


def run_setup(tmp_path: Path, fail: str = "", installed: list[str] | None = None) -> tuple[subprocess.CompletedProcess,
                                                                                               list[str]]:
    repo, stubs, log = tmp_path / "repo", tmp_path / "stubs", tmp_path / "log"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "LOG": str(log), "STUBS": str(stubs), "FAIL": fail,
           "PYTHON": str(stubs / "python3"), "EVAL_PKGS": "pesq pystoi",
           "INSTALLED": " ".join(BASE_APT + SPEECH_APT if installed is None else installed)}
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                       timeout=60)
    return r, log.read_text().splitlines() if log.exists() else []


def index_of(lines: list[str], *words: str) -> int:
    found = [i for i, ln in enumerate(lines) if all(w in ln.split() for w in words)]
    assert len(found) == 1, (words, lines)
    return found[0]


def test_build_requirements_are_installed_before_the_build_without_isolation(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    r, log = run_setup(tmp_path)
    assert r.returncode == 0, r.stderr
    build = index_of(log, "--no-build-isolation", "-e", ".[test,bench,series]")
    first = index_of(log, "install", "numpy", "torch==2.11.0")
    assert first < build
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = set(pyproject["build-system"]["requires"]) - {"setuptools>=64"} | {"setuptools", "numpy"}
    assert needed <= set(log[first].split()), needed - set(log[first].split())
    assert "pesq" not in log[build] and "pystoi" not in log[build]
    assert build < index_of(log, "install", "pesq") < index_of(log, "install", "pystoi")
    assert not any("--no-build-isolation" in ln for ln in log[build + 1:])
    assert r.stdout.strip().splitlines()[-1] == "setup: summary" and r.stderr == ""


def test_an_optional_package_that_fails_is_one_warning(tmp_path):
    r, log = run_setup(tmp_path, fail="pesq")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["setup: warning: the optional package pesq could not be installed (pip's output: "
                                     ".venv/setup-pesq.log); vqaudio works without it, the metrics and tests that need "
                                     "it are skipped"]
    assert "pip: cannot build pesq" in (tmp_path / "repo" / ".venv" / "setup-pesq.log").read_text()
    index_of(log, "install", "pystoi")  # still tried
    assert r.stdout.strip().splitlines()[-1] == "setup: summary"


@pytest.mark.parametrize("fail", ["torch==2.11.0", "--no-build-isolation"])
def test_a_core_install_that_fails_fails_the_setup(tmp_path, fail):
    r, log = run_setup(tmp_path, fail=fail)
    assert r.returncode != 0 and f"pip: cannot build {fail}" in r.stderr
    assert not any("pesq" in ln for ln in log) and "setup: summary" not in r.stdout


def test_apt_installs_what_is_missing_and_the_extra_speech_without_recommends(tmp_path):
    r, log = run_setup(tmp_path, installed=["sox", "klettres-data"])
    assert r.returncode == 0, r.stderr
    apt = [ln.split() for ln in log if ln.startswith("apt-get")]
    assert apt[0] == ["apt-get", "update", "-qq"]
    base = [p for p in BASE_APT if p != "sox"]
    speech = [p for p in SPEECH_APT if p != "klettres-data"]
    assert apt[1:] == [["apt-get", "install", "-y", "-qq", *base],
                       ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *speech]]


def test_apt_is_not_called_when_everything_is_installed(tmp_path):
    r, log = run_setup(tmp_path)
    assert r.returncode == 0 and not [ln for ln in log if ln.startswith("apt-get")]


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    r = subprocess.run(["shellcheck", "scripts/setup.sh", ".ci/run"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def run_ci(tmp_path: Path, main: str, tests: str, venv: bool = False) -> tuple[subprocess.CompletedProcess, str]:
    """.ci/run in a copy of the repository whose README's two commands are ``main`` and ``tests``."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "README.md").write_text(f"# x\n\n```bash\n{main}   # setup + main job\n{tests}   # tests\n```\n# tests\n")
    if venv:
        (repo / ".venv").mkdir()
    r = subprocess.run(["bash", str(repo / ".ci" / "run")], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=60)
    log = repo / "log"
    return r, log.read_text() if log.exists() else ""


def test_ci_runs_the_readmes_two_commands_with_the_cuda_build_required(tmp_path):
    r, log = run_ci(tmp_path, 'echo "main VQAUDIO_CUDA=$VQAUDIO_CUDA" >> log && echo "and more" >> log',
                    "echo tests >> log")
    assert r.returncode == 0, r.stderr
    assert log == "main VQAUDIO_CUDA=1\nand more\ntests\n"
    readme = (ROOT / "README.md").read_text().splitlines()
    assert sum(ln.endswith("# setup + main job") and "scripts/setup.sh" in ln for ln in readme) == 1
    assert sum(ln.endswith("# tests") and "pytest" in ln and not ln.startswith("#") for ln in readme) == 1


@pytest.mark.parametrize(("main", "tests", "log"), [("false", "echo tests >> log", ""),
                                                    ("true", "echo tests >> log; false", "tests\n")])
def test_ci_fails_when_either_command_fails(tmp_path, main, tests, log):
    r, got = run_ci(tmp_path, main, tests)
    assert r.returncode != 0 and got == log


def test_ci_wants_a_fresh_venv(tmp_path):
    r, log = run_ci(tmp_path, "echo main >> log", "echo tests >> log", venv=True)
    assert r.returncode == 1 and log == ""
    assert r.stderr.strip() == "ci: .venv exists: CI builds in a fresh one (run it on a clean clone)"
