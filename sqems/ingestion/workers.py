"""Several ingestion workers: their status files, their totals, and the launcher.

Each worker of ``sqems ingest --workers N`` (or one started alone with ``--partition
k/N``, under systemd or on another machine) is a process of its own: its own
interpreter, so the workers use as many cores as there are workers, and one that dies
leaves the others running. A worker writes its counters to
``<data dir>/workers/<k>of<N>/status.json`` every half second (atomically: a reader
never sees half a file) from its ingestion thread between batches, when the counters
are consistent, so the counted invariant holds in every status file and in their sum:

    received = accepted + quarantined + duplicates + spooled

Counters are kept in memory, so a worker that starts again adds its predecessor's last
report to ``before``: a status file counts the partition since it was first started.
(A worker that was killed outright had up to half a second of work its last report does
not show; what it stored and had not acknowledged the broker sends again and the
restarted worker counts as duplicates.)

:class:`Launcher` starts the N workers as ``sqems ingest --partition k/N`` and starts a
worker that exits again after a backoff (1 s doubling to 30 s), logged and said on the
console; :func:`totals` adds the status files up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqems.ingestion.edge_records import EdgeCounters, EdgeState
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.partition import Partition
from sqems.ingestion.pipeline import Counters

log = logging.getLogger(__name__)

RESTART_S = (1.0, 30.0)
"""The launcher's backoff before starting a worker that exited again: first, at most."""
STEADY_S = 60.0
"""A worker that ran this long before it exited is started again after the first
backoff, not a longer one."""


def _counters(data: dict[str, Any] | None) -> Counters:
    names = {f.name for f in fields(Counters)}
    return Counters(**{k: int(v) for k, v in (data or {}).items() if k in names})


@dataclass(slots=True)
class WorkerStatus:
    """What one worker last reported."""

    partition: str
    pid: int
    started_at: str
    updated_at: str
    connected: bool
    healthy: bool
    reason: str | None
    restarts: int
    passed: int
    """Messages of other partitions it acknowledged unread (this run)."""
    broker_dropped: int | None
    counters: Counters
    """Since this run of the worker started."""
    before: Counters = field(default_factory=Counters)
    """What earlier runs of this partition's worker reported last."""
    edges: list[EdgeState] = field(default_factory=list)
    """The edge agents this worker heard from (this run), their latest status."""
    edge_counters: EdgeCounters = field(default_factory=EdgeCounters)
    """What it made of their judgements (this run)."""

    @property
    def total(self) -> Counters:
        """The partition's counts since its worker was first started."""
        total = Counters()
        total.add(self.before)
        total.add(self.counters)
        return total

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> WorkerStatus:
        data = dict(data)
        data["counters"] = _counters(data.get("counters"))
        data["before"] = _counters(data.get("before"))
        data["edges"] = [EdgeState.of(e) for e in data.get("edges") or []]
        known = {f.name for f in fields(EdgeCounters)}
        found = data.get("edge_counters") or {}
        data["edge_counters"] = EdgeCounters(**{k: int(v) for k, v in found.items() if k in known})
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class StatusFile:
    """The status file of one worker: reports ``bridge``'s state when called (the
    :class:`~sqems.ingestion.mqtt.MqttIngestion`'s ``on_progress``)."""

    def __init__(self, path: Path, partition: Partition) -> None:
        self.path = path
        self.partition = partition
        self.started_at = datetime.now(UTC).isoformat()
        self.before = Counters()
        previous = read_status(path)
        if previous is not None:
            self.before = previous.total
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, bridge: MqttIngestion) -> None:
        ingestor = bridge.ingestor
        status = WorkerStatus(
            partition=str(self.partition),
            pid=os.getpid(),
            started_at=self.started_at,
            updated_at=datetime.now(UTC).isoformat(),
            connected=bridge.connected.is_set(),
            healthy=ingestor.health.healthy,
            reason=ingestor.health.reason,
            restarts=ingestor.health.restarts,
            passed=bridge.passed,
            broker_dropped=bridge.broker_dropped,
            counters=Counters(**asdict(ingestor.counters)),
            before=self.before,
            edges=bridge.edge_records.states(),
            edge_counters=EdgeCounters(**asdict(bridge.edge_records.counters)),
        )
        scratch = self.path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(status.as_dict()))
        os.replace(scratch, self.path)


def read_status(path: Path) -> WorkerStatus | None:
    """The status a worker last wrote at ``path``; None when there is none (or it cannot
    be read: a status is a report, never a reason to stop)."""
    try:
        return WorkerStatus.of(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        if path.exists():
            log.warning("cannot read worker status %s: %s", path, exc)
        return None


def statuses(status_path: Callable[[Partition], Path], count: int) -> list[WorkerStatus | None]:
    """The status of each of ``count`` workers (None for one that never reported)."""
    return [read_status(status_path(Partition(k, count))) for k in range(count)]


def totals(found: Sequence[WorkerStatus | None]) -> Counters:
    """The counts of all the workers together."""
    total = Counters()
    for status in found:
        if status is not None:
            total.add(status.total)
    return total


@dataclass(slots=True)
class _Child:
    partition: Partition
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    due: float = 0.0
    """When to start it (again)."""
    delay: float = RESTART_S[0]
    exits: int = 0


class Launcher:
    """Starts ``count`` workers (``command(partition)`` is each one's argv) and keeps
    them running until :meth:`stop`; ``say`` tells the console what happens."""

    def __init__(
        self,
        count: int,
        command: Callable[[Partition], list[str]],
        *,
        say: Callable[[str], None] = lambda _m: None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.children = [_Child(Partition(k, count)) for k in range(count)]
        self.command = command
        self.say = say
        self.env = env

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        # a session of its own: Ctrl-C reaches the launcher, which stops each worker
        # in turn, instead of interrupting them all mid-batch at once
        child.process = subprocess.Popen(
            self.command(child.partition), env=self.env, start_new_session=True
        )
        child.started = time.monotonic()

    def watch(self) -> None:
        """Start again each worker that exited (after its backoff); call it often."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is None:
                if now >= child.due:
                    self._spawn(child)
                continue
            code = process.poll()
            if code is None:
                continue
            child.exits += 1
            if child.exits == 1 or now - child.started >= STEADY_S:
                child.delay = RESTART_S[0]
            else:  # it keeps exiting: wait longer each time
                child.delay = min(child.delay * 2, RESTART_S[1])
            child.process, child.due = None, now + child.delay
            log.error(
                "ingestion worker %s exited with %s; starting it again in %.0f s",
                child.partition,
                code,
                child.delay,
                extra={"partition": str(child.partition), "code": code},
            )
            self.say(
                f"worker {child.partition} (pid {process.pid}) exited with {code}; "
                f"starting it again in {child.delay:.0f} s"
            )

    def pids(self) -> list[int | None]:
        return [c.process.pid if c.process else None for c in self.children]

    def stop(self, timeout: float = 30.0) -> list[int | None]:
        """Ask each worker to stop (SIGINT: it finishes its batch and disconnects), kill
        one that has not stopped after ``timeout``; the exit codes."""
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        codes: list[int | None] = []
        for child in self.children:
            if child.process is None:
                codes.append(None)
                continue
            try:
                codes.append(child.process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("ingestion worker %s did not stop; killing it", child.partition)
                child.process.kill()
                codes.append(child.process.wait())
        return codes


def worker_command(partition: Partition, seconds: float | None = None) -> list[str]:
    """``sqems ingest --partition k/N`` with this interpreter (the same installation)."""
    argv = [
        sys.executable,
        "-c",
        "import sys; from sqems.cli import main; sys.argv[0] = 'sqems'; main()",
        "ingest",
        "--partition",
        str(partition),
    ]
    if seconds is not None:
        argv += ["--seconds", str(seconds)]
    return argv
