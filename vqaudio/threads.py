"""CPU thread defaults of the ``vqaudio`` command line, set before torch is imported.

- ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: idle OpenMP threads sleep instead of spinning. On a
  machine shared with other busy processes, spinning threads steal the cores the working threads need
  (docs/benchmarks.md, 2 cores: training 4.3-5.4x and encoding 1.9-3.7x faster than torch's default).
- ``OMP_NUM_THREADS`` = the CPUs the process may run on (its affinity mask, e.g. under ``taskset`` or a
  container's cpuset) unless the user set it.

A program that imported torch before calling :func:`vqaudio.cli.main` keeps its own settings.
"""

from __future__ import annotations

import os
import sys

__all__ = ["usable_cpus", "apply_cli_defaults"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def apply_cli_defaults() -> bool:
    """Set the defaults above in ``os.environ`` (also for child processes); ``False`` (nothing changed) when
    torch is already imported, since OpenMP reads them only once, when torch loads."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(usable_cpus()))
    return True
