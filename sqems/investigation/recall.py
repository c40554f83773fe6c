"""The recall a cause calls for, built from what the analysis found.

A root cause is a statement about exposure, and so is a recall scope: they must agree.
:func:`suggest_recall` turns a ranked cause into the recall that covers every unit
exposed to it, saying how the scope was drawn:

* a **material lot** → that lot's recall (with any lot the data cannot tell apart from it);
* a **supplier** → every lot of the supplier consumed in the analysis window;
* a **machine** → the machine over the window in which one of its parameters left its
  usual level (:func:`~sqems.analysis.changepoint.level_shift_window` on the series of
  its run actuals: the whole drift, not only the runs that crossed a limit); when no
  parameter moved, the machine over the whole analysis window;
* a **parameter zone** → the same change-point window on each machine whose runs were in
  the zone; without a change point, the runs whose actual was in the zone;
* a **shift at a step** or an **operator** → the batches whose run at that step was in
  that shift (by that operator) in the analysis window;
* a **machine while out of calibration** or an **operator while not qualified** → every
  batch with a run made in that state, over the state's own windows (the look-back of
  a calibration found out of tolerance reaches back to the last good one, whatever the
  analysis window).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from sqems.analysis.changepoint import ShiftWindow, level_shift_window
from sqems.analysis.factors import Factor, FactorKind, spec_zone
from sqems.analysis.states import state_batches
from sqems.graph_model.nodes import MaterialLot, Parameter, ProcessRun
from sqems.graph_model.store import Direction, GraphStore, TimeWindow
from sqems.graph_model.traceability import (
    AffectedUnit,
    RecallScope,
    RecallSource,
    SourceKind,
    Traceability,
)

log = logging.getLogger(__name__)
OUT, IN = Direction.OUT, Direction.IN

LOCATE_ALPHA = 0.05
"""The change-point gate's level when a recall looks for a machine's drift. The root
cause has already shown that something about the machine (or the parameter on it) goes
with the defects; the window locates it in time. A window missed leaves the recall at
the machine's whole analysis window - larger, never incomplete."""


@dataclass(frozen=True, slots=True)
class Drift:
    """A machine's parameter that left its usual level, and when."""

    machine: str
    parameter: str
    window: ShiftWindow

    def as_dict(self) -> dict[str, Any]:
        w = self.window
        return {
            "machine": self.machine,
            "parameter": self.parameter,
            "start": _iso(w.first_off),
            "end": _iso(w.last_off),
            "last_good_before": _iso(w.last_good_before),
            "first_good_after": _iso(w.first_good_after),
            "reference": w.reference,
            "peak_shift": w.peak_shift,
            "sigma": w.sigma,
            "runs_off": w.runs_off,
        }


@dataclass(slots=True)
class SuggestedRecall:
    basis: str
    """How the scope was drawn: ``lot``, ``supplier``, ``drift``, ``machine``,
    ``excursion``, ``shift``, ``operator``, ``calibration_state`` or
    ``qualification_state``."""
    explanation: str
    scopes: list[RecallScope]
    drifts: list[Drift]

    def merged(self) -> tuple[RecallScope, str] | None:
        """The recall as one scope (several sources merged), with its description."""
        return merge_scopes(self.scopes)

    def as_dict(self) -> dict[str, Any] | None:
        """The same shape as ``sqems recall --json`` (several sources merged into one);
        None when the cause reached nothing to recall."""
        found = self.merged()
        if found is None:
            return None
        scope, text = found
        return scope.as_dict() | {"source": text}

    def basis_dict(self) -> dict[str, Any]:
        return {
            "basis": self.basis,
            "explanation": self.explanation,
            "sources": [s.source.describe() for s in self.scopes],
            "drifts": [d.as_dict() for d in self.drifts],
        }

    @property
    def units(self) -> set[str]:
        return {u.uid for s in self.scopes for u in s.units}

    def joined(self, other: SuggestedRecall, why: str) -> SuggestedRecall:
        """This recall widened by ``other`` (another cause's; ``why`` says why it is
        in): the basis stays this one's, the scopes and drifts are both."""
        return SuggestedRecall(
            self.basis,
            f"{self.explanation}; and, {why}, {other.explanation}",
            self.scopes + other.scopes,
            self.drifts + other.drifts,
        )


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def _window(lo: float, hi: float) -> TimeWindow:
    start = datetime.fromtimestamp(lo, UTC) if np.isfinite(lo) else None
    end = datetime.fromtimestamp(hi, UTC) if np.isfinite(hi) else None
    return TimeWindow(start, end)


def merge_scopes(scopes: Sequence[RecallScope]) -> tuple[RecallScope, str] | None:
    """One recall scope from several, and its description; a unit reached from more
    than one source keeps the first path found. None for no scope."""
    if not scopes:
        return None
    text = "; ".join(s.source.describe() for s in scopes)
    if len(scopes) == 1:
        return scopes[0], text
    units: dict[str, AffectedUnit] = {}
    for scope in scopes:
        for unit in scope.units:
            units.setdefault(unit.uid, unit)
    ordered = [units[k] for k in sorted(units)]
    triggers = sorted({t for s in scopes for t in s.triggers})
    batches = sorted({b for s in scopes for b in s.batches})
    shipments = sorted({x for s in scopes for x in s.shipments})
    customers = sorted({c for s in scopes for c in s.customers})
    counts = {
        "process_runs": len(triggers),
        "batches": len(batches),
        "units": len(ordered),
        "units_shipped": sum(u.shipment is not None for u in ordered),
        "shipments": len(shipments),
        "customers": len(customers),
    }
    merged = RecallScope(scopes[0].source, triggers, batches, ordered, shipments, customers, counts)
    return merged, text


def suggest_recall(
    store: GraphStore,
    factor: Factor,
    window: tuple[float, float],
    *,
    aliases: Iterable[Factor] = (),
) -> SuggestedRecall:
    """The recall ``factor`` calls for; ``window`` is the analysis window (POSIX
    seconds) that bounds a shift, operator or supplier recall."""
    trace = Traceability(store)
    lo, hi = window
    match factor.kind:
        case FactorKind.MATERIAL_LOT:
            same = tuple(a.uid for a in aliases if a.kind is FactorKind.MATERIAL_LOT)
            scope = trace.recall_scope(RecallSource(SourceKind.LOT, factor.uid, also=same))
            text = f"every unit made from lot {factor.uid}"
            if same:
                text += f" and from {', '.join(same)}, which fed exactly the same batches"
            return SuggestedRecall("lot", text, [scope], [])
        case FactorKind.SUPPLIER:
            lots = _supplier_lots(store, factor.uid, lo, hi)
            if not lots:
                return SuggestedRecall(
                    "supplier", f"no lot of {factor.uid} was consumed in the window", [], []
                )
            scope = trace.recall_scope(RecallSource(SourceKind.LOT, lots[0], also=tuple(lots[1:])))
            return SuggestedRecall(
                "supplier",
                f"every unit made from the {len(lots)} lots of supplier {factor.uid} consumed "
                "in the analysis window",
                [scope],
                [],
            )
        case FactorKind.MACHINE:
            drifts = machine_drifts(store, factor.uid, lo, hi)
            if drifts:
                d = max(drifts, key=lambda d: abs(d.window.peak_shift) / d.window.sigma)
                scope = trace.recall_scope(_drift_source(d))
                return SuggestedRecall(
                    "drift",
                    f"machine {factor.uid} while {d.parameter} was off its usual level "
                    f"(a change point: from {_day(d.window.first_off)} to "
                    f"{_day(d.window.last_off)}, between the last and the first run at the "
                    "usual level)",
                    [scope],
                    [d],
                )
            scope = trace.recall_scope(
                RecallSource(SourceKind.MACHINE, factor.uid, _window(lo, hi))
            )
            return SuggestedRecall(
                "machine",
                f"machine {factor.uid} over the whole analysis window: none of its "
                "parameters shows a change point that would narrow it",
                [scope],
                [],
            )
        case FactorKind.EXCURSION:
            return _excursion_recall(store, trace, factor, lo, hi)
        case FactorKind.SHIFT | FactorKind.OPERATOR:
            batches = _batches_of_runs(store, factor, lo, hi)
            who = (
                f"the {factor.uid} shift at {factor.step}"
                if factor.kind is FactorKind.SHIFT
                else f"operator {factor.uid}"
            )
            if not batches:
                return SuggestedRecall(
                    factor.kind.value, f"no run of {who} in the analysis window", [], []
                )
            scope = trace.recall_scope(
                RecallSource(SourceKind.BATCH, batches[0], also=tuple(batches[1:]))
            )
            return SuggestedRecall(
                factor.kind.value,
                f"the {len(batches)} batches run by {who} in the analysis window",
                [scope],
                [],
            )
        case FactorKind.CALIBRATION_STATE | FactorKind.QUALIFICATION_STATE:
            batches = state_batches(store, factor)
            if not batches:
                return SuggestedRecall(
                    factor.kind.value, f"no run was made {_while(factor)}", [], []
                )
            scope = trace.recall_scope(
                RecallSource(SourceKind.BATCH, batches[0], also=tuple(batches[1:]))
            )
            return SuggestedRecall(
                factor.kind.value,
                f"the {len(batches)} batches with a run made {_while(factor)}",
                [scope],
                [],
            )
    raise ValueError(f"no recall for a factor of kind {factor.kind}")


def _while(factor: Factor) -> str:
    """A state factor as a clause: ``on M-OCCL-1 while found out of tolerance (…)``."""
    if factor.kind is FactorKind.CALIBRATION_STATE:
        return f"on {factor.describe()}"
    return f"by {factor.describe()}"


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _drift_source(d: Drift) -> RecallSource:
    w = d.window
    return RecallSource(
        SourceKind.MACHINE,
        d.machine,
        TimeWindow(
            datetime.fromtimestamp(w.first_off, UTC), datetime.fromtimestamp(w.last_off, UTC)
        ),
    )


def _runs(store: GraphStore, uids: Iterable[str]) -> dict[str, ProcessRun]:
    return {u: n for u, n in store.get_many(uids).items() if isinstance(n, ProcessRun)}


def machine_drifts(
    store: GraphStore, machine: str, lo: float = -np.inf, hi: float = np.inf
) -> list[Drift]:
    """Every parameter of ``machine`` whose run actuals left their usual level, with
    the window. The series is the machine's whole history, so the usual level is known
    even when the analysis window holds mostly the drift; only drifts that overlap
    ``[lo, hi]`` are returned."""
    runs = _runs(store, (e.src for e in store.edges([machine], {"ON": IN})))
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in store.edges(runs, {"RECORDED": OUT}):
        series[e.dst].append((runs[e.src].started_at.timestamp(), float(e.props["value"])))
    found = []
    for parameter, points in sorted(series.items()):
        t, x = np.array(points).T
        w = level_shift_window(t, x, alpha=LOCATE_ALPHA)
        if w is None or w.last_off < lo or w.first_off > hi:
            continue
        found.append(Drift(machine, parameter, w))
    return found


def _excursion_recall(
    store: GraphStore, trace: Traceability, factor: Factor, lo: float, hi: float
) -> SuggestedRecall:
    spec = store.get(factor.uid)
    assert isinstance(spec, Parameter)
    window = _window(lo, hi)
    runs, series = _zone_runs(store, factor, spec, window)
    machines = sorted(series)
    drifts = [
        d for m in machines for d in machine_drifts(store, m, lo, hi) if d.parameter == factor.uid
    ]
    scopes = [trace.recall_scope(_drift_source(d)) for d in drifts]
    covered = {b for scope in scopes for b in scope.batches}
    batches = sorted({e.src for e in store.edges(runs, {"RAN": IN})} - covered)
    if batches:
        scopes.append(
            trace.recall_scope(RecallSource(SourceKind.BATCH, batches[0], also=tuple(batches[1:])))
        )
    if not scopes:
        return SuggestedRecall("excursion", f"no run held {factor.describe()}", [], [])
    bracket = (
        f"the runs that held {factor.describe()} on each machine and every run around them up "
        "to the last one before and the first one after in the middle half of the tolerance "
        "(the last known good runs)"
    )
    if not drifts:
        return SuggestedRecall(
            "excursion",
            f"the {len(batches)} batches of {bracket}; no machine shows a change point that "
            "would bound it in time",
            scopes,
            [],
        )
    where = ", ".join(
        f"{d.machine} ({_day(d.window.first_off)} to {_day(d.window.last_off)})" for d in drifts
    )
    extra = (
        f", and the {len(batches)} batches of {bracket} outside those windows" if batches else ""
    )
    return SuggestedRecall(
        "drift",
        f"the machines on which {factor.uid} drifted, over the change-point window of each "
        f"drift: {where}{extra}",
        scopes,
        drifts,
    )


def _zone_runs(
    store: GraphStore, factor: Factor, spec: Parameter, window: TimeWindow
) -> tuple[set[str], dict[str, list[str]]]:
    """The runs that held ``factor``'s zone in ``window``, bracketed on each machine by
    its last run in the middle half of the tolerance before and its first after: a run
    between two good ones that was itself in a quarter zone is as suspect as the
    excursion next to it. Returns the runs and, per machine, its runs in time order."""
    recorded = {e.src: float(e.props["value"]) for e in store.edges([factor.uid], {"RECORDED": IN})}
    runs = _runs(store, recorded)
    on = {e.src: e.dst for e in store.edges(runs, {"ON": OUT})}
    series: dict[str, list[str]] = defaultdict(list)
    for uid in sorted(runs, key=lambda u: runs[u].started_at):
        if uid in on:
            series[on[uid]].append(uid)
    zone = {u: spec_zone(v, spec.lsl, spec.usl) for u, v in recorded.items()}
    chosen: set[str] = set()
    for ordered in series.values():
        hits = [
            i
            for i, u in enumerate(ordered)
            if zone[u] == factor.zone and window.overlaps(runs[u].interval())
        ]
        for i in hits:
            chosen.add(ordered[i])
            for step in (-1, 1):
                j = i + step
                while 0 <= j < len(ordered) and zone[ordered[j]] is not None:
                    chosen.add(ordered[j])
                    j += step
    machines = {on[u] for u in chosen}
    return chosen, {m: series[m] for m in machines}


def _supplier_lots(store: GraphStore, supplier: str, lo: float, hi: float) -> list[str]:
    lots = [
        u
        for u, n in store.get_many(
            e.dst for e in store.edges([supplier], {"SUPPLIED": OUT})
        ).items()
        if isinstance(n, MaterialLot)
    ]
    window = _window(lo, hi)
    used = store.edges(lots, {"CONSUMED_IN": OUT})
    batches = store.get_many({e.dst for e in used})
    return sorted(
        {e.src for e in used if e.dst in batches and window.overlaps(batches[e.dst].interval())}
    )


def _batches_of_runs(store: GraphStore, factor: Factor, lo: float, hi: float) -> list[str]:
    if factor.kind is FactorKind.SHIFT:
        start, hop = factor.step, "FOR_STEP"
    else:
        start, hop = factor.uid, "OPERATED_BY"
    if start is None:
        return []
    runs = _runs(store, (e.src for e in store.edges([start], {hop: IN})))
    window = _window(lo, hi)
    chosen = [
        u
        for u, r in runs.items()
        if window.overlaps(r.interval())
        and (factor.kind is not FactorKind.SHIFT or r.shift.value == factor.uid)
    ]
    return sorted({e.src for e in store.edges(chosen, {"RAN": IN})})
