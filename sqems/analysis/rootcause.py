"""Root-cause ranking: which factor do the defective units share that their peers do not?

Given defective units — named directly, behind complaints, or carrying a defect type in a
time window — :func:`rank_causes`

1. builds the **comparable population**: every unit of the same products made in the
   same period (for complaints, the units that shipped: a scrapped unit cannot
   complain), with the batch that made it and the batches of its sub-assemblies;
2. collects the **candidate factors** each unit was exposed to (material lots,
   suppliers, machines, operators, shifts per step, parameters by spec position; see
   :mod:`sqems.analysis.factors`), including those that reach it through a
   sub-assembly — a board's reflow oven is a factor of the drive built around it;
3. scores each factor by **exposure against the baseline**: the defect rate among
   exposed units against the rest, as a risk ratio with a 95 % interval and a one-sided
   exact (hypergeometric, i.e. Fisher) test, with Benjamini-Hochberg false-discovery
   control over all factors;
4. fits an **L1-regularised logistic regression** on the significant factors together,
   so co-exposed factors are told apart: when a bad lot was only ever moulded on one
   machine, the machine's excess is explained by the lot and its adjusted effect falls
   to nothing, while the lot keeps its own;
5. ranks by the **defects a factor explains** — exposed defective units times the
   attributable fraction ``1 - 1/OR`` of its adjusted odds ratio — so a rare factor with
   a huge but fragile ratio does not outrank one behind most of the defects;
6. gives each cause its 6M category and a **5-Why chain**: the graph path from one
   defective unit (and the complaint or defect that reported it) to the cause.

Units sharing a batch and sub-assembly batches share every factor, so the statistics
run on those cells — a few thousand rows for a 100k-unit plant — not on units.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse, stats
from sklearn.linear_model import LogisticRegression

from sqems.analysis.factors import (
    ZONE_TEXT,
    BatchFacts,
    Factor,
    FactorKind,
    PlantFacts,
    factors_of,
    read_batches,
    spec_zone,
)
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import Category6M, Complaint, Defect, Parameter, Product
from sqems.graph_model.store import Direction, GraphStore, TimeWindow

OUT, IN = Direction.OUT, Direction.IN
DAY = 86_400.0


# --- what to explain --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Defectives:
    """The defective units to explain, and what reported each (a complaint or a defect)."""

    units: tuple[str, ...]
    reported_by: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Unit → (uid, label) of the complaint or defect that reported it."""
    field_returns: bool = False
    """True when every unit came back from the field: the baseline is then the units
    that shipped."""
    window: TimeWindow | None = None
    description: str = ""


def from_units(uids: Iterable[str]) -> Defectives:
    units = tuple(dict.fromkeys(uids))
    return Defectives(units, description=f"{len(units)} units named by the caller")


def from_complaints(store: GraphStore, complaint_uids: Iterable[str]) -> Defectives:
    """The units the complaints are about."""
    wanted = list(dict.fromkeys(complaint_uids))
    about: dict[str, tuple[str, str]] = {}
    for e in store.edges(wanted, {"ABOUT": OUT}):
        about.setdefault(e.dst, (e.src, "Complaint"))
    return Defectives(
        tuple(sorted(about)),
        about,
        field_returns=True,
        description=f"{len(wanted)} complaints about {len(about)} units",
    )


def from_defect_type(
    store: GraphStore, defect_type: str, window: TimeWindow | None = None
) -> Defectives:
    """Units with a defect of ``defect_type`` found in ``window``, or a complaint of that
    type received in it (a defect found on a whole batch has no unit to compare and is
    left out)."""
    if store.label_of(defect_type) != "DefectType":
        raise NotFound(f"defect type {defect_type} is not in the graph ({store.description})")
    window = window or TimeWindow()
    reports = [e.src for e in store.edges([defect_type], {"OF_TYPE": IN})]
    nodes = store.get_many(reports)
    in_window = [
        uid
        for uid, node in nodes.items()
        if isinstance(node, Defect | Complaint) and window.overlaps(node.interval())
    ]
    reported: dict[str, tuple[str, str]] = {}
    from_field: set[str] = set()
    # in-house defects first, so a unit found defective in the plant is reported by
    # its defect even if a complaint about it followed
    for e in sorted(store.edges(in_window, {"FOUND_ON": OUT, "ABOUT": OUT}), key=_found_first):
        reported.setdefault(e.dst, (e.src, nodes[e.src].label))
        if e.type == "ABOUT":
            from_field.add(e.dst)
    # a defect found on a whole batch names no unit to compare; only units have a
    # producing batch
    units = tuple(sorted({e.dst for e in store.edges(reported, {"PRODUCED": IN})}))
    return Defectives(
        units,
        {u: reported[u] for u in units},
        field_returns=bool(units) and from_field.issuperset(units),
        window=window,
        description=f"{len(units)} units with {defect_type}",
    )


def _found_first(e: Any) -> tuple[bool, str, str]:
    return (e.type != "FOUND_ON", e.src, e.dst)


# --- the population ---------------------------------------------------------------------


@dataclass(slots=True)
class Population:
    """Comparable units grouped into cells of identical exposure."""

    facts: PlantFacts
    cells: list[tuple[str, tuple[str, ...]]]
    """(batch, sub-assembly batches) of each cell."""
    size: np.ndarray
    defective: np.ndarray
    example: list[str | None]
    """A defective unit of each cell (None when it has none)."""
    sub_of: dict[str, list[str]]
    """Unit → its sub-assemblies, for the units that are examples."""
    batch_of: dict[str, str]
    products: list[str]
    window: tuple[float, float]


def _population(store: GraphStore, target: Defectives, pad_s: float) -> Population:
    defective = set(target.units)
    own = {e.dst: e.src for e in store.edges(target.units, {"PRODUCED": IN})}
    orphans = [u for u in target.units if u not in own]
    if orphans:
        raise ValidationFailed(
            f"{len(orphans)} of the defective units have no batch that produced them, so "
            f"they cannot be compared (first: {orphans[0]}; is it a unit?)"
        )
    seed_batches = sorted(set(own.values()))
    seed = store.get_many(seed_batches)
    products = sorted({e.dst for e in store.edges(seed_batches, {"OF_PRODUCT": OUT})})
    spans = [n.interval() for n in seed.values()]
    lo = min(s[0] for s in spans if s) - pad_s
    hi = max(s[1] if math.isfinite(s[1]) else s[0] for s in spans if s) + pad_s
    if target.window is not None:
        wlo, whi = target.window.bounds()
        lo, hi = max(lo, wlo - pad_s), min(hi, whi + pad_s) if math.isfinite(whi) else hi

    product_of = {e.src: e.dst for e in store.edges(products, {"OF_PRODUCT": IN})}
    candidates = list(product_of)
    batches = [
        uid
        for uid, node in store.get_many(candidates).items()
        if (span := node.interval()) is not None and span[1] >= lo and span[0] <= hi
    ]
    batches = sorted({*batches, *own.values()})
    # only units of products whose bill of materials uses another product can have
    # sub-assemblies; the other batches need only their unit counts, unless field
    # returns ask which of their units shipped
    uses = store.edges(products, {"USES": OUT})
    parts = store.get_many({e.dst for e in uses})
    assembling = {e.src for e in uses if isinstance(parts.get(e.dst), Product)}
    by_unit = [b for b in batches if target.field_returns or product_of.get(b) in assembling]
    by_count = sorted(set(batches) - set(by_unit))
    counted = set(by_count)
    batch_of = {e.dst: e.src for e in store.edges(by_unit, {"PRODUCED": OUT})} if by_unit else {}
    batch_of.update((u, b) for u, b in own.items() if b not in counted)
    units = list(batch_of)
    if target.field_returns:
        shipped = {e.src for e in store.edges(units, {"SHIPPED_IN": OUT})}
        units = [u for u in units if u in shipped or u in defective]
    may_have_subs = [u for u in units if product_of.get(batch_of[u]) in assembling]
    parent_of = (
        {e.src: e.dst for e in store.edges(may_have_subs, {"ASSEMBLED_INTO": IN})}
        if may_have_subs
        else {}
    )
    sub_batch = (
        {e.dst: e.src for e in store.edges(parent_of, {"PRODUCED": IN})} if parent_of else {}
    )
    subs: dict[str, list[str]] = defaultdict(list)
    for sub, parent in parent_of.items():
        subs[parent].append(sub)

    facts = read_batches(store, {*batch_of.values(), *by_count, *sub_batch.values()})
    index: dict[tuple[str, tuple[str, ...]], int] = {}
    cells: list[tuple[str, tuple[str, ...]]] = []
    size: list[int] = []
    bad: list[int] = []
    example: list[str | None] = []
    none: tuple[str, ...] = ()
    for unit in units:
        parts_of = subs.get(unit)
        if not parts_of:
            key = (batch_of[unit], none)
        elif len(parts_of) == 1:
            made = sub_batch.get(parts_of[0])
            key = (batch_of[unit], none if made is None else (made,))
        else:
            made_in = {sub_batch[s] for s in parts_of if s in sub_batch}
            key = (batch_of[unit], tuple(sorted(made_in)))
        at = index.get(key)
        if at is None:
            at = index[key] = len(cells)
            cells.append(key)
            size.append(0)
            bad.append(0)
            example.append(None)
        size[at] += 1
        if unit in defective:
            bad[at] += 1
            if example[at] is None or unit < str(example[at]):
                example[at] = unit
    sizes = store.degrees(by_count, {"PRODUCED": OUT}) if by_count else {}
    defective_in: dict[str, list[str]] = defaultdict(list)
    for unit, batch in own.items():
        defective_in[batch].append(unit)
    for batch in by_count:
        cells.append((batch, none))
        size.append(sizes[batch])
        bad.append(len(defective_in[batch]))
        example.append(min(defective_in[batch], default=None))
    batch_of.update(own)
    examples = {u for u in example if u is not None}
    return Population(
        facts,
        cells,
        np.asarray(size, dtype=np.int64),
        np.asarray(bad, dtype=np.int64),
        example,
        {u: subs[u] for u in examples if u in subs},
        {u: batch_of[u] for u in examples} | {s: sub_batch[s] for u in examples for s in subs[u]},
        products,
        (lo, hi),
    )


# --- evidence ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    defective_exposed: int
    exposed: int
    defective_total: int
    population: int
    risk_ratio: float
    risk_ratio_low: float
    risk_ratio_high: float
    p_value: float
    q_value: float
    adjusted_odds_ratio: float | None
    """From the multivariable model; None when the factor did not enter it."""
    explained_defects: float

    @property
    def rate_exposed(self) -> float:
        return self.defective_exposed / self.exposed if self.exposed else 0.0

    @property
    def rate_unexposed(self) -> float:
        rest = self.population - self.exposed
        return (self.defective_total - self.defective_exposed) / rest if rest else 0.0


@dataclass(frozen=True, slots=True)
class WhyStep:
    """One link of a 5-Why chain: a node, the edge that led to it, and the answer."""

    uid: str
    label: str
    edge: str | None
    why: str


@dataclass(frozen=True, slots=True)
class Cause:
    rank: int
    factor: Factor
    evidence: Evidence
    explained_by: Factor | None
    """For a factor whose excess a co-exposed, stronger one accounts for."""
    why: tuple[WhyStep, ...]
    aliases: tuple[Factor, ...] = ()
    """Factors with exactly the same exposure: the data cannot tell them from this one."""

    @property
    def category(self) -> Category6M:
        return self.factor.category


@dataclass(slots=True)
class RootCauseReport:
    defectives: Defectives
    population: int
    defective_in_population: int
    products: list[str]
    window: tuple[float, float]
    factors_tested: int
    causes: list[Cause]
    alpha: float


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def _risk_ratio(
    a: np.ndarray, n1: np.ndarray, c: np.ndarray, n0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risk ratio with Katz's log interval; 0.5 is added to every cell of a table with
    an empty cell (the Haldane-Anscombe correction), so the ratio stays finite."""
    zero = (a == 0) | (c == 0) | (n1 - a == 0) | (n0 - c == 0)
    a_, c_ = a + 0.5 * zero, c + 0.5 * zero
    n1_, n0_ = n1 + 1.0 * zero, n0 + 1.0 * zero
    rr = (a_ / n1_) / (c_ / n0_)
    se = np.sqrt(1 / a_ - 1 / n1_ + 1 / c_ - 1 / n0_)
    z = stats.norm.ppf(0.975)
    return rr, rr * np.exp(-z * se), rr * np.exp(z * se)


def rank_causes(
    store: GraphStore,
    target: Defectives,
    *,
    alpha: float = 0.05,
    min_support: int = 3,
    top: int = 10,
    pad_days: float = 1.0,
    max_model_factors: int = 60,
) -> RootCauseReport:
    """Rank the factors behind ``target``'s defective units; see the module docstring.

    ``alpha`` is the false-discovery rate a factor must pass to enter the model,
    ``min_support`` the fewest exposed defective units it needs to, and ``top`` how many
    causes to return.
    """
    if not target.units:
        raise ValidationFailed(f"nothing to explain: {target.description or 'no units'}")
    if not 0 < alpha < 1:
        raise ValidationFailed(f"alpha must be between 0 and 1, got {alpha}")
    pop = _population(store, target, pad_days * DAY)
    factor_sets = {
        uid: factors_of(batch, pop.facts.parameters) for uid, batch in pop.facts.batches.items()
    }
    # the factor matrix: cells by factors, 1 where the cell's units were exposed; the
    # columns in a fixed order, so every backend (and every run) fits the same model
    exposure: list[frozenset[Factor]] = []
    for own, subs in pop.cells:
        exposed = set(factor_sets.get(own, ()))
        for sub in subs:
            exposed |= factor_sets.get(sub, frozenset())
        exposure.append(frozenset(exposed))
    factors = sorted(set().union(*exposure))
    column = {f: j for j, f in enumerate(factors)}
    rows = [i for i, fs in enumerate(exposure) for _ in fs]
    cols = [column[f] for fs in exposure for f in fs]
    x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(pop.cells), len(factors)))
    n, k = pop.size.astype(float), pop.defective.astype(float)
    total_n, total_k = n.sum(), k.sum()
    if total_k == 0:
        raise ValidationFailed("no defective unit falls in the comparable population")
    n1 = np.asarray(x.T @ n).ravel()
    a = np.asarray(x.T @ k).ravel()
    n0, c = total_n - n1, total_k - a
    rr, rr_lo, rr_hi = _risk_ratio(a, n1, c, n0)
    p = stats.hypergeom.sf(a - 1, total_n, total_k, n1)
    q = _benjamini_hochberg(p)

    # Factors exposing exactly the same cells (a lot and a fastener lot that fed the
    # same batches, say) cannot be told apart by any data: one of each group stands for
    # the group and the others are listed beside it as aliases.
    aliases = _aliases(x)
    lead = np.array([j not in aliases or aliases[j][0] == j for j in range(len(factors))])
    chosen = np.flatnonzero(lead & (q < alpha) & (a >= min_support) & (rr > 1) & (n0 > 0))
    chosen = chosen[np.argsort(p[chosen], kind="stable")][:max_model_factors]
    odds = _adjusted_odds(x, n, k, chosen, pop) if len(chosen) else {}
    explained = np.zeros(len(factors))
    for j, ratio in odds.items():
        explained[j] = a[j] * (1 - 1 / ratio) if ratio > 1 else 0.0

    kept = [int(j) for j in chosen if odds.get(int(j), 0.0) > 1.0]
    kept.sort(key=lambda j: (-explained[j], p[j], factors[j]))
    rest = [
        int(j) for j in np.argsort(p, kind="stable") if lead[j] and j not in set(kept) and rr[j] > 1
    ]
    ranking = [*kept, *rest][:top]

    causes = []
    for rank, j in enumerate(ranking, start=1):
        evidence = Evidence(
            int(a[j]),
            int(n1[j]),
            int(total_k),
            int(total_n),
            float(rr[j]),
            float(rr_lo[j]),
            float(rr_hi[j]),
            float(p[j]),
            float(q[j]),
            odds.get(j),
            float(explained[j]),
        )
        by = _explained_by(j, kept, x, k, factors) if j in odds and j not in kept else None
        same = tuple(factors[i] for i in aliases.get(j, ()) if i != j)
        why = _five_whys(factors[j], x, j, k, pop, target)
        causes.append(Cause(rank, factors[j], evidence, by, why, same))
    return RootCauseReport(
        target,
        int(total_n),
        int(total_k),
        pop.products,
        pop.window,
        len(factors),
        causes,
        alpha,
    )


def _adjusted_odds(
    x: sparse.csr_matrix, n: np.ndarray, k: np.ndarray, chosen: np.ndarray, pop: Population
) -> dict[int, float]:
    """Odds ratios of the chosen factors adjusted for each other (and for the product,
    whose base rates differ), from an L1-penalised logistic regression on the cells."""
    product_of = {uid: b.product for uid, b in pop.facts.batches.items()}
    products = sorted({str(product_of.get(own)) for own, _ in pop.cells})
    strata = np.array([products.index(str(product_of.get(own))) for own, _ in pop.cells])
    design = x[:, chosen].toarray()
    if len(products) > 1:
        dummies = (strata[:, None] == np.arange(1, len(products))[None, :]).astype(float)
        design = np.hstack([design, dummies])
    # each cell twice: its defective units (y = 1) and its good ones (y = 0)
    features = np.vstack([design, design])
    y = np.concatenate([np.ones(len(n)), np.zeros(len(n))])
    weight = np.concatenate([k, n - k])
    keep = weight > 0
    model = LogisticRegression(
        l1_ratio=1.0, C=1.0, solver="liblinear", max_iter=1000, random_state=0
    )
    model.fit(features[keep], y[keep], sample_weight=weight[keep])
    coef = model.coef_.ravel()[: len(chosen)]
    return {int(j): float(np.exp(b)) for j, b in zip(chosen, coef, strict=True)}


def _aliases(x: sparse.csr_matrix) -> dict[int, list[int]]:
    """Columns with identical exposure, grouped: column → its group, in column order
    (only columns that share their pattern with another appear)."""
    columns = x.tocsc()
    groups: dict[bytes, list[int]] = {}
    for j in range(columns.shape[1]):
        rows = columns.indices[columns.indptr[j] : columns.indptr[j + 1]]
        groups.setdefault(np.sort(rows).tobytes(), []).append(j)
    return {j: group for group in groups.values() if len(group) > 1 for j in group}


def _explained_by(
    j: int, kept: Sequence[int], x: sparse.csr_matrix, k: np.ndarray, factors: list[Factor]
) -> Factor | None:
    """The kept factor that shares most of ``j``'s exposed defective units."""
    col = x[:, j].toarray().ravel() * k
    best, overlap = None, 0.0
    for other in kept:
        shared = float((col * x[:, other].toarray().ravel()).sum())
        if shared > overlap:
            best, overlap = factors[other], shared
    return best


# --- the 5-Why chain ----------------------------------------------------------------------


def _five_whys(
    factor: Factor,
    x: sparse.csr_matrix,
    j: int,
    k: np.ndarray,
    pop: Population,
    target: Defectives,
) -> tuple[WhyStep, ...]:
    exposed = x[:, j].toarray().ravel() * k
    if not exposed.any():
        return ()
    cell = int(np.argmax(exposed))
    unit = pop.example[cell]
    if unit is None:
        return ()
    chain: list[WhyStep] = []
    reporter = target.reported_by.get(unit)
    if reporter is not None:
        uid, label = reporter
        verb = "was raised about" if label == "Complaint" else "was found on"
        chain.append(WhyStep(uid, label, None, f"{label.lower()} {uid} {verb} unit {unit}"))
        chain.append(
            WhyStep(
                unit,
                "Unit",
                "ABOUT" if label == "Complaint" else "FOUND_ON",
                f"unit {unit} is defective",
            )
        )
    else:
        chain.append(WhyStep(unit, "Unit", None, f"unit {unit} is defective"))
    holder = unit
    own = pop.batch_of[unit]
    batch = pop.facts.batches[own]
    if factor not in factors_of(batch, pop.facts.parameters):
        for sub in sorted(pop.sub_of.get(unit, ())):
            sub_batch = pop.facts.batches.get(pop.batch_of.get(sub, ""))
            if sub_batch is not None and factor in factors_of(sub_batch, pop.facts.parameters):
                chain.append(
                    WhyStep(
                        sub, "Unit", "ASSEMBLED_INTO", f"it was built around sub-assembly {sub}"
                    )
                )
                holder, batch = sub, sub_batch
                break
    chain.append(WhyStep(batch.uid, "Batch", "PRODUCED", f"{holder} was made in batch {batch.uid}"))
    chain.extend(_to_factor(factor, batch, pop.facts.parameters))
    return tuple(chain)


def _to_factor(
    factor: Factor, batch: BatchFacts, parameters: Mapping[str, Parameter]
) -> list[WhyStep]:
    if factor.kind in (FactorKind.MATERIAL_LOT, FactorKind.SUPPLIER):
        for lot in batch.lots:
            if factor.uid in (lot.uid, lot.supplier):
                steps = [
                    WhyStep(
                        lot.uid,
                        "MaterialLot",
                        "CONSUMED_IN",
                        f"the batch consumed lot {lot.uid} of {lot.material}",
                    )
                ]
                if factor.kind is FactorKind.SUPPLIER:
                    steps.append(
                        WhyStep(
                            str(lot.supplier),
                            "Supplier",
                            "SUPPLIED",
                            f"the lot came from supplier {lot.supplier}",
                        )
                    )
                return steps
        return []
    for run in batch.runs:
        value = run.params.get(factor.uid)
        match factor.kind:
            case FactorKind.MACHINE if run.machine == factor.uid:
                last = WhyStep(factor.uid, "Machine", "ON", f"the run was on machine {factor.uid}")
            case FactorKind.OPERATOR if run.operator == factor.uid:
                last = WhyStep(
                    factor.uid, "Operator", "OPERATED_BY", f"the run was operated by {factor.uid}"
                )
            case FactorKind.SHIFT if run.shift == factor.uid and run.step == factor.step:
                return [
                    WhyStep(
                        run.uid,
                        "ProcessRun",
                        "RAN",
                        f"the batch ran step {run.step} as {run.uid} in the {run.shift} shift",
                    )
                ]
            case FactorKind.EXCURSION if value is not None:
                spec = parameters[factor.uid]
                if spec_zone(value, spec.lsl, spec.usl) != factor.zone:
                    continue
                limits = f"spec {spec.lsl} to {spec.usl} {spec.unit}"
                last = WhyStep(
                    factor.uid,
                    "Parameter",
                    "RECORDED",
                    f"the run held {spec.name} at {value:g} {spec.unit}, "
                    f"{ZONE_TEXT[factor.zone or '']} ({limits})",
                )
            case _:
                continue
        run_step = WhyStep(
            run.uid, "ProcessRun", "RAN", f"the batch ran step {run.step} as {run.uid}"
        )
        return [run_step, last]
    return []


def report_dict(report: RootCauseReport) -> dict[str, Any]:
    """A JSON-ready form of the report, for the CLI and the API."""
    return {
        "defectives": report.defectives.description,
        "population": report.population,
        "defective_in_population": report.defective_in_population,
        "products": report.products,
        "factors_tested": report.factors_tested,
        "causes": [
            {
                "rank": c.rank,
                "factor": c.factor.key,
                "kind": c.factor.kind.value,
                "uid": c.factor.uid,
                "describe": c.factor.describe(),
                "category": c.category.value,
                "explained_by": c.explained_by.key if c.explained_by else None,
                "aliases": [f.key for f in c.aliases],
                **{f: getattr(c.evidence, f) for f in Evidence.__slots__},
                "why": [
                    {"uid": w.uid, "label": w.label, "edge": w.edge, "why": w.why} for w in c.why
                ],
            }
            for c in report.causes
        ],
    }
