"""A second synthetic plant, shaped differently: a battery plant with a three-level BOM.

``generate(PlantSpec(shape="battery", units=20_000, seed=7))`` builds cells, modules
of four cells and packs of two modules (see :mod:`sqems.datasets.battery_layout`), with
the same node and edge tables and the same kinds of ground truth as the default
plant, so every tool that works on one works on the other. Planted:

* a bad separator lot whose cells short internally; most shorts pass cell test and
  surface at module or pack test, or as complaints about packs, two BOM levels above
  the lot. Every cell batch the lot fed was stacked on one machine (co-exposed noise);
* a laser welder whose power sags below the LSL over a window: weak busbar welds in
  modules;
* a night-shift effect at module fastening in the pack;
* baseline rates of every defect type, parameter noise, no-fault-found complaints.

``units`` counts every unit: cells, modules and packs. The same spec and seed give
the same plant, byte for byte; per-unit work is vectorised with numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sqems.datasets import battery_layout as bl
from sqems.datasets import emit, layout, levels
from sqems.datasets import master_data as md
from sqems.datasets.layout import LineSpec
from sqems.datasets.lots import emit_lots
from sqems.datasets.plant import (
    Plant,
    PlantSpec,
    _shift_of,
    batch_baseline,
    draw_lot_spans,
)
from sqems.datasets.schedule import schedule
from sqems.datasets.tables import iso
from sqems.datasets.truth_units import defective_units


def generate_battery(spec: PlantSpec, causes: bl.BatteryCauses | None = None) -> Plant:
    """Build the battery plant ``spec`` describes, with ``causes`` planted (defaults:
    :class:`~sqems.datasets.battery_layout.BatteryCauses`; ``BatteryCauses.none()``
    plants nothing)."""
    return _BatteryGenerator(spec, causes or bl.BatteryCauses()).run()


def level_sizes(units: int) -> tuple[int, int, int]:
    """(cells, modules, packs) of a plant of ``units`` units in all.

    >>> level_sizes(20_000)
    (14848, 3501, 1651)
    >>> sum(level_sizes(12_345)) == 12_345
    True
    """
    per_pack = (
        1
        + bl.MODULES_PER_PACK * (1 + bl.SPARE)
        + bl.MODULES_PER_PACK * bl.CELLS_PER_MODULE * (1 + bl.SPARE) ** 2
    )
    packs = int(units // per_pack)
    modules = math.ceil(packs * bl.MODULES_PER_PACK * (1 + bl.SPARE))
    return units - packs - modules, modules, packs


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
    shifts: np.ndarray  # (batch, step) index into SHIFTS
    unit_batch: np.ndarray  # batch index of each unit
    unit_time: np.ndarray  # produced_at of each unit
    actuals: dict[str, np.ndarray] = field(default_factory=dict)
    serials: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Quality:
    """What each unit of a line carries, what its test caught and what escaped."""

    carried: dict[str, np.ndarray]  # defect type → unit carries it (own or in a part)
    fired: dict[str, np.ndarray]  # defect type → arose at this level
    caught: dict[str, np.ndarray]
    detected: np.ndarray
    defective: np.ndarray

    @property
    def escaped(self) -> np.ndarray:
        escaped: np.ndarray = self.defective & ~self.detected
        return escaped


_LOADS = emit.Loads(fewest=20, most=60, carriers=("road", "sea", "rail"), digits=6)
"""Packs leave 20 to 60 to a load, by road, sea and rail in turn."""


class _BatteryGenerator:
    def __init__(self, spec: PlantSpec, causes: bl.BatteryCauses) -> None:
        self.spec = spec
        self.c = causes
        self.rng = np.random.default_rng(spec.seed)
        self.t0 = int(spec.start.timestamp())
        self.plant = Plant(spec)
        self.n_cells, self.n_modules, self.n_packs = level_sizes(spec.units)
        self.base = dict(causes.baseline)
        self.detect = {(line, t): p for line, t, p in causes.detects}
        self.bad_lot_supplier = ""
        self.defect_rows = emit.defect_rows()

    # --- orchestration -------------------------------------------------------------------

    def run(self) -> Plant:
        c = self.c
        self._master_data()

        cells = self._schedule(bl.CELL_LINE, "SN-C", self.n_cells, ready=None)
        bad_lot, bad_batches = self._assign_lots(cells, plant_bad_lot=True)
        stack = bl.CELL_LINE.steps[0]
        forced = {(b, 0): stack.machines.index(c.co_exposed_machine) for b in bad_batches}
        self._pick_machines(cells, forced)
        self._plain_actuals(cells)
        in_bad_lot = np.isin(cells.unit_batch, bad_batches)
        cell_q = self._quality(
            cells,
            {
                "DT-INTERNAL-SHORT": self._draw(
                    self._base(cells, "DT-INTERNAL-SHORT") + c.bad_lot_added_p * in_bad_lot
                ),
                "DT-ELECTROLYTE-LEAK": self._flat(cells, "DT-ELECTROLYTE-LEAK"),
            },
            parts=None,
            below=None,
        )

        cell_parts = self._parts_of(cell_q, cells, self.n_modules, bl.CELLS_PER_MODULE, "cells")
        modules = self._schedule(
            bl.MODULE_LINE, "SN-M", self.n_modules, ready=cells.unit_time[cell_parts].max(1)
        )
        self._assign_lots(modules)
        self._pick_machines(modules, {})
        self._plain_actuals(modules)
        drift = self._drift(modules)
        power = modules.actuals[c.drift_parameter][modules.unit_batch]
        sag = np.clip((c.weak_threshold - power) / (c.weak_threshold - c.weak_full_at), 0, 1)
        module_q = self._quality(
            modules,
            {"DT-WEAK-WELD": self._draw(self._base(modules, "DT-WEAK-WELD") + c.weak_max_p * sag)},
            parts=cell_parts,
            below=cell_q,
        )

        module_parts = self._parts_of(
            module_q, modules, self.n_packs, bl.MODULES_PER_PACK, "modules"
        )
        packs = self._schedule(
            bl.PACK_LINE, "SN-P", self.n_packs, ready=modules.unit_time[module_parts].max(1)
        )
        self._assign_lots(packs)
        self._pick_machines(packs, {})
        self._plain_actuals(packs)
        fasten = next(i for i, st in enumerate(bl.PACK_LINE.steps) if st.uid == c.shift_step)
        night = packs.shifts[packs.unit_batch, fasten] == layout.SHIFTS.index(c.shift)
        pack_q = self._quality(
            packs,
            {
                "DT-LOOSE-FASTENER": self._draw(
                    self._base(packs, "DT-LOOSE-FASTENER") + c.shift_added_p * night
                ),
                "DT-BMS-FAULT": self._flat(packs, "DT-BMS-FAULT"),
                "DT-ENCLOSURE-DENT": self._flat(packs, "DT-ENCLOSURE-DENT"),
            },
            parts=module_parts,
            below=module_q,
        )

        levels = ((cells, cell_q, None), (modules, module_q, cell_parts))
        for line, quality, parts in (*levels, (packs, pack_q, module_parts)):
            self._emit_line(line)
            if parts is not None:
                lower = cells if line is modules else modules
                self.plant.add_edges(
                    "ASSEMBLED_INTO",
                    src=[lower.serials[i] for i in parts.ravel()],
                    dst=[line.serials[i] for i in np.repeat(np.arange(len(parts)), parts.shape[1])],
                )
            self._emit_units(line, quality)
        shipped = emit.ship(self.plant, self.rng, packs, pack_q.detected, _LOADS)
        complaints = self._complaints(packs, pack_q, shipped)
        emit.emit_defects(self.plant, self.defect_rows, digits=7)
        self._truth(
            (cells, modules, packs),
            (cell_q, module_q, pack_q),
            (cell_parts, module_parts),
            shipped,
            complaints,
            drift,
            bad_lot,
            bad_batches,
            night,
        )
        return self.plant

    # --- master data ---------------------------------------------------------------------

    def _master_data(self) -> None:
        p = self.plant
        site_uid, site_name = bl.SITE
        p.add_nodes("Site", uid=[site_uid], name=[site_name], country=["DE"], timezone=["UTC"])
        md.emit_catalogue(
            p, bl.SUPPLIERS, bl.MATERIALS, bl.CRITICAL_MATERIALS, bl.DEFECT_TYPES, bl.ORIGINS
        )
        for line_no, line in enumerate(bl.LINES):
            kind = "finished" if line is bl.PACK_LINE else "subassembly"
            md.emit_line(p, line, site_uid, "B", kind, bl.MATERIALS)
            if line_no > 0:
                p.add_edges(
                    "USES",
                    src=[line.product],
                    dst=[bl.LINES[line_no - 1].product],
                    quantity=[str(bl.PARTS_PER_UNIT[line.uid])],
                )
            md.emit_steps(p, line, line_no)
        md.emit_operators(p)
        first = ["Volta", "Ampere", "Kestrel", "Lumen", "Meridian", "Nimbus", "Orbit", "Pulse"]
        second = ["Mobility", "Energy", "Storage", "Motors", "Grid", "Marine"]
        countries = ["DE", "FR", "US", "NO", "IT", "ES", "GB", "PL", "SE", "NL"]
        md.emit_customers(p, first, second, stride=5, countries=countries)

    # --- production ----------------------------------------------------------------------

    def _parts_of(
        self, below: _Quality, lower: _Line, n: int, per_unit: int, what: str
    ) -> np.ndarray:
        """(n, per_unit) indices of the parts each unit is built from (see
        :func:`levels.pick_parts`), from a buffer of a few of the lower line's batches."""
        buffer = bl.PART_BUFFER_BATCHES * lower.spec.batch_size
        return levels.pick_parts(self.rng, below.detected, buffer, (n, per_unit), what, bl.SPARE)

    def _schedule(
        self, spec: LineSpec, prefix: str, n_units: int, ready: np.ndarray | None
    ) -> _Line:
        """The line's batches from the plant's start; a batch also waits for the parts of
        every unit in it, and half an hour more."""
        ready = None if ready is None else np.maximum.accumulate(ready)
        sch = schedule(spec, n_units, self.t0, spec.cycle_s, ready, wait=1800)
        tag = spec.uid.removeprefix("LINE-")
        n_batches, n_steps = sch.run_starts.shape
        return _Line(
            spec,
            prefix,
            [f"WO-{tag}-{j + 1:05d}" for j in range(n_batches)],
            sch.sizes,
            sch.starts,
            sch.duration,
            sch.run_starts,
            np.zeros((n_batches, n_steps), dtype=np.int64),
            _shift_of(sch.run_starts),
            sch.unit_batch,
            sch.unit_time,
        )

    def _assign_lots(self, line: _Line, *, plant_bad_lot: bool = False) -> tuple[str, list[int]]:
        """Give every batch one lot of each material; a lot feeds 3 to 8 consecutive
        batches. Returns the bad lot and its batches when ``plant_bad_lot``."""
        p = self.plant
        n = len(line.batch_uids)
        bad_lot, bad_batches = "", []
        for mat in line.spec.materials:
            _name, unit, per_unit, suppliers = bl.MATERIALS[mat]
            lots = emit_lots(
                p,
                self.rng,
                (line.batch_uids, line.starts, line.sizes),
                (mat, unit, per_unit, suppliers),
                draw_lot_spans(self.rng, n),
                digits=(5, 3),
            )
            if plant_bad_lot and mat == self.c.bad_lot_material:
                k = lots.at(self.c.bad_lot_position)
                bad_lot, bad_batches = lots.uids[k], lots.batches_of(k)
                self.bad_lot_supplier = suppliers[lots.supplier[k]]
        return bad_lot, bad_batches

    def _pick_machines(self, line: _Line, forced: dict[tuple[int, int], int]) -> None:
        for s, step in enumerate(line.spec.steps):
            line.machines[:, s] = self.rng.integers(0, len(step.machines), len(line.batch_uids))
        for (b, s), m in forced.items():
            line.machines[b, s] = m

    def _plain_actuals(self, line: _Line) -> None:
        for step in line.spec.steps:
            for par in step.params:
                line.actuals[par.uid] = self.rng.normal(par.target, par.sigma, len(line.batch_uids))

    def _drift(self, line: _Line) -> dict[str, Any]:
        """The planted drift of one parameter on one machine over a window of the line's
        time (the ramp runs from 0 at the window's start to ``drift_amount`` at its end)."""
        c = self.c
        s = next(i for i, st in enumerate(line.spec.steps) if c.drift_machine in st.machines)
        m = line.spec.steps[s].machines.index(c.drift_machine)
        begin, end = int(line.starts[0]), int(line.run_starts[-1, -1] + line.duration[-1])
        w0 = begin + c.drift_window[0] * (end - begin)
        w1 = begin + c.drift_window[1] * (end - begin)
        t = line.run_starts[:, s].astype(float)
        ramp = np.clip((t - w0) / (w1 - w0), 0.0, 1.0) * ((t >= w0) & (t <= w1))
        on = line.machines[:, s] == m
        line.actuals[c.drift_parameter] = line.actuals[c.drift_parameter] + (
            c.drift_amount * ramp * on
        )
        return {"window": (int(w0), int(w1)), "step": s, "batches": np.flatnonzero(on & (ramp > 0))}

    def _emit_line(self, line: _Line) -> None:
        extras = emit.roster_operators(self.plant, self.rng, line)
        emit.emit_production(self.plant, line, (line.prefix, 7), extras)

    # --- quality -------------------------------------------------------------------------

    def _draw(self, p: np.ndarray) -> np.ndarray:
        return self.rng.random(len(p)) < p

    def _base(self, line: _Line, defect_type: str) -> float | np.ndarray:
        """The baseline rate of ``defect_type`` for each unit of ``line`` (varied from
        batch to batch when the causes ask for it)."""
        return batch_baseline(
            self.base[defect_type],
            line.unit_batch,
            self.c.batch_log_sd,
            self.spec.seed,
            f"{line.spec.uid}/{defect_type}",
        )

    def _flat(self, line: _Line, defect_type: str) -> np.ndarray:
        rate = self._base(line, defect_type)
        return self._draw(np.broadcast_to(rate, line.unit_batch.shape))

    def _quality(
        self,
        line: _Line,
        fired: dict[str, np.ndarray],
        parts: np.ndarray | None,
        below: _Quality | None,
    ) -> _Quality:
        """Defects arising at this level, those carried up in parts that passed their
        own test, and what this line's test catches of each."""
        uid = line.spec.uid
        a = levels.assess(
            self.rng,
            len(line.unit_batch),
            fired,
            [] if parts is None or below is None else [(parts, below)],
            {t: p for (on, t), p in self.detect.items() if on == uid},
            hidden={},
        )
        return _Quality(a.carried, fired, a.caught, a.detected, a.defective)

    def _emit_units(self, line: _Line, q: _Quality) -> None:
        """Units with their status, the batch inspection, and a defect per caught type."""
        note = emit.sub_assembly_note(line, bl.LEVEL_DEFECTS[line.spec.uid])
        inspection = emit.Inspection(fail_share=0.05, image_refs=True, note=note)
        emit.emit_units(self.plant, self.defect_rows, line, q.caught, q.detected, inspection)

    # --- field ---------------------------------------------------------------------------

    def _complaints(self, line: _Line, q: _Quality, shipped: dict[str, Any]) -> dict[str, Any]:
        c = self.c
        # the customer sees the pack's own defect first, else a module's, else a cell's
        priority = [t for level in reversed(bl.LINES) for t in bl.LEVEL_DEFECTS[level.uid]]
        model = emit.ComplaintModel(
            c.complaint_p,
            c.no_fault_found_p,
            c.complaint_lag_days,
            bl.COMPLAINT_DEFECTS,
            lambda _t: "major",
            {t: d.name for t, d in bl.DEFECT_TYPES.items()},
            digits=6,
        )
        first_type = emit.first_types(len(line.unit_batch), q.carried, priority)
        made = emit.complain(self.plant, self.rng, line, shipped, q.escaped, first_type, model)
        return {"uids": made.uids, "no_fault_found": [bool(made.nff[i]) for i in made.idx]}

    # --- ground truth ----------------------------------------------------------------------

    def _truth(
        self,
        lines: tuple[_Line, _Line, _Line],
        qualities: tuple[_Quality, _Quality, _Quality],
        parts: tuple[np.ndarray, np.ndarray],
        shipped: dict[str, Any],
        complaints: dict[str, Any],
        drift: dict[str, Any],
        bad_lot: str,
        bad_batches: list[int],
        night: np.ndarray,
    ) -> None:
        c = self.c
        cells, modules, packs = lines
        cell_q, module_q, pack_q = qualities
        cell_parts, module_parts = parts
        category = {uid: d.category.value for uid, d in bl.DEFECT_TYPES.items()}

        in_bad_lot = np.isin(cells.unit_batch, bad_batches)
        module_exposed = in_bad_lot[cell_parts].any(axis=1)
        pack_exposed = module_exposed[module_parts].any(axis=1)
        causes: list[dict[str, Any]] = []
        if c.bad_lot_added_p > 0:
            causes.append(
                {
                    "id": "bad-lot",
                    "kind": "material_lot",
                    "uid": bad_lot,
                    "material": c.bad_lot_material,
                    "supplier": self.bad_lot_supplier,
                    "defect_type": c.bad_lot_defect,
                    "category": category[c.bad_lot_defect],
                    "added_probability": c.bad_lot_added_p,
                    "level": cells.spec.product,
                    "batches": [cells.batch_uids[b] for b in bad_batches],
                    "exposed_units": int(in_bad_lot.sum()),
                    "defective_units": int((cell_q.fired[c.bad_lot_defect] & in_bad_lot).sum()),
                    "exposed_modules": int(module_exposed.sum()),
                    "exposed_packs": int(pack_exposed.sum()),
                }
            )
        step = modules.spec.steps[drift["step"]]
        par = next(p for p in step.params if p.uid == c.drift_parameter)
        if c.drift_amount != 0 and c.weak_max_p > 0:
            w0, w1 = drift["window"]
            runs = [f"RUN-{modules.batch_uids[b]}-{step.sequence * 10}" for b in drift["batches"]]
            values = modules.actuals[c.drift_parameter]
            causes.append(
                {
                    "id": "weld-drift",
                    "kind": "parameter_drift",
                    "uid": c.drift_machine,
                    "parameter": c.drift_parameter,
                    "step": step.uid,
                    "window": {"start": iso(w0)[0], "end": iso(w1)[0]},
                    "drift": c.drift_amount,
                    "lsl": par.lsl,
                    "usl": par.usl,
                    "defect_type": c.drift_defect,
                    "category": category[c.drift_defect],
                    "level": modules.spec.product,
                    "runs": runs,
                    "runs_out_of_spec": [
                        r
                        for r, b in zip(runs, drift["batches"], strict=True)
                        if not par.lsl <= values[b] <= par.usl
                    ],
                    "batches": [modules.batch_uids[b] for b in drift["batches"]],
                }
            )
        if c.shift_added_p > 0:
            causes.append(
                {
                    "id": "night-fastening",
                    "kind": "shift",
                    "uid": c.shift,
                    "step": c.shift_step,
                    "defect_type": c.shift_defect,
                    "category": category[c.shift_defect],
                    "added_probability": c.shift_added_p,
                    "level": packs.spec.product,
                    "exposed_units": int(night.sum()),
                }
            )
        noise: list[dict[str, Any]] = []
        if c.bad_lot_added_p > 0:
            noise.append(
                {
                    "kind": "co_exposed_machine",
                    "uid": c.co_exposed_machine,
                    "why": "stacked every cell batch of the bad lot, and others; no effect "
                    "of its own",
                }
            )
        noise += [
            {
                "kind": "baseline",
                "rates": dict(c.baseline),
                "why": "every defect type occurs at a low base rate everywhere",
            },
            {
                "kind": "parameter_noise",
                "why": "all other parameters vary around target with Cpk 1.33 and have no "
                "effect on defects",
            },
            {
                "kind": "no_fault_found",
                "complaints": [
                    u
                    for u, n in zip(complaints["uids"], complaints["no_fault_found"], strict=True)
                    if n
                ],
                "why": "complaints about good packs",
            },
        ]
        self.plant.truth = {
            "format": "sqems-ground-truth",
            "version": 1,
            "shape": "battery",
            "seed": self.spec.seed,
            "units": self.spec.units,
            "causes": causes,
            "noise": noise,
            "counts": {
                "cells": len(cells.unit_batch),
                "modules": len(modules.unit_batch),
                "packs": len(packs.unit_batch),
                "cells_defective": int(cell_q.defective.sum()),
                "cells_scrapped_at_test": int(cell_q.detected.sum()),
                "modules_defective": int(module_q.defective.sum()),
                "modules_scrapped_at_eol": int(module_q.detected.sum()),
                "packs_defective": int(pack_q.defective.sum()),
                "packs_scrapped_at_eol": int(pack_q.detected.sum()),
                "packs_escaped": int(pack_q.escaped.sum()),
                "packs_shipped": len(shipped["units"]),
                "complaints": len(complaints["uids"]),
                "no_fault_found": int(sum(complaints["no_fault_found"])),
            },
        }
        # one row per truly defective unit (a defect of its own or in a part it was built
        # from), with the defect types it carries, its own level's first
        self.plant.truth_units = defective_units(
            lines, qualities, bl.LEVEL_DEFECTS, shipped["units"]
        )
