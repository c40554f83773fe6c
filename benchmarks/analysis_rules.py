"""Run-rule benchmark: all twelve rules (Nelson 1-8, Western Electric 1-4) over a long
series, vectorised against a plain-Python loop, and the streaming evaluator per point.

The series is in-control noise with planted shifts, trends, oscillations and quiet
stretches, so every rule has hits. The baseline is the reference implementation the
tests hold the vectorised rules to (``reference_hits`` in tests/test_spc_rules.py): for
every point it looks back over each rule's window in plain Python. It runs in the same
process on the same data; being linear in the number of points, it is timed on a
leading slice (100k points by default) and scaled up, as the printed table says. The
two answers are compared on that slice before anything is timed.

    python benchmarks/analysis_rules.py                         # 1M points
    python benchmarks/analysis_rules.py --points 200000 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from figures import median_seconds

from sqems.analysis.rules import ALL_RULES, RULES, evaluate
from sqems.analysis.streaming import RuleMonitor

CENTER, SIGMA = 10.0, 0.5
REFERENCE_FILE = Path(__file__).resolve().parent.parent / "tests" / "test_spc_rules.py"


def _reference() -> ModuleType:
    """The tests' reference module, loaded by path (the tests are not a package)."""
    spec = importlib.util.spec_from_file_location("spc_rules_reference", REFERENCE_FILE)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the reference rules from {REFERENCE_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def series(n_points: int, seed: int) -> np.ndarray:
    """Readings around ``CENTER`` with planted special causes every ~200 points."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.0, n_points)
    for start in rng.integers(0, max(1, n_points - 40), n_points // 200):
        match int(rng.integers(4)):
            case 0:
                z[start : start + 30] += 1.3
            case 1:
                z[start : start + 20] = np.linspace(-2, 2, 20) + rng.normal(0, 0.05, 20)
            case 2:
                z[start : start + 20] = np.tile([0.8, -0.8], 10) + rng.normal(0, 0.1, 20)
            case _:
                z[start : start + 20] *= 0.2
    readings: np.ndarray = CENTER + SIGMA * z
    return readings


def rules_benchmark(
    n_points: int,
    seed: int,
    *,
    repeats: int = 7,
    baseline_points: int = 100_000,
    baseline_repeats: int = 3,
    stream_points: int = 200_000,
) -> dict[str, Any]:
    """Time all rules over ``n_points`` readings: vectorised, plain-loop baseline
    (timed on ``baseline_points`` and scaled linearly) and the streaming evaluator
    (timed on ``stream_points``, per reading). Medians of the repeats, in seconds."""
    x = series(n_points, seed)
    head = x[: min(baseline_points, n_points)]
    reference = _reference()
    vectorised_head = {k: v.tolist() for k, v in evaluate(head, CENTER, SIGMA, ALL_RULES).items()}
    if vectorised_head != reference.reference_hits(head.tolist(), CENTER, SIGMA):
        raise AssertionError("vectorised rules and the reference disagree; fix before timing")

    hits = evaluate(x, CENTER, SIGMA, ALL_RULES)
    vectorised = median_seconds(lambda: evaluate(x, CENTER, SIGMA, ALL_RULES), repeats)
    head_list = head.tolist()
    baseline_head = median_seconds(
        lambda: reference.reference_hits(head_list, CENTER, SIGMA), baseline_repeats
    )
    baseline = baseline_head * n_points / head.size
    stream_values = x[: min(stream_points, n_points)].tolist()

    def stream() -> None:
        monitor = RuleMonitor(CENTER, SIGMA, ALL_RULES)
        for value in stream_values:
            monitor.push(value)

    streaming = median_seconds(stream, max(1, baseline_repeats))
    return {
        "points": n_points,
        "seed": seed,
        "rules": len(RULES),
        "hits": {name: int(idx.size) for name, idx in hits.items()},
        "vectorised_s": vectorised,
        "baseline_s": baseline,
        "baseline_points": int(head.size),
        "baseline_measured_s": baseline_head,
        "speedup": baseline / vectorised,
        "vectorised_per_point_ns": vectorised / n_points * 1e9,
        "streaming_per_point_us": streaming / len(stream_values) * 1e6,
        "streaming_points": len(stream_values),
        "repeats": repeats,
        "baseline_repeats": baseline_repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-points", type=int, default=100_000)
    args = parser.parse_args()
    print_rules(
        rules_benchmark(
            args.points, args.seed, repeats=args.repeats, baseline_points=args.baseline_points
        )
    )


def print_rules(r: dict[str, Any]) -> None:
    """The figures of :func:`rules_benchmark` as a table."""
    scaled = r["baseline_points"] < r["points"]
    note = "*" if scaled else ""
    print(
        f"run rules: {r['rules']} rules (Nelson 1-8, Western Electric 1-4) over "
        f"{r['points']:,} points, seed {r['seed']}, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, numpy {np.__version__}"
    )
    print(f"{'':<28}{'median':>12}{'per point':>14}")
    print(
        f"{'vectorised (numpy)':<28}{r['vectorised_s']:>11.3f}s"
        f"{r['vectorised_per_point_ns']:>11.0f} ns   ({r['repeats']} repeats)"
    )
    print(
        f"{'plain-Python loop':<28}{r['baseline_s']:>10.2f}s{note}"
        f"{r['baseline_s'] / r['points'] * 1e6:>11.2f} us   ({r['baseline_repeats']} repeats)"
    )
    print(f"{'speed-up':<28}{r['speedup']:>11.0f}x")
    print(
        f"{'streaming RuleMonitor.push':<28}{'':>12}{r['streaming_per_point_us']:>11.2f} us"
        f"   (all 12 rules, {r['streaming_points']:,} points)"
    )
    if scaled:
        print(
            f"* the loop was timed on the first {r['baseline_points']:,} points "
            f"({r['baseline_measured_s']:.2f} s) and scaled linearly to {r['points']:,}; "
            "both give identical hits on that slice"
        )
    hits = ", ".join(f"{name} {count}" for name, count in r["hits"].items())
    print(f"hits: {hits}")


if __name__ == "__main__":
    main()
