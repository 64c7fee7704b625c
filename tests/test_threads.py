"""The command line's CPU thread defaults: OMP_WAIT_POLICY=PASSIVE unless set, threads = the CPUs of the process's
affinity mask, applied before torch loads (the speed they buy is measured by benchmarks/bench_threads.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vqaudio.threads import apply_cli_defaults, usable_cpus

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import os, sys; from vqaudio.cli import main; main(['models']); import torch; "
         "print(os.environ['OMP_WAIT_POLICY'], os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")


def probe(env_extra: dict[str, str], prefix: list[str] = ()) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(PYTHONPATH=str(ROOT), **env_extra)
    out = subprocess.run([*prefix, sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-3:]


def test_cli_sets_passive_waiting_and_threads_from_the_affinity():
    n = usable_cpus()
    assert probe({}) == ["PASSIVE", str(n), str(n)]
    assert probe({"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}) == ["ACTIVE", "1", "1"]  # the user's choice


@pytest.mark.skipif(shutil.which("taskset") is None or usable_cpus() < 2, reason="needs taskset and 2 CPUs")
def test_threads_follow_taskset():
    assert probe({}, ["taskset", "-c", "0"]) == ["PASSIVE", "1", "1"]


def test_nothing_changes_once_torch_is_loaded(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "torch" in sys.modules and apply_cli_defaults() is False and "OMP_WAIT_POLICY" not in os.environ
