"""The device history record of a batch, from the graph, as HTML and PDF.

Since 2 February 2026 the US FDA's Quality Management System Regulation (21 CFR 820,
"QMSR") incorporates ISO 13485:2016 by reference (§820.7, §820.10), and the record of
each batch that §820.184 used to define is the record ISO 13485:2016 **§7.5.1**
requires "for each medical device or batch of medical devices", which "provides
traceability to the extent specified in 7.5.9 and identifies the amount manufactured
and amount approved for distribution". The sections below gather from the graph what
that record and the clauses it relies on ask for:

| section | what | ISO 13485:2016 |
| --- | --- | --- |
| identification | batch, product, amounts made and approved, unit states, dates | 7.5.1, 7.5.8 |
| genealogy | material lots, suppliers, sub-assembly batches and their deviations | 7.5.9 |
| production | each run: step, machine, operator, shift, times, actuals and limits | 7.5.1, 7.5.6 |
| equipment | the calibration in force on each machine when it ran, and why a run is flagged | 7.6 |
| personnel | each operator's qualification for the step when they ran it, and why not | 6.2 |
| look-back | each run since the last good calibration of a machine found out | 7.6 |
| inspection | of the batch and its units: method, sample, findings, verdict, images | 8.2.6 |
| deviations | each with its key and its signed disposition (or that it waits for one) | 8.3 |
| CAPA | the CAPAs addressing the defects and alarms | 8.5.2 |
| release | approved only when every deviation, rolled up, is disposed | 7.5.1, 8.3 |

**Times.** Stored times are UTC; the record shows each in the site's zone with its
abbreviation (``2026-03-09 06:10 CDT``), the zone read as :mod:`sqems.localtime` reads
it. A due time at 23:59:59 local is due that day: ``due 2026-03-02 (end of day, CST)``.

**Flags.** Calibration states come from :mod:`sqems.graph_model.calibration` (overdue,
found out of tolerance, failed, limited) and qualification states from
:mod:`sqems.graph_model.qualification` (lapsed, not yet qualified, revoked, other revision,
never qualified), each with its dates and records; a run that starts inside a state's
bounds and ends outside them (or the reverse) is flagged as straddling it.

**Release.** Every deviation has a key (``RUN-7:calibration``, a defect's uid, …); a
:class:`~sqems.graph_model.nodes.DeviationDisposition` signed against the batch and that
key disposes it (:func:`dispose`). The record says "approved for distribution" only
when every deviation of the batch and of its sub-assembly batches, at any depth, has
one, and none rejects the batch.

``device_history(store, batch)`` builds it; ``render_html`` lays it out for the screen
and for print; ``render_pdf`` prints that HTML with headless Chromium (the Debian
``chromium`` package), so the PDF is the same document as the page.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from sqems import localtime
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.calibration import (
    CalibrationRecords,
    CalWindow,
    CalWindowKind,
    calibration_state_at,
    due,
    straddles,
    when,
)
from sqems.graph_model.nodes import (
    Alarm,
    Batch,
    Calibration,
    Capa,
    Defect,
    DeviationDisposition,
    DispositionDecision,
    Inspection,
    Machine,
    Material,
    MaterialLot,
    Operator,
    Parameter,
    ProcessRun,
    ProcessStep,
    Product,
    Supplier,
    Unit,
    UnitStatus,
    Verdict,
    WorkInstruction,
)
from sqems.graph_model.qualification import QualificationRecords, QualState
from sqems.graph_model.store import Direction, GraphStore
from sqems.quality import disposition as disp
from sqems.quality.audit import AuditTrail
from sqems.quality.capa import Actor

IN, OUT = Direction.IN, Direction.OUT
CHROMIUM = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")


@dataclass(frozen=True, slots=True)
class Actual:
    parameter: str
    name: str
    value: float
    unit: str
    lsl: float | None
    usl: float | None

    @property
    def in_spec(self) -> bool:
        return (self.lsl is None or self.value >= self.lsl) and (
            self.usl is None or self.value <= self.usl
        )


@dataclass(frozen=True, slots=True)
class Flag:
    """Why a run is flagged: ``subject`` calibration or qualification, ``state`` the
    state's name (``overdue``, ``lapsed``, ``straddles overdue``…), ``text`` the reason
    with its dates in site time, ``records`` the calibration or qualification uids."""

    subject: str
    state: str
    text: str
    records: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Run:
    uid: str
    step: str | None
    step_name: str | None
    machine: str | None
    operator: str | None
    operator_name: str | None
    operator_qualified: bool | None
    shift: str
    started_at: datetime
    ended_at: datetime | None
    calibration: str
    """The calibration in force on the machine when the run started, or why none is,
    then each calibration flag of the run."""
    calibrated: bool
    actuals: list[Actual]
    qualification: str = ""
    """The operator's qualification for the step when the run started, or why none."""
    instruction: str | None = None
    """The work-instruction revision the run followed, when recorded."""
    flags: tuple[Flag, ...] = ()
    in_force: str = ""
    """The calibration in force alone (``calibration`` adds the flags)."""


@dataclass(frozen=True, slots=True)
class LotUsed:
    lot: str
    material: str | None
    material_name: str | None
    supplier: str | None
    supplier_name: str | None
    received_at: datetime
    quantity: float | None


@dataclass(frozen=True, slots=True)
class Deviation:
    """One deviation of a batch's record: ``key`` is stable within ``batch`` (what a
    disposition names); ``disposition`` the signed decision, when there is one."""

    batch: str
    key: str
    text: str
    disposition: DeviationDisposition | None = None

    @property
    def rejects(self) -> bool:
        return (
            self.disposition is not None
            and self.disposition.decision is DispositionDecision.REJECT_BATCH
        )


@dataclass(frozen=True, slots=True)
class LookBackRun:
    run: str
    batch: str | None
    started_at: datetime
    ended_at: datetime | None
    this_batch: bool


@dataclass(frozen=True, slots=True)
class LookBack:
    """The runs on ``machine`` since its last good calibration before ``window``'s
    finding (ISO 13485 §7.6: their results' validity must be assessed)."""

    machine: str
    window: CalWindow
    sentence: str
    runs: list[LookBackRun]


@dataclass(frozen=True, slots=True)
class Release:
    """The release statement: ``approved`` only when no deviation waits and none rejects."""

    approved: bool
    statement: str
    waiting: tuple[Deviation, ...]
    rejected_by: tuple[Deviation, ...]


@dataclass
class DeviceHistoryRecord:
    batch: Batch
    product: Product | None
    generated_at: datetime
    units: int
    statuses: dict[str, int]
    shipped: int
    shipments: list[str]
    lots: list[LotUsed]
    subassembly_batches: list[str]
    runs: list[Run]
    inspections: list[Inspection]
    defects: list[tuple[Defect, str, str | None]]
    """Each defect with the unit it was found on and its type."""
    alarms: list[Alarm]
    capas: list[Capa]
    zone: localtime.SiteZone = localtime.UTC_ZONE
    """The site's zone every time is shown in."""
    found: list[Deviation] = field(default_factory=list)
    """This batch's own deviations."""
    subassemblies: list[DeviceHistoryRecord] = field(default_factory=list)
    """The records of the batches its sub-assemblies came from (each with its own)."""
    look_back: list[LookBack] = field(default_factory=list)

    @property
    def deviations(self) -> list[str]:
        """This batch's own deviations, as sentences."""
        return [d.text for d in self.found]

    @property
    def all_deviations(self) -> list[Deviation]:
        """Its own deviations, then its sub-assemblies' at every depth (each once)."""
        seen: set[tuple[str, str]] = set()
        found: list[Deviation] = []
        stack = [self]
        while stack:
            record = stack.pop(0)
            for d in record.found:
                if (d.batch, d.key) not in seen:
                    seen.add((d.batch, d.key))
                    found.append(d)
            stack.extend(record.subassemblies)
        return found

    @property
    def rolled_up(self) -> list[Deviation]:
        """The deviations of its sub-assembly batches, at every depth."""
        return [d for d in self.all_deviations if d.batch != self.batch.uid]

    @property
    def release(self) -> Release:
        every = self.all_deviations
        waiting = tuple(d for d in every if d.disposition is None)
        rejected = tuple(d for d in every if d.rejects)
        uid = self.batch.uid
        if rejected:
            first = rejected[0]
            sign = first.disposition
            assert sign is not None
            return Release(False, (
                f"Not approved for distribution: batch {uid} is rejected by the disposition "
                f"of {first.key} (batch {first.batch}), signed by {sign.signer} "
                f"{when(sign.signed_at, self.zone.tz)}."), waiting, rejected)  # fmt: skip
        if waiting:
            names = ", ".join(f"{d.key}" + ("" if d.batch == uid else f" (batch {d.batch})")
                              for d in waiting)  # fmt: skip
            return Release(False, (
                f"Release withheld: {len(waiting)} of {len(every)} deviation(s) wait for a "
                f"disposition: {names}. Batch {uid} is not approved for distribution until "
                "each has a signed disposition."), waiting, rejected)  # fmt: skip
        why = (
            f"every deviation ({len(every)}, {len(self.rolled_up)} of them from sub-assembly "
            "batches) has a signed disposition"
            if every
            else "no deviation is recorded for it or its sub-assemblies"
        )
        return Release(True, (
            f"Approved for distribution: {self.releasable} unit(s) of batch {uid}; {why}."
        ), waiting, rejected)  # fmt: skip

    @property
    def releasable(self) -> int:
        """Units whose state lets them ship (good or reworked)."""
        return self.statuses.get(UnitStatus.GOOD.value, 0) + self.statuses.get(
            UnitStatus.REWORKED.value, 0
        )

    @property
    def approved_for_distribution(self) -> int:
        """Units approved for distribution: none while the release is withheld."""
        return self.releasable if self.release.approved else 0


def device_history(
    store: GraphStore, batch_uid: str, zone: localtime.SiteZone | None = None
) -> DeviceHistoryRecord:
    """The record of ``batch_uid``, its times in ``zone`` (the site's, read from the
    graph as :func:`sqems.localtime.zone_of` reads it, when None)."""
    if zone is None:
        from sqems.settings import Settings  # noqa: PLC0415 - only when no zone is given

        zone = localtime.zone_of(Settings(), store)
    return _record(store, batch_uid, zone, frozenset())


def _record(
    store: GraphStore, batch_uid: str, zone: localtime.SiteZone, above: frozenset[str]
) -> DeviceHistoryRecord:
    batch = store.get_many([batch_uid]).get(batch_uid)
    if not isinstance(batch, Batch):
        raise NotFound(f"batch {batch_uid} is not in the graph")
    product = _first(store, batch_uid, "OF_PRODUCT", OUT)
    units = [e.dst for e in store.edges([batch_uid], {"PRODUCED": OUT})]
    unit_nodes = store.get_many(units)
    statuses = Counter(n.status.value for n in unit_nodes.values() if isinstance(n, Unit))
    shipped_edges = store.edges(units, {"SHIPPED_IN": OUT})

    lots = []
    for e in store.edges([batch_uid], {"CONSUMED_IN": IN}):
        lot = store.get(e.src)
        if not isinstance(lot, MaterialLot):
            continue
        material = _first(store, lot.uid, "LOT_OF", OUT)
        supplier = _first(store, lot.uid, "SUPPLIED", IN)
        lots.append(LotUsed(
            lot.uid, material.uid if material else None,
            material.name if isinstance(material, Material) else None,
            supplier.uid if supplier else None,
            supplier.name if isinstance(supplier, Supplier) else None,
            lot.received_at, e.props.get("quantity"),
        ))  # fmt: skip
    components = {e.src for e in store.edges(units, {"ASSEMBLED_INTO": IN})}
    sub_batches = sorted({e.src for e in store.edges(list(components), {"PRODUCED": IN})})

    runs = _runs(store, batch_uid, zone.tz)
    inspected = store.edges([batch_uid, *units], {"INSPECTED": IN})
    inspections = sorted(
        (n for n in store.get_many(e.src for e in inspected).values()
         if isinstance(n, Inspection)), key=lambda i: (i.inspected_at, i.uid))  # fmt: skip
    found_on = store.edges([batch_uid, *units], {"FOUND_ON": IN})
    defect_nodes = store.get_many(e.src for e in found_on)
    types = {e.src: e.dst for e in store.edges(list(defect_nodes), {"OF_TYPE": OUT})}
    defects = sorted(
        ((d, e.dst, types.get(e.src)) for e in found_on
         if isinstance(d := defect_nodes.get(e.src), Defect)),
        key=lambda t: (t[0].found_at, t[0].uid),
    )  # fmt: skip
    alarm_edges = store.edges([r.uid for r in runs], {"RAISED_ON": IN})
    alarms = sorted((a for a in store.get_many(e.src for e in alarm_edges).values()
                     if isinstance(a, Alarm)), key=lambda a: (a.raised_at, a.uid))  # fmt: skip
    addressed = [d.uid for d, _, _ in defects] + [a.uid for a in alarms]
    capa_edges = store.edges(addressed, {"ADDRESSES": IN})
    capas = sorted((c for c in store.get_many(e.src for e in capa_edges).values()
                    if isinstance(c, Capa)), key=lambda c: c.uid)  # fmt: skip

    inside = above | {batch_uid}
    record = DeviceHistoryRecord(
        batch=batch,
        product=product if isinstance(product, Product) else None,
        generated_at=datetime.now(UTC),
        units=len(units),
        statuses=dict(sorted(statuses.items())),
        shipped=len({e.src for e in shipped_edges}),
        shipments=sorted({e.dst for e in shipped_edges}),
        lots=sorted(lots, key=lambda lot: lot.lot),
        subassembly_batches=sub_batches,
        runs=runs,
        inspections=inspections,
        defects=defects,
        alarms=alarms,
        capas=capas,
        zone=zone,
        subassemblies=[_record(store, b, zone, inside) for b in sub_batches if b not in inside],
    )
    record.look_back = _look_back(store, batch_uid, runs, zone.tz)
    signed = disp.dispositions(store, [batch_uid])
    record.found = [
        Deviation(batch_uid, key, text, signed.get((batch_uid, key)))
        for key, text in _deviations(record)
    ]
    return record


def _first(store: GraphStore, uid: str, edge: str, direction: Direction) -> Any:
    found = store.edges([uid], {edge: direction})
    if not found:
        return None
    other = found[0].dst if direction is OUT else found[0].src
    return store.get_many([other]).get(other)


def _runs(store: GraphStore, batch: str, tz: tzinfo) -> list[Run]:
    """The batch's runs with their flags; calibrations and qualifications read in bulk."""
    found = store.get_many(e.dst for e in store.edges([batch], {"RAN": OUT}))
    runs = sorted((r for r in found.values() if isinstance(r, ProcessRun)),
                  key=lambda r: (r.started_at, r.uid))  # fmt: skip
    uids = [r.uid for r in runs]
    ends: dict[str, dict[str, str]] = {u: {} for u in uids}
    hops = {"FOR_STEP": OUT, "ON": OUT, "OPERATED_BY": OUT, "FOLLOWED": OUT}
    for e in store.edges(uids, hops):
        ends[e.src].setdefault(e.type, e.dst)
    linked = store.get_many({uid for link in ends.values() for uid in link.values()})
    machines = {link["ON"] for link in ends.values() if "ON" in link}
    operators = {link["OPERATED_BY"] for link in ends.values() if "OPERATED_BY" in link}
    calibrations = CalibrationRecords.read(store, machines)
    qualifications = QualificationRecords.read(store, operators)
    recorded = store.edges(uids, {"RECORDED": OUT})
    parameters = store.get_many(e.dst for e in recorded)
    actuals: dict[str, list[Actual]] = {u: [] for u in uids}
    for e in recorded:
        p = parameters.get(e.dst)
        if isinstance(p, Parameter):
            actuals[e.src].append(Actual(p.uid, p.name, float(e.props["value"]),
                                         str(e.props["unit"]), p.lsl, p.usl))  # fmt: skip
    built = []
    for run in runs:
        link = ends[run.uid]
        step = linked.get(link.get("FOR_STEP", ""))
        machine = linked.get(link.get("ON", ""))
        operator = linked.get(link.get("OPERATED_BY", ""))
        followed = linked.get(link.get("FOLLOWED", ""))
        instruction = followed.uid if isinstance(followed, WorkInstruction) else None
        in_force, cal_flags = _calibration(calibrations, machine, run, tz)
        qualified, held, qual_flags = _qualification(
            qualifications, operator, step, instruction, run, tz
        )
        built.append(Run(
            uid=run.uid,
            step=step.uid if isinstance(step, ProcessStep) else None,
            step_name=step.name if isinstance(step, ProcessStep) else None,
            machine=machine.uid if isinstance(machine, Machine) else None,
            operator=operator.uid if isinstance(operator, Operator) else None,
            operator_name=operator.name if isinstance(operator, Operator) else None,
            operator_qualified=qualified,
            shift=run.shift.value,
            started_at=run.started_at,
            ended_at=run.ended_at,
            calibration="; ".join([in_force, *(_upper_state(f) for f in cal_flags
                                               if f.text != in_force)]),
            in_force=in_force,
            calibrated=not cal_flags,
            actuals=sorted(actuals[run.uid], key=lambda a: a.parameter),
            qualification=held,
            instruction=instruction,
            flags=(*cal_flags, *qual_flags),
        ))  # fmt: skip
    return built


def _calibration(
    records: CalibrationRecords, machine: Any, run: ProcessRun, tz: tzinfo
) -> tuple[str, list[Flag]]:
    """The calibration in force when ``run`` started and the run's calibration flags:
    the states it started in, and those it straddles (in at one end, out at the other)."""
    if not isinstance(machine, Machine):
        return "no machine recorded", [Flag("calibration", "no machine", "no machine recorded")]
    cals = records.of(machine.uid)
    before = [c for c in cals if c.performed_at <= run.started_at]
    if not before:
        text = "no calibration on record before the run"
        return text, [Flag("calibration", "no calibration", text)]
    in_force = _in_force(before[-1], tz)
    windows = records.windows(machine.uid)
    flags = [
        Flag("calibration", w.kind.value, w.sentence(tz), w.calibrations)
        for w in calibration_state_at(windows, run.started_at)
    ]
    end = when(run.ended_at, tz) if run.ended_at is not None else "still running"
    for w in straddles(windows, run.started_at, run.ended_at):
        if w.contains(run.started_at):
            continue  # started inside: flagged above
        edge = {
            CalWindowKind.OVERDUE: "due date",
            CalWindowKind.FOUND_OUT_OF_TOLERANCE: f"last good calibration {w.calibrations[0]} "
            "(the start of the look-back window)",
            CalWindowKind.FAILED: f"failed calibration {w.record}",
            CalWindowKind.LIMITED: f"limited calibration {w.record}",
        }[w.kind]
        flags.append(Flag("calibration", f"straddles {w.kind.value}", (
            f"the run straddles the {edge}: it started {when(run.started_at, tz)} and ended "
            f"{end}; {w.sentence(tz)}"), w.calibrations))  # fmt: skip
    return in_force, flags


def _in_force(c: Calibration, tz: tzinfo) -> str:
    verdict = c.verdict.value
    due_text = f", due {due(c.due_at, tz)}" if c.due_at is not None else ""
    return f"{c.uid} ({verdict}) of {when(c.performed_at, tz)}{due_text}"


def _qualification(
    records: QualificationRecords,
    operator: Any,
    step: Any,
    instruction: str | None,
    run: ProcessRun,
    tz: tzinfo,
) -> tuple[bool | None, str, list[Flag]]:
    """Whether the operator was qualified for the step (and the instruction revision the
    run followed) when it started, the words for it, and the flags: not qualified at the
    start, or qualified at the start but not by its end (the run straddles an expiry or a
    revocation)."""
    if not isinstance(operator, Operator):
        return None, "no operator recorded", []
    step_uid = step.uid if isinstance(step, ProcessStep) else None
    start = records.at(operator.uid, step_uid, instruction, run.started_at)
    held = start.sentence(tz)
    if not start.qualified:
        return False, held, [Flag("qualification", start.reason, held, _cited(start))]
    if run.ended_at is None:
        return True, held, []
    end = records.at(operator.uid, step_uid, instruction, run.ended_at)
    if end.qualified:
        return True, held, []
    text = (
        f"operator {operator.uid} was qualified when the run started "
        f"{when(run.started_at, tz)} but not when it ended {when(run.ended_at, tz)}: "
        f"the run straddles the qualification's end ({end.sentence(tz)})"
    )
    return True, held, [Flag("qualification", f"straddles {end.reason}", text, _cited(end))]


def _cited(state: QualState) -> tuple[str, ...]:
    return (state.record,) if state.record else ()


def _look_back(store: GraphStore, batch: str, runs: list[Run], tz: tzinfo) -> list[LookBack]:
    """For each machine the batch's runs used inside a window that ended with the machine
    found out of tolerance: every run on it in that window (since its last good
    calibration), whichever batch it was for."""
    used: dict[str, list[Run]] = {}
    for r in runs:
        if r.machine is not None:
            used.setdefault(r.machine, []).append(r)
    records = CalibrationRecords.read(store, used)
    found = []
    for machine, mine in sorted(used.items()):
        for w in records.windows(machine):
            if w.kind is not CalWindowKind.FOUND_OUT_OF_TOLERANCE:
                continue
            if not any(w.overlaps(r.started_at, r.ended_at) for r in mine):
                continue
            on = store.get_many(e.src for e in store.edges([machine], {"ON": IN}))
            inside = sorted((r for r in on.values() if isinstance(r, ProcessRun)
                             and w.overlaps(r.started_at, r.ended_at)),
                            key=lambda r: (r.started_at, r.uid))  # fmt: skip
            owner = {e.dst: e.src for e in store.edges([r.uid for r in inside], {"RAN": IN})}
            found.append(LookBack(machine, w, w.sentence(tz), [
                LookBackRun(r.uid, owner.get(r.uid), r.started_at, r.ended_at,
                            owner.get(r.uid) == batch) for r in inside]))  # fmt: skip
    return found


def _deviations(r: DeviceHistoryRecord) -> list[tuple[str, str]]:
    """The batch's own deviations as (key, sentence), the key stable within the batch."""
    found = []
    for run in r.runs:
        for a in run.actuals:
            if not a.in_spec:
                limits = f"[{_plain(a.lsl)}, {_plain(a.usl)}]"
                found.append(
                    (
                        f"{run.uid}:{a.parameter}",
                        f"{run.uid}: {a.name} {a.value:g} {a.unit} outside {limits}",
                    )
                )
        cal = [f for f in run.flags if f.subject == "calibration"]
        if cal:
            label = "; ".join(_upper_state(f) for f in cal)
            found.append((f"{run.uid}:calibration",
                          f"{run.uid}: machine {run.machine}: {label}"))  # fmt: skip
        qual = [f for f in run.flags if f.subject == "qualification"]
        if qual:
            why = "; ".join(f.text for f in qual)
            found.append((f"{run.uid}:qualification", (
                f"{run.uid}: operator {run.operator} was not qualified at the time: {why}"
                if run.operator_qualified is False else f"{run.uid}: {why}")))  # fmt: skip
    found += [(d.uid, f"{d.uid} on {unit}: {kind or 'untyped defect'}")
              for d, unit, kind in r.defects]  # fmt: skip
    found += [(a.uid, f"{a.uid}: {a.message or a.rule}") for a in r.alarms]
    found += [(i.uid, f"{i.uid}: {i.method.value} inspection failed") for i in r.inspections
              if i.verdict is Verdict.FAIL]  # fmt: skip
    return found


_SHOUT = {
    "overdue": "calibration OVERDUE",
    "failed": "calibration FAILED",
    "found out of tolerance": "FOUND OUT OF TOLERANCE",
    "limited": "calibration LIMITED",
}


def _upper_state(f: Flag) -> str:
    if f.state.startswith("straddles "):
        return f"STRADDLING: {f.text}"
    head = _SHOUT.get(f.state, f.state)
    return f"{head}: {f.text}"


def _plain(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


# --- dispositions -------------------------------------------------------------------------


def dispose(
    store: GraphStore,
    trail: AuditTrail,
    actor: Actor,
    batch: str,
    deviation: str,
    decision: DispositionDecision | str,
    rationale: str,
    *,
    zone: localtime.SiteZone | None = None,
) -> DeviationDisposition:
    """Sign the disposition of ``deviation`` (its key) in ``batch``'s record: one of the
    batch's own deviations, or one rolled up from a sub-assembly batch (then it is
    signed against that batch, where the deviation belongs)."""
    chosen = decision if isinstance(decision, DispositionDecision) else disp.decision_of(decision)
    record = device_history(store, batch, zone)
    owners = [d for d in record.all_deviations if d.key == deviation]
    if not owners:
        keys = ", ".join(d.key for d in record.all_deviations) or "none"
        raise NotFound(
            f"deviation {deviation!r} is not in the record of batch {batch}; its "
            f"deviations are: {keys}"
        )
    own = next((d for d in owners if d.batch == batch), owners[0])
    return disp.record(store, trail, actor, own.batch, deviation, chosen, rationale)


# --- file names ---------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(batch: str, suffix: str = ".html") -> str:
    """A file name for the record of ``batch``, safe on every file system: each run of
    characters other than letters, digits, ``.``, ``_`` and ``-`` becomes one ``_``
    (``WO/2026/001`` → ``DHR-WO_2026_001.html``), and leading dots are dropped."""
    stem = _UNSAFE.sub("_", batch).lstrip(".") or "batch"
    return f"DHR-{stem[:150]}{suffix}"


# --- output -------------------------------------------------------------------------------

_CSS = """
body { font: 10.5pt/1.35 'DejaVu Sans', Arial, sans-serif; color: #111; margin: 1.5cm; }
h1 { font-size: 16pt; margin: 0 0 .2em; } h2 { font-size: 12pt; margin: 1.2em 0 .4em;
  border-bottom: 1px solid #999; page-break-after: avoid; }
h3 { font-size: 11pt; margin: .8em 0 .3em; page-break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: .3em 0; page-break-inside: auto; }
th, td { border: 1px solid #bbb; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #eef1f4; } tr { page-break-inside: avoid; } thead { display: table-header-group; }
.bad { color: #a40000; font-weight: bold; } .meta { color: #444; } .ok { color: #1b5e20; }
.release { border: 2px solid #444; padding: .4em .6em; margin: .6em 0; }
.release.withheld { border-color: #a40000; } .mine { font-weight: bold; }
.sign td { height: 2.2em; } @page { size: A4; margin: 1.2cm; }
@media print { body { margin: 0; } a { color: inherit; text-decoration: none; } }
"""


def _e(value: Any, tz: tzinfo = UTC) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return html.escape(when(value, tz))
    if isinstance(value, float):
        return f"{value:g}"
    return html.escape(str(value))


def _flag(text: str, good: bool) -> str:
    return _e(text) if good else f"<span class='bad'>{_e(text)}</span>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p class='meta'>None recorded.</p>"
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
            f"<tbody>{cells}</tbody></table>")  # fmt: skip


def _flags_cell(head: str, flags: list[Flag]) -> str:
    shown = [_e(head)] + [f"<span class='bad'>{_e(_upper_state(f))}</span>" for f in flags]
    return "<br>".join(shown)


def _signature(d: DeviationDisposition | None, tz: tzinfo) -> list[str]:
    if d is None:
        return ["<span class='bad'>awaiting disposition</span>", "—", "—"]
    return [
        f"{_e(d.decision.value)}: {_e(d.rationale)}",
        f"{_e(d.signer)}, {_e(d.signed_at, tz)}",
        _e(d.meaning),
    ]


def _run_rows(r: DeviceHistoryRecord, tz: tzinfo) -> list[list[str]]:
    rows = []
    for x in r.runs:
        cal = [f for f in x.flags if f.subject == "calibration"]
        qual = [f for f in x.flags if f.subject == "qualification"]
        actuals = "<br>".join(
            (f"{_e(a.name)}: {a.value:g} {_e(a.unit)}" if a.in_spec else
             f"<span class='bad'>{_e(a.name)}: {a.value:g} {_e(a.unit)} out of "
             f"spec</span>") + f" [{_e(a.lsl)}, {_e(a.usl)}]" for a in x.actuals)  # fmt: skip
        operator = f"{_e(x.operator)} {_e(x.operator_name)}"
        rows.append([
            _e(x.uid), f"{_e(x.step)} {_e(x.step_name)}"
            + (f"<br>followed {_e(x.instruction)}" if x.instruction else ""),
            _e(x.machine), _flags_cell(x.in_force, cal), operator,
            _flags_cell(x.qualification, qual) if qual or x.operator_qualified
            else _flag(x.qualification, x.operator_qualified is not False),
            _e(x.shift), _e(x.started_at, tz), _e(x.ended_at, tz), actuals,
        ])  # fmt: skip
    return rows


def _look_back_html(r: DeviceHistoryRecord, tz: tzinfo) -> str:
    if not r.look_back:
        return ("<p class='meta'>No machine this batch ran on was later found out of "
                "tolerance.</p>")  # fmt: skip
    parts = []
    for lb in r.look_back:
        mine = sum(1 for x in lb.runs if x.this_batch)
        parts.append(
            f"<h3>Machine {_e(lb.machine)}: {len(lb.runs)} run(s) to assess, {mine} of "
            f"this batch</h3><p class='bad'>{_e(lb.sentence)}</p>"
        )
        parts.append(_table(
            ["run", "batch", "start", "end", "this batch"],
            [[_e(x.run), _e(x.batch), _e(x.started_at, tz), _e(x.ended_at, tz),
              "<span class='mine'>yes</span>" if x.this_batch else "no"]
             for x in lb.runs]))  # fmt: skip
    return "".join(parts)


def _sub_rows(r: DeviceHistoryRecord) -> list[list[str]]:
    rows = []
    stack = [(s, 1) for s in r.subassemblies]
    while stack:
        sub, depth = stack.pop(0)
        product = f"{_e(sub.product.uid)} {_e(sub.product.name)}" if sub.product else "—"
        own = sub.found
        listed = "<br>".join(
            f"<span class='bad'>{_e(d.key)}</span>: {_e(d.text)}"
            + (f" — <span class='ok'>{_e(d.disposition.decision.value)}</span>"
               if d.disposition else " — <span class='bad'>awaiting disposition</span>")
            for d in own) or "none"  # fmt: skip
        rows.append([_e(sub.batch.uid), product, _e(depth), listed])
        stack = [(s, depth + 1) for s in sub.subassemblies] + stack
    return rows


def render_html(r: DeviceHistoryRecord) -> str:
    b = r.batch
    tz = r.zone.tz
    product = f"{_e(r.product.uid)} {_e(r.product.name)} rev. {_e(r.product.revision)}" if (
        r.product) else "—"  # fmt: skip
    status = ", ".join(f"{_e(k)} {v}" for k, v in r.statuses.items()) or "—"
    release = r.release
    every = r.all_deviations
    approved = (_e(r.approved_for_distribution) if release.approved else
                f"<span class='bad'>0 — release withheld</span> ({r.releasable} good or "
                "reworked)")  # fmt: skip
    zone_note = (f"Times are local to the site ({_e(r.zone.name)}, from {_e(r.zone.source)}) "
                 "with the zone's abbreviation beside each; they are stored in UTC. A due "
                 "date at 23:59:59 local is due at the end of that day.")  # fmt: skip
    parts = [
        f"<h1>Device history record — batch {_e(b.uid)}</h1>",
        "<p class='meta'>ISO 13485:2016 §7.5.1 record of a batch, as incorporated into "
        "21 CFR 820 (QMSR, §820.10). Generated by SQEMS from the quality graph on "
        f"{_e(r.generated_at, tz)}. {zone_note}</p>",
        f"<div class='release {'approved' if release.approved else 'withheld'}'>"
        f"<b>Release (§7.5.1, §8.3):</b> {_flag(release.statement, release.approved)}</div>",
        "<h2>Identification (§7.5.1, §7.5.8)</h2>",
        _table(["product", "batch", "started", "ended", "planned quantity", "units made",
                "approved for distribution", "units by status", "shipped"],
               [[product, _e(b.uid), _e(b.started_at, tz), _e(b.ended_at, tz), _e(b.quantity),
                 _e(r.units), approved, status,
                 f"{r.shipped} in {len(r.shipments)} shipment(s)"]]),
        "<h2>Genealogy (§7.5.9)</h2>",
        _table(["material lot", "material", "supplier", "received", "quantity"],
               [[_e(lot.lot), f"{_e(lot.material)} {_e(lot.material_name)}",
                 f"{_e(lot.supplier)} {_e(lot.supplier_name)}", _e(lot.received_at, tz),
                 _e(lot.quantity)] for lot in r.lots]),
        f"<p>Shipments: {_e(', '.join(r.shipments) or None)}.</p>",
        "<h3>Sub-assembly batches and their deviations (§7.5.9, §8.3)</h3>",
        _table(["batch", "product", "level", "deviations (and disposition)"], _sub_rows(r)),
        "<h2>Production, equipment and personnel (§7.5.1, §7.5.6, §7.6, §6.2)</h2>",
        _table(["run", "step", "machine", "calibration in force (§7.6)", "operator",
                "qualification then (§6.2)", "shift", "start", "end", "parameter actuals"],
               _run_rows(r, tz)),
        "<h2>Look-back: runs since the last good calibration of a machine later found out "
        "of tolerance (§7.6)</h2>",
        "<p class='meta'>ISO 13485:2016 §7.6: when equipment is found not to conform, the "
        "validity of previous results is assessed. Each table lists every run on the machine "
        "from its last good calibration to the calibration that found it out of tolerance, "
        "for every batch.</p>",
        _look_back_html(r, tz),
        "<h2>Inspection and test (§8.2.6)</h2>",
        _table(["inspection", "when", "method", "sample", "defects found", "verdict", "image"],
               [[_e(i.uid), _e(i.inspected_at, tz), _e(i.method.value), _e(i.sample_size),
                 _e(i.defects_found),
                 _e(i.verdict.value) if i.verdict is Verdict.PASS else
                 f"<span class='bad'>{_e(i.verdict.value)}</span>", _e(i.image_ref)]
                for i in r.inspections]),
        "<h2>Deviations and nonconformities, with their dispositions (§8.3)</h2>",
        f"<p class='meta'>{len(r.found)} of this batch, {len(every) - len(r.found)} rolled up "
        "from its sub-assembly batches. Each disposition is an electronic signature (21 CFR "
        "Part 11): the signer's name, the time and its meaning.</p>",
        _table(["batch", "key", "deviation", "disposition and rationale", "signed by, at",
                "meaning"],
               [[_e(d.batch), _e(d.key), _e(d.text), *_signature(d.disposition, tz)]
                for d in every]),
        "<h2>Corrective and preventive actions (§8.5.2)</h2>",
        _table(["CAPA", "title", "status", "opened", "closed", "verified effective"],
               [[_e(c.uid), _e(c.title), _e(c.status.value), _e(c.opened_at, tz),
                 _e(c.closed_at, tz), _e(c.effective)] for c in r.capas]),
        "<h2>Release and approval (§7.5.1: verified and approved)</h2>",
        f"<p>{_flag(release.statement, release.approved)}</p>",
        "<table class='sign'><tr><th>role</th><th>name</th><th>signature</th><th>date</th>"
        "</tr><tr><td>production</td><td></td><td></td><td></td></tr>"
        "<tr><td>quality</td><td></td><td></td><td></td></tr></table>",
    ]  # fmt: skip
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>DHR {_e(b.uid)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")  # fmt: skip


def chromium() -> str:
    for name in CHROMIUM:
        found = name if Path(name).is_absolute() and Path(name).exists() else shutil.which(name)
        if found:
            return found
    raise ValidationFailed(
        "a PDF is printed with Chromium, which is not installed (Debian: apt-get install "
        "chromium); the HTML report needs nothing"
    )


def render_pdf(page: str, target: Path, *, timeout_s: float = 120.0) -> Path:
    """Print ``page`` (HTML) to ``target`` with headless Chromium."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="sqems-dhr-") as tmp:
        source = Path(tmp) / "dhr.html"
        source.write_text(page, encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
             f"--user-data-dir={tmp}/profile", f"--print-to-pdf={target}", source.as_uri()],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            raise ValidationFailed(
                f"Chromium could not print the report: {(done.stderr or done.stdout)[-500:]}"
            )
    return target
