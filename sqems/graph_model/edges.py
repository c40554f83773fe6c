"""Relationship types of the quality knowledge graph.

Each type names the label pairs it may join and, where it carries properties, their
model. Genealogy edges all point from supplier towards customer, so *upstream* (root
cause) means against them and *downstream* (recall scope) means along them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import UnitSymbol


class EdgeProps(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recorded(EdgeProps):
    """The actual value a process run held a parameter at."""

    value: float = Field(allow_inf_nan=False)
    unit: UnitSymbol


class Quantity(EdgeProps):
    """How much of the source went into the target (in the source's unit)."""

    quantity: float | None = Field(default=None, gt=0, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class RelType:
    name: str
    pairs: frozenset[tuple[str, str]]
    doc: str
    props: type[EdgeProps] | None = None
    genealogy: bool = field(default=False)

    def check(self, src_label: str, dst_label: str) -> None:
        if (src_label, dst_label) not in self.pairs:
            allowed = ", ".join(f"{a}→{b}" for a, b in sorted(self.pairs))
            raise ValidationFailed(
                f"{self.name} cannot join {src_label}→{dst_label}; it joins {allowed}"
            )

    def check_props(self, src: str, dst: str, props: dict[str, Any] | None) -> dict[str, Any]:
        """Validated, JSON-ready properties (empty when the type has none)."""
        if self.props is None:
            if props:
                raise ValidationFailed(
                    f"{self.name} {src}→{dst}: this relationship has no properties "
                    f"(got {sorted(props)})"
                )
            return {}
        try:
            return self.props.model_validate(props or {}).model_dump(mode="json", exclude_none=True)
        except ValidationError as exc:
            parts = [
                f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            ]
            raise ValidationFailed(f"{self.name} {src}→{dst}: " + "; ".join(parts)) from None


def _rel(
    name: str,
    pairs: list[tuple[str, str]],
    doc: str,
    props: type[EdgeProps] | None = None,
    *,
    genealogy: bool = False,
) -> RelType:
    return RelType(name, frozenset(pairs), doc, props, genealogy)


REL_TYPES: dict[str, RelType] = {
    r.name: r
    for r in (
        # genealogy, supplier → customer
        _rel(
            "SUPPLIED", [("Supplier", "MaterialLot")], "supplier delivered the lot", genealogy=True
        ),
        _rel(
            "CONSUMED_IN",
            [("MaterialLot", "Batch")],
            "lot was used by the batch",
            Quantity,
            genealogy=True,
        ),
        _rel("RAN", [("Batch", "ProcessRun")], "the batch went through this run", genealogy=True),
        _rel("ON", [("ProcessRun", "Machine")], "the run happened on the machine", genealogy=True),
        _rel("PRODUCED", [("Batch", "Unit")], "the batch made the unit", genealogy=True),
        _rel(
            "ASSEMBLED_INTO", [("Unit", "Unit")], "sub-assembly built into a unit", genealogy=True
        ),
        _rel("SHIPPED_IN", [("Unit", "Shipment")], "the unit left in the shipment", genealogy=True),
        _rel(
            "DELIVERED_TO",
            [("Shipment", "Customer")],
            "the shipment went to the customer",
            genealogy=True,
        ),
        # quality
        _rel("FOUND_ON", [("Defect", "Unit"), ("Defect", "Batch")], "where the defect was found"),
        _rel("OF_TYPE", [("Defect", "DefectType"), ("Complaint", "DefectType")], "classification"),
        _rel("ABOUT", [("Complaint", "Unit")], "the unit a complaint concerns"),
        _rel(
            "ADDRESSES",
            [
                ("Capa", "Defect"),
                ("Capa", "Complaint"),
                ("Capa", "Alarm"),
                ("Capa", "Calibration"),
                ("Capa", "Batch"),
            ],
            "what a CAPA answers (a calibration found out of tolerance: its look-back batches)",
        ),
        _rel("DETECTED_IN", [("Defect", "Inspection")], "the inspection that caught the defect"),
        _rel(
            "INSPECTED",
            [("Inspection", "Batch"), ("Inspection", "Unit"), ("Inspection", "MaterialLot")],
            "what an inspection looked at (a lot: incoming inspection)",
        ),
        _rel("RAISED_BY", [("Complaint", "Customer")], "who complained"),
        _rel(
            "RAISED_ON",
            [("Alarm", "Machine"), ("Alarm", "Parameter"), ("Alarm", "ProcessRun")],
            "where an alarm fired",
        ),
        _rel("JUDGES", [("Judgement", "Unit")], "the unit a model judgement is about"),
        # equipment, routing and master data
        _rel("PART_OF", [("Machine", "Line"), ("Line", "Site")], "equipment hierarchy"),
        _rel(
            "MODELLED_BY",
            [("Machine", "BimElement"), ("Line", "BimElement"), ("Site", "BimElement")],
            "BIM element of the equipment",
        ),
        _rel("IN_MODEL", [("BimElement", "BimModel")], "the IFC model an element came from"),
        _rel("LOT_OF", [("MaterialLot", "Material")], "the lot's part number"),
        _rel("OF_PRODUCT", [("Batch", "Product")], "what the batch makes"),
        _rel(
            "USES", [("Product", "Material"), ("Product", "Product")], "bill of materials", Quantity
        ),
        _rel(
            "STEP_OF",
            [("ProcessStep", "Product")],
            "routing: the step belongs to the product's route",
        ),
        _rel("PARAMETER_OF", [("Parameter", "ProcessStep")], "the step's controlled parameter"),
        _rel("CAN_PERFORM", [("Machine", "ProcessStep")], "the machine is qualified for the step"),
        _rel(
            "FOR_STEP",
            [("ProcessRun", "ProcessStep"), ("WorkInstruction", "ProcessStep")],
            "the step a run performed, or a work instruction governs",
        ),
        _rel(
            "FOLLOWED",
            [("ProcessRun", "WorkInstruction")],
            "the instruction revision a run followed",
        ),
        _rel("RECORDED", [("ProcessRun", "Parameter")], "a parameter actual of the run", Recorded),
        _rel("OPERATED_BY", [("ProcessRun", "Operator")], "who ran it"),
        _rel("CALIBRATES", [("Calibration", "Machine")], "calibration of the machine"),
        _rel("HOLDS", [("Operator", "Qualification")], "a qualification the operator holds"),
        _rel(
            "QUALIFIES_FOR",
            [("Qualification", "ProcessStep"), ("Qualification", "WorkInstruction")],
            "what a qualification covers: a step, or a work-instruction revision",
        ),
        _rel(
            "ORIGINATES_AT",
            [("DefectType", "ProcessStep")],
            "PFMEA: the process step where the failure mode arises",
        ),
        # what-if studies
        _rel("STUDIES", [("WhatIfSession", "Line")], "the line a what-if session studies"),
        _rel("IN_SESSION", [("Scenario", "WhatIfSession")], "a scenario of the session"),
    )
}
"""Every relationship type of the model, by name."""


def rel_type(name: str) -> RelType:
    """The spec of relationship ``name``; :class:`ValidationFailed` if unknown."""
    try:
        return REL_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(REL_TYPES))
        raise ValidationFailed(
            f"unknown relationship type {name!r}; known types: {known}"
        ) from None
