"""How fast the ``sqems`` command starts: ``sqems --help``, a recall and a trace on the
demo plant, each run as a user runs it (a fresh process), beside the same commands at
the code before the CLI imported lazily and beside the floor, ``python -c pass``.

Builds the demo plant (5,000 units, seed 7, as ``sqems demo``) in a temporary data
directory, checks out the baseline revision in a temporary ``git worktree`` and runs it
with this interpreter and ``PYTHONPATH`` pointing at it, so both sides share the venv,
the store and the machine (each runs in the data directory: ``sqems`` is a namespace
package, and a checkout in the working directory would join it). Runs are interleaved
(one of each per round) so that a busy moment slows both sides alike. Prints the median
and p95 wall time of each and the ratios.

    python benchmarks/cli.py
    python benchmarks/cli.py --runs 30 --baseline e2f5b66
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "e2f5b66"  # the last commit before sqems/cli became a lazily importing package
ENTRY = "from sqems.cli import main; main()"


def build_plant(data: Path, units: int, seed: int) -> tuple[str, str]:
    """Load the demo plant into ``data``'s embedded store; the bad lot and one of its units."""
    from sqems.datasets import PlantSpec, generate, load_plant  # noqa: PLC0415
    from sqems.datasets.files import plant_sections  # noqa: PLC0415
    from sqems.graph_model import (  # noqa: PLC0415
        EmbeddedGraphStore,
        RecallSource,
        SourceKind,
        Traceability,
    )

    plant = generate(PlantSpec(units=units, seed=seed))
    lot = str(plant.truth["causes"][0]["uid"])
    store = EmbeddedGraphStore(data / "graph.db")
    try:
        load_plant(store, plant_sections(plant))
        scope = Traceability(store).recall_scope(RecallSource(SourceKind.LOT, lot))
    finally:
        store.close()
    return lot, scope.units[0].uid


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return took


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command and side")
    parser.add_argument("--baseline", default=BASELINE, help="the revision to compare with")
    parser.add_argument("--units", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sqems-cli-bench-") as tmp:
        data, base = Path(tmp) / "data", Path(tmp) / "baseline"
        data.mkdir()
        print(f"building the demo plant ({args.units:,} units, seed {args.seed})…", flush=True)
        lot, unit = build_plant(data, args.units, args.seed)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(base),
             args.baseline],
            check=True,
        )  # fmt: skip
        try:
            # byte code cached as an installed package has it (pip compiles on install),
            # under the temporary directory, whatever PYTHONDONTWRITEBYTECODE says here
            env = {**os.environ, "SQEMS_DATA_DIR": str(data), "COLUMNS": "100",
                   "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}  # fmt: skip
            for name in ("SQEMS_GRAPH_URI", "PYTHONDONTWRITEBYTECODE"):
                env.pop(name, None)
            sides = {
                "before": {**env, "PYTHONPATH": str(base)},
                "after": {**env, "PYTHONPATH": str(ROOT)},
            }
            commands = {
                "sqems --help": ["--help"],
                f"sqems recall --lot {lot}": ["recall", "--lot", lot],
                f"sqems trace --unit {unit}": ["trace", "--unit", unit],
            }
            floor_argv = [sys.executable, "-c", "pass"]
            times: dict[tuple[str, str], list[float]] = {}
            floor: list[float] = []
            for side_env in sides.values():  # warm-up: byte-compile both trees
                for argv in commands.values():
                    timed([sys.executable, "-c", ENTRY, *argv], side_env, data)
            print(f"{args.runs} rounds, each runs every command on both sides…", flush=True)
            for _ in range(args.runs):
                floor.append(timed(floor_argv, env, data))
                for name, argv in commands.items():
                    for side, side_env in sides.items():
                        took = timed([sys.executable, "-c", ENTRY, *argv], side_env, data)
                        times.setdefault((name, side), []).append(took)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False
            )

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):6.2f} / {p95(values):5.2f}"

    floor_median = statistics.median(floor)
    print(f"\nwall time in s, median / p95 of {args.runs} runs; before = {args.baseline}")
    print(f"floor (python -c pass): {cell(floor)}")
    print(f"{'command':<36} {'before':>15} {'after':>15} {'speed-up':>9} {'after/floor':>12}")
    for name in commands:
        before, after = times[(name, "before")], times[(name, "after")]
        ratio = statistics.median(before) / statistics.median(after)
        over = statistics.median(after) / floor_median
        print(f"{name:<36} {cell(before):>15} {cell(after):>15} {ratio:>8.1f}x {over:>11.1f}x")


if __name__ == "__main__":
    main()
