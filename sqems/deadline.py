"""A deadline for the work of one request, which long loops check as they go.

The API sets it for each request (``within(seconds)``); the worker threads a request
starts inherit it with the rest of the request's context variables (anyio copies them
into the thread), and a loop that can run long — a traversal, an RDF export, an IFC
tessellation — calls :func:`check` at each step. When the request has run out of time,
``check`` raises :class:`~sqems.errors.TimedOut` and the thread stops there, instead of
burning a core for an answer nobody waits for. Outside a request (the CLI, a benchmark)
there is no deadline and ``check`` costs one context-variable read.

>>> import time
>>> with within(0.01):
...     time.sleep(0.02)
...     check()
Traceback (most recent call last):
  ...
sqems.errors.TimedOut: the work ran past its deadline and was stopped
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqems.errors import TimedOut

_deadline: ContextVar[float | None] = ContextVar("sqems_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Work inside must end within ``seconds`` (or by the deadline already set, if it
    is sooner)."""
    ends = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(ends if outer is None else min(outer, ends))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the deadline (negative once past), or None without one."""
    ends = _deadline.get()
    return None if ends is None else ends - time.monotonic()


def check() -> None:
    """Raise :class:`TimedOut` if the current deadline has passed."""
    ends = _deadline.get()
    if ends is not None and time.monotonic() > ends:
        raise TimedOut("the work ran past its deadline and was stopped")
