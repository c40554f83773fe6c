"""Defect types that arise at a planned product's steps: how often on similar products,
and what fixed them before.

A defect type ``ORIGINATES_AT`` the process steps where its failure mode arises (the
PFMEA link). For each step of a plan, each such type gets its rate on the *similar*
products — units of those products with a defect of the type over the units made — as a
beta posterior under a prior fitted, by maximum marginal likelihood of the
beta-binomial (:mod:`sqems.design.rates`), to every (defect type, product) pair of the
plant whose product's routing holds the type's step; then its precedents
(:func:`sqems.quality.knowledge.precedents`: the CAPAs that addressed it, effective and
closed ones first) and those CAPAs' uids.

Only defects found on units count (a batch-level defect has no units to divide by).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqems.design.rates import Prior, Rate, fit_prior, posterior
from sqems.errors import NotFound
from sqems.graph_model.nodes import DefectType, ProcessStep, Product
from sqems.graph_model.store import Direction, GraphStore
from sqems.quality.knowledge import Precedent, precedents

__all__ = ["DefectHistory", "StepDefects", "defect_history", "similar_products", "step_defects"]

IN, OUT = Direction.IN, Direction.OUT


@dataclass(frozen=True, slots=True)
class StepDefects:
    step: str
    defect_type: str
    name: str
    category: str
    rate: Rate
    """Units of the similar products with the type / units made, beta posterior."""
    precedents: list[Precedent]
    capas: list[str]


@dataclass(slots=True)
class DefectHistory:
    """Units and defective units by product and type, and the prior over the types'
    rates, read once for a whole review."""

    units: dict[str, set[str]]
    """Units of each released product."""
    with_type: dict[str, set[str]]
    """Units with a defect of each type."""
    origins: dict[str, list[str]]
    """The defect types that originate at each step."""
    prior: Prior


def _units_by_product(store: GraphStore, products: list[str]) -> dict[str, set[str]]:
    batches = store.edges(products, {"OF_PRODUCT": IN})
    product_of = {e.src: e.dst for e in batches}
    units: dict[str, set[str]] = {p: set() for p in products}
    for e in store.edges(list(product_of), {"PRODUCED": OUT}):
        units[product_of[e.src]].add(e.dst)
    return units


def defect_history(store: GraphStore) -> DefectHistory:
    """Read the plant's products, defects and PFMEA links and fit the defect-type prior."""
    products = [n.uid for page in store.iter_nodes("Product") for n in page.items]
    units = _units_by_product(store, products)
    types = [n.uid for page in store.iter_nodes("DefectType") for n in page.items]
    origins: dict[str, list[str]] = defaultdict(list)
    for e in store.edges(types, {"ORIGINATES_AT": OUT}):
        origins[e.dst].append(e.src)
    issues = store.edges(types, {"OF_TYPE": IN})
    type_of = {e.src: e.dst for e in issues}
    with_type: dict[str, set[str]] = defaultdict(set)
    for e in store.edges(list(type_of), {"FOUND_ON": OUT}):
        with_type[type_of[e.src]].add(e.dst)
    routing: dict[str, set[str]] = defaultdict(set)
    for e in store.edges(products, {"STEP_OF": IN}):
        routing[e.dst].add(e.src)
    counts = [
        (len(units[p] & with_type.get(t, set())), len(units[p]))
        for p in products
        for step in sorted(routing[p])
        for t in origins.get(step, [])
    ]
    if not any(n for _, n in counts):  # no routing links: every type on every product
        counts = [(len(units[p] & with_type.get(t, set())), len(units[p]))
                  for p in products for t in types]  # fmt: skip
    return DefectHistory(dict(units), dict(with_type), dict(origins), fit_prior(counts))


def similar_products(store: GraphStore, steps: Sequence[str]) -> list[str]:
    """The released products whose batches ran any of ``steps``: the default "similar
    products" of a plan."""
    runs = [e.src for e in store.edges(list(steps), {"FOR_STEP": IN})]
    batches = [e.src for e in store.edges(runs, {"RAN": IN})]
    found = {e.dst for e in store.edges(batches, {"OF_PRODUCT": OUT})}
    return sorted(found)


def step_defects(
    store: GraphStore, step: str, similar: list[str], *, known: DefectHistory | None = None
) -> list[StepDefects]:
    """The defect types originating at ``step``, their rates on ``similar`` products
    (those whose batches ran the step when empty), precedents and CAPAs, the highest
    rate first."""
    found = store.get_many([step, *similar])
    if not isinstance(found.get(step), ProcessStep):
        raise NotFound(f"process step {step} is not in the graph: check the routing")
    for p in similar:
        if not isinstance(found.get(p), Product):
            raise NotFound(f"product {p} is not in the graph: check the plan's similar_to")
    known = known or defect_history(store)
    similar = similar or similar_products(store, [step])
    units: set[str] = set().union(*(known.units.get(p, set()) for p in similar))
    types = store.get_many(known.origins.get(step, []))
    out = []
    for uid, node in sorted(types.items()):
        if not isinstance(node, DefectType):
            continue
        rate = posterior(len(units & known.with_type.get(uid, set())), len(units), known.prior)
        before = precedents(store, uid)
        out.append(
            StepDefects(
                step=step,
                defect_type=uid,
                name=node.name,
                category=node.category.value,
                rate=rate,
                precedents=before,
                capas=[p.capa for p in before],
            )
        )
    out.sort(key=lambda d: (-d.rate.mean, d.defect_type))
    return out
