"""A local Neo4j Community server for development, tests and benchmarks.

``sqems neo4j install`` fetches Neo4j Community's jars from Maven Central with Maven;
``start`` writes a small ``neo4j.conf`` (Bolt on loopback, auth on with a generated
password kept beside the data, heap and page cache sized for a small box), starts the
server with Java 17 and waits until Bolt answers; ``stop`` ends it cleanly; ``status``
says what is there. Production points ``SQEMS_GRAPH_URI`` at any Neo4j 5 server or
cluster instead.

Layout of a server home (default ``$SQEMS_DATA_DIR/neo4j``)::

    lib/           the jars (shared between homes with SQEMS_NEO4J_LIB)
    conf/neo4j.conf
    data/ logs/ run/ plugins/ import/
    password       the generated password of user neo4j (mode 0600)
    console.log    the JVM's own output
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqems.errors import ConfigError, GraphUnavailable

log = logging.getLogger(__name__)

NEO4J_VERSION = "5.26.30"
"""The Neo4j Community release the local server runs (any 5.26.x works)."""
MAIN_CLASS = "org.neo4j.server.CommunityEntryPoint"
ADMIN_CLASS = "org.neo4j.cli.AdminTool"

# Artifacts to resolve. The server module alone lacks the entry point, which ships in
# the org.neo4j:neo4j module; Maven brings the rest (~120 MB) as their dependencies.
_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.sqems.local</groupId>
  <artifactId>neo4j-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.neo4j.app</groupId>
      <artifactId>neo4j-server</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.neo4j</groupId>
      <artifactId>neo4j</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

# JVM options a Neo4j 5 server needs on Java 17 (module access for its off-heap and
# network code) and wants (G1, no explicit GC from libraries).
_JVM_OPTIONS = [
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
]


@dataclass(frozen=True, slots=True)
class ServerStatus:
    installed: bool
    running: bool
    pid: int | None
    bolt: bool
    uri: str
    home: Path
    lib: Path

    def describe(self) -> str:
        if self.running:
            answer = "answering" if self.bolt else "not answering yet"
            return f"Neo4j {NEO4J_VERSION} runs as pid {self.pid}, Bolt {self.uri} {answer}"
        if not self.installed:
            return f"Neo4j {NEO4J_VERSION} is not installed in {self.lib}"
        return f"Neo4j {NEO4J_VERSION} is installed under {self.home} and stopped"


@dataclass(slots=True)
class Neo4jServer:
    """One local server: its home directory, jar directory and ports."""

    home: Path
    lib: Path | None = None
    port: int = 7687
    heap: str = "1g"
    pagecache: str = "512m"

    def __post_init__(self) -> None:
        self.home = self.home.expanduser().absolute()
        self.lib = (self.lib or self.home / "lib").expanduser().absolute()

    # --- paths -----------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.home / "password"

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / "sqems-neo4j.pid"

    @property
    def console_log(self) -> Path:
        return self.home / "console.log"

    @property
    def _marker(self) -> Path:
        assert self.lib is not None
        return self.lib / f".complete-{NEO4J_VERSION}"

    def installed(self) -> bool:
        return self._marker.is_file()

    def password(self) -> str:
        """The password of user ``neo4j``, generated on first use."""
        if not self.password_file.is_file():
            self.home.mkdir(parents=True, exist_ok=True)
            # a leading letter: neo4j-admin would read a password starting with "-" as an
            # option (token_urlsafe gives one in 64 times)
            self.password_file.write_text("s" + secrets.token_urlsafe(18) + "\n")
            self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    # --- install ---------------------------------------------------------------------

    def install(self) -> None:
        """Resolve Neo4j Community and its dependencies into ``lib`` with Maven."""
        if self.installed():
            return
        java_major()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ConfigError(
                "Maven (mvn) is needed to fetch Neo4j's jars from Maven Central; install it "
                "(Debian: apt-get install maven) or point SQEMS_GRAPH_URI at a running server"
            )
        assert self.lib is not None
        self.lib.mkdir(parents=True, exist_ok=True)
        pom = self.lib / "pom.xml"
        pom.write_text(_POM.format(version=NEO4J_VERSION))
        log.info("fetching Neo4j jars", extra={"version": NEO4J_VERSION, "lib": str(self.lib)})
        done = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={self.lib}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise GraphUnavailable(
                f"Maven could not fetch Neo4j {NEO4J_VERSION} into {self.lib}:\n{tail}"
            )
        self._marker.write_text(NEO4J_VERSION + "\n")

    # --- start / stop ----------------------------------------------------------------

    def status(self) -> ServerStatus:
        pid = self._pid()
        running = pid is not None
        assert self.lib is not None
        return ServerStatus(
            self.installed(),
            running,
            pid,
            running and _port_open(self.port),
            self.uri,
            self.home,
            self.lib,
        )

    def start(self, timeout: float = 180.0) -> None:
        """Start the server (installing it first if needed) and wait until Bolt answers."""
        if self._pid() is not None:
            self._wait_for_bolt(timeout)
            return
        if _port_open(self.port):
            raise GraphUnavailable(
                f"port {self.port} is already in use by another program; choose another "
                "with SQEMS_NEO4J_PORT"
            )
        self.install()
        java = java_major()
        for sub in ("conf", "data", "logs", "run", "plugins", "import"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self._write_conf()
        if (
            not (self.home / "data" / "dbms" / "auth.ini").exists()
            and not (self.home / "data" / "databases" / "system").exists()
        ):
            self._set_initial_password(java)
        command = [
            java.binary,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            *_JVM_OPTIONS,
            "-cp",
            f"{self.lib}/*",
            MAIN_CLASS,
            f"--home-dir={self.home}",
            f"--config-dir={self.home / 'conf'}",
        ]
        with self.console_log.open("ab") as console:
            proc = subprocess.Popen(
                command,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("started Neo4j", extra={"pid": proc.pid, "uri": self.uri})
        try:
            self._wait_for_bolt(timeout, proc)
        except GraphUnavailable:
            self.stop()
            raise

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the server to shut down (SIGTERM); kill it if it has not gone in time."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            log.warning("Neo4j did not stop in time; killing it", extra={"pid": pid})
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    # --- internals -------------------------------------------------------------------

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) and _is_neo4j(pid) else None

    def _write_conf(self) -> None:
        h = self.home
        settings = {
            "server.directories.data": h / "data",
            "server.directories.logs": h / "logs",
            "server.directories.run": h / "run",
            "server.directories.plugins": h / "plugins",
            "server.directories.import": h / "import",
            "server.default_listen_address": "127.0.0.1",
            "server.bolt.enabled": "true",
            "server.bolt.listen_address": f"127.0.0.1:{self.port}",
            "server.http.enabled": "false",
            "server.https.enabled": "false",
            "dbms.security.auth_enabled": "true",
            "server.memory.heap.initial_size": self.heap,
            "server.memory.heap.max_size": self.heap,
            "server.memory.pagecache.size": self.pagecache,
            # a development server: keep transaction logs and metrics small
            "db.tx_log.rotation.retention_policy": "2 files",
            "dbms.usage_report.enabled": "false",
        }
        lines = ["# written by sqems neo4j start; edits are overwritten"]
        lines += [f"{key}={value}" for key, value in settings.items()]
        (h / "conf" / "neo4j.conf").write_text("\n".join(lines) + "\n")

    def _set_initial_password(self, java: JavaRuntime) -> None:
        env = {**os.environ, "NEO4J_HOME": str(self.home), "NEO4J_CONF": str(self.home / "conf")}
        done = subprocess.run(
            [java.binary, "-cp", f"{self.lib}/*", ADMIN_CLASS, "dbms", "set-initial-password",
             self.password()],
            env=env, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise GraphUnavailable(
                f"could not set Neo4j's initial password: {(done.stdout + done.stderr).strip()}"
            )

    def _wait_for_bolt(self, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise GraphUnavailable(
                    f"Neo4j exited with code {proc.returncode} while starting; last lines of "
                    f"{self.console_log}:\n{self._tail()}"
                )
            if _port_open(self.port):
                return
            time.sleep(0.5)
        raise GraphUnavailable(
            f"Neo4j did not answer on {self.uri} within {timeout:.0f} s; last lines of "
            f"{self.console_log}:\n{self._tail()}"
        )

    def _tail(self, lines: int = 20) -> str:
        texts = []
        for path in (self.console_log, self.home / "logs" / "neo4j.log"):
            if path.is_file():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(texts)


@dataclass(frozen=True, slots=True)
class JavaRuntime:
    binary: str
    major: int


def java_major() -> JavaRuntime:
    """The Java runtime Neo4j will run on; :class:`ConfigError` if it cannot."""
    return find_java("Neo4j 5", lambda major: major in (17, 21), "Java 17 or 21")


def find_java(runs: str, accepts: Callable[[int], bool], wanted: str) -> JavaRuntime:
    """The Java runtime (``JAVA_HOME``, else ``java`` on PATH) that ``runs`` will run on,
    checked with ``accepts`` on its major version; :class:`ConfigError` naming
    ``wanted`` when there is none or it is another version."""
    home = os.environ.get("JAVA_HOME")
    binary = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not binary or not Path(binary).exists():
        raise ConfigError(
            f"{wanted} is needed to run {runs}; install OpenJDK 17 "
            "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    done = subprocess.run([binary, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)', done.stderr + done.stdout)
    major = int(found.group(1)) if found else 0
    if not accepts(major):
        raise ConfigError(
            f"{runs} runs on {wanted}; {binary} is Java {major or 'unknown'}. "
            "Set JAVA_HOME to a Java 17 or 21 installation"
        )
    return JavaRuntime(binary, major)


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return True
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _is_neo4j(pid: int) -> bool:
    try:
        return MAIN_CLASS.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
