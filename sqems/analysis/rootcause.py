"""Root-cause ranking: which factor do the defective units share that their peers do not?

Given defective units — named directly, behind complaints, or carrying a defect type in a
time window — :func:`rank_causes`

1. limits the candidates to where the defect can arise: the steps at or before its PFMEA
   origin (``ORIGINATES_AT``), the products built into it and their materials;
2. builds the **population at risk**: every unit of the same products made in the
   period, whatever became of it (for complaints, the units that shipped and had time
   in service; from named units, no other known defective as a control), each physical
   item counted once at the product where the defect arises;
3. collects the **candidate factors** each unit was exposed to (material lots,
   suppliers, machines, operators, shifts per step, parameters by spec position; see
   :mod:`sqems.analysis.factors`), including those that reach it through a
   sub-assembly;
4. tests each factor with **batches as the sample**: a one-sided exact test on counts
   divided by the factor's between-batch dispersion (Rao-Scott / quasi-binomial), and a
   rank test of batch defect rates, stratified by product, with Benjamini-Hochberg
   false-discovery control;
5. selects the causes by **conditional tests** on the causes already accepted, so
   co-exposed factors are told apart, and groups what the data cannot separate into
   one **suspect set** with a plausible leader;
6. gives each cause the defects it explains (attributable fraction with an interval),
   its 6M category and a **5-Why chain**: the graph path from one defective unit (and
   the complaint or defect that reported it) to the cause.

Units sharing a batch and sub-assembly batches share every factor, so the statistics
run on those cells — a few thousand rows for a 100k-unit plant — not on units.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy import sparse, stats

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
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import (
    Category6M,
    Complaint,
    Defect,
    Parameter,
    ProcessStep,
    Product,
)
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
    reported_at: Mapping[str, float] = field(default_factory=dict)
    """Unit → when its report (complaint or defect) was made, in epoch seconds."""
    known_defectives_excluded: bool = False
    """True when the units were named: every other unit with a recorded defect or
    complaint is then left out of the comparison (it is not a good control)."""


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
    return Defectives(
        units,
        reported,
        description=f"{len(units)} units named by the caller",
        known_defectives_excluded=True,
    )


def from_complaints(store: GraphStore, complaint_uids: Iterable[str]) -> Defectives:
    """The units the complaints are about."""
    wanted = list(dict.fromkeys(complaint_uids))
    about: dict[str, tuple[str, str]] = {}
    for e in store.edges(wanted, {"ABOUT": OUT}):
        about.setdefault(e.dst, (e.src, "Complaint"))
    nodes = store.get_many({uid for uid, _ in about.values()})
    return Defectives(
        tuple(sorted(about)),
        about,
        field_returns=True,
        description=f"{len(wanted)} complaints about {len(about)} units",
        reported_at=_report_times(about, nodes),
    )


def _report_times(
    reported: Mapping[str, tuple[str, str]], nodes: Mapping[str, Any]
) -> dict[str, float]:
    times: dict[str, float] = {}
    for unit, (uid, _) in reported.items():
        span = nodes[uid].interval() if uid in nodes else None
        if span is not None:
            times[unit] = span[0]
    return times


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
    kept = {u: reported[u] for u in units}
    return Defectives(
        units,
        kept,
        field_returns=bool(units) and from_field.issuperset(units),
        window=window,
        description=f"{len(units)} units with {defect_type}",
        reported_at=_report_times(kept, nodes),
    )


def _found_first(e: Any) -> tuple[bool, str, str]:
    return (e.type != "FOUND_ON", e.src, e.dst)


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
    notes: list[str] = field(default_factory=list)
    """What was left out of the comparison, and why."""


def _population(
    store: GraphStore, target: Defectives, pad_s: float, origin: frozenset[str] = frozenset()
) -> Population:
    own = {e.dst: e.src for e in store.edges(target.units, {"PRODUCED": IN})}
    orphans = [u for u in target.units if u not in own]
    if orphans:
        raise ValidationFailed(
            f"{len(orphans)} of the defective units have no batch that produced them, so "
            f"they cannot be compared (first: {orphans[0]}; is it a unit?)"
        )
    notes: list[str] = []
    made_of = {e.src: e.dst for e in store.edges(sorted(set(own.values())), {"OF_PRODUCT": OUT})}
    if origin & set(made_of.values()) and not set(made_of.values()) <= origin:
        own = _at_origin(store, own, made_of, origin, notes)
    seed_batches = sorted(set(own.values()))
    seed = store.get_many(seed_batches)
    products = sorted({e.dst for e in store.edges(seed_batches, {"OF_PRODUCT": OUT})})
    spans = [n.interval() for n in seed.values()]
    lo = min(s[0] for s in spans if s) - pad_s
    hi = max(s[1] if math.isfinite(s[1]) else s[0] for s in spans if s) + pad_s
    if target.window is not None:
        wlo, whi = target.window.bounds()
        lo, hi = max(lo, wlo - pad_s), min(hi, whi + pad_s) if math.isfinite(whi) else hi
    if target.field_returns and target.reported_at:
        # recent production has had less time in service to come back: the population
        # stops where the typical (median) time from production to complaint runs out
        made = {u: _made_at(seed[b]) for u, b in own.items() if b in seed}
        lags = [target.reported_at[u] - made[u] for u in made if u in target.reported_at]
        if lags:
            cutoff = max(target.reported_at.values()) - float(np.median(lags))
            if cutoff < hi:
                hi = cutoff
                notes.append(
                    f"field returns: only units made by {_day(cutoff)} are compared (the "
                    f"median {float(np.median(lags)) / DAY:.0f} days from production to "
                    "complaint before the last complaint), so recent production with "
                    "little time in service does not count as good"
                )

    product_of = {e.src: e.dst for e in store.edges(products, {"OF_PRODUCT": IN})}
    candidates = list(product_of)
    # the population at risk is what was made in the period, whatever became of it:
    # a defective unit made outside it is left out, not its batch added back
    batches = sorted(
        uid
        for uid, node in store.get_many(candidates).items()
        if (span := node.interval()) is not None and span[1] >= lo and span[0] <= hi
    )
    in_period = set(batches)
    outside = [u for u, b in own.items() if b not in in_period]
    if outside:
        own = {u: b for u, b in own.items() if b in in_period}
        notes.append(
            f"{len(outside)} defective units made outside the period compared "
            f"({_day(lo)} to {_day(hi)}) are left out"
        )
    if not own:
        raise ValidationFailed(
            f"none of the {len(target.units)} defective units was made in the period "
            f"compared ({_day(lo)} to {_day(hi)}): widen the window"
        )
    defective = set(own)
    # only units of products whose bill of materials uses another product can have
    # sub-assemblies; the other batches need only their unit counts, unless field
    # returns ask which of their units shipped, or other known defectives must be
    # found among them
    uses = store.edges(products, {"USES": OUT})
    parts = store.get_many({e.dst for e in uses})
    assembling = {e.src for e in uses if isinstance(parts.get(e.dst), Product)}
    every_unit = target.field_returns or target.known_defectives_excluded
    by_unit = [b for b in batches if every_unit or product_of.get(b) in assembling]
    by_count = sorted(set(batches) - set(by_unit))
    counted = set(by_count)
    batch_of = {e.dst: e.src for e in store.edges(by_unit, {"PRODUCED": OUT})} if by_unit else {}
    batch_of.update((u, b) for u, b in own.items() if b not in counted)
    units = list(batch_of)
    if target.field_returns:
        shipped = {e.src for e in store.edges(units, {"SHIPPED_IN": OUT})}
        units = [u for u in units if u in shipped or u in defective]
    if target.known_defectives_excluded:
        known = {e.dst for e in store.edges(units, {"FOUND_ON": IN, "ABOUT": IN})} - defective
        if known:
            units = [u for u in units if u not in known]
            notes.append(
                f"{len(known)} other units with a recorded defect or complaint are left "
                "out of the comparison (they are not good controls)"
            )
    may_have_subs = [u for u in units if product_of.get(batch_of[u]) in assembling]
    tree = _assemblies(store, may_have_subs, products, assembling, batch_of)
    sub_batch = tree.batch_of
    level = {u: product_of.get(batch_of[u]) for u in may_have_subs}
    units, moved = _count_once(units, may_have_subs, defective, tree, counted, level, notes)
    for sub, batch in moved.items():
        own[sub] = batch
        defective.add(sub)

    facts = read_batches(store, {*batch_of.values(), *by_count, *sub_batch.values()})
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
        notes,
    )


def _at_origin(
    store: GraphStore,
    own: dict[str, str],
    made_of: Mapping[str, str],
    origin: frozenset[str],
    notes: list[str],
) -> dict[str, str]:
    """The defective units counted at the product where the defect arises (its PFMEA
    origin step's product): a defective assembly holding exactly one unit of that
    product (a drive and its board) becomes that unit; one holding several (a pack and
    its modules) cannot say which, and is left out. Units → their batches."""
    at = {u: b for u, b in own.items() if made_of.get(b) in origin}
    above = sorted(u for u in own if u not in at)
    found: dict[str, list[str]] = defaultdict(list)
    frontier = {u: u for u in above}  # sub-assembly -> the defective unit above it
    while frontier:
        edges = store.edges(sorted(frontier), {"ASSEMBLED_INTO": IN})
        if not edges:
            break
        made = {e.dst: e.src for e in store.edges(sorted({e.src for e in edges}), {"PRODUCED": IN})}
        products = {
            e.src: e.dst for e in store.edges(sorted(set(made.values())), {"OF_PRODUCT": OUT})
        }
        nxt: dict[str, str] = {}
        for e in edges:
            top = frontier[e.dst]
            batch = made.get(e.src)
            if batch is not None and products.get(batch) in origin:
                found[top].append(e.src)
            elif e.src not in nxt:
                nxt[e.src] = top
        frontier = nxt
    moved = dropped = 0
    made_all: dict[str, str] = {}
    single = {u: subs[0] for u, subs in found.items() if len(subs) == 1}
    if single:
        made_all = {e.dst: e.src for e in store.edges(sorted(single.values()), {"PRODUCED": IN})}
    for u in above:
        sub = single.get(u)
        if sub is not None and sub in made_all:
            at.setdefault(sub, made_all[sub])
            moved += 1
        else:
            dropped += 1
    where = ", ".join(sorted(origin))
    notes.append(
        f"each item is counted once, at the product where the defect arises ({where}): "
        f"{moved} defective assemblies are counted as the one sub-assembly of it they hold"
        + (f"; {dropped} that hold several cannot say which and are left out" if dropped else "")
    )
    return at


def _count_once(
    units: list[str],
    assemblies: list[str],
    defective: set[str],
    tree: _Assemblies,
    counted: set[str],
    level: Mapping[str, str | None],
    notes: list[str],
) -> tuple[list[str], dict[str, str]]:
    """Each physical item once, at its origin. When the population holds units of a
    product and of a sub-assembly built into it (boards, and the drives around them),
    the assembly is not another item: if every defective assembly of that product holds
    exactly one compared sub-assembly, its defect is moved down to it and the product's
    units leave the comparison. A defective assembly whose defective sub-assembly is a
    case itself (a module reported in a pack) leaves too. Returns the units kept and
    the sub-assemblies that became cases, with their batches."""
    present = set(units)
    inside: dict[str, list[str]] = {}
    for unit in assemblies:
        subs = tree.subtree([unit])[1:]
        found = [s for s in subs if s in present or tree.batch_of.get(s) in counted]
        if found:
            inside[unit] = found
    if not inside:
        return units, {}
    blocked = {
        level.get(u)
        for u, found in inside.items()
        if u in defective and len(found) != 1 and not any(s in defective for s in found)
    }
    drop: set[str] = set()
    moved: dict[str, str] = {}
    for unit, found in inside.items():
        if unit in defective and any(s in defective for s in found):
            drop.add(unit)
        elif level.get(unit) not in blocked:
            drop.add(unit)
            if unit in defective:
                moved[found[0]] = tree.batch_of[found[0]]
    if drop:
        notes.append(
            f"{len(drop)} assemblies whose sub-assemblies are compared themselves are counted "
            f"once, through the sub-assembly ({len(moved)} defects moved down to it)"
        )
    return [u for u in units if u not in drop], moved


def _made_at(batch: Any) -> float:
    start, end = batch.interval()
    return float(end if math.isfinite(end) else start)


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


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


def _assemblies(
    store: GraphStore,
    units: Sequence[str],
    products: Sequence[str],
    assembling: set[str],
    known: Mapping[str, str],
) -> _Assemblies:
    """The sub-assemblies of ``units`` through every level of ``ASSEMBLED_INTO`` — a
    pack's modules, their cells, … — with two bulk store calls per level. A level is
    read only while the bill of materials says its products are built from others."""
    children: dict[str, list[str]] = defaultdict(list)
    batch_of = {u: known[u] for u in units if u in known}
    frontier = list(units)
    # the products that may still have sub-assemblies at the next level
    level = {p for p in products if p in assembling}
    expanded: set[str] = set(frontier)
    while frontier and level:
        found = store.edges(frontier, {"ASSEMBLED_INTO": IN})
        if not found:
            break
        for e in sorted(found, key=lambda e: (e.dst, e.src)):
            children[e.dst].append(e.src)
        # a sub-assembly already in hand (a module of the population, under a pack of
        # it) is not read twice; a cycle in the data ends here too
        subs = sorted({e.src for e in found} - expanded)
        expanded.update(subs)
        made = store.edges(subs, {"PRODUCED": IN}) if subs else []
        batch_of.update((e.dst, e.src) for e in made)
        parts = {e.dst for e in store.edges(level, {"USES": OUT})}
        uses = store.edges(parts, {"USES": OUT}) if parts else []
        inputs = store.get_many({e.dst for e in uses})
        level = {e.src for e in uses if isinstance(inputs.get(e.dst), Product)}
        frontier = subs if level else []
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
    """Exposed defective units times ``1 - 1/OR`` (adjusted); 0 for a factor that does
    not stand out."""

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
    """Co-exposed factors whose defective units overlap this cause's heavily and that
    the data cannot separate from it (neither keeps an effect given the other): one
    suspect set, led by this factor."""
    dispersion: float = 1.0
    """The between-batch dispersion its tests were divided by (1: binomial)."""
    explained_low: float = 0.0
    explained_high: float = 0.0
    """95 % interval of ``evidence.explained_defects`` (from the adjusted odds ratio's)."""

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
    origin_steps: list[str] = field(default_factory=list)
    """The PFMEA origin steps of the defect types explained (``ORIGINATES_AT``)."""
    factors_after_origin: int = 0
    """Factors left out because they act after the defect's origin step."""
    notes: list[str] = field(default_factory=list)
    """What the comparison left out, and why."""

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
    a: np.ndarray, n1: np.ndarray, c: np.ndarray, n0: np.ndarray, phi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risk ratio with Katz's log interval, its variance multiplied by the dispersion;
    0.5 is added to every cell of a table with an empty cell (the Haldane-Anscombe
    correction), so the ratio stays finite."""
    zero = (a == 0) | (c == 0) | (n1 - a == 0) | (n0 - c == 0)
    a_, c_ = a + 0.5 * zero, c + 0.5 * zero
    n1_, n0_ = n1 + 1.0 * zero, n0 + 1.0 * zero
    rr = (a_ / n1_) / (c_ / n0_)
    se = np.sqrt((1 / a_ - 1 / n1_ + 1 / c_ - 1 / n0_) * phi)
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
    origin = _origin(store, target)
    pop = _population(store, target, pad_days * DAY, origin.products)
    params = pop.facts.parameters
    factor_sets = {
        uid: factors_of(batch, params, origin.scope) for uid, batch in pop.facts.batches.items()
    }
    left_out = 0
    if origin.scope is not None:
        every = set().union(*(factors_of(b, params) for b in pop.facts.batches.values()))
        left_out = len(every) - len(set().union(*factor_sets.values()))
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
    product = _cell_products(pop)
    batch = np.unique([own for own, _ in pop.cells], return_inverse=True)[1].ravel()
    table = _Table(x, n, k, product, batch)
    n1 = np.asarray(x.T @ n).ravel()
    a = np.asarray(x.T @ k).ravel()
    n0, c = total_n - n1, total_k - a
    # units of one batch are not independent: every test is divided by the factor's
    # between-batch dispersion, within products
    clustered = table.dispersion(product, range(len(factors))) if factors else None
    phi = clustered.phi if clustered is not None else np.ones(0)
    rr, rr_lo, rr_hi = _risk_ratio(a, n1, c, n0, phi)
    p = _exact_p(a, n1, total_k, total_n, phi)
    # an excess of defects among the exposed, on the raw counts (the corrected ratio of
    # a table with an empty cell can exceed 1 with no exposed defective at all)
    excess = a * n0 > c * n1
    if product.max(initial=0) > 0:
        # several products: each factor compared within its product (the exact
        # conditional test), so one product's rate does not mask or fake an effect
        eligible = [int(j) for j in np.flatnonzero(a >= min_support)]
        for j, adj in zip(eligible, table.conditional(product, eligible), strict=True):
            p[j] = adj.p_value
            excess[j] = adj.statistic > 0
    elif clustered is not None:
        # the test on the batches themselves, for every factor that could be a cause: a
        # factor must stand out on both
        for col in np.flatnonzero((a >= min_support) & excess):
            p[col] = _gated(float(p[col]), clustered.p_value(int(col)))
    q = _benjamini_hochberg(p)

    # Factors exposing exactly the same cells (a lot and a fastener lot that fed the
    # same batches, say) cannot be told apart by any data: one of each group stands for
    # the group and the others are listed beside it as aliases.
    # The group's leader is the plausible one: at the defect's origin before upstream,
    # then a lot before a parameter, a shift, an operator, a machine or a supplier (the
    # lot, not the machine that only ever ran it).
    aliases = _aliases(x)
    places: dict[Factor, frozenset[str]] | None = None

    def where() -> dict[Factor, frozenset[str]]:
        nonlocal places
        if places is None:
            places = _places(pop.facts)
        return places

    leaders = {
        id(group): min(
            group,
            key=lambda j: (
                origin.rank(factors[j], where()),
                PLAUSIBLE.index(factors[j].kind),
                factors[j],
            ),
        )
        for group in aliases.values()
    }
    lead = np.array([j not in aliases or leaders[id(aliases[j])] == j for j in range(len(factors))])
    # the Benjamini-Hochberg threshold: the largest p-value the procedure rejected
    threshold = float(p[q < alpha].max()) if (q < alpha).any() else 0.0
    chosen = np.flatnonzero(lead & (q < alpha) & (a >= min_support) & excess & (n0 > 0))
    chosen = chosen[np.argsort(p[chosen], kind="stable")][:max_model_factors]
    accepted = _select(table, [int(j) for j in chosen], threshold, p, factors)
    suspects: dict[int, list[int]] = {}
    if accepted:
        pool = np.flatnonzero(lead & (p <= alpha) & (a >= min_support) & excess & (n0 > 0))
        accepted, suspects = _suspect_sets(
            table,
            accepted,
            [int(j) for j in pool],
            threshold,
            factors,
            origin,
            rr,
            where,
        )

    significant = set(accepted)
    in_sets = {i for group in suspects.values() for i in group}
    rest = [
        int(j)
        for j in np.argsort(p, kind="stable")
        if lead[j] and int(j) not in significant and excess[j]
    ]
    shown = [*accepted, *rest[:top]]
    others = [j for j in shown if j not in significant]
    adjusted: dict[int, _Adjusted] = {}
    if others:
        adjusted.update(zip(others, table.conditional(table.strata(accepted), others), strict=True))
    for j in accepted:
        adjusted[j] = table.conditional(table.strata([i for i in accepted if i != j]), [j])[0]
    explained = _attributable(accepted, adjusted, a, total_k)
    ranking = [*accepted, *rest][:top]

    causes = []
    for rank, j in enumerate(ranking, start=1):
        adj = adjusted[j]
        share = explained.get(j, (0.0, 0.0, 0.0))
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
            share[0],
        )
        by = None
        if j not in significant and accepted and (p[j] < alpha or j in in_sets):
            by = _explained_by(j, accepted, x, k, factors)
        same = tuple(factors[i] for i in aliases.get(j, ()) if i != j)
        why = _five_whys(factors[j], x, j, k, pop, target)
        causes.append(
            Cause(
                rank,
                factors[j],
                evidence,
                by,
                why,
                same,
                j in significant,
                tuple(factors[i] for i in suspects.get(j, ())),
                float(phi[j]) if j not in significant else adj.dispersion,
                share[1],
                share[2],
            )
        )
    needed = None
    if not accepted and ranking:
        j = ranking[0]
        needed = _defectives_needed(
            float(n1[j] / total_n), float(rr[j]), alpha / len(factors), min_support
        )
    conclusion = _conclusion(causes, len(factors), int(total_k), alpha, min_support, needed)
    if left_out:
        conclusion += (
            f"; {left_out} factors at steps after the defect's origin "
            f"({', '.join(origin.steps)}) were not offered as causes"
        )
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
        conclusion,
        list(origin.steps),
        left_out,
        pop.notes,
    )


PLAUSIBLE = (
    FactorKind.MATERIAL_LOT,
    FactorKind.EXCURSION,
    FactorKind.SHIFT,
    FactorKind.OPERATOR,
    FactorKind.MACHINE,
    FactorKind.SUPPLIER,
)
"""Kinds of factor from the most specific to the least: of factors the data cannot
separate, the more specific one leads."""


# --- where the defect arises: the PFMEA origin --------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    steps: tuple[str, ...]
    """The origin steps of the defect types explained."""
    scope: Scope | None
    """The steps at or before them and their products' materials; None when a defect
    type has no origin recorded (every factor is then a candidate)."""
    at_origin: frozenset[str]
    """The origin steps and the materials of their own products: where a cause is most
    plausible."""
    products: frozenset[str] = frozenset()
    """The products whose route holds the origin steps."""

    def rank(self, factor: Factor, steps: Mapping[Factor, frozenset[str]]) -> int:
        """0 for a factor at an origin step (or a lot of its product's material), 1 for
        one upstream of it, 2 when there is no origin to judge by."""
        if self.scope is None:
            return 2
        where = steps.get(factor, frozenset())
        return 0 if where & self.at_origin else 1


def _origin(store: GraphStore, target: Defectives) -> _Origin:
    """The PFMEA origin of the defect types of ``target``'s reports."""
    reports = sorted({uid for uid, _ in target.reported_by.values()})
    types = sorted({e.dst for e in store.edges(reports, {"OF_TYPE": OUT})}) if reports else []
    if not types:
        return _Origin((), None, frozenset())
    links = store.edges(types, {"ORIGINATES_AT": OUT})
    if {e.src for e in links} != set(types):
        return _Origin((), None, frozenset())
    origin_steps = sorted({e.dst for e in links})
    route = {e.src: e.dst for e in store.edges(origin_steps, {"STEP_OF": OUT})}
    origin_products = sorted(set(route.values()))
    # the products built into the origin's products, at any depth
    upstream: set[str] = set()
    frontier = origin_products
    materials: set[str] = set()
    own_materials: set[str] = set()
    first = True
    while frontier:
        uses = store.edges(frontier, {"USES": OUT})
        inputs = store.get_many({e.dst for e in uses})
        found = {e.dst for e in uses if isinstance(inputs.get(e.dst), Product)}
        bought = {e.dst for e in uses if e.dst in inputs and e.dst not in found}
        materials |= bought
        if first:
            own_materials = set(bought)
            first = False
        frontier = sorted(found - upstream - set(origin_products))
        upstream |= found
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
    scope = Scope(frozenset(allowed), frozenset(materials))
    return _Origin(
        tuple(origin_steps),
        scope,
        frozenset(origin_steps) | own_materials,
        frozenset(origin_products),
    )


def _places(facts: PlantFacts) -> dict[Factor, frozenset[str]]:
    """Where each factor acts: the steps of its runs, the materials of its lots."""
    found: dict[Factor, set[str]] = defaultdict(set)
    for batch in facts.batches.values():
        for lot in batch.lots:
            if lot.material is not None:
                found[Factor(FactorKind.MATERIAL_LOT, lot.uid)].add(lot.material)
                if lot.supplier is not None:
                    found[Factor(FactorKind.SUPPLIER, lot.supplier)].add(lot.material)
        for run in batch.runs:
            if run.step is None:
                continue
            for f in factors_of(BatchFacts(batch.uid, None, 0.0, 0.0, 0, [run]), facts.parameters):
                found[f].add(run.step)
    return {f: frozenset(v) for f, v in found.items()}


def _suspect_sets(
    table: _Table,
    accepted: list[int],
    pool: list[int],
    threshold: float,
    factors: list[Factor],
    origin: _Origin,
    rr: np.ndarray,
    places: Callable[[], dict[Factor, frozenset[str]]],
) -> tuple[list[int], dict[int, list[int]]]:
    """Co-exposed factors that cannot be told from a cause, as one suspect set with a
    plausible leader.

    A factor of ``pool`` joins a cause's set when at least half of the defective units
    of each are exposed to both (heavy overlap) and the cause keeps no effect of its
    own given that factor (the data do not separate them). The set's leader is the
    member that keeps its effect given every other member, then one at the defect's
    PFMEA origin step (or a lot of its product's material) before one upstream of it,
    then the higher risk ratio (the more specific exposure: a lot before the machine
    that ran it and others); a leader must still stand out given the other causes.
    Returns the causes (a leader in its cause's place) and each leader's set."""
    k = table.k
    claimed = set(accepted)
    result = list(accepted)
    sets: dict[int, list[int]] = {}
    free = [i for i in pool if i not in claimed]
    if not free:
        return result, sets
    dense = table.x[:, free].toarray() * k[:, None]
    exposed_k = dense.sum(axis=0)
    where: dict[Factor, frozenset[str]] | None = None
    for pos, j in enumerate(list(result)):
        others = [i for i in result if i != j]
        col = table.x[:, j].toarray().ravel()
        a_j = float((col * k).sum())
        shared = (dense * col[:, None]).sum(axis=0)
        members = []
        for at, i in enumerate(free):
            if i in claimed or shared[at] < 0.5 * max(a_j, exposed_k[at]):
                continue
            alone = table.conditional(table.strata([*others, i]), [j])[0]
            if alone.p_value > threshold:
                members.append(i)
        if not members:
            continue
        group = [j, *members]
        if where is None:
            where = places()

        def holds(f: int, given: list[int]) -> bool:
            return table.conditional(table.strata(given), [f])[0].p_value <= threshold

        order = sorted(
            group,
            key=lambda f: (
                not holds(f, [*others, *(g for g in group if g != f)]),
                origin.rank(factors[f], where),
                -float(rr[f]),
                factors[f],
            ),
        )
        leader = next((f for f in order if f == j or holds(f, others)), j)
        result[pos] = leader
        sets[leader] = [g for g in group if g != leader]
        claimed.update(group)
    return result, sets


def _attributable(
    accepted: Sequence[int], adjusted: Mapping[int, _Adjusted], a: np.ndarray, cases: float
) -> dict[int, tuple[float, float, float]]:
    """The defects each cause accounts for, with a 95 % interval: its exposed defective
    units times the attributable fraction among the exposed, ``1 - 1/OR`` (Miettinen
    1974), with the adjusted odds ratio and its interval's ends. When causes share
    defective units their shares could add up to more than the cases; then every share
    (and every upper end) is scaled down so the total stays within them."""
    found: dict[int, tuple[float, float, float]] = {}
    for j in accepted:
        adj = adjusted[j]
        found[j] = (
            _explained(float(a[j]), adj.odds_ratio),
            _explained(float(a[j]), adj.odds_ratio_low),
            _explained(float(a[j]), adj.odds_ratio_high),
        )
    for at in (0, 2):
        total = sum(v[at] for v in found.values())
        if total > cases:
            scale = cases / total
            found = {
                j: tuple(x * scale if i >= at else x for i, x in enumerate(v))  # type: ignore[misc]
                for j, v in found.items()
            }
    return found


# --- batch-to-batch variation: the dispersion of each test ------------------------------


def _dispersion(
    x: sparse.csr_matrix,
    n: np.ndarray,
    k: np.ndarray,
    cluster: np.ndarray,
    group: np.ndarray,
) -> _Clustered:
    """The dispersion factor of each column of ``x``: Pearson's X² over the *clusters*
    (batches) split by exposure, under the model of one defect rate per ``group`` and
    exposure, divided by its degrees of freedom (the clusters in a group and exposure
    whose rate is strictly between 0 and 1, less one each), at least 1.

    Units of one batch share more than the factors describe, so defects cluster by batch
    beyond binomial variation; the ratio of the observed between-batch variance to the
    binomial one is the design effect of Rao & Scott (1992) and the quasi-binomial
    dispersion of Williams (1982) / McCullagh & Nelder (1989, §4.5). Dividing every count
    of a test by it makes the effective sample size that of independent batches. Each
    column is fitted with its own exposure split, so a real cause does not inflate its
    own factor (it does inflate the others', which is conservative).

    ``cluster``: the cluster of each row (row of ``x``), numbered from 0; ``group``: the
    group of each cluster (clusters are nested in groups)."""
    n_clusters, n_groups = int(cluster.max()) + 1, int(group.max()) + 1
    rows = np.arange(len(cluster))
    to_cluster = sparse.csr_matrix((np.ones(len(cluster)), (cluster, rows)), (n_clusters, len(n)))
    to_group = sparse.csr_matrix(
        (np.ones(n_clusters), (group, np.arange(n_clusters))), (n_groups, n_clusters)
    )
    exposed_n = (to_cluster @ x.multiply(n[:, None]).tocsr()).tocsr()
    exposed_nk = (to_cluster @ x.multiply((n + k)[:, None]).tocsr()).tocsr()
    exposed_n.sort_indices()
    exposed_nk.sort_indices()
    # every row has units, so both matrices have the same pattern: the defective counts
    # are the difference of their data
    same = np.array_equal(exposed_n.indptr, exposed_nk.indptr) and np.array_equal(
        exposed_n.indices, exposed_nk.indices
    )
    if not same:  # pragma: no cover - a row with no units would break the pattern
        raise ValidationFailed("a cell of the population has no units")
    nb, kb = exposed_n.data, exposed_nk.data - exposed_n.data
    at = np.repeat(np.arange(n_clusters), np.diff(exposed_n.indptr))
    n_c, k_c = to_cluster @ n, to_cluster @ k

    def like(data: np.ndarray) -> sparse.csr_matrix:
        return sparse.csr_matrix((data, exposed_n.indices, exposed_n.indptr), exposed_n.shape)

    def per_group(m: sparse.csr_matrix) -> np.ndarray:
        return np.asarray((to_group @ m).todense())

    n1, k1 = per_group(exposed_n), per_group(like(kb))
    n_g, k_g = to_group @ n_c, to_group @ k_c
    n0, k0 = n_g[:, None] - n1, k_g[:, None] - k1
    # sum over clusters of k²/n, exposed and unexposed parts
    s1 = per_group(like(kb**2 / nb))
    rest_n, rest_k = n_c[at] - nb, k_c[at] - kb
    partly = rest_n > 0
    swap = -(k_c[at] ** 2) / n_c[at] + np.where(
        partly, rest_k**2 / np.where(partly, rest_n, 1.0), 0.0
    )
    s0 = (to_group @ (k_c**2 / n_c))[:, None] + per_group(like(swap))
    clusters_1 = per_group(like(np.ones_like(nb)))
    clusters_0 = (to_group @ np.ones(n_clusters))[:, None] - per_group(like((~partly) * 1.0))

    chi2 = np.zeros(x.shape[1])
    df = np.zeros(x.shape[1])
    for big_n, big_k, sums, m in ((n1, k1, s1, clusters_1), (n0, k0, s0, clusters_0)):
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(big_n > 0, big_k / np.where(big_n > 0, big_n, 1.0), 0.0)
            varies = (rate > 0) & (rate < 1) & (m > 1)
            term = (sums - big_k * rate) / np.where(varies, rate * (1 - rate), 1.0)
        chi2 += np.where(varies, term, 0.0).sum(axis=0)
        df += np.where(varies, m - 1, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(df > 0, chi2 / np.where(df > 0, df, 1.0), 1.0)
    by_column = like(kb).tocsc()
    exposed_csc = exposed_n.tocsc()
    return _Clustered(
        np.maximum(phi, 1.0), exposed_csc, by_column.data, n_c, k_c, np.asarray(group)
    )


@dataclass(frozen=True, slots=True)
class _Clustered:
    """What the clusters (batches) say about each column: its dispersion, and the
    exposed units and defective units of each cluster."""

    phi: np.ndarray
    exposed: sparse.csc_matrix
    """Clusters by columns: exposed units."""
    exposed_k: np.ndarray
    """The exposed defective units, aligned with ``exposed.data``."""
    n: np.ndarray
    k: np.ndarray
    group: np.ndarray

    def p_value(self, i: int) -> float:
        """The test of column ``i`` on the batches themselves: a one-sided
        Wilcoxon-Mann-Whitney rank test of the defect rates of exposed against
        unexposed clusters (a batch split by the exposure counts as its two parts),
        within each group and combined over groups (van Elteren 1960), with the normal
        approximation corrected for ties. Each batch counts once, however many units it
        holds, and a heavy-tailed batch effect cannot make a factor that covers one or
        two batches stand out."""
        lo, hi = self.exposed.indptr[i], self.exposed.indptr[i + 1]
        rows = self.exposed.indices[lo:hi]
        nb, kb = self.exposed.data[lo:hi], self.exposed_k[lo:hi]
        rest_n, rest_k = self.n.copy(), self.k.copy()
        rest_n[rows] -= nb
        rest_k[rows] -= kb
        keep = rest_n > 0
        r1, g1 = kb / nb, self.group[rows]
        r0, g0 = rest_k[keep] / rest_n[keep], self.group[keep]
        groups = np.unique(g1)
        if len(groups) == 1:
            a1, a0 = r1, r0[g0 == groups[0]]
            if len(a0) and a1.min() > a0.max():
                # the exposed batches are the worst ones: the exact permutation p-value
                # (the chance that a random set of as many batches is the worst)
                return 1.0 / math.comb(len(a1) + len(a0), len(a1))
        excess = variance = 0.0
        for g in groups:
            a1, a0 = r1[g1 == g], r0[g0 == g]
            m1, m0 = len(a1), len(a0)
            if not m0:
                continue
            both = np.concatenate([a1, a0])
            ranks = stats.rankdata(both)
            u = ranks[:m1].sum() - m1 * (m1 + 1) / 2
            total = m1 + m0
            ties = np.unique(both, return_counts=True)[1].astype(float)
            correction = (ties**3 - ties).sum() / (total * (total - 1)) if total > 1 else 0.0
            excess += u - m1 * m0 / 2
            variance += m1 * m0 / 12 * ((total + 1) - correction)
        if variance <= 0:
            return 1.0
        return float(stats.norm.sf((excess - 0.5) / math.sqrt(variance)))


BATCH_LEVEL = 0.0
"""The level a factor's exposed batches must stand out at among all batches (the rank
test on the batches themselves) for its unit-level test to count."""


def _gated(unit_p: float, batch_p: float) -> float:
    """The unit-level p-value when the batches themselves show the factor's excess at
    :data:`BATCH_LEVEL`; otherwise the batch-level one, if larger: what one or two
    unusual batches make of a factor does not count."""
    return unit_p if batch_p <= BATCH_LEVEL else max(unit_p, batch_p)


def _scaled(count: np.ndarray, phi: np.ndarray | float) -> np.ndarray:
    """Counts divided by the dispersion and rounded: the effective counts of a test."""
    return np.rint(np.asarray(count, dtype=float) / phi)


def _exact_p(a: np.ndarray, n1: np.ndarray, k: float, n: float, phi: np.ndarray) -> np.ndarray:
    """One-sided exact (Fisher) test of each 2x2 table on its effective counts: each
    cell divided by the table's dispersion (the Rao-Scott adjustment, applied to the
    four cells so the margins stay consistent)."""
    b, c = n1 - a, k - a
    d = n - n1 - c
    a_, b_, c_, d_ = (_scaled(v, phi) for v in (a, b, c, d))
    return np.asarray(stats.hypergeom.sf(a_ - 1, a_ + b_ + c_ + d_, a_ + c_, a_ + b_))


# --- co-exposure: tests conditional on the accepted causes ---------------------------------


@dataclass(frozen=True, slots=True)
class _Adjusted:
    odds_ratio: float | None
    odds_ratio_low: float | None
    odds_ratio_high: float | None
    p_value: float
    statistic: float
    """The signed Cochran-Mantel-Haenszel z: how strongly the factor stands out."""
    dispersion: float = 1.0


def _explained(defective_exposed: float, odds_ratio: float | None) -> float:
    """Exposed defective units times the attributable fraction ``1 - 1/OR``."""
    if odds_ratio is None or odds_ratio <= 1:
        return 0.0
    return defective_exposed * (1 - 1 / odds_ratio)


def _cell_products(pop: Population) -> np.ndarray:
    product_of = {uid: b.product for uid, b in pop.facts.batches.items()}
    names = [str(product_of.get(own)) for own, _ in pop.cells]
    return np.unique(names, return_inverse=True)[1].astype(np.int64)


@dataclass(frozen=True, slots=True)
class _Table:
    """The cells of the population as the tests see them."""

    x: sparse.csr_matrix
    """Cells by factors, 1 where the cell's units were exposed."""
    n: np.ndarray
    k: np.ndarray
    product: np.ndarray
    """The product of each cell (numbered)."""
    batch: np.ndarray
    """The batch that made each cell's units (numbered): the cluster of the dispersion."""

    def strata(self, given: Sequence[int]) -> np.ndarray:
        """Each cell's stratum: its product and its exposure to each of the ``given``
        factors."""
        if not given:
            return self.product
        pattern = np.column_stack([self.product, self.x[:, list(given)].toarray().astype(np.int64)])
        return np.unique(pattern, axis=0, return_inverse=True)[1].ravel()

    def dispersion(self, strata: np.ndarray, columns: Sequence[int]) -> _Clustered:
        """The dispersion of each of ``columns`` within ``strata`` (clusters: a batch's
        cells in one stratum)."""
        pairs = np.unique(np.column_stack([strata, self.batch]), axis=0, return_inverse=True)
        cluster = pairs[1].ravel()
        group = pairs[0][:, 0]
        return _dispersion(self.x[:, list(columns)].tocsr(), self.n, self.k, cluster, group)

    def conditional(
        self, strata: np.ndarray, columns: Sequence[int], *, exact: bool = True
    ) -> list[_Adjusted]:
        """The 2x2 tables of each of ``columns`` within every stratum, combined, with
        every count divided by the column's dispersion within the strata: the
        Mantel-Haenszel odds ratio with the Robins-Breslow-Greenland 95 % interval, the
        Cochran-Mantel-Haenszel z, and the exact conditional test (the distribution of
        the exposed defectives given every stratum's margins, a convolution of
        hypergeometric laws: the exact test of a common odds ratio of 1, one-sided; NaN
        unless ``exact``)."""
        if not len(columns):
            return []
        n, k, x = self.n, self.k, self.x
        m = int(strata.max()) + 1
        s = sparse.csr_matrix((np.ones(len(strata)), (strata, np.arange(len(strata)))), (m, len(n)))
        big_n, big_k = s @ n, s @ k
        cols = x[:, list(columns)]
        exposed_n = np.asarray((s @ cols.multiply(n[:, None])).todense())
        exposed_k = np.asarray((s @ cols.multiply(k[:, None])).todense())
        clustered = self.dispersion(strata, columns)
        found = []
        for i in range(len(columns)):
            adj = _combine(
                big_n, big_k, exposed_n[:, i], exposed_k[:, i], float(clustered.phi[i]), exact
            )
            if exact:
                adj = dataclasses.replace(adj, p_value=_gated(adj.p_value, clustered.p_value(i)))
            found.append(adj)
        return found


def _combine(
    big_n: np.ndarray,
    big_k: np.ndarray,
    n1: np.ndarray,
    a: np.ndarray,
    phi: float,
    exact: bool,
) -> _Adjusted:
    informative = (n1 > 0) & (n1 < big_n) & (big_k > 0) & (big_k < big_n)
    big_n, big_k, n1, a = big_n[informative], big_k[informative], n1[informative], a[informative]
    if not len(big_n):
        return _Adjusted(None, None, None, 1.0, 0.0, phi)
    b, c = n1 - a, big_k - a
    d = big_n - n1 - c
    p_value = math.nan
    if exact:
        a_, b_, c_, d_ = (_scaled(v, phi) for v in (a, b, c, d))
        keep = (a_ + b_ > 0) & (c_ + d_ > 0) & (a_ + c_ > 0) & (b_ + d_ > 0)
        p_value = (
            _exact_conditional_p(
                (a_ + b_ + c_ + d_)[keep], (a_ + c_)[keep], (a_ + b_)[keep], a_[keep]
            )
            if keep.any()
            else 1.0
        )
    expected = n1 * big_k / big_n
    variance = n1 * (big_n - n1) * big_k * (big_n - big_k) / (big_n**2 * (big_n - 1))
    z = float((a - expected).sum() / math.sqrt(variance.sum() * phi)) if variance.sum() > 0 else 0.0
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
    half = stats.norm.ppf(0.975) * math.sqrt(var * phi)
    return _Adjusted(
        float(ratio),
        float(ratio * math.exp(-half)),
        float(ratio * math.exp(half)),
        p_value,
        z,
        phi,
    )


def _exact_conditional_p(
    big_n: np.ndarray, big_k: np.ndarray, n1: np.ndarray, a: np.ndarray
) -> float:
    """P(exposed defectives >= observed) given every stratum's margins."""
    dist = np.ones(1)
    low = 0
    for nn, kk, ee in zip(big_n.astype(int), big_k.astype(int), n1.astype(int), strict=True):
        lo, hi = max(0, ee + kk - nn), min(ee, kk)
        dist = np.convolve(dist, stats.hypergeom.pmf(np.arange(lo, hi + 1), nn, kk, ee))
        low += lo
    at = round(float(a.sum())) - low
    return float(min(1.0, max(0.0, dist[max(at, 0) :].sum())))


def _select(
    table: _Table,
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
    one that a later, stronger cause accounts for is dropped."""
    accepted: list[int] = []
    pending = list(candidates)
    while pending:
        strata = table.strata(accepted)
        tests = table.conditional(strata, pending, exact=False)
        order = sorted(
            range(len(pending)),
            key=lambda i: (-tests[i].statistic, p[pending[i]], factors[pending[i]]),
        )
        passed = next(
            (
                i
                for i in order
                if tests[i].statistic > 0
                and table.conditional(strata, [pending[i]])[0].p_value <= threshold
            ),
            None,
        )
        if passed is None:
            break
        accepted.append(pending.pop(passed))
    for j in reversed(list(accepted)):
        others = [i for i in accepted if i != j]
        if others and table.conditional(table.strata(others), [j])[0].p_value > threshold:
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
            f"defective ({e.rate_exposed:.2%} against {e.rate_unexposed:.2%}), risk ratio "
            f"{e.risk_ratio:.3g} (95 % interval {e.risk_ratio_low:.3g}-{e.risk_ratio_high:.3g}), "
            f"q {e.q_value:.2g}"
        )
        if first.aliases:
            text += "; the data cannot tell it from " + ", ".join(
                f.describe() for f in first.aliases
            )
        if first.suspects:
            text += (
                "; it leads a suspect set with "
                + ", ".join(f.describe() for f in first.suspects)
                + " (co-exposed, sharing most of its defective units, and not separable "
                "by these data: check them together)"
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
        f"{defectives} defective units (risk ratio {e.risk_ratio:.3g}, 95 % interval "
        f"{e.risk_ratio_low:.3g}-{e.risk_ratio_high:.3g}, q {e.q_value:.2g})"
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
    chain.extend(why_to_factor(factor, batch, pop.facts.parameters))
    return tuple(chain)


def _path_to(factor: Factor, unit: str, pop: Population) -> list[str] | None:
    """The shortest path from ``unit`` down its sub-assemblies (``unit`` first) to the
    unit whose batch was exposed to ``factor``, level by level, in uid order."""
    paths = [[unit]]
    while paths:
        for path in paths:
            batch = pop.facts.batches.get(pop.batch_of.get(path[-1], ""))
            if batch is not None and factor in factors_of(batch, pop.facts.parameters):
                return path
        paths = [[*path, sub] for path in paths for sub in sorted(pop.sub_of.get(path[-1], ()))]
    return None


def why_to_factor(
    factor: Factor, batch: BatchFacts, parameters: Mapping[str, Parameter]
) -> list[WhyStep]:
    """The last links of a 5-Why chain: from ``batch`` to ``factor`` (the lot it
    consumed and the lot's supplier, or the run and its machine, operator, shift or
    parameter actual); empty when the batch was not exposed to it."""
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
        "alpha": report.alpha,
        "conclusion": report.conclusion,
        "defectives_needed": report.defectives_needed,
        "origin_steps": report.origin_steps,
        "factors_after_origin": report.factors_after_origin,
        "notes": report.notes,
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
                "dispersion": c.dispersion,
                "explained_defects_low": c.explained_low,
                "explained_defects_high": c.explained_high,
                **{f: getattr(c.evidence, f) for f in Evidence.__slots__},
                "why": [
                    {"uid": w.uid, "label": w.label, "edge": w.edge, "why": w.why} for w in c.why
                ],
            }
            for c in report.causes
        ],
    }
