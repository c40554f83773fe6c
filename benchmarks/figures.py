"""Summary figures the benchmarks share (imported from the scripts beside it)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(samples_ms: list[float], seconds: float, errors: int = 0) -> dict[str, float]:
    """Throughput and p50/p99 of requests timed over ``seconds``."""
    return {
        "requests": len(samples_ms),
        "rps": len(samples_ms) / seconds,
        "p50": statistics.median(samples_ms),
        "p99": percentile(samples_ms, 0.99),
        "errors": errors,
    }


def median_seconds(run: Callable[[], object], repeats: int, *, warm: bool = False) -> float:
    """Median wall time of ``repeats`` calls of ``run`` (after one unmeasured call when
    ``warm``)."""
    if warm:
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
