"""A planned product: its draft BOM, routing and tolerances, checked against the plant's
graph and kept apart from the plant's products until it is released.

A plan is a JSON document (see docs/design-review.md for the format)::

    {"uid": "PLAN-DRIVE-MINI", "name": "Servo drive, compact",
     "bom": [{"material": "MAT-RESIN", "supplier": "SUP-08", "quantity": 0.25}],
     "routing": [{"step": "STEP-ASM-30", "machine": "M-SCREW-2",
                  "parameters": [{"parameter": "P-TORQUE", "lsl": 2.1, "usl": 2.5}]}]}

:func:`read_plan` refuses what the format does not allow (unknown fields, ``lsl >= usl``,
a target outside its limits, a step listed twice, ...) naming the field; :func:`check_plan`
refuses uids the graph does not hold, naming where in the plan they stand, and warns
about what the plant's history does not support (a supplier that never delivered the
material, a machine that never ran the step). The plan is stored as a ``PlannedProduct``
node (:func:`save_plan`), which is not a ``Product``: no analysis of the plant's products
sees it. :func:`release_plan` makes the ``Product`` with its ``USES`` edges and marks the
plan released; every save and release is an entry of the audit trail.

>>> spec = PlannedProductSpec.model_validate({"uid": "PLAN-1", "name": "n",
...     "bom": [{"material": "MAT-1"}], "routing": [{"step": "STEP-1"}]})
>>> spec.volume, spec.routing[0].parameters
(1000, [])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import (
    Machine,
    Name,
    PlannedProduct,
    PlanStatus,
    ProcessStep,
    Product,
    ProductKind,
    Uid,
)
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.quality.audit import AuditTrail
from sqems.quality.capa import Actor

log = logging.getLogger(__name__)
IN, OUT = Direction.IN, Direction.OUT
LABEL = PlannedProduct.label
MAX_PLAN_BYTES = 200_000
"""The largest plan file read (the ``plan`` property of a node holds at most this)."""


class _Strict(BaseModel):
    """Unknown fields are refused (a misspelt ``suplier`` is an error, not a default),
    and values are not coerced from strings ("1000" is not a volume)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class BomItem(_Strict):
    """One line of the draft BOM: a material (part number) and its intended supplier."""

    material: Uid
    supplier: Uid | None = None
    quantity: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """How much of the material one unit uses, in the material's unit."""


class PlannedParameter(_Strict):
    """A parameter of a routing step with the new product's tolerance (one limit may be
    open) and, optionally, its target."""

    parameter: Uid
    lsl: float | None = Field(default=None, allow_inf_nan=False)
    usl: float | None = Field(default=None, allow_inf_nan=False)
    target: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.lsl is None and self.usl is None:
            raise ValueError(f"{self.parameter} needs a tolerance: give lsl, usl or both")
        if self.lsl is not None and self.usl is not None and self.lsl >= self.usl:
            raise ValueError(f"{self.parameter}: lsl ({self.lsl}) must be below usl ({self.usl})")
        if self.target is not None:
            if self.lsl is not None and self.target < self.lsl:
                raise ValueError(
                    f"{self.parameter}: target ({self.target}) is below lsl ({self.lsl})"
                )
            if self.usl is not None and self.target > self.usl:
                raise ValueError(
                    f"{self.parameter}: target ({self.target}) is above usl ({self.usl})"
                )
        return self

    @property
    def centre(self) -> float | None:
        """The target, else the middle of a two-sided tolerance."""
        if self.target is not None:
            return self.target
        if self.lsl is not None and self.usl is not None:
            return (self.lsl + self.usl) / 2
        return None


class RoutingStep(_Strict):
    """A process step of the plant the product will run through, on a named machine, on
    any machine of a kind, or (neither given) on any machine that does the step."""

    step: Uid
    machine: Uid | None = None
    machine_kind: str | None = Field(default=None, min_length=1, max_length=100)
    parameters: list[PlannedParameter] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_machine(self) -> Self:
        if self.machine is not None and self.machine_kind is not None:
            raise ValueError(
                f"{self.step}: give a machine ({self.machine}) or a machine_kind "
                f"({self.machine_kind!r}), not both"
            )
        seen: set[str] = set()
        for p in self.parameters:
            if p.parameter in seen:
                raise ValueError(f"{self.step}: parameter {p.parameter} is listed twice")
            seen.add(p.parameter)
        return self


class PlannedProductSpec(_Strict):
    """A product planned for trial production: what it is made of, from whom, where and
    to which tolerances, and how many units the trial makes."""

    uid: Uid
    name: Name
    similar_to: list[Uid] = Field(default_factory=list)
    """Products whose history counts as "similar products"; empty: the products whose
    batches ran the plan's steps."""
    volume: int = Field(default=1000, gt=0)
    batch_size: int = Field(default=100, gt=0)
    unit_cost: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """What one failed unit costs; None: the cost model's default."""
    bom: list[BomItem] = Field(min_length=1)
    routing: list[RoutingStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _once_each(self) -> Self:
        _once((b.material for b in self.bom), "bom", "material",
              "list one intended supplier per material")  # fmt: skip
        _once((r.step for r in self.routing), "routing", "step",
              "a step is run once; list its parameters together")  # fmt: skip
        _once(self.similar_to, "similar_to", "product", "")
        return self

    def to_json(self) -> str:
        """The plan as its file holds it (every field written out)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False)


def _once(values: Iterable[str], where: str, what: str, hint: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{where}: {what} {v} is listed twice" + (f"; {hint}" if hint else ""))
        seen.add(v)


# --- reading ---------------------------------------------------------------------------


def parse_plan(data: Any, *, source: str = "plan") -> PlannedProductSpec:
    """Validate ``data`` (the JSON document as Python values) as a plan;
    :class:`ValidationFailed` naming ``source`` and every offending field."""
    try:
        return PlannedProductSpec.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(f"{source}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """Each error as ``where: what (got value)``, ``where`` written as in the file
    (``routing[2].parameters[0].usl``)."""
    parts = []
    for err in exc.errors():
        where = ""
        for p in err["loc"]:
            where += f"[{p}]" if isinstance(p, int) else (f".{p}" if where else str(p))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "not a field of a plan here (check its spelling)"
        got = err.get("input")
        shown = (
            ""
            if isinstance(got, dict | list) or err["type"] == "value_error"
            else f" (got {got!r})"
        )
        parts.append(f"{where or '(plan)'}: {msg}{shown}")
    return "; ".join(parts)


def read_plan(path: Path) -> PlannedProductSpec:
    """The plan in the JSON file ``path``.

    :class:`NotFound` when there is no such file; :class:`ValidationFailed` when it is not
    JSON (with the line and column) or not a valid plan (with each offending field)."""
    if not path.is_file():
        raise NotFound(f"plan file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_PLAN_BYTES:
        raise ValidationFailed(
            f"{path}: {size} bytes; a plan file holds at most {MAX_PLAN_BYTES} bytes"
        )
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"{path}: not JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return parse_plan(data, source=str(path))


# --- checking against the graph ------------------------------------------------------------


def check_plan(store: GraphStore, plan: PlannedProductSpec) -> list[str]:
    """Check ``plan`` against the plant's graph; the warnings, one sentence each.

    Every material, supplier, step, machine, parameter and similar product must be in the
    graph with its label: :class:`NotFound` (or :class:`ValidationFailed` for a uid of
    another label) names each that is not, and where in the plan it stands. What the
    history does not back is a warning, not an error: a new product may well buy from a
    new source or run on a machine that never did the step."""
    wanted = _uids_in(plan)
    labels = store.labels({uid for uid, _, _ in wanted})
    missing = [f"{where}: {uid}" for uid, where, _ in wanted if uid not in labels]
    if missing:
        raise NotFound(
            f"plan {plan.uid}: not in the graph ({store.description}): " + "; ".join(missing)
        )
    wrong = [
        f"{where}: {uid} is a {labels[uid]}, not a {label}"
        for uid, where, label in wanted
        if labels[uid] != label
    ]
    if wrong:
        raise ValidationFailed(f"plan {plan.uid}: " + "; ".join(wrong))
    own = store.label_of(plan.uid)
    if own is not None and own != LABEL:
        raise ValidationFailed(
            f"plan uid {plan.uid} is a {own} of the graph already; give the plan a uid of its own"
        )
    warnings = _supply_warnings(store, plan)
    warnings += _routing_warnings(store, plan)
    if plan.batch_size > plan.volume:
        warnings.append(
            f"batch_size ({plan.batch_size}) is larger than the volume ({plan.volume}): "
            "the trial is one batch"
        )
    return warnings


def _uids_in(plan: PlannedProductSpec) -> list[tuple[str, str, str]]:
    """(uid, where in the plan, the label it must have) of every reference."""
    found: list[tuple[str, str, str]] = []
    for i, item in enumerate(plan.bom):
        found.append((item.material, f"bom[{i}].material", "Material"))
        if item.supplier is not None:
            found.append((item.supplier, f"bom[{i}].supplier", "Supplier"))
    for i, r in enumerate(plan.routing):
        found.append((r.step, f"routing[{i}].step", "ProcessStep"))
        if r.machine is not None:
            found.append((r.machine, f"routing[{i}].machine", "Machine"))
        for j, p in enumerate(r.parameters):
            found.append((p.parameter, f"routing[{i}].parameters[{j}].parameter", "Parameter"))
    for i, uid in enumerate(plan.similar_to):
        found.append((uid, f"similar_to[{i}]", "Product"))
    return found


def _supply_warnings(store: GraphStore, plan: PlannedProductSpec) -> list[str]:
    warnings = []
    for item in plan.bom:
        if item.supplier is None:
            continue
        _, lots_of = store.edges_along([item.supplier], [{"SUPPLIED": OUT}, {"LOT_OF": OUT}])
        supplied = {e.dst for e in lots_of}
        if item.material not in supplied:
            what = f"its lots are of {', '.join(sorted(supplied))}" if supplied else "no lots"
            warnings.append(
                f"{item.supplier} never supplied {item.material} ({what}): the plant has no "
                "history of this source"
            )
    return warnings


def _routing_warnings(store: GraphStore, plan: PlannedProductSpec) -> list[str]:
    warnings = []
    steps = store.get_many(r.step for r in plan.routing)
    sequences = [s.sequence for r in plan.routing if isinstance(s := steps[r.step], ProcessStep)]
    if sequences != sorted(sequences):
        order = ", ".join(f"{r.step} ({s})" for r, s in zip(plan.routing, sequences, strict=True))
        warnings.append(f"the routing is not in the steps' sequence: {order}")
    for r in plan.routing:
        runs = [e.src for e in store.edges([r.step], {"FOR_STEP": IN})]
        at_runs = store.edges(runs, {"ON": OUT, "RECORDED": OUT})
        ran = {e.dst for e in at_runs if e.type == "ON"}
        recorded = {e.dst for e in at_runs if e.type == "RECORDED"}
        qualified = {e.src for e in store.edges([r.step], {"CAN_PERFORM": IN})}
        if r.machine is not None and r.machine not in ran:
            also = "; it is qualified for it (CAN_PERFORM)" if r.machine in qualified else ""
            warnings.append(
                f"{r.machine} never ran {r.step}{also}: its capability there is unknown"
            )
        if r.machine_kind is not None:
            machines = store.get_many(ran | qualified)
            kinds = {m.kind for m in machines.values() if isinstance(m, Machine)}
            if r.machine_kind not in kinds:
                known = ", ".join(repr(k) for k in sorted(kinds)) or "none"
                warnings.append(
                    f"no machine of kind {r.machine_kind!r} runs or is qualified for {r.step} "
                    f"(kinds there: {known})"
                )
        if not runs and r.machine is None:
            warnings.append(f"{r.step} has no runs in the graph: its capability is unknown")
        for p in r.parameters:
            if p.parameter not in recorded:
                warnings.append(
                    f"{p.parameter} was never recorded at {r.step}: the plant has no "
                    "history of it there"
                )
    return warnings


# --- storing, listing, releasing --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """A planned product as the graph holds it: the node and the plan it carries."""

    node: PlannedProduct
    spec: PlannedProductSpec

    @property
    def uid(self) -> str:
        return self.node.uid

    @property
    def status(self) -> PlanStatus:
        return self.node.status


@dataclass(frozen=True, slots=True)
class SavedPlan:
    """What :func:`save_plan` did: the stored plan, the check's warnings, whether the
    plan is new and whether anything changed (saving the same plan again changes
    nothing and writes no trail entry)."""

    plan: StoredPlan
    warnings: list[str]
    created: bool
    changed: bool


def _stored(node: PlannedProduct) -> StoredPlan:
    """The node with its plan parsed; a plan property that is not a valid plan (written
    by other means than :func:`save_plan`, e.g. an RDF import) is named as such."""
    where = f"stored plan {node.uid}"
    try:
        data = json.loads(node.plan)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"{where}: its plan property is not JSON ({exc.msg} at line {exc.lineno}); "
            "save the plan again from its file"
        ) from None
    return StoredPlan(node, parse_plan(data, source=where))


def _record(node: PlannedProduct) -> dict[str, Any]:
    """The node for the trail, its plan as JSON rather than a string of it."""
    record = node.model_dump(mode="json")
    record["plan"] = _stored(node).spec.model_dump(mode="json")
    return record


def save_plan(
    store: GraphStore, trail: AuditTrail, actor: Actor, plan: PlannedProductSpec
) -> SavedPlan:
    """Check ``plan`` (:func:`check_plan`) and store it as a draft ``PlannedProduct``,
    new or revising the draft of the same uid, with its entry in ``trail``. A released
    plan is not changed: :class:`ValidationFailed` (save the revision under a new uid)."""
    warnings = check_plan(store, plan)
    text = json.dumps(plan.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    with trail.writing() as w:
        before = store.get_many([plan.uid]).get(plan.uid)
        if before is not None and not isinstance(before, PlannedProduct):
            raise ValidationFailed(f"plan uid {plan.uid} is a {before.label} of the graph already")
        if before is not None and before.status is PlanStatus.RELEASED:
            raise ValidationFailed(
                f"plan {plan.uid} was released as {before.released_as}; a released plan is "
                "not changed: save the revision under a new uid"
            )
        if before is not None and before.plan == text:
            return SavedPlan(_stored(before), warnings, created=False, changed=False)
        node = PlannedProduct.parse(
            {
                "uid": plan.uid,
                "name": plan.name,
                "status": PlanStatus.DRAFT,
                "plan": text,
                "saved_at": datetime.now(UTC),
            }
        )
        action = "saved" if before is None else "revised"
        w.append(actor.name, actor.role, LABEL, plan.uid, action,
                 None if before is None else _record(before), _record(node))  # fmt: skip
        store.upsert_nodes([node])
        if before is not None:
            w.on_abort(lambda: store.upsert_nodes([before]))
    log.info("plan %s %s by %s", plan.uid, action, actor.name)
    return SavedPlan(StoredPlan(node, plan), warnings, created=before is None, changed=True)


def planned_products(store: GraphStore, status: PlanStatus | None = None) -> list[StoredPlan]:
    """The planned products (of ``status``, or all), the last saved first."""
    where = None if status is None else {"status": status.value}
    nodes = [n for n in store.find(LABEL, where) if isinstance(n, PlannedProduct)]
    nodes.sort(key=lambda n: (n.saved_at, n.uid), reverse=True)
    return [_stored(n) for n in nodes]


def get_plan(store: GraphStore, uid: str) -> StoredPlan:
    """The planned product ``uid``; :class:`NotFound` if the graph holds none."""
    node = store.get_many([uid]).get(uid)
    if node is None:
        raise NotFound(f"planned product {uid} is not in the graph ({store.description})")
    if not isinstance(node, PlannedProduct):
        raise ValidationFailed(f"{uid} is a {node.label}, not a planned product")
    return _stored(node)


def release_plan(
    store: GraphStore, trail: AuditTrail, actor: Actor, uid: str, product_uid: str
) -> StoredPlan:
    """Release the draft plan ``uid`` as the product ``product_uid``: the ``Product``
    (finished, revision A, the plan's name) with a ``USES`` edge to each BOM material
    and its quantity, and the plan marked released. The plan is checked again first
    (the graph may have changed since it was saved). The routing stays in the plan: a
    step's ``STEP_OF`` names the one product whose route it is, and the plan's steps
    are the plant's existing ones."""
    with trail.writing() as w:
        stored = get_plan(store, uid)
        product = Product.parse(
            {"uid": product_uid, "name": stored.spec.name, "kind": ProductKind.FINISHED}
        )
        if stored.status is PlanStatus.RELEASED:
            raise ValidationFailed(f"plan {uid} was released already, as {stored.node.released_as}")
        check_plan(store, stored.spec)
        taken = store.label_of(product.uid)
        if taken is not None:
            raise ValidationFailed(
                f"{product.uid} is a {taken} of the graph already; release the plan as a "
                "new product uid"
            )
        uses = [
            Edge("USES", product.uid, item.material, {"quantity": item.quantity})
            for item in stored.spec.bom
        ]
        released = PlannedProduct.parse(
            {
                **stored.node.model_dump(),
                "status": PlanStatus.RELEASED,
                "released_at": datetime.now(UTC),
                "released_as": product.uid,
            }
        )
        w.append(actor.name, actor.role, LABEL, uid, f"released as {product.uid}",
                 _record(stored.node), _record(released))  # fmt: skip
        w.append(actor.name, actor.role, Product.label, product.uid, f"created from plan {uid}",
                 None, product.model_dump(mode="json") | {
                     "uses": {i.material: i.quantity for i in stored.spec.bom}})  # fmt: skip
        with store.transaction() as tx:
            tx.add_nodes([product, released])
            tx.add_edges(uses)
        w.on_abort(lambda: store.upsert_nodes([stored.node]))
    log.info("plan %s released as %s by %s", uid, product.uid, actor.name)
    return StoredPlan(released, stored.spec)
