"""Is a CAPA's fix working? Recurrence of its defect types on the affected scope, before
the CAPA against after its closure — measured from the graph, not asserted.

The **defect types** are those of the defects and complaints the CAPA addresses
(``OF_TYPE``); the **scope** is the products their units belong to. *Before* is the
span of the same length as *after* that ends when the CAPA was opened; *after* runs
from the closure to ``until`` (default: now). Each side counts the units made in
batches of the scope that started in it and those of them with a defect of the types.

Verdict: **effective** when the rate fell significantly (one-sided Fisher exact test
at ``alpha``), or when nothing recurred on enough units that even the 95 % upper bound
of the rate after (the rule of three, 3/n) lies below the rate before; **not
effective** when it did not fall on enough units; **too early** when too few units
were made since the closure to tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from scipy import stats

from sqems.errors import ValidationFailed
from sqems.figures import probability
from sqems.graph_model.nodes import Batch, Capa, Complaint, Defect
from sqems.graph_model.store import Direction, GraphStore

IN, OUT = Direction.IN, Direction.OUT


@dataclass(frozen=True, slots=True)
class Side:
    start: datetime
    end: datetime
    units: int
    defective: int

    @property
    def rate(self) -> float | None:
        return self.defective / self.units if self.units else None


@dataclass(frozen=True, slots=True)
class Effectiveness:
    capa: str
    defect_types: list[str]
    products: list[str]
    before: Side
    after: Side
    p_value: float | None
    verdict: str
    """``effective``, ``not effective`` or ``too early``."""
    reason: str


def effectiveness(
    store: GraphStore, capa_uid: str, *, until: datetime | None = None, alpha: float = 0.05
) -> Effectiveness:
    capa = store.get(capa_uid)
    if not isinstance(capa, Capa):
        raise ValidationFailed(f"{capa_uid} is a {capa.label}, not a Capa")
    if capa.closed_at is None:
        raise ValidationFailed(f"{capa_uid} is not closed: its effectiveness is measured after")
    until = until or datetime.now(UTC)
    if until <= capa.closed_at:
        raise ValidationFailed("measure effectiveness at a time after the closure")
    addressed = [e.dst for e in store.edges([capa_uid], {"ADDRESSES": OUT})]
    found = store.get_many(addressed)
    issues = [u for u in addressed if isinstance(found.get(u), Defect | Complaint)]
    types = sorted({e.dst for e in store.edges(issues, {"OF_TYPE": OUT})})
    if not types:
        raise ValidationFailed(
            f"{capa_uid} addresses no defect or complaint with a defect type: there is "
            "nothing whose recurrence to measure"
        )
    units = {e.dst for e in store.edges(issues, {"FOUND_ON": OUT, "ABOUT": OUT})}
    batches = {e.src for e in store.edges(list(units), {"PRODUCED": IN})}
    products = sorted({e.dst for e in store.edges(list(batches), {"OF_PRODUCT": OUT})})
    span = until - capa.closed_at
    # the scope's batches and their start times, read once for both sides
    batch_uids = [e.src for e in store.edges(products, {"OF_PRODUCT": IN})]
    started = {u: b.started_at.timestamp() for u, b in store.get_many(batch_uids).items()
               if isinstance(b, Batch)}  # fmt: skip
    after = _side(store, started, types, capa.closed_at, until)
    before = _side(store, started, types, capa.opened_at - span, capa.opened_at)
    p_value, verdict, reason = _judge(before, after, alpha)
    return Effectiveness(capa_uid, types, products, before, after, p_value, verdict, reason)


def _side(store: GraphStore, started: dict[str, float], types: list[str], start: datetime,
          end: datetime) -> Side:  # fmt: skip
    lo, hi = start.timestamp(), end.timestamp()
    inside = [u for u, t in started.items() if lo <= t < hi]
    made = [e.dst for e in store.edges(inside, {"PRODUCED": OUT})]
    defects = store.edges(made, {"FOUND_ON": IN})
    of_type = {e.src for e in store.edges([e.src for e in defects], {"OF_TYPE": OUT})
               if e.dst in types}  # fmt: skip
    defective = {e.dst for e in defects if e.src in of_type}
    return Side(start, end, len(made), len(defective))


def _judge(before: Side, after: Side, alpha: float) -> tuple[float | None, str, str]:
    if before.rate is None or before.defective == 0:
        if after.units == 0:
            return None, "too early", "no units were made in the scope since the closure"
        return None, "too early", "the defect did not occur before either: no rate to compare"
    if after.units == 0:
        return None, "too early", "no units were made in the scope since the closure"
    table = [[after.defective, after.units - after.defective],
             [before.defective, before.units - before.defective]]  # fmt: skip
    p_value = float(stats.fisher_exact(table, alternative="less").pvalue)
    if p_value < alpha:
        return (
            p_value,
            "effective",
            (
                f"the rate fell from {before.rate:.2%} to {after.rate:.2%} "
                f"(p = {probability(p_value)})"
            ),
        )
    if after.defective == 0:
        bound = 3.0 / after.units
        if bound < before.rate:
            return (
                p_value,
                "effective",
                (
                    f"no recurrence in {after.units} units: the rate is below {bound:.2%} (95 %), "
                    f"under {before.rate:.2%} before"
                ),
            )
        needed = int(3.0 / before.rate) + 1
        return (
            p_value,
            "too early",
            (
                f"no recurrence yet, but {after.units} units cannot show it: about {needed} are "
                f"needed at the rate before ({before.rate:.2%})"
            ),
        )
    return (
        p_value,
        "not effective",
        (
            f"{after.defective} recurrence(s) in {after.units} units ({after.rate:.2%}) against "
            f"{before.rate:.2%} before (p = {probability(p_value)})"
        ),
    )
