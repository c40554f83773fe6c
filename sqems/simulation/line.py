"""A discrete-event model of a serial production line on SimPy: parallel machines,
finite buffers with blocking, breakdowns, defects, inspection, rework and scrap.

**The line.** A :class:`LineSpec` is a sequence of :class:`StationSpec`. Each station
has a FIFO buffer in front of it (``buffer`` places, None for unbounded, 0 for none)
shared by its parallel machines; a machine that falls idle takes the oldest unit in the
buffer, and a unit that finds idle machines goes to the one idle longest. A machine that
finishes a unit holds it until the next station has an idle machine or a free buffer
place (*blocking after service*), so finite buffers cost throughput the way they do on
a real line. With ``arrival`` None the first station never starves: a machine there
that falls idle starts a new unit at once. Otherwise units arrive with the given
inter-arrival times; an arrival that finds the first buffer full waits at the entrance
(already counted in the line) and holds back the next arrival until it gets in.

**Breakdowns** are operation-dependent, the usual assumption for production lines
(Buzacott and Shanthikumar; Gershwin): a machine fails after an exponential amount of
*processing* time with mean ``mtbf_s``, is repaired in an exponential time with mean
``mttr_s``, then finishes the interrupted unit. An idle, starved or blocked machine does
not wear, so a machine that is always busy makes ``A / mean cycle`` units a second with
``A = MTBF / (MTBF + MTTR)``.

**Quality.** After every visit the model asks the caller's :class:`DefectModel` for
the chance that this visit (station, machine) made the unit defective; a good unit
becomes defective with that chance, and the station where its defect arose is kept. At
an inspection station a defective unit is detected with chance ``inspection``; a
detected unit is reworked with chance ``rework_p`` and otherwise scrapped. A reworked
unit is good again and goes back into the buffer of the station where its defect
arose, to be processed again from there on (and may become defective again). Rework
goes into that buffer whatever its capacity, as onto a rework rack beside it: the
feedback loop can then never deadlock the line. Inspection finds no false rejects.

**Statistics** count from ``warmup_s`` to ``horizon_s``: counters are read at both
times and subtracted, time integrals (busy, down and blocked time per machine, units in
the line) are cut exactly at both times. Units that started before the warm-up and
finish after it are counted as completed; they make the books balance::

    started + wip_start == completed + scrapped + wip_end

The KPIs (:class:`Result`): ``throughput_per_h`` is completed units an hour;
``yield_ = good_out / (completed + scrapped)`` counts escaped defectives as not good
(what the line *reports*, ``completed / (completed + scrapped)``, is higher by the
escapes); ``fpy = first_pass / (completed + scrapped)`` also fails units that were
reworked; ``ppm = escaped / completed * 1e6``; ``wip_mean`` is the time-average number of
units in the line; ``mean_time_in_system_s`` is over completed units (scrapped units are
left out); per station, ``utilisation`` is processing time over ``machines x span``
(``down`` and ``blocked`` likewise; what is left is starved time).

**Common random numbers.** Every stochastic element has its own stream: the cycle
times, time to failure, repair times, defect draws, the generator handed to the
defect model, detection and rework draws of each machine, and the inter-arrival times.
Each stream's generator is seeded from ``np.random.SeedSequence(seed, spawn_key=(purpose,
station, machine))``, station and machine by a stable hash of their names. Every stream
is consumed once per visit whatever the outcome (a unit already defective still uses
its defect draw), so the n-th unit a machine processes sees the same draws in every
scenario run with the same seed. Two scenarios that differ in one station therefore
share every other draw, and their difference measures the change rather than the noise.
Renaming a station or machine gives it new streams. :func:`replicate` derives
replication r's seed from (seed, r), so scenarios replicated with the same seed are
paired replication by replication.

**Speed.** Each visit is one SimPy :class:`~simpy.events.Timeout` whose callback moves
the unit on; starting an idle machine downstream or releasing a blocked one upstream is
a plain call at the same instant, not another event. Random numbers are drawn 1,024 at a
time per stream. A visit thus costs one scheduled event, the same as
:func:`bare_event_loop`, which is the floor a benchmark compares against.

>>> line = LineSpec(
...     stations=(
...         StationSpec("cut", ("c1",), Lognormal(50.0)),
...         StationSpec("weld", ("w1",), Lognormal(60.0), buffer=5),
...     )
... )
>>> result = simulate(line, NoDefects(), horizon_s=8 * 3600.0, seed=1)
>>> round(result.throughput_per_h)
60
"""

from __future__ import annotations

import hashlib
import math
import numbers
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import simpy
from simpy.events import Timeout

from sqems.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]

BLOCK = 1024
"""Random numbers drawn at a time per stream."""

_PURPOSES = {
    "cycle": 1,
    "failure": 2,
    "repair": 3,
    "defect": 4,
    "quality": 5,
    "detect": 6,
    "rework": 7,
    "arrival": 8,
    "replication": 9,
}

# --------------------------------------------------------------------------- inputs


def _number(value: object) -> float:
    """``value`` as a float, NaN when it is not a real number (so every check fails)."""
    return float(value) if isinstance(value, numbers.Real) else math.nan


def _check_positive(what: str, value: float) -> None:
    if not (math.isfinite(_number(value)) and value > 0):
        raise ValidationFailed(f"{what} must be a positive finite number, got {value!r}")


def _check_probability(what: str, value: float) -> None:
    if not 0.0 <= _number(value) <= 1.0:
        raise ValidationFailed(f"{what} must be a probability between 0 and 1, got {value!r}")


@runtime_checkable
class Distribution(Protocol):
    """A distribution of durations in seconds: its mean and a block of draws."""

    @property
    def mean(self) -> float: ...

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray: ...


@dataclass(frozen=True, slots=True)
class Lognormal:
    """Lognormal durations: ``median_s`` and the standard deviation of the log,
    ``sigma``; ``sigma`` 0 gives the median every time (deterministic).

    >>> round(Lognormal(10.0, 0.5).mean, 4)
    11.3315
    """

    median_s: float
    sigma: float = 0.0

    def __post_init__(self) -> None:
        _check_positive("a lognormal median_s", self.median_s)
        if not (math.isfinite(_number(self.sigma))):
            raise ValidationFailed(f"a lognormal sigma must be finite, got {self.sigma!r}")
        if self.sigma < 0:
            raise ValidationFailed(f"a lognormal sigma cannot be negative, got {self.sigma}")

    @classmethod
    def with_mean(cls, mean_s: float, sigma: float = 0.0) -> Lognormal:
        """The lognormal with mean ``mean_s`` and log-sd ``sigma``."""
        _check_positive("a lognormal mean_s", mean_s)
        return cls(mean_s * math.exp(-0.5 * sigma * sigma), sigma)

    @property
    def mean(self) -> float:
        return self.median_s * math.exp(0.5 * self.sigma * self.sigma)

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        if self.sigma == 0:
            return np.full(size, float(self.median_s))
        drawn: FloatArray = rng.lognormal(math.log(self.median_s), self.sigma, size)
        return drawn


@dataclass(frozen=True, slots=True)
class Exponential:
    """Exponential durations with mean ``mean_s`` (Poisson arrivals, memoryless service)."""

    mean_s: float

    def __post_init__(self) -> None:
        _check_positive("an exponential mean_s", self.mean_s)

    @property
    def mean(self) -> float:
        return float(self.mean_s)

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        drawn: FloatArray = rng.exponential(self.mean_s, size)
        return drawn


class DefectModel(Protocol):
    """The chance that one visit makes a unit defective.

    Called once per visit, after processing, at every station (inspection stations
    too), with the visit's station and machine and that machine's own generator: draw
    process-parameter actuals from it, not from a generator of your own, to keep common
    random numbers. A result outside [0, 1] stops the run with ValidationFailed."""

    def probability(self, station: str, machine: str, rng: np.random.Generator) -> float: ...


@dataclass(frozen=True, slots=True)
class NoDefects:
    """Every unit stays good (and the model skips the quality step)."""

    def probability(self, station: str, machine: str, rng: np.random.Generator) -> float:
        return 0.0


@dataclass(frozen=True, slots=True)
class ConstantDefects:
    """A fixed defect probability per station (stations not named make none)."""

    rates: Mapping[str, float]

    def __post_init__(self) -> None:
        for station, p in self.rates.items():
            _check_probability(f"the defect rate of station {station!r}", p)

    def probability(self, station: str, machine: str, rng: np.random.Generator) -> float:
        return self.rates.get(station, 0.0)


@dataclass(frozen=True, slots=True)
class StationSpec:
    """One station: parallel machines sharing the buffer in front of it.

    ``cycle`` is one distribution for every machine or a mapping from each machine to
    its own. ``mtbf_s`` (mean processing time between failures) and ``mttr_s`` (mean
    repair time) are both given or both None (no breakdowns). ``buffer`` is the number
    of places in front of the station (None: unbounded). ``inspection`` is the chance
    of detecting a defective unit (None: no inspection here); ``rework_p`` the chance a
    detected unit is reworked rather than scrapped.
    """

    name: str
    machines: tuple[str, ...]
    cycle: Distribution | Mapping[str, Distribution]
    mtbf_s: float | None = None
    mttr_s: float | None = None
    buffer: int | None = None
    inspection: float | None = None
    rework_p: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValidationFailed(f"a station needs a non-empty name, got {self.name!r}")
        where = f"station {self.name!r}"
        if isinstance(self.machines, str):
            raise ValidationFailed(
                f"{where}: machines must be a tuple of names, got the string "
                f"{self.machines!r}; write ({self.machines!r},)"
            )
        machines = tuple(self.machines)
        object.__setattr__(self, "machines", machines)
        if not machines:
            raise ValidationFailed(f"{where} has no machines; give it at least one")
        if not all(isinstance(m, str) and m for m in machines):
            raise ValidationFailed(f"{where}: machine names must be non-empty strings")
        if len(set(machines)) != len(machines):
            raise ValidationFailed(f"{where} names a machine twice: {list(machines)}")
        if isinstance(self.cycle, Mapping):
            missing = sorted(set(machines) - set(self.cycle))
            extra = sorted(set(self.cycle) - set(machines))
            if missing or extra:
                raise ValidationFailed(
                    f"{where}: cycle times must be given for exactly its machines; "
                    f"missing {missing}, not machines of the station {extra}"
                )
            for machine, dist in self.cycle.items():
                _check_distribution(f"{where}, machine {machine!r}", dist)
        else:
            _check_distribution(where, self.cycle)
        if (self.mtbf_s is None) != (self.mttr_s is None):
            raise ValidationFailed(
                f"{where}: give both mtbf_s and mttr_s for breakdowns, or neither "
                f"(got mtbf_s={self.mtbf_s}, mttr_s={self.mttr_s})"
            )
        if self.mtbf_s is not None and self.mttr_s is not None:
            _check_positive(f"{where}: mtbf_s", self.mtbf_s)
            _check_positive(f"{where}: mttr_s", self.mttr_s)
        if self.buffer is not None and (
            isinstance(self.buffer, bool) or not isinstance(self.buffer, int) or self.buffer < 0
        ):
            raise ValidationFailed(
                f"{where}: buffer must be a whole number of places >= 0 or None for "
                f"unbounded, got {self.buffer!r}"
            )
        if self.inspection is not None:
            _check_probability(f"{where}: inspection (detection chance)", self.inspection)
        _check_probability(f"{where}: rework_p", self.rework_p)

    def cycle_of(self, machine: str) -> Distribution:
        """The cycle-time distribution of ``machine``."""
        if isinstance(self.cycle, Mapping):
            return self.cycle[machine]
        return self.cycle

    @property
    def availability(self) -> float:
        """``MTBF / (MTBF + MTTR)``, 1 without breakdowns."""
        if self.mtbf_s is None or self.mttr_s is None:
            return 1.0
        return self.mtbf_s / (self.mtbf_s + self.mttr_s)

    @property
    def rate_per_s(self) -> float:
        """Units a second the station makes when never starved or blocked."""
        return self.availability * sum(1.0 / self.cycle_of(m).mean for m in self.machines)


def _check_distribution(where: str, dist: object) -> None:
    if not isinstance(dist, Distribution):
        raise ValidationFailed(
            f"{where}: a cycle time must be a distribution such as Lognormal or "
            f"Exponential, got {dist!r}"
        )
    mean = dist.mean
    if not (math.isfinite(mean) and mean > 0):
        raise ValidationFailed(f"{where}: a cycle time needs a positive mean, got {mean}")


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A serial line. ``arrival`` None: the first station is never starved.
    ``unit_cost`` is what a started unit costs (material and processing),
    ``scrap_cost`` what scrapping one costs on top, ``rework_cost`` one rework."""

    stations: tuple[StationSpec, ...]
    arrival: Distribution | None = None
    unit_cost: float = 0.0
    scrap_cost: float = 0.0
    rework_cost: float = 0.0

    def __post_init__(self) -> None:
        stations = tuple(self.stations)
        object.__setattr__(self, "stations", stations)
        if not stations:
            raise ValidationFailed("a line needs at least one station; the line is empty")
        for station in stations:
            if not isinstance(station, StationSpec):
                raise ValidationFailed(f"a line's stations must be StationSpec, got {station!r}")
        names = [s.name for s in stations]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValidationFailed(f"station names must be unique on a line; repeated: {twice}")
        if self.arrival is not None:
            _check_distribution("the line's arrival", self.arrival)
        for what in ("unit_cost", "scrap_cost", "rework_cost"):
            value = getattr(self, what)
            if not (math.isfinite(_number(value)) and value >= 0):
                raise ValidationFailed(f"{what} must be a finite number >= 0, got {value!r}")

    def station(self, name: str) -> StationSpec:
        """The station called ``name``."""
        for station in self.stations:
            if station.name == name:
                return station
        raise ValidationFailed(
            f"no station {name!r} on the line; it has {[s.name for s in self.stations]}"
        )

    def with_station(self, station: StationSpec) -> LineSpec:
        """This line with the station of the same name replaced by ``station``."""
        self.station(station.name)
        swapped = tuple(station if s.name == station.name else s for s in self.stations)
        return LineSpec(swapped, self.arrival, self.unit_cost, self.scrap_cost, self.rework_cost)


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Result:
    """One run's KPIs over ``[warmup_s, horizon_s]`` (definitions in the module
    docstring). Ratios with nothing to divide by are NaN.

    Counts: ``started`` units entered the line; ``completed`` left the last station,
    ``good_out`` of them good and ``escaped`` defective (undetected), ``first_pass``
    good and never reworked; ``scrapped`` were detected and scrapped; ``reworked``
    counts reworks (a unit reworked twice counts twice); ``wip_start`` and ``wip_end``
    are the units in the line at the warm-up and at the horizon.
    """

    seed: int
    horizon_s: float
    warmup_s: float
    started: int
    completed: int
    good_out: int
    scrapped: int
    reworked: int
    escaped: int
    first_pass: int
    wip_start: int
    wip_end: int
    throughput_per_h: float
    yield_: float
    fpy: float
    ppm: float
    wip_mean: float
    mean_time_in_system_s: float
    scrap_cost: float
    """Scrapped units times the line's scrap cost plus reworks times its rework cost."""
    cost_per_good: float
    """``(started x unit_cost + scrap_cost) / good_out``."""
    utilisation: Mapping[str, float] = field(default_factory=dict)
    blocked: Mapping[str, float] = field(default_factory=dict)
    down: Mapping[str, float] = field(default_factory=dict)
    defects: Mapping[str, int] = field(default_factory=dict)
    """Defects that arose at each station (on units that were good until then)."""

    def kpis(self) -> dict[str, float]:
        """Every KPI as one flat mapping; per-station values as ``"utilisation.<station>"``."""
        flat: dict[str, float] = {}
        for f in fields(self):
            if f.name in ("seed", "horizon_s", "warmup_s"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                for station, v in value.items():
                    flat[f"{f.name}.{station}"] = float(v)
            else:
                flat[f.name] = float(value)
        return flat


@dataclass(frozen=True, slots=True)
class Interval:
    """A KPI across replications: mean and 94% equal-tailed interval."""

    mean: float
    low: float
    high: float


# --------------------------------------------------------------------------- streams


def _name_key(name: str) -> int:
    """A stable 64-bit key for a name (Python's ``hash`` changes between runs)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _generator(seed: int, purpose: str, station: str, machine: str) -> np.random.Generator:
    key = (_PURPOSES[purpose], _name_key(station), _name_key(machine))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _blocks(draw: Callable[[], FloatArray], what: str) -> Iterator[float]:
    while True:
        block = draw()
        if not (np.isfinite(block).all() and (block >= 0).all()):
            raise ValidationFailed(f"{what} drew a negative or non-finite duration")
        yield from block.tolist()


def _durations(dist: Distribution, rng: np.random.Generator, what: str) -> Callable[[], float]:
    """The next duration from ``dist``, drawn a block at a time."""
    return _blocks(lambda: dist.sample(rng, BLOCK), what).__next__


def _uniforms(rng: np.random.Generator) -> Callable[[], float]:
    """The next uniform on [0, 1), drawn a block at a time."""

    def block() -> Iterator[float]:
        while True:
            yield from rng.random(BLOCK).tolist()

    return block().__next__


# --------------------------------------------------------------------------- the model


class _Unit:
    __slots__ = ("born", "origin", "reworked")

    def __init__(self, born: float) -> None:
        self.born = born
        self.origin = -1
        """Index of the station where the unit's defect arose; -1 while it is good."""
        self.reworked = False


class _Station:
    __slots__ = (
        "blocked",
        "defects",
        "feed",
        "idle",
        "index",
        "inspection",
        "machines",
        "name",
        "next",
        "queue",
        "rework_p",
        "room",
    )

    def __init__(self, index: int, spec: StationSpec, feed: bool) -> None:
        self.index = index
        self.name = spec.name
        self.queue: deque[_Unit] = deque()
        self.room: float = math.inf if spec.buffer is None else spec.buffer
        self.idle: deque[_Machine] = deque()
        self.blocked: deque[_Holder] = deque()
        """Machines upstream (or the source) holding a unit for this station, oldest first."""
        self.feed = feed
        """The line's infinite source: an idle machine here starts a new unit."""
        self.inspection = spec.inspection
        self.rework_p = spec.rework_p
        self.defects = 0
        self.next: _Station | None = None
        self.machines: list[_Machine] = []


class _Holder:
    """What can hold a unit blocked in front of a station: a machine or the source."""

    __slots__ = ("blocked", "blocked_since", "run", "unit")

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.unit: _Unit | None = None
        self.blocked = 0.0
        self.blocked_since = -1.0

    def release(self) -> _Holder | None:
        """Go on after the held unit was taken; return a holder this frees in turn."""
        raise NotImplementedError

    def unblock(self, now: float) -> None:
        """The held unit was taken at ``now``."""
        self.blocked += now - self.blocked_since
        self.blocked_since = -1.0
        self.unit = None

    def forward(self, unit: _Unit, nxt: _Station, now: float) -> _Holder | None:
        """Hand ``unit`` to ``nxt``, or hold it there; the holder to release, if any."""
        if nxt.idle:
            nxt.idle.popleft().start(unit, now)
        elif len(nxt.queue) < nxt.room:
            nxt.queue.append(unit)
        else:
            self.unit = unit
            self.blocked_since = now
            nxt.blocked.append(self)
            return None
        return self


class _Machine(_Holder):
    __slots__ = (
        "busy",
        "busy_end",
        "chance",
        "cycle",
        "defect_draw",
        "detect_draw",
        "down",
        "down_end",
        "env",
        "name",
        "on_done",
        "quality_rng",
        "remaining",
        "repair",
        "rework_draw",
        "station",
        "to_failure",
        "uptime",
    )

    def __init__(
        self, run: _Run, station: _Station, spec: StationSpec, name: str, seed: int
    ) -> None:
        super().__init__(run)
        self.env = run.env
        self.station = station
        self.name = name

        def rng(purpose: str) -> np.random.Generator:
            return _generator(seed, purpose, spec.name, name)

        where = f"station {spec.name!r}, machine {name!r}"
        self.cycle = _durations(spec.cycle_of(name), rng("cycle"), f"the cycle time of {where}")
        self.uptime: Callable[[], float] | None = None
        self.repair: Callable[[], float] | None = None
        self.to_failure = math.inf
        if spec.mtbf_s is not None and spec.mttr_s is not None:
            self.uptime = _durations(Exponential(spec.mtbf_s), rng("failure"), where)
            self.repair = _durations(Exponential(spec.mttr_s), rng("repair"), where)
            self.to_failure = self.uptime()
        self.remaining = 0.0
        self.chance: Callable[[str, str, np.random.Generator], float] | None = None
        if not isinstance(run.defects, NoDefects):
            self.chance = run.defects.probability
        self.quality_rng = rng("quality")
        self.defect_draw = _uniforms(rng("defect"))
        self.detect_draw = _uniforms(rng("detect"))
        self.rework_draw = _uniforms(rng("rework"))
        self.busy = 0.0
        self.busy_end = 0.0
        self.down = 0.0
        self.down_end = 0.0
        self.on_done: Callable[[simpy.Event], None] = self._done

    def start(self, unit: _Unit, now: float) -> None:
        """Begin processing ``unit`` at ``now``."""
        self.unit = unit
        self._process(self.cycle(), now)

    def _process(self, work: float, now: float) -> None:
        if self.to_failure < work:
            # the machine fails after to_failure seconds of this cycle
            self.remaining = work - self.to_failure
            self.busy += self.to_failure
            self.busy_end = now + self.to_failure
            Timeout(self.env, self.to_failure).callbacks.append(self._failed)
            return
        self.to_failure -= work
        self.busy += work
        self.busy_end = now + work
        Timeout(self.env, work).callbacks.append(self.on_done)

    def _failed(self, _event: simpy.Event) -> None:
        assert self.repair is not None
        repair = self.repair()
        self.down += repair
        self.down_end = self.env.now + repair
        Timeout(self.env, repair).callbacks.append(self._repaired)

    def _repaired(self, _event: simpy.Event) -> None:
        assert self.uptime is not None
        self.to_failure = self.uptime()
        self._process(self.remaining, self.env.now)

    def _done(self, _event: simpy.Event) -> None:
        unit = self.unit
        assert unit is not None
        self.unit = None
        station = self.station
        run = self.run
        now = self.env.now
        if self.chance is not None:
            p = self.chance(station.name, self.name, self.quality_rng)
            if not 0.0 <= p <= 1.0:
                raise ValidationFailed(
                    f"the defect model gave station {station.name!r}, machine "
                    f"{self.name!r} the probability {p!r}; it must be between 0 and 1"
                )
            if self.defect_draw() < p and unit.origin < 0:
                unit.origin = station.index
                station.defects += 1
        if station.inspection is not None:
            found = self.detect_draw() < station.inspection
            saved = self.rework_draw() < station.rework_p
            if found and unit.origin >= 0:
                if saved:
                    run.rework(unit, now)
                else:
                    run.leave(now)
                    run.scrapped += 1
                run.release_from(self)
                return
        nxt = station.next
        if nxt is None:
            run.finish(unit, now)
            run.release_from(self)
        elif self.forward(unit, nxt, now) is not None:
            run.release_from(self)

    def release(self) -> _Holder | None:
        station = self.station
        queue = station.queue
        freed: _Holder | None = None
        now = self.env.now
        if queue:
            unit = queue.popleft()
            if station.blocked and len(queue) < station.room:
                freed = station.blocked.popleft()
                assert freed.unit is not None
                queue.append(freed.unit)
                freed.unblock(now)
        elif station.blocked:
            freed = station.blocked.popleft()
            assert freed.unit is not None
            unit = freed.unit
            freed.unblock(now)
        elif station.feed:
            unit = self.run.enter(now)
        else:
            station.idle.append(self)
            return None
        self.start(unit, now)
        return freed


class _Source(_Holder):
    """The line's arrivals: one unit every inter-arrival time into the first buffer."""

    __slots__ = ("env", "first", "gap")

    def __init__(self, run: _Run, arrival: Distribution, first: _Station, seed: int) -> None:
        super().__init__(run)
        self.env = run.env
        self.first = first
        self.gap = _durations(arrival, _generator(seed, "arrival", "", ""), "the arrivals")

    def release(self) -> _Holder | None:
        Timeout(self.env, self.gap()).callbacks.append(self._arrived)
        return None

    def _arrived(self, _event: simpy.Event) -> None:
        now = self.env.now
        unit = self.run.enter(now)
        if self.forward(unit, self.first, now) is not None:
            self.release()


@dataclass(frozen=True, slots=True)
class _Tally:
    """Every accumulator read at one time, so two readings subtract to a window."""

    counts: dict[str, int]
    wip: int
    area: float
    time_in_system: float
    busy: dict[str, float]
    down: dict[str, float]
    blocked: dict[str, float]
    defects: dict[str, int]


_COUNTS = ("started", "completed", "good_out", "scrapped", "reworked", "escaped", "first_pass")


class _Run:
    def __init__(self, line: LineSpec, defects: DefectModel, seed: int) -> None:
        self.env = simpy.Environment()
        self.defects = defects
        self.started = 0
        self.completed = 0
        self.good_out = 0
        self.scrapped = 0
        self.reworked = 0
        self.escaped = 0
        self.first_pass = 0
        self.time_in_system = 0.0
        self.wip = 0
        self.area = 0.0
        self.last = 0.0
        self.stations = [
            _Station(i, spec, feed=i == 0 and line.arrival is None)
            for i, spec in enumerate(line.stations)
        ]
        for before, after in zip(self.stations, self.stations[1:], strict=False):
            before.next = after
        for station, spec in zip(self.stations, line.stations, strict=True):
            station.machines = [_Machine(self, station, spec, m, seed) for m in spec.machines]
        self.source = (
            None if line.arrival is None else _Source(self, line.arrival, self.stations[0], seed)
        )
        Timeout(self.env, 0.0).callbacks.append(self._begin)

    def _begin(self, _event: simpy.Event) -> None:
        for station in self.stations:
            for machine in station.machines:
                self.release_from(machine)
        if self.source is not None:
            self.source.release()

    def release_from(self, holder: _Holder | None) -> None:
        """Let ``holder`` go on, then every holder upstream its going on frees."""
        while holder is not None:
            holder = holder.release()

    def enter(self, now: float) -> _Unit:
        self.area += self.wip * (now - self.last)
        self.last = now
        self.wip += 1
        self.started += 1
        return _Unit(now)

    def leave(self, now: float) -> None:
        self.area += self.wip * (now - self.last)
        self.last = now
        self.wip -= 1

    def finish(self, unit: _Unit, now: float) -> None:
        self.leave(now)
        self.completed += 1
        self.time_in_system += now - unit.born
        if unit.origin >= 0:
            self.escaped += 1
        else:
            self.good_out += 1
            if not unit.reworked:
                self.first_pass += 1

    def rework(self, unit: _Unit, now: float) -> None:
        target = self.stations[unit.origin]
        unit.origin = -1
        unit.reworked = True
        self.reworked += 1
        if target.idle:
            target.idle.popleft().start(unit, now)
        else:
            target.queue.append(unit)

    def tally(self, at: float) -> _Tally:
        busy: dict[str, float] = {}
        down: dict[str, float] = {}
        blocked: dict[str, float] = {}
        for station in self.stations:
            busy[station.name] = sum(m.busy - max(0.0, m.busy_end - at) for m in station.machines)
            down[station.name] = sum(m.down - max(0.0, m.down_end - at) for m in station.machines)
            blocked[station.name] = sum(
                m.blocked + (at - m.blocked_since if m.blocked_since >= 0 else 0.0)
                for m in station.machines
            )
        return _Tally(
            counts={name: getattr(self, name) for name in _COUNTS},
            wip=self.wip,
            area=self.area + self.wip * (at - self.last),
            time_in_system=self.time_in_system,
            busy=busy,
            down=down,
            blocked=blocked,
            defects={s.name: s.defects for s in self.stations},
        )


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _check_run(horizon_s: float, seed: int, warmup_s: float) -> None:
    _check_positive("horizon_s", horizon_s)
    if not (math.isfinite(_number(warmup_s)) and warmup_s >= 0):
        raise ValidationFailed(f"warmup_s must be a finite number >= 0, got {warmup_s!r}")
    if warmup_s >= horizon_s:
        raise ValidationFailed(
            f"warmup_s ({warmup_s}) must be shorter than horizon_s ({horizon_s}): "
            "statistics count from the end of the warm-up to the horizon"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValidationFailed(f"seed must be a whole number >= 0, got {seed!r}")


def simulate(
    line: LineSpec,
    defects: DefectModel,
    horizon_s: float,
    seed: int,
    warmup_s: float = 0.0,
) -> Result:
    """Run ``line`` from empty for ``horizon_s`` simulated seconds and return the KPIs
    of ``[warmup_s, horizon_s]``. The same ``seed`` gives the same result, and shares
    its random numbers with any other line run with it (see the module docstring)."""
    if not isinstance(line, LineSpec):
        raise ValidationFailed(f"simulate needs a LineSpec, got {type(line).__name__}")
    _check_run(horizon_s, seed, warmup_s)
    seed = int(seed)
    run = _Run(line, defects, seed)
    before = run.tally(0.0)
    if warmup_s > 0:
        run.env.run(until=warmup_s)
        before = run.tally(warmup_s)
    run.env.run(until=horizon_s)
    after = run.tally(horizon_s)

    span = horizon_s - warmup_s
    n = {name: after.counts[name] - before.counts[name] for name in _COUNTS}
    ended = n["completed"] + n["scrapped"]
    scrap_cost = n["scrapped"] * line.scrap_cost + n["reworked"] * line.rework_cost
    width = {s.name: len(s.machines) * span for s in line.stations}
    return Result(
        seed=seed,
        horizon_s=float(horizon_s),
        warmup_s=float(warmup_s),
        started=n["started"],
        completed=n["completed"],
        good_out=n["good_out"],
        scrapped=n["scrapped"],
        reworked=n["reworked"],
        escaped=n["escaped"],
        first_pass=n["first_pass"],
        wip_start=before.wip,
        wip_end=after.wip,
        throughput_per_h=n["completed"] / span * 3600.0,
        yield_=_ratio(n["good_out"], ended),
        fpy=_ratio(n["first_pass"], ended),
        ppm=_ratio(n["escaped"] * 1e6, n["completed"]),
        wip_mean=(after.area - before.area) / span,
        mean_time_in_system_s=_ratio(after.time_in_system - before.time_in_system, n["completed"]),
        scrap_cost=scrap_cost,
        cost_per_good=_ratio(n["started"] * line.unit_cost + scrap_cost, n["good_out"]),
        utilisation={k: (after.busy[k] - before.busy[k]) / w for k, w in width.items()},
        blocked={k: (after.blocked[k] - before.blocked[k]) / w for k, w in width.items()},
        down={k: (after.down[k] - before.down[k]) / w for k, w in width.items()},
        defects={k: after.defects[k] - before.defects[k] for k in width},
    )


def replication_seed(seed: int, replication: int) -> int:
    """The seed :func:`replicate` gives replication ``replication`` of ``seed``."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_PURPOSES["replication"], replication))
    return int(sequence.generate_state(1, np.uint64)[0])


def replicate(
    line: LineSpec,
    defects_for: Callable[[int], DefectModel],
    horizon_s: float,
    replications: int,
    seed: int,
    warmup_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> list[Result]:
    """``replications`` independent runs of ``line``; run r uses ``defects_for(r)``
    (one posterior draw each, say) and the seed :func:`replication_seed` derives from
    ``(seed, r)``. ``progress(done, total)`` is called after every run."""
    if isinstance(replications, bool) or not isinstance(replications, int) or replications < 1:
        raise ValidationFailed(f"replications must be a whole number >= 1, got {replications!r}")
    _check_run(horizon_s, seed, warmup_s)
    results: list[Result] = []
    for r in range(replications):
        seeded = replication_seed(int(seed), r)
        results.append(simulate(line, defects_for(r), horizon_s, seeded, warmup_s))
        if progress is not None:
            progress(r + 1, replications)
    return results


def summarise(results: Sequence[Result]) -> dict[str, Interval]:
    """Every KPI of :meth:`Result.kpis` across replications: its mean and the 94%
    equal-tailed interval (the 3% and 97% quantiles). Replications where a KPI is NaN
    (nothing to divide by) are left out of that KPI."""
    if not results:
        raise ValidationFailed("summarise needs at least one result; run replicate first")
    per_run = [r.kpis() for r in results]
    summary: dict[str, Interval] = {}
    for key in per_run[0]:
        values = np.array([k.get(key, math.nan) for k in per_run], dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            summary[key] = Interval(math.nan, math.nan, math.nan)
            continue
        low, high = np.quantile(values, [0.03, 0.97])
        summary[key] = Interval(float(values.mean()), float(low), float(high))
    return summary


# --------------------------------------------------------------------------- benchmark floor


def bare_event_loop(entities: int, stations: int, seed: int) -> float:
    """Wall seconds SimPy takes to move ``entities`` units through ``stations``
    single-server stations with no bookkeeping: each station is a chain of timeouts
    (exponential, drawn beforehand), one per unit, each scheduling the next from its
    callback. That is ``entities x stations`` scheduled events with one pending per
    station, what :func:`simulate` needs at least for the same units: its floor."""
    for what, value in (("entities", entities), ("stations", stations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationFailed(f"{what} must be a whole number >= 1, got {value!r}")
    env = simpy.Environment()
    rng = np.random.default_rng(seed)

    def server(times: list[float]) -> Callable[[simpy.Event], None]:
        pending = iter(times)

        def next_unit(_event: simpy.Event) -> None:
            for delay in pending:
                Timeout(env, delay).callbacks.append(next_unit)
                return

        return next_unit

    for _ in range(stations):
        Timeout(env, 0.0).callbacks.append(server(rng.exponential(1.0, entities).tolist()))
    began = time.perf_counter()
    env.run()
    return time.perf_counter() - began
