"""Smooth effects of process parameters: restricted cubic splines.

A parameter's effect on the logit is ``beta z + sum_k gamma_k s_k(z)``, where the s_k
are the nonlinear columns of a restricted (natural) cubic spline of the standardised
actual z with knots t_1 < ... < t_K (Stone and Koo, "Additive splines in statistics",
1985; Harrell, *Regression Modeling Strategies*, 2nd ed., 2015, sec. 2.4.5)::

    s_k(z) = [ (z - t_k)+^3
               - (z - t_{K-1})+^3 (t_K - t_k) / (t_K - t_{K-1})
               + (z - t_K)+^3 (t_{K-1} - t_k) / (t_K - t_{K-1}) ] / (t_K - t_1)^2

for k = 1 .. K-2. The curve is cubic between the knots, joined smoothly, and straight
below the first knot and above the last. So, unlike a square term, it can be monotone
(a threshold: flat, then rising towards a limit), have an optimum inside the window,
or be a straight line, as the data say; and it does not bend on outside the data,
where a square term keeps climbing (a threshold at the USL read as a symmetric valley
predicted 244,000 ppm at the limit, against about 130,000 true). Division by
(t_K - t_1)^2 keeps the columns in the units of z, so their coefficients take the
same prior scale as the slope.

**Knots.** The outer knots are the smallest and largest training actual (the boundary
knots of R's ``ns``), so the curve is straight only outside the data - where the
what-if labels a setting an extrapolation - and the inner knots sit at the thirds of
the actuals (K = 4, two curve columns) for a parameter with at least
:data:`FOUR_KNOTS_DISTINCT` distinct values, else at the median (K = 3, one column).
Quantiles that coincide (few distinct values) fall back to the smallest, middle and
largest distinct value. Harrell's outer knots at the 5 and 95 % quantiles make the
curve straight over the outer tenth of the data: fitted by maximum likelihood to 600
runs with a planted square (0.6 z + 0.5 z**2), that curve missed the truth by up to
0.43 on the logit inside the data, these knots by up to 0.25; on a planted threshold
(1.5 per sd above z = 1) a square term missed by 0.38 at z = 2.5, this curve by 0.02.

Each column is centred on its training mean, so the model's intercept is the logit at
the parameters' means and does not trade off with the curve coefficients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sqems.errors import ValidationFailed

__all__ = ["FOUR_KNOTS_DISTINCT", "Curves", "knots_of", "spline_columns"]

FloatArray = npt.NDArray[np.float64]

FOUR_KNOTS_DISTINCT: Final = 10
"""Distinct training values from which a parameter's curve gets four knots (two
columns); fewer get three (one column)."""
_QUANTILES: Final = {4: (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0), 3: (0.0, 0.5, 1.0)}


def knots_of(values: npt.ArrayLike) -> tuple[float, ...]:
    """The knots of a curve of ``values`` (standardised actuals): see the module
    docstring. Needs at least three distinct values."""
    v = np.asarray(values, dtype=np.float64)
    distinct = np.unique(v)
    if distinct.size < 3:
        raise ValidationFailed(
            f"a curve needs at least 3 distinct values, got {distinct.size}: with 2 it is "
            "a straight line"
        )
    count = 4 if distinct.size >= FOUR_KNOTS_DISTINCT else 3
    knots = np.quantile(v, _QUANTILES[count])
    if np.all(np.diff(knots) > 0):
        return tuple(float(k) for k in knots)
    middle = distinct[distinct.size // 2]
    return (float(distinct[0]), float(middle), float(distinct[-1]))


def spline_columns(z: npt.ArrayLike, knots: Sequence[float]) -> FloatArray:
    """The K - 2 nonlinear columns s_k(z) of the restricted cubic spline with
    ``knots``, shape (len(z), K - 2), not centred."""
    x = np.asarray(z, dtype=np.float64)[:, None]
    t = np.asarray(knots, dtype=np.float64)
    last, before = t[-1], t[-2]

    def cube(c: FloatArray | float) -> FloatArray:
        return np.asarray(np.maximum(x - c, 0.0) ** 3, dtype=np.float64)

    inner = t[None, :-2]
    columns = (
        cube(inner)
        - cube(before) * (last - inner) / (last - before)
        + cube(last) * (before - inner) / (last - before)
    )
    return np.asarray(columns / (last - t[0]) ** 2, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Curves:
    """The curve columns of a model: which parameters are curved, their knots and the
    training means the columns are centred on."""

    parameters: tuple[str, ...]
    """All the model's parameters, in the order of the columns of z."""
    curved: tuple[str, ...]
    """The parameters with a curve (the others' effect is a straight line)."""
    knots: tuple[tuple[float, ...], ...]
    """Per curved parameter, its knots on the standardised scale."""
    centre: tuple[float, ...]
    """Per curve column, its mean over the training runs."""

    @classmethod
    def of(cls, z: FloatArray, parameters: Sequence[str], curved: Sequence[str]) -> Curves:
        """Knots and centres from the training runs' standardised actuals ``z``."""
        params = tuple(parameters)
        knots = tuple(knots_of(z[:, params.index(c)]) for c in curved)
        bare = cls(params, tuple(curved), knots, ())
        centre = bare._raw(z).mean(axis=0) if bare.columns else np.zeros(0)
        return cls(params, tuple(curved), knots, tuple(float(c) for c in centre))

    @property
    def columns(self) -> int:
        return sum(len(k) - 2 for k in self.knots)

    @property
    def labels(self) -> tuple[str, ...]:
        """One label per column: ``P-TEMP:1``, ``P-TEMP:2``."""
        return tuple(
            f"{name}:{k + 1}"
            for name, knots in zip(self.curved, self.knots, strict=True)
            for k in range(len(knots) - 2)
        )

    @property
    def owner(self) -> tuple[int, ...]:
        """Per column, the index of its parameter among :attr:`parameters`."""
        return tuple(
            self.parameters.index(name)
            for name, knots in zip(self.curved, self.knots, strict=True)
            for _ in range(len(knots) - 2)
        )

    def basis(self, z: FloatArray) -> FloatArray:
        """The centred curve columns of standardised actuals ``z`` (runs x parameters),
        shape (runs, :attr:`columns`)."""
        return np.asarray(self._raw(z) - np.asarray(self.centre), dtype=np.float64)

    def _raw(self, z: FloatArray) -> FloatArray:
        blocks = [
            spline_columns(z[:, self.parameters.index(name)], knots)
            for name, knots in zip(self.curved, self.knots, strict=True)
        ]
        return np.hstack(blocks) if blocks else np.zeros((z.shape[0], 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "curved": list(self.curved),
            "knots": [list(k) for k in self.knots],
            "centre": list(self.centre),
        }

    @classmethod
    def from_dict(cls, parameters: Sequence[str], data: Mapping[str, Any]) -> Curves:
        curves = cls(
            tuple(parameters),
            tuple(str(c) for c in data["curved"]),
            tuple(tuple(float(v) for v in k) for k in data["knots"]),
            tuple(float(v) for v in data["centre"]),
        )
        if len(curves.knots) != len(curves.curved) or len(curves.centre) != curves.columns:
            raise ValidationFailed("the curves' knots and centres do not match")
        return curves
