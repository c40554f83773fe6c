"""What each batch was exposed to, read from the graph in a few bulk calls.

Root-cause ranking and defect prediction both start from the same facts about a
batch: the process runs it went through (step, machine, operator, shift and the
parameter actuals recorded), and the material lots it consumed with their part
numbers and suppliers. :func:`read_batches` reads them for many batches at once, with
one store call per hop rather than one per batch, so the cost is the same few round
trips on the embedded store and on Neo4j.

:func:`factors_of` turns those facts into the discrete *factors* a unit of the batch
was exposed to — the candidates of a root-cause analysis, each filed under its 6M
(Ishikawa) category. A parameter becomes a factor only by its position in the
specification: above the USL, in the upper quarter of the tolerance, in the lower
quarter, below the LSL (the middle half is the reference everyone shares).

Given the states the plant's records put runs in (:mod:`sqems.analysis.states`), a run
also exposes its units to *its machine while out of calibration* (one factor per machine
and kind of state: overdue, found out of tolerance, failed, limited) and to *its
operator while not qualified* for the step or work-instruction revision it ran (one
factor per operator, scope and reason): the factor holds only the runs inside the
state's windows, where the plain machine or operator factor dilutes them over its whole
history.

>>> Factor(FactorKind.SHIFT, "night", step="STEP-ASM-20").key
'shift:night@STEP-ASM-20'
>>> spec_zone(251.0, lsl=235.0, usl=250.0)
'above_usl'
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sqems.graph_model.nodes import Batch, Category6M, Parameter, ProcessRun
from sqems.graph_model.store import Direction, GraphStore

if TYPE_CHECKING:
    from sqems.analysis.states import PlantStates

OUT, IN = Direction.OUT, Direction.IN


class FactorKind(StrEnum):
    MATERIAL_LOT = "material_lot"
    SUPPLIER = "supplier"
    MACHINE = "machine"
    OPERATOR = "operator"
    SHIFT = "shift"
    EXCURSION = "excursion"
    CALIBRATION_STATE = "calibration_state"
    """A machine while out of calibration (``zone``: the kind of state)."""
    QUALIFICATION_STATE = "qualification_state"
    """An operator while not qualified for a step or work-instruction revision
    (``step``: the step or revision uid; ``zone``: the reason)."""


CATEGORY: Mapping[FactorKind, Category6M] = {
    FactorKind.MATERIAL_LOT: Category6M.MATERIAL,
    FactorKind.SUPPLIER: Category6M.MATERIAL,
    FactorKind.MACHINE: Category6M.MACHINE,
    FactorKind.OPERATOR: Category6M.MAN,
    FactorKind.SHIFT: Category6M.MAN,
    # a parameter held at the wrong place in its tolerance is a matter of how the
    # process is run: the method bone of the fishbone
    FactorKind.EXCURSION: Category6M.METHOD,
    # a machine out of calibration makes the wrong thing: the machine bone, unless the
    # machine measures or tests (then its verdicts are in doubt: measurement; the
    # factor's ``bone`` says so, see :func:`sqems.analysis.states.calibration_bone`)
    FactorKind.CALIBRATION_STATE: Category6M.MACHINE,
    # a person working outside their qualification
    FactorKind.QUALIFICATION_STATE: Category6M.MAN,
}
"""The fishbone bone each kind of factor is filed under (a factor's own ``bone``, where
set, overrides it)."""

ZONES = ("below_lsl", "lower_quarter", "upper_quarter", "above_usl")
"""Spec positions that make a parameter a factor; the middle half is the reference."""

CALIBRATION_TEXT = {
    "overdue": "overdue for calibration",
    "found_out_of_tolerance": "found out of tolerance",
    "failed": "its calibration had failed",
    "limited": "on a limited calibration",
}
"""A calibration state's kind as the end of ``M-OCCL-1 while …``."""

ZONE_TEXT = {
    "below_lsl": "below the LSL",
    "lower_quarter": "in the lower quarter of the tolerance",
    "upper_quarter": "in the upper quarter of the tolerance",
    "above_usl": "above the USL",
}


@dataclass(frozen=True, slots=True, order=True)
class Factor:
    """Something a unit was exposed to: a lot, a supplier, a machine, an operator, a
    shift at a step, a parameter in a spec zone, or a machine or operator in a state
    its record states (out of calibration, not qualified).

    Only ``kind``, ``uid``, ``step`` and ``zone`` make a factor what it is (equality,
    hashing, order, :attr:`key`); ``detail`` and ``bone`` only describe it.

    >>> Factor(FactorKind.CALIBRATION_STATE, "M-OCCL-1", zone="found_out_of_tolerance").key
    'calibration_state:M-OCCL-1[found_out_of_tolerance]'
    >>> Factor(FactorKind.QUALIFICATION_STATE, "O-17", "STEP-PUMP-30", "lapsed").describe()
    'O-17 while not qualified for STEP-PUMP-30 (lapsed)'
    """

    kind: FactorKind
    uid: str
    """The lot, supplier, machine, operator or parameter uid; the shift's name."""
    step: str | None = None
    """For a shift, the process step it worked; for a qualification state, the step or
    work-instruction revision the operator was not qualified for."""
    zone: str | None = None
    """For an excursion, one of :data:`ZONES`; for a calibration state, its kind
    (``overdue``, ``found_out_of_tolerance``, ``failed``, ``limited``); for a
    qualification state, the reason (``lapsed``, ``revoked``, ``not_yet_qualified``,
    ``never_qualified``, ``other_revision``)."""
    detail: str = field(default="", compare=False)
    """For a state, its windows in words (site time), shown by :meth:`describe`."""
    bone: Category6M | None = field(default=None, compare=False)
    """The fishbone bone when the kind alone does not fix it (a measuring machine out of
    calibration is Measurement)."""

    @property
    def key(self) -> str:
        where = f"@{self.step}" if self.step else ""
        zone = f"[{self.zone}]" if self.zone else ""
        return f"{self.kind.value}:{self.uid}{zone}{where}"

    @property
    def category(self) -> Category6M:
        return self.bone or CATEGORY[self.kind]

    @property
    def state(self) -> str:
        """A state's kind or reason in words (``found out of tolerance``); else empty."""
        if self.kind in (FactorKind.CALIBRATION_STATE, FactorKind.QUALIFICATION_STATE):
            return (self.zone or "").replace("_", " ")
        return ""

    def describe(self) -> str:
        if self.kind is FactorKind.EXCURSION:
            return f"parameter {self.uid} {ZONE_TEXT[self.zone or '']}"
        if self.kind is FactorKind.SHIFT:
            return f"{self.uid} shift at {self.step}"
        if self.kind is FactorKind.CALIBRATION_STATE:
            detail = f" ({self.detail})" if self.detail else ""
            return f"{self.uid} while {CALIBRATION_TEXT.get(self.zone or '', self.state)}{detail}"
        if self.kind is FactorKind.QUALIFICATION_STATE:
            why = f"{self.state} {self.detail}" if self.detail else self.state
            return f"{self.uid} while not qualified for {self.step} ({why})"
        return f"{self.kind.value.replace('_', ' ')} {self.uid}"


def spec_zone(value: float, lsl: float | None, usl: float | None) -> str | None:
    """Where ``value`` sits in the tolerance: one of :data:`ZONES`, or None in the middle
    half (or when the spec has no limit on that side to measure against)."""
    if lsl is not None and value < lsl:
        return "below_lsl"
    if usl is not None and value > usl:
        return "above_usl"
    if lsl is None or usl is None:
        return None
    quarter = (usl - lsl) / 4.0
    if value < lsl + quarter:
        return "lower_quarter"
    if value > usl - quarter:
        return "upper_quarter"
    return None


@dataclass(frozen=True, slots=True)
class RunFacts:
    uid: str
    step: str | None
    machine: str | None
    operator: str | None
    shift: str
    started_at: float
    params: Mapping[str, float]
    """Parameter uid → the actual the run recorded."""
    ended_at: float | None = None
    instruction: str | None = None
    """The work-instruction revision the run followed (``FOLLOWED``), where recorded."""

    @property
    def span(self) -> tuple[float, float]:
        """When the run was made: start to end (its start again while it has none)."""
        return self.started_at, self.started_at if self.ended_at is None else self.ended_at


@dataclass(frozen=True, slots=True)
class LotFacts:
    uid: str
    material: str | None
    supplier: str | None


@dataclass(slots=True)
class BatchFacts:
    uid: str
    product: str | None
    started_at: float
    ended_at: float
    quantity: int
    runs: list[RunFacts] = field(default_factory=list)
    lots: list[LotFacts] = field(default_factory=list)


@dataclass(slots=True)
class PlantFacts:
    """Batches with their runs and lots, and the parameters (with spec limits) they
    recorded."""

    batches: dict[str, BatchFacts]
    parameters: dict[str, Parameter]


_BATCH_STEPS: list[Mapping[str, Direction]] = [
    {"RAN": OUT, "CONSUMED_IN": IN, "OF_PRODUCT": OUT},
    {
        "ON": OUT,
        "OPERATED_BY": OUT,
        "FOR_STEP": OUT,
        "FOLLOWED": OUT,
        "RECORDED": OUT,
        "LOT_OF": OUT,
        "SUPPLIED": IN,
    },
]


def read_batches(store: GraphStore, batch_uids: Iterable[str]) -> PlantFacts:
    """The facts of every batch in ``batch_uids`` (unknown uids are left out)."""
    wanted = list(dict.fromkeys(batch_uids))
    nodes = store.get_many(wanted)
    batches: dict[str, BatchFacts] = {}
    for uid, node in nodes.items():
        if not isinstance(node, Batch):
            continue
        start = node.started_at.timestamp()
        end = node.ended_at.timestamp() if node.ended_at is not None else float("inf")
        batches[uid] = BatchFacts(uid, None, start, end, node.quantity)
    if not batches:
        return PlantFacts({}, {})

    run_of: dict[str, str] = {}
    lots_of: dict[str, list[str]] = defaultdict(list)
    # one read: the batches' runs, lots and products, then what the runs and lots
    # link to (a product links to none of these)
    own, linked = store.edges_along(batches, _BATCH_STEPS)
    for e in own:
        if e.type == "RAN":
            run_of[e.dst] = e.src
        elif e.type == "CONSUMED_IN":
            lots_of[e.dst].append(e.src)
        else:
            batches[e.src].product = e.dst

    runs = store.get_many(run_of)
    links: dict[str, dict[str, str]] = defaultdict(dict)
    actuals: dict[str, dict[str, float]] = defaultdict(dict)
    material: dict[str, str] = {}
    supplier: dict[str, str] = {}
    for e in linked:
        if e.type == "RECORDED":
            actuals[e.src][e.dst] = float(e.props["value"])
        elif e.type == "LOT_OF":
            material[e.src] = e.dst
        elif e.type == "SUPPLIED":
            supplier[e.dst] = e.src
        else:
            links[e.src][e.type] = e.dst
    for uid, run in sorted(runs.items(), key=lambda kv: (kv[1].interval() or (0.0,))[0]):
        if not isinstance(run, ProcessRun):
            continue
        link = links[uid]
        batches[run_of[uid]].runs.append(
            RunFacts(
                uid,
                link.get("FOR_STEP"),
                link.get("ON"),
                link.get("OPERATED_BY"),
                run.shift.value,
                run.started_at.timestamp(),
                actuals[uid],
                run.ended_at.timestamp() if run.ended_at is not None else None,
                link.get("FOLLOWED"),
            )
        )

    for batch, lots in lots_of.items():
        batches[batch].lots = [
            LotFacts(lot, material.get(lot), supplier.get(lot)) for lot in sorted(lots)
        ]

    param_uids = {p for values in actuals.values() for p in values}
    parameters = {
        uid: node for uid, node in store.get_many(param_uids).items() if isinstance(node, Parameter)
    }
    return PlantFacts(batches, parameters)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a defect can have arisen: the process steps at or before its origin (the
    PFMEA link ``ORIGINATES_AT``) and the materials of those steps' products. A factor
    outside it — a run at a later step, a lot of a material used only downstream —
    cannot have caused the defect."""

    steps: frozenset[str]
    materials: frozenset[str]

    def admits_run(self, run: RunFacts) -> bool:
        return run.step is None or run.step in self.steps

    def admits_lot(self, lot: LotFacts) -> bool:
        return lot.material is None or lot.material in self.materials


def factors_of(
    batch: BatchFacts,
    parameters: Mapping[str, Parameter],
    scope: Scope | None = None,
    states: PlantStates | None = None,
) -> frozenset[Factor]:
    """The factors a unit of ``batch`` was exposed to (within ``scope``, when given), with
    the calibration and qualification states of its runs when ``states`` are given
    (:func:`sqems.analysis.states.read_states`)."""
    found: set[Factor] = set()
    for lot in batch.lots:
        if scope is not None and not scope.admits_lot(lot):
            continue
        found.add(Factor(FactorKind.MATERIAL_LOT, lot.uid))
        if lot.supplier is not None:
            found.add(Factor(FactorKind.SUPPLIER, lot.supplier))
    for run in batch.runs:
        if scope is not None and not scope.admits_run(run):
            continue
        if run.machine is not None:
            found.add(Factor(FactorKind.MACHINE, run.machine))
        if run.operator is not None:
            found.add(Factor(FactorKind.OPERATOR, run.operator))
        found.add(Factor(FactorKind.SHIFT, run.shift, step=run.step))
        for param, value in run.params.items():
            spec = parameters.get(param)
            if spec is None:
                continue
            zone = spec_zone(value, spec.lsl, spec.usl)
            if zone is not None:
                found.add(Factor(FactorKind.EXCURSION, param, zone=zone))
        if states is not None:
            found.update(states.factors_of_run(run.uid))
    return frozenset(found)
