"""The pump plant's ground truth: every planted state with its records, window (UTC and
site time), runs and expected effect; the causes with an effect; the innocent lots in use
during the occlusion look-back; the counts and rates the tests check.

Built from what :mod:`sqems.datasets.pump` generated, never re-derived from the tables,
so the truth and the plant cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np

from sqems.datasets import pump_layout as pl
from sqems.datasets.plant import Plant, PlantSpec
from sqems.datasets.pump_lines import (
    CalRecord,
    LineQuality,
    PumpLine,
    site_time,
    step_index,
    window,
)
from sqems.datasets.tables import Table, iso
from sqems.datasets.truth_units import defective_units


@dataclass(frozen=True, slots=True)
class TruthBuilder:
    """The ground truth of one generated pump plant (:meth:`build`)."""

    spec: PlantSpec
    c: pl.PumpCauses
    plant: Plant
    calibrations: list[CalRecord]

    def build(
        self,
        lines: tuple[PumpLine, PumpLine, PumpLine],
        qualities: tuple[LineQuality, LineQuality, LineQuality],
        parts: tuple[np.ndarray, np.ndarray],
        shipped: dict[str, Any],
        complaints: dict[str, Any],
        in_window: np.ndarray,
        trimmed_high: np.ndarray,
        old_rev_runs: np.ndarray,
    ) -> tuple[dict[str, Any], Table]:
        """The ground truth and the table of defective units."""
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
        truth = {
            "format": "sqems-ground-truth",
            "version": 1,
            "shape": "pump",
            "seed": self.spec.seed,
            "units": self.spec.units,
            "site": {"uid": pl.SITE[0], "timezone": pl.TIMEZONE},
            "period": window(int(boards.starts[0]), int(pumps.unit_time[-1])),
            "dst_change": {"at": iso(pl.DST_CHANGE)[0], "local": site_time(pl.DST_CHANGE)},
            "work_instruction_change": {
                "instruction": pl.instruction_of(pl.WI_CHANGE_STEP),
                "step": pl.WI_CHANGE_STEP,
                "from": pl.WI_OLD_REVISION,
                "to": pl.WI_NEW_REVISION,
                "effective": window(pl.WI_CHANGE_AT, pl.WI_CHANGE_AT)["start_local"],
            },
            "causes": causes,
            "states": states,
            "noise": self._noise(lines, parts, in_window, complaints),
            "counts": self._counts(lines, qualities, shipped, complaints, in_window),
        }
        table = defective_units(lines, qualities, pl.LEVEL_DEFECTS, shipped["units"])
        return truth, table

    def _cal(self, machine: str, performed: int) -> CalRecord:
        return next(
            c for c in self.calibrations if c.machine == machine and c.performed_at == performed
        )

    def _next_cal(self, cal: CalRecord) -> CalRecord | None:
        later = [
            c
            for c in self.calibrations
            if c.machine == cal.machine and c.performed_at > cal.performed_at
        ]
        return min(later, key=lambda c: c.performed_at) if later else None

    @staticmethod
    def _runs_on(line: PumpLine, machine: str, start: int, end: int) -> dict[str, Any]:
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
        motors: PumpLine,
        pumps: PumpLine,
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
                "window": window(lapsed.due_at, late.performed_at),
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
                    "window": window(bad.performed_at, repaired),
                    "runs_while_failed": failed["runs"],
                },
                "as_found": bad.as_found,
                "as_left": bad.as_left,
                "reference": gauge.reference,
                "tolerance": gauge.tolerance,
                "window": window(good.performed_at, bad.performed_at),
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
                "window": window(limited.performed_at, end),
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
        self, lines: tuple[PumpLine, PumpLine, PumpLine], old_rev_runs: np.ndarray
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
            s = step_index(line, state.step)
            t = line.run_starts[:, s]
            mine = np.array([o == state.operator for o in line.operators[s]])
            if state is pl.OLD_REVISION:
                inside = old_rev_runs
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
                    "window": window(state.start, state.end),
                    "runs": [runs[b] for b in np.flatnonzero(inside)],
                    "all_runs": int(mine.sum()),
                    "units": int(inside[line.unit_batch].sum()),
                    "expected_effect": effects[state.id],
                }
            )
        return states

    def _noise(
        self,
        lines: tuple[PumpLine, PumpLine, PumpLine],
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
        lines: tuple[PumpLine, PumpLine, PumpLine],
        qualities: tuple[LineQuality, LineQuality, LineQuality],
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
