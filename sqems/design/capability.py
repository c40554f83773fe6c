"""Can the plant's machines hold a planned product's new tolerances? The evidence from
the runs they made.

For a routing step and each parameter the plan sets limits on, every machine that ran
the step has a history: the actuals of its runs (``ProcessRun RECORDED Parameter``
``value``, runs ``FOR_STEP`` the step and ``ON`` the machine), in the order they ran.
Against the plan's limits — not the released products' — each machine gets:

- **Cpk with its interval** from :func:`sqems.analysis.capability.capability` (the judged
  index: Cpk from the within spread, the ISO 22514-2 percentile Ppk when the values are
  not normal), a two-sided 90 % interval whose lower end is the one-sided 95 % bound;
  ``capable`` when that bound reaches 1.33, not capable when even the interval's upper
  end stays below 1.33 (however few the runs: the interval allows for them), else None
  with fewer than :data:`MIN_RUNS` runs;
- the **expected out-of-spec fraction** of runs with a 90 % interval, from the sampling
  uncertainty of the mean and spread of a normal model (:func:`out_of_spec_draws`):
  mu ~ N(x̄, s/√n), sigma = s·√((n - 1)/χ²ₙ₋₁), fraction = Φ((LSL - mu)/sigma) +
  Φ((mu - USL)/sigma);
- the limits it **holds**: the narrowest limits, centred on the plan's target (else the
  middle of its limits), for which the lower bound of its Cpk reaches 1.33 — with
  Bissell's bound, the Cpk estimate c* solving c* - z₀.₉₅·√(1/(9n) + c*²/(2·nu)) = 1.33,
  then half-width |x̄ - centre| + 3·sigma·c* (sigma and nu those of the judged index; the
  overall s with n - 1 when it is the percentile Ppk); one-sided plans get one limit;
- the **alternatives**: the other machines that ran the step, with the same figures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

from sqems.analysis.capability import capability, cpk_interval
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import Machine, Parameter, ProcessRun, ProcessStep
from sqems.graph_model.store import Direction, GraphStore

__all__ = [
    "CAPABLE_AT",
    "CONFIDENCE",
    "MIN_RUNS",
    "MachineCapability",
    "ParameterLike",
    "RoutingStepLike",
    "StepCapability",
    "machine_capability",
    "out_of_spec_draws",
    "step_capability",
    "step_history",
]

IN, OUT = Direction.IN, Direction.OUT

CAPABLE_AT = 1.33
"""The Cpk lower bound a machine must reach to be called capable."""
CONFIDENCE = 0.90
"""Two-sided confidence of the Cpk interval: its lower end is the one-sided 95 % bound."""
MIN_RUNS = 20
"""Fewer runs than this leave ``capable`` and ``holds`` undecided (None)."""
DRAWS = 4000
HOLDS_MAX_CPK = 100.0
"""The largest Cpk estimate searched for the limits a machine holds; a machine whose
runs are too few to prove 1.33 even at this estimate holds no limits (None)."""


class ParameterLike(Protocol):
    """What is read of a planned parameter (``sqems.design.plan.PlannedParameter`` fits)."""

    @property
    def parameter(self) -> str: ...
    @property
    def lsl(self) -> float | None: ...
    @property
    def usl(self) -> float | None: ...
    @property
    def target(self) -> float | None: ...


class RoutingStepLike(Protocol):
    """What is read of a routing step (``sqems.design.plan.RoutingStep`` fits)."""

    @property
    def step(self) -> str: ...
    @property
    def machine(self) -> str | None: ...
    @property
    def machine_kind(self) -> str | None: ...
    @property
    def parameters(self) -> Sequence[ParameterLike]: ...


@dataclass(frozen=True, slots=True)
class MachineCapability:
    step: str
    machine: str
    parameter: str
    runs: int
    cpk: float | None
    cpk_low: float | None
    cpk_high: float | None
    out_of_spec: float | None
    """Expected fraction of runs outside the plan's limits (posterior mean)."""
    out_of_spec_low: float | None
    out_of_spec_high: float | None
    capable: bool | None
    holds: tuple[float | None, float | None] | None
    """The narrowest (lsl, usl) it holds with the Cpk lower bound at 1.33; a side the plan
    leaves open stays None."""
    mean: float | None
    sigma: float | None
    """The runs' sample standard deviation (overall)."""
    lsl: float | None
    usl: float | None
    target: float | None
    method: str | None = None
    """``normal`` or ``percentile``: which index Cpk is (see the module doc)."""


@dataclass(frozen=True, slots=True)
class StepCapability:
    step: str
    parameter: str
    planned: MachineCapability | list[MachineCapability]
    """The planned machine, or every machine of the planned kind (of the step's, when
    the plan names neither)."""
    alternatives: list[MachineCapability]
    """The other machines that ran the step, the most capable first."""


def step_history(store: GraphStore, step: str) -> dict[tuple[str, str], list[float]]:
    """The actuals of every run of ``step``: by (machine, parameter), in run order."""
    runs = [e.src for e in store.edges([step], {"FOR_STEP": IN})]
    nodes = store.get_many(runs)
    machine_of = {e.src: e.dst for e in store.edges(runs, {"ON": OUT})}
    started = {
        uid: n.started_at.timestamp() for uid, n in nodes.items() if isinstance(n, ProcessRun)
    }
    values: dict[tuple[str, str], list[tuple[float, str, float]]] = defaultdict(list)
    for e in store.edges(runs, {"RECORDED": OUT}):
        if e.src in machine_of and e.src in started:
            values[(machine_of[e.src], e.dst)].append(
                (started[e.src], e.src, float(e.props["value"]))
            )
    return {key: [v for _, _, v in sorted(found)] for key, found in values.items()}


def _normal_out(
    mu: npt.NDArray[np.float64] | float,
    sigma: npt.NDArray[np.float64] | float,
    lsl: float | None,
    usl: float | None,
) -> npt.NDArray[np.float64]:
    out = np.zeros(np.broadcast(mu, sigma).shape)
    if lsl is not None:
        out = out + stats.norm.cdf((lsl - np.asarray(mu)) / sigma)
    if usl is not None:
        out = out + stats.norm.sf((usl - np.asarray(mu)) / sigma)
    return np.asarray(out, dtype=np.float64)


def _fraction_draws(
    mean: float, sigma: float, runs: int, lsl: float | None, usl: float | None,
    n: int, rng: np.random.Generator,
) -> npt.NDArray[np.float64]:  # fmt: skip
    dof = runs - 1
    sig = sigma * np.sqrt(dof / rng.chisquare(dof, n))
    mu = rng.normal(mean, sigma / math.sqrt(runs), n)
    return _normal_out(mu, sig, lsl, usl)


def out_of_spec_draws(
    cap: MachineCapability, n: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """``n`` draws of the fraction of runs outside the plan's limits, carrying the
    uncertainty of the mean and spread the machine's runs were estimated from; for the
    review's Monte Carlo. A machine without at least two runs has no evidence to draw
    from: :class:`ValidationFailed`."""
    if cap.mean is None or cap.sigma is None or cap.runs < 2:
        raise ValidationFailed(
            f"{cap.machine} at {cap.step} has {cap.runs} run(s) of {cap.parameter}: no "
            "out-of-spec fraction to draw; plan a capability study on it first"
        )
    if cap.sigma == 0.0:
        return np.full(n, float(_normal_out(cap.mean, 1e-300, cap.lsl, cap.usl)))
    return _fraction_draws(cap.mean, cap.sigma, cap.runs, cap.lsl, cap.usl, n, rng)


def _centre(lsl: float | None, usl: float | None, target: float | None) -> float | None:
    if target is not None:
        return target
    if lsl is not None and usl is not None:
        return (lsl + usl) / 2.0
    return None


def _holds(
    mean: float, sigma: float, dof: float, runs: int,
    lsl: float | None, usl: float | None, target: float | None,
) -> tuple[float | None, float | None] | None:  # fmt: skip
    """The narrowest limits whose Cpk (x̄ and ``sigma``) has its lower bound at
    :data:`CAPABLE_AT`: symmetric about the centre for two limits, the nearest single
    limit for one; None when no limits are proven (zero spread, too few runs)."""
    if sigma <= 0.0:
        return None

    def bound(cpk: float) -> float:
        return cpk_interval(cpk, runs, dof, CONFIDENCE).lower

    # the Cpk estimate whose lower bound is CAPABLE_AT; the bound rises with the estimate
    # unless the spread has too few degrees of freedom for any estimate to prove 1.33
    if bound(HOLDS_MAX_CPK) < CAPABLE_AT:
        return None
    needed = optimize.brentq(lambda c: bound(c) - CAPABLE_AT, CAPABLE_AT, HOLDS_MAX_CPK)
    reach = 3.0 * sigma * needed
    centre = _centre(lsl, usl, target)
    if lsl is not None and usl is not None and centre is not None:
        half = abs(mean - centre) + reach
        return (centre - half, centre + half)
    if usl is not None:
        return (None, mean + reach)
    if lsl is not None:
        return (mean - reach, None)
    return None


def _capable(low: float, high: float, enough: bool) -> bool | None:
    """Capable when the Cpk's lower bound reaches :data:`CAPABLE_AT`; not capable when
    even its upper end stays below (however few the runs: the interval allows for
    them); undecided otherwise with fewer than :data:`MIN_RUNS` runs."""
    if high < CAPABLE_AT:
        return False
    if not enough:
        return None
    return low >= CAPABLE_AT


def machine_capability(
    step: str, machine: str, values: Sequence[float], limits: ParameterLike,
    *, seed: int = 0,
) -> MachineCapability:  # fmt: skip
    """One machine's figures for one planned parameter from its runs' ``values`` (in run
    order)."""
    lsl, usl, target = limits.lsl, limits.usl, limits.target
    if lsl is None and usl is None:
        raise ValidationFailed(
            f"{limits.parameter} at {step} has no limit in the plan: give lsl, usl or both"
        )
    runs = len(values)
    if runs < 2:
        return MachineCapability(
            step=step, machine=machine, parameter=limits.parameter, runs=runs,
            cpk=None, cpk_low=None, cpk_high=None,
            out_of_spec=None, out_of_spec_low=None, out_of_spec_high=None,
            capable=None, holds=None, mean=None, sigma=None, lsl=lsl, usl=usl, target=target,
        )  # fmt: skip
    x = np.asarray(values, dtype=np.float64)
    mean, s = float(x.mean()), float(x.std(ddof=1)) if np.ptp(x) > 0 else 0.0
    cap = capability(x, lsl, usl, target, confidence=CONFIDENCE)
    judged = cap.judged
    if s > 0.0:
        fractions = _fraction_draws(mean, s, runs, lsl, usl, DRAWS, np.random.default_rng(seed))
        tail = (1.0 - CONFIDENCE) / 2.0
        low, high = np.quantile(fractions, [tail, 1.0 - tail])
        out = (float(fractions.mean()), float(low), float(high))
    else:
        single = float(_normal_out(mean, 1e-300, lsl, usl))
        out = (single, single, single)
    enough = runs >= MIN_RUNS
    if cap.method == "percentile" or cap.cpk is None:
        sigma_for_holds, dof = s, runs - 1.0
    else:
        sigma_for_holds, dof = cap.sigma_within, cap.dof_within
    return MachineCapability(
        step=step,
        machine=machine,
        parameter=limits.parameter,
        runs=runs,
        cpk=None if judged is None else judged.value,
        cpk_low=None if judged is None else judged.lower,
        cpk_high=None if judged is None else judged.upper,
        out_of_spec=out[0],
        out_of_spec_low=out[1],
        out_of_spec_high=out[2],
        capable=_capable(judged.lower, judged.upper, enough) if judged is not None else None,
        holds=_holds(mean, sigma_for_holds, dof, runs, lsl, usl, target),
        mean=mean,
        sigma=s,
        lsl=lsl,
        usl=usl,
        target=target,
        method=cap.method,
    )


def step_capability(
    store: GraphStore,
    step: RoutingStepLike,
    *,
    history: dict[tuple[str, str], list[float]] | None = None,
    seed: int = 0,
) -> list[StepCapability]:
    """Each planned parameter of ``step``: the planned machine's (or kind's) capability
    against the plan's limits and the other machines' that ran the step."""
    found = store.get_many([step.step] + ([step.machine] if step.machine else []))
    if not isinstance(found.get(step.step), ProcessStep):
        raise NotFound(f"process step {step.step} is not in the graph: check the routing")
    if step.machine is not None and not isinstance(found.get(step.machine), Machine):
        raise NotFound(f"machine {step.machine} is not in the graph: check the routing")
    history = step_history(store, step.step) if history is None else history
    machines = sorted({m for m, _ in history} | ({step.machine} if step.machine else set()))
    nodes = store.get_many(machines)
    kinds = {uid: n.kind for uid, n in nodes.items() if isinstance(n, Machine)}
    parameters = store.get_many([p.parameter for p in step.parameters])
    out = []
    for planned in step.parameters:
        if not isinstance(parameters.get(planned.parameter), Parameter):
            raise NotFound(
                f"parameter {planned.parameter} is not in the graph: check the routing of "
                f"{step.step}"
            )
        caps = {
            m: machine_capability(
                step.step, m, history.get((m, planned.parameter), []), planned, seed=seed
            )
            for m in machines
        }
        if step.machine is not None:
            chosen = [step.machine]
        elif step.machine_kind is not None:
            chosen = [m for m in machines if kinds.get(m) == step.machine_kind]
        else:
            chosen = list(machines)
        others = sorted(
            (c for m, c in caps.items() if m not in chosen and c.runs > 0),
            key=lambda c: (-(c.cpk_low if c.cpk_low is not None else -math.inf), c.machine),
        )
        mine: MachineCapability | list[MachineCapability] = (
            caps[step.machine] if step.machine is not None else [caps[m] for m in chosen]
        )
        out.append(StepCapability(step.step, planned.parameter, mine, others))
    return out
