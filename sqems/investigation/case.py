"""The complaint under investigation: what it says, about which unit, and what that
unit was exposed to at every level of its bill of materials.

:func:`read_case` gathers the facts a quality engineer reads first — when the complaint
came in, from whom, its defect type with the process steps that type originates at,
the unit, its product and batch, and the sub-assemblies built into it (at any depth).
:func:`unit_exposure` lists the root-cause factors (lots, suppliers, machines,
operators, shifts, parameter zones, and the calibration and qualification states its
runs were made in) that reached the unit through its own batch or any
sub-assembly's, so the investigation can say whether a cause found from many cases
also applies to *this* one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqems.analysis.factors import Factor, factors_of, read_batches
from sqems.analysis.rootcause import WhyStep, why_to_factor
from sqems.analysis.states import read_states
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Complaint, Customer, DefectType, Product, Unit
from sqems.graph_model.store import Direction, GraphStore

OUT, IN = Direction.OUT, Direction.IN
MAX_BOM_DEPTH = 32
"""Assembly levels followed below a unit; a deeper chain is a cycle in the data."""


@dataclass(frozen=True, slots=True)
class SubAssembly:
    uid: str
    batch: str | None
    product: str | None
    parent: str
    depth: int
    """1 for a part built straight into the complained unit, 2 below that, …"""


@dataclass(frozen=True, slots=True)
class ComplaintCase:
    uid: str
    received_at: datetime
    severity: str
    description: str
    customer: str | None
    customer_name: str | None
    unit: str
    unit_status: str
    produced_at: datetime
    batch: str | None
    product: str | None
    product_name: str | None
    defect_type: str | None
    defect_type_name: str | None
    category: str | None
    origin_steps: tuple[str, ...]
    """The process steps the defect type originates at (the PFMEA link)."""
    subassemblies: tuple[SubAssembly, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "received_at": self.received_at.isoformat(),
            "severity": self.severity,
            "description": self.description,
            "customer": self.customer,
            "customer_name": self.customer_name,
            "unit": self.unit,
            "unit_status": self.unit_status,
            "produced_at": self.produced_at.isoformat(),
            "batch": self.batch,
            "product": self.product,
            "product_name": self.product_name,
            "defect_type": self.defect_type,
            "defect_type_name": self.defect_type_name,
            "category": self.category,
            "origin_steps": list(self.origin_steps),
            "subassemblies": [
                {
                    "uid": s.uid,
                    "batch": s.batch,
                    "product": s.product,
                    "parent": s.parent,
                    "depth": s.depth,
                }
                for s in self.subassemblies
            ],
        }


def read_case(store: GraphStore, complaint: str) -> ComplaintCase:
    """The facts of ``complaint``; :class:`~sqems.errors.NotFound` when it is not in the
    graph, :class:`~sqems.errors.ValidationFailed` when it is not a complaint or names no
    unit."""
    node = store.get(complaint)
    if not isinstance(node, Complaint):
        raise ValidationFailed(f"{complaint} is a {node.label}, not a Complaint")
    links = store.edges([complaint], {"ABOUT": OUT, "OF_TYPE": OUT, "RAISED_BY": OUT})
    unit_uid = next((e.dst for e in links if e.type == "ABOUT"), None)
    if unit_uid is None:
        raise ValidationFailed(
            f"complaint {complaint} is about no unit (no ABOUT link): link it to the "
            "returned unit's serial number so it can be traced"
        )
    type_uid = next((e.dst for e in links if e.type == "OF_TYPE"), None)
    customer_uid = next((e.dst for e in links if e.type == "RAISED_BY"), None)
    if customer_uid is None:
        # a complaint without its own customer link: the customer the unit shipped to
        shipments = [e.dst for e in store.edges([unit_uid], {"SHIPPED_IN": OUT})]
        customer_uid = next((e.dst for e in store.edges(shipments, {"DELIVERED_TO": OUT})), None)
    unit_batch = next((e.src for e in store.edges([unit_uid], {"PRODUCED": IN})), None)
    product_uid = (
        next((e.dst for e in store.edges([unit_batch], {"OF_PRODUCT": OUT})), None)
        if unit_batch
        else None
    )
    origins = (
        tuple(sorted(e.dst for e in store.edges([type_uid], {"ORIGINATES_AT": OUT})))
        if type_uid
        else ()
    )
    nodes = store.get_many(u for u in (unit_uid, type_uid, customer_uid, product_uid) if u)
    unit = nodes[unit_uid]
    assert isinstance(unit, Unit)
    defect_type = nodes.get(type_uid or "")
    customer = nodes.get(customer_uid or "")
    product = nodes.get(product_uid or "")
    return ComplaintCase(
        uid=complaint,
        received_at=node.received_at,
        severity=node.severity.value,
        description=node.description,
        customer=customer_uid,
        customer_name=customer.name if isinstance(customer, Customer) else None,
        unit=unit_uid,
        unit_status=unit.status.value,
        produced_at=unit.produced_at,
        batch=unit_batch,
        product=product_uid,
        product_name=product.name if isinstance(product, Product) else None,
        defect_type=type_uid,
        defect_type_name=defect_type.name if isinstance(defect_type, DefectType) else None,
        category=defect_type.category.value if isinstance(defect_type, DefectType) else None,
        origin_steps=origins,
        subassemblies=tuple(subassemblies(store, unit_uid)),
    )


def subassemblies(store: GraphStore, unit: str) -> list[SubAssembly]:
    """Every unit built into ``unit``, level by level, with the batch that made it
    (one store call per level and kind of hop, not per unit)."""
    found: list[SubAssembly] = []
    seen = {unit}
    level, depth = [unit], 0
    while level:
        depth += 1
        if depth > MAX_BOM_DEPTH:
            raise ValidationFailed(
                f"the assembly chain below {unit} is deeper than {MAX_BOM_DEPTH} levels: "
                "an ASSEMBLED_INTO cycle in the data"
            )
        links = [e for e in store.edges(level, {"ASSEMBLED_INTO": IN}) if e.src not in seen]
        if not links:
            break
        children = sorted({e.src for e in links})
        seen.update(children)
        batch_of = {e.dst: e.src for e in store.edges(children, {"PRODUCED": IN})}
        product_of = {
            e.src: e.dst for e in store.edges(set(batch_of.values()), {"OF_PRODUCT": OUT})
        }
        for e in sorted(links, key=lambda e: (e.dst, e.src)):
            batch = batch_of.get(e.src)
            found.append(SubAssembly(e.src, batch, product_of.get(batch or ""), e.dst, depth))
        level = children
    return found


def unit_exposure(store: GraphStore, case: ComplaintCase) -> frozenset[Factor]:
    """The factors that reached the complained unit through its own batch or the
    batch of any sub-assembly built into it."""
    batches: Iterable[str] = {
        b for b in (case.batch, *(s.batch for s in case.subassemblies)) if b is not None
    }
    facts = read_batches(store, batches)
    states = read_states(store, facts)
    found: set[Factor] = set()
    for batch in facts.batches.values():
        found |= factors_of(batch, facts.parameters, states=states)
    return frozenset(found)


def case_why(store: GraphStore, case: ComplaintCase, factor: Factor) -> tuple[WhyStep, ...]:
    """The 5-Why chain of *this* complaint to ``factor``: the complaint, its unit, down
    through every sub-assembly on the way to the batch that was exposed, and from that
    batch to the lot, machine, operator, shift or parameter zone — or, for a state, the
    run made in it and the calibration or qualification record that says so. Empty when
    the factor did not reach the unit."""
    subs = {s.uid: s for s in case.subassemblies}
    holders = [(case.unit, case.batch), *((s.uid, s.batch) for s in case.subassemblies)]
    facts = read_batches(store, {b for _, b in holders if b is not None})
    states = read_states(store, facts)
    for holder, batch_uid in holders:
        batch = facts.batches.get(batch_uid or "")
        if batch is None or factor not in factors_of(batch, facts.parameters, states=states):
            continue
        path = []
        at = holder
        while at in subs:
            path.append(subs[at])
            at = subs[at].parent
        chain = [
            WhyStep(
                case.uid,
                "Complaint",
                None,
                f"complaint {case.uid} was raised about unit {case.unit}",
            ),
            WhyStep(case.unit, "Unit", "ABOUT", f"unit {case.unit} is defective"),
        ]
        for sub in reversed(path):
            chain.append(
                WhyStep(
                    sub.uid,
                    "Unit",
                    "ASSEMBLED_INTO",
                    f"{sub.parent} was built around sub-assembly {sub.uid}",
                )
            )
        chain.append(
            WhyStep(batch.uid, "Batch", "PRODUCED", f"{holder} was made in batch {batch.uid}")
        )
        chain.extend(why_to_factor(factor, batch, facts.parameters, states))
        return tuple(chain)
    return ()
