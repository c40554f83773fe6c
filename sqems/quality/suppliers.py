"""Supplier quality: a scorecard per supplier, computed from the graph, with its trend.

For each supplier, over the lots it delivered (``SUPPLIED``) in a window:

- **incoming inspection**: lots inspected on receipt (``Inspection INSPECTED
  MaterialLot``), lots rejected (verdict fail), the lot rejection rate, and incoming
  PPM — defects found per million parts sampled;
- **in-house**: units made in the batches that consumed its lots (``CONSUMED_IN`` →
  ``PRODUCED``), those with a defect of a *material* type (the 6M category a supplier
  answers for) and its PPM. Only those units: a defect on the assembly a unit went
  into arose at that assembly's steps, and counting it against every supplier of
  every sub-assembly would blame the board's chip maker for a cracked housing;
- **complaints** traced to its lots — about its units or the assemblies they went into
  (up ``ASSEMBLED_INTO``), as a recall would trace them — all and of material types;
- **CAPA responsiveness**: the CAPAs addressing those material defects and complaints,
  how many are open, how many overdue, and the mean days from report to closure;
- a **trend** by month of receipt: lots, rejected lots, incoming PPM, material PPM.

``scorecards`` ranks every supplier, the worst material PPM first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqems.errors import NotFound
from sqems.graph_model.nodes import (
    Capa,
    CapaStatus,
    Category6M,
    DefectType,
    Inspection,
    MaterialLot,
    Supplier,
    Verdict,
)
from sqems.graph_model.store import Direction, GraphStore, TimeWindow

IN, OUT = Direction.IN, Direction.OUT
MAX_ASSEMBLY_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Period:
    month: str
    lots: int
    lots_rejected: int
    incoming_ppm: float | None
    material_ppm: float | None


@dataclass(frozen=True, slots=True)
class Scorecard:
    supplier: str
    name: str
    status: str
    lots: int
    lots_inspected: int
    lots_rejected: int
    lot_rejection_rate: float | None
    parts_sampled: int
    incoming_defects: int
    incoming_ppm: float | None
    units: int
    """Units made in the batches that consumed its lots."""
    material_defective: int
    material_ppm: float | None
    complaints: int
    material_complaints: int
    capas: int
    capas_open: int
    capas_overdue: int
    mean_days_to_close: float | None
    trend: list[Period] = field(default_factory=list)


def _ppm(part: int, whole: int) -> float | None:
    return part / whole * 1e6 if whole else None


def scorecards(store: GraphStore, window: TimeWindow | None = None) -> list[Scorecard]:
    """Every supplier's scorecard, the worst material PPM first."""
    suppliers = [n.uid for page in store.iter_nodes("Supplier") for n in page.items]
    material = material_types(store)  # read once, not once a supplier
    cards = [scorecard(store, s, window, material=material) for s in suppliers]
    return sorted(cards, key=lambda c: (-(c.material_ppm or 0.0), c.supplier))


def scorecard(
    store: GraphStore, supplier: str, window: TimeWindow | None = None,
    *, now: datetime | None = None, material: set[str] | None = None,
) -> Scorecard:  # fmt: skip
    found = store.get_many([supplier]).get(supplier)
    if not isinstance(found, Supplier):
        raise NotFound(f"supplier {supplier} is not in the graph")
    now = now or datetime.now(UTC)
    window = window or TimeWindow()
    lo, hi = window.bounds()
    lot_nodes = store.get_many(e.dst for e in store.edges([supplier], {"SUPPLIED": OUT}))
    lots = {u: n for u, n in lot_nodes.items()
            if isinstance(n, MaterialLot) and lo <= n.received_at.timestamp() <= hi}  # fmt: skip

    checks_of = lot_inspections(store, lots)
    rejected = {lot for lot, cs in checks_of.items() if any(c.verdict is Verdict.FAIL for c in cs)}

    units_of = units_of_lots(store, lots)
    units = set().union(*units_of.values()) if units_of else set()
    material = material_types(store) if material is None else material
    defects = store.edges(list(units), {"FOUND_ON": IN})
    types = {e.src: e.dst for e in store.edges([e.src for e in defects], {"OF_TYPE": OUT})}
    material_defects = [e for e in defects if types.get(e.src) in material]
    defective = {e.dst for e in material_defects}
    complaints, material_complaints = traced_complaints(store, units, material)

    capa_links = store.edges([e.src for e in material_defects] + sorted(material_complaints),
                             {"ADDRESSES": IN})  # fmt: skip
    capas = [c for c in store.get_many({e.src for e in capa_links}).values() if isinstance(c, Capa)]
    closed = [c for c in capas if c.closed_at is not None]
    open_ = [c for c in capas if c.status is not CapaStatus.CLOSED]
    overdue = [c for c in open_ if c.due_at is not None and c.due_at < now]
    days = [(c.closed_at - c.opened_at).total_seconds() / 86400 for c in closed
            if c.closed_at is not None]  # fmt: skip

    sampled = sum(c.sample_size for cs in checks_of.values() for c in cs)
    found_defects = sum(c.defects_found for cs in checks_of.values() for c in cs)
    return Scorecard(
        supplier=supplier,
        name=found.name,
        status=found.status.value,
        lots=len(lots),
        lots_inspected=len(checks_of),
        lots_rejected=len(rejected),
        lot_rejection_rate=len(rejected) / len(checks_of) if checks_of else None,
        parts_sampled=sampled,
        incoming_defects=found_defects,
        incoming_ppm=_ppm(found_defects, sampled),
        units=len(units),
        material_defective=len(defective),
        material_ppm=_ppm(len(defective), len(units)),
        complaints=len(complaints),
        material_complaints=len(material_complaints),
        capas=len(capas),
        capas_open=len(open_),
        capas_overdue=len(overdue),
        mean_days_to_close=sum(days) / len(days) if days else None,
        trend=_trend(lots, checks_of, rejected, units_of, defective),
    )


def lot_inspections(store: GraphStore, lots: Iterable[str]) -> dict[str, list[Inspection]]:
    """The incoming inspections of each lot (``Inspection INSPECTED MaterialLot``); a lot
    never inspected is absent."""
    inspected = store.edges(list(lots), {"INSPECTED": IN})
    checks = store.get_many(e.src for e in inspected)
    checks_of: dict[str, list[Inspection]] = defaultdict(list)
    for e in inspected:
        check = checks.get(e.src)
        if isinstance(check, Inspection):
            checks_of[e.dst].append(check)
    return checks_of


def traced_complaints(
    store: GraphStore, units: set[str], material: set[str]
) -> tuple[set[str], set[str]]:
    """The complaints about ``units`` or the assemblies they went into, all and those of a
    type in ``material``."""
    about = store.edges(list(with_assemblies(store, units)), {"ABOUT": IN})
    complaint_types = {e.src: e.dst for e in store.edges([e.src for e in about],
                                                         {"OF_TYPE": OUT})}  # fmt: skip
    complaints = {e.src for e in about}
    return complaints, {c for c in complaints if complaint_types.get(c) in material}


def units_of_lots(store: GraphStore, lots: Iterable[str]) -> dict[str, set[str]]:
    """The units made in the batches that consumed each lot."""
    consumed = store.edges(list(lots), {"CONSUMED_IN": OUT})
    produced = store.edges([e.dst for e in consumed], {"PRODUCED": OUT})
    units_of_batch: dict[str, set[str]] = defaultdict(set)
    for e in produced:
        units_of_batch[e.src].add(e.dst)
    found: dict[str, set[str]] = defaultdict(set)
    for e in consumed:
        found[e.src] |= units_of_batch.get(e.dst, set())
    return found


def with_assemblies(store: GraphStore, units: set[str]) -> set[str]:
    """``units`` and every unit they were assembled into, up the genealogy."""
    reached, frontier = set(units), set(units)
    for _ in range(MAX_ASSEMBLY_DEPTH):
        frontier = {e.dst for e in store.edges(list(frontier), {"ASSEMBLED_INTO": OUT})} - reached
        if not frontier:
            break
        reached |= frontier
    return reached


def material_types(store: GraphStore) -> set[str]:
    """The defect types of the 6M category *material*: those a supplier answers for."""
    return {n.uid for page in store.iter_nodes("DefectType") for n in page.items
            if isinstance(n, DefectType) and n.category is Category6M.MATERIAL}  # fmt: skip


def _trend(
    lots: dict[str, MaterialLot],
    checks: dict[str, list[Inspection]],
    rejected: set[str],
    units_of: dict[str, set[str]],
    defective: set[str],
) -> list[Period]:
    by_month: dict[str, list[str]] = defaultdict(list)
    for uid, lot in lots.items():
        by_month[lot.received_at.astimezone(UTC).strftime("%Y-%m")].append(uid)
    periods = []
    for month in sorted(by_month):
        members = by_month[month]
        sampled = sum(c.sample_size for m in members for c in checks.get(m, []))
        found = sum(c.defects_found for m in members for c in checks.get(m, []))
        units = set().union(*(units_of.get(m, set()) for m in members))
        bad = len(units & defective)
        periods.append(Period(month, len(members), sum(m in rejected for m in members),
                              _ppm(found, sampled), _ppm(bad, len(units))))  # fmt: skip
    return periods
