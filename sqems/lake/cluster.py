"""A Spark standalone cluster on this machine: one master and N workers on loopback.

The master and the workers are started from the installed pyspark's own launcher
(``bin/spark-class`` with ``org.apache.spark.deploy.master.Master`` and
``...worker.Worker``), each as its own process group, on free ports, with small daemon
heaps and a work, scratch and log directory per worker under ``home``. :meth:`start`
returns once the master's JSON status lists every worker ``ALIVE``; :meth:`stop` ends
the whole tree (workers, their executors, the executors' Python workers, the master)
and leaves no JVM behind, also when starting failed half way. :meth:`kill_worker` takes
a worker away as a lost machine would (SIGKILL to its process group: the worker and the
executors it launched), which a running job must survive.

Lake jobs use it with ``--master`` set to :attr:`SparkStandalone.master_url`; on a
real cluster the same URL names the cluster's master instead. Layout of ``home``::

    conf/                         an empty SPARK_CONF_DIR (nothing from elsewhere)
    master.log                    the master's output
    worker-0/work/                executors' working directories (one per application)
    worker-0/local/               shuffle and spill files
    worker-0/worker.log           the worker's output

>>> cluster = SparkStandalone(Path("/tmp/sqems-spark"), workers=2)
>>> cluster.workers
2
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sqems.errors import ConfigError, SqemsError
from sqems.graph_model.neo4j_server import find_java, free_port

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
JAVA_MIN = 17
"""Spark 4 runs on Java 17 or newer."""


_QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


class ClusterUnavailable(SqemsError):
    """The standalone cluster could not be started or does not answer."""

    code = "CLUSTER_UNAVAILABLE"


@dataclass(slots=True)
class _Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ui_port: int

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(slots=True)
class SparkStandalone:
    """A master and ``workers`` workers (``worker_cores`` cores and ``worker_memory``
    for executors each) on loopback, with their files under ``home``."""

    home: Path
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    daemon_memory: str = "256m"
    """Heap of the master and worker daemons themselves (they only coordinate)."""
    _master: _Daemon | None = field(default=None, init=False, repr=False)
    _master_port: int = field(default=0, init=False, repr=False)
    _workers: list[_Daemon] = field(default_factory=list, init=False, repr=False)
    _groups: set[int] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.home = self.home.expanduser().absolute()
        if self.workers < 1:
            raise ConfigError(f"a cluster needs at least one worker, not {self.workers}")

    # --- addresses ---------------------------------------------------------------------

    @property
    def master_url(self) -> str:
        """``spark://127.0.0.1:PORT``, what ``--master`` takes."""
        if self._master is None:
            raise ClusterUnavailable("the standalone cluster is not started")
        return f"spark://{HOST}:{self._master_port}"

    @property
    def master_ui(self) -> str:
        if self._master is None:
            raise ClusterUnavailable("the standalone cluster is not started")
        return f"http://{HOST}:{self._master.ui_port}"

    # --- start / stop ------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> SparkStandalone:
        """Start the master, then the workers; return once all are registered ``ALIVE``.
        On any failure everything started is stopped and :class:`ClusterUnavailable`
        says why, with the last lines of the failing daemon's log."""
        if self._master is not None:
            return self
        spark_class = _spark_class()
        java = _java_home()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "conf").mkdir(exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            self._master_port = free_port()
            master_ui = free_port()
            self._master = self._launch(
                "master",
                [spark_class, MASTER_CLASS, "--host", HOST, "--port", str(self._master_port),
                 "--webui-port", str(master_ui)],
                self.home / "master.log", master_ui, java, {},
            )  # fmt: skip
            # the workers' JVMs take longer to start than the master needs to become
            # leader once it listens: start them as soon as it listens
            self._wait(
                deadline,
                lambda: _listens(self._master_port),
                [self._master],
                f"the master to listen on port {self._master_port}",
            )
            for i in range(self.workers):
                folder = self.home / f"worker-{i}"
                for sub in ("work", "local"):
                    (folder / sub).mkdir(parents=True, exist_ok=True)
                ui = free_port()
                self._workers.append(
                    self._launch(
                        f"worker-{i}",
                        [
                            spark_class,
                            WORKER_CLASS,
                            "--host",
                            HOST,
                            "--webui-port",
                            str(ui),
                            "--cores",
                            str(self.worker_cores),
                            "--memory",
                            self.worker_memory,
                            "--work-dir",
                            str(folder / "work"),
                            self.master_url,
                        ],
                        folder / "worker.log",
                        ui,
                        java,
                        {"SPARK_LOCAL_DIRS": str(folder / "local")},
                    )
                )
            self._wait(
                deadline,
                lambda: len(self.alive_workers()) == self.workers,
                [self._master, *self._workers],
                f"{self.workers} workers to register with the master",
            )
        except BaseException:
            self.stop()
            raise
        log.info(
            "Spark standalone cluster started",
            extra={"master": self.master_url, "workers": self.workers, "home": str(self.home)},
        )
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers (and so their executors), then the master: SIGTERM to each
        process group, SIGKILL for what is still there after ``timeout``; then any
        process still working under ``home`` (an executor's Python worker) is killed."""
        for daemon in [*reversed(self._workers), *([self._master] if self._master else [])]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.2)
        left = self.processes()
        if left:
            log.warning("Spark daemons did not stop in time; killing them", extra={"pids": left})
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + 10
            while time.monotonic() < end and self.processes():
                time.sleep(0.1)
        for daemon in [*self._workers, *([self._master] if self._master else [])]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.process.wait(timeout=1)
        self._workers.clear()
        self._master = None

    def __enter__(self) -> SparkStandalone:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- state -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The master's JSON status (workers, applications), as its web UI serves it."""
        try:
            with urllib.request.urlopen(f"{self.master_ui}/json/", timeout=2) as answer:
                found = json.loads(answer.read())
        except (OSError, ValueError) as exc:
            raise ClusterUnavailable(
                f"the Spark master at {self.master_ui} does not answer: {exc}"
            ) from exc
        if not isinstance(found, dict):
            raise ClusterUnavailable(f"the Spark master answered {found!r:.80}")
        return found

    def alive_workers(self) -> list[int]:
        """The indexes of this cluster's workers the master holds ``ALIVE``."""
        ports = {f":{w.ui_port}": i for i, w in enumerate(self._workers)}
        alive = []
        for worker in self.status().get("workers", []):
            address = str(worker.get("webuiaddress", ""))
            port = re.search(r":\d+$", address)
            if worker.get("state") == "ALIVE" and port and port.group(0) in ports:
                alive.append(ports[port.group(0)])
        return sorted(alive)

    def kill_worker(self, index: int) -> None:
        """Take worker ``index`` away as a lost machine: SIGKILL to the worker and the
        executors it runs (its process group); the master and the jobs find out."""
        try:
            daemon = self._workers[index]
        except IndexError:
            raise ConfigError(f"the cluster has workers 0-{len(self._workers) - 1}") from None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.process.wait(timeout=10)
        log.info("worker killed", extra={"worker": index, "pid": daemon.pid})

    def processes(self) -> list[int]:
        """Every live process of this cluster: the daemons' process groups (workers,
        their executors) and anything running with a directory under ``home`` (the
        executors' Python workers, which form their own group)."""
        found = []
        home = str(self.home)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                state, pgid = fields[0], int(fields[2])
                if state == "Z":
                    continue
                cwd = os.readlink(entry / "cwd") if pgid not in self._groups else ""
            except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
                continue
            if pgid in self._groups or cwd == home or cwd.startswith(home + os.sep):
                found.append(pid)
        return found

    # --- internals ---------------------------------------------------------------------

    def _launch(
        self,
        name: str,
        command: list[str],
        log_file: Path,
        ui_port: int,
        java_home: str | None,
        extra: dict[str, str],
    ) -> _Daemon:
        env = {
            **os.environ,
            "SPARK_HOME": str(Path(command[0]).parent.parent),
            "SPARK_CONF_DIR": str(self.home / "conf"),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            # the daemons only coordinate: the quick compiler and a serial collector
            # start them in less CPU time (the launcher JVM of spark-class too)
            "SPARK_DAEMON_JAVA_OPTS": _QUICK_JVM,
            "SPARK_LAUNCHER_OPTS": _QUICK_JVM,
            # a fixed port (6066) nobody here uses: off
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
            **extra,
        }
        if java_home is not None:
            env["JAVA_HOME"] = java_home
        with log_file.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=log_file.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._groups.add(process.pid)
        log.info("started Spark daemon", extra={"daemon": name, "pid": process.pid})
        return _Daemon(name, process, log_file, ui_port)

    def _wait(self, deadline: float, check: Any, daemons: list[_Daemon], what: str) -> None:
        while True:
            for daemon in daemons:
                if daemon.process.poll() is not None:
                    raise ClusterUnavailable(
                        f"the Spark {daemon.name} exited with code {daemon.process.returncode} "
                        f"while starting; last lines of {daemon.log}:\n{_tail(daemon.log)}"
                    )
            try:
                if check():
                    return
            except ClusterUnavailable:
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {d.log}:\n{_tail(d.log, 8)}" for d in daemons)
                raise ClusterUnavailable(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.3)


def _spark_class() -> str:
    """The installed pyspark's ``bin/spark-class``."""
    try:
        import pyspark  # noqa: PLC0415 - optional: the lake extra
    except ImportError as exc:
        raise ConfigError(
            "Spark is not installed: install SQEMS with the lake extra (pip install "
            "'sqems[lake]'), which brings pyspark and Spark's launch scripts"
        ) from exc
    script = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not script.is_file():
        raise ConfigError(f"pyspark at {script.parent.parent} has no bin/spark-class")
    return str(script)


def _java_home() -> str | None:
    """JAVA_HOME for the daemons (None: java from PATH); :class:`ConfigError` when
    there is no Java 17 or newer."""
    find_java("Spark 4", lambda major: major >= JAVA_MIN, f"Java {JAVA_MIN} or newer")
    return os.environ.get("JAVA_HOME")


def _listens(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
