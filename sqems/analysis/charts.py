"""Control charts and capability of the plant's own series, ready to draw and act on.

:func:`parameter_chart` charts the actuals the process runs recorded for a parameter
(one machine or all, in a window): individuals and moving range, X̄-R or X̄-S over
subgroups of consecutive runs, EWMA or tabular CUSUM. A parameter set on several
machines is charted **per machine** unless ``pool`` is asked for: each machine gets its
own phase I limits and its own run rules, and the points of all machines are returned
in time order, each with its machine and its machine's lines. A pooled chart says so
in its notes with the within-machine sigma beside the pooled one, because pooling puts
the offsets between machines into sigma (wider limits that hide a machine's shift).
:func:`inspection_chart` charts the inspections of a process step or a line: p, np, c
or u with exact, Laney or normal limits (:class:`~sqems.analysis.spc.LimitMethod`;
``auto`` by default), or g — the defect-free inspections between inspections that
found defects, for rare defects.

Limits come from phase I on the first ``baseline`` points (all of them by default:
assignable causes are dropped and the limits re-estimated until stable); the points
after the baseline are monitored against those frozen limits (phase II), or against
``limits`` the caller stored from an earlier study. The run rules that fire are
reported by the index of the point that completed each pattern.

A parameter chart also carries the parameter's spec limits (:class:`SpecCheck`) and the
runs outside them. Control limits say whether the process is stable, spec limits whether
its runs are good: a process can sit steadily above its USL with no run rule firing, so
the chart says so in its notes (``2 runs above the USL of 250 degC; no run rule
fires``) rather than leave a stable chart to read as a good one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from sqems.analysis import spc
from sqems.analysis.capability import Capability, capability
from sqems.analysis.rules import RULES, resolve
from sqems.analysis.series import (
    InspectionSeries,
    ParameterSeries,
    inspection_series,
    parameter_series,
)
from sqems.errors import ValidationFailed
from sqems.figures import probability
from sqems.graph_model.nodes import Parameter
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
    G = "g"


PARAMETER_KINDS = (
    ChartKind.INDIVIDUALS,
    ChartKind.XBAR_R,
    ChartKind.XBAR_S,
    ChartKind.EWMA,
    ChartKind.CUSUM,
)
INSPECTION_KINDS = (ChartKind.P, ChartKind.NP, ChartKind.C, ChartKind.U, ChartKind.G)
_SHEWHART = {
    ChartKind.INDIVIDUALS: spc.ChartType.I_MR,
    ChartKind.XBAR_R: spc.ChartType.XBAR_R,
    ChartKind.XBAR_S: spc.ChartType.XBAR_S,
    ChartKind.P: spc.ChartType.P,
    ChartKind.NP: spc.ChartType.NP,
    ChartKind.C: spc.ChartType.C,
    ChartKind.U: spc.ChartType.U,
    ChartKind.G: spc.ChartType.G,
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
    machine: str | None = None
    """The machine of a per-machine chart's point (None on a single or pooled chart)."""


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    title: str
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SpecCheck:
    """A parameter's spec limits and the charted runs outside them.

    Spec limits judge single runs: they belong on an individuals chart, not beside the
    limits of means, ranges or sums (an X-bar point inside spec may hold a run outside
    it). ``points`` are the indices of the chart's points that hold an out-of-spec run."""

    lsl: float | None
    usl: float | None
    target: float | None
    runs: int
    """Runs judged (the charted ones)."""
    below: tuple[str, ...]
    """Runs whose actual is below the LSL, in chart order."""
    above: tuple[str, ...]
    """Runs whose actual is above the USL, in chart order."""
    points: tuple[int, ...]

    @property
    def out_of_spec(self) -> int:
        return len(self.below) + len(self.above)


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
    machines: list[str] = field(default_factory=list)
    """The machines the points come from (empty when the series names none)."""
    pooled: bool = False
    """True when one set of limits covers several machines (asked for with ``pool``)."""
    by_machine: list[MachineChart] = field(default_factory=list)
    """Per-machine charts: each machine's sigma, limits and phase I outcome."""
    spec: SpecCheck | None = None
    """A parameter chart's spec limits and the runs outside them (None for inspection
    charts and for a parameter without spec limits)."""


@dataclass(frozen=True, slots=True)
class MachineChart:
    """One machine's part of a per-machine chart."""

    machine: str
    points: int
    sigma: float
    limits: dict[str, Any] | None
    dropped: tuple[int, ...]
    """Indices (in the merged chart) of the baseline points phase I excluded."""
    stable: bool


def parameter_chart(
    store: GraphStore,
    parameter: str,
    kind: ChartKind = ChartKind.INDIVIDUALS,
    *,
    machine: str | None = None,
    pool: bool = False,
    window: TimeWindow | None = None,
    baseline: int | None = None,
    limits: dict[str, Any] | None = None,
    subgroup_size: int = 5,
    rules: list[str] | None = None,
    ewma_lambda: float = 0.2,
    cusum_k: float = 0.5,
    cusum_h: float = 5.0,
) -> ChartResult:
    """Chart ``parameter``'s recorded actuals; see the module docstring.

    With several machines and neither ``machine`` nor ``pool``, each machine is charted
    on its own (``baseline`` then counts each machine's points) and the result merges
    them in time order. Stored ``limits`` belong to one chart: give them with the
    ``machine`` they came from, or with ``pool``."""
    if kind not in PARAMETER_KINDS:
        raise ValidationFailed(
            f"a parameter is charted as one of {', '.join(PARAMETER_KINDS)}; "
            f"{kind} charts inspections"
        )
    series = parameter_series(store, parameter, machine=machine, window=window)
    options = _Options(kind, baseline, subgroup_size, rules, ewma_lambda, cusum_k, cusum_h)
    named = sorted({m for m in series.machines if m is not None})
    several = len(set(series.machines)) > 1
    if machine is not None or pool or not several:
        subject = parameter if machine is None else f"{parameter} on {machine}"
        result = _parameter_chart(series, subject, series.values, series.runs, series.times,
                                  options, limits)  # fmt: skip
        result.machines = named
        if several:
            result.pooled = True
            result.notes.insert(0, _pooled_note(series))
    elif limits is not None:
        raise ValidationFailed(
            f"{parameter} runs on {', '.join(named)}: stored limits belong to one chart; "
            "give the machine they were estimated for, or pool=True"
        )
    else:
        result = _per_machine(series, options)
    if result.spec is not None:
        result.notes.insert(0, spec_note(result.spec, series.parameter.unit, result.violations))
    return result


def spec_note(spec: SpecCheck, unit: str, violations: list[Violation]) -> str:
    """The spec verdict in plain words, beside whether any run rule fires.

    >>> check = SpecCheck(235.0, 250.0, 242.5, 40, (), ("R-1", "R-2"), (7, 9))
    >>> spec_note(check, "degC", [])
    '2 runs above the USL of 250 degC; no run rule fires'
    """
    found = []
    if spec.below:
        found.append(f"{_runs(len(spec.below))} below the LSL of {spec.lsl:g} {unit}")
    if spec.above:
        found.append(f"{_runs(len(spec.above))} above the USL of {spec.usl:g} {unit}")
    rules = "no run rule fires" if not violations else _rules_fired(violations)
    if found:
        return f"{' and '.join(found)}; {rules}"
    limits = [
        f"{name} {v:g}" for name, v in (("LSL", spec.lsl), ("USL", spec.usl)) if v is not None
    ]
    return f"all {_runs(spec.runs)} within spec ({', '.join(limits)} {unit}); {rules}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n:,} runs"


def _rules_fired(violations: list[Violation]) -> str:
    """The rules that fired by their titles, lower-cased for the middle of a sentence."""
    titles = "; ".join(f"{v.title[:1].lower()}{v.title[1:]} ({v.rule})" for v in violations)
    if len(violations) == 1:
        return f"a run rule fires: {titles}"
    return f"{len(violations)} run rules fire: {titles}"


def _spec_check(
    parameter: Parameter, values: np.ndarray, keys: list[str], size: int
) -> SpecCheck | None:
    """The runs of ``values`` outside ``parameter``'s spec; ``size`` runs make a point
    (X-bar charts), the runs past the last whole subgroup are not charted."""
    if parameter.lsl is None and parameter.usl is None:
        return None
    charted = len(values) // size * size
    values = values[:charted]
    low = values < parameter.lsl if parameter.lsl is not None else np.zeros(charted, dtype=bool)
    high = values > parameter.usl if parameter.usl is not None else np.zeros(charted, dtype=bool)
    return SpecCheck(
        parameter.lsl,
        parameter.usl,
        parameter.target,
        charted,
        tuple(keys[i] for i in np.flatnonzero(low)),
        tuple(keys[i] for i in np.flatnonzero(high)),
        tuple(sorted({int(i) // size for i in np.flatnonzero(low | high)})),
    )


@dataclass(frozen=True, slots=True)
class _Options:
    kind: ChartKind
    baseline: int | None
    subgroup_size: int
    rules: list[str] | None
    ewma_lambda: float
    cusum_k: float
    cusum_h: float
    clip: bool = False
    """Take at most the points there are as baseline (per-machine charts)."""


def _machine_label(machine: str | None) -> str:
    return machine if machine is not None else "no machine recorded"


def _within_machine_sigma(series: ParameterSeries) -> tuple[float, float]:
    """Moving-range sigma within each machine's own sequence (pooled over machines)
    and across the interleaved series, for the pooled chart's note."""
    labels = np.array([_machine_label(m) for m in series.machines])
    ranges = []
    for label in np.unique(labels):
        values = series.values[labels == label]
        ranges.append(np.abs(np.diff(values)))
    within = float(np.mean(np.concatenate(ranges))) / spc.d2(2) if ranges else float("nan")
    across = float(np.mean(np.abs(np.diff(series.values)))) / spc.d2(2)
    return within, across


def _pooled_note(series: ParameterSeries) -> str:
    labels = [_machine_label(m) for m in series.machines]
    means = {m: float(np.mean(series.values[[x == m for x in labels]])) for m in set(labels)}
    within, across = _within_machine_sigma(series)
    spread = max(means.values()) - min(means.values())
    return (
        f"pooled over {len(means)} machines ({', '.join(sorted(means))}): one set of limits "
        f"for all, so sigma includes the offsets between machines (moving-range sigma "
        f"{across:.4g} pooled vs {within:.4g} within each machine; machine means span "
        f"{spread:.4g}); chart each machine to see its own shifts"
    )


def _parameter_chart(
    series: ParameterSeries,
    subject: str,
    values: np.ndarray,
    keys: list[str],
    times: np.ndarray,
    options: _Options,
    limits: dict[str, Any] | None,
) -> ChartResult:
    size = options.subgroup_size if options.kind in (ChartKind.XBAR_R, ChartKind.XBAR_S) else 1
    result = _parameter_chart_of(series, subject, values, keys, times, options, limits)
    result.spec = _spec_check(series.parameter, values, keys, size)
    return result


def _parameter_chart_of(
    series: ParameterSeries,
    subject: str,
    values: np.ndarray,
    keys: list[str],
    times: np.ndarray,
    options: _Options,
    limits: dict[str, Any] | None,
) -> ChartResult:
    kind = options.kind
    unit = series.parameter.unit
    if kind in (ChartKind.XBAR_R, ChartKind.XBAR_S):
        size = options.subgroup_size
        if size < 2:
            raise ValidationFailed(f"subgroups need at least 2 runs, got {size}")
        whole = len(values) // size * size
        data: Any = values[:whole].reshape(-1, size)
        keys, times = keys[:whole:size], times[:whole:size]
    else:
        data = values
    _enough(len(keys), subject)
    wanted = options.baseline
    if wanted is not None and options.clip:
        wanted = min(wanted, len(keys))
    base = _baseline(wanted, len(keys))

    if kind in (ChartKind.EWMA, ChartKind.CUSUM):
        study = spc.phase_one(spc.ChartType.I_MR, values[:base], secondary=True)
        sigma = study.limits.sigma
        target = series.parameter.target
        if target is None:
            target = study.limits.center
        if kind is ChartKind.EWMA:
            chart = spc.ewma(values, target=target, sigma=sigma, lam=options.ewma_lambda)
            return _result(
                kind, subject, unit, chart, keys, times, base, study, options.rules, limits=None
            )
        return _cusum(
            subject,
            unit,
            values,
            keys,
            times,
            base,
            study,
            target,
            sigma,
            options.cusum_k,
            options.cusum_h,
        )
    return _shewhart(kind, subject, unit, data, None, keys, times, base, limits, options.rules)


def _per_machine(series: ParameterSeries, options: _Options) -> ChartResult:
    """One chart per machine, merged in time order with indices renumbered."""
    labels = [_machine_label(m) for m in series.machines]
    parts: list[tuple[str, ChartResult]] = []
    for label in sorted(set(labels)):
        mine = [i for i, m in enumerate(labels) if m == label]
        own = _Options(
            options.kind,
            options.baseline,
            options.subgroup_size,
            options.rules,
            options.ewma_lambda,
            options.cusum_k,
            options.cusum_h,
            clip=True,
        )
        subject = f"{series.parameter.uid} on {label}"
        chart = _parameter_chart(
            series,
            subject,
            series.values[mine],
            [series.runs[i] for i in mine],
            series.times[mine],
            own,
            None,
        )
        parts.append((label, chart))
    order = sorted(
        ((p.time, label, p.index) for label, chart in parts for p in chart.points),
    )
    where = {(label, local): new for new, (_, label, local) in enumerate(order)}

    def moved(label: str, points: list[ChartPoint]) -> list[ChartPoint]:
        return [
            ChartPoint(
                where[label, p.index],
                p.key,
                p.time,
                p.value,
                p.center,
                p.lcl,
                p.ucl,
                p.phase,
                label,
            )
            for p in points
        ]

    points = sorted((q for label, c in parts for q in moved(label, c.points)), key=_index)
    secondary = sorted((q for label, c in parts for q in moved(label, c.secondary)), key=_index)
    fired: dict[str, tuple[str, set[int]]] = {}
    for label, chart in parts:
        for v in chart.violations:
            _, found = fired.setdefault(v.rule, (v.title, set()))
            found.update(where[label, i] for i in v.indices)
    sigmas = np.array([c.sigma for _, c in parts])
    weights = np.array([len(c.points) for _, c in parts], dtype=float)
    first = parts[0][1]
    notes = [
        f"charted per machine ({len(parts)}): each point is judged against its own "
        "machine's limits, and run rules run within each machine's sequence"
    ]
    notes += [f"{label}: {note}" for label, chart in parts for note in chart.notes]
    by_machine = [
        MachineChart(
            label,
            len(chart.points),
            chart.sigma,
            chart.limits,
            tuple(sorted(where[label, i] for i in chart.dropped)),
            chart.stable,
        )
        for label, chart in parts
    ]
    return ChartResult(
        options.kind,
        series.parameter.uid,
        first.unit,
        points,
        secondary,
        # the machines' sigmas combined as a root mean square, weighted by their points
        float(np.sqrt(np.sum(weights * sigmas**2) / np.sum(weights))),
        None,
        tuple(sorted(i for m in by_machine for i in m.dropped)),
        all(c.stable for _, c in parts),
        [Violation(rule, title, tuple(sorted(idx))) for rule, (title, idx) in fired.items()],
        notes,
        machines=[m for m in (label for label, _ in parts) if m != _machine_label(None)],
        pooled=False,
        by_machine=by_machine,
        spec=_merged_spec(
            [(label, c.spec) for label, c in parts],
            where,
            dict(zip(series.runs, series.times.tolist(), strict=True)),
        ),
    )


def _merged_spec(
    parts: list[tuple[str, SpecCheck | None]],
    where: dict[tuple[str, int], int],
    started: dict[str, float],
) -> SpecCheck | None:
    """The machines' spec checks as one: runs in time order, points renumbered."""
    checks = [(label, spec) for label, spec in parts if spec is not None]
    if not checks:
        return None
    first = checks[0][1]

    def in_order(runs: list[str]) -> tuple[str, ...]:
        return tuple(sorted(runs, key=lambda run: (started[run], run)))

    return SpecCheck(
        first.lsl,
        first.usl,
        first.target,
        sum(spec.runs for _, spec in checks),
        in_order([r for _, spec in checks for r in spec.below]),
        in_order([r for _, spec in checks for r in spec.above]),
        tuple(sorted(where[label, i] for label, spec in checks for i in spec.points)),
    )


def _index(point: ChartPoint) -> int:
    return point.index


def inspection_chart(
    store: GraphStore,
    scope: str,
    kind: ChartKind = ChartKind.P,
    *,
    window: TimeWindow | None = None,
    baseline: int | None = None,
    limits: dict[str, Any] | None = None,
    rules: list[str] | None = None,
    method: spc.LimitMethod | str = spc.LimitMethod.AUTO,
) -> ChartResult:
    """Chart the inspections of ``scope`` (a process step or a line).

    p, np, c and u plot each inspection; ``method`` sets their limits. g plots, at each
    inspection that found defects, how many inspections before it (since the previous
    one that found any) found none: geometric when every inspection has the same chance
    of finding a defect, so its limits are exact geometric ones and a point below the
    LCL says defects now come sooner than before."""
    if kind not in INSPECTION_KINDS:
        raise ValidationFailed(
            f"inspections are charted as one of {', '.join(INSPECTION_KINDS)}; "
            f"{kind} charts a parameter"
        )
    series = inspection_series(store, scope, window=window)
    _enough(len(series.inspections), f"inspections of {scope}")
    if kind is ChartKind.G:
        return _g_chart(series, baseline, limits, rules, method)
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
        method,
    )


def _g_chart(
    series: InspectionSeries,
    baseline: int | None,
    limits: dict[str, Any] | None,
    rules: list[str] | None,
    method: spc.LimitMethod | str,
) -> ChartResult:
    found = np.flatnonzero(series.defects > 0)
    subject = f"inspections of {series.scope} between defects"
    if found.size < 3:
        raise ValidationFailed(
            f"{found.size} inspections of {series.scope} found defects in this window; a g "
            "chart needs at least 3 (widen the window)"
        )
    # clean inspections before each defect-finding one, since the previous such one
    gaps = np.diff(np.concatenate(([-1], found))) - 1
    keys = [series.inspections[i] for i in found]
    base = _baseline(baseline, int(found.size))
    result = _shewhart(
        ChartKind.G,
        subject,
        "inspections",
        gaps.astype(np.float64),
        None,
        keys,
        series.times[found],
        base,
        limits,
        rules,
        method,
    )
    sizes = series.sample_sizes
    if sizes.size and sizes.min() != sizes.max():
        result.notes.append(
            f"sample sizes vary from {int(sizes.min())} to {int(sizes.max())}: the chance "
            "that an inspection finds a defect varies with them, so the gaps are only "
            "roughly geometric"
        )
    return result


def _enough(n: int, subject: str) -> None:
    if n < 3:
        raise ValidationFailed(
            f"{subject} has {n} points in this window; a control chart needs at least 3 "
            "(widen the window, or chart the machines pooled)"
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
    method: spc.LimitMethod | str = spc.LimitMethod.AUTO,
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
            chart_type,
            data[:base],
            None if sizes is None else sizes[:base],
            secondary=True,
            method=method,
        )
        frozen = study.limits
    chart = spc.monitor(frozen, data, sizes)
    result = _result(
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
    if chart_type in _COUNTS:
        kept = None
        if study is not None:
            kept = np.setdiff1d(np.arange(base), np.array(study.dropped, dtype=np.int64))
        result.notes.insert(0, _limits_note(frozen, data, sizes, kept))
    return result


_COUNTS = {spc.ChartType.P, spc.ChartType.NP, spc.ChartType.C, spc.ChartType.U, spc.ChartType.G}
_LAWS = {
    spc.ChartType.P: "binomial",
    spc.ChartType.NP: "binomial",
    spc.ChartType.C: "Poisson",
    spc.ChartType.U: "Poisson",
    spc.ChartType.G: "geometric",
}


def _limits_note(limits: spc.Limits, data: Any, sizes: Any, kept: np.ndarray | None) -> str:
    """What the attribute limits are and, when phase I set them here, the dispersion
    test on the baseline points it kept (the data the method was chosen on)."""
    law = _LAWS[limits.chart]
    tail = spc.tail_probability(limits.nsigmas)
    if limits.method is spc.LimitMethod.EXACT:
        text = (
            f"exact {law} probability limits: at most {tail:.3%} false alarms per point on "
            "each side; an LCL of 0 means no lower limit exists (a zero count is not rare "
            "enough to signal)"
        )
    elif limits.method is spc.LimitMethod.LANEY:
        text = (
            f"Laney limits: the points vary {limits.dispersion:.3g} times as much as the "
            f"{law} model allows (sigma_z), so the limits are widened by that factor"
        )
    else:
        text = f"normal-approximation {limits.nsigmas:g}-sigma limits (not exact for {law} counts)"
    if limits.chart is spc.ChartType.G or kept is None or kept.size < 2:
        return text
    found = spc.dispersion(limits.chart, data[kept], None if sizes is None else sizes[kept])
    return (
        f"{text} (dispersion test on the {kept.size} baseline points kept: ratio "
        f"{found.ratio:.3g}, p = {probability(found.p_value)}; auto limits switch to Laney below "
        f"{spc.OVERDISPERSION_ALPHA:g})"
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
