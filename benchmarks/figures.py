"""Summary figures the benchmarks share (imported from the scripts beside it)."""

from __future__ import annotations

import statistics


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
