"""A deterministic synthetic plant with planted quality causes.

``generate(PlantSpec(units=10_000, seed=7))`` builds the whole genealogy of a two-line
plant (suppliers → lots → batches → process runs → boards → drives → shipments →
customers, with inspections, defects and complaints) as column tables, and a ground
truth naming the causes it planted:

* a bad resin lot whose housings crack, all of whose batches were moulded on one
  machine (that machine is *co-exposed noise*, not a cause);
* a reflow oven whose peak temperature drifts over a window until it leaves the spec,
  leaving solder voids on boards that surface in drives downstream;
* a night-shift effect at shaft press-fit;
* baseline defect rates of every type, parameter noise and no-fault-found complaints.

The same spec and seed give the same plant, byte for byte. Per-unit work is vectorised
with numpy so a million units take seconds.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sqems.datasets import emit, layout
from sqems.datasets import master_data as md
from sqems.datasets.battery_layout import BatteryCauses
from sqems.datasets.lots import emit_lots
from sqems.datasets.pump_layout import PumpCauses
from sqems.datasets.schedule import schedule
from sqems.datasets.tables import Table, iso
from sqems.errors import ValidationFailed

MIN_UNITS = 1_000
MAX_UNITS = 1_000_000


PlantShape = Literal["drives", "battery", "pump"]
"""The plants the generator builds: ``drives`` (boards into servo drives, two lines),
``battery`` (cells into modules into packs, three lines) or ``pump`` (boards and motor
modules into infusion pumps at a site in America/Chicago, with calibration and
qualification records)."""


class PlantSpec(BaseModel):
    """What to generate: the plant's ``shape`` (``drives``, the default two-line plant;
    ``battery``, cells into modules into packs, see :mod:`sqems.datasets.battery`;
    ``pump``, infusion pumps, see :mod:`sqems.datasets.pump`), its size in units of every
    level, and the seed."""

    model_config = ConfigDict(frozen=True)

    shape: PlantShape = "drives"

    units: int = Field(default=10_000, ge=MIN_UNITS, le=MAX_UNITS)
    seed: int = Field(default=7, ge=0)
    start: datetime = Field(default=datetime.fromisoformat(layout.START))


@dataclass(slots=True)
class Plant:
    spec: PlantSpec
    nodes: dict[str, Table] = field(default_factory=dict)
    edges: dict[str, Table] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)
    truth_units: Table = field(default_factory=Table)

    def add_nodes(self, label: str, **columns: Any) -> None:
        self._add(self.nodes, label, columns)

    def add_edges(self, type_: str, **columns: Any) -> None:
        self._add(self.edges, type_, columns)

    @staticmethod
    def _add(into: dict[str, Table], key: str, columns: dict[str, Any]) -> None:
        table = Table({k: list(v) for k, v in columns.items()})
        if key in into:
            into[key].extend(table)
        else:
            into[key] = table

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "nodes": {k: len(v) for k, v in sorted(self.nodes.items())},
            "edges": {k: len(v) for k, v in sorted(self.edges.items())},
        }


@dataclass(slots=True)
class _Line:
    """One line's production, as arrays indexed by batch or by unit."""

    spec: layout.LineSpec
    batch_uids: list[str]
    sizes: np.ndarray
    starts: np.ndarray
    duration: np.ndarray
    run_starts: np.ndarray  # (batch, step)
    machines: np.ndarray  # (batch, step) index into step.machines
    shifts: np.ndarray  # (batch, step) index into SHIFTS
    actuals: dict[str, np.ndarray]  # parameter uid → per batch
    lots: dict[str, np.ndarray]  # material → lot index per batch
    unit_batch: np.ndarray  # batch index of each unit
    unit_time: np.ndarray  # produced_at of each unit
    serials: list[str] = field(default_factory=list)
    lot_suppliers: dict[str, np.ndarray] = field(default_factory=dict)  # material → per lot
    lot_uids: dict[str, list[str]] = field(default_factory=dict)  # material → per lot

    def unit_suppliers(self) -> dict[str, np.ndarray]:
        """The supplier of the lot each unit was made from, by material."""
        return {m: self.lot_suppliers[m][self.lots[m][self.unit_batch]] for m in self.lots}


def _shift_of(seconds: np.ndarray) -> np.ndarray:
    """Index into ``layout.SHIFTS`` of the shift each time (UTC) falls in."""
    hour = (seconds // 3600) % 24
    starts = [layout.SHIFT_START_HOUR[s] for s in layout.SHIFTS]
    shift = np.full(hour.shape, len(starts) - 1)  # the last shift runs past midnight
    for index, (begin, end) in enumerate(itertools.pairwise(starts)):
        shift[(hour >= begin) & (hour < end)] = index
    return shift


def batch_baseline(
    rate: float, unit_batch: np.ndarray, log_sd: float, seed: int, key: str
) -> float | np.ndarray:
    """The baseline ``rate`` of each unit: ``rate`` itself without batch-to-batch
    variation, else the rate with its log-odds moved by one normal draw (SD ``log_sd``)
    per batch, drawn from a generator of its own (seeded by the plant's seed and ``key``)
    so the rest of the plant draws exactly what it draws without it."""
    if log_sd <= 0.0:
        return rate
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    shift = rng.normal(0.0, log_sd, int(unit_batch.max(initial=-1)) + 1)
    logit = math.log(rate / (1.0 - rate)) + shift
    rates = np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=float)
    return np.asarray(rates[unit_batch])


def draw_lot_spans(rng: np.random.Generator, n_batches: int) -> list[int]:
    """How many consecutive batches each lot of one material feeds, in order: 3 to 8
    (``layout.LOT_SPAN_BATCHES``), the last cut to end at ``n_batches``."""
    lo, hi = layout.LOT_SPAN_BATCHES
    spans: list[int] = []
    while sum(spans) < n_batches:
        spans.append(int(rng.integers(lo, hi + 1)))
    spans[-1] -= sum(spans) - n_batches
    return spans


def draw_actuals(
    rng: np.random.Generator, par: layout.ParamSpec, machines: np.ndarray, causes: layout.Causes
) -> np.ndarray:
    """One actual of parameter ``par`` per run, the run on machine ``machines[i]`` (uids):
    normal around the target with the spread that gives Cpk 1.33, and on the planted
    wide machine (``causes.wide_machine``) that spread times ``causes.wide_factor``."""
    values = rng.normal(par.target, par.sigma, len(machines))
    if causes.wide_machine is not None and causes.wide_parameter == par.uid:
        on = np.asarray(machines) == causes.wide_machine
        values[on] = par.target + (values[on] - par.target) * causes.wide_factor
    return values


def bad_supplier_units(
    causes: layout.Causes, defect_type: str, unit_suppliers: dict[str, np.ndarray]
) -> np.ndarray | None:
    """Which units were made from the planted bad supplier's lots of a material whose
    defect type (``layout.MATERIAL_DEFECTS``) is ``defect_type``; None when no bad
    supplier is planted or no such material is among ``unit_suppliers`` (material →
    the supplier uid of each unit's lot)."""
    if causes.bad_supplier is None:
        return None
    mask: np.ndarray | None = None
    for material, suppliers in unit_suppliers.items():
        if layout.MATERIAL_DEFECTS.get(material) != defect_type:
            continue
        from_bad = np.asarray(suppliers) == causes.bad_supplier
        mask = from_bad if mask is None else mask | from_bad
    return mask


def defect_probability(
    causes: layout.Causes,
    defect_type: str,
    base: float | np.ndarray,
    n: int,
    *,
    in_bad_lot: np.ndarray | None = None,
    night: np.ndarray | None = None,
    bad_supplier: np.ndarray | None = None,
) -> np.ndarray:
    """The probability that each of ``n`` units has ``defect_type``: its baseline
    ``base`` plus the planted effects that raise that type and apply to the unit (made
    from the bad lot, at the planted shift's runs of its step, from the bad supplier's
    lots); a mask left None does not apply."""
    p = base
    if in_bad_lot is not None and defect_type == causes.bad_lot_defect:
        p = p + causes.bad_lot_added_p * in_bad_lot
    if night is not None and defect_type == causes.shift_defect:
        p = p + causes.shift_added_p * night
    if bad_supplier is not None:
        p = p + causes.bad_supplier_added_p * bad_supplier
    return np.broadcast_to(p, (n,))


def hot_reflow_p(causes: layout.Causes, peak: np.ndarray) -> np.ndarray:
    """The probability of a void that a board's reflow peak temperature ``peak`` adds:
    none up to ``void_threshold``, rising linearly to ``void_max_p`` at ``void_full_at``."""
    c = causes
    excess = np.clip((peak - c.void_threshold) / (c.void_full_at - c.void_threshold), 0, 1)
    return np.asarray(c.void_max_p * excess)


def check_causes(causes: layout.Causes) -> None:
    """Refuse planted supplier and machine facts the drives layout cannot honour."""
    if causes.bad_supplier is not None:
        supplied = [
            m
            for m, (_n, _u, _q, sups) in layout.MATERIALS.items()
            if causes.bad_supplier in sups and m in layout.MATERIAL_DEFECTS
        ]
        if not supplied:
            raise ValidationFailed(
                f"bad_supplier {causes.bad_supplier!r} supplies no material with a "
                f"material defect type ({', '.join(sorted(layout.MATERIAL_DEFECTS))}): "
                "name a supplier of one of them, e.g. SUP-08 for MAT-RESIN"
            )
        if not 0.0 <= causes.bad_supplier_added_p <= 1.0:
            raise ValidationFailed(
                f"bad_supplier_added_p {causes.bad_supplier_added_p} is not a probability: "
                "give a value in [0, 1]"
            )
    if causes.wide_machine is not None:
        step = next(
            (st for ln in layout.LINES for st in ln.steps if causes.wide_machine in st.machines),
            None,
        )
        if step is None:
            raise ValidationFailed(
                f"wide_machine {causes.wide_machine!r} is no machine of the drives plant: "
                "name one of its machines, e.g. M-SCREW-2"
            )
        params = [par.uid for par in step.params]
        if causes.wide_parameter not in params:
            raise ValidationFailed(
                f"wide_parameter {causes.wide_parameter!r} is not recorded on "
                f"{causes.wide_machine} (step {step.uid}): give one of {params}"
            )
        if not causes.wide_factor > 0.0:
            raise ValidationFailed(
                f"wide_factor {causes.wide_factor} must be positive (1 leaves the spread as is)"
            )


def generate(
    spec: PlantSpec, causes: layout.Causes | BatteryCauses | PumpCauses | None = None
) -> Plant:
    """Build the plant ``spec`` describes, with ``causes`` planted (defaults: the
    shape's layout's; ``layout.Causes`` for drives, ``BatteryCauses`` for a battery,
    ``PumpCauses`` for a pump plant)."""
    if spec.shape == "pump":
        from sqems.datasets.pump import generate_pump  # noqa: PLC0415

        if causes is not None and not isinstance(causes, PumpCauses):
            raise ValidationFailed(
                f"a pump plant takes PumpCauses, got {type(causes).__name__}: pass "
                "PumpCauses() (or PumpCauses.none() to plant no effect)"
            )
        return generate_pump(spec, causes)
    if spec.shape == "battery":
        # battery.py builds on this module (Plant, PlantSpec), so it is imported late
        from sqems.datasets.battery import generate_battery  # noqa: PLC0415

        if causes is not None and not isinstance(causes, BatteryCauses):
            raise ValidationFailed(
                f"a battery plant takes BatteryCauses, got {type(causes).__name__}: pass "
                "BatteryCauses() (or BatteryCauses.none() to plant nothing)"
            )
        return generate_battery(spec, causes)
    if causes is not None and not isinstance(causes, layout.Causes):
        raise ValidationFailed(
            f"a drives plant takes layout.Causes, got {type(causes).__name__}: pass "
            "layout.Causes(), or PlantSpec(shape='battery') for BatteryCauses"
        )
    causes = causes or layout.Causes()
    check_causes(causes)
    return _Generator(spec, causes).run()


_LOADS = emit.Loads(fewest=80, most=240, carriers=("road", "air", "sea"), digits=6)
"""Drives leave 80 to 240 to a load, by road, air and sea in turn."""


class _Generator:
    def __init__(self, spec: PlantSpec, causes: layout.Causes) -> None:
        self.spec = spec
        self.c = causes
        self.rng = np.random.default_rng(spec.seed)
        self.t0 = int(spec.start.timestamp())
        self.plant = Plant(spec)
        self.n_boards = math.ceil(spec.units * 0.54)
        self.n_drives = spec.units - self.n_boards
        self.defect_rows = emit.defect_rows()

    # --- orchestration -------------------------------------------------------------------

    def run(self) -> Plant:
        self._master_data()
        boards = self._schedule(layout.BOARD_LINE, ready=None)
        self._assign_lots(boards)
        self._pick_machines(boards, forced={})
        drift = self._board_actuals(boards)
        board_state = self._board_quality(boards)
        surviving = np.flatnonzero(~board_state["detected"])
        if len(surviving) < self.n_drives:
            raise RuntimeError("board line scrapped more boards than the drives need")
        ready = boards.unit_time[surviving[: self.n_drives]] + 1800
        drives = self._schedule(layout.ASSEMBLY_LINE, ready=ready)
        bad_lot, bad_batches = self._assign_lots(drives, plant_bad_lot=True)
        mould = layout.ASSEMBLY_LINE.steps[0]
        forced = {(b, 0): mould.machines.index(self.c.co_exposed_machine) for b in bad_batches}
        self._pick_machines(drives, forced=forced)
        self._plain_actuals(drives)
        self._emit_line(boards, "SN-B")
        self._emit_line(drives, "SN-D")
        drive_state = self._drive_quality(drives, board_state, surviving, bad_batches)
        self.plant.add_edges(
            "ASSEMBLED_INTO",
            src=[boards.serials[i] for i in surviving[: self.n_drives]],
            dst=drives.serials,
        )
        board_caught = {
            "DT-SOLDER-VOID": board_state["void"] & board_state["detected"],
            "DT-SOLDER-BRIDGE": board_state["bridge"] & board_state["detected"],
        }
        self._emit_units(boards, board_caught)
        self._emit_units(drives, drive_state["caught"])
        shipped = emit.ship(self.plant, self.rng, drives, drive_state["detected"], _LOADS)
        self._complaints(drives, drive_state, shipped)
        emit.emit_defects(self.plant, self.defect_rows, digits=7)
        self._truth(boards, drives, board_state, drive_state, shipped, drift, bad_lot, bad_batches)
        return self.plant

    # --- master data ---------------------------------------------------------------------

    def _master_data(self) -> None:
        p = self.plant
        site_uid, site_name = layout.SITE
        p.add_nodes("Site", uid=[site_uid], name=[site_name], country=["FR"], timezone=["UTC"])
        md.emit_catalogue(
            p,
            layout.SUPPLIERS,
            layout.MATERIALS,
            ("MAT-RESIN", "MAT-MCU"),
            layout.DEFECT_TYPES,
            layout.ORIGINS,
        )
        for line_no, line in enumerate(layout.LINES):
            kind = "subassembly" if line is layout.BOARD_LINE else "finished"
            md.emit_line(p, line, site_uid, "C", kind, layout.MATERIALS)
            md.emit_steps(p, line, line_no)
        p.add_edges(
            "USES",
            src=[layout.ASSEMBLY_LINE.product],
            dst=[layout.BOARD_LINE.product],
            quantity=["1"],
        )
        md.emit_operators(p)
        first = ["Atlas", "Borealis", "Cobalt", "Delta", "Ember", "Fjord", "Granite", "Helix"]
        second = ["Motion", "Robotics", "Automation", "Systems", "Drives", "Industries"]
        countries = ["FR", "DE", "US", "JP", "IT", "ES", "GB", "PL", "SE", "CN"]
        md.emit_customers(p, first, second, stride=5, countries=countries)

    # --- production ----------------------------------------------------------------------

    def _schedule(self, line: layout.LineSpec, ready: np.ndarray | None) -> _Line:
        """The line's batches from the plant's start; on the assembly line a batch also
        waits for its last board."""
        n_units = self.n_boards if line is layout.BOARD_LINE else self.n_drives
        sch = schedule(line, n_units, self.t0, line.cycle_s, ready)
        tag = "PCB" if line is layout.BOARD_LINE else "ASM"
        n_batches, n_steps = sch.run_starts.shape
        return _Line(
            line,
            [f"WO-{tag}-{j + 1:05d}" for j in range(n_batches)],
            sch.sizes,
            sch.starts,
            sch.duration,
            sch.run_starts,
            np.zeros((n_batches, n_steps), dtype=np.int64),
            _shift_of(sch.run_starts),
            {},
            {},
            sch.unit_batch,
            sch.unit_time,
        )

    def _assign_lots(
        self, line: _Line, *, plant_bad_lot: bool = False
    ) -> tuple[str | None, list[int]]:
        """Give every batch one lot of each material; a lot feeds 3 to 8 consecutive batches."""
        p = self.plant
        n = len(line.batch_uids)
        bad_lot: str | None = None
        bad_batches: list[int] = []
        for mat in line.spec.materials:
            _name, unit, per_unit, suppliers = layout.MATERIALS[mat]
            lots = emit_lots(
                p,
                self.rng,
                (line.batch_uids, line.starts, line.sizes),
                (mat, unit, per_unit, suppliers),
                draw_lot_spans(self.rng, n),
                digits=(5, 3),
            )
            line.lots[mat] = lots.lot_of_batch
            line.lot_suppliers[mat] = np.array([suppliers[s] for s in lots.supplier], dtype=object)
            line.lot_uids[mat] = lots.uids
            if plant_bad_lot and mat == self.c.bad_lot_material:
                k = lots.at(self.c.bad_lot_position)
                bad_lot, bad_batches = lots.uids[k], lots.batches_of(k)
        return bad_lot, bad_batches

    def _pick_machines(self, line: _Line, forced: dict[tuple[int, int], int]) -> None:
        for s, step in enumerate(line.spec.steps):
            line.machines[:, s] = self.rng.integers(0, len(step.machines), len(line.batch_uids))
        for (b, s), m in forced.items():
            line.machines[b, s] = m

    def _plain_actuals(self, line: _Line) -> None:
        for s, step in enumerate(line.spec.steps):
            machines = np.asarray(step.machines, dtype=object)[line.machines[:, s]]
            for par in step.params:
                line.actuals[par.uid] = draw_actuals(self.rng, par, machines, self.c)

    def _board_actuals(self, line: _Line) -> dict[str, Any]:
        """Board parameters, with the planted reflow drift on one oven."""
        self._plain_actuals(line)
        c = self.c
        s = next(i for i, st in enumerate(line.spec.steps) if c.drift_machine in st.machines)
        step = line.spec.steps[s]
        m = step.machines.index(c.drift_machine)
        begin, end = int(line.starts[0]), int(line.run_starts[-1, -1] + line.duration[-1])
        w0 = begin + c.drift_window[0] * (end - begin)
        w1 = begin + c.drift_window[1] * (end - begin)
        t = line.run_starts[:, s].astype(float)
        ramp = np.clip((t - w0) / (w1 - w0), 0.0, 1.0) * ((t >= w0) & (t <= w1))
        on = line.machines[:, s] == m
        line.actuals[c.drift_parameter] = (
            line.actuals[c.drift_parameter] + c.drift_amount * ramp * on
        )
        drifting = np.flatnonzero(on & (ramp > 0))
        return {"window": (int(w0), int(w1)), "step": s, "batches": drifting}

    def _emit_line(self, line: _Line, serial_prefix: str) -> None:
        extras = emit.roster_operators(self.plant, self.rng, line)
        emit.emit_production(self.plant, line, (serial_prefix, 7), extras)

    # --- quality -------------------------------------------------------------------------

    def _draw(self, p: np.ndarray) -> np.ndarray:
        return self.rng.random(len(p)) < p

    def _baseline(
        self, line: _Line, rates: tuple[tuple[str, float], ...]
    ) -> dict[str, float | np.ndarray]:
        """Each defect type's baseline rate for the units of ``line``, varied from batch
        to batch when the causes ask for it."""
        return {
            t: batch_baseline(
                rate, line.unit_batch, self.c.batch_log_sd, self.spec.seed, f"{line.spec.uid}/{t}"
            )
            for t, rate in rates
        }

    def _board_quality(self, line: _Line) -> dict[str, np.ndarray]:
        c = self.c
        base = self._baseline(line, c.baseline)
        peak = line.actuals[c.drift_parameter][line.unit_batch]
        n = len(peak)
        suppliers = line.unit_suppliers()
        void = self._draw(
            defect_probability(
                c,
                "DT-SOLDER-VOID",
                base["DT-SOLDER-VOID"] + hot_reflow_p(c, peak),
                n,
                bad_supplier=bad_supplier_units(c, "DT-SOLDER-VOID", suppliers),
            )
        )
        bridge = self._draw(
            defect_probability(
                c,
                "DT-SOLDER-BRIDGE",
                base["DT-SOLDER-BRIDGE"],
                n,
                bad_supplier=bad_supplier_units(c, "DT-SOLDER-BRIDGE", suppliers),
            )
        )
        defective = void | bridge
        detected = defective & self._draw(np.full(len(peak), c.aoi_detects))
        return {
            "void": void,
            "bridge": bridge,
            "defective": defective,
            "detected": detected,
            "escaped": defective & ~detected,
        }

    def _drive_quality(
        self,
        line: _Line,
        board_state: dict[str, np.ndarray],
        surviving: np.ndarray,
        bad_batches: list[int],
    ) -> dict[str, Any]:
        c = self.c
        n = len(line.unit_batch)
        base = self._baseline(line, c.baseline)
        board_of = surviving[:n]
        in_bad_lot = np.isin(line.unit_batch, bad_batches)
        press = next(i for i, st in enumerate(line.spec.steps) if st.uid == c.shift_step)
        night = line.shifts[line.unit_batch, press] == layout.SHIFTS.index(c.shift)
        suppliers = line.unit_suppliers()
        from_bad_supplier = {t: bad_supplier_units(c, t, suppliers) for t in layout.DRIVE_DEFECTS}
        fired = {
            t: self._draw(
                defect_probability(
                    c,
                    t,
                    base[t],
                    n,
                    in_bad_lot=in_bad_lot,
                    night=night,
                    bad_supplier=from_bad_supplier[t],
                )
            )
            for t in layout.DRIVE_DEFECTS
        }
        board_void = board_state["void"][board_of] & board_state["escaped"][board_of]
        board_bridge = board_state["bridge"][board_of] & board_state["escaped"][board_of]
        latent = board_void | board_bridge
        detect = dict(c.eol_detects)
        caught = {t: f & self._draw(np.full(n, detect[t])) for t, f in fired.items()}
        latent_caught = latent & self._draw(np.full(n, c.eol_detects_board_defect))
        caught["DT-SOLDER-VOID"] = board_void & latent_caught
        caught["DT-SOLDER-BRIDGE"] = board_bridge & latent_caught & ~board_void
        detected = np.zeros(n, dtype=bool)
        for mask in caught.values():
            detected |= mask
        defective = latent.copy()
        for mask in fired.values():
            defective |= mask
        # the defect a customer would see first: a drive-level one, else the board's
        first_type = np.full(n, "", dtype=object)
        for t in ("DT-SOLDER-BRIDGE", "DT-SOLDER-VOID"):
            first_type[(board_bridge if t == "DT-SOLDER-BRIDGE" else board_void)] = t
        for t in reversed(list(fired)):
            first_type[fired[t]] = t
        return {
            "fired": fired,
            "board_void": board_void,
            "board_bridge": board_bridge,
            "caught": caught,
            "detected": detected,
            "defective": defective,
            "escaped": defective & ~detected,
            "first_type": first_type,
            "in_bad_lot": in_bad_lot,
            "night": night,
            "from_bad_supplier": from_bad_supplier,
            "board_of": board_of,
        }

    def _emit_units(self, line: _Line, caught: dict[str, np.ndarray]) -> None:
        """Units with their status, the batch inspection, and a defect per caught type."""
        detected = np.zeros(len(line.unit_batch), dtype=bool)
        for mask in caught.values():
            detected |= mask
        on_drive = line.spec is layout.ASSEMBLY_LINE

        def note(t: str) -> str:
            board_fault = on_drive and t in layout.BOARD_DEFECTS
            return "end-of-line test failure; board fault" if board_fault else ""

        inspection = emit.Inspection(fail_share=0.05, image_refs=True, note=note)
        emit.emit_units(self.plant, self.defect_rows, line, caught, detected, inspection)

    # --- field ---------------------------------------------------------------------------

    def _complaints(self, line: _Line, state: dict[str, Any], shipped: dict[str, Any]) -> None:
        c = self.c
        model = emit.ComplaintModel(
            c.complaint_p,
            c.no_fault_found_p,
            c.complaint_lag_days,
            layout.DRIVE_DEFECTS,
            lambda _t: "major",
            {t: d.name for t, d in layout.DEFECT_TYPES.items()},
            digits=6,
        )
        made = emit.complain(
            self.plant, self.rng, line, shipped, state["escaped"], state["first_type"], model
        )
        units = shipped["units"]
        self._complaint_truth = {
            "uids": made.uids,
            "units": [line.serials[units[i]] for i in made.idx],
            "no_fault_found": [bool(made.nff[i]) for i in made.idx],
        }

    # --- ground truth ----------------------------------------------------------------------

    def _supplier_truth(
        self,
        boards: _Line,
        drives: _Line,
        board_state: dict[str, np.ndarray],
        drive_state: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """The planted bad supplier (none when off): its lots of each material with a
        material defect type, the units made from them and how many of those have it."""
        c = self.c
        if c.bad_supplier is None:
            return []
        facts: list[dict[str, Any]] = []
        board_fired = {
            "DT-SOLDER-VOID": board_state["void"],
            "DT-SOLDER-BRIDGE": board_state["bridge"],
        }
        no_lot = np.zeros(len(boards.unit_batch), dtype=bool)
        for line, fired, in_bad_lot in (
            (boards, board_fired, no_lot),
            (drives, drive_state["fired"], drive_state["in_bad_lot"]),
        ):
            suppliers = line.unit_suppliers()
            for material in line.spec.materials:
                defect_type = layout.MATERIAL_DEFECTS.get(material)
                if defect_type is None or defect_type not in fired:
                    continue
                exposed = np.asarray(suppliers[material]) == c.bad_supplier
                lots = line.lot_suppliers[material] == c.bad_supplier
                facts.append(
                    {
                        "id": "bad-supplier",
                        "kind": "supplier",
                        "uid": c.bad_supplier,
                        "material": material,
                        "defect_type": defect_type,
                        "category": layout.DEFECT_TYPES[defect_type].category.value,
                        "added_probability": c.bad_supplier_added_p,
                        "lots": [
                            u for u, b in zip(line.lot_uids[material], lots, strict=True) if b
                        ],
                        "exposed_units": int(exposed.sum()),
                        "defective_units": int((fired[defect_type] & exposed).sum()),
                        # the planted bad lot may be one of this supplier's lots: its
                        # units carry both effects
                        "exposed_in_bad_lot": int((exposed & in_bad_lot).sum()),
                    }
                )
        return facts

    def _wide_truth(self, boards: _Line, drives: _Line) -> list[dict[str, Any]]:
        """The planted wide machine (none when off): its parameter's spread and the runs
        it made outside the released limits. It raises no defect of its own."""
        c = self.c
        if c.wide_machine is None:
            return []
        for line in (boards, drives):
            for s, step in enumerate(line.spec.steps):
                if c.wide_machine not in step.machines:
                    continue
                par = next(p for p in step.params if p.uid == c.wide_parameter)
                on = line.machines[:, s] == step.machines.index(c.wide_machine)
                values = line.actuals[par.uid]
                outside = on & ((values < par.lsl) | (values > par.usl))
                runs = [f"RUN-{b}-{step.sequence * 10}" for b in line.batch_uids]
                return [
                    {
                        "id": "wide-machine",
                        "kind": "machine_spread",
                        "uid": c.wide_machine,
                        "step": step.uid,
                        "parameter": par.uid,
                        "factor": c.wide_factor,
                        "sigma": par.sigma * c.wide_factor,
                        "plant_sigma": par.sigma,
                        "defect_type": None,
                        "runs": int(on.sum()),
                        "runs_out_of_spec": [r for r, o in zip(runs, outside, strict=True) if o],
                        "why": "the parameter's run-to-run spread on this machine is wider; "
                        "it cannot hold a tolerance the other machines hold",
                    }
                ]
        return []

    def _truth(
        self,
        boards: _Line,
        drives: _Line,
        board_state: dict[str, np.ndarray],
        drive_state: dict[str, Any],
        shipped: dict[str, Any],
        drift: dict[str, Any],
        bad_lot: str | None,
        bad_batches: list[int],
    ) -> None:
        c = self.c
        w0, w1 = drift["window"]
        s = drift["step"]
        par = next(p for p in layout.BOARD_LINE.steps[s].params if p.uid == c.drift_parameter)
        drift_runs = [
            f"RUN-{boards.batch_uids[b]}-{layout.BOARD_LINE.steps[s].sequence * 10}"
            for b in drift["batches"]
        ]
        out_of_spec = [
            r
            for r, b in zip(drift_runs, drift["batches"], strict=True)
            if boards.actuals[c.drift_parameter][b] > par.usl
        ]
        complaint_truth = self._complaint_truth
        self.plant.truth = {
            "format": "sqems-ground-truth",
            "version": 1,
            "shape": self.spec.shape,
            "seed": self.spec.seed,
            "units": self.spec.units,
            "causes": [
                {
                    "id": "bad-lot",
                    "kind": "material_lot",
                    "uid": bad_lot,
                    "material": c.bad_lot_material,
                    "defect_type": c.bad_lot_defect,
                    "category": layout.DEFECT_TYPES[c.bad_lot_defect].category.value,
                    "added_probability": c.bad_lot_added_p,
                    "batches": [drives.batch_uids[b] for b in bad_batches],
                    "exposed_units": int(drive_state["in_bad_lot"].sum()),
                    "defective_units": int(
                        (drive_state["fired"][c.bad_lot_defect] & drive_state["in_bad_lot"]).sum()
                    ),
                },
                {
                    "id": "reflow-drift",
                    "kind": "parameter_drift",
                    "uid": c.drift_machine,
                    "parameter": c.drift_parameter,
                    "window": {"start": iso(w0)[0], "end": iso(w1)[0]},
                    "drift": c.drift_amount,
                    "usl": par.usl,
                    "defect_type": c.drift_defect,
                    "category": layout.DEFECT_TYPES[c.drift_defect].category.value,
                    "runs": drift_runs,
                    "runs_out_of_spec": out_of_spec,
                    "batches": [boards.batch_uids[b] for b in drift["batches"]],
                },
                {
                    "id": "night-press-fit",
                    "kind": "shift",
                    "uid": c.shift,
                    "step": c.shift_step,
                    "defect_type": c.shift_defect,
                    "category": layout.DEFECT_TYPES[c.shift_defect].category.value,
                    "added_probability": c.shift_added_p,
                    "exposed_units": int(drive_state["night"].sum()),
                },
                *self._supplier_truth(boards, drives, board_state, drive_state),
                *self._wide_truth(boards, drives),
            ],
            "noise": [
                {
                    "kind": "co_exposed_machine",
                    "uid": c.co_exposed_machine,
                    "why": "moulded every batch of the bad lot, and others; no effect of its own",
                },
                {
                    "kind": "baseline",
                    "rates": dict(c.baseline),
                    "why": "every defect type occurs at a low base rate everywhere",
                },
                {
                    "kind": "parameter_noise",
                    "why": "all other parameters vary around target with Cpk 1.33 and have "
                    "no effect on defects",
                },
                {
                    "kind": "no_fault_found",
                    "complaints": [
                        u
                        for u, n in zip(
                            complaint_truth["uids"], complaint_truth["no_fault_found"], strict=True
                        )
                        if n
                    ],
                    "why": "complaints about good units",
                },
            ],
            "counts": {
                "boards": len(boards.unit_batch),
                "drives": len(drives.unit_batch),
                "boards_defective": int(board_state["defective"].sum()),
                "boards_scrapped_at_aoi": int(board_state["detected"].sum()),
                "drives_defective": int(drive_state["defective"].sum()),
                "drives_scrapped_at_eol": int(drive_state["detected"].sum()),
                "drives_escaped": int(drive_state["escaped"].sum()),
                "drives_shipped": len(shipped["units"]),
                "complaints": len(complaint_truth["uids"]),
                "no_fault_found": int(sum(complaint_truth["no_fault_found"])),
            },
        }
        # one row per truly defective unit, with the causes that fired on it
        b_serials, d_serials = boards.serials, drives.serials
        rows: dict[str, list[str]] = {"uid": [], "defect_types": [], "detected": [], "shipped": []}
        for i in np.flatnonzero(board_state["defective"]):
            types = [
                t
                for t, k in (("DT-SOLDER-VOID", "void"), ("DT-SOLDER-BRIDGE", "bridge"))
                if board_state[k][i]
            ]
            rows["uid"].append(b_serials[i])
            rows["defect_types"].append(";".join(types))
            rows["detected"].append(str(bool(board_state["detected"][i])).lower())
            rows["shipped"].append("false")
        shipped_set = np.zeros(len(d_serials), dtype=bool)
        shipped_set[shipped["units"]] = True
        fired = drive_state["fired"]
        for i in np.flatnonzero(drive_state["defective"]):
            types = [t for t in fired if fired[t][i]]
            if drive_state["board_void"][i]:
                types.append("DT-SOLDER-VOID")
            if drive_state["board_bridge"][i]:
                types.append("DT-SOLDER-BRIDGE")
            rows["uid"].append(d_serials[i])
            rows["defect_types"].append(";".join(types))
            rows["detected"].append(str(bool(drive_state["detected"][i])).lower())
            rows["shipped"].append(str(bool(shipped_set[i])).lower())
        self.plant.truth_units = Table(dict(rows))
