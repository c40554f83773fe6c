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
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from sqems.datasets import emit, layout, levels
from sqems.datasets import master_data as md
from sqems.datasets import pump_layout as pl
from sqems.datasets.layout import DAY, LineSpec
from sqems.datasets.lots import emit_lots
from sqems.datasets.plant import Plant, PlantSpec, _shift_of, draw_lot_spans
from sqems.datasets.pump_lines import (
    CalRecord,
    LineQuality,
    PumpLine,
    site_time,
    step_index,
)
from sqems.datasets.pump_truth import TruthBuilder
from sqems.datasets.schedule import schedule
from sqems.datasets.tables import iso
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


def _local_seconds(seconds: np.ndarray) -> np.ndarray:
    """UTC seconds → the site's wall-clock seconds (the period holds one change)."""
    before = pl.ZONE.utcoffset(datetime.fromtimestamp(pl.START, tz=UTC).replace(tzinfo=None))
    after = pl.ZONE.utcoffset(datetime.fromtimestamp(pl.END, tz=UTC).replace(tzinfo=None))
    assert before is not None and after is not None
    offset = np.where(
        seconds >= pl.DST_CHANGE, after.total_seconds(), before.total_seconds()
    ).astype(np.int64)
    return np.asarray(seconds + offset, dtype=np.int64)


_LOADS = emit.Loads(fewest=10, most=30, carriers=("road",), digits=5)
"""Pumps leave by road, 10 to 30 to a load."""


class _PumpGenerator:
    def __init__(self, spec: PlantSpec, causes: pl.PumpCauses) -> None:
        self.spec = spec
        self.c = causes
        self.rng = np.random.default_rng(spec.seed)
        self.plant = Plant(spec)
        self.n_boards, self.n_motors, self.n_pumps = level_sizes(spec.units)
        self.base = dict(causes.baseline)
        self.detect = {(line, t): p for line, t, p in causes.detects}
        self.calibrations: list[CalRecord] = []
        self.defect_rows = emit.defect_rows()

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

        occl = step_index(pumps, "STEP-PUMP-30")
        occl_start = pumps.run_starts[:, occl]
        in_window = (occl_start >= pl.OCCLUSION_LAST_GOOD) & (occl_start < pl.OCCLUSION_FOUND_OOT)
        unit_window = in_window[pumps.unit_batch]
        self._assign_lots(pumps, in_window)
        for lower, parts in ((boards, board_parts), (motors, motor_parts)):
            used = np.zeros(len(lower.batch_uids), dtype=bool)
            used[lower.unit_batch[parts[unit_window].ravel()]] = True
            self._assign_lots(lower, used)
        door = step_index(pumps, pl.WI_CHANGE_STEP)
        # the operator's runs of the new revision before they were trained on it
        old_rev_runs = np.array(
            [
                op == pl.OLD_REVISION.operator
                and wi.endswith("/" + pl.WI_NEW_REVISION)
                and t < pl.OLD_REVISION.end
                for op, wi, t in zip(
                    pumps.operators[door],
                    pumps.instructions[door],
                    pumps.run_starts[:, door],
                    strict=True,
                )
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
        shipped = emit.ship(self.plant, self.rng, pumps, pump_q.detected, _LOADS)
        complaints = self._complaints(pumps, pump_q, shipped)
        emit.emit_defects(self.plant, self.defect_rows, digits=6)
        self.plant.truth, self.plant.truth_units = TruthBuilder(
            self.spec, self.c, self.plant, self.calibrations
        ).build(
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

    # --- master data ---------------------------------------------------------------------

    def _master_data(self) -> None:
        p = self.plant
        site_uid, site_name, country = pl.SITE
        p.add_nodes(
            "Site", uid=[site_uid], name=[site_name], country=[country], timezone=[pl.TIMEZONE]
        )
        md.emit_catalogue(
            p, pl.SUPPLIERS, pl.MATERIALS, pl.CRITICAL_MATERIALS, pl.DEFECT_TYPES, pl.ORIGINS
        )
        for line_no, line in enumerate(pl.LINES):
            kind = "finished" if line is pl.PUMP_LINE else "subassembly"
            md.emit_line(p, line, site_uid, "A", kind, pl.MATERIALS)
            md.emit_steps(p, line, line_no)
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
        md.emit_customers(p, first, second, stride=3, countries=["US"])

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
    def _repair_time(pumps: PumpLine) -> int:
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
                    CalRecord(uid, machine, performed, due, verdict, found, left, limitation)
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
    ) -> PumpLine:
        """Batches back to back at the takt that spreads the line's units over its part
        of the calendar; a pump batch also waits for the parts of every pump in it."""
        n_batches = math.ceil(n_units / spec.batch_size)
        begin = pl.START + (pl.PUMP_LEAD_S if ready is not None else 0)
        end = pl.END - (0 if ready is not None else pl.PUMP_LEAD_S)
        span = end - begin - n_batches * layout.CHANGEOVER_S - layout.STEP_OFFSET_S * 3
        takt = max(1, span // n_units)
        ready = None if ready is None else np.maximum.accumulate(ready)
        sch = schedule(spec, n_units, begin, takt, ready, wait=1800)
        if spec is pl.PUMP_LINE:
            uids = [f"{pl.PUMP_BATCH_PREFIX}{j + 1:03d}" for j in range(n_batches)]
        else:
            tag = spec.uid.removeprefix("LINE-")
            uids = [f"WO-{tag}-{j + 1:05d}" for j in range(n_batches)]
        return PumpLine(
            spec,
            prefix,
            uids,
            sch.sizes,
            sch.starts,
            sch.duration,
            sch.run_starts,
            np.zeros((n_batches, len(spec.steps)), dtype=np.int64),
            _shift_of(_local_seconds(sch.run_starts)),
            sch.unit_batch,
            sch.unit_time,
        )

    def _prepare(self, line: PumpLine) -> None:
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
                    # the revoked operator is no longer scheduled for the step after
                    # ``end``: a colleague of the same shift runs it
                    stops = state is pl.REVOKED and starts[b] >= state.end
                    if ops[b] == state.operator and stops:
                        colleague = shift[b] * per + (pick[b] % per + 1) % per
                        ops[b] = f"OP-{tag}-{colleague + 1:02d}"
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

    def _assign_lots(self, line: PumpLine, feeds_window: np.ndarray) -> None:
        """One lot of each material per batch, a lot feeding 3 to 8 consecutive batches.
        No lot lies inside the batches that fed the pumps of the occlusion tester's
        look-back window (``feeds_window``): the lots in use then were in use about as
        long outside it (innocent lots that share the window only in part)."""
        p = self.plant
        n = len(line.batch_uids)
        inside = np.flatnonzero(feeds_window)
        window = (int(inside[0]), int(inside[-1]) + 1) if len(inside) else None
        for m_no, mat in enumerate(line.spec.materials):
            spans = draw_lot_spans(self.rng, n)
            if window is not None:
                w0, w1 = window
                half = (w1 - w0) // 2 + 1
                cuts = [int(x) for x in np.cumsum(spans)[:-1]]
                cuts = [x for x in cuts if not w0 - half <= x <= w1 + half]
                cuts = sorted({*cuts, (w0 + w1) // 2 + (m_no - 1)})
                bounds = [0, *[x for x in cuts if 0 < x < n], n]
                spans = [b - a for a, b in itertools.pairwise(bounds)]
            _name, unit, per_unit, suppliers = pl.MATERIALS[mat]
            lots = emit_lots(
                p,
                self.rng,
                (line.batch_uids, line.starts, line.sizes),
                (mat, unit, per_unit, suppliers),
                spans,
                digits=(4, 0),
            )
            line.lots[mat] = [lots.uids[k] for k in lots.lot_of_batch]

    def _parts_of(
        self, below: LineQuality, lower: PumpLine, per_unit: int, what: str
    ) -> np.ndarray:
        """(pumps, per_unit) indices of the parts each pump is built from (see
        :func:`levels.pick_parts`), from a buffer of a few of the lower line's batches."""
        buffer = pl.PART_BUFFER_BATCHES * lower.spec.batch_size
        shape = (self.n_pumps, per_unit)
        return levels.pick_parts(self.rng, below.detected, buffer, shape, what, pl.SPARE)

    def _emit_line(self, line: PumpLine) -> None:
        """Production as every shape writes it; a run's operator and the work
        instruction it followed are the pump plant's own (drawn in ``_prepare``)."""
        p = self.plant

        def operated_and_followed(s: int, runs: list[str]) -> None:
            p.add_edges("OPERATED_BY", src=runs, dst=line.operators[s])
            p.add_edges("FOLLOWED", src=runs, dst=line.instructions[s])

        emit.emit_production(p, line, (line.prefix, 6), operated_and_followed)

    # --- quality -------------------------------------------------------------------------

    def _draw(self, p: np.ndarray) -> np.ndarray:
        return self.rng.random(len(p)) < p

    def _flat(self, line: PumpLine, defect_type: str) -> np.ndarray:
        return self._draw(np.full(len(line.unit_batch), self.base[defect_type]))

    def _quality(
        self,
        line: PumpLine,
        fired: dict[str, np.ndarray],
        hidden: dict[str, np.ndarray],
        below: tuple[tuple[np.ndarray, LineQuality], ...],
    ) -> LineQuality:
        """Defects arising at this level (``hidden`` ones cannot be caught by this
        line's test), those carried up in parts that passed their own test, and what
        this line's test catches of each."""
        uid = line.spec.uid
        a = levels.assess(
            self.rng,
            len(line.unit_batch),
            fired,
            below,
            {t: p for (on, t), p in self.detect.items() if on == uid},
            hidden,
        )
        return LineQuality(a.carried, a.caught, a.detected, a.defective)

    def _emit_units(self, line: PumpLine, q: LineQuality) -> None:
        note = emit.sub_assembly_note(line, pl.LEVEL_DEFECTS[line.spec.uid])
        inspection = emit.Inspection(fail_share=0.1, image_refs=False, note=note)
        emit.emit_units(self.plant, self.defect_rows, line, q.caught, q.detected, inspection)

    # --- field ---------------------------------------------------------------------------

    def _complaints(
        self, line: PumpLine, q: LineQuality, shipped: dict[str, Any]
    ) -> dict[str, Any]:
        """Complaints about shipped pumps; an occlusion alarm is critical."""
        c = self.c
        priority = [t for level in reversed(pl.LINES) for t in pl.LEVEL_DEFECTS[level.uid]]
        model = emit.ComplaintModel(
            c.complaint_p,
            c.no_fault_found_p,
            c.complaint_lag_days,
            pl.COMPLAINT_DEFECTS,
            lambda t: "critical" if t == c.occlusion_defect else "major",
            {t: d.name for t, d in pl.DEFECT_TYPES.items()},
            digits=5,
        )
        first_type = emit.first_types(len(line.unit_batch), q.carried, priority)
        made = emit.complain(self.plant, self.rng, line, shipped, q.escaped, first_type, model)
        return {
            "uids": made.uids,
            "units": shipped["units"][made.idx],
            "types": list(made.reported),
            "no_fault_found": [bool(made.nff[i]) for i in made.idx],
        }


def _at(day: date, hour: int) -> int:
    """POSIX seconds of ``hour``:00 site time on ``day``."""
    return pl.local(f"{day.isoformat()}T{hour:02d}:00:00")
