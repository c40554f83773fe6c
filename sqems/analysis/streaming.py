"""Control charts one reading at a time, for the ingestion path.

Each monitor is fed readings with ``push(x)`` and answers with the rule hits the
reading completes, in constant time and memory per reading: run counters and
fixed-size ring buffers, never the history. Three monitors share that protocol:

* :class:`RuleMonitor` runs the Western Electric and Nelson rules against frozen
  limits (an I chart from :class:`~sqems.analysis.spc.Limits`, or any centre and
  sigma). Its trackers are built from the same :class:`~sqems.analysis.rules.Rule`
  descriptions as the vectorised detectors and report exactly the same hits, point
  for point, as :func:`~sqems.analysis.rules.evaluate` over the whole series.
* :class:`EwmaMonitor` and :class:`CusumMonitor` carry the EWMA statistic and the two
  CUSUM sums forward and report when they cross their limits, as
  :func:`~sqems.analysis.spc.ewma` and :func:`~sqems.analysis.spc.cusum` would.

>>> monitor = RuleMonitor(center=0.0, sigma=1.0, rules=["nelson_1", "nelson_5"])
>>> for x in (0.3, 2.5, 2.2, 3.4):
...     print(monitor.push(x))
[]
[]
[RuleHit(point=2, rule='nelson_5')]
[RuleHit(point=3, rule='nelson_1'), RuleHit(point=3, rule='nelson_5')]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sqems.analysis.rules import Pattern, Rule, RuleHit, fires, resolve
from sqems.analysis.spc import ChartType, Limits
from sqems.errors import ValidationFailed

EWMA_RULE = "ewma_beyond_limits"
CUSUM_UPPER = "cusum_upper"
CUSUM_LOWER = "cusum_lower"


class Monitor(Protocol):
    """Anything fed one reading at a time that answers with the hits it completes."""

    def push(self, x: float) -> list[RuleHit]: ...


class _Tracker(Protocol):
    def push(self, z: float) -> bool: ...


def _checked(x: float, what: str) -> float:
    value = float(x)
    if not math.isfinite(value):
        raise ValidationFailed(
            f"{what} got a non-finite reading {x!r}; drop or impute it before monitoring"
        )
    return value


# --------------------------------------------------------------------------- trackers


class _Beyond:
    def __init__(self, rule: Rule) -> None:
        self.threshold = rule.threshold

    def push(self, z: float) -> bool:
        return abs(z) > self.threshold


class _SameSide:
    def __init__(self, rule: Rule) -> None:
        self.length = rule.length
        self.above = self.below = 0

    def push(self, z: float) -> bool:
        self.above = self.above + 1 if z > 0 else 0
        self.below = self.below + 1 if z < 0 else 0
        return self.above >= self.length or self.below >= self.length


class _Trend:
    """Counts consecutive rises and falls; ``length`` points make ``length - 1`` steps."""

    def __init__(self, rule: Rule) -> None:
        self.steps = rule.length - 1
        self.previous: float | None = None
        self.rises = self.falls = 0

    def push(self, z: float) -> bool:
        if self.previous is not None:
            step = z - self.previous
            self.rises = self.rises + 1 if step > 0 else 0
            self.falls = self.falls + 1 if step < 0 else 0
        self.previous = z
        return self.rises >= self.steps or self.falls >= self.steps


class _Alternating:
    """Counts consecutive turns (a rise after a fall or a fall after a rise);
    ``length`` points hold ``length - 2`` turns."""

    def __init__(self, rule: Rule) -> None:
        self.turns_needed = rule.length - 2
        self.previous: float | None = None
        self.last_sign = 0
        self.turns = 0

    def push(self, z: float) -> bool:
        sign = 0
        if self.previous is not None:
            step = z - self.previous
            sign = (step > 0) - (step < 0)
        turned = sign != 0 and sign == -self.last_sign
        self.turns = self.turns + 1 if turned else 0
        self.previous, self.last_sign = z, sign
        return self.turns >= self.turns_needed


class _MOfN:
    """How many of the last ``length`` points were beyond the threshold on each side,
    kept in a ring buffer so the point leaving the window is subtracted."""

    def __init__(self, rule: Rule) -> None:
        self.threshold, self.count = rule.threshold, rule.count
        self.window = [0] * rule.length  # +1 above, -1 below, 0 neither
        self.slot = 0
        self.above = self.below = 0

    def push(self, z: float) -> bool:
        side = 1 if z > self.threshold else -1 if z < -self.threshold else 0
        leaving = self.window[self.slot]
        self.above += (side == 1) - (leaving == 1)
        self.below += (side == -1) - (leaving == -1)
        self.window[self.slot] = side
        self.slot = (self.slot + 1) % len(self.window)
        return (side == 1 and self.above >= self.count) or (side == -1 and self.below >= self.count)


class _Run:
    """A run of points meeting a condition on ``|z|``."""

    def __init__(self, rule: Rule, inside: bool) -> None:
        self.length, self.threshold, self.inside = rule.length, rule.threshold, inside
        self.run = 0

    def push(self, z: float) -> bool:
        meets = abs(z) < self.threshold if self.inside else abs(z) > self.threshold
        self.run = self.run + 1 if meets else 0
        return self.run >= self.length


_TRACKERS: Mapping[Pattern, Callable[[Rule], _Tracker]] = {
    Pattern.BEYOND: _Beyond,
    Pattern.SAME_SIDE: _SameSide,
    Pattern.TREND: _Trend,
    Pattern.ALTERNATING: _Alternating,
    Pattern.M_OF_N: _MOfN,
    Pattern.WITHIN: lambda rule: _Run(rule, inside=True),
    Pattern.OUTSIDE: lambda rule: _Run(rule, inside=False),
}


def tracker(rule: Rule) -> _Tracker:
    """A fresh one-point-at-a-time detector for ``rule``."""
    return _TRACKERS[rule.pattern](rule)


# --------------------------------------------------------------------------- monitors


class RuleMonitor:
    """Run rules on a stream of readings against a fixed centre and sigma.

    ``sigma`` is the standard error of each reading as plotted (the process sigma
    for individuals). Hits come in the order of ``rules`` (the default set,
    :data:`~sqems.analysis.rules.DEFAULT_RULES`, when none are named), each naming
    the index of the reading that completed the pattern.
    """

    def __init__(self, center: float, sigma: float, rules: Iterable[str] | None = None) -> None:
        if not (math.isfinite(center) and math.isfinite(sigma) and sigma > 0):
            raise ValidationFailed(
                f"a rule monitor needs a finite centre and a positive sigma, got "
                f"center={center}, sigma={sigma}"
            )
        self.center, self.sigma = float(center), float(sigma)
        self._defs = resolve(rules)
        self._rules = [(rule.name, tracker(rule)) for rule in self._defs]
        self.points = 0
        # every rule is decided by its last `length` points, so the last (longest - 1)
        # points are all that push_many needs to carry a window across batches
        self._tail: deque[float] = deque(maxlen=max(r.length for r in self._defs) - 1)

    @classmethod
    def for_individuals(cls, limits: Limits, rules: Iterable[str] | None = None) -> RuleMonitor:
        """Monitor single readings against I-MR limits frozen in phase I."""
        if limits.chart is not ChartType.I_MR:
            raise ValidationFailed(
                f"streaming rules need I-MR limits, got {limits.chart.value} limits; "
                "estimate an individuals chart for the parameter first"
            )
        return cls(limits.center, limits.sigma, rules)

    def push(self, x: float) -> list[RuleHit]:
        """Take one reading; return the rules it completes (usually none)."""
        z = (_checked(x, "rule monitor") - self.center) / self.sigma
        point, self.points = self.points, self.points + 1
        self._tail.append(z)
        return [RuleHit(point, name) for name, rule in self._rules if rule.push(z)]

    def push_many(self, xs: npt.ArrayLike) -> list[RuleHit]:
        """Take readings in order; the hits they complete, exactly as :meth:`push` one
        at a time would report them, but vectorised: the batch is judged with the
        detectors of :mod:`sqems.analysis.rules` over the carried tail plus the batch."""
        x = np.asarray(xs, dtype=np.float64)
        if x.ndim != 1:
            raise ValidationFailed(f"push_many takes a 1-D batch, got shape {x.shape}")
        if not x.size:
            return []
        if not np.isfinite(x).all():
            bad = x[~np.isfinite(x)][0]
            raise ValidationFailed(
                f"rule monitor got a non-finite reading {bad!r}; drop or impute it before "
                "monitoring"
            )
        z = (x - self.center) / self.sigma
        carried = len(self._tail)
        window = np.concatenate([np.fromiter(self._tail, np.float64, carried), z])
        base = self.points - carried
        hits = [
            RuleHit(base + int(i), rule.name)
            for rule in self._defs
            for i in np.flatnonzero(fires(window, rule)[carried:]) + carried
        ]
        self.points += x.size
        self._tail.extend(z[-self._tail.maxlen :].tolist() if self._tail.maxlen else ())
        # the one-at-a-time trackers resume from the tail: what they need to decide
        # the next point is in it
        self._rules = [(rule.name, tracker(rule)) for rule in self._defs]
        for value in self._tail:
            for _, t in self._rules:
                t.push(value)
        order = {rule.name: k for k, rule in enumerate(self._defs)}
        return sorted(hits, key=lambda h: (h.point, order[h.rule]))


class EwmaMonitor:
    """The EWMA statistic of a stream and its limits, one reading at a time.

    Same parameters and arithmetic as :func:`sqems.analysis.spc.ewma`: the statistic
    starts at ``target``; limits are exact (time-varying) unless ``exact_limits`` is
    false.
    """

    def __init__(
        self,
        *,
        target: float,
        sigma: float,
        lam: float = 0.2,
        nsigmas: float = 3.0,
        n: int = 1,
        exact_limits: bool = True,
    ) -> None:
        if not 0 < lam <= 1:
            raise ValidationFailed(f"the EWMA weight lambda must be in (0, 1], got {lam}")
        if not (math.isfinite(sigma) and sigma > 0) or n < 1:
            raise ValidationFailed(f"EWMA needs sigma > 0 and n >= 1, got {sigma} and {n}")
        self.target, self.lam, self.exact = float(target), float(lam), exact_limits
        self.nsigmas = float(nsigmas)
        self._base = sigma / math.sqrt(n) * math.sqrt(lam / (2.0 - lam))
        self.value = self.target
        self.points = 0

    def limits(self) -> tuple[float, float]:
        """LCL and UCL at the latest reading."""
        spread = self._base
        if self.exact:
            spread *= math.sqrt(1.0 - (1.0 - self.lam) ** (2.0 * self.points))
        reach = self.nsigmas * spread
        return self.target - reach, self.target + reach

    def push(self, x: float) -> list[RuleHit]:
        """Take one reading; return an :data:`EWMA_RULE` hit if the EWMA is outside."""
        self.value = self.lam * _checked(x, "EWMA monitor") + (1.0 - self.lam) * self.value
        point, self.points = self.points, self.points + 1
        lcl, ucl = self.limits()
        if self.value > ucl or self.value < lcl:
            return [RuleHit(point, EWMA_RULE)]
        return []


class CusumMonitor:
    """Tabular CUSUM sums of a stream, as :func:`sqems.analysis.spc.cusum` computes
    them; ``k``, ``h`` and ``head_start`` are in units of ``sigma/√n``. The sums are
    not reset by a signal: call :meth:`reset` once the cause has been corrected."""

    def __init__(
        self,
        *,
        target: float,
        sigma: float,
        k: float = 0.5,
        h: float = 5.0,
        n: int = 1,
        head_start: float = 0.0,
    ) -> None:
        if not (math.isfinite(sigma) and sigma > 0) or n < 1:
            raise ValidationFailed(f"CUSUM needs sigma > 0 and n >= 1, got {sigma} and {n}")
        if k < 0 or h <= 0 or not 0 <= head_start <= h:
            raise ValidationFailed(
                f"CUSUM needs k >= 0, h > 0 and 0 <= head_start <= h; got k={k}, h={h}, "
                f"head_start={head_start}"
            )
        se = sigma / math.sqrt(n)
        self.target, self.reference, self.decision = float(target), k * se, h * se
        self._start = head_start * se
        self.upper = self.lower = self._start
        self.points = 0

    def reset(self) -> None:
        """Restart both sums from the head start, as after a corrected shift."""
        self.upper = self.lower = self._start

    def push(self, x: float) -> list[RuleHit]:
        """Take one reading; return hits for a sum beyond the decision interval."""
        value = _checked(x, "CUSUM monitor")
        self.upper = max(0.0, self.upper + (value - (self.target + self.reference)))
        self.lower = max(0.0, self.lower + ((self.target - self.reference) - value))
        point, self.points = self.points, self.points + 1
        hits = []
        if self.upper > self.decision:
            hits.append(RuleHit(point, CUSUM_UPPER))
        if self.lower > self.decision:
            hits.append(RuleHit(point, CUSUM_LOWER))
        return hits


__all__ = [
    "CUSUM_LOWER",
    "CUSUM_UPPER",
    "EWMA_RULE",
    "CusumMonitor",
    "EwmaMonitor",
    "Monitor",
    "RuleMonitor",
    "tracker",
]
