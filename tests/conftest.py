"""Shared fixtures: every graph backend behind one ``store`` fixture.

A backend is registered once in :data:`BACKENDS`; every test that asks for ``store``
(or ``make_store``) then runs against each of them. A backend that needs a server (Neo4j)
adds an entry whose ``create`` connects to the session's server and empties it, and whose
``reopen`` connects again without emptying it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.neo4j_server import Neo4jServer, free_port
from sqems.graph_model.neo4j_store import Neo4jGraphStore

# CI machines are shared and noisy: judge examples by their answers, not their speed
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
NEO4J_LIB = Path(os.environ.get("SQEMS_NEO4J_LIB", REPO / ".neo4j" / "lib"))
"""Neo4j's jars, fetched once and kept between runs (git-ignored)."""


def _samples() -> Path:
    """Real-world sample data made outside the project (never committed): where
    ``SQEMS_SAMPLES_DIR`` points, else beside the checkout, else beside the local
    checkout this one was cloned from."""
    if os.environ.get("SQEMS_SAMPLES_DIR"):
        return Path(os.environ["SQEMS_SAMPLES_DIR"])
    beside = REPO.parent / "shared" / "samples"
    if beside.is_dir():
        return beside
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if origin and Path(origin).is_dir():
        cloned_from = Path(origin).resolve().parent / "shared" / "samples"
        if cloned_from.is_dir():
            return cloned_from
    return beside


SAMPLES = _samples()
IFC_SAMPLES = sorted((SAMPLES / "ifc").glob("*.ifc")) if (SAMPLES / "ifc").is_dir() else []
"""The real IFC models among them."""


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Neo4jServer]:
    """A real Neo4j Community server on a free port with an empty database, for the
    whole session. If it cannot be installed or started, every test that needs it fails
    with the reason (missing Java or Maven, the server's own log)."""
    server = Neo4jServer(
        tmp_path_factory.mktemp("neo4j-home"),
        lib=NEO4J_LIB,
        port=free_port(),
        heap="768m",
        pagecache="256m",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True, slots=True)
class Backend:
    """How the tests open one kind of store.

    ``create(workdir, request)`` returns a new, empty store whose state (if any) lives
    under the empty directory ``workdir`` (``request`` gives access to session fixtures
    such as a server). ``reopen(workdir, request)`` opens that same store again after it
    was closed; it is None for a backend that forgets everything on close.
    """

    create: Callable[[Path, pytest.FixtureRequest], GraphStore]
    reopen: Callable[[Path, pytest.FixtureRequest], GraphStore] | None = None


def _embedded_file(workdir: Path, _request: pytest.FixtureRequest) -> GraphStore:
    return EmbeddedGraphStore(workdir / "graph.db")


def _neo4j_connect(_workdir: Path, request: pytest.FixtureRequest) -> Neo4jGraphStore:
    server: Neo4jServer = request.getfixturevalue("neo4j_server")
    return Neo4jGraphStore(server.uri, password=server.password(), batch_size=500)


def _neo4j_empty(workdir: Path, request: pytest.FixtureRequest) -> GraphStore:
    store = _neo4j_connect(workdir, request)
    store.wipe()
    return store


BACKENDS: dict[str, Backend] = {
    "embedded-memory": Backend(create=lambda _workdir, _request: EmbeddedGraphStore(None)),
    "embedded-file": Backend(create=_embedded_file, reopen=_embedded_file),
    "neo4j": Backend(create=_neo4j_empty, reopen=_neo4j_connect),
}
"""Every backend the conformance suite runs against, by name."""

PERSISTENT_BACKENDS = [name for name, backend in BACKENDS.items() if backend.reopen is not None]


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """A new, empty store of each registered backend, closed after the test."""
    opened = BACKENDS[request.param].create(tmp_path, request)
    try:
        yield opened
    finally:
        opened.close()


StoreFactory = Callable[[], AbstractContextManager[GraphStore]]


@pytest.fixture(params=list(BACKENDS))
def make_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> StoreFactory:
    """A factory of new, empty stores of each backend, for property tests that need a
    fresh store per example: ``with make_store() as store: ...`` closes it on exit."""
    backend = BACKENDS[request.param]

    @contextmanager
    def fresh() -> Iterator[GraphStore]:
        opened = backend.create(tmp_path_factory.mktemp(request.param), request)
        try:
            yield opened
        finally:
            opened.close()

    return fresh


@dataclass(frozen=True, slots=True)
class Reopenable:
    """A persistent backend and the directory its store lives in."""

    backend: Backend
    workdir: Path
    request: pytest.FixtureRequest

    def create(self) -> GraphStore:
        return self.backend.create(self.workdir, self.request)

    def reopen(self) -> GraphStore:
        assert self.backend.reopen is not None
        return self.backend.reopen(self.workdir, self.request)


@pytest.fixture(params=PERSISTENT_BACKENDS)
def reopenable(request: pytest.FixtureRequest, tmp_path: Path) -> Reopenable:
    """Each backend that keeps its data across close and reopen; the test closes what
    it opens."""
    return Reopenable(BACKENDS[request.param], tmp_path, request)


@dataclass
class Broker:
    """A real Mosquitto broker on a free loopback port, with persistence on disk.

    :meth:`stop` fails the test if the broker did not save its session store: a broker
    that comes back without its sessions would make "nothing lost across a restart"
    untestable (started as root, Mosquitto drops to its own user unless told not to,
    and then cannot write into pytest's private temporary directories)."""

    host: str
    port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.config.with_name("mosquitto.log")

    @property
    def store(self) -> Path:
        return self.config.with_name("mosquitto.db")

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("the MQTT tests need Mosquitto: apt-get install mosquitto")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.log.read_text(errors="replace")[-2000:]
                pytest.fail(f"mosquitto exited with {self.process.returncode}: {err}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on {self.host}:{self.port} within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            before = self.store.stat().st_mtime_ns if self.store.exists() else None
            self.process.terminate()
            self.process.wait(timeout=15)
            if not self.store.exists() or self.store.stat().st_mtime_ns == before:
                err = self.log.read_text(errors="replace")[-2000:]
                pytest.fail(f"mosquitto did not save its session store: {err}")
        self.process = None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto broker for the session; tests may stop and start it again."""
    home = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    config = home / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {home}/\n"
        "max_queued_messages 1000000\n" + ("user root\n" if os.geteuid() == 0 else "")
        # as root, stay root: the store is in a directory only root may enter
    )
    broker = Broker("127.0.0.1", port, config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


ARTIFACTS = Path(os.environ.get("SQEMS_TEST_ARTIFACTS", REPO / "test-artifacts"))
"""Where browser tests keep their screenshots (git-ignored)."""


def chromium_path() -> str | None:
    """Debian's Chromium: the binary itself, not its wrapper script."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):  # fmt: skip
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Chromium (the Debian package) driven by Playwright; WebGL runs on
    SwiftShader, Chromium's software renderer, so no GPU is needed."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - browser tests only

    executable = chromium_path()
    if executable is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (./dev test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--ignore-gpu-blocklist"],
        )  # fmt: skip
        try:
            yield launched
        finally:
            launched.close()
