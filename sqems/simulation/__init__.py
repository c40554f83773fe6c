"""Discrete-event simulation of production lines: stations, buffers, breakdowns,
defects, inspection and rework, with common random numbers across scenarios.

The model is data in, data out (:mod:`sqems.simulation.line`); the digital twin builds
the :class:`LineSpec` and the :class:`DefectModel` from the plant graph.
"""

from sqems.simulation.line import (
    ConstantDefects,
    DefectModel,
    Distribution,
    Exponential,
    Interval,
    LineSpec,
    Lognormal,
    NoDefects,
    Result,
    StationSpec,
    bare_event_loop,
    replicate,
    simulate,
    summarise,
)

__all__ = [
    "ConstantDefects",
    "DefectModel",
    "Distribution",
    "Exponential",
    "Interval",
    "LineSpec",
    "Lognormal",
    "NoDefects",
    "Result",
    "StationSpec",
    "bare_event_loop",
    "replicate",
    "simulate",
    "summarise",
]
