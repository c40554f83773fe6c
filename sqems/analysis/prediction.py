"""Defect prediction: the chance that a unit of a batch is defective, learnt per product.

:func:`train` learns, for one product (one line), how a batch's process and material
context relates to the fraction of its units found defective in-house, and
:meth:`DefectModel.predict_batches` applies it to batches in the graph — typically the
latest ones, or one that is running: its runs (machines, shifts, parameter actuals)
and lots are known as soon as they are recorded, long before its units are inspected.
A batch that has not started yet has no runs: its parameter, machine and shift
features are missing, and the booster sends a missing value down the branch most
training batches took, so it scores like a typical batch with its lots' history
(prediction for a *planned* batch from its work-order routing is not offered).

**Target.** A unit counts as defective when an in-house :class:`Defect` is ``FOUND_ON``
it. Complaints are left out on purpose: they arrive weeks later and only for units
that shipped, so they would make recent batches look good and mix the plant's
detection with the customer's. A defect found on a whole batch (no unit) is not
counted, and a sub-assembly defect that only surfaces at the parent's test is filed
on the parent unit, so it counts for the parent's product.

**Features** (the versioned :class:`FeatureSchema`; :data:`SCHEMA_VERSION`):

* for each step and parameter, the actual's *position in the tolerance*,
  ``(value - mid) / half_width`` (-1 at the LSL, +1 at the USL), and its square, so that
  an optimum in the middle of the window is as learnable as a monotone effect; a
  parameter without both limits is standardised by its training mean and spread;
* for each step, the machine and the shift, one-hot;
* for each material, the supplier of the consumed lot, one-hot;
* leak-free **history**: for each material, the defect rate of earlier batches that
  consumed the same lot; for each step, the defect rate of the last
  :data:`MACHINE_WINDOW` earlier batches on the same machine. "Earlier" means the batch
  *ended* before this one *started*, and only defects *found* before it started count:
  what a quality engineer could have known at the start. Rates are shrunk towards the
  product's rate over the same earlier batches with a prior worth
  :data:`PRIOR_UNITS` units, so a lot with one batch of history says little.

Operators are left out: two dozen one-hot columns for 30-odd training batches would
invite overfitting, and the shift already carries the crew.

**Model.** A :class:`~sklearn.ensemble.HistGradientBoostingClassifier` on unit
outcomes aggregated per batch — two rows per batch, defective and good, weighted by
their unit counts, which is the same likelihood as one row per unit at a fraction of
the cost. Probabilities are **calibrated** by isotonic regression fitted on
out-of-fold scores over batch-grouped folds of the training part
(``CalibratedClassifierCV(method="isotonic", ensemble=False)``: the booster is refit
on the whole training part, the calibration map comes from the folds). Isotonic and
not sigmoid because it cannot turn the ranking upside down: when a failure mode shows
in only a couple of training batches, the out-of-fold scores can come out
anti-correlated with the outcomes, a Platt fit then gets a slope of the wrong sign and
the model ranks the worst batches lowest (seen on 40 000-unit synthetic plants: test AUC 0.08);
the isotonic map instead falls back to a flat base rate — no skill, honestly shown.

**Validation** is a **time split**: batches ordered by start, the earliest
``1 - TEST_FRACTION`` train, the rest test. :class:`ModelMetrics` reports on the test
part the unit-level (weighted) ROC AUC and Brier score, beside the Brier score of
always predicting the training base rate — a model is only worth its keep below
that. The model kept is the one evaluated (it has not seen the test batches; the
history features of a new prediction do see every batch that ended before it).

Each prediction names the features that raise its risk most, measured honestly and
locally: the drop in the predicted probability when that one feature (a parameter's
position and square together, a whole one-hot group) is set to its typical training
value, the others kept. Effects are not additive when features interact.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import joblib
import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from sqems.analysis.factors import BatchFacts, PlantFacts, RunFacts, read_batches
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import Defect, Parameter, Shift
from sqems.graph_model.store import Direction, GraphStore

log = logging.getLogger(__name__)

OUT, IN = Direction.OUT, Direction.IN

SCHEMA_VERSION = 1
"""Version of the feature schema; a saved model of another version is refused."""
FORMAT = "sqems-defect-model"

TEST_FRACTION = 0.3
"""The latest share of batches held out for the time-split test."""
MIN_BATCHES = 20
"""Completed batches with units a product needs before a model is trained."""
MIN_DEFECTIVE_UNITS = 5
"""Defective units the training part needs to learn anything from."""
PRIOR_UNITS = 200.0
"""Weight, in units, of the product-wide rate that history rates are shrunk towards."""
MACHINE_WINDOW = 10
"""Earlier batches on the same machine that make its recent history."""
CALIBRATION_FOLDS = 5
TOP_CONTRIBUTIONS = 5


# --- feature schema ---------------------------------------------------------------------


class FeatureKind(StrEnum):
    PARAMETER = "parameter"
    MACHINE = "machine"
    SHIFT = "shift"
    SUPPLIER = "supplier"
    LOT_HISTORY = "lot_history"
    MACHINE_HISTORY = "machine_history"


ONE_HOT = frozenset({FeatureKind.MACHINE, FeatureKind.SHIFT, FeatureKind.SUPPLIER})


@dataclass(frozen=True, slots=True)
class FeatureGroup:
    """Columns that describe one thing about a batch and are explained together.

    >>> g = FeatureGroup(FeatureKind.PARAMETER, "P-REFLOW-PEAK", "STEP-PCB-20",
    ...                  center=242.5, scale=7.5, unit="degC")
    >>> g.name
    'P-REFLOW-PEAK@STEP-PCB-20'
    >>> g.columns
    ('P-REFLOW-PEAK@STEP-PCB-20:pos', 'P-REFLOW-PEAK@STEP-PCB-20:pos2')
    >>> g.describe([1.2, 1.44])
    '251.5 degC'
    """

    kind: FeatureKind
    key: str
    """The parameter uid, the step uid (machine, shift, machine history) or the material
    uid (supplier, lot history)."""
    step: str | None = None
    """For a parameter, the step that records it."""
    categories: tuple[str, ...] = ()
    """For a one-hot group, the categories seen in training (others encode as all 0)."""
    center: float = 0.0
    """For a parameter, the value at position 0: the middle of the tolerance."""
    scale: float = 1.0
    """For a parameter, the half-width of the tolerance (a position of 1 is the USL)."""
    unit: str = ""
    reference: tuple[float, ...] = ()
    """The typical training value of the columns, against which a batch's value is
    explained: the median position, the most frequent category, the median rate."""

    @property
    def name(self) -> str:
        match self.kind:
            case FeatureKind.PARAMETER:
                return f"{self.key}@{self.step}"
            case FeatureKind.MACHINE | FeatureKind.SHIFT | FeatureKind.MACHINE_HISTORY:
                return f"{self.kind.value}@{self.key}"
            case _:
                return f"{self.kind.value}:{self.key}"

    @property
    def columns(self) -> tuple[str, ...]:
        if self.kind is FeatureKind.PARAMETER:
            return (f"{self.name}:pos", f"{self.name}:pos2")
        if self.kind in ONE_HOT:
            return tuple(f"{self.name}={c}" for c in self.categories)
        return (self.name,)

    def describe(self, values: Sequence[float]) -> str:
        """The columns' values, as a person reads them."""
        if self.kind is FeatureKind.PARAMETER:
            pos = values[0]
            if math.isnan(pos):
                return "not recorded"
            return f"{_significant(self.center + pos * self.scale)} {self.unit}".rstrip()
        if self.kind in ONE_HOT:
            on = [c for c, v in zip(self.categories, values, strict=True) if v > 0.5]
            return ", ".join(on) or "none seen in training"
        rate = values[0]
        return "no history" if math.isnan(rate) else f"{rate:.2%} defective"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "key": self.key,
            "step": self.step,
            "categories": list(self.categories),
            "center": self.center,
            "scale": self.scale,
            "unit": self.unit,
            "reference": [None if math.isnan(v) else v for v in self.reference],
            "columns": list(self.columns),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            FeatureKind(data["kind"]),
            str(data["key"]),
            data.get("step"),
            tuple(data.get("categories", ())),
            float(data.get("center", 0.0)),
            float(data.get("scale", 1.0)),
            str(data.get("unit", "")),
            tuple(math.nan if v is None else float(v) for v in data.get("reference", ())),
        )


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    """The columns a model was trained on, how each is computed from the graph, and the
    history settings: everything needed to rebuild a feature row for a new batch."""

    product: str
    groups: tuple[FeatureGroup, ...]
    prior_units: float = PRIOR_UNITS
    machine_window: int = MACHINE_WINDOW
    version: int = SCHEMA_VERSION

    @property
    def columns(self) -> list[str]:
        return [c for g in self.groups for c in g.columns]

    def slices(self) -> list[slice]:
        """Where each group's columns sit in a feature row."""
        out, at = [], 0
        for g in self.groups:
            out.append(slice(at, at + len(g.columns)))
            at += len(g.columns)
        return out

    def encode(self, batches: Sequence[BatchFacts], history: Mapping[str, History]) -> np.ndarray:
        """The feature matrix, one row per batch (NaN where a value is unknown)."""
        rows = np.full((len(batches), len(self.columns)), np.nan)
        slices = self.slices()
        for i, batch in enumerate(batches):
            runs = {run.step: run for run in batch.runs}  # a repeated step: the last run
            suppliers = {(lot.material, lot.supplier) for lot in batch.lots}
            past = history.get(batch.uid, {})
            for group, where in zip(self.groups, slices, strict=True):
                rows[i, where] = _encode_group(group, runs, suppliers, past)
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "product": self.product,
            "prior_units": self.prior_units,
            "machine_window": self.machine_window,
            "groups": [g.as_dict() for g in self.groups],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            str(data["product"]),
            tuple(FeatureGroup.from_dict(g) for g in data["groups"]),
            float(data["prior_units"]),
            int(data["machine_window"]),
            int(data["version"]),
        )


History = Mapping[tuple[FeatureKind, str], float]
"""A batch's history rates: (LOT_HISTORY, material) or (MACHINE_HISTORY, step) → rate."""


def _encode_group(
    group: FeatureGroup,
    runs: Mapping[str | None, RunFacts],
    suppliers: set[tuple[str | None, str | None]],
    past: History,
) -> list[float]:
    match group.kind:
        case FeatureKind.PARAMETER:
            run = runs.get(group.step)
            value = run.params.get(group.key) if run is not None else None
            if value is None:
                return [math.nan, math.nan]
            pos = (value - group.center) / group.scale
            return [pos, pos * pos]
        case FeatureKind.MACHINE | FeatureKind.SHIFT:
            run = runs.get(group.key)
            seen = None
            if run is not None:
                seen = run.machine if group.kind is FeatureKind.MACHINE else run.shift
            return [1.0 if c == seen else 0.0 for c in group.categories]
        case FeatureKind.SUPPLIER:
            return [1.0 if (group.key, c) in suppliers else 0.0 for c in group.categories]
        case _:
            return [past.get((group.kind, group.key), math.nan)]


def _build_schema(
    product: str, batches: Sequence[BatchFacts], parameters: Mapping[str, Parameter]
) -> FeatureSchema:
    """The groups the training batches support, without references yet."""
    steps: dict[str, None] = {}
    params: dict[tuple[str, str], list[float]] = defaultdict(list)
    machines: dict[str, set[str]] = defaultdict(set)
    suppliers: dict[str, set[str]] = defaultdict(set)
    for batch in batches:
        for run in batch.runs:
            if run.step is None:
                continue
            steps.setdefault(run.step)
            if run.machine is not None:
                machines[run.step].add(run.machine)
            for param, value in run.params.items():
                params[(run.step, param)].append(value)
        for lot in batch.lots:
            if lot.material is not None and lot.supplier is not None:
                suppliers[lot.material].add(lot.supplier)
    shifts = tuple(s.value for s in Shift)
    groups: list[FeatureGroup] = []
    for step in steps:
        for (at, param), values in sorted(params.items()):
            if at != step:
                continue
            spec = parameters.get(param)
            if spec is not None and spec.lsl is not None and spec.usl is not None:
                center, scale = (spec.lsl + spec.usl) / 2.0, (spec.usl - spec.lsl) / 2.0
            else:  # no tolerance to place the value in: standardise by the training data
                center, spread = float(np.mean(values)), float(np.std(values))
                scale = spread if spread > 0 else 1.0
            unit = spec.unit if spec is not None else ""
            groups.append(FeatureGroup(FeatureKind.PARAMETER, param, step, (), center, scale, unit))
        groups.append(
            FeatureGroup(FeatureKind.MACHINE, step, categories=tuple(sorted(machines[step])))
        )
        groups.append(FeatureGroup(FeatureKind.SHIFT, step, categories=shifts))
        groups.append(FeatureGroup(FeatureKind.MACHINE_HISTORY, step))
    for material in sorted(suppliers):
        groups.append(
            FeatureGroup(
                FeatureKind.SUPPLIER, material, categories=tuple(sorted(suppliers[material]))
            )
        )
        groups.append(FeatureGroup(FeatureKind.LOT_HISTORY, material))
    return FeatureSchema(product, tuple(groups))


def _with_references(schema: FeatureSchema, train: np.ndarray) -> FeatureSchema:
    """The schema with each group's typical training value filled in."""
    groups = []
    for group, where in zip(schema.groups, schema.slices(), strict=True):
        block = train[:, where]
        if group.kind in ONE_HOT:
            reference = [0.0] * block.shape[1]
            if block.shape[1]:
                reference[int(np.argmax(block.sum(axis=0)))] = 1.0
        elif group.kind is FeatureKind.PARAMETER:
            pos = _nanmedian(block[:, 0])
            reference = [pos, pos * pos]
        else:
            reference = [_nanmedian(block[:, 0])]
        groups.append(dataclasses.replace(group, reference=tuple(reference)))
    return dataclasses.replace(schema, groups=tuple(groups))


def _significant(value: float, digits: int = 4) -> str:
    """``value`` to about ``digits`` significant digits, never in exponent notation
    (``101325.0`` → ``'101325'``, ``4.98765`` → ``'4.988'``)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _nanmedian(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if len(finite) else math.nan


# --- outcomes and history ---------------------------------------------------------------


@dataclass(slots=True)
class _Outcomes:
    """What each batch of a product produced and what was found on it."""

    units: dict[str, int]
    found: dict[str, np.ndarray]
    """Batch → sorted times (POSIX s) each defective unit's first in-house defect was
    found."""

    def defective(self, batch: str) -> int:
        return len(self.found.get(batch, ()))

    def known(self, batch: str, before: float) -> int:
        """Defective units of ``batch`` whose defect was found before ``before``."""
        times = self.found.get(batch)
        return 0 if times is None else int(np.searchsorted(times, before, side="left"))


def _read_product(store: GraphStore, product: str) -> tuple[PlantFacts, _Outcomes]:
    """Every batch of ``product`` with its facts and outcomes: a dozen bulk reads, none
    per batch."""
    if store.label_of(product) != "Product":
        raise NotFound(f"product {product} is not in the graph ({store.description})")
    batch_uids = [e.src for e in store.edges([product], {"OF_PRODUCT": IN})]
    facts = read_batches(store, batch_uids)
    batch_of = {e.dst: e.src for e in store.edges(list(facts.batches), {"PRODUCED": OUT})}
    units = Counter(batch_of.values())
    found_on = store.edges(list(batch_of), {"FOUND_ON": IN})
    defects = store.get_many({e.src for e in found_on})
    first: dict[str, float] = {}
    for e in found_on:
        node = defects.get(e.src)
        if isinstance(node, Defect):
            at = node.found_at.timestamp()
            first[e.dst] = min(at, first.get(e.dst, math.inf))
    times: dict[str, list[float]] = defaultdict(list)
    for unit, at in first.items():
        times[batch_of[unit]].append(at)
    found = {b: np.sort(np.asarray(t, dtype=float)) for b, t in times.items()}
    return facts, _Outcomes(dict(units), found)


def _history(
    batches: Mapping[str, BatchFacts],
    outcomes: _Outcomes,
    targets: Iterable[str],
    *,
    prior_units: float,
    machine_window: int,
) -> dict[str, dict[tuple[FeatureKind, str], float]]:
    """Leak-free history rates of each target batch (see the module docstring).

    Only batches that ended before the target started count, and of their defective
    units only those found before it started. A batch with no such earlier batch at
    all gets no history (the features are missing).
    """
    done = sorted(
        (b for b in batches.values() if math.isfinite(b.ended_at) and outcomes.units.get(b.uid)),
        key=lambda b: (b.ended_at, b.uid),
    )
    ends = np.array([b.ended_at for b in done])
    cum_units = np.cumsum([outcomes.units[b.uid] for b in done])
    # a defect is known at a time when both its batch has ended and it has been found
    known_at = np.sort(
        np.concatenate(
            [np.maximum(outcomes.found.get(b.uid, np.empty(0)), b.ended_at) for b in done]
            or [np.empty(0)]
        )
    )
    by_lot: dict[str, list[BatchFacts]] = defaultdict(list)
    by_machine: dict[tuple[str, str], list[BatchFacts]] = defaultdict(list)
    for b in done:  # in order of end, so each list is too
        for lot in b.lots:
            by_lot[lot.uid].append(b)
        for run in b.runs:
            if run.step is not None and run.machine is not None:
                by_machine[(run.step, run.machine)].append(b)
    machine_ends = {k: [b.ended_at for b in v] for k, v in by_machine.items()}

    out: dict[str, dict[tuple[FeatureKind, str], float]] = {}
    for uid in targets:
        batch = batches[uid]
        start = batch.started_at
        earlier = int(np.searchsorted(ends, start, side="left"))
        seen_units = float(cum_units[earlier - 1]) if earlier else 0.0
        rates: dict[tuple[FeatureKind, str], float] = {}
        out[uid] = rates
        if seen_units == 0:
            continue
        prior = float(np.searchsorted(known_at, start, side="left")) / seen_units

        def rate(group: Iterable[BatchFacts], start: float = start, prior: float = prior) -> float:
            n = d = 0
            for b in group:
                n += outcomes.units[b.uid]
                d += outcomes.known(b.uid, start)
            return (d + prior_units * prior) / (n + prior_units)

        for lot in batch.lots:
            if lot.material is None:
                continue
            before = [b for b in by_lot.get(lot.uid, ()) if b.ended_at < start]
            key = (FeatureKind.LOT_HISTORY, lot.material)
            rates[key] = max(rate(before), rates.get(key, 0.0))  # several lots: the worst
        for run in batch.runs:
            if run.step is None or run.machine is None:
                continue
            on = by_machine.get((run.step, run.machine), [])
            j = bisect.bisect_left(machine_ends.get((run.step, run.machine), []), start)
            rates[(FeatureKind.MACHINE_HISTORY, run.step)] = rate(
                on[max(0, j - machine_window) : j]
            )
    return out


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contribution:
    """One feature's share in a batch's risk: how much the predicted probability would
    fall if this feature alone took its typical training value."""

    feature: str
    value: str
    typical: str
    effect: float
    """Predicted probability minus the probability with the feature at ``typical``."""


@dataclass(frozen=True, slots=True)
class BatchRisk:
    """A batch's predicted defect risk, and what drives it."""

    batch: str
    probability: float
    """Calibrated probability that a unit of the batch is found defective in-house."""
    units: int
    """The batch's quantity (planned or produced)."""
    expected_defective: float
    contributions: tuple[Contribution, ...]
    """The features that raise this batch's risk most, largest effect first."""


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """How the model did on the later part of a time split (unit-level, weighted)."""

    auc: float | None
    """ROC AUC on test units; None when the test part has only one outcome."""
    brier: float
    base_brier: float
    """Brier score of predicting the training base rate for every test unit."""
    base_rate: float
    """Fraction of training units found defective."""
    n_train: int
    """Training batches."""
    n_test: int
    """Test batches."""
    train_units: int
    test_units: int
    trained_at: datetime

    @property
    def brier_skill(self) -> float:
        """``1 - brier / base_brier``: above 0 when the model beats the base rate. With
        defects at a percent or two, a few hundredths is already a useful model."""
        return 1.0 - self.brier / self.base_brier if self.base_brier > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "brier": self.brier,
            "base_brier": self.base_brier,
            "base_rate": self.base_rate,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "train_units": self.train_units,
            "test_units": self.test_units,
            "trained_at": self.trained_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        auc = data["auc"]
        return cls(
            None if auc is None else float(auc),
            float(data["brier"]),
            float(data["base_brier"]),
            float(data["base_rate"]),
            int(data["n_train"]),
            int(data["n_test"]),
            int(data["train_units"]),
            int(data["test_units"]),
            datetime.fromisoformat(data["trained_at"]),
        )


# --- training ---------------------------------------------------------------------------


def _booster(seed: int) -> Any:
    """Shallow, slowly learning trees. A leaf may hold a single batch (its two rows):
    a failure mode often shows in only one or two training batches, and a leaf that
    must pool them with good batches cannot learn it. Shrinkage and the L2 penalty
    keep one noisy batch from pulling far; the out-of-fold calibration then decides
    how much any of it is worth."""
    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=150,
        max_depth=3,
        min_samples_leaf=2,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


def _one_thread() -> Any:
    """Run the booster on one OpenMP thread: the data are a few thousand rows at most,
    where threads cost more than they save, and OpenMP workers spinning on a busy host
    (a CI runner, an API worker) turn a 0.3 s fit into ten seconds."""
    return threadpool_limits(limits=1, user_api="openmp")


def _probabilities(estimator: Any, x: np.ndarray) -> np.ndarray:
    with _one_thread():
        return np.asarray(estimator.predict_proba(x)[:, 1], dtype=float)


def _weighted_rows(
    x: np.ndarray, defective: np.ndarray, units: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two rows per batch — defective units and good units — with their counts as
    weights; empty rows are dropped. Also returns each row's batch index."""
    index = np.concatenate([np.arange(len(x)), np.arange(len(x))])
    y = np.concatenate([np.ones(len(x), dtype=int), np.zeros(len(x), dtype=int)])
    w = np.concatenate([defective, units - defective]).astype(float)
    keep = w > 0
    return x[index[keep]], y[keep], w[keep], index[keep]


def _folds(has_defects: np.ndarray, seed: int) -> np.ndarray:
    """A calibration fold per batch (at least two batches must have defects). Batches
    with and without defects are dealt out separately, so every fold's complement has
    defective units to learn from."""
    rng = np.random.default_rng(seed)
    n_folds = min(CALIBRATION_FOLDS, int(has_defects.sum()))
    fold = np.empty(len(has_defects), dtype=int)
    for members in (np.flatnonzero(has_defects), np.flatnonzero(~has_defects)):
        fold[rng.permutation(members)] = np.arange(len(members)) % n_folds
    return fold


def _fit(x: np.ndarray, defective: np.ndarray, units: np.ndarray, seed: int) -> Any:
    """The booster, with isotonic calibration fitted on its out-of-fold scores."""
    rows, y, w, batch_index = _weighted_rows(x, defective, units)
    fold = _folds(defective > 0, seed)[batch_index]
    splits = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in np.unique(fold)]
    estimator = CalibratedClassifierCV(_booster(seed), method="isotonic", cv=splits, ensemble=False)
    with _one_thread():
        estimator.fit(rows, y, sample_weight=w)
    return estimator


@dataclass(frozen=True, slots=True)
class TrainingSplit:
    """A product's completed batches in time order, split for training and testing."""

    facts: PlantFacts
    outcomes: _Outcomes
    batches: list[BatchFacts]
    """Batches that ended and produced units, by start; the first :attr:`n_train` train."""
    n_train: int
    defective: np.ndarray
    """Per batch, units with an in-house defect."""
    units: np.ndarray
    """Per batch, units produced."""


def training_split(store: GraphStore, product: str) -> TrainingSplit:
    """The time split every model of a product trains and tests on: batches that have
    ended and produced units, ordered by start; the earliest ``1 - TEST_FRACTION``
    train. Raises what :func:`train` documents when there is too little to learn from."""
    facts, outcomes = _read_product(store, product)
    completed = sorted(
        (
            b
            for b in facts.batches.values()
            if math.isfinite(b.ended_at) and outcomes.units.get(b.uid)
        ),
        key=lambda b: (b.started_at, b.uid),
    )
    if len(completed) < MIN_BATCHES:
        raise ValidationFailed(
            f"product {product} has {len(completed)} completed batches with units in the "
            f"graph ({store.description}); a defect model needs at least {MIN_BATCHES} "
            "to train and test on"
        )
    n_test = max(1, round(TEST_FRACTION * len(completed)))
    n_train = len(completed) - n_test
    defective = np.array([outcomes.defective(b.uid) for b in completed], dtype=float)
    units = np.array([outcomes.units[b.uid] for b in completed], dtype=float)
    d_train = defective[:n_train]
    if d_train.sum() < MIN_DEFECTIVE_UNITS or np.count_nonzero(d_train) < 2:
        raise ValidationFailed(
            f"the {n_train} training batches of {product} have {int(d_train.sum())} units "
            f"with an in-house defect, in {np.count_nonzero(d_train)} batches; a defect "
            f"model needs at least {MIN_DEFECTIVE_UNITS}, in two batches or more, to learn "
            "what makes a defect"
        )
    return TrainingSplit(facts, outcomes, completed, n_train, defective, units)


def train(store: GraphStore, product: str, *, seed: int = 0) -> DefectModel:
    """Learn the defect risk of ``product``'s batches from the graph.

    Batches count when they have ended and produced units. The earliest
    ``1 - TEST_FRACTION`` of them (by start) train the model, the rest test it; see
    :class:`ModelMetrics`. ``seed`` fixes the calibration folds and the booster, so the
    same graph gives the same model.

    :class:`NotFound` for an unknown product; :class:`ValidationFailed` when it has
    fewer than :data:`MIN_BATCHES` such batches, or when its training batches hold
    fewer than :data:`MIN_DEFECTIVE_UNITS` defective units, or all in one batch.
    """
    split = training_split(store, product)
    facts, outcomes, completed, n_train = split.facts, split.outcomes, split.batches, split.n_train
    n_test = len(completed) - n_train
    defective, units = split.defective, split.units
    d_train, u_train = defective[:n_train], units[:n_train]

    history = _history(
        facts.batches,
        outcomes,
        (b.uid for b in completed),
        prior_units=PRIOR_UNITS,
        machine_window=MACHINE_WINDOW,
    )
    schema = _build_schema(product, completed[:n_train], facts.parameters)
    x = schema.encode(completed, history)
    schema = _with_references(schema, x[:n_train])
    estimator = _fit(x[:n_train], d_train, u_train, seed)

    base_rate = float(d_train.sum() / u_train.sum())
    _, y, w, index = _weighted_rows(x[n_train:], defective[n_train:], units[n_train:])
    p = _probabilities(estimator, x[n_train:])[index]
    metrics = ModelMetrics(
        auc=float(roc_auc_score(y, p, sample_weight=w)) if len(np.unique(y)) == 2 else None,
        brier=float(brier_score_loss(y, p, sample_weight=w)),
        base_brier=float(brier_score_loss(y, np.full(len(y), base_rate), sample_weight=w)),
        base_rate=base_rate,
        n_train=n_train,
        n_test=n_test,
        train_units=int(u_train.sum()),
        test_units=int(units[n_train:].sum()),
        trained_at=datetime.now(UTC),
    )
    log.info("defect model trained", extra={"product": product, **metrics.as_dict()})
    return DefectModel(schema, estimator, metrics)


# --- the model --------------------------------------------------------------------------


class DefectModel:
    """A trained, calibrated defect-risk model for one product, with its feature schema
    and test metrics. Build one with :func:`train` or :meth:`load`."""

    def __init__(self, schema: FeatureSchema, estimator: Any, metrics: ModelMetrics) -> None:
        self.schema = schema
        self.estimator = estimator
        self.metrics = metrics

    @property
    def product(self) -> str:
        return self.schema.product

    def __repr__(self) -> str:
        auc = "n/a" if self.metrics.auc is None else f"{self.metrics.auc:.3f}"
        return (
            f"DefectModel({self.product}, {len(self.schema.columns)} features, AUC {auc}, "
            f"Brier {self.metrics.brier:.5f} vs base {self.metrics.base_brier:.5f})"
        )

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for feature rows built by :attr:`schema`."""
        return _probabilities(self.estimator, x)

    def predict_batches(self, store: GraphStore, batch_uids: Iterable[str]) -> list[BatchRisk]:
        """The defect risk of each batch (in the order given, repeats dropped).

        The batches must belong to the model's product; their history features are
        rebuilt from every batch of the product that ended before each started.
        """
        wanted = list(dict.fromkeys(batch_uids))
        if not wanted:
            return []
        facts, outcomes = _read_product(store, self.product)
        missing = [uid for uid in wanted if uid not in facts.batches]
        if missing:
            labels = {uid: store.label_of(uid) for uid in missing}
            other = [uid for uid, label in labels.items() if label == "Batch"]
            if other:
                raise ValidationFailed(
                    f"batch {other[0]} is not a batch of {self.product}; this model predicts "
                    f"for {self.product} only (train one per product)"
                )
            raise NotFound(f"batch {missing[0]} is not in the graph ({store.description})")
        history = _history(
            facts.batches,
            outcomes,
            wanted,
            prior_units=self.schema.prior_units,
            machine_window=self.schema.machine_window,
        )
        batches = [facts.batches[uid] for uid in wanted]
        x = self.schema.encode(batches, history)
        p = self.probabilities(x)
        explained = self._contributions(x, p)
        return [
            BatchRisk(b.uid, float(pi), b.quantity, float(pi) * b.quantity, why)
            for b, pi, why in zip(batches, p, explained, strict=True)
        ]

    def _contributions(self, x: np.ndarray, p: np.ndarray) -> list[tuple[Contribution, ...]]:
        """Per batch, the groups whose reset to the training reference lowers the risk
        most — one predict call over every (group, batch) counterfactual."""
        groups, slices = self.schema.groups, self.schema.slices()
        counterfactual = np.repeat(x[None, :, :], len(groups), axis=0)
        for g, (group, where) in enumerate(zip(groups, slices, strict=True)):
            counterfactual[g, :, where] = group.reference
        flat = counterfactual.reshape(-1, x.shape[1])
        effect = p[None, :] - self.probabilities(flat).reshape(len(groups), len(x))
        out = []
        for i in range(len(x)):
            order = np.argsort(-effect[:, i], kind="stable")[:TOP_CONTRIBUTIONS]
            out.append(
                tuple(
                    Contribution(
                        groups[g].name,
                        groups[g].describe(x[i, slices[g]].tolist()),
                        groups[g].describe(groups[g].reference),
                        float(effect[g, i]),
                    )
                    for g in order
                    if effect[g, i] > 0
                )
            )
        return out

    # --- persistence ---------------------------------------------------------------------

    @staticmethod
    def sidecar(path: str | Path) -> Path:
        """The JSON file beside a saved model: ``board.joblib`` → ``board.json``."""
        path = Path(path)
        if path.suffix == ".json":
            raise ValidationFailed(
                f"{path}: a defect model needs a file name of its own beside its JSON "
                "sidecar; use a suffix such as .joblib"
            )
        return path.with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (joblib) and its schema and metrics to the JSON
        :meth:`sidecar`, which people and :meth:`load` read without unpickling."""
        path = Path(path)
        side = self.sidecar(path)
        meta = {
            "format": FORMAT,
            "schema_version": self.schema.version,
            "product": self.product,
            "model_file": path.name,
            "sklearn_version": sklearn.__version__,
            "metrics": self.metrics.as_dict(),
            "schema": self.schema.as_dict(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "schema_version": self.schema.version,
            "columns": self.schema.columns,
            "estimator": self.estimator,
        }
        joblib.dump(payload, path)
        side.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return side

    @classmethod
    def load(cls, path: str | Path) -> DefectModel:
        """Read a model written by :meth:`save`.

        The sidecar is checked first, so a model of another schema version is refused
        (:class:`ValidationFailed`) before anything is unpickled. Unpickling runs code:
        load only model files you wrote or trust.
        """
        path = Path(path)
        side = cls.sidecar(path)
        for needed in (path, side):
            if not needed.is_file():
                raise NotFound(f"defect model file {needed} does not exist")
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValidationFailed(f"{side} is not JSON: {err}") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValidationFailed(f"{side} is not a {FORMAT} sidecar")
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValidationFailed(
                f"{path} was saved with feature schema version {version}; this SQEMS reads "
                f"version {SCHEMA_VERSION}. Train the model again and save it"
            )
        schema = FeatureSchema.from_dict(meta["schema"])
        payload = joblib.load(path)
        if (
            not isinstance(payload, dict)
            or payload.get("format") != FORMAT
            or payload.get("schema_version") != version
            or payload.get("columns") != schema.columns
        ):
            raise ValidationFailed(
                f"{path} does not match its sidecar {side} (another model's feature columns)"
            )
        return cls(schema, payload["estimator"], ModelMetrics.from_dict(meta["metrics"]))


def model_path(models_dir: Path, product: str) -> Path:
    """Where the defect model of ``product`` is kept under ``models_dir`` (the product
    uid is quoted, so any uid makes one safe file name)."""
    return models_dir / f"defects-{quote(product, safe='')}.joblib"
