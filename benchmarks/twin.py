"""Twin benchmark: PyMC fit time, simulation speed beside a bare SimPy loop, and the
wall time of a what-if scenario.

1. **Fit**: the hierarchical quality model (two parameters, one with a planted square
   and fitted with a curve, three machines) on synthetic runs with planted
   coefficients, with the product's sampler (:class:`~sqems.twin.fitting.Sampler`) on
   2 cores, for 10,000 and 50,000 runs (``--runs``); the time includes compilation
   (pytensor caches it, so the second size compiles less).
2. **Simulation**: one 8-hour shift of a 10-station line (lognormal cycle times,
   buffers of 10, breakdowns on four stations, an end-of-line test with rework),
   units per second, beside ``bare_event_loop`` moving the same number of units
   through the same number of stations (the floor), measured in turn, medians.
3. **Scenario**: the board line of a generated plant (its twin fitted first, not
   timed), one scenario of 100 replications of an 8-hour shift, each with its own
   posterior draw (target < 30 s on 2 cores); and the baseline-plus-scenario run of a
   session for comparison.
4. **BLAS**: the same work in two child processes, one with PyTensor's
   ``blas__ldflags`` empty (its NumPy C-API fallbacks) and one with the flags
   :mod:`sqems.twin.blas` finds, each with a fresh compile cache of its own (a cache
   from the other flags would skip compilations): a 1,000 x 1,000 matrix product and a
   50,000 x 8 matrix-vector product (the model's linear predictor), medians; and the
   quality model's fit on ``--blas-runs`` runs with PyMC's sampler (compiled C, where
   the BLAS is used) and with nutpie (the product's; numba, which does not link it),
   the first fit with compilation and the median of the warm ones. Ratio: empty / set.

    python benchmarks/twin.py
    python benchmarks/twin.py --runs 10000 --repeats 3
    python benchmarks/twin.py --only blas --blas-repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.simulation import whatif
from sqems.simulation.line import (
    LineSpec,
    Lognormal,
    NoDefects,
    StationSpec,
    bare_event_loop,
    simulate,
)
from sqems.simulation.scenarios import ScenarioSpec
from sqems.twin.blas import INSTALL_HINT, find_ldflags
from sqems.twin.fitting import Sampler, fit_line
from sqems.twin.line import build_twin
from sqems.twin.quality import fit, synthetic_step_data


def fit_times(sizes: list[int]) -> list[tuple[int, float, str]]:
    out = []
    for runs in sizes:
        data = synthetic_step_data(
            np.random.default_rng(runs),
            runs,
            alpha=-3.5,
            beta={"temperature": 0.4, "speed": -0.2},
            gamma={"temperature": 0.3},
            machine_effects={"M-1": -0.2, "M-2": 0.0, "M-3": 0.25},
        )
        began = time.perf_counter()
        product = Sampler()  # the settings the product fits with
        model = fit(
            data,
            draws=product.draws,
            tune=product.tune,
            chains=product.chains,
            cores=2,
            seed=1,
            target_accept=product.target_accept,
        )
        seconds = time.perf_counter() - began
        d = model.diagnostics
        verdict = "sound" if not d.problems else "UNSOUND"
        diag = (
            f"{verdict}: max r_hat {d.max_r_hat:.3f}, min ESS {d.min_ess_bulk:.0f}, "
            f"{d.divergences} divergences"
        )
        print(f"  {runs:>7,} runs  {seconds:7.1f} s   {diag}", flush=True)
        out.append((runs, seconds, diag))
    return out


def ten_stations() -> LineSpec:
    stations = []
    for k in range(10):
        stations.append(
            StationSpec(
                name=f"S{k + 1:02d}",
                machines=(f"M{k + 1:02d}",),
                cycle=Lognormal.with_mean(1.0 + 0.05 * k, 0.3),
                mtbf_s=3_600.0 if k % 3 == 0 else None,
                mttr_s=120.0 if k % 3 == 0 else None,
                buffer=10,
                inspection=0.9 if k == 9 else None,
                rework_p=0.5 if k == 9 else 0.0,
            )
        )
    return LineSpec(stations=tuple(stations), scrap_cost=100.0, rework_cost=25.0)


def simulation_speed(repeats: int) -> tuple[float, float, int]:
    line = ten_stations()
    shift = 8 * 3600.0
    units = simulate(line, NoDefects(), shift, seed=0).started
    full, bare = [], []
    for r in range(repeats):
        began = time.perf_counter()
        result = simulate(line, NoDefects(), shift, seed=r)
        full.append(result.started / (time.perf_counter() - began))
        bare.append(units / bare_event_loop(units, len(line.stations), seed=r))
    return statistics.median(full), statistics.median(bare), units


def scenario_time(units: int, replications: int) -> dict[str, float]:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=units, seed=2))))
    twin = build_twin(store, "LINE-PCB")
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        models = fit_line(twin, Path(folder), Sampler(cores=2))
        fitted = time.perf_counter() - began
    hot = ScenarioSpec.parse({"parameters": [{"parameter": "P-REFLOW-PEAK", "setpoint": 249.0}]})
    began = time.perf_counter()
    whatif.simulate_scenario(
        twin, models, hot, horizon_s=8 * 3600.0, replications=replications, seed=1
    )
    one = time.perf_counter() - began
    view = whatif.create_session(
        store, "LINE-PCB", "bench", horizon_s=8 * 3600.0, replications=replications, seed=1
    )
    scenario = whatif.add_scenario(store, view.session.uid, "hot", hot)
    began = time.perf_counter()
    whatif.run_scenario(store, twin, models, view.session.uid, scenario.uid)
    session = time.perf_counter() - began
    store.close()
    return {"fit": fitted, "scenario": one, "session": session}


def blas_child(runs: int, repeats: int) -> dict[str, object]:
    """The BLAS figure's work in this process, with whatever ``blas__ldflags``
    ``PYTENSOR_FLAGS`` gave it (the parent sets them)."""
    from sqems.twin.blas import configure  # noqa: PLC0415 - the parent's flags first

    flags = configure()
    import pytensor  # noqa: PLC0415
    import pytensor.tensor as pt  # noqa: PLC0415

    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {}

    def timed(name: str, call: object, count: int) -> None:
        assert callable(call)
        call()  # compiled and warm
        for _ in range(count):
            began = time.perf_counter()
            call()
            times.setdefault(name, []).append(time.perf_counter() - began)

    a, b = pt.dmatrix("a"), pt.dmatrix("b")
    gemm = pytensor.function([a, b], a @ b)
    big = rng.standard_normal((1_000, 1_000))
    timed("gemm 1000x1000 @ 1000x1000", lambda: gemm(big, big), max(5, repeats * 3))
    x, w = pt.dmatrix("x"), pt.dvector("w")
    gemv = pytensor.function([x, w], pt.sigmoid(x @ w))
    tall, coef = rng.standard_normal((50_000, 8)), rng.standard_normal(8)
    timed("gemv 50000x8 @ 8, then sigmoid", lambda: gemv(tall, coef), max(20, repeats * 10))
    ops = sorted({type(n.op).__name__ for n in gemm.maker.fgraph.apply_nodes})

    data = synthetic_step_data(
        np.random.default_rng(runs),
        runs,
        alpha=-3.5,
        beta={"temperature": 0.4, "speed": -0.2, "pressure": 0.1},
        gamma={"temperature": 0.3},
        machine_effects={"M-1": -0.2, "M-2": 0.0, "M-3": 0.25},
    )
    fits: dict[str, list[float]] = {}
    for sampler in ("pymc", "nutpie"):
        for _ in range(repeats + 1):  # the first compiles
            began = time.perf_counter()
            fit(data, draws=500, tune=500, chains=2, cores=2, seed=1, sampler=sampler)
            fits.setdefault(sampler, []).append(time.perf_counter() - began)
    return {"ldflags": flags, "ops": ops, "times": times, "fits": fits}


def blas_figures(runs: int, repeats: int) -> None:
    """Run :func:`blas_child` with the ldflags empty and set, and print both."""
    found = find_ldflags()
    if not found:
        print(f"  no BLAS found, nothing to compare: {INSTALL_HINT}")
        return
    results = {}
    for label, flags in (("empty", ""), ("set", found)):
        with tempfile.TemporaryDirectory() as cache:  # a compile cache of its own
            env = {
                **os.environ,
                "PYTENSOR_FLAGS": f"blas__ldflags='{flags}',base_compiledir={cache}",
            }
            done = subprocess.run(
                [sys.executable, __file__, "--blas-child", str(runs), str(repeats)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    empty, setting = results["empty"], results["set"]
    print(f"  ldflags: {setting['ldflags']!r}; gemm compiles to {', '.join(setting['ops'])}")
    print(f"  {'':38} {'empty':>9} {'set':>9} {'empty/set':>10}")
    for name in setting["times"]:
        e = statistics.median(empty["times"][name]) * 1e3
        f = statistics.median(setting["times"][name]) * 1e3
        print(f"  {name:38} {e:7.2f}ms {f:7.2f}ms {e / f:9.1f}x")
    for sampler in ("pymc", "nutpie"):
        e_all, f_all = empty["fits"][sampler], setting["fits"][sampler]
        for what, e, f in (
            ("first, compiling", e_all[0], f_all[0]),
            ("warm, median", statistics.median(e_all[1:]), statistics.median(f_all[1:])),
        ):
            name = f"fit {runs:,} runs, {sampler}, {what}"
            print(f"  {name:38} {e:8.1f}s {f:8.1f}s {e / f:9.2f}x")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--blas-child":
        print(json.dumps(blas_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--plant-units", type=int, default=20_000)
    parser.add_argument("--blas-runs", type=int, default=5_000)
    parser.add_argument("--blas-repeats", type=int, default=2)
    parser.add_argument("--only", choices=["blas"], help="run one part alone")
    args = parser.parse_args()

    if args.only == "blas":
        print("BLAS: PyTensor's ldflags empty vs set (fits: 2 chains x 500 + 500 tune):")
        blas_figures(args.blas_runs, args.blas_repeats)
        return

    print("10-station line, one 8 h shift, median of", args.repeats, flush=True)
    full, bare, units = simulation_speed(args.repeats)
    print(f"  units a shift     {units:>10,}")
    print(f"  full model        {full:>10,.0f} units/s")
    print(f"  bare SimPy floor  {bare:>10,.0f} units/s   (model at {full / bare:.0%} of the floor)")
    print(f"what-if on LINE-PCB of a {args.plant_units:,}-unit plant:", flush=True)
    scenario = scenario_time(args.plant_units, args.replications)
    print(f"  models fitted (not counted below): {scenario['fit']:.1f} s")
    print(
        f"  one scenario, {args.replications} replications x 8 h, a posterior draw each: "
        f"{scenario['scenario']:.1f} s (target < 30 s)"
    )
    print(f"  a session's baseline + scenario, stored in the graph: {scenario['session']:.1f} s")
    product = Sampler()
    print(
        f"PyMC fit (the product's sampler: {product.tune:,} tune + {product.draws:,} draws, "
        f"{product.chains} chains, target_accept {product.target_accept}; 2 cores; incl. "
        "compilation):",
        flush=True,
    )
    fit_times(args.runs)
    print("BLAS: PyTensor's ldflags empty vs set (fits: 2 chains x 500 + 500 tune):", flush=True)
    blas_figures(args.blas_runs, args.blas_repeats)


if __name__ == "__main__":
    main()
