"""Root-cause ranking: which factor do the defective units share that their peers do not?

Given defective units — named directly, behind complaints, or carrying a defect type in a
time window — :func:`rank_causes`

1. builds the **comparable population**: every unit of the same products made in the
   period that made the defective units, whatever became of it (a window chooses the
   defects to explain, never which of their peers to compare; for complaints, the units
   that shipped: a scrapped unit cannot complain), with the batch that made it and the
   batches of its sub-assemblies — less the units known to be defective in the same way
   but not being explained, which are no controls;
2. collects the **candidate factors** each unit was exposed to (material lots,
   suppliers, machines, operators, shifts per step, parameters by spec position; see
   :mod:`sqems.analysis.factors`), including those that reach it through a
   sub-assembly — a board's reflow oven is a factor of the drive built around it —,
   and the states the records put its runs in: a machine while out of calibration, an
   operator while not qualified (:mod:`sqems.analysis.states`), each exposing only the
   runs inside its windows;
3. scores each factor by **exposure against the baseline**: the defect rate among
   exposed units against the rest, as a risk ratio with a 95 % interval and a one-sided
   exact (hypergeometric, i.e. Fisher) test, with Benjamini-Hochberg false-discovery
   control over all factors;
4. fits an **L1-regularised logistic regression** on the significant factors together,
   so co-exposed factors are told apart: when a bad lot was only ever moulded on one
   machine, the machine's excess is explained by the lot and its adjusted effect falls
   to nothing, while the lot keeps its own;
5. gives each cause the **defects it explains**, with an interval: the defects of its
   exposed units in excess of what they would have had without the causes they were
   exposed to, shared among co-exposed causes, so the causes together never explain
   more defects than there are (:func:`_attributable`);
6. gives each cause its 6M category and a **5-Why chain**: the graph path from one
   defective unit (and the complaint or defect that reported it) to the cause — for a
   state, on to the calibration or qualification record that put the run in it.

A state is nested in its machine or operator (every run in the window is a run of the
machine). When the defects sit inside the window, the state has the same excess on
fewer units, so it stands out more strongly and is accepted first; the machine, tested
given the state, then has nothing left and is explained by it, and so are lots that were
merely in use at the time (inside the window their units fare no worse than the
window's other units). Where the two expose exactly the same units, the state leads the
alias group: it names the record that says why.

Units sharing a batch and sub-assembly batches share every factor, so the statistics
run on those cells — a few thousand rows for a 100k-unit plant — not on units.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse, stats
from scipy.special import gammaln

from sqems.analysis.dispersion import BatchCheck, BatchDispersion
from sqems.analysis.factors import (
    ZONE_TEXT,
    BatchFacts,
    Factor,
    FactorKind,
    PlantFacts,
    Scope,
    factors_of,
    read_batches,
    spec_zone,
)
from sqems.analysis.states import PlantStates, read_states
from sqems.errors import NotFound, ValidationFailed
from sqems.figures import plain, probability, ranged
from sqems.graph_model.nodes import (
    Category6M,
    Complaint,
    Defect,
    Parameter,
    ProcessStep,
    Product,
)
from sqems.graph_model.store import DEFAULT_MAX_DEPTH, Direction, Edge, GraphStore, TimeWindow

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
    known: frozenset[str] = frozenset()
    """Other units known to be defective in the same way (a defect or complaint of the
    same type, outside the window or not named): left out of the population, so a
    known defective is never counted as a good control."""


def from_units(store: GraphStore, uids: Iterable[str]) -> Defectives:
    """Units named by the caller, each of which must be a unit with a recorded defect (a
    Defect found on it) or a complaint about it: a good unit has nothing to explain."""
    units = tuple(dict.fromkeys(uids))
    nodes = store.get_many(units)
    missing = [u for u in units if u not in nodes]
    if missing:
        raise NotFound(f"unit {missing[0]} is not in the graph ({store.description})")
    others = [u for u in units if nodes[u].label != "Unit"]
    if others:
        raise ValidationFailed(
            f"{others[0]} is a {nodes[others[0]].label}, not a unit: name defective units"
        )
    reported: dict[str, tuple[str, str]] = {}
    reports = sorted(store.edges(units, {"FOUND_ON": IN, "ABOUT": IN}), key=_found_first)
    labels = {e.src: "Defect" if e.type == "FOUND_ON" else "Complaint" for e in reports}
    for e in reports:
        reported.setdefault(e.dst, (e.src, labels[e.src]))
    good = [u for u in units if u not in reported]
    if good:
        raise ValidationFailed(
            f"unit {good[0]} has no recorded defect or complaint: nothing to explain "
            f"(name units with a Defect found on them or a Complaint about them)"
        )
    known = _reported_units(store, _types_of(store, [r for r, _ in reported.values()]))
    return Defectives(
        units,
        reported,
        description=f"{len(units)} units named by the caller",
        known=frozenset(known - set(units)),
    )


def from_complaints(store: GraphStore, complaint_uids: Iterable[str]) -> Defectives:
    """The units the complaints are about."""
    wanted = list(dict.fromkeys(complaint_uids))
    about: dict[str, tuple[str, str]] = {}
    for e in store.edges(wanted, {"ABOUT": OUT}):
        about.setdefault(e.dst, (e.src, "Complaint"))
    known = _reported_units(store, _types_of(store, wanted))
    return Defectives(
        tuple(sorted(about)),
        about,
        field_returns=True,
        description=f"{len(wanted)} complaints about {len(about)} units",
        known=frozenset(known - set(about)),
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
        known=frozenset(_reported_units(store, [defect_type]) - set(units)),
    )


def _found_first(e: Any) -> tuple[bool, str, str]:
    return (e.type != "FOUND_ON", e.src, e.dst)


def _types_of(store: GraphStore, reports: Iterable[str]) -> list[str]:
    """The defect types of defects or complaints."""
    return sorted({e.dst for e in store.edges(list(reports), {"OF_TYPE": OUT})})


def _reported_units(store: GraphStore, defect_types: Sequence[str]) -> set[str]:
    """Every unit with a defect found on it, or a complaint about it, of these types."""
    if not defect_types:
        return set()
    reports = [e.src for e in store.edges(defect_types, {"OF_TYPE": IN})]
    return {e.dst for e in store.edges(reports, {"FOUND_ON": OUT, "ABOUT": OUT})}


# --- the population ---------------------------------------------------------------------


@dataclass(slots=True)
class Population:
    """Comparable units grouped into cells of identical exposure."""

    facts: PlantFacts
    cells: list[tuple[str, tuple[str, ...]]]
    """(batch, batches of its sub-assemblies at every depth) of each cell."""
    size: np.ndarray
    defective: np.ndarray
    example: list[str | None]
    """A defective unit of each cell (None when it has none)."""
    sub_of: dict[str, list[str]]
    """Unit → its direct sub-assemblies, for the example units and every sub-assembly
    under them."""
    batch_of: dict[str, str]
    products: list[str]
    window: tuple[float, float]
    states: PlantStates = field(default_factory=PlantStates)
    """The calibration and qualification states of the runs of :attr:`facts`."""


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
    # one read for what tens of thousands of units need: the units of the batches
    # counted unit by unit, their shipments (for field returns), their sub-assemblies
    # level by level and the batches that made those
    levels = _bom_levels(store, products, assembling)
    steps = _unit_steps(levels, target.field_returns)
    walked = store.edges_along(by_unit, steps) if by_unit else [[] for _ in steps]
    batch_of = {e.dst: e.src for e in walked[0]}
    batch_of.update((u, b) for u, b in own.items() if b not in counted)
    known = target.known - defective
    units = [u for u in batch_of if u not in known]
    if target.field_returns:
        shipped = {e.src for e in itertools.chain(*walked[1:2]) if e.type == "SHIPPED_IN"}
        shipped.update(e.src for e in store.edges(_outside(units, batch_of, by_unit), _SHIPPED))
        units = [u for u in units if u in shipped or u in defective]
    may_have_subs = [u for u in units if product_of.get(batch_of[u]) in assembling]
    tree = _assemblies(may_have_subs, levels, batch_of, walked[1:])
    sub_batch = tree.batch_of

    facts = read_batches(store, {*batch_of.values(), *by_count, *sub_batch.values()})
    states = read_states(store, facts)
    index: dict[tuple[str, tuple[str, ...]], int] = {}
    cells: list[tuple[str, tuple[str, ...]]] = []
    size: list[int] = []
    bad: list[int] = []
    example: list[str | None] = []
    none: tuple[str, ...] = ()
    for unit in units:
        key = (batch_of[unit], tree.descendant_batches(unit) if unit in tree.children else none)
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
    # a known defective of a counted batch leaves its count
    for e in store.edges(sorted(known), {"PRODUCED": IN}) if known else ():
        if e.src in counted:
            sizes[e.src] -= 1
    defective_in: dict[str, list[str]] = defaultdict(list)
    for unit, batch in own.items():
        defective_in[batch].append(unit)
    for batch in by_count:
        cells.append((batch, none))
        size.append(sizes[batch])
        bad.append(len(defective_in[batch]))
        example.append(min(defective_in[batch], default=None))
    batch_of.update(own)
    examples = [u for u in example if u is not None]
    below = tree.subtree(examples)
    return Population(
        facts,
        cells,
        np.asarray(size, dtype=np.int64),
        np.asarray(bad, dtype=np.int64),
        example,
        {u: tree.children[u] for u in below if u in tree.children},
        {u: batch_of[u] for u in examples} | {s: sub_batch[s] for s in below if s in sub_batch},
        products,
        (lo, hi),
        states,
    )


@dataclass(slots=True)
class _Assemblies:
    """The sub-assembly trees under some units, every level down."""

    children: dict[str, list[str]]
    """Unit → its direct sub-assemblies (sorted)."""
    batch_of: dict[str, str]
    """Sub-assembly (and unit read) → the batch that made it."""
    _below: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def descendant_batches(self, unit: str) -> tuple[str, ...]:
        """The batches of every sub-assembly under ``unit``, at any depth, sorted."""
        done = self._below.get(unit)
        if done is not None:
            return done
        self._below[unit] = ()  # a cycle in the data comes back here and stops
        found: set[str] = set()
        for sub in self.children.get(unit, ()):
            if sub in self.batch_of:
                found.add(self.batch_of[sub])
            if sub in self.children:
                found.update(self.descendant_batches(sub))
        self._below[unit] = done = tuple(sorted(found))
        return done

    def subtree(self, units: Iterable[str]) -> list[str]:
        """``units`` and every sub-assembly under them, each once (a cycle in the data
        is followed once round)."""
        seen: dict[str, None] = {}
        todo = list(units)
        while todo:
            unit = todo.pop(0)
            if unit not in seen:
                seen[unit] = None
                todo.extend(self.children.get(unit, ()))
        return list(seen)


_SHIPPED = {"SHIPPED_IN": OUT}
_BELOW = {"ASSEMBLED_INTO": IN}
_MADE_AND_BELOW = {"PRODUCED": IN, "ASSEMBLED_INTO": IN}
_MADE = {"PRODUCED": IN}


def _bom_levels(store: GraphStore, products: Sequence[str], assembling: set[str]) -> int:
    """How many levels of sub-assemblies the bills of materials allow under units of
    ``products``: a level counts while its products are built from other products (a
    pack from modules, a module from cells)."""
    level = sorted(p for p in products if p in assembling)
    depth = 0
    while level and depth < DEFAULT_MAX_DEPTH:  # a cycle in the bill of materials ends
        depth += 1
        parts = {e.dst for e in store.edges(level, {"USES": OUT})}
        uses = store.edges(sorted(parts), {"USES": OUT}) if parts else []
        inputs = store.get_many({e.dst for e in uses})
        level = sorted({e.src for e in uses if isinstance(inputs.get(e.dst), Product)})
    return depth


def _unit_steps(levels: int, shipments: bool) -> list[Mapping[str, Direction]]:
    """The steps of :meth:`GraphStore.edges_along` from batches to their units, then
    (with ``shipments``) the units' shipments, and ``levels`` levels of sub-assemblies
    each with the batch that made it."""
    first = {**_BELOW, **_SHIPPED} if shipments else _BELOW
    if not levels:
        return [{"PRODUCED": OUT}, *([_SHIPPED] if shipments else [])]
    return [{"PRODUCED": OUT}, first, *[_MADE_AND_BELOW] * (levels - 1), _MADE]


def _outside(units: Iterable[str], batch_of: Mapping[str, str], read: Sequence[str]) -> list[str]:
    """``units`` whose batch was not read unit by unit (their edges are not in hand)."""
    done = set(read)
    return [u for u in units if batch_of[u] not in done]


def _assemblies(
    units: Sequence[str],
    levels: int,
    known: Mapping[str, str],
    walked: Sequence[Sequence[Edge]],
) -> _Assemblies:
    """The sub-assemblies of ``units`` through ``levels`` levels of ``ASSEMBLED_INTO``
    — a pack's modules, their cells, … — from the edges read along
    :func:`_unit_steps` (``walked``, the first step left out)."""
    subs_of: dict[str, list[str]] = defaultdict(list)
    made_by: dict[str, str] = {}
    for e in itertools.chain.from_iterable(walked):
        if e.type == "ASSEMBLED_INTO":
            subs_of[e.dst].append(e.src)
        elif e.type == "PRODUCED":
            made_by[e.dst] = e.src
    children: dict[str, list[str]] = defaultdict(list)
    batch_of = {u: known[u] for u in units if u in known}
    frontier = list(units)
    expanded: set[str] = set(frontier)
    for _ in range(levels):
        found = sorted({(unit, sub) for unit in frontier for sub in subs_of.get(unit, ())})
        if not found:
            break
        for unit, sub in found:
            children[unit].append(sub)
        # a sub-assembly already in hand (a module of the population, under a pack of
        # it) is not expanded twice; a cycle in the data ends here too
        subs = sorted({sub for _, sub in found} - expanded)
        expanded.update(subs)
        batch_of.update((sub, made_by[sub]) for sub in subs if sub in made_by)
        frontier = subs
    return _Assemblies(dict(children), batch_of)


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
    """Mantel-Haenszel odds ratio within strata of product and exposure to the causes
    that stand out (the others, for one of them); None when no stratum holds both
    exposed and unexposed units, so nothing is left to compare."""
    adjusted_odds_ratio_low: float | None
    adjusted_odds_ratio_high: float | None
    """Its 95 % interval (Robins-Breslow-Greenland)."""
    adjusted_p_value: float
    """One-sided exact test conditional on the same strata: what is left of the factor's
    excess once the causes that stand out are accounted for."""
    explained_defects: float
    """The defective units this cause accounts for (:func:`_attributable`): within each
    group of units exposed to the same causes, the defects in excess of what those
    units would have had without them (the attributable fraction ``1 - 1/OR`` of the
    product of their adjusted odds ratios), shared among those causes by the size of
    their log odds ratios — so the causes together never account for more defects than
    there are. 0 for a factor that does not stand out."""
    explained_defects_low: float = 0.0
    explained_defects_high: float = 0.0
    """Its 95 % interval: the same share with this cause's adjusted odds ratio at the ends
    of its interval (the others at their estimates)."""

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
    significant: bool = False
    """Passes the false-discovery control (q < alpha) with at least ``min_support``
    exposed defective units, and keeps an effect of its own conditional on the stronger
    causes that stand out. Only a significant factor is a cause."""
    suspects: tuple[Factor, ...] = ()
    """For a cause: the co-exposed factors of its suspect set - discovered (q < alpha)
    on their own, sharing at least :data:`SUSPECT_OVERLAP` of their exposed defective
    units with this cause and it with them, and without an excess once this cause is
    accounted for. The most plausible first (at the PFMEA origin, then by p-value)."""
    records: tuple[str, ...] = ()
    """For a calibration or qualification state: each of its windows with the records it
    rests on, in words (calibration uid, verdict, as found against reference ±
    tolerance, performed and due dates; qualification uid, reason and dates; site
    time)."""

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
    """Significant causes first, then the other factors by p-value."""
    alpha: float
    defectives_needed: int | None
    """When nothing stands out: the defective units that would find the leading factor
    with 80 % power if its observed risk ratio were real (None if it shows no excess)."""
    conclusion: str
    """The report in plain words: what stands out, or that nothing does and what data
    would settle it."""
    dispersion: float = 1.0
    """How much more the batches' defect rates vary than chance would make them (1:
    as binomial; see :mod:`sqems.analysis.dispersion`), once the causes that stand out
    are in the model (their own excess is not variation). Every test and interval
    carries it: the analysis has about ``population / dispersion`` effective units."""
    origin_steps: tuple[str, ...] = ()
    """The PFMEA origin steps of the defect types explained: only factors at or before
    them (and lots of their products' materials) were candidates. Empty when a defect
    type has no origin recorded, and every factor was one."""

    @property
    def significant_causes(self) -> list[Cause]:
        return [c for c in self.causes if c.significant]


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
    batches: bool = True,
) -> RootCauseReport:
    """Rank the factors behind ``target``'s defective units; see the module docstring.

    ``alpha`` is the false-discovery rate a factor must pass to enter the model,
    ``min_support`` the fewest exposed defective units it needs to, and ``top`` how many
    causes to return. ``batches=False`` takes every unit as an independent trial, as
    if batches varied no more than chance (the baseline of the calibration benchmark;
    see :mod:`sqems.analysis.dispersion`).
    """
    if not target.units:
        raise ValidationFailed(f"nothing to explain: {target.description or 'no units'}")
    if not 0 < alpha < 1:
        raise ValidationFailed(f"alpha must be between 0 and 1, got {alpha}")
    pop = _population(store, target, pad_days * DAY)
    origin = _origin(store, target)
    factor_sets = {
        uid: factors_of(batch, pop.facts.parameters, origin.scope, pop.states)
        for uid, batch in pop.facts.batches.items()
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
    product = _cell_products(pop)
    if target.field_returns and _complaints_pending(store, target, pop):
        # compare units that have been in service about as long
        product = _service_strata(pop, product, n)
    spread = _dispersion(pop, product, n, k, origin, factor_sets, column, independent=not batches)
    dispersion = spread.overall()
    p = _screen(x, n, k, product, spread)
    q = _benjamini_hochberg(p)

    # Factors exposing exactly the same cells (a lot and a fastener lot that fed the
    # same batches, say) cannot be told apart by any data: one of each group stands for
    # the group and the others are listed beside it as aliases.
    plausible = _plausibility(factors, origin, pop.facts, pop.states)
    aliases = _aliases(x, plausible)  # the most plausible of each group first
    lead = np.array([j not in aliases or aliases[j][0] == j for j in range(len(factors))])
    # the Benjamini-Hochberg threshold: the largest p-value the procedure rejected
    # (with room for rounding: the conditional test of the same table, computed as a
    # convolution, may differ from the screening one in the last digits)
    threshold = float(p[q < alpha].max()) * (1 + 1e-9) if (q < alpha).any() else 0.0
    chosen = np.flatnonzero(lead & (q < alpha) & (a >= min_support) & (rr > 1) & (n0 > 0))
    chosen = chosen[np.argsort(p[chosen], kind="stable")][:max_model_factors]
    accepted = _select(x, n, k, product, spread, [int(j) for j in chosen], threshold, p, factors)

    significant = set(accepted)
    if accepted:  # what is left once the causes found are in the model
        dispersion = float(spread.check(x, accepted[:1], accepted[1:]).phi[0])
    rest = [
        int(j)
        for j in np.argsort(p, kind="stable")
        if lead[j] and int(j) not in significant and rr[j] > 1 and a[j] > 0
    ]
    shown = [*accepted, *rest[:top]]
    others = [j for j in shown if j not in significant]
    adjusted: dict[int, _Adjusted] = {}
    if others:
        given = _strata(product, x, accepted)
        check = spread.check(x, others, accepted)
        found = _conditional(x, n, k, given, others)
        adjusted.update(
            (j, adj.dispersed(check, i))
            for i, (j, adj) in enumerate(zip(others, found, strict=True))
        )
    for j in accepted:
        besides = [i for i in accepted if i != j]
        given = _strata(product, x, besides)
        adjusted[j] = _conditional(x, n, k, given, [j])[0].dispersed(
            spread.check(x, [j], besides), 0
        )
    explained = _attributable(x, k, accepted, adjusted)
    suspects = _suspect_sets(x, k, accepted, [int(j) for j in np.flatnonzero(lead & (q < alpha))])
    ranking = [*accepted, *rest][:top]

    causes = []
    for rank, j in enumerate(ranking, start=1):
        adj = adjusted[j]
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
            adj.odds_ratio,
            adj.odds_ratio_low,
            adj.odds_ratio_high,
            adj.p_value,
            *explained.get(j, (0.0, 0.0, 0.0)),
        )
        by = None
        if j not in significant and p[j] < alpha and accepted:
            by = _explained_by(j, accepted, x, k, factors)
        same = tuple(factors[i] for i in aliases.get(j, ()) if i != j)
        why = _five_whys(factors[j], x, j, k, pop, target)
        sharing = sorted(suspects.get(j, ()), key=lambda i: (plausible[i], p[i], i))
        causes.append(
            Cause(
                rank,
                factors[j],
                evidence,
                by,
                why,
                same,
                j in significant,
                tuple(factors[i] for i in sharing),
                tuple(pop.states.records(factors[j])),
            )
        )
    needed = None
    if not accepted and ranking:
        j = ranking[0]
        needed = _defectives_needed(
            float(n1[j] / total_n), float(rr[j]), alpha / len(factors), min_support
        )
        if needed is not None:
            # clustered defects carry less information each: the design effect
            needed = math.ceil(needed * dispersion)
    return RootCauseReport(
        target,
        int(total_n),
        int(total_k),
        pop.products,
        pop.window,
        len(factors),
        causes,
        alpha,
        needed,
        _conclusion(causes, len(factors), int(total_k), alpha, min_support, needed)
        + _clustered(dispersion),
        dispersion,
        origin.steps,
    )


# --- where the defect arises: the PFMEA origin ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    steps: tuple[str, ...] = ()
    scope: Scope | None = None
    products: frozenset[str] = frozenset()
    """The products whose routes hold the origin steps."""


def _origin(store: GraphStore, target: Defectives) -> _Origin:
    """The PFMEA origin steps of the defect types of ``target``'s reports and the scope
    they leave: the steps at or before them on their products' routes, every step of
    the products built into those products, and the materials all of these use. No
    scope (every factor a candidate) unless every defect type has an origin."""
    reports = sorted({uid for uid, _ in target.reported_by.values()})
    types = _types_of(store, reports) if reports else []
    if not types:
        return _Origin()
    links = store.edges(types, {"ORIGINATES_AT": OUT})
    if {e.src for e in links} != set(types):
        return _Origin()
    origin_steps = sorted({e.dst for e in links})
    route = {e.src: e.dst for e in store.edges(origin_steps, {"STEP_OF": OUT})}
    origin_products = sorted(set(route.values()))
    # the products built into the origin's products, at any depth, and the materials
    # all of them use
    upstream: set[str] = set()
    materials: set[str] = set()
    frontier = origin_products
    while frontier:
        uses = store.edges(frontier, {"USES": OUT})
        inputs = store.get_many({e.dst for e in uses})
        built = {e.dst for e in uses if isinstance(inputs.get(e.dst), Product)}
        materials |= {e.dst for e in uses if e.dst in inputs and e.dst not in built}
        frontier = sorted(built - upstream - set(origin_products))
        upstream |= built
    steps_of = store.edges(sorted(upstream | set(origin_products)), {"STEP_OF": IN})
    nodes = store.get_many({e.src for e in steps_of} | set(origin_steps))
    last: dict[str, int] = defaultdict(int)
    for step in origin_steps:
        node = nodes.get(step)
        if isinstance(node, ProcessStep) and step in route:
            last[route[step]] = max(last[route[step]], node.sequence)
    allowed = set(origin_steps)
    for e in steps_of:
        node = nodes.get(e.src)
        before = not isinstance(node, ProcessStep) or node.sequence <= last.get(e.dst, 0)
        if e.dst in upstream or before:
            allowed.add(e.src)
    return _Origin(
        tuple(origin_steps),
        Scope(frozenset(allowed), frozenset(materials)),
        frozenset(origin_products),
    )


# --- co-exposure: tests conditional on the accepted causes ---------------------------------


@dataclass(frozen=True, slots=True)
class _Adjusted:
    odds_ratio: float | None
    odds_ratio_low: float | None
    odds_ratio_high: float | None
    p_value: float
    statistic: float
    """The signed Cochran-Mantel-Haenszel z: how strongly the factor stands out."""

    def dispersed(self, check: BatchCheck, i: int) -> _Adjusted:
        """The same test as the batches see it (``check``'s ``i``-th factor; see
        :mod:`sqems.analysis.dispersion`): every variance times the dispersion — the z
        shrinks by ``sqrt(phi)`` and the interval widens — and the p-value no smaller
        than the normal one of that z, nor, where the batches are overdispersed, than
        the batch rank test's."""
        phi = float(check.phi[i])
        root = math.sqrt(phi)
        z = self.statistic / root
        p_value = float(check.p_value(np.array([self.p_value]), np.array([self.statistic]))[0])
        ratio, low, high = self.odds_ratio, self.odds_ratio_low, self.odds_ratio_high
        if ratio is None or low is None or high is None or ratio <= 0 or phi <= 1.0:
            return _Adjusted(ratio, low, high, p_value, z)
        return _Adjusted(
            ratio,
            ratio * (low / ratio) ** root if low > 0 else low,
            ratio * (high / ratio) ** root,
            p_value,
            z,
        )


def _screen(
    x: sparse.csr_matrix,
    n: np.ndarray,
    k: np.ndarray,
    product: np.ndarray,
    spread: BatchDispersion,
) -> np.ndarray:
    """Each factor's one-sided p-value for an excess of defects within products: the
    exact conditional test given each product's margins (Fisher's exact test when there
    is one product; over several products computed where the normal p-value is under
    0.05, the normal one kept elsewhere), corrected for the batches
    (:meth:`BatchCheck.p_value`)."""
    m = x.shape[1]
    if int(product.max()) == 0:
        big_n, big_k = n.sum(), k.sum()
        n1, a = np.asarray(x.T @ n).ravel(), np.asarray(x.T @ k).ravel()
        exact = stats.hypergeom.sf(a - 1, big_n, big_k, n1)
        var = n1 * (big_n - n1) * big_k * (big_n - big_k) / (big_n**2 * max(big_n - 1, 1))
        z = np.divide(a - n1 * big_k / big_n, np.sqrt(var), out=np.zeros(m), where=var > 0)
    else:
        tests = _conditional(x, n, k, product, range(m), exact=False)
        z = np.array([t.statistic for t in tests])
        # the exact test only where it can matter: a factor whose normal p-value is
        # over 0.05 is not discovered at any usual false-discovery rate, and keeps it
        exact = stats.norm.sf(z)
        ahead = [j for j in range(m) if exact[j] < 0.05]
        if ahead:
            found = _conditional(x, n, k, product, ahead)
            exact[ahead] = [t.p_value for t in found]
    return spread.check(x, range(m)).p_value(exact, z)


SERVICE_PERIODS = 4
"""Production periods a field-return analysis compares within (see
:func:`_service_strata`)."""


PENDING_QUANTILE = 0.9
"""Share of complaints that must have had time to arrive, at the youngest unit's time in
service, for a field-return analysis to compare all its units as one (see
:func:`_complaints_pending`)."""


def _complaints_pending(store: GraphStore, target: Defectives, pop: Population) -> bool:
    """Whether the youngest units of the population have not yet been in service long
    enough for their complaints to arrive: their time in service (from their batch's
    start to the last complaint received) is shorter than :data:`PENDING_QUANTILE` of
    the delays the complaints show (received less the complained unit's batch start).
    Then the analysis compares within production periods (:func:`_service_strata`);
    otherwise nearly every complaint the units will bring is in, and splitting them
    would only cost power."""
    reports = {uid for uid, label in target.reported_by.values() if label == "Complaint"}
    received = {
        uid: span[0]
        for uid, node in store.get_many(sorted(reports)).items()
        if (span := node.interval()) is not None
    }
    if not received:
        return False
    now = max(received.values())
    delays = []
    for unit, (uid, _) in target.reported_by.items():
        batch = pop.facts.batches.get(pop.batch_of.get(unit, ""))
        if uid in received and batch is not None:
            delays.append(received[uid] - batch.started_at)
    starts = [pop.facts.batches[own].started_at for own, _ in pop.cells if own in pop.facts.batches]
    if not delays or not starts:
        return False
    return now - max(starts) < float(np.quantile(delays, PENDING_QUANTILE))


def _service_strata(pop: Population, product: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Each cell's stratum for field returns: its product and its production period.

    Complaints come weeks after production, so on the day of the analysis the units
    made last have had less time in service and fewer complaints than the units made
    first — whatever they were exposed to. A factor of early production (an early lot,
    the machine before a replacement) would then show an excess that is only time in
    service (:func:`_complaints_pending` says when). Within each product, the cells are
    cut into :data:`SERVICE_PERIODS` periods of about equal units by the start of their
    batch, and every comparison is made within a period (strata of product and period,
    as in a cohort analysis by period of entry)."""
    started = np.array(
        [
            pop.facts.batches[own].started_at if own in pop.facts.batches else 0.0
            for own, _ in pop.cells
        ]
    )
    period = np.zeros(len(product), dtype=np.int64)
    for p in np.unique(product):
        mine = np.flatnonzero(product == p)
        order = mine[np.argsort(started[mine], kind="stable")]
        share = np.cumsum(n[order]) / max(float(n[order].sum()), 1.0)
        # a batch's cells stay in one period: cut by start time, not by cell
        cut = np.minimum((share - 1e-12) * SERVICE_PERIODS, SERVICE_PERIODS - 1).astype(np.int64)
        first: dict[float, int] = {}
        for i, c in zip(order, cut, strict=True):
            first.setdefault(started[i], c)
        period[order] = [first[started[i]] for i in order]
    pattern = np.column_stack([product, period])
    return np.unique(pattern, axis=0, return_inverse=True)[1].ravel().astype(np.int64)


def _dispersion(
    pop: Population,
    product: np.ndarray,
    n: np.ndarray,
    k: np.ndarray,
    origin: _Origin,
    factor_sets: Mapping[str, frozenset[Factor]],
    column: Mapping[Factor, int],
    *,
    independent: bool,
) -> BatchDispersion:
    """The batches the analysis counts as its pieces of evidence: the batches that made
    the units (:meth:`BatchDispersion.of`) — or, when the defect arises in a product
    built into the defective units (a cell's defect found on its pack), the batches of
    that origin product, each counted once at its origin (:meth:`BatchDispersion.of_origin`).
    A wild cell batch then counts once, not again through every module and pack its
    cells went into, and two packs of one pack batch with cells of different cell
    batches are not one piece of evidence."""
    own_batches = _cell_batches(pop)
    if independent or not origin.products:
        return BatchDispersion.of(own_batches, product, n, k, independent=independent)
    batches = pop.facts.batches

    def is_origin(batch: str) -> bool:
        facts = batches.get(batch)
        return facts is not None and facts.product in origin.products

    if all(is_origin(own) for own, _ in pop.cells):
        return BatchDispersion.of(own_batches, product, n, k)
    index: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    weights: list[float] = []
    for i, (own, subs) in enumerate(pop.cells):
        found = [own] if is_origin(own) else [b for b in subs if is_origin(b)]
        for b in found:
            rows.append(index.setdefault(b, len(index)))
            cols.append(i)
            weights.append(1.0 / len(found))
    member = sparse.csr_matrix((weights, (rows, cols)), shape=(len(index), len(pop.cells)))
    exposure = [(index[b], column[f]) for b in index for f in factor_sets.get(b, ()) if f in column]
    own = sparse.csr_matrix(
        (np.ones(len(exposure)), ([r for r, _ in exposure], [c for _, c in exposure])),
        shape=(len(index), len(column)),
    )
    return BatchDispersion.of_origin(member, product, n, k, own)


def _cell_batches(pop: Population) -> np.ndarray:
    """Each cell's batch (the one that made its units), as an index."""
    return np.unique([own for own, _ in pop.cells], return_inverse=True)[1].astype(np.int64)


def _attributable(
    x: sparse.csr_matrix, k: np.ndarray, accepted: Sequence[int], adjusted: Mapping[int, _Adjusted]
) -> dict[int, tuple[float, float, float]]:
    """The defective units each accepted cause accounts for, with a 95 % interval.

    The cells are grouped by the accepted causes they were exposed to. A group's
    defects in excess of what it would have had without its causes are its defects
    times ``1 - 1/prod(OR)`` (the odds ratios multiply, as in a logistic model without
    interactions; Greenland and Drescher, "Maximum likelihood estimation of the
    attributable fraction from logistic models", Biometrics 49, 1993, for the
    attributable fraction of a fitted model), and that excess is shared among the
    group's causes by their log odds ratios. Summed over causes, this is at most the
    defective units of the exposed groups: co-exposed causes do not count the same
    defect twice. The interval moves one cause's odds ratio to the ends of its
    interval, the others held at their estimates."""

    def shares(ratios: Mapping[int, float]) -> dict[int, float]:
        logs = {j: math.log(r) if r > 1 else 0.0 for j, r in ratios.items()}
        out = dict.fromkeys(ratios, 0.0)
        for pattern, defects in groups.items():
            total = sum(logs[j] for j in pattern)
            if total <= 0:
                continue
            excess = defects * (1 - math.exp(-total))
            for j in pattern:
                out[j] += excess * logs[j] / total
        return out

    if not accepted:
        return {}
    exposed = x[:, list(accepted)].toarray() > 0
    groups: dict[tuple[int, ...], float] = defaultdict(float)
    for row, defects in zip(exposed, k, strict=True):
        if defects and row.any():
            groups[tuple(accepted[int(i)] for i in np.flatnonzero(row))] += float(defects)
    point = {j: adjusted[j].odds_ratio or 1.0 for j in accepted}
    estimate = shares(point)
    out = {}
    for j in accepted:
        low, high = adjusted[j].odds_ratio_low, adjusted[j].odds_ratio_high
        ends = [shares({**point, j: r})[j] for r in (low, high) if r is not None]
        out[j] = (estimate[j], min([estimate[j], *ends]), max([estimate[j], *ends]))
    return out


def _cell_products(pop: Population) -> np.ndarray:
    product_of = {uid: b.product for uid, b in pop.facts.batches.items()}
    names = [str(product_of.get(own)) for own, _ in pop.cells]
    return np.unique(names, return_inverse=True)[1].astype(np.int64)


def _strata(product: np.ndarray, x: sparse.csr_matrix, given: Sequence[int]) -> np.ndarray:
    """Each cell's stratum: its product and its exposure to each of the ``given``
    factors."""
    if not given:
        return product
    pattern = np.column_stack([product, x[:, list(given)].toarray().astype(np.int64)])
    return np.unique(pattern, axis=0, return_inverse=True)[1].ravel()


def _conditional(
    x: sparse.csr_matrix,
    n: np.ndarray,
    k: np.ndarray,
    strata: np.ndarray,
    columns: Iterable[int],
    *,
    exact: bool = True,
) -> list[_Adjusted]:
    """The 2x2 tables of each of ``columns`` within every stratum, combined: the
    Mantel-Haenszel odds ratio with the Robins-Breslow-Greenland 95 % interval, the
    Cochran-Mantel-Haenszel z, and the exact conditional test (the distribution of the
    exposed defectives given every stratum's margins, a convolution of hypergeometric
    laws: the exact test of a common odds ratio of 1, one-sided; NaN unless ``exact``)."""
    m = int(strata.max()) + 1
    s = sparse.csr_matrix((np.ones(len(strata)), (strata, np.arange(len(strata)))), (m, len(n)))
    big_n, big_k = s @ n, s @ k
    wanted = list(columns)
    cols = x[:, wanted]
    exposed_n = np.asarray((s @ cols.multiply(n[:, None])).todense())
    exposed_k = np.asarray((s @ cols.multiply(k[:, None])).todense())
    found = []
    for i in range(len(wanted)):
        found.append(_combine(big_n, big_k, exposed_n[:, i], exposed_k[:, i], exact))
    return found


def _combine(
    big_n: np.ndarray, big_k: np.ndarray, n1: np.ndarray, a: np.ndarray, exact: bool
) -> _Adjusted:
    informative = (n1 > 0) & (n1 < big_n) & (big_k > 0) & (big_k < big_n)
    big_n, big_k, n1, a = big_n[informative], big_k[informative], n1[informative], a[informative]
    if not len(big_n):
        return _Adjusted(None, None, None, 1.0, 0.0)
    p_value = _exact_conditional_p(big_n, big_k, n1, a) if exact else math.nan
    b, c = n1 - a, big_k - a
    d = big_n - n1 - c
    expected = n1 * big_k / big_n
    variance = n1 * (big_n - n1) * big_k * (big_n - big_k) / (big_n**2 * (big_n - 1))
    z = float((a - expected).sum() / math.sqrt(variance.sum())) if variance.sum() > 0 else 0.0
    if ((a * d).sum() == 0) or ((b * c).sum() == 0):
        # an empty cell in every stratum: add a half to each cell so the ratio is finite
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5
        big_n = big_n + 2.0
    r, s_ = a * d / big_n, b * c / big_n
    big_r, big_s = r.sum(), s_.sum()
    ratio = big_r / big_s
    pp, qq = (a + d) / big_n, (b + c) / big_n
    var = (
        (pp * r).sum() / (2 * big_r**2)
        + (pp * s_ + qq * r).sum() / (2 * big_r * big_s)
        + (qq * s_).sum() / (2 * big_s**2)
    )
    half = stats.norm.ppf(0.975) * math.sqrt(var)
    return _Adjusted(
        float(ratio),
        float(ratio * math.exp(-half)),
        float(ratio * math.exp(half)),
        p_value,
        z,
    )


def _exact_conditional_p(
    big_n: np.ndarray, big_k: np.ndarray, n1: np.ndarray, a: np.ndarray
) -> float:
    """P(exposed defectives >= observed) given every stratum's margins."""
    dist = np.ones(1)
    low = 0
    for nn, kk, ee in zip(big_n.astype(int), big_k.astype(int), n1.astype(int), strict=True):
        lo, hi = max(0, ee + kk - nn), min(ee, kk)
        dist = np.convolve(dist, _hypergeom_pmf(np.arange(lo, hi + 1), nn, kk, ee))
        low += lo
    at = round(float(a.sum())) - low
    return float(min(1.0, max(0.0, dist[max(at, 0) :].sum())))


def _hypergeom_pmf(x: np.ndarray, total: int, marked: int, drawn: int) -> np.ndarray:
    """P(``x`` marked among ``drawn`` of ``total`` with ``marked`` marked), from log
    binomial coefficients (many times faster than the general distribution object on
    the long supports of large strata)."""

    def log_choose(a: float, b: np.ndarray | float) -> np.ndarray:
        return np.asarray(gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1))

    log_p = log_choose(marked, x) + log_choose(total - marked, drawn - x) - log_choose(total, drawn)
    return np.asarray(np.exp(log_p))


def _select(
    x: sparse.csr_matrix,
    n: np.ndarray,
    k: np.ndarray,
    product: np.ndarray,
    spread: BatchDispersion,
    candidates: list[int],
    threshold: float,
    p: np.ndarray,
    factors: list[Factor],
) -> list[int]:
    """The candidates that stand out on their own: forward selection by the strongest
    conditional effect, each candidate tested conditionally on the causes accepted
    before it (strata = product and exposure to each of them) and accepted while its
    exact conditional p-value clears the same Benjamini-Hochberg threshold that
    discovered it; then every accepted cause is tested again given all the others, so
    one that a later, stronger cause accounts for is dropped. Every test carries the
    batch dispersion left once the accepted causes are set aside."""
    accepted: list[int] = []
    pending = list(candidates)
    while pending:
        strata = _strata(product, x, accepted)
        check = spread.check(x, pending, accepted)
        tests = [
            t.dispersed(check, i)
            for i, t in enumerate(_conditional(x, n, k, strata, pending, exact=False))
        ]
        order = sorted(
            range(len(pending)),
            key=lambda i: (-tests[i].statistic, p[pending[i]], factors[pending[i]]),
        )
        passed = next(
            (
                i
                for i in order
                if tests[i].statistic > 0
                and _conditional(x, n, k, strata, [pending[i]])[0].dispersed(check, i).p_value
                <= threshold
            ),
            None,
        )
        if passed is None:
            break
        accepted.append(pending.pop(passed))
    for j in reversed(list(accepted)):
        others = [i for i in accepted if i != j]
        if not others:
            continue
        check = spread.check(x, [j], others)
        held = _conditional(x, n, k, _strata(product, x, others), [j])[0].dispersed(check, 0)
        if held.p_value > threshold:
            accepted.remove(j)
    return accepted


def _defectives_needed(
    exposed_share: float, risk_ratio: float, level: float, min_support: int, power: float = 0.8
) -> int | None:
    """Defective units needed for a factor exposing ``exposed_share`` of the population
    with a true ``risk_ratio`` to be found at one-sided ``level`` with ``power``: the
    normal-approximation sample size for the share of exposed units among the
    defective ones (``exposed_share`` under no effect), and at least enough for
    ``min_support`` exposed defectives. None when no number would do (no excess)."""
    f = exposed_share
    if not 0 < f < 1 or not risk_ratio > 1 or not math.isfinite(risk_ratio):
        return None
    share = f * risk_ratio / (f * risk_ratio + 1 - f)
    z_a, z_b = float(stats.norm.ppf(1 - level)), float(stats.norm.ppf(power))
    size = (z_a * math.sqrt(f * (1 - f)) + z_b * math.sqrt(share * (1 - share))) ** 2 / (
        share - f
    ) ** 2
    return math.ceil(max(size, min_support / share))


def _conclusion(
    causes: Sequence[Cause],
    tested: int,
    defectives: int,
    alpha: float,
    min_support: int,
    needed: int | None,
) -> str:
    """The report in plain words."""
    standing = [c for c in causes if c.significant]
    if standing:
        first = standing[0]
        e = first.evidence
        text = (
            f"{len(standing)} of {tested} factors stand{'s' if len(standing) == 1 else ''} out; "
            f"first {first.factor.describe()}: {e.defective_exposed} of its {e.exposed} units "
            f"defective ({plain(100 * e.rate_exposed)} % against "
            f"{plain(100 * e.rate_unexposed)} %), risk ratio "
            f"{ranged(e.risk_ratio, e.risk_ratio_low, e.risk_ratio_high)}, "
            f"q {probability(e.q_value)}"
        )
        if first.aliases:
            text += "; the data cannot tell it from " + ", ".join(
                f.describe() for f in first.aliases
            )
        if first.suspects:
            one = len(first.suspects) == 1
            text += (
                "; it shares most of its defective units with "
                + ", ".join(f.describe() for f in first.suspects)
                + (", which shows no excess of its own" if one else ", which show no excess")
                + " once it is accounted for (one suspect set: confirm on the parts)"
            )
        explained = [c for c in causes if c.explained_by is not None]
        if explained:
            text += (
                f"; {len(explained)} co-exposed factors are explained by the ones that stand out"
            )
        return text
    text = (
        f"no factor stands out: none of the {tested} factors tested passes the "
        f"false-discovery control (q < {alpha:g}) with at least {min_support} exposed "
        f"defective units and an effect of its own"
    )
    if not causes:
        return text + "; no factor shows any excess of defects"
    e, lead = causes[0].evidence, causes[0].factor
    text += (
        f". The leading factor, {lead.describe()}, has {e.defective_exposed} of the "
        f"{defectives} defective units (risk ratio "
        f"{ranged(e.risk_ratio, e.risk_ratio_low, e.risk_ratio_high)}, "
        f"q {probability(e.q_value)})"
    )
    if needed is None:
        return text + "; it shows no excess that more data could confirm"
    more = f"{needed - defectives:,} more than" if needed > defectives else "as many as"
    return text + (
        f"; if its risk ratio is real, about {needed:,} defective units of this kind "
        f"({more} the {defectives:,} here) would find it with 80 % power at the level a "
        f"single discovery among {tested} factors needs (normal approximation for the "
        f"exposed share of the defective units)"
    )


def _clustered(dispersion: float) -> str:
    """What the conclusion adds when defects cluster by batch (nothing below 1.5)."""
    if dispersion < 1.5:
        return ""
    return (
        f". Defects cluster by batch (dispersion {plain(dispersion)}: batch defect rates vary "
        f"{plain(dispersion)} times as much as chance alone would make them), so every test "
        f"counts about one unit in {plain(dispersion, 2)} as independent evidence"
    )


def _aliases(x: sparse.csr_matrix, plausibility: Sequence[float]) -> dict[int, list[int]]:
    """Columns with identical exposure, grouped: column → its group, the most plausible
    first (lowest ``plausibility``, then column order; only columns that share their
    pattern with another appear)."""
    columns = x.tocsc()
    groups: dict[bytes, list[int]] = {}
    for j in range(columns.shape[1]):
        rows = columns.indices[columns.indptr[j] : columns.indptr[j + 1]]
        groups.setdefault(np.sort(rows).tobytes(), []).append(j)
    return {
        j: sorted(group, key=lambda i: (plausibility[i], i))
        for group in groups.values()
        if len(group) > 1
        for j in group
    }


def _plausibility(
    factors: Sequence[Factor],
    origin: _Origin,
    facts: PlantFacts,
    states: PlantStates | None = None,
) -> list[float]:
    """How plausible each factor is as the cause, for choosing which of factors the data
    cannot tell apart leads them (0 most plausible): 0 for a factor *at* the defect's
    PFMEA origin — the machine, operator, shift or parameter of a run of an origin step,
    or a lot (or its supplier) consumed by a batch of the origin product —, 1 for any
    other factor of a run or batch of the origin product, 2 for the rest (a sub-assembly's
    factors). Without an origin every factor is 2: the order is then the columns'.
    Before, the first in column order led, so a resin lot moulded into the housings
    could hide behind a microcontroller lot on the boards inside them.

    A calibration or qualification state is half a step ahead of its machine or
    operator: where the data cannot tell the two apart (the machine ran only in the
    window), the state leads, since its record says why."""
    if not origin.products:
        return [1.5 if _is_state(f) else 2 for f in factors]
    at: set[tuple[FactorKind, str, str | None]] = set()
    near: set[tuple[FactorKind, str, str | None]] = set()
    for batch in facts.batches.values():
        if batch.product not in origin.products:
            continue
        for lot in batch.lots:
            at.add((FactorKind.MATERIAL_LOT, lot.uid, None))
            if lot.supplier:
                at.add((FactorKind.SUPPLIER, lot.supplier, None))
        for run in batch.runs:
            into = at if run.step in origin.steps else near
            if run.machine:
                into.add((FactorKind.MACHINE, run.machine, None))
            if run.operator:
                into.add((FactorKind.OPERATOR, run.operator, None))
            into.add((FactorKind.SHIFT, run.shift, run.step))
            into.update((FactorKind.EXCURSION, p, None) for p in run.params)
    out: list[float] = []
    for f in factors:
        key = (f.kind, f.uid, f.step if f.kind is FactorKind.SHIFT else None)
        if _is_state(f):
            holder = (
                FactorKind.MACHINE
                if f.kind is FactorKind.CALIBRATION_STATE
                else (FactorKind.OPERATOR)
            )
            key = (holder, f.uid, None)
        level = 0 if key in at else 1 if key in near else 2
        out.append(level - 0.5 if _is_state(f) else level)
    return out


def _is_state(f: Factor) -> bool:
    return f.kind in (FactorKind.CALIBRATION_STATE, FactorKind.QUALIFICATION_STATE)


SUSPECT_OVERLAP = 0.8
"""Share of exposed defective units two factors must share, each way, to be suspects of
one set."""


def _suspect_sets(
    x: sparse.csr_matrix, k: np.ndarray, accepted: Sequence[int], discovered: Sequence[int]
) -> dict[int, list[int]]:
    """Each accepted cause's suspects: discovered factors that are not causes and share
    at least :data:`SUSPECT_OVERLAP` of their exposed defective units with the cause,
    and the cause as much with them (a machine that moulded nearly every batch of a bad
    lot, and nearly only those)."""
    out: dict[int, list[int]] = defaultdict(list)
    if not accepted:
        return out
    defective = x.multiply(k[:, None]).tocsc()
    exposed = [defective[:, j].toarray().ravel() for j in accepted]
    for i in discovered:
        if i in accepted:
            continue
        mine = defective[:, i].toarray().ravel()
        own = float(mine.sum())
        if own <= 0:
            continue
        for j, theirs in zip(accepted, exposed, strict=True):
            shared = float(np.minimum(mine, theirs).sum())
            if shared >= SUSPECT_OVERLAP * own and shared >= SUSPECT_OVERLAP * theirs.sum():
                out[j].append(i)
                break
    return out


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
    path = _path_to(factor, unit, pop)
    if path is None:
        return ()
    for parent, sub in itertools.pairwise(path):
        chain.append(
            WhyStep(sub, "Unit", "ASSEMBLED_INTO", f"{parent} was built around sub-assembly {sub}")
        )
    holder = path[-1]
    batch = pop.facts.batches[pop.batch_of[holder]]
    chain.append(WhyStep(batch.uid, "Batch", "PRODUCED", f"{holder} was made in batch {batch.uid}"))
    chain.extend(why_to_factor(factor, batch, pop.facts.parameters, pop.states))
    return tuple(chain)


def _path_to(factor: Factor, unit: str, pop: Population) -> list[str] | None:
    """The shortest path from ``unit`` down its sub-assemblies (``unit`` first) to the
    unit whose batch was exposed to ``factor``, level by level, in uid order."""
    paths = [[unit]]
    while paths:
        for path in paths:
            batch = pop.facts.batches.get(pop.batch_of.get(path[-1], ""))
            if batch is not None and factor in factors_of(
                batch, pop.facts.parameters, states=pop.states
            ):
                return path
        paths = [[*path, sub] for path in paths for sub in sorted(pop.sub_of.get(path[-1], ()))]
    return None


def why_to_factor(
    factor: Factor,
    batch: BatchFacts,
    parameters: Mapping[str, Parameter],
    states: PlantStates | None = None,
) -> list[WhyStep]:
    """The last links of a 5-Why chain: from ``batch`` to ``factor`` (the lot it
    consumed and the lot's supplier, or the run and its machine, operator, shift or
    parameter actual, or for a state the run, its machine or operator and the record
    that put it in the state, read from ``states``); empty when the batch was not
    exposed to it."""
    if factor.kind in (FactorKind.CALIBRATION_STATE, FactorKind.QUALIFICATION_STATE):
        return _why_to_state(factor, batch, states)
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


def _why_to_state(factor: Factor, batch: BatchFacts, states: PlantStates | None) -> list[WhyStep]:
    """From ``batch`` to a calibration or qualification state: the run made in the
    window, its machine or operator, and the record (the calibration that found the
    state or went overdue, the qualification that lapsed or was revoked), whose answer
    says why: ``M-OCCL-1 ran while out of calibration (found out of tolerance): …``."""
    if states is None:
        return []
    for run in batch.runs:
        window = states.window_of(run.uid, factor)
        if window is None:
            continue
        made = WhyStep(run.uid, "ProcessRun", "RAN", f"the batch ran step {run.step} as {run.uid}")
        if factor.kind is FactorKind.CALIBRATION_STATE:
            holder = WhyStep(factor.uid, "Machine", "ON", f"the run was on machine {factor.uid}")
            label, edge = "Calibration", "CALIBRATES"
        else:
            holder = WhyStep(
                factor.uid, "Operator", "OPERATED_BY", f"the run was operated by {factor.uid}"
            )
            label, edge = "Qualification", "HOLDS"
        if window.record is None:
            # nothing on record to point at (never qualified): the holder says why
            return [made, dataclasses.replace(holder, why=f"{holder.why}, and {window.why}")]
        return [made, holder, WhyStep(window.record, label, edge, f"because {window.why}")]
    return []


def report_dict(report: RootCauseReport) -> dict[str, Any]:
    """A JSON-ready form of the report, for the CLI and the API."""
    return {
        "defectives": report.defectives.description,
        "population": report.population,
        "defective_in_population": report.defective_in_population,
        "products": report.products,
        "factors_tested": report.factors_tested,
        "alpha": report.alpha,
        "conclusion": report.conclusion,
        "defectives_needed": report.defectives_needed,
        "dispersion": report.dispersion,
        "origin_steps": list(report.origin_steps),
        "causes": [
            {
                "rank": c.rank,
                "factor": c.factor.key,
                "kind": c.factor.kind.value,
                "uid": c.factor.uid,
                "describe": c.factor.describe(),
                "category": c.category.value,
                "significant": c.significant,
                "explained_by": c.explained_by.key if c.explained_by else None,
                "aliases": [f.key for f in c.aliases],
                "suspects": [f.key for f in c.suspects],
                "records": list(c.records),
                **{f: getattr(c.evidence, f) for f in Evidence.__slots__},
                "why": [
                    {"uid": w.uid, "label": w.label, "edge": w.edge, "why": w.why} for w in c.why
                ],
            }
            for c in report.causes
        ],
    }
