"""The one wall-clock timer of the package's benchmarks (:mod:`nblib.perf.benchmark`, :mod:`nblib.perf.throughput`,
``benchmarks/*.py``): :func:`time_calls`, and :func:`device_sync` (what it waits on)."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

__all__ = ["device_sync", "time_calls"]


def device_sync(device) -> Callable[[], None]:
    """A zero-argument callable that waits for ``device``'s queued work (CUDA), a no-op elsewhere."""
    dev = torch.device(device)
    return (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)


def time_calls(fn: Callable[[], object], runs: int, budget_s: float = math.inf, device="cpu",
               warmup: int = 1) -> tuple[float, int]:
    """Median wall seconds per call of ``fn`` over up to ``runs`` calls, after ``warmup`` untimed calls.

    Each call is timed on its own (``time.perf_counter``, the device synchronised before and after, so
    queued GPU work is counted in the call that queued it).  Timing stops early once ``budget_s`` seconds
    of timed calls are spent (at least one call is timed).  The statistic is the **median**: a load spike
    of a shared machine during a few calls moves neither it nor the ranking of methods, while the mean
    would follow the spike and the minimum would report one lucky call (and, with one or two calls,
    is as noisy as either).  The grad mode is the caller's (wrap ``torch.no_grad()`` around the call for
    inference).  Returns ``(median seconds per call, calls timed)``."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    sync = device_sync(device)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    while len(times) < runs and (not times or sum(times) < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)
