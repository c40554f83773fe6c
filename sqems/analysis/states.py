"""The states the plant's records put a run in: its machine out of calibration, its
operator not qualified — as root-cause factors.

A calibration found out of tolerance on an occlusion tester casts doubt on every result
since its last good calibration (ISO 13485:2016 §7.6), and an operator whose
qualification lapsed ran every step of it unqualified until requalified. As plain
factors, the tester and the operator spread those weeks over their whole history, and
lots that happened to be in use at the time look as guilty. So each state is a factor of
its own, whose exposure is only the runs inside its windows:

- ``calibration_state`` — one per machine and kind of window (``overdue``: from the last
  calibration's due date to the next calibration; ``found_out_of_tolerance``: from the
  last good calibration to the one that found it out; ``failed``: from a failed
  calibration to the next good one; ``limited``: while a limited calibration stood), as
  :mod:`sqems.graph_model.calibration` cuts them from the records;
- ``qualification_state`` — one per operator, step (or work-instruction revision) and
  reason (``lapsed``, ``revoked``, ``not_yet_qualified``, ``never_qualified``,
  ``other_revision``), as :mod:`sqems.graph_model.qualification` reads the operator's
  qualification at the start of each run.

A run is exposed to a calibration state when it overlaps one of the state's windows (a run
straddling the due time ran partly overdue), to a qualification state when the operator was
not qualified when it started. Each window keeps the records it rests on, in words with
times in the site's zone, for the evidence and the 5-Why.

The 6M bone: a machine out of calibration is Machine, unless it measures or tests (its
kind or name says a tester, gauge, inspection, measuring, metrology, vision, AOI or X-ray
station): then what is in doubt is its verdicts, and the bone is Measurement. An operator
state is Man.

:func:`read_states` reads everything for a whole population in a fixed few store calls,
however many machines, operators and runs it holds.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo

from sqems.analysis.factors import Factor, FactorKind, PlantFacts, RunFacts, read_batches
from sqems.graph_model.calibration import CalibrationRecords, CalWindow, CalWindowKind, due, when
from sqems.graph_model.nodes import Calibration, Category6M, Machine, Site
from sqems.graph_model.qualification import QualificationRecords
from sqems.graph_model.store import Direction, GraphStore
from sqems.localtime import zone_named

OUT, IN = Direction.OUT, Direction.IN

MEASURING = re.compile(
    r"test|gauge|gage|inspect|measur|metrolog|\bcmm\b|vision|\baoi\b|x-?ray", re.IGNORECASE
)
"""Words in a machine's kind or name that make it measuring or test equipment."""


def calibration_bone(machine: Machine | None) -> Category6M:
    """The 6M bone of ``machine`` out of calibration: Measurement for measuring or test
    equipment (:data:`MEASURING`), else Machine.

    >>> calibration_bone(Machine(uid="M-OCCL-1", name="Occlusion tester", kind="tester"))
    <Category6M.MEASUREMENT: 'measurement'>
    >>> calibration_bone(Machine(uid="M-ENC-1", name="Encoder press", kind="press"))
    <Category6M.MACHINE: 'machine'>
    """
    if machine is None:
        return Category6M.MACHINE
    if MEASURING.search(machine.kind) or MEASURING.search(machine.name):
        return Category6M.MEASUREMENT
    return Category6M.MACHINE


def local_day(t: float | datetime | None, tz: tzinfo) -> str:
    """``t``'s date in ``tz`` (``2026-03-16``)."""
    if t is None:
        return "now"
    when = t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)
    return when.astimezone(tz).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class StateWindow:
    """One window of a state: when, the records it rests on, and both in words."""

    start: float
    end: float
    """POSIX seconds; ``inf`` while the state still holds."""
    records: tuple[str, ...]
    """The calibration or qualification uids it rests on."""
    span: str
    """The window in site time (``2026-03-02 to 2026-03-16 CDT``)."""
    cites: str
    """The records in words: uid, verdict, as found against reference ± tolerance and
    dates for a calibration; uid, reason and dates for a qualification."""
    record: str | None
    """The record the 5-Why ends at: the calibration that found the state (or the one
    that lapsed), the qualification that lapsed or was revoked; None when there is none
    (never qualified)."""
    why: str
    """The 5-Why's last answer: why a run in this window is suspect."""


@dataclass(slots=True)
class PlantStates:
    """The state factors of a population's runs, with the windows behind each."""

    by_run: dict[str, tuple[Factor, ...]] = field(default_factory=dict)
    """Run uid → the state factors it was exposed to."""
    windows: dict[Factor, list[StateWindow]] = field(default_factory=dict)
    """State factor → its windows that runs of the population fell in, in time order."""
    run_window: dict[tuple[str, Factor], StateWindow] = field(default_factory=dict)
    """(run, factor) → the window the run fell in."""

    def factors_of_run(self, run: str) -> tuple[Factor, ...]:
        return self.by_run.get(run, ())

    def window_of(self, run: str, factor: Factor) -> StateWindow | None:
        return self.run_window.get((run, factor))

    def records(self, factor: Factor) -> list[str]:
        """Each window of ``factor`` with its records in words."""
        return [f"{w.span}: {w.cites}" for w in self.windows.get(factor, ())]


def _zones(store: GraphStore, machines: Sequence[str]) -> dict[str, tzinfo]:
    """Each machine's site zone (machine → line → site), UTC where none is recorded:
    two store calls for all the machines."""
    if not machines:
        return {}
    to_line, to_site = store.edges_along(machines, [{"PART_OF": OUT}, {"PART_OF": OUT}])
    line_of = {e.src: e.dst for e in to_line}
    site_of = {e.src: e.dst for e in to_site}
    sites = store.get_many(set(site_of.values()))
    out: dict[str, tzinfo] = {}
    for m in machines:
        site = sites.get(site_of.get(line_of.get(m, ""), ""))
        name = site.timezone if isinstance(site, Site) else "UTC"
        out[m] = zone_named(name or "UTC", f"site {site.uid}" if site else "the default")
    return out


def read_states(store: GraphStore, facts: PlantFacts) -> PlantStates:
    """The calibration and qualification states of every run of ``facts``; see the
    module docstring. A fixed few store calls, whatever the number of runs, machines and
    operators."""
    runs = [r for b in facts.batches.values() for r in b.runs]
    machines = sorted({r.machine for r in runs if r.machine is not None})
    if not runs:
        return PlantStates()
    nodes = store.get_many(machines)
    zones = _zones(store, machines)
    found: dict[str, list[tuple[Factor, StateWindow]]] = defaultdict(list)
    _calibration_states(store, runs, machines, nodes, zones, found)
    _qualification_states(store, runs, zones, found)
    return _canonical(found)


def _calibration_states(
    store: GraphStore,
    runs: Sequence[RunFacts],
    machines: Sequence[str],
    nodes: Mapping[str, object],
    zones: Mapping[str, tzinfo],
    found: dict[str, list[tuple[Factor, StateWindow]]],
) -> None:
    records = CalibrationRecords.read(store, machines)
    mine: dict[str, list[tuple[Factor, CalWindow, StateWindow]]] = {}
    for machine in machines:
        tz = zones.get(machine, UTC)
        node = nodes.get(machine)
        bone = calibration_bone(node if isinstance(node, Machine) else None)
        cals = {c.uid: c for c in records.of(machine)}
        mine[machine] = []
        for w in records.windows(machine):
            factor = Factor(
                FactorKind.CALIBRATION_STATE, machine, zone=w.kind.value.replace(" ", "_"),
                bone=bone,
            )  # fmt: skip
            start = w.start.timestamp() if w.start is not None else float("-inf")
            end = w.end.timestamp() if w.end is not None else float("inf")
            since = (
                "before the first record"
                if w.start is None
                else due(w.start, tz)
                if w.kind is CalWindowKind.OVERDUE
                else when(w.start, tz)
            )
            span = f"{since} to {when(w.end, tz) if w.end is not None else 'now (open)'}"
            cites = "; ".join(calibration_text(cals[u], tz) for u in w.calibrations if u in cals)
            why = f"{machine} ran while out of calibration ({w.kind.value}): {w.sentence(tz)}"
            window = StateWindow(start, end, w.calibrations, span, cites, w.record, why)
            mine[machine].append((factor, w, window))
    for run in runs:
        held = mine.get(run.machine or "")
        if not held:
            continue
        began, ended = (datetime.fromtimestamp(t, UTC) for t in run.span)
        for factor, w, window in held:
            if w.overlaps(began, ended):
                found[run.uid].append((factor, window))


def calibration_text(cal: Calibration, tz: tzinfo) -> str:
    """A calibration record in words, times in ``tz``: ``CAL-OCCL-3 of 2026-03-16 14:05
    CDT: fail, as found 5.62 N against 5 ± 0.3 N, as left 5.01 N, due 2026-04-16``."""
    text = f"{cal.uid} of {when(cal.performed_at, tz)}: {cal.verdict.value}"
    unit = f" {cal.measured_unit}" if cal.measured_unit else ""
    if cal.as_found is not None:
        text += f", as found {cal.as_found:g}{unit}"
        if cal.reference is not None and cal.tolerance is not None:
            text += f" against {cal.reference:g} ± {cal.tolerance:g}{unit}"
    if cal.as_left is not None:
        text += f", as left {cal.as_left:g}{unit}"
    if cal.limitation:
        text += f", limited to: {cal.limitation}"
    if cal.due_at is not None:
        text += f", due {due(cal.due_at, tz)}"
    return text


def _qualification_states(
    store: GraphStore,
    runs: Sequence[RunFacts],
    zones: Mapping[str, tzinfo],
    found: dict[str, list[tuple[Factor, StateWindow]]],
) -> None:
    operators = sorted({r.operator for r in runs if r.operator is not None})
    if not operators:
        return
    held = QualificationRecords.read(store, operators)
    for run in runs:
        if run.operator is None or run.step is None:
            continue
        at = datetime.fromtimestamp(run.started_at, UTC)
        state = held.at(run.operator, run.step, run.instruction, at)
        if state.qualified:
            continue
        reason = state.reason.value.replace(" ", "_")
        scope = state.revision or run.step
        tz = zones.get(run.machine or "", UTC)
        since = local_day(state.since, tz) if state.since is not None else None
        until = local_day(state.until, tz) if state.until is not None else None
        span = (
            f"{since} to {until}" if since and until
            else f"since {since}" if since
            else f"until {until}" if until
            else ""
        )  # fmt: skip
        factor = Factor(FactorKind.QUALIFICATION_STATE, run.operator, scope, reason)
        start = state.since.timestamp() if state.since is not None else float("-inf")
        end = state.until.timestamp() if state.until is not None else float("inf")
        record = state.record if state.record != run.operator else None
        sentence = state.sentence(tz)
        # the sentence of another revision's record gives no dates: the state's are these
        dates = f" ({factor.state} {span})" if span and reason == "other_revision" else ""
        why = f"{run.operator} ran {scope} while not qualified for it: {sentence}{dates}"
        window = StateWindow(
            start, end, (state.record,) if state.record else (), span, sentence, record, why
        )
        found[run.uid].append((factor, window))


def _canonical(found: Mapping[str, Iterable[tuple[Factor, StateWindow]]]) -> PlantStates:
    """One factor object per state, whose ``detail`` names all its windows the runs fell
    in, so every run carries the same description."""
    windows: dict[Factor, dict[StateWindow, None]] = defaultdict(dict)
    for pairs in found.values():
        for factor, window in pairs:
            windows[factor][window] = None
    canonical: dict[Factor, Factor] = {}
    ordered: dict[Factor, list[StateWindow]] = {}
    for factor, ws in windows.items():
        spans = sorted(ws, key=lambda w: (w.start, w.end))
        detail = "; ".join(dict.fromkeys(_window_words(factor, w) for w in spans))
        same = replace(factor, detail=detail)
        canonical[factor] = same
        ordered[same] = spans
    states = PlantStates(windows=ordered)
    for run, pairs in found.items():
        mine = []
        for factor, window in pairs:
            same = canonical[factor]
            mine.append(same)
            states.run_window.setdefault((run, same), window)
        states.by_run[run] = tuple(dict.fromkeys(mine))
    return states


def _window_words(factor: Factor, window: StateWindow) -> str:
    if factor.kind is FactorKind.CALIBRATION_STATE and factor.zone == "found_out_of_tolerance":
        return f"look-back window {window.span}"
    return window.span


def state_batches(store: GraphStore, factor: Factor) -> list[str]:
    """The batches with a run made in ``factor``'s state — the machine's runs inside its
    windows of that kind, the operator's runs while not qualified for that scope for that
    reason — over the whole record, not only an analysis window: the state's windows
    bound it. Empty for a factor that is not a state."""
    if factor.kind is FactorKind.CALIBRATION_STATE:
        hop = {"ON": IN}
    elif factor.kind is FactorKind.QUALIFICATION_STATE:
        hop = {"OPERATED_BY": IN}
    else:
        return []
    runs = [e.src for e in store.edges([factor.uid], hop)]
    ran = store.edges(runs, {"RAN": IN}) if runs else []
    facts = read_batches(store, {e.src for e in ran})
    states = read_states(store, facts)
    return sorted(
        b.uid
        for b in facts.batches.values()
        if any(factor in states.factors_of_run(r.uid) for r in b.runs)
    )
