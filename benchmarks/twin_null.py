"""Do the twin's quality models see effects that are not there? Null coverage by seed.

For generated plants (``--shapes``, seeds ``--seeds``, ``--units`` units), each step
with parameters of every line gets its plain quality model fitted twice, with the
product's sampler (``Sampler.of(Settings())``):

* ``product``: the model whose runs are beta-binomial (they may vary beyond the
  binomial, rho);
* ``independent``: the same model with every unit independent (``fit(...,
  run_effects=False)``, binomial), the model as it was before - the baseline.

Each coefficient of a parameter (beta, and the gammas where the parameter has a
curve) is *null* unless the plant planted an effect on it: the drifting parameter
(``Causes.drift_parameter``: its drift causes defects above a threshold) and the
planted shift at its step. A null coefficient whose 94 % interval excludes zero is a
false finding; the figure is the share of null intervals that include zero (target:
at least 90 %), with the planted coefficients' detections beside it. ``--null`` plants
nothing at all (every coefficient null), and ``--batch-sd`` adds unexplained
batch-to-batch variation (``Causes.batch_log_sd``).

    python benchmarks/twin_null.py                      # drives, seeds 1-10
    python benchmarks/twin_null.py --shapes battery --seeds 1 2 3 4 5
    python benchmarks/twin_null.py --batch-sd 1.0 --null
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from typing import Any

from sqems.datasets import BatteryCauses, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import Causes
from sqems.graph_model import EmbeddedGraphStore
from sqems.settings import Settings
from sqems.twin.fitting import Sampler, step_data
from sqems.twin.line import build_twin
from sqems.twin.quality import fit

VARIANTS = {"product": True, "independent": False}


def planted(causes: Causes | BatteryCauses, null: bool) -> set[tuple[str, str]]:
    """(step or "*", parameter) of the planted parameter effects."""
    if null:
        return set()
    return {("*", causes.drift_parameter), (causes.shift_step, f"shift:{causes.shift}")}


def coefficients(model: Any) -> list[tuple[str, str, bool]]:
    """(parameter, coefficient name, whether its interval excludes zero) of ``model``."""
    out = []
    for c in model.coefficients():
        parameter = model.parameter_of(c.name)
        if parameter is not None:
            out.append((parameter, c.name, not c.covers(0.0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["drives"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 11)))
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--null", action="store_true", help="plant nothing")
    parser.add_argument("--batch-sd", type=float, default=0.0)
    parser.add_argument("--draws", type=int, default=Sampler.of(Settings()).draws)
    parser.add_argument("--tune", type=int, default=Sampler.of(Settings()).tune)
    parser.add_argument("--chains", type=int, default=Sampler.of(Settings()).chains)
    args = parser.parse_args()
    sampler = Sampler(draws=args.draws, tune=args.tune, chains=args.chains)
    print(
        f"sampler {sampler.tune} tune + {sampler.draws} draws x {sampler.chains} chains; "
        f"{args.units:,} units; batch log-sd {args.batch_sd}; "
        f"{'nothing planted' if args.null else 'causes planted'}"
    )
    tally = {v: {"null": 0, "null_covered": 0, "planted": 0, "found": 0} for v in VARIANTS}
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    unsound = {v: 0 for v in VARIANTS}
    for shape in args.shapes:
        base: Causes | BatteryCauses = BatteryCauses() if shape == "battery" else Causes()
        causes = BatteryCauses.none() if args.null and shape == "battery" else base
        if args.null and shape != "battery":
            causes = Causes(bad_lot_added_p=0.0, drift_amount=0.0, shift_added_p=0.0)
        causes = replace(causes, batch_log_sd=args.batch_sd)
        effects = planted(base, args.null)
        for seed in args.seeds:
            plant = generate(PlantSpec(shape=shape, units=args.units, seed=seed), causes)
            store = EmbeddedGraphStore(None)
            load_plant(store, plant_sections(plant))
            lines = sorted(n.uid for page in store.iter_nodes("Line") for n in page.items)
            for line in lines:
                twin = build_twin(store, line)
                for step in twin.steps:
                    if not step.modelled:
                        continue
                    data = step_data(step)
                    row = []
                    for variant, runs in VARIANTS.items():
                        started = time.perf_counter()
                        model = fit(
                            data,
                            draws=sampler.draws,
                            tune=sampler.tune,
                            chains=sampler.chains,
                            seed=seed,
                            target_accept=sampler.target_accept,
                            run_effects=runs,
                        )
                        seconds[variant].append(time.perf_counter() - started)
                        unsound[variant] += not model.diagnostics.ok
                        false = []
                        for parameter, name, excludes in coefficients(model):
                            real = (step.uid, parameter) in effects or ("*", parameter) in effects
                            t = tally[variant]
                            if real:
                                t["planted"] += 1
                                t["found"] += excludes
                            else:
                                t["null"] += 1
                                t["null_covered"] += not excludes
                                if excludes:
                                    false.append(name)
                        row.append(f"{variant}: {len(false)} false {false if false else ''}")
                    print(
                        f"{shape} seed {seed} {step.uid} ({step.history.runs} runs): "
                        + "; ".join(row)
                    )
            store.close()
    print()
    print("| model | null intervals covering 0 | planted found | unsound fits | fit (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for variant in VARIANTS:
        t = tally[variant]
        share = t["null_covered"] / t["null"] if t["null"] else float("nan")
        found = f"{t['found']} of {t['planted']}" if t["planted"] else "-"
        print(
            f"| {variant} | {share:.1%} ({t['null_covered']} of {t['null']}) | {found} | "
            f"{unsound[variant]} | {statistics.median(seconds[variant]):.1f} s |"
        )


if __name__ == "__main__":
    main()
