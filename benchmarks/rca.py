"""Root-cause ranking accuracy on the generator's planted causes, over many seeds.

For each seed and each plant shape a plant is generated and loaded into an in-memory
embedded store, and each planted cause is asked for twice — on the *drives* plant the
bad resin lot, the reflow-oven drift and the night shift at press-fit; on the *battery*
plant (cell → module → pack) the bad separator lot two BOM levels below the packs, the
laser-welder power sag and the night shift at module fastening:

* from its **defect type** (every unit with a defect of that type found in the plant,
  or a complaint of that type), and
* from the **complaints** of that type alone (field returns: fewer, and mixed with
  no-fault-found complaints).

A hit at rank r means the planted cause is the r-th factor (or one of the factors with
exactly the same exposure listed beside it, which no data can separate): the lot
itself; the drifting parameter in any spec zone or the machine it drifted on; the night
shift at any step. A planted-noise factor ranked first — the machine co-exposed with the bad lot, or
another parameter's excursion — is counted separately.

    python benchmarks/rca.py                   # 20 seeds of 20k units, both shapes
    python benchmarks/rca.py --seeds 5 --units 10000 --shape battery
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from sqems.analysis.factors import Factor, FactorKind
from sqems.analysis.rootcause import (
    Defectives,
    from_complaints,
    from_defect_type,
    rank_causes,
)
from sqems.datasets import PlantShape, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore


def is_cause(factor: Factor, cause: dict[str, Any]) -> bool:
    """Whether ``factor`` names the planted ``cause``."""
    match cause["kind"]:
        case "material_lot":
            return factor.kind is FactorKind.MATERIAL_LOT and factor.uid == cause["uid"]
        case "parameter_drift":
            return (factor.kind is FactorKind.EXCURSION and factor.uid == cause["parameter"]) or (
                factor.kind is FactorKind.MACHINE and factor.uid == cause["uid"]
            )
        case "shift":  # the shift at the step where it was planted
            return (
                factor.kind is FactorKind.SHIFT
                and factor.uid == cause["uid"]
                and factor.step == cause.get("step", factor.step)
            )
    raise ValueError(f"unknown cause kind {cause['kind']}")


def is_noise(factor: Factor, truth: dict[str, Any]) -> bool:
    """Whether ``factor`` is one of the generator's planted decoys."""
    co_exposed = next((n["uid"] for n in truth["noise"] if n["kind"] == "co_exposed_machine"), None)
    drift = next((c for c in truth["causes"] if c["kind"] == "parameter_drift"), None)
    if factor.kind is FactorKind.MACHINE and factor.uid == co_exposed:
        return True
    return factor.kind is FactorKind.EXCURSION and (
        drift is None or factor.uid != drift["parameter"]
    )


def complaints_of(store: GraphStore, defect_type: str) -> Defectives:
    reports = [e.src for e in store.edges([defect_type], {"OF_TYPE": Direction.IN})]
    complaints = [u for u, n in store.get_many(reports).items() if n.label == "Complaint"]
    return from_complaints(store, complaints)


SHAPES: dict[str, tuple[PlantShape, ...]] = {
    "drives": ("drives",),
    "battery": ("battery",),
    "both": ("drives", "battery"),
}


def run_shape(shape: PlantShape, seeds: range, units: int) -> None:
    """Rank every planted cause of ``shape`` over ``seeds`` and print the figures."""
    ranks: dict[str, list[int | None]] = defaultdict(list)
    noise_first: dict[str, int] = defaultdict(int)
    timings: list[float] = []
    misses: list[str] = []
    n_causes = 0
    for seed in seeds:
        plant = generate(PlantSpec(shape=shape, units=units, seed=seed))
        n_causes = len(plant.truth["causes"])
        store = EmbeddedGraphStore(None)
        load_plant(store, plant_sections(plant))
        for cause in plant.truth["causes"]:
            for source in ("defect type", "complaints"):
                target = (
                    from_defect_type(store, cause["defect_type"])
                    if source == "defect type"
                    else complaints_of(store, cause["defect_type"])
                )
                if not target.units:  # e.g. no complaint of that type came back yet
                    ranks[source].append(None)
                    misses.append(f"seed {seed} {cause['id']} from {source}: no units to explain")
                    continue
                began = time.perf_counter()
                report = rank_causes(store, target)
                timings.append(time.perf_counter() - began)
                found = next(
                    (
                        c.rank
                        for c in report.causes
                        if any(is_cause(f, cause) for f in (c.factor, *c.aliases))
                    ),
                    None,
                )
                ranks[source].append(found)
                top = report.causes[0].factor if report.causes else None
                if top is not None and is_noise(top, plant.truth):
                    noise_first[source] += 1
                if found != 1:
                    misses.append(
                        f"seed {seed} {cause['id']} from {source}: rank {found}, "
                        f"first {top.key if top else '-'} ({len(target.units)} units)"
                    )
        store.close()
        print(f"{shape} seed {seed} done", file=sys.stderr, flush=True)

    print(f"\n{shape} plant: root-cause ranking over {len(seeds)} seeds of {units:,} units "
          f"({n_causes} planted causes each)\n")  # fmt: skip
    print(f"{'input':<14} {'trials':>7} {'top-1':>8} {'top-3':>8} {'noise first':>12}")
    for source, found in ranks.items():
        n = len(found)
        top1 = sum(r == 1 for r in found) / n
        top3 = sum(r is not None and r <= 3 for r in found) / n
        print(f"{source:<14} {n:>7} {top1:>8.1%} {top3:>8.1%} {noise_first[source]:>12}")
    if timings:
        print(f"\nmedian ranking time {statistics.median(timings) * 1000:.0f} ms per analysis")
    print("targets (defect type): top-1 >= 90 %, top-3 >= 98 %, no noise factor first")
    if misses:
        print("\nnot first:")
        for line in misses:
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--shape", choices=list(SHAPES), default="both")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for shape in SHAPES[args.shape]:
        run_shape(shape, seeds, args.units)


if __name__ == "__main__":
    main()
