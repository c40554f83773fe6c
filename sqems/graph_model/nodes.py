"""Node labels of the quality knowledge graph and their property models.

Every node has a stable business key ``uid`` that is unique across the whole graph, and
the properties of its label, validated by a pydantic model. Timestamps must carry a
time zone; spec limits, quantities and orders of events are checked here, so a bad
record is refused before it reaches any store.

>>> Parameter.parse({"uid": "P-REFLOW-PEAK", "name": "peak temperature",
...                  "unit": "degC", "lsl": 235, "usl": 250, "target": 243}).usl
250.0
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from sqems.errors import ValidationFailed

Uid = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_$][A-Za-z0-9._:/#@+$-]{0,199}$"),
]
"""A business key: letters, digits and ``._:/#@+$-``; IFC GlobalIds fit."""

UnitSymbol = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32, pattern=r"^\S+$")
]
"""A unit of measure as written in specs and payloads: ``degC``, ``N*m``, ``um``, ``pcs``."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
Json = Annotated[str, StringConstraints(max_length=200_000)]
"""A JSON document kept as a string property (graph stores hold no nested maps)."""
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


class SupplierStatus(StrEnum):
    APPROVED = "approved"
    CONDITIONAL = "conditional"
    DISQUALIFIED = "disqualified"


class ProductKind(StrEnum):
    FINISHED = "finished"
    SUBASSEMBLY = "subassembly"


class BatchStatus(StrEnum):
    PLANNED = "planned"
    IN_PROCESS = "in_process"
    COMPLETED = "completed"
    ON_HOLD = "on_hold"
    SCRAPPED = "scrapped"


class UnitStatus(StrEnum):
    GOOD = "good"
    DEFECTIVE = "defective"
    REWORKED = "reworked"
    SCRAPPED = "scrapped"


class Shift(StrEnum):
    EARLY = "early"
    LATE = "late"
    NIGHT = "night"


class InspectionMethod(StrEnum):
    AOI = "aoi"
    XRAY = "xray"
    MANUAL = "manual"
    FUNCTIONAL = "functional"
    CMM = "cmm"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"


class CalibrationVerdict(StrEnum):
    """What a calibration found and left behind.

    ``pass``: found and left in tolerance; ``adjusted``: put back in tolerance by the
    calibration (the as-found value may lie outside); ``limited``: usable only within the
    restriction the record states; ``fail``: out of tolerance and not restored."""

    PASS = "pass"
    ADJUSTED = "adjusted"
    LIMITED = "limited"
    FAIL = "fail"


class JudgementVerdict(StrEnum):
    """What a unit judgement model said about one unit: below its threshold or not."""

    PASS = "pass"
    SUSPECT = "suspect"


class Severity(StrEnum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class Disposition(StrEnum):
    PENDING = "pending"
    REWORK = "rework"
    SCRAP = "scrap"
    USE_AS_IS = "use_as_is"
    RETURN_TO_SUPPLIER = "return_to_supplier"


class Category6M(StrEnum):
    """The Ishikawa (fishbone) categories a defect type is filed under."""

    MAN = "man"
    MACHINE = "machine"
    METHOD = "method"
    MATERIAL = "material"
    MEASUREMENT = "measurement"
    ENVIRONMENT = "environment"


class CapaStatus(StrEnum):
    """The states of the CAPA workflow (``sqems.quality.capa`` enforces the moves)."""

    REPORTED = "reported"
    TRIAGED = "triaged"
    ASSIGNED = "assigned"
    IN_ACTION = "in_action"
    VERIFYING = "verifying"
    CLOSED = "closed"
    REOPENED = "reopened"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class CapaSource(StrEnum):
    MANUAL = "manual"
    COMPLAINT = "complaint"
    ALARM = "alarm"


class Node(BaseModel):
    """Base of every node model: a frozen, strictly-shaped record with a ``uid``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    label: ClassVar[str] = "Node"
    time_span: ClassVar[tuple[str, str | None] | None] = None
    """Names of the fields that place the node in time (start, end); used by windows."""

    uid: Uid

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Self:
        """Validate ``data`` as this label, raising :class:`ValidationFailed` that names
        the node and every offending field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(describe_errors(cls.label, data, exc)) from None

    def interval(self) -> tuple[float, float] | None:
        """The node's place in time as POSIX seconds ``(start, end)``, or None.

        A label with an end field whose end is not set yet (a run still going, an
        open CAPA) lasts until further notice: its end is infinite. A label without an
        end field (a unit's production, a shipment) is an instant.
        """
        if self.time_span is None:
            return None
        start_field, end_field = self.time_span
        start: datetime | None = getattr(self, start_field)
        if start is None:
            return None
        t0 = start.timestamp()
        if end_field is None:
            return (t0, t0)
        end: datetime | None = getattr(self, end_field)
        return (t0, end.timestamp() if end is not None else math.inf)


def describe_errors(label: str, data: dict[str, Any], exc: ValidationError) -> str:
    """One line naming the node and each bad field with the value it got."""
    uid = data.get("uid", "?") if isinstance(data, dict) else "?"
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(record)"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        parts.append(f"{field}: {err['msg']}{shown}")
    return f"{label} {uid}: " + "; ".join(parts)


def _ordered(start: datetime | None, end: datetime | None, what: str) -> None:
    if start is not None and end is not None and end < start:
        raise ValueError(f"{what} ends ({end.isoformat()}) before it starts ({start.isoformat()})")


# --- supply -------------------------------------------------------------------------


class Supplier(Node):
    label: ClassVar[str] = "Supplier"
    name: Name
    country: CountryCode | None = None
    status: SupplierStatus = SupplierStatus.APPROVED


class Material(Node):
    """A part number."""

    label: ClassVar[str] = "Material"
    name: Name
    unit: UnitSymbol = "pcs"
    critical: bool = False


class MaterialLot(Node):
    label: ClassVar[str] = "MaterialLot"
    time_span: ClassVar[tuple[str, str | None] | None] = ("received_at", None)
    received_at: AwareDatetime
    quantity: float = Field(gt=0, allow_inf_nan=False)
    unit: UnitSymbol = "pcs"
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _expiry(self) -> Self:
        _ordered(self.received_at, self.expires_at, "lot shelf life")
        return self


# --- products and production ---------------------------------------------------------


class Product(Node):
    label: ClassVar[str] = "Product"
    name: Name
    revision: str = "A"
    kind: ProductKind = ProductKind.FINISHED


class Batch(Node):
    """A production lot / work order."""

    label: ClassVar[str] = "Batch"
    time_span: ClassVar[tuple[str, str | None] | None] = ("started_at", "ended_at")
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    quantity: int = Field(ge=0)
    status: BatchStatus = BatchStatus.COMPLETED

    @model_validator(mode="after")
    def _order(self) -> Self:
        _ordered(self.started_at, self.ended_at, "batch")
        return self


class Unit(Node):
    """A serialised item (finished product or sub-assembly)."""

    label: ClassVar[str] = "Unit"
    time_span: ClassVar[tuple[str, str | None] | None] = ("produced_at", None)
    produced_at: AwareDatetime
    status: UnitStatus = UnitStatus.GOOD


# --- equipment ------------------------------------------------------------------------


class Site(Node):
    label: ClassVar[str] = "Site"
    name: Name
    country: CountryCode | None = None
    timezone: str = "UTC"


class Line(Node):
    label: ClassVar[str] = "Line"
    name: Name


class Machine(Node):
    label: ClassVar[str] = "Machine"
    name: Name
    kind: str = Field(default="generic", max_length=100)
    x_m: float = Field(default=0.0, allow_inf_nan=False)
    y_m: float = Field(default=0.0, allow_inf_nan=False)
    rotation_deg: float = Field(default=0.0, ge=-360, le=360)
    length_m: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    width_m: float = Field(default=1.5, gt=0, allow_inf_nan=False)
    height_m: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class ProcessStep(Node):
    label: ClassVar[str] = "ProcessStep"
    name: Name
    sequence: int = Field(ge=1)


class Parameter(Node):
    """A process parameter with its unit and specification limits."""

    label: ClassVar[str] = "Parameter"
    name: Name
    unit: UnitSymbol
    lsl: float | None = Field(default=None, allow_inf_nan=False)
    usl: float | None = Field(default=None, allow_inf_nan=False)
    target: float | None = Field(default=None, allow_inf_nan=False)
    critical: bool = False

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.lsl is not None and self.usl is not None and self.lsl >= self.usl:
            raise ValueError(f"lsl ({self.lsl}) must be below usl ({self.usl})")
        if self.target is not None:
            if self.lsl is not None and self.target < self.lsl:
                raise ValueError(f"target ({self.target}) is below lsl ({self.lsl})")
            if self.usl is not None and self.target > self.usl:
                raise ValueError(f"target ({self.target}) is above usl ({self.usl})")
        return self

    def in_spec(self, value: float) -> bool:
        """True when ``value`` lies within the limits (a missing limit is open)."""
        if math.isnan(value):
            return False
        if self.lsl is not None and value < self.lsl:
            return False
        return not (self.usl is not None and value > self.usl)


class ProcessRun(Node):
    """A batch on a machine for one process step."""

    label: ClassVar[str] = "ProcessRun"
    time_span: ClassVar[tuple[str, str | None] | None] = ("started_at", "ended_at")
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    shift: Shift

    @model_validator(mode="after")
    def _order(self) -> Self:
        _ordered(self.started_at, self.ended_at, "process run")
        return self


class Operator(Node):
    """A person who runs process steps. ``qualified_from``/``qualified_until`` bound the
    qualification in time where the training record says so."""

    label: ClassVar[str] = "Operator"
    name: Name
    qualified: bool = True
    qualified_from: AwareDatetime | None = None
    qualified_until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _order(self) -> Self:
        _ordered(self.qualified_from, self.qualified_until, "operator qualification")
        return self

    def qualified_at(self, when: datetime) -> bool:
        """Whether the operator was qualified at ``when``, as far as the record says."""
        if not self.qualified:
            return False
        if self.qualified_from is not None and when < self.qualified_from:
            return False
        return self.qualified_until is None or when <= self.qualified_until


class Calibration(Node):
    """A calibration of a machine (or its gauge) against a reference standard.

    ``as_found`` is the reading before any adjustment, ``as_left`` after it, both
    against ``reference`` (the standard's value) with ``tolerance`` (± allowed) in
    ``measured_unit``. ``limitation`` says what a ``limited`` calibration restricts;
    ``performed_by`` who did it. Old records carry only the verdict (pass or fail)."""

    label: ClassVar[str] = "Calibration"
    time_span: ClassVar[tuple[str, str | None] | None] = ("performed_at", None)
    performed_at: AwareDatetime
    due_at: AwareDatetime | None = None
    verdict: CalibrationVerdict = CalibrationVerdict.PASS
    as_found: float | None = Field(default=None, allow_inf_nan=False)
    as_left: float | None = Field(default=None, allow_inf_nan=False)
    reference: float | None = Field(default=None, allow_inf_nan=False)
    tolerance: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    measured_unit: UnitSymbol | None = None
    limitation: Text | None = None
    performed_by: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _order(self) -> Self:
        _ordered(self.performed_at, self.due_at, "calibration interval")
        return self

    @property
    def found_out_of_tolerance(self) -> bool:
        """True when the calibration failed, or its as-found value lay outside
        ``reference ± tolerance`` (earlier results need assessing, ISO 13485 §7.6)."""
        if self.verdict is CalibrationVerdict.FAIL:
            return True
        if self.as_found is None or self.reference is None or self.tolerance is None:
            return False
        return abs(self.as_found - self.reference) > self.tolerance


class WorkInstruction(Node):
    """One revision of a work instruction, its own node (uid ``WI-PUMP-30/C``).

    ``instruction`` names the instruction all its revisions share (``WI-PUMP-30``),
    ``revision`` this one (``C``), ``effective_at`` when it came into force. It is
    ``FOR_STEP`` the process step it governs; a run that ``FOLLOWED`` it was made to it."""

    label: ClassVar[str] = "WorkInstruction"
    time_span: ClassVar[tuple[str, str | None] | None] = ("effective_at", None)
    instruction: Uid
    revision: str = Field(min_length=1, max_length=50)
    title: Name
    effective_at: AwareDatetime | None = None


class Qualification(Node):
    """One grant of a qualification to an operator for a step or a work-instruction
    revision (``HOLDS`` Operator→Qualification, ``QUALIFIES_FOR`` →ProcessStep or
    →WorkInstruction).

    Valid from ``granted_at`` until ``expires_at`` (open when None) unless revoked at
    ``revoked_at``; ``reason`` says why it was revoked, or that it renews an earlier
    grant. History is several of these per operator and scope."""

    label: ClassVar[str] = "Qualification"
    time_span: ClassVar[tuple[str, str | None] | None] = ("granted_at", "expires_at")
    granted_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _order(self) -> Self:
        _ordered(self.granted_at, self.expires_at, "qualification")
        _ordered(self.granted_at, self.revoked_at, "qualification before its revocation")
        return self


# --- quality -----------------------------------------------------------------------------


class Inspection(Node):
    label: ClassVar[str] = "Inspection"
    time_span: ClassVar[tuple[str, str | None] | None] = ("inspected_at", None)
    inspected_at: AwareDatetime
    method: InspectionMethod
    sample_size: int = Field(ge=0)
    defects_found: int = Field(default=0, ge=0)
    verdict: Verdict = Verdict.PASS
    image_ref: str | None = Field(default=None, max_length=2_000)

    @model_validator(mode="after")
    def _counts(self) -> Self:
        if self.defects_found > self.sample_size:
            raise ValueError(
                f"defects_found ({self.defects_found}) exceeds sample_size ({self.sample_size})"
            )
        return self


class DefectType(Node):
    label: ClassVar[str] = "DefectType"
    name: Name
    category: Category6M


class Defect(Node):
    """A nonconformity found on a unit or a batch.

    ``evidence`` is JSON: the SHA-256 digests (``sha256:<hex>``) of the photos kept for
    it in the evidence store; ``reported_by`` names the user who reported it by hand
    (None for a defect an inspection system recorded)."""

    label: ClassVar[str] = "Defect"
    time_span: ClassVar[tuple[str, str | None] | None] = ("found_at", None)
    found_at: AwareDatetime
    severity: Severity = Severity.MAJOR
    disposition: Disposition = Disposition.PENDING
    description: Text | None = None
    evidence: Json = "[]"
    reported_by: str | None = Field(default=None, max_length=200)


class Shipment(Node):
    label: ClassVar[str] = "Shipment"
    time_span: ClassVar[tuple[str, str | None] | None] = ("shipped_at", None)
    shipped_at: AwareDatetime
    carrier: str | None = Field(default=None, max_length=200)


class Customer(Node):
    label: ClassVar[str] = "Customer"
    name: Name
    country: CountryCode | None = None


class Complaint(Node):
    label: ClassVar[str] = "Complaint"
    time_span: ClassVar[tuple[str, str | None] | None] = ("received_at", None)
    received_at: AwareDatetime
    severity: Severity = Severity.MAJOR
    description: Text = ""


class Alarm(Node):
    label: ClassVar[str] = "Alarm"
    time_span: ClassVar[tuple[str, str | None] | None] = ("raised_at", "cleared_at")
    raised_at: AwareDatetime
    cleared_at: AwareDatetime | None = None
    rule: str = Field(max_length=200)
    severity: Severity = Severity.MAJOR
    value: float | None = Field(default=None, allow_inf_nan=False)
    message: Text = ""

    @model_validator(mode="after")
    def _order(self) -> Self:
        _ordered(self.raised_at, self.cleared_at, "alarm")
        return self


class Judgement(Node):
    """A model's judgement of one unit, made at the line by an edge agent.

    The uid is the judgement's own id (``<edge>/<unit>/<model version>``), so the same
    judgement delivered twice is one node; ``verdict`` is ``suspect`` when
    ``probability`` (of a defect) reaches ``threshold``. ``model_kind``,
    ``model_product`` and ``model_version`` name the model that judged, ``edge`` the
    agent that ran it."""

    label: ClassVar[str] = "Judgement"
    time_span: ClassVar[tuple[str, str | None] | None] = ("judged_at", None)
    judged_at: AwareDatetime
    probability: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    verdict: JudgementVerdict
    threshold: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    model_kind: str = Field(min_length=1, max_length=100)
    model_product: Uid
    model_version: str = Field(min_length=1, max_length=100)
    edge: Uid


class Capa(Node):
    """A corrective and preventive action, from report to verified closure.

    ``five_why``, ``eight_d``, ``containment`` and ``corrective`` are JSON (a list of
    whys; the 8D disciplines D1-D8 by key; actions with their owner, due date, state
    and evidence digests)."""

    label: ClassVar[str] = "Capa"
    time_span: ClassVar[tuple[str, str | None] | None] = ("opened_at", "closed_at")
    title: Name
    status: CapaStatus = CapaStatus.REPORTED
    opened_at: AwareDatetime
    closed_at: AwareDatetime | None = None
    source: CapaSource = CapaSource.MANUAL
    reported_by: str = Field(default="", max_length=200)
    problem: Text = ""
    priority: Priority | None = None
    owner: str | None = Field(default=None, max_length=200)
    verifier: str | None = Field(default=None, max_length=200)
    due_at: AwareDatetime | None = None
    five_why: Json = "[]"
    eight_d: Json = "{}"
    containment: Json = "[]"
    corrective: Json = "[]"
    verification: Text = ""
    effective: bool | None = None
    reopened: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> Self:
        _ordered(self.opened_at, self.closed_at, "CAPA")
        return self


class DispositionDecision(StrEnum):
    """What is decided about a deviation in a batch's record (ISO 13485:2016 §8.3)."""

    USE_AS_IS = "use as is"
    REWORK = "rework"
    SCRAP = "scrap"
    REJECT_BATCH = "reject batch"


class DeviationDisposition(Node):
    """The signed decision on one deviation of a batch's device history record.

    ``batch`` is the batch whose record holds the deviation, ``deviation`` its key in that
    record (``RUN-7:calibration``, a defect's uid, ...). The signature (21 CFR Part 11):
    ``signer``, ``signed_at`` and ``meaning``; the audit trail holds the same entry."""

    label: ClassVar[str] = "DeviationDisposition"
    time_span: ClassVar[tuple[str, str | None] | None] = ("signed_at", None)
    batch: Uid
    deviation: str = Field(min_length=1, max_length=500)
    decision: DispositionDecision
    rationale: Text = Field(min_length=1)
    signer: Name
    signed_at: AwareDatetime
    meaning: Name


class PlanStatus(StrEnum):
    """Where a planned product stands: a draft, or released as a product of the plant."""

    DRAFT = "draft"
    RELEASED = "released"


class PlannedProduct(Node):
    """A product planned for trial production, kept apart from the plant's products.

    ``plan`` is the plan as JSON (the format of ``sqems.design.plan``: its BOM with the
    intended suppliers, its routing with machines or machine kinds, and its parameters'
    tolerances). It is not a ``Product``, so nothing that analyses the plant's
    products sees it; releasing it makes the ``Product`` (``released_as``) and marks it
    ``released`` at ``released_at``."""

    label: ClassVar[str] = "PlannedProduct"
    time_span: ClassVar[tuple[str, str | None] | None] = ("saved_at", None)
    name: Name
    status: PlanStatus = PlanStatus.DRAFT
    plan: Json
    saved_at: AwareDatetime
    released_at: AwareDatetime | None = None
    released_as: Uid | None = None

    @model_validator(mode="after")
    def _release(self) -> Self:
        _ordered(self.saved_at, self.released_at, "planned product")
        named = (self.released_at is not None, self.released_as is not None)
        if named != ((True, True) if self.status is PlanStatus.RELEASED else (False, False)):
            raise ValueError(
                "a released plan names the product it was released as and when "
                "(released_as, released_at); a draft names neither"
            )
        return self


class RunStatus(StrEnum):
    """Where a background computation is."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class WhatIfSession(Node):
    """A what-if study of one line: a baseline and scenarios, simulated alike."""

    label: ClassVar[str] = "WhatIfSession"
    time_span: ClassVar[tuple[str, str | None] | None] = ("created_at", None)
    name: Name
    created_at: AwareDatetime
    horizon_s: float = Field(gt=0, allow_inf_nan=False)
    replications: int = Field(ge=2)
    seed: int = Field(default=0, ge=0)


class Scenario(Node):
    """One scenario of a what-if session, its changes and, once simulated, its results.

    Both are JSON: the changes as given; the results each KPI's mean and credible
    interval and the paired difference from the baseline."""

    label: ClassVar[str] = "Scenario"
    name: Name
    baseline: bool = False
    changes: Json = "{}"
    status: RunStatus = RunStatus.PENDING
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    results: Json | None = None
    message: Text = ""
    finished_at: AwareDatetime | None = None


class IfcSchema(StrEnum):
    IFC2X3 = "IFC2X3"
    IFC4 = "IFC4"
    IFC4X3 = "IFC4X3"


Metres = Annotated[float, Field(allow_inf_nan=False)]
Extent = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class BimModel(Node):
    """An imported IFC model, keyed by ``BIM-`` and the start of its file's SHA-256."""

    label: ClassVar[str] = "BimModel"
    name: Name
    ifc_schema: IfcSchema
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    file_name: str = Field(max_length=300)
    size_bytes: int = Field(ge=0)
    elements: int = Field(ge=0)
    triangles: int = Field(ge=0)
    imported_at: AwareDatetime


class BimElement(Node):
    """An element of a building/line model, keyed by its IFC GlobalId.

    Its place is the centre of its tessellated bounding box and its size the box's
    extents, in metres in the model's world coordinates (IFC: z up). ``as_built_*``
    hold the surveyed values once imported, ``deviation_m`` the largest difference of
    position or size from the design.
    """

    label: ClassVar[str] = "BimElement"
    ifc_class: str = Field(pattern=r"^Ifc[A-Za-z0-9]+$")
    name: str | None = Field(default=None, max_length=300)
    storey: str | None = Field(default=None, max_length=300)
    x_m: Metres | None = None
    y_m: Metres | None = None
    z_m: Metres | None = None
    length_m: Extent | None = None
    width_m: Extent | None = None
    height_m: Extent | None = None
    triangles: int | None = Field(default=None, ge=0)
    as_built_x_m: Metres | None = None
    as_built_y_m: Metres | None = None
    as_built_z_m: Metres | None = None
    as_built_length_m: Extent | None = None
    as_built_width_m: Extent | None = None
    as_built_height_m: Extent | None = None
    deviation_m: Extent | None = None


NODE_TYPES: dict[str, type[Node]] = {
    cls.label: cls
    for cls in (
        Supplier,
        Material,
        MaterialLot,
        Product,
        Batch,
        Unit,
        Site,
        Line,
        Machine,
        ProcessStep,
        Parameter,
        ProcessRun,
        Operator,
        Calibration,
        WorkInstruction,
        Qualification,
        Inspection,
        DefectType,
        Defect,
        Shipment,
        Customer,
        Complaint,
        Alarm,
        Judgement,
        Capa,
        WhatIfSession,
        Scenario,
        PlannedProduct,
        DeviationDisposition,
        BimModel,
        BimElement,
    )
}
"""Every node label of the model, by name."""


def node_type(label: str) -> type[Node]:
    """The model class of ``label``; :class:`ValidationFailed` for an unknown label."""
    try:
        return NODE_TYPES[label]
    except KeyError:
        known = ", ".join(sorted(NODE_TYPES))
        raise ValidationFailed(f"unknown node label {label!r}; known labels: {known}") from None
