"""Quality KPIs of a period: yields, PPM, cost of poor quality, top defects, breakdowns.

Definitions (per product line, over the batches that *started* in the window):

* **yield** — units not scrapped / units produced (reworked units count as good);
* **first-pass yield (FPY)** — units with no defect recorded on them and not scrapped or
  reworked / units produced;
* **rolled throughput yield (RTY)** — for a product, its own line's FPY times the RTY of
  every product its bill of materials uses (``USES``): the chance a finished unit came
  through every line right first time;
* **internal PPM** — units with a defect per million produced; **field PPM** —
  complaints per million units shipped;
* **cost of poor quality** — scrapped units at their unit cost, reworked units at the
  rework share of it, and complaints at the cost of handling one. Costs live in the ERP,
  not the graph, so they come in as a :class:`CostModel`.

Breakdowns by line, machine (units of the batches a machine worked on), shift (the shift
a batch started in) and day (UTC date of a batch's start) carry the same counts, and a
line-by-day matrix of defect rates is ready for a heat map. Whether the shifts differ is
a chi-square test of homogeneity of their defect rates.

Units are read in bulk and counted per batch first, so the groups are sums over batches.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from sqems.analysis.factors import read_batches
from sqems.graph_model.nodes import DefectType, Unit, UnitStatus
from sqems.graph_model.store import Direction, GraphStore, TimeWindow

OUT, IN = Direction.OUT, Direction.IN


class CostModel(BaseModel):
    """What a unit of poor quality costs; defaults are placeholders to override."""

    model_config = ConfigDict(frozen=True)

    unit_cost: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict
    )
    """Product uid → standard cost of one unit."""
    default_unit_cost: float = Field(default=100.0, ge=0, allow_inf_nan=False)
    rework_share: float = Field(default=0.25, ge=0, le=1, allow_inf_nan=False)
    """Rework costs this share of the unit cost."""
    complaint_cost: float = Field(default=500.0, ge=0, allow_inf_nan=False)
    """Handling one complaint: returns, analysis, replacement, administration."""
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")

    def cost_of(self, product: str | None) -> float:
        return self.unit_cost.get(product or "", self.default_unit_cost)


@dataclass(slots=True)
class Counts:
    """Unit counts of one group, and the rates derived from them."""

    produced: int = 0
    defective: int = 0
    """Units with at least one defect recorded."""
    scrapped: int = 0
    reworked: int = 0
    shipped: int = 0
    complaints: int = 0

    def add(self, other: Counts) -> None:
        self.produced += other.produced
        self.defective += other.defective
        self.scrapped += other.scrapped
        self.reworked += other.reworked
        self.shipped += other.shipped
        self.complaints += other.complaints

    @property
    def yield_(self) -> float | None:
        return (self.produced - self.scrapped) / self.produced if self.produced else None

    @property
    def first_pass_yield(self) -> float | None:
        if not self.produced:
            return None
        return (self.produced - self.defective) / self.produced

    @property
    def ppm(self) -> float | None:
        return 1e6 * self.defective / self.produced if self.produced else None

    @property
    def field_ppm(self) -> float | None:
        return 1e6 * self.complaints / self.shipped if self.shipped else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "defective": self.defective,
            "scrapped": self.scrapped,
            "reworked": self.reworked,
            "shipped": self.shipped,
            "complaints": self.complaints,
            "yield": self.yield_,
            "first_pass_yield": self.first_pass_yield,
            "ppm": self.ppm,
            "field_ppm": self.field_ppm,
        }


@dataclass(frozen=True, slots=True)
class DefectTypeCount:
    uid: str
    name: str
    category: str
    count: int
    share: float


@dataclass(frozen=True, slots=True)
class ShiftTest:
    """Chi-square test that every shift has the same defect rate."""

    rates: dict[str, float]
    chi2: float
    dof: int
    p_value: float
    significant: bool
    warning: str | None


@dataclass(slots=True)
class KpiReport:
    window: TimeWindow
    total: Counts
    by_line: dict[str, Counts]
    by_product: dict[str, Counts]
    rolled_throughput_yield: dict[str, float | None]
    by_machine: dict[str, Counts]
    by_shift: dict[str, Counts]
    by_day: dict[str, Counts]
    heatmap: dict[str, Any]
    """``{"lines": [...], "days": [...], "rate": [[...]]}``: defect rate per line and day
    (None where the line made nothing that day)."""
    top_defects: list[DefectTypeCount]
    cost: dict[str, float]
    currency: str
    shift_test: ShiftTest | None
    notes: list[str] = field(default_factory=list)


def kpis(
    store: GraphStore,
    window: TimeWindow | None = None,
    *,
    costs: CostModel | None = None,
    top: int = 3,
    alpha: float = 0.05,
) -> KpiReport:
    """The KPIs of the batches that started in ``window`` (all when None)."""
    window = window or TimeWindow()
    costs = costs or CostModel()
    lo, hi = window.bounds()
    batches = [
        node
        for page in store.iter_nodes("Batch")
        for node in page.items
        if lo <= node.started_at.timestamp() <= hi
    ]
    facts = read_batches(store, (b.uid for b in batches))
    machines = [r.machine for b in facts.batches.values() for r in b.runs if r.machine]
    line_of = {e.src: e.dst for e in store.edges(set(machines), {"PART_OF": OUT})}

    unit_batch = {e.dst: e.src for e in store.edges(facts.batches, {"PRODUCED": OUT})}
    units = list(unit_batch)
    status = {uid: n.status for uid, n in store.get_many(units).items() if isinstance(n, Unit)}
    defects_on: dict[str, list[str]] = defaultdict(list)
    for e in store.edges(units, {"FOUND_ON": IN}):
        defects_on[e.dst].append(e.src)
    shipped = {e.src for e in store.edges(units, {"SHIPPED_IN": OUT})}
    complained = Counter(e.dst for e in store.edges(units, {"ABOUT": IN}))

    per_batch: dict[str, Counts] = defaultdict(Counts)
    for unit, batch in unit_batch.items():
        c = per_batch[batch]
        c.produced += 1
        c.defective += unit in defects_on
        c.scrapped += status.get(unit) is UnitStatus.SCRAPPED
        c.reworked += status.get(unit) is UnitStatus.REWORKED
        c.shipped += unit in shipped
        c.complaints += complained.get(unit, 0)

    total = Counts()
    by: dict[str, dict[str, Counts]] = {
        k: defaultdict(Counts) for k in ("line", "product", "machine", "shift", "day", "cell")
    }
    for uid, b in facts.batches.items():
        c = per_batch.get(uid, Counts())
        total.add(c)
        line = next((line_of[r.machine] for r in b.runs if r.machine in line_of), "unknown")
        day = datetime.fromtimestamp(b.started_at, UTC).date().isoformat()
        shift = b.runs[0].shift if b.runs else "unknown"
        by["line"][line].add(c)
        by["product"][b.product or "unknown"].add(c)
        by["shift"][shift].add(c)
        by["day"][day].add(c)
        by["cell"][f"{line}|{day}"].add(c)
        for machine in {r.machine for r in b.runs if r.machine}:
            by["machine"][machine].add(c)

    top_defects, notes = _top_defects(store, defects_on, top)
    cost = _cost(facts.batches, per_batch, costs)
    return KpiReport(
        window=window,
        total=total,
        by_line=_sorted(by["line"]),
        by_product=_sorted(by["product"]),
        rolled_throughput_yield=_rty(store, by["product"]),
        by_machine=_sorted(by["machine"]),
        by_shift=_sorted(by["shift"]),
        by_day=_sorted(by["day"]),
        heatmap=_heatmap(by["cell"]),
        top_defects=top_defects,
        cost=cost,
        currency=costs.currency,
        shift_test=shift_test(by["shift"], alpha) if len(by["shift"]) > 1 else None,
        notes=notes,
    )


def _sorted(groups: Mapping[str, Counts]) -> dict[str, Counts]:
    return dict(sorted(groups.items()))


def _rty(store: GraphStore, by_product: Mapping[str, Counts]) -> dict[str, float | None]:
    products = [p for p in by_product if p != "unknown"]
    uses: dict[str, list[str]] = defaultdict(list)
    for e in store.edges(products, {"USES": OUT}) if products else []:
        if e.dst in by_product:
            uses[e.src].append(e.dst)
    done: dict[str, float | None] = {}

    def rty(product: str, seen: frozenset[str]) -> float | None:
        if product in done:
            return done[product]
        fpy = by_product[product].first_pass_yield
        value = fpy
        for sub in uses[product]:
            if sub in seen:  # a cyclic bill of materials: count each product once
                continue
            sub_rty = rty(sub, seen | {sub})
            value = None if value is None or sub_rty is None else value * sub_rty
        done[product] = value
        return value

    return {p: rty(p, frozenset({p})) for p in sorted(products)}


def _heatmap(cells: Mapping[str, Counts]) -> dict[str, Any]:
    lines = sorted({k.split("|")[0] for k in cells})
    days = sorted({k.split("|")[1] for k in cells})
    rate = [
        [
            (c.defective / c.produced if c.produced else None)
            if (c := cells.get(f"{line}|{day}")) is not None
            else None
            for day in days
        ]
        for line in lines
    ]
    return {"lines": lines, "days": days, "rate": rate}


def _top_defects(
    store: GraphStore, defects_on: Mapping[str, list[str]], top: int
) -> tuple[list[DefectTypeCount], list[str]]:
    defects = [d for ds in defects_on.values() for d in ds]
    if not defects:
        return [], []
    type_of = {e.src: e.dst for e in store.edges(defects, {"OF_TYPE": OUT})}
    tally = Counter(type_of.values())
    types = store.get_many(tally)
    total = sum(tally.values())
    ranked = []
    for uid, count in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        node = types.get(uid)
        name, category = (
            (node.name, node.category.value) if isinstance(node, DefectType) else (uid, "unknown")
        )
        ranked.append(DefectTypeCount(uid, name, category, count, count / total))
    untyped = len(defects) - len(type_of)
    notes = [f"{untyped} defects have no defect type"] if untyped else []
    return ranked, notes


def _cost(
    batches: Mapping[str, Any], per_batch: Mapping[str, Counts], costs: CostModel
) -> dict[str, float]:
    scrap = rework = external = 0.0
    for uid, c in per_batch.items():
        unit_cost = costs.cost_of(batches[uid].product)
        scrap += c.scrapped * unit_cost
        rework += c.reworked * unit_cost * costs.rework_share
        external += c.complaints * costs.complaint_cost
    return {
        "scrap": scrap,
        "rework": rework,
        "external": external,
        "total": scrap + rework + external,
    }


def shift_test(by_shift: Mapping[str, Counts], alpha: float = 0.05) -> ShiftTest:
    """Chi-square test of homogeneity of the shifts' defect rates."""
    names = sorted(k for k, c in by_shift.items() if c.produced)
    table = np.array(
        [[by_shift[s].defective, by_shift[s].produced - by_shift[s].defective] for s in names],
        dtype=float,
    )
    rates = {s: by_shift[s].defective / by_shift[s].produced for s in names}
    if len(names) < 2 or table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        return ShiftTest(rates, 0.0, 0, 1.0, False, "too little data to compare the shifts")
    chi2, p, dof, expected = stats.chi2_contingency(table, correction=False)
    warning = None
    if (expected < 5).any():
        warning = (
            "some shifts expect fewer than 5 defective units; the chi-square "
            "approximation is rough; widen the window"
        )
    return ShiftTest(rates, float(chi2), int(dof), float(p), bool(p < alpha), warning)


def report_dict(report: KpiReport) -> dict[str, Any]:
    """A JSON-ready form of the report."""

    def groups(g: Mapping[str, Counts]) -> dict[str, Any]:
        return {k: c.as_dict() for k, c in g.items()}

    test = report.shift_test
    return {
        "total": report.total.as_dict(),
        "by_line": groups(report.by_line),
        "by_product": groups(report.by_product),
        "rolled_throughput_yield": report.rolled_throughput_yield,
        "by_machine": groups(report.by_machine),
        "by_shift": groups(report.by_shift),
        "by_day": groups(report.by_day),
        "heatmap": report.heatmap,
        "top_defects": [vars_of(t) for t in report.top_defects],
        "cost_of_poor_quality": {**report.cost, "currency": report.currency},
        "shift_test": None if test is None else vars_of(test),
        "notes": report.notes,
    }


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
