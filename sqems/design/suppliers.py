"""The evidence on a planned product's materials and suppliers, from the plant's history.

For a BOM item (a material and its intended supplier) the review wants to know how that
supplier's lots of that material have done on the products the plant already makes:

- the **in-house rate**: units made in the batches that consumed the pair's lots
  (``CONSUMED_IN`` → ``PRODUCED``) with a defect of a *material* type (the 6M category a
  supplier answers for), counted as the supplier scorecard counts them
  (:mod:`sqems.quality.suppliers`), as a beta posterior under a plant-wide prior fitted
  to every (supplier, material) pair (:mod:`sqems.design.rates`): a supplier with three
  lots and one bad is pulled towards the plant's rate, one with three hundred is judged
  on its own record;
- whether it is **worse than the plant**: P(rate > plant rate) under the posterior, and
  ``flagged`` only at 0.95 or more — a difference the data do not support is no risk;
- whether another flagged pair **explains** it: every unit holds lots of several
  materials, so a bad resin supplier raises the record of the shaft supplier whose lots
  went into the same batches. A flagged pair X is *explained by* a flagged pair Y of
  another material (stronger evidence first) when X's units without Y's lots are no
  longer flagged while Y's units without X's lots still are; it is then not flagged. When
  neither stands without the other, the data cannot separate them: both stay flagged and
  name each other as ``co_exposed``;
- the **material** over all its suppliers, **incoming inspection** (lots inspected and
  rejected, incoming PPM) and the **complaints** traced to the pair's units;
- the **alternatives**: every other supplier of the material, with P(its rate is below
  the planned supplier's), from posterior draws.

Which pairs the prior is fitted to: those whose lots went into a product on which a
material-type defect has ever been recorded. A material that only goes into products
where no material defect can arise (a board's paste where only housings crack) has
rate zero by construction, and counting such pairs would make the plant's rate look
lower and every exposed supplier look worse than it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import stats

from sqems.design.rates import CREDIBLE, Prior, Rate, fit_prior, posterior, rate_draws, worse_than
from sqems.errors import NotFound
from sqems.graph_model.nodes import Material, Supplier, Verdict
from sqems.graph_model.store import Direction, GraphStore
from sqems.quality.suppliers import (
    lot_inspections,
    material_types,
    traced_complaints,
    units_of_lots,
)

__all__ = [
    "CREDIBLE",
    "FLAG_AT",
    "BomItemLike",
    "Explanation",
    "History",
    "Pair",
    "Prior",
    "Rate",
    "SupplierEvidence",
    "explanations",
    "history",
    "prior",
    "rate_draws",
    "supplier_evidence",
]

IN, OUT = Direction.IN, Direction.OUT

JEFFREYS = Prior(0.5, 0.5, 0)
"""The prior of the head-to-head comparison of two co-exposed pairs."""

FLAG_AT = 0.95
"""A pair is flagged when its posterior P(rate > plant rate) reaches this."""


class BomItemLike(Protocol):
    """What the evidence reads of a BOM item (``sqems.design.plan.BomItem`` fits)."""

    @property
    def material(self) -> str: ...
    @property
    def supplier(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Pair:
    """One supplier's lots of one material and what became of them."""

    supplier: str
    material: str
    lots: frozenset[str]
    units: frozenset[str]
    defective: frozenset[str]
    """Its units with a material-type defect."""
    exposed: bool
    """Whether its lots went into a product on which a material defect was ever found."""


@dataclass(slots=True)
class History:
    """Every (supplier, material) pair of the plant, read once for a whole review."""

    pairs: dict[tuple[str, str], Pair]
    material: set[str]
    """The material-type defect types."""
    units_of_lot: dict[str, set[str]] = field(default_factory=dict)
    defective: set[str] = field(default_factory=set)

    def of_material(self, material: str) -> list[Pair]:
        return [p for (_, m), p in sorted(self.pairs.items()) if m == material]


@dataclass(frozen=True, slots=True)
class SupplierEvidence:
    material: str
    supplier: str | None
    rate: Rate
    """The pair's in-house material-defect rate (the material's when no supplier is planned)."""
    material_rate: Rate
    plant_rate: float
    worse_than_plant: float
    flagged: bool
    lots: int
    lots_inspected: int
    lots_rejected: int
    incoming_ppm: float | None
    complaints: int
    material_complaints: int
    alternatives: list[tuple[str, Rate, float]]
    """Other suppliers of the material: (supplier, rate, P(its rate < the planned one's)),
    the likeliest better first."""
    explained_by: tuple[str, str] | None = None
    """The (supplier, material) whose lots went into the same units and account for this
    pair's record; the pair is then not flagged."""
    co_exposed: list[tuple[str, str]] = field(default_factory=list)
    """Flagged pairs of other materials the data cannot separate from this one."""


@dataclass(frozen=True, slots=True)
class Explanation:
    explained_by: tuple[str, str] | None
    co_exposed: list[tuple[str, str]]


def history(store: GraphStore) -> History:
    """Read every lot's supplier, material and units and the material defects once."""
    lots = [n.uid for page in store.iter_nodes("MaterialLot") for n in page.items]
    supplier_of = {e.dst: e.src for e in store.edges(lots, {"SUPPLIED": IN})}
    material_of = {e.src: e.dst for e in store.edges(lots, {"LOT_OF": OUT})}
    units_of = units_of_lots(store, lots)
    material = material_types(store)
    issues = [e.src for e in store.edges(sorted(material), {"OF_TYPE": IN})]
    defective = {e.dst for e in store.edges(issues, {"FOUND_ON": OUT})}
    products_of_lot = _products_of_lots(store, lots)
    made_of = store.edges(sorted(defective), {"PRODUCED": IN})
    exposed_products = {e.dst for e in store.edges([e.src for e in made_of], {"OF_PRODUCT": OUT})}
    grouped: dict[tuple[str, str], set[str]] = defaultdict(set)
    for lot in lots:
        if lot in supplier_of and lot in material_of:
            grouped[(supplier_of[lot], material_of[lot])].add(lot)
    pairs = {}
    for key, members in grouped.items():
        units: set[str] = set().union(*(units_of.get(lot, set()) for lot in members))
        products: set[str] = set().union(*(products_of_lot.get(lot, set()) for lot in members))
        pairs[key] = Pair(
            supplier=key[0],
            material=key[1],
            lots=frozenset(members),
            units=frozenset(units),
            defective=frozenset(units & defective),
            exposed=bool(products & exposed_products),
        )
    return History(pairs, material, dict(units_of), defective)


def _products_of_lots(store: GraphStore, lots: list[str]) -> dict[str, set[str]]:
    consumed = store.edges(lots, {"CONSUMED_IN": OUT})
    product_of = {e.src: e.dst for e in store.edges([e.dst for e in consumed], {"OF_PRODUCT": OUT})}
    found: dict[str, set[str]] = defaultdict(set)
    for e in consumed:
        if e.dst in product_of:
            found[e.src].add(product_of[e.dst])
    return found


def prior(store: GraphStore, known: History | None = None) -> Prior:
    """The plant-wide Beta prior of (supplier, material) rates, fitted by maximum
    marginal likelihood over the pairs whose lots went into a product where a material
    defect can arise (all pairs when none has ever been found)."""
    known = known or history(store)
    exposed = [p for p in known.pairs.values() if p.exposed] or list(known.pairs.values())
    return fit_prior([(len(p.defective), len(p.units)) for p in exposed])


def _rate(pair: Pair, prior: Prior, without: frozenset[str] = frozenset()) -> Rate:
    units = pair.units - without
    return posterior(len(pair.defective & units), len(units), prior)


def explanations(
    known: History, prior: Prior, *, draws: int = 4000, seed: int = 0
) -> dict[tuple[str, str], Explanation]:
    """For every flagged pair, whether another flagged pair of another material explains
    its record or cannot be separated from it (see the module doc).

    For two flagged pairs X and Y the units made from X's lots and not Y's are set
    against those made from Y's and not X's (each rate under Jeffreys' Beta(1/2, 1/2)
    prior): when the latter are worse with posterior probability :data:`FLAG_AT`, Y
    explains X. When neither side is credibly worse and
    neither pair's units without the other's are flagged on their own, the two are
    co-exposed."""
    level = prior.mean
    flagged = sorted(
        (float(stats.beta.logcdf(level, r.alpha, r.beta)), key)
        for key, pair in known.pairs.items()
        if worse_than(r := _rate(pair, prior), level) >= FLAG_AT
    )
    keys = [key for _, key in flagged]  # the strongest evidence first
    rng = np.random.default_rng(seed)
    by: dict[tuple[str, str], tuple[str, str]] = {}
    co: dict[tuple[str, str], list[tuple[str, str]]] = {key: [] for key in keys}
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            x, y = known.pairs[a], known.pairs[b]
            if x.material == y.material:
                continue
            x_alone, y_alone = _rate(x, prior, y.units), _rate(y, prior, x.units)
            # head to head under Jeffreys' prior: the plant's prior would pull a few
            # units of one side towards a plant rate the other side inflates
            x_worse = float(
                np.mean(
                    rate_draws(_rate(x, JEFFREYS, y.units), draws, rng)
                    > rate_draws(_rate(y, JEFFREYS, x.units), draws, rng)
                )
            )
            if x_worse >= FLAG_AT:
                by.setdefault(b, a)
            elif x_worse <= 1.0 - FLAG_AT:
                by.setdefault(a, b)
            elif worse_than(x_alone, level) < FLAG_AT and worse_than(y_alone, level) < FLAG_AT:
                co[a].append(b)
                co[b].append(a)
    return {
        key: Explanation(by.get(key), [] if key in by else [c for c in co[key] if c not in by])
        for key in keys
    }


def supplier_evidence(
    store: GraphStore,
    item: BomItemLike,
    prior: Prior,
    *,
    draws: int = 4000,
    seed: int = 0,
    known: History | None = None,
) -> SupplierEvidence:
    """The evidence on ``item``'s material from its planned supplier (the material over
    all suppliers when none is planned). ``known`` is :func:`history`'s reading of the
    plant, passed to review many items without reading the plant again."""
    found = store.get_many([item.material] + ([item.supplier] if item.supplier else []))
    if not isinstance(found.get(item.material), Material):
        raise NotFound(
            f"material {item.material} is not in the graph: check the BOM's part numbers"
        )
    if item.supplier is not None and not isinstance(found.get(item.supplier), Supplier):
        raise NotFound(f"supplier {item.supplier} is not in the graph: check the BOM's suppliers")
    known = known or history(store)
    pairs = known.of_material(item.material)
    all_units: set[str] = set().union(*(p.units for p in pairs)) if pairs else set()
    material_rate = posterior(len(all_units & known.defective), len(all_units), prior)
    if item.supplier is None:
        own_lots: set[str] = set().union(*(p.lots for p in pairs)) if pairs else set()
        own_units, rate = all_units, material_rate
    else:
        pair = known.pairs.get((item.supplier, item.material))
        own_lots = set(pair.lots) if pair else set()
        own_units = set(pair.units) if pair else set()
        rate = (
            posterior(len(pair.defective), len(pair.units), prior)
            if pair
            else posterior(0, 0, prior)
        )

    checks = lot_inspections(store, own_lots)
    rejected = sum(any(c.verdict is Verdict.FAIL for c in cs) for cs in checks.values())
    sampled = sum(c.sample_size for cs in checks.values() for c in cs)
    incoming = sum(c.defects_found for cs in checks.values() for c in cs)
    complaints, material_complaints = traced_complaints(store, own_units, known.material)

    rng = np.random.default_rng(seed)
    planned = rate_draws(rate, draws, rng)
    alternatives = []
    for p in pairs:
        if p.supplier == item.supplier:
            continue
        alt = posterior(len(p.defective), len(p.units), prior)
        better = float(np.mean(rate_draws(alt, draws, rng) < planned))
        alternatives.append((p.supplier, alt, better))
    alternatives.sort(key=lambda a: (-a[2], a[0]))
    worse = worse_than(rate, prior.mean)
    why = (
        explanations(known, prior).get((item.supplier, item.material))
        if item.supplier is not None
        else None
    )
    return SupplierEvidence(
        material=item.material,
        supplier=item.supplier,
        rate=rate,
        material_rate=material_rate,
        plant_rate=prior.mean,
        worse_than_plant=worse,
        flagged=worse >= FLAG_AT and (why is None or why.explained_by is None),
        lots=len(own_lots),
        lots_inspected=len(checks),
        lots_rejected=rejected,
        incoming_ppm=incoming / sampled * 1e6 if sampled else None,
        complaints=len(complaints),
        material_complaints=len(material_complaints),
        alternatives=alternatives,
        explained_by=None if why is None else why.explained_by,
        co_exposed=[] if why is None else sorted(why.co_exposed),
    )
