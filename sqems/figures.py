"""Numbers as a person reads them: plain digits with thousands separators, a few
significant digits, never e-notation; tiny probabilities as ``< 0.0001``.

>>> plain(4560.3), plain(0.0959), plain(1.055e4), plain(-87.54)
('4,560', '0.0959', '10,600', '-87.5')
>>> probability(2.1e-54), probability(0.031)
('< 0.0001', '0.031')
>>> ranged(632, 87.5, 4560)
'632 (95 % interval 87.5 to 4,560)'
"""

from __future__ import annotations

import math

SMALLEST_P = 0.0001
"""Probabilities below it print as ``< 0.0001``: beyond it the digits say nothing a
decision needs (and the models behind them are not that exact)."""


def plain(x: float, digits: int = 3, *, signed: bool = False) -> str:
    """``x`` to at most ``digits`` significant digits (every digit left of the point is
    kept, trailing zeros are not), with thousands separators; ``-`` for NaN."""
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return ("-" if x < 0 else "+" if signed else "") + "∞"
    sign = "+" if signed and x > 0 else ""
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - magnitude)
    rounded = round(x, decimals)
    if rounded and math.floor(math.log10(abs(rounded))) > magnitude:
        decimals = max(0, decimals - 1)  # 9.996 rounds to 10.0: one digit fewer
    if decimals == 0:
        rounded = round(x, digits - 1 - magnitude)  # 4560.3 -> 4,560, not 4,560.3
    text = f"{rounded:,.{decimals}f}"
    if "." in text:  # 25.0 reads as 25
        text = text.rstrip("0").rstrip(".")
    return sign + ("0" if text in ("-0", "0") else text)


def probability(p: float) -> str:
    """A p- or q-value: two significant digits, ``< 0.0001`` below :data:`SMALLEST_P`."""
    if math.isnan(p):
        return "-"
    return f"< {SMALLEST_P:g}" if p < SMALLEST_P else plain(p, 2)


def ranged(
    value: float,
    low: float,
    high: float,
    unit: str = "",
    *,
    level: int | None = 95,
    signed: bool = False,
) -> str:
    """``value`` with its interval: ``25 units/h (95 % interval 24 to 26)``; with
    ``level=None`` (a table whose header names the interval) ``25 (24 to 26)``."""
    u = f" {unit}" if unit else ""
    name = f"{level} % interval " if level is not None else ""
    lo, hi = plain(low, signed=signed), plain(high, signed=signed)
    return f"{plain(value, signed=signed)}{u} ({name}{lo} to {hi})"
