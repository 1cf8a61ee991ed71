"""Shared timing helper of the perf scripts: both sides of a ratio are timed the same way."""
from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls after one warm-up call (the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """``best_time`` of each function, with the repeats of all functions interleaved.

    A burst of load from elsewhere then slows one repeat of every side instead of every repeat
    of one side, so the ratio of the best times stays fair on a shared machine.
    """
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best
