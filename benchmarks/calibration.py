"""Calibration of root-cause ranking: how often it names a cause where there is none, and
how often the cause it names first is the planted one — the product's ranking (units
judged with their batches: dispersion and the batch rank test) beside the baseline that
counts every unit as an independent trial, on the same plants in the same run.

For each shape (``drives``: boards into drives; ``battery``: cells into modules into
packs) and seed, plants are generated and loaded into an in-memory embedded store:

* **null plants** — every planted cause off — with unexplained batch-to-batch variation
  of the baseline defect rates at each ``--batch-sd`` (log-odds SD per batch; 0 is the
  plain binomial plant). Every defect type is analysed from its defect type (every unit
  with a defect or complaint of that type) and from its complaints alone. An analysis
  that reports *any* significant cause is a false finding. Target: at most 5 % of
  analyses.
* **planted plants** — the generator's default causes, with the same batch variation.
  Each planted cause's defect type is analysed from its defect type and from its
  complaints. Counted: the first significant cause is the planted one (or a factor the
  report cannot separate from it, listed beside it) — target top-1 ≥ 90 % —, and the
  non-causal factors presented as causes (significant and neither the planted cause nor
  a factor with exactly its exposure) — goal: none in ≥ 90 % of analyses.

An analysis with no significant cause counts as a miss in top-1: on a small plant the
complaints alone are often too few to find anything.

    python benchmarks/calibration.py                  # seeds 1-10 x 2 shapes, 20k units
    python benchmarks/calibration.py --seeds 3 --units 10000 --batch-sd 0 1.5 --notes
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from typing import Any

# the planted-cause matching and the complaint targets of the accuracy benchmark, run as a
# script from this directory
from rca import complaints_of, is_cause

from sqems.analysis.factors import Factor
from sqems.analysis.rootcause import (
    Cause,
    RootCauseReport,
    from_defect_type,
    rank_causes,
)
from sqems.datasets import PlantShape, PlantSpec, generate, load_plant
from sqems.datasets.battery_layout import BatteryCauses
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import Causes
from sqems.graph_model import EmbeddedGraphStore, GraphStore


def names(c: Cause) -> tuple[Factor, ...]:
    """The factor of a cause and those the report cannot separate from it."""
    return (c.factor, *c.aliases)


def causes_of(shape: PlantShape, planted: bool, batch_sd: float) -> Causes | BatteryCauses:
    if shape == "battery":
        base = BatteryCauses() if planted else BatteryCauses.none()
        return dataclasses.replace(base, batch_log_sd=batch_sd)
    if planted:
        return Causes(batch_log_sd=batch_sd)
    return Causes(bad_lot_added_p=0.0, drift_amount=0.0, shift_added_p=0.0, batch_log_sd=batch_sd)


def baseline_types(truth: dict[str, Any]) -> list[str]:
    """Every defect type the plant makes at a baseline rate."""
    return sorted(t for n in truth["noise"] if n["kind"] == "baseline" for t in n["rates"])


def analyses(
    store: GraphStore, defect_type: str, batches: bool
) -> list[tuple[str, RootCauseReport]]:
    """The reports from the defect type and from its complaints (when there are any)."""
    found = []
    for source in ("defect type", "complaints"):
        target = (
            from_defect_type(store, defect_type)
            if source == "defect type"
            else complaints_of(store, defect_type)
        )
        if target.units:
            found.append((source, rank_causes(store, target, batches=batches)))
    return found


@dataclasses.dataclass
class Tally:
    """One method's figures at one batch SD."""

    null: list[int] = dataclasses.field(default_factory=list)
    top1: list[bool] = dataclasses.field(default_factory=list)
    extra: list[int] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


METHODS = {"product": True, "baseline": False}
"""Each method and its ``batches`` argument: the product judges units with their batches,
the baseline counts every unit as an independent trial."""


def tally_null(
    tally: Tally, store: GraphStore, truth: dict[str, Any], batches: bool, at: str
) -> None:
    for t in baseline_types(truth):
        for source, report in analyses(store, t, batches):
            named = report.significant_causes
            tally.null.append(len(named))
            if named:
                tally.notes.append(
                    f"{at} null {t} from {source}: " + ", ".join(c.factor.key for c in named)
                )


def tally_planted(
    tally: Tally, store: GraphStore, truth: dict[str, Any], batches: bool, at: str
) -> None:
    for cause in truth["causes"]:
        for source, report in analyses(store, cause["defect_type"], batches):
            named = report.significant_causes
            hit = bool(named) and any(is_cause(f, cause) for f in names(named[0]))
            wrong = [c for c in named if not any(is_cause(f, cause) for f in names(c))]
            tally.top1.append(hit)
            tally.extra.append(len(wrong))
            if not hit or wrong:
                tally.notes.append(
                    f"{at} {cause['id']} from {source}: "
                    f"first {named[0].factor.key if named else '-'}; "
                    f"non-causal: {', '.join(c.factor.key for c in wrong) or '-'}"
                )


def run(shape: PlantShape, seeds: range, units: int, batch_sds: list[float], notes: bool) -> None:
    """Print the null and planted figures of ``shape``, product beside baseline."""
    began = time.perf_counter()
    tallies: dict[tuple[str, float], Tally] = defaultdict(Tally)
    for sd in batch_sds:
        for seed in seeds:
            spec = PlantSpec(shape=shape, units=units, seed=seed)
            for planted in (False, True):
                plant = generate(spec, causes_of(shape, planted, sd))
                store = EmbeddedGraphStore(None)
                load_plant(store, plant_sections(plant))
                for method, batches in METHODS.items():
                    tally, at = tallies[method, sd], f"sd {sd:g} seed {seed}"
                    if planted:
                        tally_planted(tally, store, plant.truth, batches, at)
                    else:
                        tally_null(tally, store, plant.truth, batches, at)
                store.close()
            print(f"{shape} sd {sd:g} seed {seed} done", file=sys.stderr, flush=True)

    took = time.perf_counter() - began
    print(
        f"\n{shape} plant, seeds {seeds.start}-{seeds.stop - 1} of {units:,} units ({took:.0f} s)"
    )
    print(
        f"{'batch sd':>8} {'method':>9} {'null analyses':>14} {'any cause':>10} {'rate':>7}   "
        f"{'planted':>8} {'top-1':>7} {'0 non-causal':>13} {'non-causal (mean)':>18}"
    )
    for sd in batch_sds:
        for method in METHODS:
            t = tallies[method, sd]
            n, hits = len(t.null), sum(x > 0 for x in t.null)
            m = len(t.top1)
            clean = sum(x == 0 for x in t.extra)
            mean_extra = sum(t.extra) / m if m else 0.0
            print(
                f"{sd:>8g} {method:>9} {n:>14} {hits:>10} {hits / max(n, 1):>7.1%}   "
                f"{m:>8} {sum(t.top1) / max(m, 1):>7.1%} {clean / max(m, 1):>13.1%} "
                f"{mean_extra:>18.2f}"
            )
    print("targets: null rate <= 5 %; top-1 >= 90 %; 0 non-causal in >= 90 % of analyses")
    if notes:
        for sd in batch_sds:
            for line in tallies["product", sd].notes:
                print(f"  product {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--shape", choices=["drives", "battery", "both"], default="both")
    parser.add_argument("--batch-sd", type=float, nargs="+", default=[0.0, 1.5, 2.0])
    parser.add_argument("--notes", action="store_true", help="list the product's misses")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    shapes: list[PlantShape] = ["drives", "battery"] if args.shape == "both" else [args.shape]
    for shape in shapes:
        run(shape, seeds, args.units, args.batch_sd, args.notes)


if __name__ == "__main__":
    main()
