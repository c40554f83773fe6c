"""A complaint investigated end to end, on many generated plants: is the answer right,
does the recall cover every affected unit, and how long does it take?

**Accuracy.** For each shape (``drives``: boards into drives; ``battery``: cells into
modules into packs, the bad lot two BOM levels below the complained pack) and seed, a
plant is generated and loaded into an in-memory embedded store. For each planted cause,
up to ``--complaints`` complaints of its defect type about units that the cause reached
are investigated, each from that one complaint (``investigate``, what-if proposed but not
simulated). Counted:

* the planted cause is the **leading cause** (first significant cause that reached the
  unit), and within the top 3 significant factors;
* a **non-significant factor presented as a cause** (must never happen), and a leading
  cause that is not the planted one (a wrong but significant answer);
* the **suggested recall**: the share of truly affected units it contains (truly
  defective units of the cause's defect type that the cause reached: made from the bad
  lot, in the shift, or in a drift batch whose run was past the threshold where the
  drift causes defects; goal 100 %), and its precision — the share of its units that
  the cause reached.

On **null plants** (the same generator, every planted cause off) complaints are
investigated too: any leading cause there is a false finding.

**Speed.** On one ``--speed-units`` plant (default 100k units), ``investigate`` of a
bad-lot complaint with its what-if simulated, timed twice: with the line's twin fitted
from scratch, and again with its fit cached on disk (a new runner on the same folder);
with the product's sampler, then the same sampler without its first, shorter run
(``--no-first-baseline`` skips it) and, as a further baseline, PyMC's own NUTS
(``--baseline``).

    python benchmarks/investigate.py                        # 10 seeds x 2 shapes, 20k units
    python benchmarks/investigate.py --seeds 2 --units 10000 --speed-units 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# the planted-cause matching of the accuracy benchmark, run as a script from this
# directory
from rca import is_cause

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.battery_layout import BatteryCauses
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import Causes
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore, Traceability
from sqems.graph_model.nodes import ProcessRun
from sqems.investigation import investigate, run_fix
from sqems.investigation.case import read_case
from sqems.simulation.runner import WhatIfRunner
from sqems.twin.fitting import Sampler

OUT, IN = Direction.OUT, Direction.IN


def exposed_batches(store: GraphStore, cause: dict[str, Any], shape: str) -> set[str]:
    """The batches the planted cause acted on: a lot's batches; the shift's batches at
    its step; the drift's batches whose run went past the threshold where the drift
    starts to cause defects (the generator's ``void_threshold`` / ``weak_threshold``;
    before it, a drift batch has only the defect type's base rate)."""
    if cause["kind"] == "shift":
        runs = store.get_many(e.src for e in store.edges([cause["step"]], {"FOR_STEP": IN}))
        night = [
            u for u, r in runs.items() if isinstance(r, ProcessRun) and r.shift == cause["uid"]
        ]
        return {e.src for e in store.edges(night, {"RAN": IN})}
    if cause["kind"] == "parameter_drift":
        threshold = (
            BatteryCauses().weak_threshold if shape == "battery" else Causes().void_threshold
        )
        down = cause["drift"] < 0
        runs = [e.dst for e in store.edges(cause["batches"], {"RAN": OUT})]
        past = [
            e.src
            for e in store.edges(runs, {"RECORDED": OUT})
            if e.dst == cause["parameter"]
            and (e.props["value"] < threshold if down else e.props["value"] > threshold)
        ]
        return {e.src for e in store.edges(past, {"RAN": IN})}
    return set(cause["batches"])


def reached_units(store: GraphStore, batches: set[str]) -> set[str]:
    """Every unit made in ``batches`` or built from one that was."""
    if not batches:
        return set()
    return set(Traceability(store).downstream(sorted(batches)).nodes("Unit"))


def affected_units(plant: Any, cause: dict[str, Any], reached: set[str]) -> set[str]:
    """Truly defective units of the cause's defect type that the cause reached."""
    rows = plant.truth_units.columns
    return {
        u
        for u, types in zip(rows["uid"], rows["defect_types"], strict=True)
        if cause["defect_type"] in types.split(";") and u in reached
    }


def complaints_of(store: GraphStore, defect_type: str) -> list[str]:
    return sorted(
        e.src for e in store.edges([defect_type], {"OF_TYPE": IN}) if e.src.startswith("CMP-")
    )


def load(shape: str, units: int, seed: int, null: bool) -> tuple[Any, EmbeddedGraphStore]:
    causes: Any = None
    if null:
        causes = (
            BatteryCauses.none()
            if shape == "battery"
            else Causes(bad_lot_added_p=0.0, drift_amount=0.0, shift_added_p=0.0)
        )
    plant = generate(PlantSpec(shape=shape, units=units, seed=seed), causes)
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    return plant, store


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    null_rows: list[dict[str, Any]] = []
    shapes = ["drives", "battery"] if args.shape == "both" else [args.shape]
    for shape in shapes:
        for seed in range(1, args.seeds + 1):
            began = time.perf_counter()
            plant, store = load(shape, args.units, seed, null=False)
            for cause in plant.truth["causes"]:
                batches = exposed_batches(store, cause, shape)
                reached = reached_units(store, batches)
                affected = affected_units(plant, cause, reached)
                chosen = [
                    c
                    for c in complaints_of(store, cause["defect_type"])
                    if read_case(store, c).unit in reached
                ][: args.complaints]
                for uid in chosen:
                    t = time.perf_counter()
                    found = investigate(store, uid)
                    seconds = time.perf_counter() - t
                    significant = [c for c in found.report.causes if c.significant]
                    planted_at = next(
                        (
                            i
                            for i, c in enumerate(significant, start=1)
                            if any(is_cause(f, cause) for f in (c.factor, *c.aliases))
                        ),
                        None,
                    )
                    lead = found.leading
                    scope = found.recall.units if found.recall else set()
                    rows.append(
                        {
                            "shape": shape,
                            "seed": seed,
                            "cause": cause["id"],
                            "complaint": uid,
                            "first": lead is not None
                            and any(is_cause(f, cause) for f in (lead.factor, *lead.aliases)),
                            "top3": planted_at is not None and planted_at <= 3,
                            "not_significant_presented": lead is not None and not lead.significant,
                            "wrong_lead": lead is not None
                            and not any(is_cause(f, cause) for f in (lead.factor, *lead.aliases)),
                            "named": lead is not None,
                            "affected": len(affected),
                            "affected_in_recall": len(affected & scope),
                            "recall_units": len(scope),
                            "recall_reached": len(scope & reached),
                            "seconds": seconds,
                        }
                    )
            # the same shape and seed with nothing planted
            plant, store = load(shape, args.units, seed, null=True)
            complaints = [c for t in sorted(_types(store)) for c in complaints_of(store, t)[:1]][
                : args.complaints * 2
            ]
            for uid in complaints:
                found = investigate(store, uid)
                null_rows.append(
                    {
                        "shape": shape,
                        "seed": seed,
                        "complaint": uid,
                        "lead": found.leading.factor.key if found.leading else None,
                        "any_significant": any(c.significant for c in found.report.causes),
                    }
                )
            print(
                f"{shape} seed {seed}: {time.perf_counter() - began:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return {"rows": rows, "null": null_rows}


def _types(store: GraphStore) -> set[str]:
    return {n.uid for page in store.iter_nodes("DefectType") for n in page.items}


def summarise(result: dict[str, Any]) -> None:
    rows, null_rows = result["rows"], result["null"]
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["shape"], r["cause"])].append(r)
        by[(r["shape"], "all")].append(r)
        by[("all", "all")].append(r)
    print(
        "first/top 3: the planted cause leads / is among the first three significant factors;"
        " none: nothing stands out (no cause named);\nnot-sig: a non-significant factor named"
        " as the cause; wrong: a significant but wrong cause named;\nrecall: share of the truly"
        " affected units in the suggested recall, over the investigations that named a cause;"
        "\nprecision: share of the recall's units that the planted cause reached"
    )
    print(
        f"{'shape':8} {'cause':18} {'cases':>5} {'first':>7} {'top 3':>7} {'none':>5} "
        f"{'not-sig':>7} {'wrong':>6} {'affected':>9} {'recall':>8} {'precision':>9} "
        f"{'median s':>8}"
    )
    for (shape, cause), rs in sorted(by.items()):
        n = len(rs)
        named = [r for r in rs if r["named"]]
        affected = sum(r["affected"] for r in named)
        covered = sum(r["affected_in_recall"] for r in named)
        units = sum(r["recall_units"] for r in named)
        reached = sum(r["recall_reached"] for r in named)
        print(
            f"{shape:8} {cause:18} {n:5d} {_pct(sum(r['first'] for r in rs), n):>7} "
            f"{_pct(sum(r['top3'] for r in rs), n):>7} {n - len(named):5d} "
            f"{sum(r['not_significant_presented'] for r in rs):7d} "
            f"{sum(r['wrong_lead'] for r in rs):6d} {affected:9d} "
            f"{_pct(covered, affected):>8} {_pct(reached, units):>9} "
            f"{statistics.median(r['seconds'] for r in rs):8.2f}"
        )
    misses = [r for r in rows if r["named"] and r["affected_in_recall"] < r["affected"]]
    for r in misses[:10]:
        print(
            f"  recall missed {r['affected'] - r['affected_in_recall']} affected units: "
            f"{r['shape']} seed {r['seed']} {r['cause']} {r['complaint']}"
        )
    false = [r for r in null_rows if r["lead"] is not None]
    print(
        f"null plants: {len(null_rows)} complaints investigated, {len(false)} with a leading "
        f"cause ({_pct(len(false), len(null_rows))}), "
        f"{sum(r['any_significant'] for r in null_rows)} analyses with any significant factor"
    )
    for r in false[:10]:
        print(f"  false finding: {r['shape']} seed {r['seed']} {r['complaint']} -> {r['lead']}")


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f} %" if n else "-"


def speed(units: int, args: argparse.Namespace) -> None:
    plant, store = load("drives", units, 1, null=False)
    cause = next(c for c in plant.truth["causes"] if c["kind"] == "material_lot")
    reached = reached_units(store, set(cause["batches"]))
    complaint = next(
        c for c in complaints_of(store, cause["defect_type"]) if read_case(store, c).unit in reached
    )
    # (label, sampler, draws of the first run): the product's sampler, then the
    # baselines - the same sampler without the first, shorter run, and another sampler
    runs = [(args.sampler, args.sampler, args.first_draws)]
    if args.first_baseline and args.first_draws:
        runs.append((f"{args.sampler} without a first run", args.sampler, 0))
    if args.baseline != "none":
        runs.append((args.baseline, args.baseline, args.first_draws))
    scratch_times: dict[str, float] = {}
    for label, name, first in runs:
        sampler = Sampler(
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            sampler=name,  # type: ignore[arg-type]
            first_draws=first,
        )
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(args.twin_dir or scratch) / label.replace(" ", "-")
            times = []
            for attempt in ("fitted from scratch", "fit cached"):
                runner = WhatIfRunner(store, folder, sampler)
                began = time.perf_counter()
                try:
                    found = investigate(
                        store,
                        complaint,
                        whatif=lambda fix, runner=runner: run_fix(
                            runner, fix, hours=args.hours, replications=args.replications
                        ),
                    )
                finally:
                    runner.close()
                seconds = time.perf_counter() - began
                times.append(seconds)
                result = found.whatif or {}
                verdict = result.get("verdict", "no what-if")
                change = result.get("kpis", {}).get("yield", {}).get("difference")
                if change:
                    verdict += (
                        f"; yield {change['mean']:+.2%} "
                        f"[{change['low']:+.2%}, {change['high']:+.2%}]"
                    )
                lead = found.leading.factor.key if found.leading else None
                print(
                    f"{units:,} units, {complaint} -> {lead}; {label}, what-if "
                    f"{attempt}: {seconds:.1f} s (steps {result.get('steps')}; {verdict})",
                    flush=True,
                )
            scratch_times[label] = times[0]
            print(f"{label}: cached / scratch {times[1] / times[0]:.2f}")
    product = scratch_times[args.sampler]
    for label, seconds in scratch_times.items():
        if label != args.sampler:
            print(f"from scratch, {label} / {args.sampler}: {seconds / product:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["drives", "battery", "both"], default="both")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--complaints", type=int, default=3, help="per planted cause")
    parser.add_argument("--speed-units", type=int, default=100_000, help="0: skip")
    # the sampler `sqems investigate` uses by default (Settings: twin_draws and so on)
    parser.add_argument("--draws", type=int, default=Sampler().draws)
    parser.add_argument("--tune", type=int, default=Sampler().tune)
    parser.add_argument("--chains", type=int, default=Sampler().chains)
    parser.add_argument("--sampler", default=Sampler().sampler, help="auto, nutpie or pymc")
    parser.add_argument(
        "--first-draws",
        type=int,
        default=Sampler().first_draws,
        help="draws per chain of the first, shorter run (0: none)",
    )
    parser.add_argument(
        "--first-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the product's sampler without the first run, in the same run",
    )
    parser.add_argument(
        "--baseline", default="pymc", help="a second sampler timed in the same run (none: skip)"
    )
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument(
        "--twin-dir",
        default=None,
        help="keep the fitted models here (default: a temporary folder, fitted from scratch)",
    )
    args = parser.parse_args()
    if args.seeds:
        summarise(accuracy(args))
    if args.speed_units:
        speed(args.speed_units, args)


if __name__ == "__main__":
    main()
