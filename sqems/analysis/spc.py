"""Statistical process control charts: Shewhart variables and attributes charts, EWMA
and tabular CUSUM, with phase I estimation and phase II monitoring.

Every Shewhart chart is two steps. *Estimation* turns in-control data into
:class:`Limits` (a centre and a sigma, small enough to store as a dict). *Drawing*
judges data against limits and returns a :class:`Chart`: the plotted statistic,
centre line, limits and the standard error of every point, with the dispersion
chart (MR, R or S) attached as ``secondary``. Each chart function does both when no
limits are given; given frozen limits it only draws, which is phase II monitoring.
:func:`phase_one` repeats estimation, dropping points that signal, until the limits
are stable.

Sigma is estimated within subgroups, as the standard texts do: from the average
moving range (I-MR, ``MR̄/d2(2)``), the average range (X̄-R, ``R̄/d2(n)``) or the
standard deviations (X̄-S, ``s/c4(n)`` weighted by ``c4²/(1-c4²)``, which for equal
sizes is ``s̄/c4``). Limits sit ``nsigmas`` standard errors from the centre, cut at
zero for a statistic that cannot be negative (and at one for a proportion), which
reproduces the tabulated factors: for example ``A2 = 3/(d2·√n)``, ``D4 = 1 + 3·d3/d2``.

>>> chart = individuals([10.0, 10.4, 9.8, 10.1, 10.3, 9.9])
>>> round(chart.limits.center, 3), round(chart.limits.sigma, 4)
(10.083, 0.3368)
>>> chart.beyond_limits().tolist()
[]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
from scipy import integrate, signal, special, stats

from sqems.analysis.rules import RULES, BoolArray, FloatArray, IntArray, Pattern, evaluate, resolve
from sqems.errors import ValidationFailed

# --------------------------------------------------------------------------- constants

_GRID = np.linspace(-12.0, 12.0, 2401)
_GRID_STEP = float(_GRID[1] - _GRID[0])
_GRID_PDF = np.exp(-0.5 * _GRID**2) / math.sqrt(2.0 * math.pi)
_GRID_CDF = special.ndtr(_GRID)


def _check_size(n: int) -> None:
    if int(n) != n or n < 2:
        raise ValidationFailed(f"subgroup size must be a whole number of at least 2, got {n}")


@functools.cache
def c4(n: int) -> float:
    """``E[s] / s`` for a normal sample of size ``n``, exactly:
    ``√(2/(n-1)) · Γ(n/2) / Γ((n-1)/2)`` (log-gamma, so large ``n`` does not overflow)."""
    _check_size(n)
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


@functools.cache
def d2(n: int) -> float:
    """``E[R] / s``, the mean range of ``n`` standard normals.

    Computed rather than tabulated: ``E[max] - E[min] = ∫ (1 - Φⁿ - (1-Φ)ⁿ) dx``,
    integrated to 1e-12. It agrees with the printed tables (ASTM MNL 7, Montgomery's
    *Introduction to Statistical Quality Control* Appendix VI) to every printed digit
    for n = 2..25; the tests hold it to them.
    """
    _check_size(n)

    def outside(x: float) -> float:
        return float(1.0 - special.ndtr(x) ** n - special.ndtr(-x) ** n)

    value, _ = integrate.quad(outside, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-12)
    return float(value)


@functools.cache
def d3(n: int) -> float:
    """``sd(R) / s``, the standard deviation of the range of ``n`` standard normals.

    ``E[R²] = 2∫₀^∞ r·P(R > r) dr`` with ``P(R ≤ r) = n∫φ(x)(Φ(x+r) - Φ(x))ⁿ⁻¹dx``.
    The inner integral uses the trapezoid rule on a fixed grid, which for a smooth,
    fast-decaying integrand is accurate to rounding; the outer one is adaptive.
    Checked against the same tables as :func:`d2`; they agree to every printed digit
    but one, d3(19) = 0.73348, which the 3-decimal tables print as 0.734 by rounding
    the 4-decimal 0.7335 a second time.
    """
    _check_size(n)

    def exceeds(r: float) -> float:
        inner = _GRID_PDF * (special.ndtr(_GRID + r) - _GRID_CDF) ** (n - 1)
        return float(r * (1.0 - n * _GRID_STEP * inner.sum()))

    second, _ = integrate.quad(exceeds, 0.0, np.inf, epsabs=1e-12, epsrel=1e-12, limit=200)
    return math.sqrt(2.0 * second - d2(n) ** 2)


class Factors(NamedTuple):
    """The classic 3-sigma control chart factors for subgroup size ``n``."""

    n: int
    A2: float
    A3: float
    B3: float
    B4: float
    D3: float
    D4: float
    c4: float
    d2: float
    d3: float


def factors(n: int) -> Factors:
    """The tabulated factors, derived from :func:`c4`, :func:`d2` and :func:`d3`.

    >>> f = factors(5)
    >>> round(f.A2, 3), round(f.D4, 3), round(f.A3, 3), round(f.B4, 3)
    (0.577, 2.114, 1.427, 2.089)
    """
    c, r, v = c4(n), d2(n), d3(n)
    spread = 3.0 * math.sqrt(1.0 - c * c) / c
    return Factors(
        n=n,
        A2=3.0 / (r * math.sqrt(n)),
        A3=3.0 / (c * math.sqrt(n)),
        B3=max(0.0, 1.0 - spread),
        B4=1.0 + spread,
        D3=max(0.0, 1.0 - 3.0 * v / r),
        D4=1.0 + 3.0 * v / r,
        c4=c,
        d2=r,
        d3=v,
    )


def _per_size(constant: Callable[[int], float], sizes: FloatArray) -> FloatArray:
    """A constant for every point, computed once per distinct subgroup size."""
    distinct, where = np.unique(sizes.astype(np.int64), return_inverse=True)
    values = np.array([constant(int(n)) for n in distinct], dtype=np.float64)
    picked: FloatArray = values[where]
    return picked


# --------------------------------------------------------------------------- results


class ChartType(StrEnum):
    """A Shewhart chart (with its dispersion companion): what :class:`Limits` are for."""

    I_MR = "i_mr"
    XBAR_R = "xbar_r"
    XBAR_S = "xbar_s"
    P = "p"
    NP = "np"
    C = "c"
    U = "u"
    G = "g"


class LimitMethod(StrEnum):
    """How an attribute chart's limits are set (variables charts are always ``normal``).

    * ``exact`` — probability limits from the binomial (p, np), Poisson (c, u) or
      geometric (g) distribution at the tail probability of ``nsigmas`` normal sigmas
      (0.00135 each side for 3): see :func:`exact_limits`.
    * ``laney`` — Laney's p' and u' (np', c' the same on the count scale): the
      normal-approximation limits widened by sigma_z, the moving-range sigma of the
      standardised points, for between-sample variation beyond the binomial or Poisson
      (Laney, "Improved control charts for attributes", *Quality Engineering* 14(4),
      2002, 531-537).
    * ``normal`` — the textbook ``centre ± k·standard error`` (Shewhart), kept for
      comparison with published examples: at small expected counts its false alarm
      rate is far from nominal and it has no lower limit.
    * ``auto`` (the default for attribute charts) — ``laney`` when the dispersion test
      (:func:`dispersion`) finds overdispersion at :data:`OVERDISPERSION_ALPHA`, else
      ``exact``. Stored limits always carry the method that was chosen.
    """

    AUTO = "auto"
    EXACT = "exact"
    LANEY = "laney"
    NORMAL = "normal"


class Plotted(StrEnum):
    """The statistic a :class:`Chart` plots."""

    INDIVIDUALS = "individuals"
    MOVING_RANGE = "moving_range"
    XBAR = "xbar"
    RANGE = "range"
    STDDEV = "stddev"
    P = "p"
    NP = "np"
    C = "c"
    U = "u"
    G = "g"
    EWMA = "ewma"


_ATTRIBUTES = {ChartType.P, ChartType.NP, ChartType.C, ChartType.U, ChartType.G}

OVERDISPERSION_ALPHA = 0.01
"""Level of the dispersion test that switches ``auto`` attribute limits to Laney's."""


def tail_probability(nsigmas: float) -> float:
    """The one-sided tail probability of ``nsigmas`` normal sigmas: 0.00135 for 3."""
    return float(special.ndtr(-nsigmas))


def _attribute_sigma(chart: ChartType, center: float) -> float:
    """Per-unit sigma implied by an attribute chart's centre (binomial, Poisson or
    geometric: a g chart's centre c̄ has variance c̄(c̄ + 1))."""
    if chart in (ChartType.P, ChartType.NP):
        return math.sqrt(center * (1.0 - center))
    if chart is ChartType.G:
        return math.sqrt(center * (center + 1.0))
    return math.sqrt(center)


@dataclass(frozen=True, slots=True)
class Limits:
    """Frozen control limits: what phase I estimated and phase II monitors against.

    ``center`` is the process mean (I-MR, X̄-R, X̄-S), the fraction nonconforming p̄
    (p and np charts), the mean count c̄ (c) or the mean count per unit ū (u).
    ``sigma`` is the within-subgroup process sigma; for attribute charts it is the
    per-unit sigma the centre implies (√(p̄(1-p̄)) or √c̄ and √ū), kept so every chart
    reports one. ``points`` is how many points (subgroups) estimated the limits.
    ``method`` is how an attribute chart's limits are set (:class:`LimitMethod`,
    never ``auto`` once estimated) and ``dispersion`` Laney's sigma_z (1 for the others).

    >>> lim = Limits(ChartType.C, center=4.0, sigma=2.0, points=25)
    >>> Limits.from_dict(lim.to_dict()) == lim
    True
    """

    chart: ChartType
    center: float
    sigma: float
    nsigmas: float = 3.0
    points: int = 0
    method: LimitMethod = LimitMethod.NORMAL
    dispersion: float = 1.0

    def __post_init__(self) -> None:
        for name in ("center", "sigma", "nsigmas", "dispersion"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValidationFailed(f"limits {name} must be finite, got {value}")
        if self.sigma <= 0 or self.nsigmas <= 0:
            raise ValidationFailed(
                f"limits need a positive sigma and nsigmas, got sigma={self.sigma}, "
                f"nsigmas={self.nsigmas}; re-estimate them from in-control data"
            )
        if self.dispersion <= 0:
            raise ValidationFailed(f"limits dispersion must be positive, got {self.dispersion}")
        if self.method is LimitMethod.AUTO:
            raise ValidationFailed(
                "stored limits name the method chosen (exact, laney or normal), not auto"
            )
        if self.chart not in _ATTRIBUTES and self.method is not LimitMethod.NORMAL:
            raise ValidationFailed(
                f"{self.method.value} limits are for attribute charts; a "
                f"{self.chart.value} chart has normal limits"
            )
        if self.chart is ChartType.G and self.method is LimitMethod.LANEY:
            raise ValidationFailed("a g chart has exact (geometric) or normal limits, not laney")
        if self.method is not LimitMethod.LANEY and self.dispersion != 1.0:
            raise ValidationFailed(
                f"only Laney limits carry a dispersion, got {self.dispersion} for "
                f"{self.method.value} limits"
            )
        if self.chart in _ATTRIBUTES:
            self._check_attribute_center()

    def _check_attribute_center(self) -> None:
        proportion = self.chart in (ChartType.P, ChartType.NP)
        if self.chart is ChartType.G and self.center <= 0:
            raise ValidationFailed(
                f"a g chart centre (mean count between events) must be positive, got "
                f"{self.center}: with no conforming units between events there is no rare "
                "event to chart"
            )
        if self.center <= 0 or (proportion and self.center >= 1):
            span = "between 0 and 1" if proportion else "positive"
            raise ValidationFailed(
                f"a {self.chart.value} chart centre must be {span}, got {self.center}"
            )
        implied = _attribute_sigma(self.chart, self.center)
        if not math.isclose(self.sigma, implied, rel_tol=1e-9):
            raise ValidationFailed(
                f"a {self.chart.value} chart with centre {self.center} has sigma "
                f"{implied}, not {self.sigma}; store the limits this module produced"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into equal limits."""
        return {
            "chart": self.chart.value,
            "center": self.center,
            "sigma": self.sigma,
            "nsigmas": self.nsigmas,
            "points": self.points,
            "method": self.method.value,
            "dispersion": self.dispersion,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        """Limits from :meth:`to_dict`'s output, checked like freshly built ones."""
        missing = [k for k in ("chart", "center", "sigma") if k not in data]
        if missing:
            raise ValidationFailed(
                f"stored limits lack {', '.join(missing)} (have {sorted(data)}); "
                "store the output of Limits.to_dict()"
            )
        try:
            chart = ChartType(data["chart"])
        except ValueError:
            known = ", ".join(t.value for t in ChartType)
            raise ValidationFailed(
                f"unknown chart type {data['chart']!r} in stored limits; use one of {known}"
            ) from None
        try:
            # limits stored before the method was recorded were normal-approximation ones
            method = LimitMethod(data.get("method", LimitMethod.NORMAL.value))
        except ValueError:
            known = ", ".join(m.value for m in LimitMethod if m is not LimitMethod.AUTO)
            raise ValidationFailed(
                f"unknown limit method {data['method']!r} in stored limits; use one of {known}"
            ) from None
        return cls(
            chart=chart,
            center=_number(data, "center"),
            sigma=_number(data, "sigma"),
            nsigmas=_number(data, "nsigmas", 3.0),
            points=int(_number(data, "points", 0)),
            method=method,
            dispersion=_number(data, "dispersion", 1.0),
        )


def _number(data: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"stored limits field {key!r} must be a number, got {value!r}")
    return float(value)


def _frozen(arr: npt.ArrayLike) -> FloatArray:
    out = np.array(arr, dtype=np.float64)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Chart:
    """One control chart as drawn: a value per point and the lines it is judged by.

    ``point_sigma`` is the standard error of each plotted value, the unit of the run
    rules' zones; ``sigma`` is the process sigma the limits were built from.
    ``secondary`` is the dispersion chart (MR, R or S) drawn beside an I or X̄ chart.
    Arrays are read-only: a chart is a record of a judgement.
    """

    plotted: Plotted
    statistic: FloatArray
    center: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    point_sigma: FloatArray
    sizes: FloatArray
    sigma: float
    limits: Limits | None = None
    secondary: Chart | None = None

    def __len__(self) -> int:
        return int(self.statistic.size)

    def beyond_limits(self) -> IntArray:
        """Indices of points strictly above the UCL or below the LCL."""
        outside = (self.statistic > self.ucl) | (self.statistic < self.lcl)
        return np.flatnonzero(outside).astype(np.int64)

    def signals(self, rules: Iterable[str] | None = None) -> dict[str, IntArray]:
        """Run rules (:mod:`sqems.analysis.rules`) over the plotted points, with this
        chart's centre line and standard errors as zones. A moving-range chart has
        no value at its first point, so its rules start at the second."""
        start = 1 if self.plotted is Plotted.MOVING_RANGE else 0
        picked = [rule.name for rule in resolve(rules)]
        found = evaluate(
            self.statistic[start:], self.center[start:], self.point_sigma[start:], picked
        )
        limits = self.limits
        if limits is not None and limits.method is LimitMethod.EXACT:
            # probability limits are not k standard errors from the centre: "one point
            # beyond k sigma" means beyond them; the zone rules keep the normal zones
            for name in picked:
                rule = RULES[name]
                if rule.pattern is Pattern.BEYOND and rule.threshold == limits.nsigmas:
                    found[name] = self.beyond_limits()
        return {name: idx + start for name, idx in found.items()}


@dataclass(frozen=True, slots=True, eq=False)
class Cusum:
    """A tabular CUSUM: the upper and lower cumulative sums, in data units.

    ``C⁺ᵢ = max(0, xᵢ - (target + K) + C⁺ᵢ₋₁)`` and
    ``C⁻ᵢ = max(0, (target - K) - xᵢ + C⁻ᵢ₋₁)``, with ``K = k·sₓ`` (``reference``)
    and decision interval ``H = h·sₓ`` (``decision``), ``sₓ`` being the standard error
    of the plotted values.
    """

    upper: FloatArray
    lower: FloatArray
    target: float
    sigma: float
    reference: float
    decision: float

    def signals(self) -> tuple[IntArray, IntArray]:
        """Indices where C⁺ (an upward shift) and where C⁻ (a downward one) exceed H."""
        return (
            np.flatnonzero(self.upper > self.decision).astype(np.int64),
            np.flatnonzero(self.lower > self.decision).astype(np.int64),
        )


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class _Sample:
    """Chart input in one shape: ``values`` is 1-D (one value per point) or 2-D
    (subgroups as rows, NaN-padded); ``sizes`` is the subgroup size or units per point."""

    values: FloatArray
    sizes: FloatArray

    @property
    def count(self) -> int:
        return int(self.values.shape[0])

    def take(self, index: IntArray) -> _Sample:
        return _Sample(self.values[index], self.sizes[index])


def _series(values: npt.ArrayLike, what: str) -> FloatArray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValidationFailed(f"{what} must be a non-empty 1-D series, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValidationFailed(
            f"{what} has {int(bad.sum())} non-finite value(s), the first at position "
            f"{first}; drop or impute missing readings before charting"
        )
    return x


def group_by(values: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """Readings and their subgroup labels as a 2-D array, one subgroup per row in
    ascending label order, padded with NaN where a subgroup is short.

    >>> group_by([1.0, 2.0, 3.0, 4.0, 5.0], [7, 7, 8, 8, 8]).tolist()
    [[1.0, 2.0, nan], [3.0, 4.0, 5.0]]
    """
    x = _series(values, "readings")
    tags = np.asarray(labels)
    if tags.shape != x.shape:
        raise ValidationFailed(
            f"{x.size} readings but {tags.size} subgroup labels; give one label per reading"
        )
    _, inverse, counts = np.unique(tags, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.full((counts.size, int(counts.max())), np.nan)
    rows[inverse[order], np.arange(x.size) - starts] = x[order]
    return rows


def _subgroups(data: npt.ArrayLike | Sequence[Sequence[float]]) -> _Sample:
    """Subgroups as given (a 2-D array, NaN for missing, or a list of lists of any
    lengths) into a padded 2-D array and the count of readings in each row."""
    try:
        rows = np.asarray(data, dtype=np.float64)
    except ValueError:  # ragged: lists of unequal length
        rows = _pad(cast(Sequence[Sequence[float]], data))
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValidationFailed(
            f"subgroups must be a 2-D array or a list of lists, got shape {rows.shape}"
        )
    if np.isinf(rows).any():
        raise ValidationFailed("subgroups hold an infinite reading; drop it before charting")
    sizes = np.sum(np.isfinite(rows), axis=1).astype(np.float64)
    return _Sample(rows, sizes)


def _pad(groups: Sequence[Sequence[float]]) -> FloatArray:
    width = max((len(g) for g in groups), default=0)
    rows = np.full((len(groups), width), np.nan)
    for i, group in enumerate(groups):
        rows[i, : len(group)] = np.asarray(group, dtype=np.float64)
    return rows


def _need_sizes(sample: _Sample, minimum: int, chart: str) -> None:
    small = sample.sizes < minimum
    if small.any():
        first = int(np.flatnonzero(small)[0])
        raise ValidationFailed(
            f"{chart} needs subgroups of at least {minimum} readings; subgroup {first} "
            f"has {int(sample.sizes[first])}"
        )


def _equal_sizes(sample: _Sample, chart: str, alternative: str) -> int:
    distinct = np.unique(sample.sizes)
    if distinct.size != 1:
        shown = ", ".join(str(int(n)) for n in distinct[:6])
        raise ValidationFailed(
            f"{chart} needs equal subgroup sizes, got sizes {shown}; "
            f"use {alternative} for unequal sizes"
        )
    return int(distinct[0])


def _counts(
    counts: npt.ArrayLike, sizes: npt.ArrayLike | None, what: str, whole_sizes: bool
) -> _Sample:
    """Attribute data: non-negative whole counts and a positive size per point."""
    x = _series(counts, what)
    if np.any(x < 0) or np.any(x != np.round(x)):
        first = int(np.flatnonzero((x < 0) | (x != np.round(x)))[0])
        raise ValidationFailed(
            f"{what} must be non-negative whole numbers; point {first} is {float(x[first])}"
        )
    n = np.ones_like(x) if sizes is None else np.asarray(sizes, dtype=np.float64)
    if n.ndim == 0:
        n = np.full_like(x, float(n))
    if n.shape != x.shape:
        raise ValidationFailed(f"{x.size} {what} but {n.size} sizes; give one size per point")
    bad = ~np.isfinite(n) | (n <= 0)
    if whole_sizes:
        bad |= n != np.round(n)
    if np.any(bad):
        first = int(np.flatnonzero(bad)[0])
        raise ValidationFailed(
            f"sample sizes must be positive{' whole numbers' if whole_sizes else ''}; "
            f"point {first} has {float(n[first])}"
        )
    return _Sample(x, n)


# --------------------------------------------------------------------------- drawing


class _Frame(NamedTuple):
    """What the charts drawn from one input share."""

    sizes: FloatArray
    sigma: float
    nsigmas: float
    limits: Limits | None

    @classmethod
    def of(cls, sample: _Sample, limits: Limits) -> _Frame:
        return cls(sample.sizes, limits.sigma, limits.nsigmas, limits)


def _chart(
    plotted: Plotted,
    statistic: FloatArray,
    center: FloatArray,
    point_sigma: FloatArray,
    frame: _Frame,
    *,
    floor: float | None = None,
    ceiling: FloatArray | None = None,
    secondary: Chart | None = None,
    lcl: FloatArray | None = None,
    ucl: FloatArray | None = None,
) -> Chart:
    """Assemble a chart: limits ``nsigmas`` standard errors from the centre (unless
    ``lcl``/``ucl`` are given), cut at ``floor``/``ceiling`` where the statistic cannot
    go further."""
    reach = frame.nsigmas * point_sigma
    lcl = center - reach if lcl is None else lcl
    ucl = center + reach if ucl is None else ucl
    if floor is not None:
        lcl = np.maximum(lcl, floor)
    if ceiling is not None:
        ucl = np.minimum(ucl, ceiling)
    return Chart(
        plotted=plotted,
        statistic=_frozen(statistic),
        center=_frozen(np.broadcast_to(center, statistic.shape)),
        lcl=_frozen(np.broadcast_to(lcl, statistic.shape)),
        ucl=_frozen(np.broadcast_to(ucl, statistic.shape)),
        point_sigma=_frozen(np.broadcast_to(point_sigma, statistic.shape)),
        sizes=_frozen(frame.sizes),
        sigma=frame.sigma,
        limits=frame.limits,
        secondary=secondary,
    )


def _full(sample: _Sample, value: float) -> FloatArray:
    return np.full(sample.count, value, dtype=np.float64)


def _draw_individuals(sample: _Sample, limits: Limits) -> Chart:
    x, sigma = sample.values, limits.sigma
    moving = np.concatenate(([np.nan], np.abs(np.diff(x))))
    mr = _chart(
        Plotted.MOVING_RANGE,
        moving,
        _full(sample, d2(2) * sigma),
        _full(sample, d3(2) * sigma),
        _Frame.of(sample, limits),
        floor=0.0,
    )
    center, spread = _full(sample, limits.center), _full(sample, sigma)
    frame = _Frame.of(sample, limits)
    return _chart(Plotted.INDIVIDUALS, x, center, spread, frame, secondary=mr)


def _subgroup_means(sample: _Sample) -> FloatArray:
    means: FloatArray = np.nansum(sample.values, axis=1) / sample.sizes
    return means


def _subgroup_stddevs(sample: _Sample) -> FloatArray:
    deviations = sample.values - _subgroup_means(sample)[:, None]
    sd: FloatArray = np.sqrt(np.nansum(deviations**2, axis=1) / (sample.sizes - 1))
    return sd


def _subgroup_ranges(sample: _Sample) -> FloatArray:
    ranges: FloatArray = np.nanmax(sample.values, axis=1) - np.nanmin(sample.values, axis=1)
    return ranges


def _xbar(sample: _Sample, limits: Limits, dispersion: Chart) -> Chart:
    center = _full(sample, limits.center)
    spread = limits.sigma / np.sqrt(sample.sizes)
    means = _subgroup_means(sample)
    frame = _Frame.of(sample, limits)
    return _chart(Plotted.XBAR, means, center, spread, frame, secondary=dispersion)


def _draw_xbar_r(sample: _Sample, limits: Limits) -> Chart:
    _need_sizes(sample, 2, "an X̄-R chart")
    _equal_sizes(sample, "an X̄-R chart", "an X̄-S chart")
    sigma = limits.sigma
    r_chart = _chart(
        Plotted.RANGE,
        _subgroup_ranges(sample),
        _per_size(d2, sample.sizes) * sigma,
        _per_size(d3, sample.sizes) * sigma,
        _Frame.of(sample, limits),
        floor=0.0,
    )
    return _xbar(sample, limits, r_chart)


def _draw_xbar_s(sample: _Sample, limits: Limits) -> Chart:
    _need_sizes(sample, 2, "an X̄-S chart")
    c = _per_size(c4, sample.sizes)
    s_chart = _chart(
        Plotted.STDDEV,
        _subgroup_stddevs(sample),
        c * limits.sigma,
        np.sqrt(1.0 - c * c) * limits.sigma,
        _Frame.of(sample, limits),
        floor=0.0,
    )
    return _xbar(sample, limits, s_chart)


def exact_limits(distribution: Any, tail: float) -> tuple[FloatArray, FloatArray]:
    """Probability limits on the count scale for a (vectorised, frozen) scipy discrete
    distribution, each side with a false alarm probability of at most ``tail``.

    The UCL is the smallest count ``u`` with ``P(X > u) ≤ tail`` and the LCL the largest
    count ``l`` with ``P(X < l) ≤ tail``; a point signals when strictly beyond either.
    A lower limit exists exactly when ``P(X = 0) ≤ tail`` (``l ≥ 1``, so a count of 0
    signals); otherwise the LCL is 0, below which nothing can fall.

    >>> lcl, ucl = exact_limits(stats.binom(100, 0.003), 0.00135)
    >>> float(lcl), float(ucl)
    (0.0, 3.0)
    """
    upper = np.asarray(distribution.isf(tail), dtype=np.float64)
    # guard the quantile functions' rounding at the boundary: one step either way
    upper = np.where(distribution.sf(upper) > tail, upper + 1.0, upper)
    upper = np.where((upper >= 1) & (distribution.sf(upper - 1.0) <= tail), upper - 1.0, upper)
    lower = np.asarray(distribution.ppf(tail), dtype=np.float64)
    lower = np.where(distribution.cdf(lower) <= tail, lower + 1.0, lower)
    lower = np.where((lower >= 1) & (distribution.cdf(lower - 1.0) > tail), lower - 1.0, lower)
    return np.maximum(lower, 0.0), upper


def _attribute(
    plotted: Plotted,
    sample: _Sample,
    limits: Limits,
    *,
    mean: FloatArray,
    scale: FloatArray,
    count_sd: FloatArray,
    distribution: Any,
    ceiling: FloatArray | None = None,
) -> Chart:
    """An attribute chart of ``counts / scale`` whose counts have ``mean`` and
    ``count_sd`` in control, with the limits ``limits.method`` asks for."""
    statistic = sample.values / scale
    center = mean / scale
    spread = count_sd / scale * limits.dispersion
    frame = _Frame.of(sample, limits)
    if limits.method is not LimitMethod.EXACT:
        top = None if ceiling is None else ceiling / scale
        return _chart(plotted, statistic, center, spread, frame, floor=0.0, ceiling=top)
    low, high = exact_limits(distribution, tail_probability(limits.nsigmas))
    return _chart(plotted, statistic, center, spread, frame, lcl=low / scale, ucl=high / scale)


def _draw_p(sample: _Sample, limits: Limits) -> Chart:
    _no_more_than_sizes(sample)
    p, n = limits.center, sample.sizes
    return _attribute(
        Plotted.P,
        sample,
        limits,
        mean=n * p,
        scale=n,
        count_sd=np.sqrt(n * p * (1.0 - p)),
        distribution=stats.binom(n, p),
        ceiling=n,
    )


def _draw_np(sample: _Sample, limits: Limits) -> Chart:
    _no_more_than_sizes(sample)
    n = float(_equal_sizes(sample, "an np chart", "a p chart"))
    p, ones = limits.center, _full(sample, 1.0)
    return _attribute(
        Plotted.NP,
        sample,
        limits,
        mean=_full(sample, n * p),
        scale=ones,
        count_sd=_full(sample, math.sqrt(n * p * (1.0 - p))),
        distribution=stats.binom(n, p),
        ceiling=_full(sample, n),
    )


def _draw_c(sample: _Sample, limits: Limits) -> Chart:
    c = limits.center
    return _attribute(
        Plotted.C,
        sample,
        limits,
        mean=_full(sample, c),
        scale=_full(sample, 1.0),
        count_sd=_full(sample, math.sqrt(c)),
        distribution=stats.poisson(c),
    )


def _draw_u(sample: _Sample, limits: Limits) -> Chart:
    mean = limits.center * sample.sizes
    return _attribute(
        Plotted.U,
        sample,
        limits,
        mean=mean,
        scale=sample.sizes,
        count_sd=np.sqrt(mean),
        distribution=stats.poisson(mean),
    )


def _draw_g(sample: _Sample, limits: Limits) -> Chart:
    g = limits.center
    return _attribute(
        Plotted.G,
        sample,
        limits,
        mean=_full(sample, g),
        scale=_full(sample, 1.0),
        count_sd=_full(sample, math.sqrt(g * (g + 1.0))),
        # failures before the first success: support 0, 1, 2, …, mean (1 - p)/p
        distribution=stats.nbinom(1, 1.0 / (1.0 + g)),
    )


def _no_more_than_sizes(sample: _Sample) -> None:
    over = sample.values > sample.sizes
    if over.any():
        first = int(np.flatnonzero(over)[0])
        raise ValidationFailed(
            f"point {first} has {int(sample.values[first])} nonconforming in a sample of "
            f"{int(sample.sizes[first])}; defectives cannot exceed the sample size"
        )


# --------------------------------------------------------------------------- estimation


def _limits(chart: ChartType, center: float, sigma: float, sample: _Sample, k: float) -> Limits:
    return Limits(chart, center=center, sigma=sigma, nsigmas=k, points=sample.count)


def _estimate_individuals(sample: _Sample, nsigmas: float, method: LimitMethod) -> Limits:
    x = sample.values
    if x.size < 2:
        raise ValidationFailed(
            f"an I-MR chart needs at least 2 readings to estimate limits, got {x.size}"
        )
    mean_mr = float(np.mean(np.abs(np.diff(x))))
    if mean_mr == 0:
        raise ValidationFailed(
            f"all {x.size} readings equal {float(x[0])}: moving ranges are zero, so no "
            "sigma can be estimated; check the gauge resolution"
        )
    return _limits(ChartType.I_MR, float(np.mean(x)), mean_mr / d2(2), sample, nsigmas)


def _estimate_xbar_r(sample: _Sample, nsigmas: float, method: LimitMethod) -> Limits:
    _need_sizes(sample, 2, "an X̄-R chart")
    n = _equal_sizes(sample, "an X̄-R chart", "an X̄-S chart")
    mean_range = float(np.mean(_subgroup_ranges(sample)))
    _need_spread(mean_range, "range")
    center = float(np.mean(_subgroup_means(sample)))
    return _limits(ChartType.XBAR_R, center, mean_range / d2(n), sample, nsigmas)


def _estimate_xbar_s(sample: _Sample, nsigmas: float, method: LimitMethod) -> Limits:
    _need_sizes(sample, 2, "an X̄-S chart")
    c = _per_size(c4, sample.sizes)
    # weights c4²/(1-c4²) are the inverse relative variances of s/c4: the minimum
    # variance combination of the subgroup estimates (equal sizes: plain s̄/c4)
    weight = c * c / (1.0 - c * c)
    sigma = float(np.sum(weight * _subgroup_stddevs(sample) / c) / np.sum(weight))
    _need_spread(sigma, "standard deviation")
    center = float(np.sum(_subgroup_means(sample) * sample.sizes) / np.sum(sample.sizes))
    return _limits(ChartType.XBAR_S, center, sigma, sample, nsigmas)


def _need_spread(value: float, what: str) -> None:
    if value <= 0:
        raise ValidationFailed(
            f"every subgroup has zero {what}, so no sigma can be estimated; "
            "check the gauge resolution"
        )


@dataclass(frozen=True, slots=True)
class Dispersion:
    """Is the between-sample variation of attribute counts what the binomial or
    Poisson model implies?

    ``statistic`` is Pearson's ``X² = Σ (xᵢ - mᵢ)² / vᵢ`` with ``mᵢ`` and ``vᵢ`` the
    model's mean and variance of each count at the pooled rate; under the model it is
    approximately χ² with ``dof = points - 1`` degrees of freedom, so ``ratio = X²/dof``
    is near 1 and ``p_value`` (upper tail) uniform. ``sigma_z`` is Laney's sigma_z: the
    moving-range sigma ``MR̄/d₂(2)`` of the standardised points ``zᵢ = (xᵢ - mᵢ)/√vᵢ``,
    by which Laney's p' and u' widen the limits.
    """

    statistic: float
    dof: int
    p_value: float
    sigma_z: float

    @property
    def ratio(self) -> float:
        return self.statistic / self.dof

    @property
    def overdispersed(self) -> bool:
        """Overdispersion at :data:`OVERDISPERSION_ALPHA` (one-sided)."""
        return self.p_value < OVERDISPERSION_ALPHA


def _dispersion(counts: FloatArray, mean: FloatArray, variance: FloatArray) -> Dispersion:
    z = (counts - mean) / np.sqrt(variance)
    dof = int(z.size - 1)
    statistic = float(np.sum(z * z))
    p_value = float(stats.chi2.sf(statistic, dof)) if dof > 0 else 1.0
    sigma_z = float(np.mean(np.abs(np.diff(z)))) / d2(2) if z.size > 1 else 1.0
    return Dispersion(statistic, max(dof, 1), p_value, sigma_z)


def _proportion_moments(sample: _Sample, p: float) -> tuple[FloatArray, FloatArray]:
    n = sample.sizes
    return n * p, n * p * (1.0 - p)


def _rate_moments(sample: _Sample, rate: float) -> tuple[FloatArray, FloatArray]:
    mean = sample.sizes * rate
    return mean, mean


def dispersion(
    chart: ChartType | str, counts: npt.ArrayLike, sizes: npt.ArrayLike | None = None
) -> Dispersion:
    """The dispersion test of p, np (binomial), c and u (Poisson) chart data at their
    pooled rate; ``sizes`` as the chart function takes them.

    >>> d = dispersion("c", [3, 5, 4, 6, 2, 4, 5, 3])
    >>> d.dof, round(d.ratio, 2), d.overdispersed
    (7, 0.43, False)
    """
    kind = ChartType(chart)
    if kind not in (ChartType.P, ChartType.NP, ChartType.C, ChartType.U):
        raise ValidationFailed(
            f"the dispersion test is for p, np, c and u charts, not {kind.value}"
        )
    sample = _prepare(kind, counts, sizes)
    rate = float(np.sum(sample.values) / np.sum(sample.sizes))
    binomial = kind in (ChartType.P, ChartType.NP)
    if rate <= 0 or (binomial and rate >= 1):
        raise ValidationFailed(
            f"the pooled rate over {sample.count} samples is {rate}; no dispersion to test"
        )
    moments = _proportion_moments if binomial else _rate_moments
    return _dispersion(sample.values, *moments(sample, rate))


def _attribute_limits(
    chart: ChartType,
    center: float,
    sample: _Sample,
    nsigmas: float,
    method: LimitMethod,
    moments: Callable[[_Sample, float], tuple[FloatArray, FloatArray]],
) -> Limits:
    sigma_z = 1.0
    if method in (LimitMethod.AUTO, LimitMethod.LANEY):
        found = _dispersion(sample.values, *moments(sample, center))
        if method is LimitMethod.AUTO:
            method = LimitMethod.LANEY if found.overdispersed else LimitMethod.EXACT
        if method is LimitMethod.LANEY:
            sigma_z = found.sigma_z
            if sigma_z <= 0:
                raise ValidationFailed(
                    f"the {sample.count} points have no moving range, so Laney's sigma_z is "
                    "zero; use exact limits"
                )
    return Limits(
        chart,
        center=center,
        sigma=_attribute_sigma(chart, center),
        nsigmas=nsigmas,
        points=sample.count,
        method=method,
        dispersion=sigma_z,
    )


def _estimate_proportion(chart: ChartType) -> Callable[[_Sample, float, LimitMethod], Limits]:
    def estimate(sample: _Sample, nsigmas: float, method: LimitMethod) -> Limits:
        _no_more_than_sizes(sample)
        if chart is ChartType.NP:
            _equal_sizes(sample, "an np chart", "a p chart")
        p = float(np.sum(sample.values) / np.sum(sample.sizes))
        if not 0 < p < 1:
            raise ValidationFailed(
                f"the fraction nonconforming over {sample.count} samples is {p}; a "
                f"{chart.value} chart needs some conforming and some nonconforming units"
            )
        return _attribute_limits(chart, p, sample, nsigmas, method, _proportion_moments)

    return estimate


def _estimate_rate(chart: ChartType) -> Callable[[_Sample, float, LimitMethod], Limits]:
    def estimate(sample: _Sample, nsigmas: float, method: LimitMethod) -> Limits:
        rate = float(np.sum(sample.values) / np.sum(sample.sizes))
        if rate <= 0:
            raise ValidationFailed(
                f"no nonconformities in {sample.count} samples; a {chart.value} chart "
                "needs a positive mean count to set limits"
            )
        return _attribute_limits(chart, rate, sample, nsigmas, method, _rate_moments)

    return estimate


def _estimate_g(sample: _Sample, nsigmas: float, method: LimitMethod) -> Limits:
    if method is LimitMethod.LANEY:
        raise ValidationFailed("a g chart has exact (geometric) or normal limits, not laney")
    mean = float(np.mean(sample.values))
    if mean <= 0:
        raise ValidationFailed(
            f"all {sample.count} counts between events are 0: events are not rare here; "
            "chart them with a p or c chart"
        )
    chosen = LimitMethod.EXACT if method is LimitMethod.AUTO else method
    sigma = _attribute_sigma(ChartType.G, mean)
    return Limits(ChartType.G, mean, sigma, nsigmas=nsigmas, points=sample.count, method=chosen)


@dataclass(frozen=True, slots=True)
class _Spec:
    estimate: Callable[[_Sample, float, LimitMethod], Limits]
    draw: Callable[[_Sample, Limits], Chart]


_SPECS: Mapping[ChartType, _Spec] = {
    ChartType.I_MR: _Spec(_estimate_individuals, _draw_individuals),
    ChartType.XBAR_R: _Spec(_estimate_xbar_r, _draw_xbar_r),
    ChartType.XBAR_S: _Spec(_estimate_xbar_s, _draw_xbar_s),
    ChartType.P: _Spec(_estimate_proportion(ChartType.P), _draw_p),
    ChartType.NP: _Spec(_estimate_proportion(ChartType.NP), _draw_np),
    ChartType.C: _Spec(_estimate_rate(ChartType.C), _draw_c),
    ChartType.U: _Spec(_estimate_rate(ChartType.U), _draw_u),
    ChartType.G: _Spec(_estimate_g, _draw_g),
}


def _prepare(chart: ChartType, data: Any, sizes: npt.ArrayLike | None) -> _Sample:
    """Check and shape the input each chart type takes."""
    if chart is ChartType.I_MR:
        x = _series(data, "readings")
        return _Sample(x, np.ones_like(x))
    if chart in (ChartType.XBAR_R, ChartType.XBAR_S):
        return _subgroups(data)
    if chart is ChartType.C:
        return _counts(data, sizes, "nonconformity counts", whole_sizes=False)
    if chart is ChartType.G:
        return _counts(data, None, "counts between events", whole_sizes=False)
    if chart is ChartType.U:
        if sizes is None:
            raise ValidationFailed("a u chart needs the inspection units of every sample")
        return _counts(data, sizes, "nonconformity counts", whole_sizes=False)
    if sizes is None:
        raise ValidationFailed(f"a {chart.value} chart needs the sample size of every sample")
    return _counts(data, sizes, "nonconforming counts", whole_sizes=True)


def _method(chart: ChartType, method: LimitMethod | str) -> LimitMethod:
    """The limit method asked for, checked against the chart type."""
    try:
        chosen = LimitMethod(method)
    except ValueError:
        known = ", ".join(m.value for m in LimitMethod)
        raise ValidationFailed(f"unknown limit method {method!r}; use one of {known}") from None
    if chart not in _ATTRIBUTES and chosen not in (LimitMethod.AUTO, LimitMethod.NORMAL):
        raise ValidationFailed(
            f"{chosen.value} limits are for attribute charts (p, np, c, u, g); a "
            f"{chart.value} chart has normal limits"
        )
    return chosen


def _run(
    chart: ChartType,
    data: Any,
    sizes: npt.ArrayLike | None,
    limits: Limits | None,
    k: float,
    method: LimitMethod | str = LimitMethod.AUTO,
) -> Chart:
    sample = _prepare(chart, data, sizes)
    spec = _SPECS[chart]
    if limits is None:
        limits = spec.estimate(sample, k, _method(chart, method))
    elif limits.chart is not chart:
        raise ValidationFailed(
            f"limits were estimated for a {limits.chart.value} chart, not {chart.value}; "
            "monitor with the chart type they came from"
        )
    return spec.draw(sample, limits)


# --------------------------------------------------------------------------- public charts


def individuals(
    values: npt.ArrayLike, *, limits: Limits | None = None, nsigmas: float = 3.0
) -> Chart:
    """Individuals chart with its moving-range chart (I-MR) for one reading per point.

    Without ``limits`` they are estimated from ``values``: centre the mean, sigma
    ``MR̄/d2(2)``. The MR chart has no value at the first point (NaN).
    """
    return _run(ChartType.I_MR, values, None, limits, nsigmas)


def xbar_r(
    subgroups: npt.ArrayLike | Sequence[Sequence[float]],
    *,
    limits: Limits | None = None,
    nsigmas: float = 3.0,
) -> Chart:
    """X̄ chart with its range chart; subgroups must all have the same size (the range
    is a poor and size-dependent estimator otherwise: use :func:`xbar_s`).

    ``subgroups`` is a 2-D array (one row per subgroup) or a list of lists.
    """
    return _run(ChartType.XBAR_R, subgroups, None, limits, nsigmas)


def xbar_s(
    subgroups: npt.ArrayLike | Sequence[Sequence[float]],
    *,
    limits: Limits | None = None,
    nsigmas: float = 3.0,
) -> Chart:
    """X̄ chart with its standard-deviation chart; subgroup sizes may vary (rows of a
    2-D array padded with NaN, or a list of lists), giving limits per point."""
    return _run(ChartType.XBAR_S, subgroups, None, limits, nsigmas)


def p_chart(
    nonconforming: npt.ArrayLike,
    sizes: npt.ArrayLike,
    *,
    limits: Limits | None = None,
    nsigmas: float = 3.0,
    method: LimitMethod | str = LimitMethod.AUTO,
) -> Chart:
    """Fraction nonconforming, ``p̄ = ΣD/Σn``, with limits per point.

    ``method`` (:class:`LimitMethod`): ``exact`` binomial probability limits,
    ``laney`` p' limits ``p̄ ± k·sigma_z·√(p̄(1-p̄)/nᵢ)``, ``normal`` ``p̄ ± k√(p̄(1-p̄)/nᵢ)``,
    or ``auto`` (default): Laney when the data are overdispersed, else exact.

    >>> chart = p_chart([0, 1, 0, 2, 0, 1], 100, method="exact")
    >>> float(chart.ucl[0]), float(chart.lcl[0])
    (0.04, 0.0)
    """
    return _run(ChartType.P, nonconforming, sizes, limits, nsigmas, method)


def np_chart(
    nonconforming: npt.ArrayLike,
    sizes: npt.ArrayLike,
    *,
    limits: Limits | None = None,
    nsigmas: float = 3.0,
    method: LimitMethod | str = LimitMethod.AUTO,
) -> Chart:
    """Number nonconforming for a constant sample size ``n``: centre ``n·p̄``; limits
    as :func:`p_chart`'s on the count scale."""
    return _run(ChartType.NP, nonconforming, sizes, limits, nsigmas, method)


def c_chart(
    counts: npt.ArrayLike,
    *,
    limits: Limits | None = None,
    nsigmas: float = 3.0,
    method: LimitMethod | str = LimitMethod.AUTO,
) -> Chart:
    """Nonconformities per inspection unit of constant size, centre ``c̄``: exact
    Poisson, Laney (c' = ``c̄ ± k·sigma_z·√c̄``), normal (``c̄ ± k√c̄``) or auto limits."""
    return _run(ChartType.C, counts, None, limits, nsigmas, method)


def u_chart(
    counts: npt.ArrayLike,
    units: npt.ArrayLike,
    *,
    limits: Limits | None = None,
    nsigmas: float = 3.0,
    method: LimitMethod | str = LimitMethod.AUTO,
) -> Chart:
    """Nonconformities per unit when the inspected amount varies: ``ū = Σc/Σn``;
    exact Poisson limits on ``cᵢ ~ Poisson(ū·nᵢ)``, Laney u' ``ū ± k·sigma_z·√(ū/nᵢ)``,
    normal ``ū ± k√(ū/nᵢ)`` or auto (``units`` may be fractional)."""
    return _run(ChartType.U, counts, units, limits, nsigmas, method)


def g_chart(
    between: npt.ArrayLike,
    *,
    limits: Limits | None = None,
    nsigmas: float = 3.0,
    method: LimitMethod | str = LimitMethod.EXACT,
) -> Chart:
    """g chart for rare events: the number of conforming units (or opportunities)
    between consecutive events, geometric with ``p = 1/(1 + ḡ)`` in control
    (Kaminsky, Benneyan, Davis & Burke, "Statistical control charts based on a
    geometric distribution", *JQT* 24(2), 1992, 63-69; Benneyan, *Health Care
    Management Science* 4, 2001).

    ``exact`` (default) probability limits: a point *below* the LCL — events coming
    too close together — means the rate went up; above the UCL, down. The LCL exists
    only when ``p ≤ 0.00135`` (for 3 sigma), i.e. for genuinely rare events.
    ``normal`` gives Kaminsky's 3-sigma limits ``ḡ ± 3√(ḡ(ḡ+1))``.

    >>> chart = g_chart([900, 2400, 150, 1300, 700, 3100, 500, 1800])
    >>> float(chart.lcl[0]), float(chart.ucl[0])
    (1.0, 8965.0)
    """
    return _run(ChartType.G, between, None, limits, nsigmas, method)


def monitor(limits: Limits, data: Any, sizes: npt.ArrayLike | None = None) -> Chart:
    """Phase II: draw new data against frozen limits of any chart type.

    ``data`` and ``sizes`` take the same shapes as the chart's own function
    (readings, subgroups, or counts with sample sizes)."""
    return _run(limits.chart, data, sizes, limits, limits.nsigmas)


# --------------------------------------------------------------------------- phase I

BEYOND_LIMITS = "beyond_limits"
"""Phase I rule name for "outside the chart's own control limits" (Nelson and Western
Electric rule 1 when the limits are at 3 sigma)."""


@dataclass(frozen=True, slots=True, eq=False)
class PhaseOne:
    """The outcome of phase I: limits to freeze and what it took to get them.

    ``chart`` draws *all* the points against the final limits, dropped ones
    included; ``dropped`` lists the indices excluded as assignable causes;
    ``stable`` is false when ``max_iterations`` ran out with points still signalling.
    """

    limits: Limits
    chart: Chart
    dropped: tuple[int, ...]
    iterations: int
    stable: bool


def _signalling(chart: Chart, rules: Sequence[str], secondary: bool) -> BoolArray:
    flagged = np.zeros(len(chart), dtype=np.bool_)
    named = [r for r in rules if r != BEYOND_LIMITS]
    if BEYOND_LIMITS in rules:
        flagged[chart.beyond_limits()] = True
    for indices in chart.signals(named).values() if named else ():
        flagged[indices] = True
    dispersion = chart.secondary
    # a moving range belongs to two readings, so it cannot say which one to drop
    if secondary and dispersion is not None and dispersion.plotted is not Plotted.MOVING_RANGE:
        flagged[dispersion.beyond_limits()] = True
    return flagged


def phase_one(
    chart: ChartType,
    data: Any,
    sizes: npt.ArrayLike | None = None,
    *,
    rules: Sequence[str] = (BEYOND_LIMITS,),
    secondary: bool = True,
    max_iterations: int = 10,
    nsigmas: float = 3.0,
    method: LimitMethod | str = LimitMethod.AUTO,
) -> PhaseOne:
    """Estimate trial limits, drop the points that signal, re-estimate, until no
    remaining point signals or ``max_iterations`` re-estimations have been made.

    ``rules`` are :data:`BEYOND_LIMITS` and/or names from
    :data:`sqems.analysis.rules.RULES`, judged on the kept points against the limits
    they produced. With ``secondary`` a subgroup whose range or standard deviation is
    outside its chart's limits is dropped too (the usual practice: fix the
    dispersion chart first). Dropping every point is an error, not an answer.
    ``method`` sets attribute limits (:class:`LimitMethod`); with ``auto`` the
    dispersion test is redone on the points kept at every round.
    """
    if max_iterations < 0:
        raise ValidationFailed(f"max_iterations must be 0 or more, got {max_iterations}")
    spec = _SPECS[chart]
    chosen = _method(chart, method)
    sample = _prepare(chart, data, sizes)
    kept = np.arange(sample.count, dtype=np.int64)
    iteration = 0
    while True:
        limits = spec.estimate(sample.take(kept), nsigmas, chosen)
        flagged = _signalling(spec.draw(sample.take(kept), limits), rules, secondary)
        if not flagged.any() or iteration == max_iterations:
            break
        kept = kept[~flagged]
        if kept.size == 0:
            raise ValidationFailed(
                f"phase I dropped all {sample.count} points as signalling; the data hold "
                "no stable stretch to estimate limits from"
            )
        iteration += 1
    dropped = np.setdiff1d(np.arange(sample.count), kept)
    return PhaseOne(
        limits=limits,
        chart=spec.draw(sample, limits),
        dropped=tuple(int(i) for i in dropped),
        iterations=iteration,
        stable=not flagged.any(),
    )


# --------------------------------------------------------------------------- EWMA, CUSUM


def _check_standard_error(sigma: float, n: int) -> float:
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValidationFailed(f"sigma must be positive and finite, got {sigma}")
    if int(n) != n or n < 1:
        raise ValidationFailed(f"subgroup size n must be a whole number of at least 1, got {n}")
    return sigma / math.sqrt(n)


def ewma_sigma(
    points: int, *, sigma: float, lam: float, n: int = 1, exact: bool = True
) -> FloatArray:
    """Standard error of the EWMA at points 1..``points``:
    ``s/√n · √(λ/(2-λ) · (1 - (1-λ)^(2i)))``, or the asymptote without the last factor."""
    if not 0 < lam <= 1:
        raise ValidationFailed(f"the EWMA weight lambda must be in (0, 1], got {lam}")
    base = _check_standard_error(sigma, n) * math.sqrt(lam / (2.0 - lam))
    if not exact:
        return np.full(points, base)
    steps = np.arange(1, points + 1, dtype=np.float64)
    spread: FloatArray = base * np.sqrt(1.0 - (1.0 - lam) ** (2.0 * steps))
    return spread


def ewma(
    values: npt.ArrayLike,
    *,
    target: float,
    sigma: float,
    lam: float = 0.2,
    nsigmas: float = 3.0,
    n: int = 1,
    exact_limits: bool = True,
) -> Chart:
    """Exponentially weighted moving average chart.

    ``zᵢ = λxᵢ + (1-λ)zᵢ₋₁`` from ``z₀ = target``; ``values`` are readings (``n=1``)
    or means of subgroups of ``n``, ``sigma`` the process sigma of one reading. Limits
    are exact and time-varying (narrow at the start, widening to the asymptote) unless
    ``exact_limits`` is false, which gives the constant asymptotic limits some texts
    print. The recursion runs as a compiled linear filter, not a Python loop.
    """
    x = _series(values, "EWMA input")
    spread = ewma_sigma(x.size, sigma=sigma, lam=lam, n=n, exact=exact_limits)
    start = [(1.0 - lam) * target]
    smoothed = signal.lfilter([lam], [1.0, -(1.0 - lam)], x, zi=start)[0]
    frame = _Frame(np.full(x.size, float(n)), sigma, nsigmas, None)
    center = np.full(x.size, float(target))
    return _chart(Plotted.EWMA, np.asarray(smoothed, np.float64), center, spread, frame)


def _lindley(steps: FloatArray, start: float) -> FloatArray:
    """``Cᵢ = max(0, Cᵢ₋₁ + stepᵢ)`` from ``C₀ = start`` without a loop: with
    ``Sᵢ`` the running sum of steps, ``Cᵢ = Sᵢ - min(-start, min_{j≤i} Sⱼ)``."""
    running = np.cumsum(steps)
    floor = np.minimum(np.minimum.accumulate(running), -start)
    cumulative: FloatArray = np.maximum(running - floor, 0.0)
    return cumulative


def cusum(
    values: npt.ArrayLike,
    *,
    target: float,
    sigma: float,
    k: float = 0.5,
    h: float = 5.0,
    n: int = 1,
    head_start: float = 0.0,
) -> Cusum:
    """Tabular (Page) CUSUM with reference value ``k`` and decision interval ``h`` in
    units of the standard error ``s/√n`` (``k = 0.5, h = 5`` detects a one-sigma
    shift with an in-control ARL near 465). ``head_start`` (in the same units, often
    ``h/2``) starts both sums above zero for a fast initial response.
    """
    if k < 0 or h <= 0 or not 0 <= head_start <= h:
        raise ValidationFailed(
            f"CUSUM needs k >= 0, h > 0 and 0 <= head_start <= h; got k={k}, h={h}, "
            f"head_start={head_start}"
        )
    x = _series(values, "CUSUM input")
    se = _check_standard_error(sigma, n)
    reference, start = k * se, head_start * se
    return Cusum(
        upper=_frozen(_lindley(x - (target + reference), start)),
        lower=_frozen(_lindley((target - reference) - x, start)),
        target=target,
        sigma=se,
        reference=reference,
        decision=h * se,
    )


__all__ = [
    "BEYOND_LIMITS",
    "OVERDISPERSION_ALPHA",
    "Chart",
    "ChartType",
    "Cusum",
    "Dispersion",
    "Factors",
    "LimitMethod",
    "Limits",
    "PhaseOne",
    "Plotted",
    "c4",
    "c_chart",
    "cusum",
    "d2",
    "d3",
    "dispersion",
    "ewma",
    "ewma_sigma",
    "exact_limits",
    "factors",
    "g_chart",
    "group_by",
    "individuals",
    "monitor",
    "np_chart",
    "p_chart",
    "phase_one",
    "tail_probability",
    "u_chart",
    "xbar_r",
    "xbar_s",
]
