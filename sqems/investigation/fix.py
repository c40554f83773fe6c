"""The what-if of the fix a cause calls for, on the twin of the line where it acts.

Each kind of cause has its fix, and each fix is a what-if scenario of the line the cause
acts on (:class:`~sqems.simulation.scenarios.ScenarioSpec`):

===================  =============================================================
cause                scenario
===================  =============================================================
a drift (machine or  ``drifts``: the machine's drift of that parameter removed over
parameter zone)      the same change-point window the recall used
a machine            ``routing``: the step it performs runs on its other machines
a shift at a step    ``step_shifts``: the step works the line's other shifts
a material lot       ``lots``: the lot replaced by a new lot of the same material
a supplier           ``lots``: every lot of the supplier replaced
an operator          ``operators``: the operator's runs taken by the step's others
===================  =============================================================

The result carries each KPI's baseline and scenario values and their paired difference
with a 94 % credible interval, and a verdict per KPI ("credible" or "no credible
change"); a scenario that changes nothing says so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqems.analysis.factors import Factor, FactorKind
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Parameter, ProcessRun
from sqems.graph_model.store import Direction, GraphStore
from sqems.investigation.recall import SuggestedRecall
from sqems.simulation import whatif
from sqems.simulation.runner import WhatIfRunner
from sqems.simulation.scenarios import ScenarioSpec
from sqems.twin.line import SHIFT_ORDER

OUT, IN = Direction.OUT, Direction.IN


@dataclass(frozen=True, slots=True)
class Fix:
    """A proposed what-if: the line, what it changes in words, and the scenario."""

    line: str
    description: str
    changes: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "description": self.description, "changes": self.changes}


def line_of_runs(store: GraphStore, runs: list[str]) -> str | None:
    """The line most of ``runs`` ran on."""
    machines = [e.dst for e in store.edges(runs, {"ON": OUT})]
    lines: Counter[str] = Counter()
    line_of = {e.src: e.dst for e in store.edges(set(machines), {"PART_OF": OUT})}
    for m in machines:
        if m in line_of:
            lines[line_of[m]] += 1
    return lines.most_common(1)[0][0] if lines else None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def fix_for(store: GraphStore, factor: Factor, recall: SuggestedRecall) -> Fix:
    """The scenario that removes ``factor`` (see the module docstring), read from the
    graph in a few bulk calls (no twin is built to propose it)."""
    if recall.drifts and factor.kind in (FactorKind.MACHINE, FactorKind.EXCURSION):
        drift = recall.drifts[0]
        line = _line_of_machine(store, drift.machine)
        w = drift.window
        return Fix(
            line,
            f"remove the drift of {drift.parameter} on {drift.machine} "
            f"({_iso(w.first_off)[:16]} to {_iso(w.last_off)[:16]})",
            {
                "drifts": [
                    {
                        "machine": d.machine,
                        "parameter": d.parameter,
                        "start": _iso(d.window.first_off),
                        "end": _iso(d.window.last_off),
                    }
                    for d in recall.drifts
                ]
            },
        )
    match factor.kind:
        case FactorKind.MACHINE:
            line = _line_of_machine(store, factor.uid)
            own = [e.src for e in store.edges([factor.uid], {"ON": IN})]
            step_uid = _most_common(e.dst for e in store.edges(own, {"FOR_STEP": OUT}))
            if step_uid is None:
                raise ValidationFailed(f"machine {factor.uid} ran no step on record")
            runs = [e.src for e in store.edges([step_uid], {"FOR_STEP": IN})]
            others = sorted({e.dst for e in store.edges(runs, {"ON": OUT})} - {factor.uid})
            if not others:
                raise ValidationFailed(
                    f"step {step_uid} has no machine but {factor.uid}: no routing can avoid it"
                )
            return Fix(
                line,
                f"run {step_uid} on {', '.join(others)} instead of {factor.uid}",
                {"routing": [{"step": step_uid, "machines": others}]},
            )
        case FactorKind.SHIFT:
            step_uid = str(factor.step)
            runs = [e.src for e in store.edges([step_uid], {"FOR_STEP": IN})]
            line = _required(line_of_runs(store, runs), f"step {step_uid}")
            worked = {
                r.shift.value for r in store.get_many(runs).values() if isinstance(r, ProcessRun)
            }
            shifts = [s for s in SHIFT_ORDER if s in worked and s != factor.uid]
            if not shifts:
                raise ValidationFailed(f"step {step_uid} works no shift but {factor.uid}")
            return Fix(
                line,
                f"work {step_uid} in the {', '.join(shifts)} shifts only (not {factor.uid})",
                {"step_shifts": [{"step": step_uid, "shifts": shifts}]},
            )
        case FactorKind.MATERIAL_LOT | FactorKind.SUPPLIER:
            lots = (
                [factor.uid]
                if factor.kind is FactorKind.MATERIAL_LOT
                else [e.dst for e in store.edges([factor.uid], {"SUPPLIED": OUT})]
            )
            batches = [e.dst for e in store.edges(lots, {"CONSUMED_IN": OUT})]
            runs = [e.dst for e in store.edges(batches, {"RAN": OUT})]
            line = _required(line_of_runs(store, runs), f"{factor.describe()}")
            key = "lot" if factor.kind is FactorKind.MATERIAL_LOT else "supplier"
            what = (
                f"lot {factor.uid} by a new lot of the same material"
                if key == "lot"
                else f"every lot of supplier {factor.uid} by new lots"
            )
            return Fix(line, f"replace {what}", {"lots": [{key: factor.uid}]})
        case FactorKind.OPERATOR:
            runs = [e.src for e in store.edges([factor.uid], {"OPERATED_BY": IN})]
            line = _required(line_of_runs(store, runs), f"operator {factor.uid}")
            step_uid = _most_common(e.dst for e in store.edges(runs, {"FOR_STEP": OUT}))
            if step_uid is None:
                raise ValidationFailed(f"operator {factor.uid} ran no step on record")
            return Fix(
                line,
                f"have {step_uid}'s other operators take {factor.uid}'s runs",
                {"operators": [{"step": step_uid, "exclude": [factor.uid]}]},
            )
        case FactorKind.EXCURSION:
            runs = [e.src for e in store.edges([factor.uid], {"RECORDED": IN})]
            line = _required(line_of_runs(store, runs), f"parameter {factor.uid}")
            spec = store.get(factor.uid)
            assert isinstance(spec, Parameter)
            if spec.lsl is None or spec.usl is None:
                raise ValidationFailed(f"parameter {factor.uid} has no two-sided spec to centre in")
            centre = (spec.lsl + spec.usl) / 2.0
            return Fix(
                line,
                f"hold {factor.uid} at the centre of its tolerance, {centre:g} {spec.unit}",
                {"parameters": [{"parameter": factor.uid, "setpoint": centre}]},
            )
        case FactorKind.CALIBRATION_STATE | FactorKind.QUALIFICATION_STATE:
            # the fix is a record's, not a line's: no scenario of the twin changes it
            what = "calibrate" if factor.kind is FactorKind.CALIBRATION_STATE else "requalify"
            raise ValidationFailed(
                f"{factor.describe()} is fixed by the quality system ({what} "
                f"{factor.uid} and assess what was made in the state), not by a change to "
                "the line a what-if can simulate"
            )
    raise ValidationFailed(f"no fix is known for a factor of kind {factor.kind}")


def _required(line: str | None, what: str) -> str:
    if line is None:
        raise ValidationFailed(f"{what} ran on no machine of any line: no twin can show its fix")
    return line


def _line_of_machine(store: GraphStore, machine: str) -> str:
    line = next((e.dst for e in store.edges([machine], {"PART_OF": OUT})), None)
    return _required(line, f"machine {machine}")


def _most_common(items: Iterable[str]) -> str | None:
    counted = Counter(items).most_common(1)
    return counted[0][0] if counted else None


def run_fix(
    runner: WhatIfRunner,
    fix: Fix,
    *,
    name: str = "investigation",
    hours: float = 8.0,
    replications: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Simulate ``fix`` against its line's baseline (a new what-if session) and return
    the result, JSON-ready.

    Only the steps the fix acts on add defects (:meth:`ScenarioSpec.acting_steps`; the
    whole line for a fix that acts on all of it): the others add the same defects with
    and without the fix, so the difference is the line's, and only the models it needs
    are fitted. The yields are then those steps' (``steps``, ``scope``)."""
    store = runner.sessions
    spec = ScenarioSpec.parse(fix.changes)
    twin = runner.line(fix.line)
    acting = spec.acting_steps(twin, runner.grouped(fix.line, spec))
    modelled = [s.uid for s in twin.steps if s.modelled]
    view = whatif.create_session(
        store,
        fix.line,
        name,
        horizon_s=hours * 3600,
        replications=replications,
        seed=seed,
    )
    scenario = whatif.add_scenario(store, view.session.uid, fix.description, spec)
    runner.submit(view.session.uid, scenario.uid, steps=acting).result()
    done = whatif.get_session(store, view.session.uid)
    results = {s.uid: json.loads(s.results) if s.results else {} for s in done.scenarios}
    base = results[done.baseline.uid]
    body = results[scenario.uid]
    kpis = {}
    for kpi, value in body.get("kpis", {}).items():
        kpis[kpi] = {
            "baseline": base.get("kpis", {}).get(kpi),
            "scenario": value,
            "difference": body.get("difference", {}).get(kpi),
            "verdict": body.get("verdicts", {}).get(kpi),
        }
    note = whatif.interval_note(replications)
    better: list[str] = []
    worse: list[str] = []
    for kpi, v in kpis.items():
        if v["verdict"] != whatif.CREDIBLE or v["difference"] is None:
            continue
        up = v["difference"]["mean"] > 0
        (better if up == (kpi in whatif.BETTER_HIGH) else worse).append(kpi)
    return {
        "line": fix.line,
        "session": view.session.uid,
        "scenario": scenario.uid,
        "description": fix.description,
        "changes": body.get("changes") or fix.changes,
        "hours": hours,
        "replications": replications,
        "steps": body.get("steps", []),
        "scope": _scope(acting, body.get("steps", []), modelled),
        "kpis": kpis,
        "warnings": [*body.get("warnings", []), *filter(None, [note])],
        "better": better,
        "worse": worse,
        "verdict": _verdict(better, worse),
    }


def _scope(acting: tuple[str, ...] | None, steps: list[str], modelled: list[str]) -> str:
    if acting is None or (steps and set(modelled) <= set(steps)):
        return "the whole line"
    if not steps:
        return "no step's defects: the fix acts only at steps the twin has no quality model of"
    return (
        f"the defects of {', '.join(steps)} alone, where the fix acts: the line's other "
        "steps add the same defects with and without it (the difference is the line's; "
        "yield, first-pass yield and ppm are these steps')"
    )


def _verdict(better: list[str], worse: list[str]) -> str:
    if not better and not worse:
        return f"{whatif.NO_CREDIBLE_CHANGE} in any KPI: the twin cannot show that this fix helps"
    parts = []
    if better:
        parts.append(f"credibly better {', '.join(better)}")
    if worse:
        parts.append(f"credibly worse {', '.join(worse)}")
    return "; ".join(parts)
