"""The lake jobs, written once for every engine.

* :func:`summaries` — per run and parameter, the run's readings summarised (count, mean,
  spread, range); the mean, rounded as the streaming path rounds it, is the run's
  ``RECORDED`` actual, and :func:`write_recorded` puts it into the graph through the
  same edge the ingestion pipeline writes.
* :func:`spc_scan` — the run rules over every series of good readings, judged against
  the limits the live monitor uses (the parameter's design: centre at target, sigma an
  eighth of the tolerance); the rule hits are counted per series.
* :func:`capability_table` — capability per parameter and machine from the runs'
  recorded actuals, with intervals (:func:`sqems.analysis.capability.capability`).
* :func:`compare` — whether quality differs between shifts, lines and machines
  (:mod:`sqems.lake.stats`).

The engine does the big aggregations; what follows them runs here once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqems.analysis.capability import MIN_VALUES, capability
from sqems.analysis.rules import evaluate, resolve
from sqems.graph_model.nodes import Parameter
from sqems.graph_model.store import GraphStore, iter_chunks
from sqems.ingestion.pipeline import ALARM_RULES, monitor_for, recorded_edge
from sqems.lake.engine import Engine
from sqems.lake.stats import Finding, failure_rates, holm, welch_anova

_TS = pa.timestamp("us", tz="UTC")
FACTORS = ("shift", "line", "machine")

SUMMARIES = pa.schema(
    [
        ("run", pa.string()),
        ("parameter", pa.string()),
        ("unit", pa.string()),
        ("machine", pa.string()),
        ("line", pa.string()),
        ("site", pa.string()),
        ("shift", pa.string()),
        ("step", pa.string()),
        ("started_at", _TS),
        ("readings", pa.int64()),
        ("good", pa.int64()),
        ("mean", pa.float64()),
        ("sd", pa.float64()),
        ("low", pa.float64()),
        ("high", pa.float64()),
    ]
)

_SUMMARIES_SQL = """
SELECT h.run AS run, r.parameter AS parameter, r.unit AS unit, h.machine AS machine,
       u.line AS line, u.site AS site, u.shift AS shift, u.step AS step,
       h.started_at AS started_at, count(*) AS readings,
       count(CASE WHEN r.quality = 'good' THEN 1 END) AS good,
       sum(CAST(r.value AS DECIMAL(38, 9))) AS total, stddev_samp(r.value) AS sd,
       min(r.value) AS low, max(r.value) AS high
FROM readings r
JOIN run_hours h ON r.machine = h.machine AND date_trunc('hour', r.ts) = h.hour
     AND r.ts BETWEEN h.started_at AND h.ended_at
JOIN runs u ON u.run = h.run
GROUP BY h.run, r.parameter, r.unit, h.machine, u.line, u.site, u.shift, u.step, h.started_at
"""


def summaries(engine: Engine) -> pa.Table:
    """Per run and parameter: readings, good readings, mean, sd, min, max, and the
    ``recorded`` actual (the mean rounded to 6 places, as the graph keeps it); ordered
    by run and parameter. A reading counts for every finished run on its machine whose
    time covers it, ends included — the rule of the streaming path."""
    found = engine.query(_SUMMARIES_SQL)
    # the sum is exact (decimal) on every engine, so the mean - and its rounding to the
    # recorded actual - does not depend on the order an engine adds the readings in
    total = found.column("total").cast(pa.float64()).to_numpy(zero_copy_only=False)
    count = found.column("readings").cast(pa.int64()).to_numpy(zero_copy_only=False)
    found = found.append_column("mean", pa.array(total / count, pa.float64()))
    table = found.select(SUMMARIES.names).cast(SUMMARIES)
    table = table.sort_by([("run", "ascending"), ("parameter", "ascending")])
    recorded = np.round(table.column("mean").to_numpy(zero_copy_only=False), 6)
    return table.append_column("recorded", pa.array(recorded, pa.float64()))


def write_recorded(graph: GraphStore, table: pa.Table, *, batch: int = 10_000) -> int:
    """Write each summary's mean as its run's ``RECORDED`` actual; returns how many."""
    edges = (
        recorded_edge(run, parameter, unit, mean)
        for run, parameter, unit, mean in zip(
            table.column("run").to_pylist(),
            table.column("parameter").to_pylist(),
            table.column("unit").to_pylist(),
            table.column("mean").to_pylist(),
            strict=True,
        )
    )
    written = 0
    for chunk in iter_chunks(edges, batch):
        graph.upsert_edges(chunk)
        written += len(chunk)
    return written


# --- SPC -----------------------------------------------------------------------------------

SPC = pa.schema(
    [
        ("site", pa.string()),
        ("line", pa.string()),
        ("machine", pa.string()),
        ("parameter", pa.string()),
        ("rule", pa.string()),
        ("readings", pa.int64()),
        ("center", pa.float64()),
        ("sigma", pa.float64()),
        ("hits", pa.int64()),
        ("first_at", _TS),
        ("last_at", _TS),
    ]
)
_HITS = pa.schema(
    [
        ("g", pa.int64()),
        ("rule", pa.string()),
        ("readings", pa.int64()),
        ("hits", pa.int64()),
        ("first_at", _TS),
        ("last_at", _TS),
    ]
)
_KEYS = ("site", "line", "machine", "parameter")


def scan_series(group: pa.Table, *, rules: tuple[str, ...]) -> pa.Table:
    """The rule hits of one series (the same numpy code on every engine): its readings
    in time order (the value breaking ties of time: any fixed order does, and this one
    ships no message ids to the workers), judged by
    :func:`sqems.analysis.rules.evaluate`."""
    order = pc.sort_indices(group, [("ts", "ascending"), ("value", "ascending")])
    group = group.take(order)
    values = group.column("value").to_numpy()
    ts = group.column("ts").cast(pa.int64()).to_numpy()
    center = float(group.column("center")[0].as_py())
    sigma = float(group.column("sigma")[0].as_py())
    found = evaluate(values, center, sigma, rules)
    g = int(group.column("g")[0].as_py())
    names = sorted(found)
    hits = [found[r] for r in names]
    first = [int(ts[h[0]]) if h.size else None for h in hits]
    last = [int(ts[h[-1]]) if h.size else None for h in hits]
    return pa.table(
        {
            "g": pa.array([g] * len(names), pa.int64()),
            "rule": pa.array(names, pa.string()),
            "readings": pa.array([values.size] * len(names), pa.int64()),
            "hits": pa.array([h.size for h in hits], pa.int64()),
            "first_at": pa.array(first, pa.int64()).cast(_TS),
            "last_at": pa.array(last, pa.int64()).cast(_TS),
        }
    )


def spc_scan(engine: Engine, rules: Sequence[str] | None = None) -> pa.Table:
    """Rule hits per series and rule over every watched series (a parameter with both
    spec limits); ``rules`` default to the live stream's alarm rules."""
    picked = tuple(r.name for r in resolve(list(rules) if rules else list(ALARM_RULES)))
    limits = _design_limits(engine.query("SELECT * FROM parameters"))
    engine.register("limits", limits)
    series = engine.query(
        "SELECT DISTINCT r.site AS site, r.line AS line, r.machine AS machine, "
        "r.parameter AS parameter FROM readings r JOIN limits l ON l.parameter = r.parameter "
        "WHERE r.quality = 'good'"
    ).sort_by([(k, "ascending") for k in _KEYS])
    series = series.append_column("g", pa.array(np.arange(series.num_rows), pa.int64()))
    engine.register("series_ids", series)
    sql = (
        "SELECT s.g AS g, r.ts AS ts, r.value AS value, "
        "l.center AS center, l.sigma AS sigma FROM readings r "
        "JOIN series_ids s ON r.site = s.site AND r.line = s.line AND r.machine = s.machine "
        "AND r.parameter = s.parameter JOIN limits l ON l.parameter = r.parameter "
        "WHERE r.quality = 'good'"
    )
    hits = engine.per_group(sql, functools.partial(scan_series, rules=picked), _HITS)
    hits = hits.sort_by([("g", "ascending"), ("rule", "ascending")])
    g = hits.column("g").to_numpy()
    centre = dict(zip(limits.column("parameter").to_pylist(), limits.column("center").to_pylist(),
                      strict=True))  # fmt: skip
    spread = dict(zip(limits.column("parameter").to_pylist(), limits.column("sigma").to_pylist(),
                      strict=True))  # fmt: skip
    columns: dict[str, pa.Array] = {k: series.column(k).take(pa.array(g)) for k in _KEYS}
    parameters = columns["parameter"].to_pylist()
    return pa.table(
        {
            **columns,
            "rule": hits.column("rule"),
            "readings": hits.column("readings"),
            "center": pa.array([centre[p] for p in parameters], pa.float64()),
            "sigma": pa.array([spread[p] for p in parameters], pa.float64()),
            "hits": hits.column("hits"),
            "first_at": hits.column("first_at"),
            "last_at": hits.column("last_at"),
        },
        schema=SPC,
    )


def _design_limits(parameters: pa.Table) -> pa.Table:
    """Centre and sigma of each parameter the live monitor watches (see
    :func:`sqems.ingestion.pipeline.monitor_for`)."""
    rows: dict[str, list[object]] = {"parameter": [], "center": [], "sigma": []}
    for p in _parameters(parameters):
        monitor = monitor_for(p)
        if monitor is not None:
            rows["parameter"].append(p.uid)
            rows["center"].append(monitor.center)
            rows["sigma"].append(monitor.sigma)
    return pa.table(
        rows, schema=pa.schema([("parameter", pa.string()), ("center", pa.float64()),
                                ("sigma", pa.float64())])
    )  # fmt: skip


def _parameters(table: pa.Table) -> Iterable[Parameter]:
    for row in table.to_pylist():
        yield Parameter(
            uid=row["parameter"],
            name=row["name"],
            unit=row["unit"],
            lsl=row["lsl"],
            usl=row["usl"],
            target=row["target"],
            critical=bool(row["critical"]),
        )


# --- capability ----------------------------------------------------------------------------

CAPABILITY = pa.schema(
    [
        ("parameter", pa.string()),
        ("machine", pa.string()),
        ("unit", pa.string()),
        ("runs", pa.int64()),
        ("mean", pa.float64()),
        *[
            (f"{index}{part}", pa.float64())
            for index in ("cp", "cpk", "pp", "ppk")
            for part in ("", "_lower", "_upper")
        ],
        ("method", pa.string()),
        ("meets_1_33", pa.bool_()),
        ("warnings", pa.string()),
    ]
)


def capability_table(engine: Engine, table: pa.Table | None = None, *,
                     confidence: float = 0.95) -> pa.Table:  # fmt: skip
    """Capability of each parameter on each machine from its runs' recorded actuals in
    time order (the values a control chart of the parameter plots), with intervals;
    ``table`` is :func:`summaries`' result when already computed."""
    table = summaries(engine) if table is None else table
    specs = {p.uid: p for p in _parameters(engine.query("SELECT * FROM parameters"))}
    table = table.sort_by([("parameter", "ascending"), ("machine", "ascending"),
                           ("started_at", "ascending"), ("run", "ascending")])  # fmt: skip
    rows: list[dict[str, object]] = []
    keys = list(zip(table.column("parameter").to_pylist(), table.column("machine").to_pylist(),
                    strict=True))  # fmt: skip
    values = table.column("recorded").to_numpy()
    units = table.column("unit").to_pylist()
    start = 0
    for end in range(1, len(keys) + 1):
        if end < len(keys) and keys[end] == keys[start]:
            continue
        parameter, machine = keys[start]
        spec = specs.get(parameter)
        if spec is not None and (spec.lsl is not None or spec.usl is not None):
            rows.append(_capability_row(parameter, machine, units[start], values[start:end],
                                        spec, confidence))  # fmt: skip
        start = end
    return pa.Table.from_pylist(rows, schema=CAPABILITY)


def _capability_row(parameter: str, machine: str, unit: str, values: np.ndarray,
                    spec: Parameter, confidence: float) -> dict[str, object]:  # fmt: skip
    row: dict[str, object] = {"parameter": parameter, "machine": machine, "unit": unit,
                              "runs": int(values.size)}  # fmt: skip
    if values.size < MIN_VALUES:
        row["warnings"] = f"only {values.size} run: capability needs at least {MIN_VALUES}"
        return row
    cap = capability(values, spec.lsl, spec.usl, spec.target, confidence=confidence)
    row["mean"] = cap.mean
    for name in ("cp", "cpk", "pp", "ppk"):
        estimate = getattr(cap, name)
        if estimate is not None:
            row[name] = estimate.value
            row[f"{name}_lower"] = estimate.lower
            row[f"{name}_upper"] = estimate.upper
    row["method"] = cap.method
    row["meets_1_33"] = cap.meets(1.33)
    row["warnings"] = "; ".join(cap.warnings)
    return row


# --- shifts, lines, machines ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """The answers of :func:`compare`, Holm-adjusted together."""

    findings: list[Finding]
    untested: list[str]
    """What could not be tested, and why."""

    def table(self) -> pa.Table:
        """The findings as rows (levels as text), for Parquet."""
        return pa.Table.from_pylist(
            [
                {
                    "subject": f.subject,
                    "kind": f.kind,
                    "factor": f.factor,
                    "test": f.test,
                    "statistic": f.statistic,
                    "p_value": f.p_value,
                    "p_adjusted": f.p_adjusted,
                    "significant": f.significant,
                    "high": f.gap.high,
                    "low": f.gap.low,
                    "difference": f.gap.difference,
                    "difference_lower": f.gap.lower,
                    "difference_upper": f.gap.upper,
                    "levels": "; ".join(
                        f"{lv.name}: {lv.estimate:.6g} [{lv.lower:.6g}, {lv.upper:.6g}] n={lv.n}"
                        for lv in f.levels
                    ),
                    "answer": f.answer,
                }
                for f in self.findings
            ]
        )


_INSPECTIONS_SQL = " UNION ALL ".join(
    f"SELECT step, '{factor}' AS factor, {factor} AS level, count(*) AS inspected, "
    f"count(CASE WHEN verdict = 'fail' THEN 1 END) AS failed FROM inspections "
    f"WHERE run IS NOT NULL AND {factor} IS NOT NULL GROUP BY step, {factor}"
    for factor in FACTORS
)


def compare(engine: Engine, table: pa.Table | None = None, *,
            factors: Sequence[str] = FACTORS) -> Comparison:  # fmt: skip
    """Is quality different between shifts, lines, machines? For each parameter, the
    run means by factor; for each step, the inspections' failure rates by factor."""
    table = summaries(engine) if table is None else table
    findings: list[Finding] = []
    untested: list[str] = []
    means = table.column("mean").to_numpy(zero_copy_only=False).astype(np.float64)
    names_p, of_p = np.unique(_text(table.column("parameter")), return_inverse=True)
    units = _text(table.column("unit"))
    by_factor = {factor: _group_moments(of_p, names_p.size, _text(table.column(factor)), means)
                 for factor in factors}  # fmt: skip
    for k, parameter in enumerate(names_p.tolist()):
        unit = str(units[int(np.flatnonzero(of_p == k)[0])])
        for factor in factors:
            levels, n, m, v = by_factor[factor]
            here = n[k] > 0
            if np.count_nonzero(here) < 2:
                continue
            names = levels[here].tolist()
            found = welch_anova(f"parameter {parameter}", factor, names, n[k][here],
                                m[k][here], v[k][here], unit)  # fmt: skip
            if found is None:
                untested.append(f"parameter {parameter} by {factor}: too few runs per {factor}")
            else:
                findings.append(found)
    counts = engine.query(_INSPECTIONS_SQL).to_pydict()
    groups: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for step, factor, level, inspected, failed in zip(
        counts["step"],
        counts["factor"],
        counts["level"],
        counts["inspected"],
        counts["failed"],
        strict=True,
    ):
        if factor in factors:
            groups.setdefault((str(step), factor), []).append(
                (str(level), int(failed), int(inspected))
            )
    for (step, factor), rows in sorted(groups.items()):
        if len(rows) < 2:
            continue
        rows.sort()
        found = failure_rates(
            f"inspections after step {step}",
            factor,
            [r[0] for r in rows],
            np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]),
        )
        if found is None:
            untested.append(f"inspections after step {step} by {factor}: no failure to compare")
        else:
            findings.append(found)
    return Comparison(holm(findings), untested)


def _text(column: pa.ChunkedArray) -> np.ndarray:
    """A column's values as text (a missing one reads 'None')."""
    return np.array([str(x) for x in column.to_pylist()], dtype=object)


def _group_moments(
    of_parameter: np.ndarray, parameters: int, labels: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The factor's levels, and per parameter (rows) and level (columns) the number of
    runs, the mean of their means and its sample variance (0 below two runs): counted
    in one pass each, in the table's order, so equal tables give equal figures."""
    levels, of_level = np.unique(labels.astype(str), return_inverse=True)
    key = of_parameter * levels.size + of_level
    cells = parameters * levels.size
    n = np.bincount(key, minlength=cells)
    total = np.bincount(key, weights=values, minlength=cells)
    mean = np.divide(total, n, out=np.zeros(cells), where=n > 0)
    squares = np.bincount(key, weights=(values - mean[key]) ** 2, minlength=cells)
    var = np.divide(squares, n - 1, out=np.zeros(cells), where=n > 1)
    shape = (parameters, levels.size)
    return levels, n.reshape(shape), mean.reshape(shape), var.reshape(shape)
