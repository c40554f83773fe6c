"""When did a process level change, and when did it come back? Change points in a series
of per-run actuals.

A machine whose parameter drifted is a recall question in time: which runs were made
while the level was off? Out-of-spec runs alone answer it badly — a drift is under way
long before it crosses a limit, and the units made on the way up are suspect too. The
answer here is the **segmentation** of the machine's series of run actuals into stretches
of constant mean:

* **optimal partitioning** (Jackson et al., "An algorithm for optimal partitioning of data
  on an interval", IEEE Signal Processing Letters 12, 2005; the exact search that PELT,
  Killick et al., JASA 107, 2012, prunes) minimises the within-segment sum of squares
  plus a penalty ``beta`` per change point;
* a **permutation gate** first: the series has a window only when the strongest
  epidemic change in it (a stretch whose mean differs from the rest, the scan of
  circular binary segmentation) is significant at ``alpha`` = 1 % against shuffles of
  the same values (:func:`scan_p_value`) — exact whatever the noise's distribution;
* the noise level ``sigma`` comes from the first differences (the median absolute
  difference divided by 0.6745 * sqrt(2)), which a slow drift or a step barely moves,
  so the same series both sets the scale and shows the change;
* ``beta = sigma**2 * (3 log(n) + 10)`` — stricter than the BIC's ``2 log n``, with a
  constant that holds short series too, so that a series with no change rarely shows one:
  it shapes the window, the gate decides whether there is one;
* the **reference** level is the longest segment's mean; a segment is *off* when its
  mean departs from the reference by more than ``min_shift`` sigmas (default 1);
* a slow drift begins before the segment that shows it clearly: the window is widened to
  where a tabular CUSUM against the reference says the change began and ended (the run
  after the CUSUM was last zero);
* the window runs from the **last run at the reference level before** the change to the
  **first run back at it after** — the "last known good" rule of a recall: everything
  made between two good runs is in question.

>>> import numpy as np
>>> t = np.arange(100.0)
>>> x = np.where((t >= 40) & (t < 60), 5.0, 0.0) + np.random.default_rng(1).normal(0, 1, 100)
>>> w = level_shift_window(t, x)
>>> (w.first_off, w.last_off)
(40.0, 59.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MIN_RUNS = 12
"""Fewer runs than this carry no segmentation worth a recall."""
ALPHA = 0.01
"""False windows allowed on a series without a change (the permutation gate)."""
PERMUTATIONS = 199
MAX_POINTS = 400
"""Longer series are averaged in consecutive blocks down to about this many points for
the permutation gate, so its O(n**2) scan stays fast."""


@dataclass(frozen=True, slots=True)
class ShiftWindow:
    """Where a series left its reference level and came back."""

    first_off: float
    """Time of the first run in an off segment."""
    last_off: float
    """Time of the last run in an off segment."""
    last_good_before: float | None
    """Time of the last run at the reference level before the change (None: the
    series starts off)."""
    first_good_after: float | None
    """Time of the first run back at the reference level (None: still off)."""
    reference: float
    """The reference level (the longest segment's mean)."""
    peak_shift: float
    """The off segments' largest departure from the reference, in the series' units."""
    sigma: float
    runs_off: int
    change_points: tuple[float, ...]
    """Times of the first run of every new segment."""

    @property
    def start(self) -> float:
        """Where a recall window starts: the last good run, else the first off run."""
        return self.last_good_before if self.last_good_before is not None else self.first_off

    @property
    def end(self) -> float | None:
        """Where a recall window ends: the first good run after (None: open-ended)."""
        return self.first_good_after

    def as_dict(self) -> dict[str, float | int | list[float] | None]:
        return {
            "first_off": self.first_off,
            "last_off": self.last_off,
            "last_good_before": self.last_good_before,
            "first_good_after": self.first_good_after,
            "reference": self.reference,
            "peak_shift": self.peak_shift,
            "sigma": self.sigma,
            "runs_off": self.runs_off,
            "change_points": list(self.change_points),
        }


def noise_sigma(values: npt.ArrayLike) -> float:
    """The series' noise level from its first differences (robust to steps and drift)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 3:
        return 0.0
    diffs = np.abs(np.diff(x))
    return float(np.median(diffs) / (0.6745 * math.sqrt(2.0)))


def segments(values: npt.ArrayLike, penalty: float) -> list[tuple[int, int]]:
    """Optimal partition of ``values`` into constant-mean segments, as ``(begin, end)``
    index pairs (end exclusive), minimising the within-segment sum of squares plus
    ``penalty`` per change point."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return []
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])
    best = np.empty(n + 1)
    best[0] = -penalty
    last = np.zeros(n + 1, dtype=np.int64)
    for t in range(1, n + 1):
        s = np.arange(t)
        length = t - s
        total = s1[t] - s1[s]
        cost = (s2[t] - s2[s]) - total * total / length
        score = best[s] + cost + penalty
        k = int(np.argmin(score))
        best[t], last[t] = score[k], k
    cuts: list[tuple[int, int]] = []
    t = n
    while t > 0:
        cuts.append((int(last[t]), t))
        t = int(last[t])
    return cuts[::-1]


def level_shift_window(
    times: npt.ArrayLike, values: npt.ArrayLike, *, min_shift: float = 1.0, alpha: float = ALPHA
) -> ShiftWindow | None:
    """The window in which the series ``values`` (at ``times``) left its reference level,
    or None when it never did (see the module docstring)."""
    t = np.asarray(times, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    if t.shape != x.shape:
        raise ValueError("times and values must have the same length")
    finite = np.isfinite(t) & np.isfinite(x)
    t, x = t[finite], x[finite]
    order = np.argsort(t, kind="stable")
    t, x = t[order], x[order]
    n = x.size
    if n < MIN_RUNS:
        return None
    if np.ptp(x) == 0.0 or scan_p_value(x) > alpha:
        return None
    sigma = noise_sigma(x)
    if sigma <= 0.0:
        sigma = float(np.std(x))
    parts = segments(x, sigma * sigma * (3.0 * math.log(n) + 10.0))
    if len(parts) < 2:
        return None
    means = [float(x[b:e].mean()) for b, e in parts]
    longest = max(range(len(parts)), key=lambda i: parts[i][1] - parts[i][0])
    reference = means[longest]
    off = [i for i, m in enumerate(means) if abs(m - reference) > min_shift * sigma]
    if not off:
        return None
    first, last = parts[off[0]][0], parts[off[-1]][1] - 1
    peak = max((means[i] - reference for i in off), key=abs)
    first, last = _cusum_bounds(x, reference, sigma, math.copysign(1.0, peak), first, last)
    return ShiftWindow(
        first_off=float(t[first]),
        last_off=float(t[last]),
        last_good_before=float(t[first - 1]) if first > 0 else None,
        first_good_after=float(t[last + 1]) if last + 1 < n else None,
        reference=reference,
        peak_shift=peak,
        sigma=sigma,
        runs_off=last - first + 1,
        change_points=tuple(float(t[b]) for b, _ in parts[1:]),
    )


def _cusum_bounds(
    x: FloatArray, reference: float, sigma: float, sign: float, first: int, last: int
) -> tuple[int, int]:
    """Widen ``[first, last]`` to where a tabular CUSUM (reference value ``sigma``, tuned
    to a two-sigma shift) says the change began and ended: the run after the CUSUM was
    last zero before ``first``, and - run backwards - before ``last``'s end. A slow
    drift starts before the segment that shows it clearly; this is the classic CUSUM
    estimate of the time of change (Montgomery, *Introduction to Statistical Quality
    Control*, 9.2)."""
    excess = sign * (x - reference) - sigma
    s = 0.0
    begin = 0
    for i in range(first):
        s = max(0.0, s + excess[i])
        if s == 0.0:
            begin = i + 1
    s = 0.0
    end = x.size - 1
    for i in range(x.size - 1, last, -1):
        s = max(0.0, s + excess[i])
        if s == 0.0:
            end = i - 1
    return min(first, begin), max(last, end)


def scan_p_value(values: npt.ArrayLike, *, permutations: int = PERMUTATIONS) -> float:
    """Permutation p-value of the strongest *epidemic* change in ``values`` (in order).

    The scan is that of circular binary segmentation (Olshen et al., Biostatistics 5,
    2004): over every stretch of consecutive runs [i, j), the difference between its mean
    and the mean of the others, standardised, T = |S_j - S_i| sqrt(n / (L (n - L))) with
    S the cumulative sum of the deviations from the overall mean and L = j - i. Its
    p-value comes from ``permutations`` shuffles of the series: exact for any length and
    any distribution of the noise (heavy tails included), and repeatable (fixed seed).
    """
    v = np.asarray(values, dtype=np.float64)
    block = -(-v.size // MAX_POINTS)  # ceil: 1 for series that fit
    edges = np.arange(0, v.size, block)
    points = np.add.reduceat(v, edges) / np.diff(np.r_[edges, v.size])
    n = points.size
    i, j = np.triu_indices(n + 1, k=1)
    length = j - i
    least = max(1, -(-2 // block))  # one odd run is an outlier, not a change
    keep = (length >= least) & (n - length >= least)
    i, j, length = i[keep], j[keep], length[keep]
    scale = np.sqrt(n / (length * (n - length)))

    def scan(series: FloatArray) -> float:
        cum = np.r_[0.0, np.cumsum(series - series.mean())]
        return float((np.abs(cum[j] - cum[i]) * scale).max())

    observed = scan(points)
    rng = np.random.default_rng(0)
    exceed = sum(scan(rng.permutation(points)) >= observed for _ in range(permutations))
    return (exceed + 1) / (permutations + 1)
