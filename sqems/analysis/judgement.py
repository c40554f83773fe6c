"""The per-unit judgement model: is this unit, just made, suspect?

A line's edge agent judges each unit as it leaves the line, from what the machines
said while it was being made, with no graph and no network. This module trains that
model centrally, from the graph, for one product; :meth:`UnitModel.portable` exports
it (ONNX, :mod:`sqems.analysis.exchange`) for the edge.

**Features** are the process parameters only — what the edge can see. For each
parameter recorded at each of the product's steps (a :class:`~sqems.analysis.
prediction.FeatureGroup` of kind ``parameter``): the value's position in the tolerance,
``(value - mid) / half_width``, and its square, as the batch-risk model has them; a
parameter without both limits is standardised by its training mean and spread. In
training the value is the actual a run RECORDED for the parameter, shared by every
unit of the run's batch; at the edge it is the mean of the parameter's readings while
the unit was made (:meth:`UnitModel.features_from_means`). A parameter not read is
missing (NaN); the booster, and its ONNX graph, send a missing value where most
training units went.

**Target**: a unit is defective when an in-house defect is ``FOUND_ON`` it (as in
:mod:`sqems.analysis.prediction`: complaints come late and only for shipped units).

**Model**: a :class:`~sklearn.ensemble.HistGradientBoostingClassifier` (one OpenMP
thread) on unit outcomes. Units of a batch share their features, so the units are
aggregated into two rows per batch — defective and good, weighted by their counts:
the same likelihood as one row per unit, at the cost of a few hundred rows.

**Validation** is the batch-risk model's time split (earliest 70 % of completed
batches train, the rest test). :class:`UnitMetrics` gives the test units' ROC AUC with
a batch bootstrap interval, the Brier score and the base rate's Brier score. The model
claims **skill** only when the interval's lower end is above 0.5 and its Brier score
beats the base rate's; otherwise it says it has none, and its threshold is 1.0, so the
edge judges every unit ``pass`` rather than send the line chasing noise.

**Threshold.** A unit is ``suspect`` when its probability is at least
:attr:`UnitModel.threshold`, set on the training part at :data:`RISK_RATIO` times the
training defect rate: a suspect unit is one the model holds three times as likely to
be defective as a typical unit, a line a quality engineer can state and defend, and
the flagged share follows from how concentrated the risk is (it is reported, on the
training units, as ``flagged_train``). Two other rules were tried and rejected. A flag
budget ("flag at most twice the defect rate of units") flags nothing on most lines:
the training rows are batches, whose units share their runs' actuals, and one batch
is already more than twice a 1 % defect rate of the units. Maximising F1 on training
scores picks a point on the booster's in-sample scores, which are optimistic, and on
a rare class it swings with a couple of units.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss

from sqems.analysis.exchange import export_onnx, manifest
from sqems.analysis.prediction import (
    FeatureKind,
    FeatureSchema,
    _booster,
    _build_schema,
    _one_thread,
    _probabilities,
    _weighted_rows,
    _with_references,
    training_split,
)
from sqems.graph_model.store import GraphStore

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the unit model's feature schema; an edge refuses a bundle of another."""
KIND = "unit-judgement"
RISK_RATIO = 3.0
"""A unit is suspect at this multiple of the training defect rate."""
NO_SKILL_THRESHOLD = 1.0
BOOTSTRAP = 400
"""Batch resamples behind the AUC interval."""


@dataclass(frozen=True, slots=True)
class UnitMetrics:
    """How the unit model did on the later part of the time split (unit-level)."""

    auc: float | None
    """ROC AUC on test units; None when the test part has only one outcome."""
    auc_low: float | None
    """5th percentile of the AUC over batch bootstrap resamples of the test part."""
    auc_high: float | None
    """95th percentile of the same."""
    brier: float
    base_brier: float
    """Brier score of predicting the training base rate for every test unit."""
    base_rate: float
    skill: bool
    """Whether the model beats the base rate beyond noise (see the module docstring)."""
    flagged_train: float
    """Fraction of training units the threshold flags."""
    caught_train: float
    """Fraction of the training part's defective units among those flagged."""
    n_train: int
    n_test: int
    train_units: int
    test_units: int
    train_seconds: float
    trained_at: datetime

    @property
    def verdict(self) -> str:
        """The metrics in one sentence, as the CLI prints them."""
        if self.auc is None:
            return "no skill shown: the test batches have no defective unit (or no good one)"
        interval = f"AUC {self.auc:.3f} (90% {self.auc_low:.3f}-{self.auc_high:.3f})"
        brier = f"Brier {self.brier:.5f} vs base rate {self.base_brier:.5f}"
        if self.skill:
            return f"skill: {interval}, {brier}"
        return f"no skill over the base rate within noise: {interval}, {brier}"

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["trained_at"] = self.trained_at.isoformat()
        out["verdict"] = self.verdict
        return out


class UnitModel:
    """A trained per-unit judgement model for one product: its parameter-only feature
    schema, the booster, the suspect threshold and its test metrics."""

    def __init__(
        self, schema: FeatureSchema, estimator: Any, threshold: float, metrics: UnitMetrics
    ) -> None:
        self.schema = schema
        self.estimator = estimator
        self.threshold = threshold
        self.metrics = metrics

    @property
    def product(self) -> str:
        return self.schema.product

    def __repr__(self) -> str:
        features = len(self.schema.columns)
        return f"UnitModel({self.product}, {features} features, {self.metrics.verdict})"

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(defect) for feature rows built by :attr:`schema`."""
        return _probabilities(self.estimator, np.atleast_2d(x))

    def features_from_means(self, means: Mapping[str, float]) -> np.ndarray:
        """The feature row of a unit from its parameters' mean readings while it was made
        (parameter uid → mean, in the parameter's unit); a parameter not given is NaN.

        >>> model.features_from_means({"P-REFLOW-PEAK": 245.0})  # doctest: +SKIP
        array([0.33333333, 0.11111111, nan, nan, ...])
        """
        return features_from_means(self.schema, means)

    def portable(self, version: str | None = None) -> tuple[dict[str, Any], bytes]:
        """The manifest (unsigned) and ONNX graph of this model, for
        :func:`sqems.edge.portable.sign`."""
        columns = self.schema.columns
        graph = export_onnx(self.estimator, len(columns))
        schema = {**self.schema.as_dict(), "schema_version": SCHEMA_VERSION, "columns": columns}
        metrics = {**self.metrics.as_dict(), "threshold_rule": _THRESHOLD_RULE}
        return manifest(
            kind=KIND,
            product=self.product,
            schema=schema,
            inputs=columns,
            onnx_bytes=graph,
            metrics=metrics,
            threshold=self.threshold,
            version=version,
        ), graph

    to_portable = portable  # the name the edge tier's contract uses


def features_from_means(schema: FeatureSchema, means: Mapping[str, float]) -> np.ndarray:
    """The feature row of a unit under ``schema`` from its parameters' mean readings
    (see :meth:`UnitModel.features_from_means`); the edge agent rebuilds ``schema`` from
    a bundle's manifest (``FeatureSchema.from_dict``) and calls this."""
    row = np.full(len(schema.columns), np.nan)
    for group, where in zip(schema.groups, schema.slices(), strict=True):
        value = means.get(group.key)
        if value is None or not math.isfinite(value):
            continue
        pos = (float(value) - group.center) / group.scale
        row[where] = (pos, pos * pos)
    return row


_THRESHOLD_RULE = (
    f"suspect when P(defect) >= threshold: {RISK_RATIO:g} x the training defect rate, or "
    f"{NO_SKILL_THRESHOLD:g} (nothing flagged) when the model shows no skill"
)


def train_unit_model(store: GraphStore, product: str, *, seed: int = 0) -> UnitModel:
    """Learn, for ``product``, P(an in-house defect) of a unit from its process
    parameters; see the module docstring. Same refusals as
    :func:`sqems.analysis.prediction.train`; ``seed`` fixes the booster and the bootstrap.
    """
    started = time.perf_counter()
    split = training_split(store, product)
    n_train, batches = split.n_train, split.batches
    full = _build_schema(product, batches[:n_train], split.facts.parameters)
    params = tuple(g for g in full.groups if g.kind is FeatureKind.PARAMETER)
    schema = FeatureSchema(product, params, version=SCHEMA_VERSION)
    x = schema.encode(batches, {})
    schema = _with_references(schema, x[:n_train])

    rows, y, w, _ = _weighted_rows(x[:n_train], split.defective[:n_train], split.units[:n_train])
    estimator = _booster(seed)
    with _one_thread():
        estimator.fit(rows, y, sample_weight=w)

    base_rate = float(split.defective[:n_train].sum() / split.units[:n_train].sum())
    p_train = _probabilities(estimator, x[:n_train])
    threshold = min(RISK_RATIO * base_rate, NO_SKILL_THRESHOLD)
    flagged = float(split.units[:n_train][p_train >= threshold].sum() / split.units[:n_train].sum())

    test_rows, y_test, w_test, index = _weighted_rows(
        x[n_train:], split.defective[n_train:], split.units[n_train:]
    )
    p_test = _probabilities(estimator, test_rows)
    auc, low, high = _auc_interval(p_test, y_test, w_test, index, seed)
    brier = float(brier_score_loss(y_test, p_test, sample_weight=w_test))
    base_brier = float(
        brier_score_loss(y_test, np.full(len(y_test), base_rate), sample_weight=w_test)
    )
    skill = low is not None and low > 0.5 and brier < base_brier
    if not skill:
        threshold, flagged = NO_SKILL_THRESHOLD, 0.0
    d_train = split.defective[:n_train]
    caught = float(d_train[p_train >= threshold].sum() / d_train.sum())
    metrics = UnitMetrics(
        auc=auc,
        auc_low=low,
        auc_high=high,
        brier=brier,
        base_brier=base_brier,
        base_rate=base_rate,
        skill=skill,
        flagged_train=flagged,
        caught_train=caught,
        n_train=n_train,
        n_test=len(batches) - n_train,
        train_units=int(split.units[:n_train].sum()),
        test_units=int(split.units[n_train:].sum()),
        train_seconds=round(time.perf_counter() - started, 3),
        trained_at=datetime.now(UTC),
    )
    log.info("unit judgement model trained", extra={"product": product, **metrics.as_dict()})
    return UnitModel(schema, estimator, threshold, metrics)


def _weighted_auc(p: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of scores ``p`` against labels ``y`` under each row of ``weights`` (one
    weighting per resample), ties counted half."""
    pos, neg = y == 1, y == 0
    above = (p[pos][:, None] > p[neg][None, :]) + 0.5 * (p[pos][:, None] == p[neg][None, :])
    wp, wn = weights[:, pos], weights[:, neg]
    pairs = np.einsum("bi,ij,bj->b", wp, above, wn)
    total = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / total, np.nan)


def _auc_interval(
    p: np.ndarray, y: np.ndarray, w: np.ndarray, batch: np.ndarray, seed: int
) -> tuple[float | None, float | None, float | None]:
    """The test AUC and its 90 % interval over resamples of whole batches: units of a
    batch share their features, so the batches, not the units, are the independent
    draws."""
    if len(np.unique(y)) < 2:
        return None, None, None
    auc = float(_weighted_auc(p, y, w[None, :])[0])
    n_batches = int(batch.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_batches, size=(BOOTSTRAP, n_batches))
    counts = np.zeros((BOOTSTRAP, n_batches))
    np.add.at(counts, (np.arange(BOOTSTRAP)[:, None], draws), 1.0)
    resampled = _weighted_auc(p, y, counts[:, batch] * w[None, :])
    resampled = resampled[np.isfinite(resampled)]
    low, high = np.quantile(resampled, [0.05, 0.95])
    return auc, float(low), float(high)
