"""The records every plant shape writes the same way once its units are made: units with
their batch inspections and defects, shipments of the finished units that passed, and the
customer complaints about them.

The drives, battery and pump generators each decide what their units carry and what their
tests catch; these functions turn that into Unit, Inspection, Defect, Shipment and
Complaint nodes with their edges. What differs between shapes (identifier widths, load
sizes, carriers, a failing inspection's share, severities) is a parameter. The random
draws happen in the order the generators made them, so a seed gives the same plant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sqems.datasets import layout
from sqems.datasets.layout import DAY, LineSpec
from sqems.datasets.tables import fmt, iso

if TYPE_CHECKING:
    from sqems.datasets.plant import Plant


class Production(Protocol):
    """What the emitters read of a line's production (every shape's line has it)."""

    spec: LineSpec
    batch_uids: list[str]
    sizes: np.ndarray
    starts: np.ndarray
    duration: np.ndarray
    run_starts: np.ndarray  # (batch, step)
    machines: np.ndarray  # (batch, step) index into step.machines
    shifts: np.ndarray  # (batch, step) index into SHIFTS
    actuals: dict[str, np.ndarray]  # parameter uid → per batch
    unit_batch: np.ndarray  # batch index of each unit
    unit_time: np.ndarray  # produced_at of each unit
    serials: list[str]


StepExtras = Callable[[int, list[str]], None]
"""What a shape adds to the runs of one step (step index, run uids): who operated them
and the like."""


def emit_production(
    plant: Plant, line: Production, serials: tuple[str, int], step_extras: StepExtras
) -> None:
    """The line's batches, each step's process runs (on their machines, in their shifts,
    ``step_extras`` for what the shape adds, then the parameters they recorded), and the
    units each batch produced, numbered with ``serials`` (prefix, digits) and kept in
    ``line.serials``."""
    spec = line.spec
    n = len(line.batch_uids)
    plant.add_nodes(
        "Batch",
        uid=line.batch_uids,
        started_at=iso(line.starts),
        ended_at=iso(line.run_starts[:, -1] + line.duration),
        quantity=[str(int(x)) for x in line.sizes],
        status=["completed"] * n,
    )
    plant.add_edges("OF_PRODUCT", src=line.batch_uids, dst=[spec.product] * n)
    for s, step in enumerate(spec.steps):
        runs = [f"RUN-{b}-{step.sequence * 10}" for b in line.batch_uids]
        plant.add_nodes(
            "ProcessRun",
            uid=runs,
            started_at=iso(line.run_starts[:, s]),
            ended_at=iso(line.run_starts[:, s] + line.duration),
            shift=[layout.SHIFTS[i] for i in line.shifts[:, s]],
        )
        plant.add_edges("RAN", src=line.batch_uids, dst=runs)
        plant.add_edges("ON", src=runs, dst=[step.machines[m] for m in line.machines[:, s]])
        plant.add_edges("FOR_STEP", src=runs, dst=[step.uid] * n)
        step_extras(s, runs)
        for par in step.params:
            plant.add_edges(
                "RECORDED",
                src=runs,
                dst=[par.uid] * n,
                value=fmt(line.actuals[par.uid], 3),
                unit=[par.unit] * n,
            )
    prefix, digits = serials
    line.serials = [f"{prefix}{i + 1:0{digits}d}" for i in range(len(line.unit_batch))]
    plant.add_edges("PRODUCED", src=[line.batch_uids[b] for b in line.unit_batch], dst=line.serials)


def roster_operators(plant: Plant, rng: np.random.Generator, line: Production) -> StepExtras:
    """Step extras for a plain roster (``master_data.emit_operators``): each run operated
    by one of its shift's operators, drawn at random."""
    n_ops = layout.OPERATORS_PER_SHIFT
    n = len(line.batch_uids)

    def operated_by(s: int, runs: list[str]) -> None:
        ops = line.shifts[:, s] * n_ops + rng.integers(0, n_ops, n)
        plant.add_edges("OPERATED_BY", src=runs, dst=[f"OP-{o + 1:03d}" for o in ops])

    return operated_by


def defect_rows() -> dict[str, list[Any]]:
    """Empty columns to gather the caught defects of every line in, for
    :func:`emit_defects` to number in the order they were found."""
    return {"found_at": [], "unit": [], "type": [], "inspection": [], "description": []}


@dataclass(frozen=True, slots=True)
class Inspection:
    """How a line's inspection reports: it fails a batch where more than ``fail_share``
    of it was found defective, keeps images (``image_refs``) or not, and describes a
    caught defect type by ``note(type)``."""

    fail_share: float
    image_refs: bool
    note: Callable[[str], str]


def sub_assembly_note(line: Production, own: Sequence[str]) -> Callable[[str], str]:
    """Describes a defect type not of the line's own (``own``) as a failure at its
    inspecting step caused by a sub-assembly; its own types need no description."""
    step = line.spec.steps[inspecting_step(line)]
    note = f"{step.name.lower()} failure; fault in a sub-assembly"
    return lambda t: "" if t in own else note


def emit_units(
    plant: Plant,
    rows: dict[str, list[Any]],
    line: Production,
    caught: Mapping[str, np.ndarray],
    detected: np.ndarray,
    inspection: Inspection,
) -> None:
    """The line's units (scrapped where ``detected``), one inspection per batch at its
    inspecting step, and to ``rows`` a defect per unit and ``caught`` type."""
    plant.add_nodes(
        "Unit",
        uid=line.serials,
        produced_at=iso(line.unit_time),
        status=list(np.where(detected, "scrapped", "good")),
    )
    s = inspecting_step(line)
    step = line.spec.steps[s]
    assert step.inspection is not None
    n = len(line.batch_uids)
    found = np.bincount(line.unit_batch, weights=detected, minlength=n).astype(int)
    uids = [f"INS-{b}" for b in line.batch_uids]
    plant.add_nodes(
        "Inspection",
        uid=uids,
        inspected_at=iso(line.run_starts[:, s] + line.duration),
        method=[step.inspection.value] * n,
        sample_size=[str(int(x)) for x in line.sizes],
        defects_found=[str(int(x)) for x in found],
        verdict=[
            "fail" if f > inspection.fail_share * size else "pass"
            for f, size in zip(found, line.sizes, strict=True)
        ],
        image_ref=[f"images/{u}/" for u in uids] if inspection.image_refs else [""] * n,
    )
    plant.add_edges("INSPECTED", src=uids, dst=line.batch_uids)
    add_defect_rows(rows, line, caught, uids, inspection.note)


def inspecting_step(line: Production) -> int:
    """Index of the line's step that inspects its units."""
    return next(i for i, st in enumerate(line.spec.steps) if st.inspection is not None)


def add_defect_rows(
    rows: dict[str, list[Any]],
    line: Production,
    caught: Mapping[str, np.ndarray],
    inspections: Sequence[str],
    note: Callable[[str], str],
) -> None:
    """A defect row per unit and caught type, found two minutes after the unit was made
    by its batch's inspection, described by ``note(type)``."""
    for t, mask in caught.items():
        idx = np.flatnonzero(mask)
        rows["unit"] += [line.serials[i] for i in idx]
        rows["found_at"] += list(line.unit_time[idx] + 120)
        rows["type"] += [t] * len(idx)
        rows["inspection"] += [inspections[line.unit_batch[i]] for i in idx]
        rows["description"] += [note(t)] * len(idx)


def emit_defects(plant: Plant, rows: dict[str, list[Any]], digits: int) -> None:
    """The gathered defect rows as Defect nodes, numbered (``digits`` wide) in the order
    they were found, a unit's serial breaking ties."""
    order = np.lexsort((np.array(rows["unit"]), np.array(rows["found_at"], dtype=np.int64)))
    uids = [f"DEF-{i + 1:0{digits}d}" for i in range(len(order))]

    def pick(key: str) -> list[Any]:
        return [rows[key][i] for i in order]

    plant.add_nodes(
        "Defect",
        uid=uids,
        found_at=iso(pick("found_at")),
        severity=["major"] * len(uids),
        disposition=["scrap"] * len(uids),
        description=pick("description"),
    )
    plant.add_edges("FOUND_ON", src=uids, dst=pick("unit"))
    plant.add_edges("OF_TYPE", src=uids, dst=pick("type"))
    plant.add_edges("DETECTED_IN", src=uids, dst=pick("inspection"))


@dataclass(frozen=True, slots=True)
class Loads:
    """How a shape ships: the fewest and most units in a load (a last load smaller than
    the fewest stays in the warehouse), the carriers taken in turn, and how many digits
    a shipment's number has."""

    fewest: int
    most: int
    carriers: tuple[str, ...]
    digits: int


def ship(
    plant: Plant, rng: np.random.Generator, line: Production, detected: np.ndarray, loads: Loads
) -> dict[str, Any]:
    """The units that passed, in order, in loads shipped one to three days after the last
    of them was made, to customers drawn with weights 1/rank; returns the shipped unit
    indices, each one's shipment, the shipments' times and customers."""
    ok = np.flatnonzero(~detected)
    sizes: list[int] = []
    while sum(sizes) < len(ok):
        sizes.append(int(rng.integers(loads.fewest, loads.most + 1)))
    sizes[-1] -= sum(sizes) - len(ok)
    if sizes[-1] < loads.fewest:  # the last, partial load stays in the warehouse
        sizes.pop()
    n_ship = len(sizes)
    cut = np.cumsum(sizes)
    units = ok[: int(cut[-1])] if n_ship else ok[:0]
    shipment_of = np.repeat(np.arange(n_ship), sizes)
    last = line.unit_time[units][cut - 1] if n_ship else np.array([], dtype=np.int64)
    shipped_at = last + rng.integers(DAY, 3 * DAY, n_ship)
    weights = 1.0 / np.arange(1, layout.N_CUSTOMERS + 1)
    customer = rng.choice(layout.N_CUSTOMERS, size=n_ship, p=weights / weights.sum())
    uids = [f"SHP-{k + 1:0{loads.digits}d}" for k in range(n_ship)]
    carriers = loads.carriers
    plant.add_nodes(
        "Shipment",
        uid=uids,
        shipped_at=iso(shipped_at),
        carrier=[carriers[k % len(carriers)] for k in range(n_ship)],
    )
    plant.add_edges(
        "SHIPPED_IN", src=[line.serials[i] for i in units], dst=[uids[k] for k in shipment_of]
    )
    plant.add_edges("DELIVERED_TO", src=uids, dst=[f"CUST-{k + 1:03d}" for k in customer])
    return {
        "units": units,
        "shipment_of": shipment_of,
        "shipped_at": shipped_at,
        "customer": customer,
    }


def first_types(
    n_units: int, carried: Mapping[str, np.ndarray], priority: Sequence[str]
) -> np.ndarray:
    """Per unit, the defect type a customer notices first: the earliest of ``priority``
    the unit carries ("" for none)."""
    first = np.full(n_units, "", dtype=object)
    for t in reversed(priority):
        if t in carried:
            first[carried[t]] = t
    return first


@dataclass(frozen=True, slots=True)
class Complaints:
    """The complaints about shipped units: their uids, positions into the shipped units
    (in the order received), the type each reports, and which of the shipped units had a
    no-fault-found complaint."""

    uids: list[str]
    idx: np.ndarray
    reported: np.ndarray
    nff: np.ndarray


@dataclass(frozen=True, slots=True)
class ComplaintModel:
    """How customers complain: an escaped unit with ``complaint_p``, a good one with
    ``no_fault_found_p`` (reporting a type drawn from ``nff_types``), received two days
    plus an exponential lag of mean ``lag_days`` after shipping; ``severity(type)``,
    ``names`` of the types and the ``digits`` of a complaint's number."""

    complaint_p: float
    no_fault_found_p: float
    lag_days: float
    nff_types: Sequence[str]
    severity: Callable[[str], str]
    names: Mapping[str, str]
    digits: int


def complain(
    plant: Plant,
    rng: np.random.Generator,
    line: Production,
    shipped: dict[str, Any],
    escaped: np.ndarray,
    first_type: np.ndarray,
    model: ComplaintModel,
) -> Complaints:
    """Draws who complains (``escaped`` and ``first_type`` per unit of the line: a real
    complaint reports the unit's first type) and writes the Complaint nodes about their
    units, of their types, raised by the units' customers."""
    units = shipped["units"]
    esc = escaped[units]
    real = esc & (rng.random(len(units)) < np.full(len(units), model.complaint_p))
    nff = ~esc & (rng.random(len(units)) < np.full(len(units), model.no_fault_found_p))
    idx = np.flatnonzero(real | nff)
    lag = 2 * DAY + rng.exponential(model.lag_days * DAY, len(idx)).astype(np.int64)
    received = shipped["shipped_at"][shipped["shipment_of"][idx]] + lag
    others = np.array(model.nff_types, dtype=object)
    reported = np.where(
        real[idx], first_type[units[idx]], others[rng.integers(0, len(others), len(idx))]
    )
    order = np.lexsort((units[idx], received))
    idx, received, reported = idx[order], received[order], reported[order]
    uids = [f"CMP-{k + 1:0{model.digits}d}" for k in range(len(idx))]
    plant.add_nodes(
        "Complaint",
        uid=uids,
        received_at=iso(received),
        severity=[model.severity(t) for t in reported],
        description=[f"customer reports {model.names[t].lower()}" for t in reported],
    )
    plant.add_edges("ABOUT", src=uids, dst=[line.serials[units[i]] for i in idx])
    plant.add_edges("OF_TYPE", src=uids, dst=list(reported))
    plant.add_edges(
        "RAISED_BY",
        src=uids,
        dst=[f"CUST-{shipped['customer'][shipped['shipment_of'][i]] + 1:03d}" for i in idx],
    )
    return Complaints(uids, idx, reported, nff)
