"""Small timing helpers shared by the benchmark scripts: thread control, median-of-repeats timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads (and 1 inter-op thread when that can still be set)."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started
        pass


def time_ms(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, budget_s: float | None = None) -> list[float]:
    """Wall-clock ms of ``fn()`` for ``repeats`` calls after ``warmup`` calls (fewer if ``budget_s`` runs out).

    Synchronises CUDA around each call when it is available.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)
