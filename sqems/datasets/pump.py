"""A third synthetic plant: infusion pumps, a two-level BOM at a site in America/Chicago.

``generate(PlantSpec(shape="pump"))`` builds controller boards and motor modules, and
dual-channel infusion pumps of one board and two motor modules (see
:mod:`sqems.datasets.pump_layout`), on a fixed calendar from late February 2026
across the 2026-03-08 daylight-saving change into April: stored times are UTC, shifts
follow the site's wall clock. Besides the genealogy every plant has, it records what a
regulated plant keeps: calibrations of every machine (due at 23:59:59 site time, with
as-found and as-left values and pass, adjusted, limited and fail verdicts), work
instructions with a revision change, and operators' qualifications per step or
revision, with history. Planted (each in ``plant.truth["states"]`` with its window in
UTC and site time, its records and runs, and the expected effect):

* the encoder station ``M-ENC-1`` runs motor batches for ten days past its calibration's
  due date (found in tolerance when calibrated late: a deviation, no defects);
* the occlusion tester ``M-OCCL-1`` is found out of tolerance (reading low): pumps
  trimmed and tested on it since its last good calibration set their occlusion alarm
  high and pass, and come back from the field (the §7.6 look-back window). Lots of
  the pump line in use then are innocent and also in use outside it;
* a limited calibration of the run-in bench and adjusted ones elsewhere (no effect);
* operators whose qualification for a step lapsed, was revoked, or had not started
  (a trainee, whose runs carry no extra defects: the null for operator states), and one
  trained only on the old revision of the door-fit instruction who runs the new one
  and leaves doors misfitted.

``units`` counts every unit (boards, motor modules, pumps); production is spread over
the same calendar whatever the size. The same spec and seed give the same plant.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from sqems.datasets import layout
from sqems.datasets import pump_layout as pl
from sqems.datasets.layout import LineSpec
from sqems.datasets.plant import DAY, Plant, PlantSpec, _shift_of
from sqems.datasets.tables import Table, fmt, iso
from sqems.errors import ValidationFailed


def generate_pump(spec: PlantSpec, causes: pl.PumpCauses | None = None) -> Plant:
    """Build the infusion-pump plant ``spec`` describes, with ``causes`` planted
    (default :class:`~sqems.datasets.pump_layout.PumpCauses`; ``PumpCauses.none()``
    keeps the states and records and plants no effect on defects)."""
    if spec.start != PlantSpec().start:
        raise ValidationFailed(
            f"the pump plant runs on its own calendar (from {iso(pl.START)[0]}, across the "
            f"2026-03-08 daylight-saving change), got start {spec.start.isoformat()}: leave "
            "start at its default"
        )
    return _PumpGenerator(spec, causes or pl.PumpCauses()).run()


def level_sizes(units: int) -> tuple[int, int, int]:
    """(boards, motor modules, pumps) of a plant of ``units`` units in all.

    >>> level_sizes(10_000)
    (2608, 5219, 2173)
    >>> sum(level_sizes(4_321)) == 4_321
    True
    """
    per_pump = 1 + (pl.BOARDS_PER_PUMP + pl.MOTORS_PER_PUMP) * (1 + pl.SPARE)
    pumps = int(units // per_pump)
    boards = math.ceil(pumps * pl.BOARDS_PER_PUMP * (1 + pl.SPARE))
    return boards, units - pumps - boards, pumps


def site_time(seconds: int) -> str:
    """POSIX seconds as site time with offset and zone abbreviation
    (``2026-03-02T23:59:59-06:00 CST``)."""
    moment = datetime.fromtimestamp(int(seconds), tz=pl.ZONE)
    return f"{moment.isoformat()} {moment.tzname()}"


def _window(start: int, end: int) -> dict[str, str]:
    return {
        "start": iso(start)[0],
        "end": iso(end)[0],
        "start_local": site_time(start),
        "end_local": site_time(end),
    }


def _local_seconds(seconds: np.ndarray) -> np.ndarray:
    """UTC seconds → the site's wall-clock seconds (the period holds one change)."""
    before = pl.ZONE.utcoffset(datetime.fromtimestamp(pl.START, tz=UTC).replace(tzinfo=None))
    after = pl.ZONE.utcoffset(datetime.fromtimestamp(pl.END, tz=UTC).replace(tzinfo=None))
    assert before is not None and after is not None
    offset = np.where(
        seconds >= pl.DST_CHANGE, after.total_seconds(), before.total_seconds()
    ).astype(np.int64)
    return np.asarray(seconds + offset, dtype=np.int64)


@dataclass(slots=True)
class _Line:
    """One line's production, as arrays indexed by batch or by unit."""

    spec: LineSpec
    prefix: str
    batch_uids: list[str]
    sizes: np.ndarray
    starts: np.ndarray
    duration: np.ndarray
    run_starts: np.ndarray  # (batch, step)
    machines: np.ndarray  # (batch, step) index into step.machines
    shifts: np.ndarray  # (batch, step) index into SHIFTS, by site time
    unit_batch: np.ndarray
    unit_time: np.ndarray
    operators: list[list[str]] = field(default_factory=list)  # step → per batch
    instructions: list[list[str]] = field(default_factory=list)  # step → per batch
    actuals: dict[str, np.ndarray] = field(default_factory=dict)
    serials: list[str] = field(default_factory=list)
    lots: dict[str, list[str]] = field(default_factory=dict)  # material → lot per batch

    def runs(self, step: int) -> list[str]:
        seq = self.spec.steps[step].sequence * 10
        return [f"RUN-{b}-{seq}" for b in self.batch_uids]


@dataclass(slots=True)
class _Quality:
    """What each unit of a line carries, what its test caught and what escaped."""

    carried: dict[str, np.ndarray]
    caught: dict[str, np.ndarray]
    detected: np.ndarray
    defective: np.ndarray

    @property
    def escaped(self) -> np.ndarray:
        escaped: np.ndarray = self.defective & ~self.detected
        return escaped


@dataclass(frozen=True, slots=True)
class _Cal:
    uid: str
    machine: str
    performed_at: int
    due_at: int
    verdict: str
    as_found: float
    as_left: float
    limitation: str = ""


class _PumpGenerator:
    def __init__(self, spec: PlantSpec, causes: pl.PumpCauses) -> None:
        self.spec = spec
        self.c = causes
        self.rng = np.random.default_rng(spec.seed)
        self.plant = Plant(spec)
        self.n_boards, self.n_motors, self.n_pumps = level_sizes(spec.units)
        self.base = dict(causes.baseline)
        self.detect = {(line, t): p for line, t, p in causes.detects}
        self.calibrations: list[_Cal] = []
        self.defect_rows: dict[str, list[Any]] = {
            "found_at": [],
            "unit": [],
            "type": [],
            "inspection": [],
            "description": [],
        }

    # --- orchestration -------------------------------------------------------------------

    def run(self) -> Plant:
        c = self.c
        self._master_data()
        boards = self._schedule(pl.BOARD_LINE, "SN-CB", self.n_boards, ready=None)
        motors = self._schedule(pl.MOTOR_LINE, "SN-MM", self.n_motors, ready=None)
        for line in (boards, motors):
            self._prepare(line)
        board_q = self._quality(
            boards,
            {t: self._flat(boards, t) for t in pl.LEVEL_DEFECTS[boards.spec.uid]},
            hidden={},
            below=(),
        )
        motor_q = self._quality(
            motors,
            {t: self._flat(motors, t) for t in pl.LEVEL_DEFECTS[motors.spec.uid]},
            hidden={},
            below=(),
        )
        board_parts = self._parts_of(board_q, boards, pl.BOARDS_PER_PUMP, "boards")
        motor_parts = self._parts_of(motor_q, motors, pl.MOTORS_PER_PUMP, "motor modules")
        ready = np.maximum(
            boards.unit_time[board_parts].max(1), motors.unit_time[motor_parts].max(1)
        )
        pumps = self._schedule(pl.PUMP_LINE, "SN-IP", self.n_pumps, ready=ready)
        self._prepare(pumps)
        self._calibrations(self._repair_time(pumps))

        occl = self._step_index(pumps, "STEP-PUMP-30")
        occl_start = pumps.run_starts[:, occl]
        in_window = (occl_start >= pl.OCCLUSION_LAST_GOOD) & (occl_start < pl.OCCLUSION_FOUND_OOT)
        unit_window = in_window[pumps.unit_batch]
        self._assign_lots(pumps, in_window)
        for lower, parts in ((boards, board_parts), (motors, motor_parts)):
            used = np.zeros(len(lower.batch_uids), dtype=bool)
            used[lower.unit_batch[parts[unit_window].ravel()]] = True
            self._assign_lots(lower, used)
        door = self._step_index(pumps, pl.WI_CHANGE_STEP)
        old_rev_runs = np.array(
            [
                op == pl.OLD_REVISION.operator and wi.endswith("/" + pl.WI_NEW_REVISION)
                for op, wi in zip(pumps.operators[door], pumps.instructions[door], strict=True)
            ]
        )
        old_rev_units = old_rev_runs[pumps.unit_batch]
        n = len(pumps.unit_batch)
        trimmed_high = self._draw(np.full(n, c.occlusion_added_p) * unit_window)
        pump_q = self._quality(
            pumps,
            {
                "DT-OCCLUSION-ALARM": self._flat(pumps, "DT-OCCLUSION-ALARM"),
                "DT-DOOR-MISFIT": self._draw(
                    self.base["DT-DOOR-MISFIT"] + c.old_revision_added_p * old_rev_units
                ),
                "DT-CASE-SCRATCH": self._flat(pumps, "DT-CASE-SCRATCH"),
            },
            hidden={"DT-OCCLUSION-ALARM": trimmed_high},
            below=((board_parts, board_q), (motor_parts, motor_q)),
        )

        for line, quality in ((boards, board_q), (motors, motor_q), (pumps, pump_q)):
            self._emit_line(line)
            self._emit_units(line, quality)
        for parts, lower in ((board_parts, boards), (motor_parts, motors)):
            self.plant.add_edges(
                "ASSEMBLED_INTO",
                src=[lower.serials[i] for i in parts.ravel()],
                dst=[pumps.serials[i] for i in np.repeat(np.arange(n), parts.shape[1])],
            )
        shipped = self._ship(pumps, pump_q)
        complaints = self._complaints(pumps, pump_q, shipped)
        self._emit_defects()
        self._truth(
            (boards, motors, pumps),
            (board_q, motor_q, pump_q),
            (board_parts, motor_parts),
            shipped,
            complaints,
            in_window,
            trimmed_high,
            old_rev_runs,
        )
        return self.plant

    @staticmethod
    def _step_index(line: _Line, step_uid: str) -> int:
        return next(i for i, st in enumerate(line.spec.steps) if st.uid == step_uid)

    # --- master data ---------------------------------------------------------------------

    def _master_data(self) -> None:
        p = self.plant
        site_uid, site_name, country = pl.SITE
        p.add_nodes(
            "Site", uid=[site_uid], name=[site_name], country=[country], timezone=[pl.TIMEZONE]
        )
        p.add_nodes(
            "Supplier",
            uid=list(pl.SUPPLIERS),
            name=[v[0] for v in pl.SUPPLIERS.values()],
            country=[v[1] for v in pl.SUPPLIERS.values()],
            status=["approved"] * len(pl.SUPPLIERS),
        )
        p.add_nodes(
            "Material",
            uid=list(pl.MATERIALS),
            name=[v[0] for v in pl.MATERIALS.values()],
            unit=[v[1] for v in pl.MATERIALS.values()],
            critical=["true" if k in pl.CRITICAL_MATERIALS else "false" for k in pl.MATERIALS],
        )
        p.add_nodes(
            "DefectType",
            uid=[d.uid for d in pl.DEFECT_TYPES.values()],
            name=[d.name for d in pl.DEFECT_TYPES.values()],
            category=[d.category.value for d in pl.DEFECT_TYPES.values()],
        )
        p.add_edges("ORIGINATES_AT", src=list(pl.ORIGINS), dst=list(pl.ORIGINS.values()))
        for line_no, line in enumerate(pl.LINES):
            kind = "finished" if line is pl.PUMP_LINE else "subassembly"
            p.add_nodes(
                "Product", uid=[line.product], name=[line.product_name], revision=["A"], kind=[kind]
            )
            p.add_nodes("Line", uid=[line.uid], name=[line.name])
            p.add_edges("PART_OF", src=[line.uid], dst=[site_uid])
            for mat in line.materials:
                p.add_edges(
                    "USES", src=[line.product], dst=[mat], quantity=[f"{pl.MATERIALS[mat][2]:g}"]
                )
            for step_no, step in enumerate(line.steps):
                p.add_nodes(
                    "ProcessStep", uid=[step.uid], name=[step.name], sequence=[str(step.sequence)]
                )
                p.add_edges("STEP_OF", src=[step.uid], dst=[line.product])
                for par in step.params:
                    p.add_nodes(
                        "Parameter",
                        uid=[par.uid],
                        name=[par.name],
                        unit=[par.unit],
                        lsl=[f"{par.lsl:g}"],
                        usl=[f"{par.usl:g}"],
                        target=[f"{par.target:g}"],
                        critical=["true" if par.critical else "false"],
                    )
                    p.add_edges("PARAMETER_OF", src=[par.uid], dst=[step.uid])
                for m_no, machine in enumerate(step.machines):
                    p.add_nodes(
                        "Machine",
                        uid=[machine],
                        name=[f"{step.name} {m_no + 1}"],
                        kind=[step.machine_kind],
                        x_m=[f"{6.0 * step_no:g}"],
                        y_m=[f"{8.0 * line_no + 3.0 * m_no:g}"],
                        rotation_deg=["0"],
                        length_m=["4"],
                        width_m=["2"],
                        height_m=["2.2"],
                    )
                    p.add_edges("PART_OF", src=[machine], dst=[line.uid])
                    p.add_edges("CAN_PERFORM", src=[machine], dst=[step.uid])
        p.add_edges(
            "USES",
            src=[pl.PUMP_LINE.product, pl.PUMP_LINE.product],
            dst=[pl.BOARD_LINE.product, pl.MOTOR_LINE.product],
            quantity=[str(pl.BOARDS_PER_PUMP), str(pl.MOTORS_PER_PUMP)],
        )
        self._work_instructions()
        self._operators()
        first = ["Lakeshore", "Prairie", "Riverside", "Summit", "Heartland", "Bayview"]
        second = ["Health", "Medical Center", "Clinic", "Hospital", "Care"]
        n = layout.N_CUSTOMERS
        p.add_nodes(
            "Customer",
            uid=[f"CUST-{i + 1:03d}" for i in range(n)],
            name=[f"{first[i % len(first)]} {second[(i * 3) % len(second)]}" for i in range(n)],
            country=["US"] * n,
        )

    def _work_instructions(self) -> None:
        rows: dict[str, list[str]] = {
            "uid": [],
            "instruction": [],
            "revision": [],
            "title": [],
            "effective_at": [],
        }
        steps: list[str] = []
        for line in pl.LINES:
            for step in line.steps:
                wi = pl.instruction_of(step.uid)
                revisions = [("B", pl.WI_BASE_EFFECTIVE)]
                if step.uid == pl.WI_CHANGE_STEP:
                    revisions = [
                        (pl.WI_OLD_REVISION, pl.WI_BASE_EFFECTIVE),
                        (pl.WI_NEW_REVISION, pl.WI_CHANGE_AT),
                    ]
                for revision, effective in revisions:
                    rows["uid"].append(f"{wi}/{revision}")
                    rows["instruction"].append(wi)
                    rows["revision"].append(revision)
                    rows["title"].append(step.name)
                    rows["effective_at"].append(iso(effective)[0])
                    steps.append(step.uid)
        self.plant.add_nodes("WorkInstruction", **rows)
        self.plant.add_edges("FOR_STEP", src=rows["uid"], dst=steps)

    def _operators(self) -> None:
        """Operators per line and shift, each qualified for every step of their line,
        and the planted ones with their qualification history."""
        p = self.plant
        ops: list[str] = []
        names: list[str] = []
        planted = {s.operator: s for s in pl.OPERATOR_STATES}
        for line in pl.LINES:
            tag = line.uid.removeprefix("LINE-")
            for k in range(pl.OPERATORS_PER_SHIFT * len(layout.SHIFTS)):
                uid = f"OP-{tag}-{k + 1:02d}"
                ops.append(uid)
                names.append(planted[uid].name if uid in planted else f"Operator {tag} {k + 1}")
        ops.append(pl.TRAINEE.operator)
        names.append(pl.TRAINEE.name)
        p.add_nodes("Operator", uid=ops, name=names, qualified=["true"] * len(ops))

        q: dict[str, list[str]] = {
            "uid": [],
            "granted_at": [],
            "expires_at": [],
            "revoked_at": [],
            "reason": [],
        }
        holder: list[str] = []
        scope: list[str] = []

        def grant(
            op: str,
            target: str,
            n: int,
            granted: int,
            expires: int | None,
            revoked: int | None = None,
            reason: str = "",
        ) -> str:
            uid = f"QUAL-{op.removeprefix('OP-')}-{target.split('-', 1)[1]}-{n}"
            q["uid"].append(uid)
            q["granted_at"].append(iso(granted)[0])
            q["expires_at"].append(iso(expires)[0] if expires is not None else "")
            q["revoked_at"].append(iso(revoked)[0] if revoked is not None else "")
            q["reason"].append(reason)
            holder.append(op)
            scope.append(target)
            return uid

        year = 365 * DAY
        for op in ops:
            if op == pl.TRAINEE.operator:
                grant(op, pl.TRAINEE.step, 1, pl.TRAINEE.end, pl.TRAINEE.end + year)
                continue
            line = next(li for li in pl.LINES if op.startswith(f"OP-{li.uid[5:]}-"))
            for step in line.steps:
                if step.uid == pl.WI_CHANGE_STEP:
                    wi = pl.instruction_of(step.uid)
                    old = f"{wi}/{pl.WI_OLD_REVISION}"
                    new = f"{wi}/{pl.WI_NEW_REVISION}"
                    grant(op, old, 1, pl.QUAL_GRANTED, pl.QUAL_EXPIRES)
                    if op == pl.OLD_REVISION.operator:
                        grant(
                            op,
                            new,
                            1,
                            pl.OLD_REVISION.end,
                            pl.OLD_REVISION.end + year,
                            reason=f"trained on revision {pl.WI_NEW_REVISION} after running it "
                            "untrained",
                        )
                    else:
                        grant(op, new, 1, pl.WI_CHANGE_AT - 3 * DAY, pl.QUAL_EXPIRES)
                elif op == pl.LAPSED.operator and step.uid == pl.LAPSED.step:
                    first = grant(op, step.uid, 1, pl.LAPSED.start - year + 1, pl.LAPSED.start)
                    grant(
                        op,
                        step.uid,
                        2,
                        pl.LAPSED.end,
                        pl.LAPSED.end + year,
                        reason=f"requalified after {first} lapsed on "
                        f"{site_time(pl.LAPSED.start)[:10]}",
                    )
                elif op == pl.REVOKED.operator and step.uid == pl.REVOKED.step:
                    grant(
                        op,
                        step.uid,
                        1,
                        pl.QUAL_GRANTED,
                        pl.QUAL_EXPIRES,
                        revoked=pl.REVOKED.start,
                        reason=pl.REVOKED_REASON,
                    )
                else:
                    grant(op, step.uid, 1, pl.QUAL_GRANTED, pl.QUAL_EXPIRES)
        p.add_nodes("Qualification", **q)
        p.add_edges("HOLDS", src=holder, dst=q["uid"])
        p.add_edges("QUALIFIES_FOR", src=q["uid"], dst=scope)

    # --- calibrations --------------------------------------------------------------------

    @staticmethod
    def _repair_time(pumps: _Line) -> int:
        """When the occlusion tester, failed at its calibration, is repaired and passes
        again: before the next pump batch reaches it (the line waits for it)."""
        t = pumps.run_starts[:, -1]
        later = t[t > pl.OCCLUSION_FOUND_OOT]
        soonest = pl.OCCLUSION_FOUND_OOT + 600
        upper = pl.OCCLUSION_FOUND_OOT + pl.OCCLUSION_REPAIR_S
        return int(max(soonest, min(upper, int(later[0]) - 600))) if len(later) else upper

    def _calibrations(self, repaired: int) -> None:
        """Every machine's calibrations over the period, each performed about two days
        before the last one falls due, and the planted ones."""
        names = ["J. Alvarez", "M. Chen", "R. Okafor", "S. Lindqvist"]
        for k, (machine, gauge) in enumerate(pl.GAUGES.items()):
            if machine == pl.ENCODER_STATION:
                day = date.fromisoformat(pl.ENCODER_LAPSE_DUE) - timedelta(gauge.interval_days)
            elif machine == pl.OCCLUSION_TESTER:
                day = datetime.fromtimestamp(pl.OCCLUSION_LAST_GOOD, tz=pl.ZONE).date()
                while _at(day, pl.CALIBRATION_HOUR) > pl.START - 7 * DAY:
                    day -= timedelta(gauge.interval_days - pl.CALIBRATION_LEAD_DAYS)
            else:
                day = date(2026, 2, 9) + timedelta(k % 10)
            performed = _at(day, pl.CALIBRATION_HOUR)
            n = 0
            limited_done = adjusted_done = False
            while performed < pl.END:
                n += 1
                due_day = datetime.fromtimestamp(performed, tz=pl.ZONE).date() + timedelta(
                    gauge.interval_days
                )
                due = int(
                    datetime.fromisoformat(f"{due_day.isoformat()}T{pl.DUE_TIME}")
                    .replace(tzinfo=pl.ZONE)
                    .timestamp()
                )
                found = gauge.reference + float(self.rng.normal(0, gauge.tolerance / 4))
                found = float(
                    np.clip(
                        found,
                        gauge.reference - 0.8 * gauge.tolerance,
                        gauge.reference + 0.8 * gauge.tolerance,
                    )
                )
                verdict, left, limitation = "pass", found, ""
                mid = performed >= pl.local("2026-03-16T00:00:00")
                if machine == pl.OCCLUSION_TESTER and performed == pl.OCCLUSION_FOUND_OOT:
                    verdict, found, left = "fail", pl.OCCLUSION_AS_FOUND, pl.OCCLUSION_AS_FOUND
                elif machine in pl.ADJUSTED_MACHINES and mid and not adjusted_done:
                    adjusted_done = True
                    verdict = "adjusted"
                    found = gauge.reference + 0.9 * gauge.tolerance
                    left = gauge.reference + 0.05 * gauge.tolerance
                elif machine == pl.LIMITED_MACHINE and mid and not limited_done:
                    limited_done = True
                    verdict, limitation = "limited", pl.LIMITED_LIMITATION
                uid = f"CAL-{machine.removeprefix('M-')}-{n:02d}"
                self.calibrations.append(
                    _Cal(uid, machine, performed, due, verdict, found, left, limitation)
                )
                if machine == pl.ENCODER_STATION and due_day == date.fromisoformat(
                    pl.ENCODER_LAPSE_DUE
                ):
                    performed = pl.ENCODER_LATE_CALIBRATION
                elif machine == pl.OCCLUSION_TESTER and performed == pl.OCCLUSION_LAST_GOOD:
                    performed = pl.OCCLUSION_FOUND_OOT
                elif machine == pl.OCCLUSION_TESTER and performed == pl.OCCLUSION_FOUND_OOT:
                    performed = repaired
                else:
                    performed = _at(due_day - timedelta(pl.CALIBRATION_LEAD_DAYS), 10)
        cals = self.calibrations
        gauges = [pl.GAUGES[c.machine] for c in cals]
        self.plant.add_nodes(
            "Calibration",
            uid=[c.uid for c in cals],
            performed_at=iso([c.performed_at for c in cals]),
            due_at=iso([c.due_at for c in cals]),
            verdict=[c.verdict for c in cals],
            as_found=[f"{c.as_found:.3f}" for c in cals],
            as_left=[f"{c.as_left:.3f}" for c in cals],
            reference=[f"{g.reference:g}" for g in gauges],
            tolerance=[f"{g.tolerance:g}" for g in gauges],
            measured_unit=[g.unit for g in gauges],
            limitation=[c.limitation for c in cals],
            performed_by=[names[i % len(names)] for i in range(len(cals))],
        )
        self.plant.add_edges("CALIBRATES", src=[c.uid for c in cals], dst=[c.machine for c in cals])

    # --- production ----------------------------------------------------------------------

    def _schedule(
        self, spec: LineSpec, prefix: str, n_units: int, ready: np.ndarray | None
    ) -> _Line:
        """Batches back to back at the takt that spreads the line's units over its part
        of the calendar; a pump batch also waits for the parts of every pump in it."""
        n_batches = math.ceil(n_units / spec.batch_size)
        sizes = np.full(n_batches, spec.batch_size, dtype=np.int64)
        sizes[-1] = n_units - spec.batch_size * (n_batches - 1)
        begin = pl.START + (pl.PUMP_LEAD_S if ready is not None else 0)
        end = pl.END - (0 if ready is not None else pl.PUMP_LEAD_S)
        span = end - begin - n_batches * layout.CHANGEOVER_S - layout.STEP_OFFSET_S * 3
        takt = max(1, span // n_units)
        duration = sizes * takt
        starts = np.empty(n_batches, dtype=np.int64)
        last_needed = np.cumsum(sizes) - 1
        ready = None if ready is None else np.maximum.accumulate(ready)
        t = begin
        for j in range(n_batches):
            if ready is not None:
                t = max(t, int(ready[last_needed[j]]) + 1800)
            starts[j] = t
            t += int(duration[j]) + layout.CHANGEOVER_S
        n_steps = len(spec.steps)
        run_starts = starts[:, None] + layout.STEP_OFFSET_S * np.arange(n_steps)[None, :]
        if spec is pl.PUMP_LINE:
            uids = [f"{pl.PUMP_BATCH_PREFIX}{j + 1:03d}" for j in range(n_batches)]
        else:
            tag = spec.uid.removeprefix("LINE-")
            uids = [f"WO-{tag}-{j + 1:05d}" for j in range(n_batches)]
        unit_batch = np.repeat(np.arange(n_batches), sizes)
        within = np.arange(n_units) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return _Line(
            spec,
            prefix,
            uids,
            sizes,
            starts,
            duration,
            run_starts,
            np.zeros((n_batches, n_steps), dtype=np.int64),
            _shift_of(_local_seconds(run_starts)),
            unit_batch,
            run_starts[unit_batch, -1] + (within + 1) * takt,
        )

    def _prepare(self, line: _Line) -> None:
        """Machines, parameter actuals, operators and the work instruction each run
        followed. The encoder station aligns the last motor batch started before its
        calibration falls due (a run that straddles the due time)."""
        n = len(line.batch_uids)
        for s, step in enumerate(line.spec.steps):
            line.machines[:, s] = self.rng.integers(0, len(step.machines), n)
            for par in step.params:
                line.actuals[par.uid] = self.rng.normal(par.target, par.sigma, n)
            if pl.ENCODER_STATION in step.machines:
                before = np.flatnonzero(line.run_starts[:, s] < pl.ENCODER_LAPSE_DUE_AT)
                if len(before):
                    line.machines[before[-1], s] = step.machines.index(pl.ENCODER_STATION)
        tag = line.spec.uid.removeprefix("LINE-")
        per = pl.OPERATORS_PER_SHIFT
        for s, step in enumerate(line.spec.steps):
            shift = line.shifts[:, s]
            pick = shift * per + self.rng.integers(0, per, n)
            ops = [f"OP-{tag}-{k + 1:02d}" for k in pick]
            starts = line.run_starts[:, s]
            for state in pl.OPERATOR_STATES:
                if state.step != step.uid:
                    continue
                own = shift == layout.SHIFTS.index(state.shift)
                chosen = own & (self.rng.random(n) < state.share)
                for b in range(n):
                    stops = state is pl.REVOKED and starts[b] >= state.end
                    if ops[b] == state.operator and stops:
                        ops[b] = f"OP-{tag}-{(pick[b] + 1) % per + shift[b] * per + 1:02d}"
                    elif chosen[b] and not stops:
                        ops[b] = state.operator
            line.operators.append(ops)
            wi = pl.instruction_of(step.uid)
            if step.uid == pl.WI_CHANGE_STEP:
                line.instructions.append(
                    [
                        f"{wi}/{pl.WI_NEW_REVISION if t >= pl.WI_CHANGE_AT else pl.WI_OLD_REVISION}"
                        for t in starts
                    ]
                )
            else:
                line.instructions.append([f"{wi}/B"] * n)

    def _assign_lots(self, line: _Line, feeds_window: np.ndarray) -> None:
        """One lot of each material per batch, a lot feeding 3 to 8 consecutive batches.
        No lot lies inside the batches that fed the pumps of the occlusion tester's
        look-back window (``feeds_window``): the lots in use then were in use about as
        long outside it (innocent lots that share the window only in part)."""
        p = self.plant
        n = len(line.batch_uids)
        lo, hi = layout.LOT_SPAN_BATCHES
        inside = np.flatnonzero(feeds_window)
        window = (int(inside[0]), int(inside[-1]) + 1) if len(inside) else None
        for m_no, mat in enumerate(line.spec.materials):
            spans: list[int] = []
            while sum(spans) < n:
                spans.append(int(self.rng.integers(lo, hi + 1)))
            spans[-1] -= sum(spans) - n
            if window is not None:
                w0, w1 = window
                half = (w1 - w0) // 2 + 1
                cuts = [int(x) for x in np.cumsum(spans)[:-1]]
                cuts = [x for x in cuts if not w0 - half <= x <= w1 + half]
                cuts = sorted({*cuts, (w0 + w1) // 2 + (m_no - 1)})
                bounds = [0, *[x for x in cuts if 0 < x < n], n]
                spans = [b - a for a, b in itertools.pairwise(bounds)]
            lot_of_batch = np.repeat(np.arange(len(spans)), spans)
            _name, unit, per_unit, suppliers = pl.MATERIALS[mat]
            first_batch = np.cumsum(spans) - spans
            received = line.starts[first_batch] - self.rng.integers(2 * DAY, 10 * DAY, len(spans))
            short = mat.removeprefix("MAT-")
            uids = [f"LOT-{short}-{k + 1:04d}" for k in range(len(spans))]
            need = np.bincount(lot_of_batch, weights=line.sizes * per_unit)
            p.add_nodes(
                "MaterialLot",
                uid=uids,
                received_at=iso(received),
                quantity=fmt(np.ceil(need * 1.05), 0),
                unit=[unit] * len(spans),
            )
            p.add_edges("LOT_OF", src=uids, dst=[mat] * len(spans))
            supplier = self.rng.integers(0, len(suppliers), len(spans))
            p.add_edges("SUPPLIED", src=[suppliers[s] for s in supplier], dst=uids)
            p.add_edges(
                "CONSUMED_IN",
                src=[uids[k] for k in lot_of_batch],
                dst=line.batch_uids,
                quantity=fmt(line.sizes * per_unit, 0),
            )
            line.lots[mat] = [uids[k] for k in lot_of_batch]

    def _parts_of(self, below: _Quality, lower: _Line, per_unit: int, what: str) -> np.ndarray:
        """(pumps, per_unit) indices of the parts each pump is built from: parts that
        passed their own test, from a buffer of a few of the lower line's batches."""
        n = self.n_pumps
        passed = np.flatnonzero(~below.detected)
        if len(passed) < n * per_unit:
            raise RuntimeError(
                f"{len(passed)} {what} passed test, {n * per_unit} are needed: scrap exceeds "
                f"the spare of {pl.SPARE:.0%}"
            )
        spread = pl.PART_BUFFER_BATCHES * lower.spec.batch_size
        order = np.argsort(np.arange(len(passed)) + self.rng.uniform(0, spread, len(passed)))
        return passed[order[: n * per_unit]].reshape(n, per_unit)

    def _emit_line(self, line: _Line) -> None:
        p = self.plant
        spec = line.spec
        n = len(line.batch_uids)
        p.add_nodes(
            "Batch",
            uid=line.batch_uids,
            started_at=iso(line.starts),
            ended_at=iso(line.run_starts[:, -1] + line.duration),
            quantity=[str(int(x)) for x in line.sizes],
            status=["completed"] * n,
        )
        p.add_edges("OF_PRODUCT", src=line.batch_uids, dst=[spec.product] * n)
        for s, step in enumerate(spec.steps):
            runs = line.runs(s)
            p.add_nodes(
                "ProcessRun",
                uid=runs,
                started_at=iso(line.run_starts[:, s]),
                ended_at=iso(line.run_starts[:, s] + line.duration),
                shift=[layout.SHIFTS[i] for i in line.shifts[:, s]],
            )
            p.add_edges("RAN", src=line.batch_uids, dst=runs)
            p.add_edges("ON", src=runs, dst=[step.machines[m] for m in line.machines[:, s]])
            p.add_edges("FOR_STEP", src=runs, dst=[step.uid] * n)
            p.add_edges("OPERATED_BY", src=runs, dst=line.operators[s])
            p.add_edges("FOLLOWED", src=runs, dst=line.instructions[s])
            for par in step.params:
                p.add_edges(
                    "RECORDED",
                    src=runs,
                    dst=[par.uid] * n,
                    value=fmt(line.actuals[par.uid], 3),
                    unit=[par.unit] * n,
                )
        line.serials = [f"{line.prefix}{i + 1:06d}" for i in range(len(line.unit_batch))]
        p.add_edges("PRODUCED", src=[line.batch_uids[b] for b in line.unit_batch], dst=line.serials)

    # --- quality -------------------------------------------------------------------------

    def _draw(self, p: np.ndarray) -> np.ndarray:
        return self.rng.random(len(p)) < p

    def _flat(self, line: _Line, defect_type: str) -> np.ndarray:
        return self._draw(np.full(len(line.unit_batch), self.base[defect_type]))

    def _quality(
        self,
        line: _Line,
        fired: dict[str, np.ndarray],
        hidden: dict[str, np.ndarray],
        below: tuple[tuple[np.ndarray, _Quality], ...],
    ) -> _Quality:
        """Defects arising at this level (``hidden`` ones cannot be caught by this
        line's test), those carried up in parts that passed their own test, and what
        this line's test catches of each."""
        n = len(line.unit_batch)
        carried = {t: mask.copy() for t, mask in fired.items()}
        for parts, lower in below:
            escaped = lower.escaped
            for t, mask in lower.carried.items():
                inherited = (mask & escaped)[parts].any(axis=1)
                carried[t] = carried.get(t, np.zeros(n, dtype=bool)) | inherited
        caught = {
            t: mask & self._draw(np.full(n, self.detect.get((line.spec.uid, t), 0.0)))
            for t, mask in carried.items()
        }
        for t, mask in hidden.items():
            carried[t] = carried[t] | mask
        detected = np.zeros(n, dtype=bool)
        for mask in caught.values():
            detected |= mask
        defective = np.zeros(n, dtype=bool)
        for mask in carried.values():
            defective |= mask
        return _Quality(carried, caught, detected, defective)

    def _emit_units(self, line: _Line, q: _Quality) -> None:
        p = self.plant
        p.add_nodes(
            "Unit",
            uid=line.serials,
            produced_at=iso(line.unit_time),
            status=list(np.where(q.detected, "scrapped", "good")),
        )
        s = next(i for i, st in enumerate(line.spec.steps) if st.inspection is not None)
        step = line.spec.steps[s]
        assert step.inspection is not None
        n = len(line.batch_uids)
        found = np.bincount(line.unit_batch, weights=q.detected, minlength=n).astype(int)
        uids = [f"INS-{b}" for b in line.batch_uids]
        p.add_nodes(
            "Inspection",
            uid=uids,
            inspected_at=iso(line.run_starts[:, s] + line.duration),
            method=[step.inspection.value] * n,
            sample_size=[str(int(x)) for x in line.sizes],
            defects_found=[str(int(x)) for x in found],
            verdict=[
                "fail" if f > 0.1 * size else "pass"
                for f, size in zip(found, line.sizes, strict=True)
            ],
            image_ref=[""] * n,
        )
        p.add_edges("INSPECTED", src=uids, dst=line.batch_uids)
        rows = self.defect_rows
        own = pl.LEVEL_DEFECTS[line.spec.uid]
        for t, mask in q.caught.items():
            idx = np.flatnonzero(mask)
            rows["unit"] += [line.serials[i] for i in idx]
            rows["found_at"] += list(line.unit_time[idx] + 120)
            rows["type"] += [t] * len(idx)
            rows["inspection"] += [uids[line.unit_batch[i]] for i in idx]
            note = "" if t in own else f"{step.name.lower()} failure; fault in a sub-assembly"
            rows["description"] += [note] * len(idx)

    def _emit_defects(self) -> None:
        rows = self.defect_rows
        order = np.lexsort((np.array(rows["unit"]), np.array(rows["found_at"], dtype=np.int64)))
        uids = [f"DEF-{i + 1:06d}" for i in range(len(order))]

        def pick(key: str) -> list[Any]:
            return [rows[key][i] for i in order]

        p = self.plant
        p.add_nodes(
            "Defect",
            uid=uids,
            found_at=iso(pick("found_at")),
            severity=["major"] * len(uids),
            disposition=["scrap"] * len(uids),
            description=pick("description"),
        )
        p.add_edges("FOUND_ON", src=uids, dst=pick("unit"))
        p.add_edges("OF_TYPE", src=uids, dst=pick("type"))
        p.add_edges("DETECTED_IN", src=uids, dst=pick("inspection"))

    # --- field ---------------------------------------------------------------------------

    def _ship(self, line: _Line, q: _Quality) -> dict[str, Any]:
        p = self.plant
        ok = np.flatnonzero(~q.detected)
        sizes: list[int] = []
        while sum(sizes) < len(ok):
            sizes.append(int(self.rng.integers(10, 31)))
        sizes[-1] -= sum(sizes) - len(ok)
        if sizes[-1] < 10:  # the last, partial load stays in the warehouse
            sizes.pop()
        n_ship = len(sizes)
        cut = np.cumsum(sizes)
        units = ok[: int(cut[-1])] if n_ship else ok[:0]
        shipment_of = np.repeat(np.arange(n_ship), sizes)
        last = line.unit_time[units][cut - 1] if n_ship else np.array([], dtype=np.int64)
        shipped_at = last + self.rng.integers(DAY, 3 * DAY, n_ship)
        weights = 1.0 / np.arange(1, layout.N_CUSTOMERS + 1)
        customer = self.rng.choice(layout.N_CUSTOMERS, size=n_ship, p=weights / weights.sum())
        uids = [f"SHP-{k + 1:05d}" for k in range(n_ship)]
        p.add_nodes("Shipment", uid=uids, shipped_at=iso(shipped_at), carrier=["road"] * n_ship)
        p.add_edges(
            "SHIPPED_IN", src=[line.serials[i] for i in units], dst=[uids[k] for k in shipment_of]
        )
        p.add_edges("DELIVERED_TO", src=uids, dst=[f"CUST-{k + 1:03d}" for k in customer])
        return {
            "units": units,
            "shipment_of": shipment_of,
            "shipped_at": shipped_at,
            "customer": customer,
        }

    def _complaints(self, line: _Line, q: _Quality, shipped: dict[str, Any]) -> dict[str, Any]:
        c = self.c
        units = shipped["units"]
        escaped = q.escaped[units]
        real = escaped & self._draw(np.full(len(units), c.complaint_p))
        nff = ~escaped & self._draw(np.full(len(units), c.no_fault_found_p))
        idx = np.flatnonzero(real | nff)
        lag = 2 * DAY + self.rng.exponential(c.complaint_lag_days * DAY, len(idx)).astype(np.int64)
        received = shipped["shipped_at"][shipped["shipment_of"][idx]] + lag
        first_type = np.full(len(line.unit_batch), "", dtype=object)
        priority = [t for level in reversed(pl.LINES) for t in pl.LEVEL_DEFECTS[level.uid]]
        for t in reversed(priority):
            if t in q.carried:
                first_type[q.carried[t]] = t
        nff_types = np.array(pl.COMPLAINT_DEFECTS, dtype=object)
        reported = np.where(
            real[idx],
            first_type[units[idx]],
            nff_types[self.rng.integers(0, len(nff_types), len(idx))],
        )
        order = np.lexsort((units[idx], received))
        idx, received, reported = idx[order], received[order], reported[order]
        uids = [f"CMP-{k + 1:05d}" for k in range(len(idx))]
        p = self.plant
        p.add_nodes(
            "Complaint",
            uid=uids,
            received_at=iso(received),
            severity=["critical" if t == c.occlusion_defect else "major" for t in reported],
            description=[f"customer reports {pl.DEFECT_TYPES[t].name.lower()}" for t in reported],
        )
        p.add_edges("ABOUT", src=uids, dst=[line.serials[units[i]] for i in idx])
        p.add_edges("OF_TYPE", src=uids, dst=list(reported))
        p.add_edges(
            "RAISED_BY",
            src=uids,
            dst=[f"CUST-{shipped['customer'][shipped['shipment_of'][i]] + 1:03d}" for i in idx],
        )
        about = units[idx]
        return {
            "uids": uids,
            "units": about,
            "types": list(reported),
            "no_fault_found": [bool(nff[i]) for i in idx],
        }

    # --- ground truth ----------------------------------------------------------------------

    def _truth(
        self,
        lines: tuple[_Line, _Line, _Line],
        qualities: tuple[_Quality, _Quality, _Quality],
        parts: tuple[np.ndarray, np.ndarray],
        shipped: dict[str, Any],
        complaints: dict[str, Any],
        in_window: np.ndarray,
        trimmed_high: np.ndarray,
        old_rev_runs: np.ndarray,
    ) -> None:
        c = self.c
        boards, motors, pumps = lines
        states = [
            *self._calibration_states(motors, pumps, parts, in_window, trimmed_high),
            *self._operator_states(lines, old_rev_runs),
        ]
        causes: list[dict[str, Any]] = []
        occl = next(s for s in states if s["id"] == "occlusion-out-of-tolerance")
        if c.occlusion_added_p > 0:
            causes.append(
                {
                    "id": "occlusion-look-back",
                    "kind": "calibration_state",
                    "uid": pl.OCCLUSION_TESTER,
                    "state": "found out of tolerance",
                    "step": "STEP-PUMP-30",
                    "defect_type": c.occlusion_defect,
                    "category": pl.DEFECT_TYPES[c.occlusion_defect].category.value,
                    "added_probability": c.occlusion_added_p,
                    "level": pumps.spec.product,
                    "window": occl["window"],
                    "records": occl["records"],
                    "batches": occl["batches"],
                    "exposed_units": occl["units"],
                }
            )
        old = next(s for s in states if s["id"] == pl.OLD_REVISION.id)
        if c.old_revision_added_p > 0:
            causes.append(
                {
                    "id": "door-fit-old-revision",
                    "kind": "qualification_state",
                    "uid": pl.OLD_REVISION.operator,
                    "state": "other revision",
                    "step": pl.OLD_REVISION.step,
                    "revision": f"{pl.instruction_of(pl.WI_CHANGE_STEP)}/{pl.WI_NEW_REVISION}",
                    "defect_type": c.old_revision_defect,
                    "category": pl.DEFECT_TYPES[c.old_revision_defect].category.value,
                    "added_probability": c.old_revision_added_p,
                    "level": pumps.spec.product,
                    "window": old["window"],
                    "records": old["records"],
                    "runs": old["runs"],
                    "exposed_units": old["units"],
                }
            )
        self.plant.truth = {
            "format": "sqems-ground-truth",
            "version": 1,
            "shape": "pump",
            "seed": self.spec.seed,
            "units": self.spec.units,
            "site": {"uid": pl.SITE[0], "timezone": pl.TIMEZONE},
            "period": _window(int(boards.starts[0]), int(pumps.unit_time[-1])),
            "dst_change": {"at": iso(pl.DST_CHANGE)[0], "local": site_time(pl.DST_CHANGE)},
            "work_instruction_change": {
                "instruction": pl.instruction_of(pl.WI_CHANGE_STEP),
                "step": pl.WI_CHANGE_STEP,
                "from": pl.WI_OLD_REVISION,
                "to": pl.WI_NEW_REVISION,
                "effective": _window(pl.WI_CHANGE_AT, pl.WI_CHANGE_AT)["start_local"],
            },
            "causes": causes,
            "states": states,
            "noise": self._noise(lines, parts, in_window, complaints),
            "counts": self._counts(lines, qualities, shipped, complaints, in_window),
        }
        rows: dict[str, list[str]] = {"uid": [], "defect_types": [], "detected": [], "shipped": []}
        shipped_mask = np.zeros(len(pumps.unit_batch), dtype=bool)
        shipped_mask[shipped["units"]] = True
        for line, q in zip(lines, qualities, strict=True):
            order = [*pl.LEVEL_DEFECTS[line.spec.uid]]
            order += [t for t in q.carried if t not in order]
            is_pump = line is pumps
            for i in np.flatnonzero(q.defective):
                rows["uid"].append(line.serials[i])
                rows["defect_types"].append(";".join(t for t in order if q.carried[t][i]))
                rows["detected"].append(str(bool(q.detected[i])).lower())
                rows["shipped"].append(str(bool(is_pump and shipped_mask[i])).lower())
        self.plant.truth_units = Table(dict(rows))

    def _cal(self, machine: str, performed: int) -> _Cal:
        return next(
            c for c in self.calibrations if c.machine == machine and c.performed_at == performed
        )

    def _next_cal(self, cal: _Cal) -> _Cal | None:
        later = [
            c
            for c in self.calibrations
            if c.machine == cal.machine and c.performed_at > cal.performed_at
        ]
        return min(later, key=lambda c: c.performed_at) if later else None

    @staticmethod
    def _runs_on(line: _Line, machine: str, start: int, end: int) -> dict[str, Any]:
        """The line's runs on ``machine`` that started in [start, end), and those that
        started before ``start`` and ended after it (straddling its beginning)."""
        s = next(i for i, st in enumerate(line.spec.steps) if machine in st.machines)
        on = line.machines[:, s] == line.spec.steps[s].machines.index(machine)
        t = line.run_starts[:, s]
        inside = on & (t >= start) & (t < end)
        straddle = on & (t < start) & (t + line.duration > start)
        runs = line.runs(s)
        return {
            "step": line.spec.steps[s].uid,
            "mask": inside,
            "runs": [runs[b] for b in np.flatnonzero(inside)],
            "straddling_runs": [runs[b] for b in np.flatnonzero(straddle)],
            "batches": [line.batch_uids[b] for b in np.flatnonzero(inside)],
        }

    def _calibration_states(
        self,
        motors: _Line,
        pumps: _Line,
        parts: tuple[np.ndarray, np.ndarray],
        in_window: np.ndarray,
        trimmed_high: np.ndarray,
    ) -> list[dict[str, Any]]:
        c = self.c
        states: list[dict[str, Any]] = []
        lapse_day = date.fromisoformat(pl.ENCODER_LAPSE_DUE)
        lapsed = next(
            k
            for k in self.calibrations
            if k.machine == pl.ENCODER_STATION
            and datetime.fromtimestamp(k.due_at, tz=pl.ZONE).date() == lapse_day
        )
        late = self._cal(pl.ENCODER_STATION, pl.ENCODER_LATE_CALIBRATION)
        enc = self._runs_on(motors, pl.ENCODER_STATION, lapsed.due_at, late.performed_at)
        motor_units = enc["mask"][motors.unit_batch]
        pumps_with = motor_units[parts[1]].any(axis=1)
        states.append(
            {
                "id": "encoder-calibration-overdue",
                "kind": "calibration",
                "state": "overdue",
                "machine": pl.ENCODER_STATION,
                "step": enc["step"],
                "records": [lapsed.uid, late.uid],
                "due": site_time(lapsed.due_at),
                "window": _window(lapsed.due_at, late.performed_at),
                "runs": enc["runs"],
                "straddling_runs": enc["straddling_runs"],
                "batches": enc["batches"],
                "units": int(motor_units.sum()),
                "pump_batches": sorted(
                    {pumps.batch_uids[pumps.unit_batch[i]] for i in np.flatnonzero(pumps_with)}
                ),
                "pumps": int(pumps_with.sum()),
                "expected_effect": "none on defects: the late calibration found the station in "
                "tolerance; a deviation every record of the motor batches, and of the pumps "
                "built from them, must show",
            }
        )
        good = self._cal(pl.OCCLUSION_TESTER, pl.OCCLUSION_LAST_GOOD)
        bad = self._cal(pl.OCCLUSION_TESTER, pl.OCCLUSION_FOUND_OOT)
        occl = self._runs_on(pumps, pl.OCCLUSION_TESTER, good.performed_at, bad.performed_at)
        units_in = in_window[pumps.unit_batch]
        gauge = pl.GAUGES[pl.OCCLUSION_TESTER]
        repair = self._next_cal(bad)
        repaired = repair.performed_at if repair is not None else pl.END
        failed = self._runs_on(pumps, pl.OCCLUSION_TESTER, bad.performed_at, repaired)
        states.append(
            {
                "id": "occlusion-out-of-tolerance",
                "kind": "calibration",
                "state": "found out of tolerance",
                "machine": pl.OCCLUSION_TESTER,
                "step": occl["step"],
                "records": [good.uid, bad.uid],
                "repaired": {
                    "record": repair.uid if repair is not None else None,
                    "window": _window(bad.performed_at, repaired),
                    "runs_while_failed": failed["runs"],
                },
                "as_found": bad.as_found,
                "as_left": bad.as_left,
                "reference": gauge.reference,
                "tolerance": gauge.tolerance,
                "window": _window(good.performed_at, bad.performed_at),
                "runs": occl["runs"],
                "straddling_runs": occl["straddling_runs"],
                "batches": occl["batches"],
                "units": int(units_in.sum()),
                "units_with_alarm_set_high": int(trimmed_high.sum()),
                "expected_effect": (
                    f"pumps trimmed in the window carry {c.occlusion_defect} with added "
                    f"probability {c.occlusion_added_p:g}, pass the tester and come back as "
                    "complaints; the window's state factor ranks first for that type"
                    if c.occlusion_added_p > 0
                    else "none (no effect planted)"
                ),
            }
        )
        limited = next(k for k in self.calibrations if k.verdict == "limited")
        after = self._next_cal(limited)
        end = after.performed_at if after is not None else pl.END
        lim = self._runs_on(motors, pl.LIMITED_MACHINE, limited.performed_at, end)
        states.append(
            {
                "id": "run-in-bench-limited",
                "kind": "calibration",
                "state": "limited",
                "machine": pl.LIMITED_MACHINE,
                "step": lim["step"],
                "records": [limited.uid] + ([after.uid] if after is not None else []),
                "limitation": limited.limitation,
                "window": _window(limited.performed_at, end),
                "runs": lim["runs"],
                "batches": lim["batches"],
                "expected_effect": "none on defects: the bench's run-in limits lie inside the "
                "range the limitation allows",
            }
        )
        adjusted = [k for k in self.calibrations if k.verdict == "adjusted"]
        states.append(
            {
                "id": "adjusted-calibrations",
                "kind": "calibration",
                "state": "adjusted",
                "machines": [k.machine for k in adjusted],
                "records": [k.uid for k in adjusted],
                "as_found": [k.as_found for k in adjusted],
                "as_left": [k.as_left for k in adjusted],
                "window": None,
                "expected_effect": "none: found in tolerance near its edge and adjusted to "
                "nominal; no look-back needed",
            }
        )
        return states

    def _operator_states(
        self, lines: tuple[_Line, _Line, _Line], old_rev_runs: np.ndarray
    ) -> list[dict[str, Any]]:
        c = self.c
        holds = self.plant.edges["HOLDS"].columns
        scopes = self.plant.edges["QUALIFIES_FOR"].columns
        scope_of = dict(zip(scopes["src"], scopes["dst"], strict=True))
        effects = {
            pl.LAPSED.id: "none on defects: a lapse of the training record only",
            pl.REVOKED.id: "none on defects: the operator kept being scheduled for eight "
            "days after the revocation",
            pl.TRAINEE.id: "none: the trainee's runs carry no extra defects (the null for "
            "operator states; a trainee is not a cause)",
            pl.OLD_REVISION.id: (
                f"runs of revision {pl.WI_NEW_REVISION} carry {c.old_revision_defect} with "
                f"added probability {c.old_revision_added_p:g}"
                if c.old_revision_added_p > 0
                else "none (no effect planted)"
            ),
        }
        states: list[dict[str, Any]] = []
        for state in pl.OPERATOR_STATES:
            line = next(li for li in lines if any(st.uid == state.step for st in li.spec.steps))
            s = self._step_index(line, state.step)
            t = line.run_starts[:, s]
            mine = np.array([o == state.operator for o in line.operators[s]])
            if state is pl.OLD_REVISION:
                inside = old_rev_runs & (t < state.end)
            else:
                inside = mine & (t >= state.start) & (t < state.end)
            runs = line.runs(s)
            wi = pl.instruction_of(state.step) + "/"
            records = [
                q
                for o, q in zip(holds["src"], holds["dst"], strict=True)
                if o == state.operator and (scope_of[q] == state.step or scope_of[q].startswith(wi))
            ]
            states.append(
                {
                    "id": state.id,
                    "kind": "qualification",
                    "state": state.kind,
                    "operator": state.operator,
                    "step": state.step,
                    "shift": state.shift,
                    "records": records,
                    "window": _window(state.start, state.end),
                    "runs": [runs[b] for b in np.flatnonzero(inside)],
                    "all_runs": int(mine.sum()),
                    "units": int(inside[line.unit_batch].sum()),
                    "expected_effect": effects[state.id],
                }
            )
        return states

    def _noise(
        self,
        lines: tuple[_Line, _Line, _Line],
        parts: tuple[np.ndarray, np.ndarray],
        in_window: np.ndarray,
        complaints: dict[str, Any],
    ) -> list[dict[str, Any]]:
        boards, motors, pumps = lines
        unit_window = in_window[pumps.unit_batch]
        lots: list[dict[str, Any]] = []
        for line, units in (
            (boards, parts[0]),
            (motors, parts[1]),
            (pumps, np.arange(len(pumps.unit_batch))[:, None]),
        ):
            for mat, per_batch in line.lots.items():
                lot_of_batch = np.array(per_batch, dtype=object)
                lot_of = lot_of_batch[line.unit_batch[units]]  # (pump, part) → lot
                for lot in sorted(set(lot_of[unit_window].ravel())):
                    has = (lot_of == lot).any(axis=1)
                    lots.append(
                        {
                            "uid": lot,
                            "material": mat,
                            "line": line.spec.uid,
                            "pumps_in_window": int((has & unit_window).sum()),
                            "pumps_outside": int((has & ~unit_window).sum()),
                        }
                    )
        return [
            {
                "kind": "lots_in_use_during_look_back",
                "lots": lots,
                "why": "lots in pumps tested while the occlusion tester was out of tolerance "
                "(pump-line lots, and sub-assembly lots through the BOM); each is also in "
                "pumps outside the window, and none is a cause",
            },
            {
                "kind": "baseline",
                "rates": dict(self.c.baseline),
                "why": "every defect type occurs at a low base rate everywhere",
            },
            {
                "kind": "parameter_noise",
                "why": "parameters vary around target with Cpk 1.33 and have no effect",
            },
            {
                "kind": "no_fault_found",
                "complaints": [
                    u
                    for u, n in zip(complaints["uids"], complaints["no_fault_found"], strict=True)
                    if n
                ],
                "why": "complaints about good pumps",
            },
        ]

    def _counts(
        self,
        lines: tuple[_Line, _Line, _Line],
        qualities: tuple[_Quality, _Quality, _Quality],
        shipped: dict[str, Any],
        complaints: dict[str, Any],
        in_window: np.ndarray,
    ) -> dict[str, Any]:
        boards, motors, pumps = lines
        board_q, motor_q, pump_q = qualities
        t = self.c.occlusion_defect
        units_in = in_window[pumps.unit_batch]
        carried = pump_q.carried[t]
        about = np.zeros(len(pumps.unit_batch), dtype=bool)
        for u, kind, nff in zip(
            complaints["units"], complaints["types"], complaints["no_fault_found"], strict=True
        ):
            if kind == t and not nff:
                about[u] = True

        def rate(mask: np.ndarray, of: np.ndarray) -> float:
            return round(float(mask[of].sum()) / max(1, int(of.sum())), 4)

        return {
            "boards": len(boards.unit_batch),
            "motor_modules": len(motors.unit_batch),
            "pumps": len(pumps.unit_batch),
            "pump_batches": len(pumps.batch_uids),
            "pumps_in_look_back": int(units_in.sum()),
            "occlusion_rate_in_look_back": rate(carried, units_in),
            "occlusion_rate_outside": rate(carried, ~units_in),
            "occlusion_complaint_rate_in_look_back": rate(about, units_in),
            "occlusion_complaint_rate_outside": rate(about, ~units_in),
            "boards_scrapped_at_test": int(board_q.detected.sum()),
            "motor_modules_scrapped_at_test": int(motor_q.detected.sum()),
            "pumps_defective": int(pump_q.defective.sum()),
            "pumps_scrapped_at_test": int(pump_q.detected.sum()),
            "pumps_escaped": int(pump_q.escaped.sum()),
            "pumps_shipped": len(shipped["units"]),
            "complaints": len(complaints["uids"]),
            "no_fault_found": int(sum(complaints["no_fault_found"])),
        }


def _at(day: date, hour: int) -> int:
    """POSIX seconds of ``hour``:00 site time on ``day``."""
    return pl.local(f"{day.isoformat()}T{hour:02d}:00:00")
