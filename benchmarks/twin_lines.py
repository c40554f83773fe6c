"""Fit time of every line's quality models on a generated plant, from scratch.

For each line of a generated plant (default shape, ``--units`` units): the time to
build its twin, and the time ``fit_line`` takes to fit every step with parameters

* ``whatif``: with the sampler settings ``sqems whatif`` uses (``Sampler.of(Settings())``:
  1,000 tune + 1,000 draws, 4 chains);
* ``small``: 300 tune + 300 draws, 2 chains;
* ``groups``: small, with lot and operator effects (``fit_line(..., groups=True)``);
* ``step``: small, the line's last modelled step alone (``steps=[...]``: what a
  scenario that acts at one step needs), with the default sampler (nutpie when
  installed: compile + sample);
* ``step-pymc``: the same with PyMC's own NUTS, for comparison; the last lines give the
  medians of ``step`` and ``step-pymc`` over the lines and their ratio.

Each fit goes to a fresh folder, so nothing is loaded from an earlier fit; PyTensor's
compilation cache is warm after the first fit of a process, as in a server.

    python benchmarks/twin_lines.py
    python benchmarks/twin_lines.py --units 100000 --cores 2 --only small step
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import ValidationFailed
from sqems.graph_model import EmbeddedGraphStore
from sqems.settings import Settings
from sqems.twin.fitting import Sampler, fit_line
from sqems.twin.line import build_twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="whatif small groups step")
    args = parser.parse_args()
    full = Sampler.of(Settings())
    small = Sampler(draws=300, tune=300, chains=2, cores=args.cores)
    settings = {
        "whatif": (
            Sampler(draws=full.draws, tune=full.tune, chains=full.chains, cores=args.cores),
            False,
        ),
        "small": (small, False),
        "groups": (small, True),
        "step": (small, False),
        "step-pymc": (replace(small, sampler="pymc"), False),
    }
    if args.only:
        settings = {k: v for k, v in settings.items() if k in args.only}
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=args.units, seed=args.seed))))
        lines = sorted(n.uid for n in store.find("Line"))
        print(f"{args.units} units, {args.cores} core(s); seconds per line")
        print(
            f"{'line':<12} {'steps':>5} {'runs':>6} {'twin':>6} "
            + " ".join(f"{k:>8}" for k in settings)
        )
        per_setting: dict[str, list[float]] = {}
        for line in lines:
            began = time.perf_counter()
            twin = build_twin(store, line)
            built = time.perf_counter() - began
            modelled = [s for s in twin.steps if s.modelled]
            runs = sum(s.history.runs for s in modelled)
            times: list[str] = []
            for name, (sampler, groups) in settings.items():
                only = [modelled[-1].uid] if name.startswith("step") and modelled else None
                sound = ""
                with tempfile.TemporaryDirectory() as folder:
                    began = time.perf_counter()
                    try:
                        fit_line(twin, Path(folder), sampler, steps=only, groups=groups)
                    except ValidationFailed:
                        sound = "!"  # a model failed its diagnostics (the time still counts)
                    seconds = time.perf_counter() - began
                    per_setting.setdefault(name, []).append(seconds)
                    times.append(f"{seconds:.1f}{sound}")
            print(
                f"{line:<12} {len(modelled):>5} {runs:>6} {built:>6.1f} "
                + " ".join(f"{t:>8}" for t in times),
                flush=True,
            )
        print("! = a step's model failed its convergence diagnostics at these settings")
        if per_setting.get("step") and per_setting.get("step-pymc"):
            nutpie, pymc = (statistics.median(per_setting[k]) for k in ("step", "step-pymc"))
            print(
                f"one step, median over lines: default sampler {nutpie:.1f} s, "
                f"PyMC {pymc:.1f} s, PyMC / default {pymc / nutpie:.2f}"
            )


if __name__ == "__main__":
    main()
