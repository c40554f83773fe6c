"""Control charts and capability of the plant's own series, ready to draw and act on.

:func:`parameter_chart` charts the actuals the process runs recorded for a parameter
(one machine or all, in a window): individuals and moving range, X̄-R or X̄-S over
subgroups of consecutive runs, EWMA or tabular CUSUM. :func:`inspection_chart` charts
the inspections of a process step or a line: p, np, c or u.

Limits come from phase I on the first ``baseline`` points (all of them by default:
assignable causes are dropped and the limits re-estimated until stable); the points
after the baseline are monitored against those frozen limits (phase II), or against
``limits`` the caller stored from an earlier study. The run rules that fire are
reported by the index of the point that completed each pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from sqems.analysis import spc
from sqems.analysis.capability import Capability, capability
from sqems.analysis.rules import RULES, resolve
from sqems.analysis.series import inspection_series, parameter_series
from sqems.errors import ValidationFailed
from sqems.graph_model.store import GraphStore, TimeWindow


class ChartKind(StrEnum):
    INDIVIDUALS = "individuals"
    XBAR_R = "xbar_r"
    XBAR_S = "xbar_s"
    EWMA = "ewma"
    CUSUM = "cusum"
    P = "p"
    NP = "np"
    C = "c"
    U = "u"


PARAMETER_KINDS = (
    ChartKind.INDIVIDUALS,
    ChartKind.XBAR_R,
    ChartKind.XBAR_S,
    ChartKind.EWMA,
    ChartKind.CUSUM,
)
INSPECTION_KINDS = (ChartKind.P, ChartKind.NP, ChartKind.C, ChartKind.U)
_SHEWHART = {
    ChartKind.INDIVIDUALS: spc.ChartType.I_MR,
    ChartKind.XBAR_R: spc.ChartType.XBAR_R,
    ChartKind.XBAR_S: spc.ChartType.XBAR_S,
    ChartKind.P: spc.ChartType.P,
    ChartKind.NP: spc.ChartType.NP,
    ChartKind.C: spc.ChartType.C,
    ChartKind.U: spc.ChartType.U,
}


@dataclass(frozen=True, slots=True)
class ChartPoint:
    index: int
    key: str
    """The run (or first run of a subgroup) or the inspection the point stands for."""
    time: float
    value: float
    center: float
    lcl: float
    ucl: float
    phase: int
    """1 for the baseline the limits were estimated from, 2 for monitored points."""


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    title: str
    indices: tuple[int, ...]


@dataclass(slots=True)
class ChartResult:
    kind: ChartKind
    subject: str
    unit: str | None
    points: list[ChartPoint]
    secondary: list[ChartPoint]
    """The dispersion chart beside an I or X̄ chart (moving range, R or S)."""
    sigma: float
    limits: dict[str, Any] | None
    """Frozen Shewhart limits, storable and passable back as ``limits``."""
    dropped: tuple[int, ...]
    """Baseline points phase I excluded as assignable causes."""
    stable: bool
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parameter_chart(
    store: GraphStore,
    parameter: str,
    kind: ChartKind = ChartKind.INDIVIDUALS,
    *,
    machine: str | None = None,
    window: TimeWindow | None = None,
    baseline: int | None = None,
    limits: dict[str, Any] | None = None,
    subgroup_size: int = 5,
    rules: list[str] | None = None,
    ewma_lambda: float = 0.2,
    cusum_k: float = 0.5,
    cusum_h: float = 5.0,
) -> ChartResult:
    """Chart ``parameter``'s recorded actuals; see the module docstring."""
    if kind not in PARAMETER_KINDS:
        raise ValidationFailed(
            f"a parameter is charted as one of {', '.join(PARAMETER_KINDS)}; "
            f"{kind} charts inspections"
        )
    series = parameter_series(store, parameter, machine=machine, window=window)
    subject = parameter if machine is None else f"{parameter} on {machine}"
    keys, times, values = series.runs, series.times, series.values
    if kind in (ChartKind.XBAR_R, ChartKind.XBAR_S):
        if subgroup_size < 2:
            raise ValidationFailed(f"subgroups need at least 2 runs, got {subgroup_size}")
        whole = len(values) // subgroup_size * subgroup_size
        data: Any = values[:whole].reshape(-1, subgroup_size)
        keys, times = keys[:whole:subgroup_size], times[:whole:subgroup_size]
    else:
        data = values
    _enough(len(keys), subject)
    base = _baseline(baseline, len(keys))

    if kind in (ChartKind.EWMA, ChartKind.CUSUM):
        study = spc.phase_one(spc.ChartType.I_MR, values[:base], secondary=True)
        sigma = study.limits.sigma
        target = series.parameter.target
        if target is None:
            target = study.limits.center
        if kind is ChartKind.EWMA:
            chart = spc.ewma(values, target=target, sigma=sigma, lam=ewma_lambda)
            return _result(
                kind,
                subject,
                series.parameter.unit,
                chart,
                keys,
                times,
                base,
                study,
                rules,
                limits=None,
            )
        return _cusum(
            subject,
            series.parameter.unit,
            values,
            keys,
            times,
            base,
            study,
            target,
            sigma,
            cusum_k,
            cusum_h,
        )
    return _shewhart(
        kind, subject, series.parameter.unit, data, None, keys, times, base, limits, rules
    )


def inspection_chart(
    store: GraphStore,
    scope: str,
    kind: ChartKind = ChartKind.P,
    *,
    window: TimeWindow | None = None,
    baseline: int | None = None,
    limits: dict[str, Any] | None = None,
    rules: list[str] | None = None,
) -> ChartResult:
    """Chart the inspections of ``scope`` (a process step or a line)."""
    if kind not in INSPECTION_KINDS:
        raise ValidationFailed(
            f"inspections are charted as one of {', '.join(INSPECTION_KINDS)}; "
            f"{kind} charts a parameter"
        )
    series = inspection_series(store, scope, window=window)
    _enough(len(series.inspections), f"inspections of {scope}")
    base = _baseline(baseline, len(series.inspections))
    sizes = None if kind is ChartKind.C else series.sample_sizes
    return _shewhart(
        kind,
        scope,
        None,
        series.defects,
        sizes,
        series.inspections,
        series.times,
        base,
        limits,
        rules,
    )


def _enough(n: int, subject: str) -> None:
    if n < 3:
        raise ValidationFailed(
            f"{subject} has {n} points in this window; a control chart needs at least 3 "
            "(widen the window or drop the machine filter)"
        )


def _baseline(baseline: int | None, n: int) -> int:
    if baseline is None:
        return n
    if not 3 <= baseline <= n:
        raise ValidationFailed(f"baseline must be between 3 and the {n} points, got {baseline}")
    return baseline


def _shewhart(
    kind: ChartKind,
    subject: str,
    unit: str | None,
    data: Any,
    sizes: Any,
    keys: list[str],
    times: np.ndarray,
    base: int,
    limits: dict[str, Any] | None,
    rules: list[str] | None,
) -> ChartResult:
    chart_type = _SHEWHART[kind]
    if limits is not None:
        frozen = spc.Limits.from_dict(limits)
        if frozen.chart is not chart_type:
            raise ValidationFailed(
                f"the limits given are for a {frozen.chart} chart, not {chart_type}"
            )
        study = None
    else:
        study = spc.phase_one(
            chart_type, data[:base], None if sizes is None else sizes[:base], secondary=True
        )
        frozen = study.limits
    chart = spc.monitor(frozen, data, sizes)
    return _result(
        kind,
        subject,
        unit,
        chart,
        keys,
        times,
        base if study else 0,
        study,
        rules,
        limits=frozen.to_dict(),
    )


def _points(chart: spc.Chart, keys: list[str], times: np.ndarray, base: int) -> list[ChartPoint]:
    return [
        ChartPoint(
            i,
            keys[i],
            float(times[i]),
            float(chart.statistic[i]),
            float(chart.center[i]),
            float(chart.lcl[i]),
            float(chart.ucl[i]),
            1 if i < base else 2,
        )
        for i in range(len(chart))
    ]


def _result(
    kind: ChartKind,
    subject: str,
    unit: str | None,
    chart: spc.Chart,
    keys: list[str],
    times: np.ndarray,
    base: int,
    study: spc.PhaseOne | None,
    rules: list[str] | None,
    *,
    limits: dict[str, Any] | None,
) -> ChartResult:
    chosen = [r.name for r in resolve(rules)]
    fired = chart.signals(chosen)
    violations = [
        Violation(name, RULES[name].title, tuple(int(i) for i in idx))
        for name, idx in fired.items()
        if len(idx)
    ]
    secondary = chart.secondary
    notes = []
    if study is not None and not study.stable:
        notes.append(
            "phase I did not settle: points kept signalling after "
            f"{study.iterations} re-estimations; the limits are provisional"
        )
    return ChartResult(
        kind,
        subject,
        unit,
        _points(chart, keys, times, base),
        _points(secondary, keys, times, base) if secondary is not None else [],
        chart.sigma,
        limits,
        study.dropped if study else (),
        study.stable if study else True,
        violations,
        notes,
    )


def _cusum(
    subject: str,
    unit: str,
    values: np.ndarray,
    keys: list[str],
    times: np.ndarray,
    base: int,
    study: spc.PhaseOne,
    target: float,
    sigma: float,
    k: float,
    h: float,
) -> ChartResult:
    chart = spc.cusum(values, target=target, sigma=sigma, k=k, h=h)
    upper, lower = chart.signals()

    def sums(side: np.ndarray) -> list[ChartPoint]:
        # a cumulative sum runs from 0 to the decision interval H
        return [
            ChartPoint(
                i,
                keys[i],
                float(times[i]),
                float(side[i]),
                0.0,
                0.0,
                chart.decision,
                1 if i < base else 2,
            )
            for i in range(len(values))
        ]

    points, secondary = sums(chart.upper), sums(chart.lower)
    violations = [
        Violation(name, title, tuple(int(i) for i in idx))
        for name, title, idx in (
            ("cusum_upper", "C+ beyond the decision interval (upward shift)", upper),
            ("cusum_lower", "C- beyond the decision interval (downward shift)", lower),
        )
        if len(idx)
    ]
    return ChartResult(
        ChartKind.CUSUM,
        subject,
        unit,
        points,
        secondary,
        sigma,
        None,
        study.dropped,
        study.stable,
        violations,
    )


def parameter_capability(
    store: GraphStore,
    parameter: str,
    *,
    machine: str | None = None,
    window: TimeWindow | None = None,
    confidence: float = 0.95,
) -> Capability:
    """Capability of ``parameter``'s recorded actuals against its spec limits; the
    stability check is the individuals chart's rule 1 on the same values."""
    series = parameter_series(store, parameter, machine=machine, window=window)
    spec = series.parameter
    if spec.lsl is None and spec.usl is None:
        raise ValidationFailed(f"parameter {parameter} has no spec limits to judge against")
    subject = parameter if machine is None else f"{parameter} on {machine}"
    _enough(len(series.values), subject)
    return capability(series.values, spec.lsl, spec.usl, spec.target, confidence=confidence)
