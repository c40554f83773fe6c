"""Units of measure: every reading is stored in its parameter's own unit.

Sensors report in whatever their vendor chose (``degF``, ``mbar``, ``lbf*in``); the
graph's parameters name the unit their spec limits are in. :class:`UnitConverter`
converts with pint, caches one converter per unit pair, and says plainly when a unit
is unknown, odd (``kelvin**0``, a factor pint cannot express as a finite number) or of
the wrong dimension — such a reading goes to the quarantine. A value that converts to
something not finite (``1e308 km`` in metres) is refused the same way.

>>> convert = UnitConverter()
>>> round(convert(212.0, "degF", "degC"), 6)
100.0
>>> convert(2.5, "bar", "kPa")
250.0
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import pint

from sqems.errors import ValidationFailed

ALIASES = {
    # spellings seen in plant data that pint reads differently or not at all
    "um": "micrometer",
    "µm": "micrometer",
    "degc": "degC",
    "°C": "degC",
    "°F": "degF",
    "pcs": "count",
    "cm/min": "centimeter / minute",
}


class UnitConverter:
    """Convert values between units; thread-safe, one cached function per unit pair."""

    def __init__(self) -> None:
        self._registry: pint.UnitRegistry[float] = pint.UnitRegistry(
            autoconvert_offset_to_baseunit=True
        )
        self._cache: dict[tuple[str, str], Callable[[float], float]] = {}
        self._lock = threading.Lock()

    def __call__(self, value: float, unit: str, to: str) -> float:
        """``value`` in ``unit`` converted to ``to``; :class:`ValidationFailed` when
        there is no conversion or the result is not a finite number."""
        converted = self.function(unit, to)(value)
        if not math.isfinite(converted):
            raise ValidationFailed(
                f"value {value!r} {unit} is {converted} {to}: not a finite number"
            )
        return converted

    def function(self, unit: str, to: str) -> Callable[[float], float]:
        """The conversion from ``unit`` to ``to``; :class:`ValidationFailed` if there is
        none (an unknown unit, or another dimension)."""
        key = (unit, to)
        found = self._cache.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._cache.get(key) or self._build(unit, to)
            self._cache[key] = found
        return found

    def _build(self, unit: str, to: str) -> Callable[[float], float]:
        if unit == to:
            return _same
        source, target = self._unit(unit), self._unit(to)
        if source.dimensionality != target.dimensionality:
            raise ValidationFailed(
                f"unit {unit!r} ({source.dimensionality}) cannot be converted to the "
                f"parameter's unit {to!r} ({target.dimensionality})"
            )
        quantity = self._registry.Quantity
        # a linear unit pair converts as a*x + b; fit it once from two points, so each
        # reading costs one multiply-add instead of a pint round trip (offset units
        # such as degF -> degC are linear too)
        x = np.array([0.0, 1.0])
        try:
            y = quantity(x, source).to(target).magnitude
        except _PINT_ERRORS as exc:
            raise ValidationFailed(
                f"unit {unit!r} cannot be converted to the parameter's unit {to!r} ({_why(exc)})"
            ) from None
        scale, offset = float(y[1] - y[0]), float(y[0])
        if not (math.isfinite(scale) and math.isfinite(offset) and scale != 0.0):
            raise ValidationFailed(
                f"unit {unit!r} converts to {to!r} as x * {scale} + {offset}: not a usable "
                "conversion"
            )
        return lambda value: value * scale + offset

    def _unit(self, name: str) -> pint.Unit:
        try:
            return self._registry.Unit(ALIASES.get(name, name))
        except _PINT_ERRORS as exc:
            raise ValidationFailed(
                f"unit {name!r} is not a unit of measure ({_why(exc)})"
            ) from None


_PINT_ERRORS = (
    pint.PintError,
    # pint's parser evaluates the unit expression and lets other errors through on
    # odd input: KeyError for ``kelvin**0``, ZeroDivisionError for ``m/0``, …
    KeyError,
    ValueError,
    AttributeError,
    TypeError,
    SyntaxError,
    ArithmeticError,
    IndexError,
)
"""What pint raises for a unit expression it cannot read."""


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, pint.PintError) else f"{type(exc).__name__}: {exc}"


def _same(value: float) -> float:
    return value
