"""The what-if command: a scenario simulated on a line's twin."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sqems.cli.app import command, err
from sqems.cli.common import number_pair, progress, whatif_stores
from sqems.cli.render import print_whatif
from sqems.errors import ValidationFailed


@command("whatif")
def whatif_cmd(
    line: Annotated[str, typer.Argument(help="The line to study, e.g. LINE-PCB.")],
    setpoint: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="PARAMETER=VALUE", help="A new setpoint."),
    ] = None,
    spread: Annotated[
        list[str] | None,
        typer.Option(metavar="PARAMETER=FACTOR", help="The process variation times FACTOR."),
    ] = None,
    speed: Annotated[
        float, typer.Option(metavar="FACTOR", help="Line speed factor (1.1: 10 % faster).")
    ] = 1.0,
    shifts: Annotated[
        str | None,
        typer.Option(metavar="SHIFT,SHIFT", help="The shifts that work, e.g. early,late."),
    ] = None,
    detect: Annotated[
        list[str] | None,
        typer.Option(metavar="STEP=RATE", help="An inspection step's detection rate."),
    ] = None,
    route: Annotated[
        list[str] | None,
        typer.Option(metavar="STEP=M1,M2", help="Run a step on these of its machines only."),
    ] = None,
    remove_drift: Annotated[
        list[str] | None,
        typer.Option(
            metavar="MACHINE:PARAMETER",
            help="Remove a machine's drift of a parameter; MACHINE:PARAMETER=START/END "
            "removes it in that window (ISO times), without one the drift window is "
            "estimated from the data.",
        ),
    ] = None,
    step_shifts: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STEP=SHIFTS",
            help="The shifts that work one step, e.g. STEP-ASM-20=early,late.",
        ),
    ] = None,
    switch_lot: Annotated[
        list[str] | None,
        typer.Option(
            metavar="LOT",
            help="Replace a lot (or, as supplier:SUPPLIER, a supplier's lots) by a new one "
            "from the population of lots (fits lot and operator effects).",
        ),
    ] = None,
    exclude_operators: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STEP=OP1,OP2", help="The step's other operators take these operators' runs."
        ),
    ] = None,
    recommend: Annotated[
        float | None,
        typer.Option(
            metavar="UNITS_PER_H",
            help="Also recommend setpoints, with this throughput floor (units/h).",
        ),
    ] = None,
    hours: Annotated[
        float, typer.Option(metavar="HOURS", help="Simulated hours per replication.")
    ] = 8.0,
    replications: Annotated[int, typer.Option(help="Replications (posterior draws).")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """What if a line ran differently? Simulate a scenario against today's line with
    the twin's quality models, and print each KPI with its interval and the paired
    difference.

    Example: sqems whatif LINE-PCB --set P-REFLOW-PEAK=245 --hours 8
    """
    from sqems.simulation import whatif
    from sqems.simulation.runner import TWIN_DIR, WhatIfRunner
    from sqems.simulation.scenarios import ScenarioSpec
    from sqems.twin.fitting import Sampler

    changes: dict[str, Any] = {"line_speed": speed}
    params: dict[str, dict[str, Any]] = {}
    for option, key, flag in ((setpoint, "setpoint", "--set"), (spread, "spread", "--spread")):
        for uid, value in (number_pair(item, flag) for item in option or []):
            params.setdefault(uid, {"parameter": uid})[key] = value
    if params:
        changes["parameters"] = list(params.values())
    if shifts:
        changes["shifts"] = [s.strip() for s in shifts.split(",") if s.strip()]
    if detect:
        changes["inspections"] = [
            {"step": uid, "detection": value}
            for uid, value in (number_pair(item, "--detect") for item in detect)
        ]
    for option, key, field, flag in (
        (route, "routing", "machines", "--route"),
        (step_shifts, "step_shifts", "shifts", "--step-shifts"),
        (exclude_operators, "operators", "exclude", "--exclude-operators"),
    ):
        for item in option or []:
            step, sep, names = item.partition("=")
            if not sep or not step.strip():
                raise ValidationFailed(f"{flag} takes STEP=NAME,NAME, got {item!r}")
            changes.setdefault(key, []).append(
                {"step": step.strip(), field: [n.strip() for n in names.split(",") if n.strip()]}
            )
    for item in remove_drift or []:
        target, _, window = item.partition("=")
        machine, sep, parameter = target.partition(":")
        if not sep:
            raise ValidationFailed(
                f"--remove-drift takes MACHINE:PARAMETER[=START/END], got {item!r}"
            )
        drift: dict[str, Any] = {"machine": machine.strip(), "parameter": parameter.strip()}
        if window:
            start, _, end = window.partition("/")
            drift |= {k: v.strip() for k, v in (("start", start), ("end", end)) if v.strip()}
        changes.setdefault("drifts", []).append(drift)
    for item in switch_lot or []:
        kind, sep, name = item.partition(":")
        switch = {"supplier": name.strip()} if sep and kind == "supplier" else {"lot": item}
        changes.setdefault("lots", []).append(switch)
    spec = ScenarioSpec.parse(changes)
    with whatif_stores() as (store, sessions, settings):
        runner = WhatIfRunner(
            store, settings.data_dir / TWIN_DIR, Sampler.of(settings), sessions=sessions
        )
        try:
            with err.status(f"building the twin of {line} and fitting its quality models…"):
                twin_ = runner.line(line)
                spec.check(twin_)
                twin_, models = runner.twin(line, groups=runner.grouped(line, spec))
            for step, model in models.items():
                d = model.diagnostics
                err.print(
                    f"{step}: {d.chains} chains x {d.draws} draws, max r_hat {d.max_r_hat:.3f}"
                    f" ({d.r_hat_at}), min ESS {d.min_ess_bulk:.0f} bulk / "
                    f"{d.min_ess_tail:.0f} tail, {d.divergences} divergences"
                    + (
                        f"; fit: predictive p {d.check.predictive_p:.2f}, "
                        f"{d.check.pareto_k_high} runs of Pareto k > 0.7"
                        if d.check
                        else ""
                    ),
                    highlight=False,
                )
            for note in twin_.notes:
                err.print(f"note: {note}", highlight=False)
            view = whatif.create_session(
                sessions, line, "cli", horizon_s=hours * 3600, replications=replications, seed=seed
            )
            scenario = whatif.add_scenario(sessions, view.session.uid, "scenario", spec)
            futures = [runner.submit(view.session.uid, scenario.uid)]
            if recommend is not None:
                futures.append(runner.recommend(view.session.uid, recommend)[1])
            with progress() as bar:
                task = bar.add_task("simulating", total=len(futures))
                for future in futures:
                    future.result()
                    bar.advance(task)
        finally:
            runner.close()
        print_whatif(whatif.get_session(sessions, view.session.uid))
