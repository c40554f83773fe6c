"""The broker as shipped for production (deploy/mosquitto): TLS, passwords and the ACL,
against a real Mosquitto started from that configuration; and the messages a broker
drops, made visible.

The certificates are made here with the openssl command line: a CA, a server
certificate for 127.0.0.1 signed by it, and another CA that signed nothing of the
broker's."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import REPO, Broker, wait_for
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from sqems import cli
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import BrokerUnavailable, ConfigError
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.neo4j_server import free_port
from sqems.graphql import AccessStore, Role, create_app
from sqems.ingestion import service
from sqems.ingestion.broker import BrokerAccess, connect
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.pipeline import FAULT_TOPIC, Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.settings import Settings

SHIPPED = REPO / "deploy" / "mosquitto"
PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"
COMMAND = "sqems/v1/SITE-1/LINE-PCB/command"
PASSWORDS = {"sqems": "ingest-pw", "sensors": "sensor-pw", "line-SITE-1-LINE-PCB": "line-pw"}


def _openssl(*args: str | Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the broker tests make certificates with openssl: apt-get install openssl")
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(home: Path, name: str) -> tuple[Path, Path]:
    crt, key = home / f"{name}.crt", home / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return crt, key


def _signed(home: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    crt, key, csr, extfile = (home / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    extfile.write_text(ext + "\nauthorityKeyIdentifier=keyid\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", crt, "-days", "2", "-extfile", extfile)  # fmt: skip
    return crt, key


def shipped_config(home: Path, port: int, **overrides: str) -> Path:
    """deploy/mosquitto/mosquitto.conf with its paths moved under ``home``, its listener
    on ``port`` of the loopback and any option replaced by ``overrides``."""
    text = (SHIPPED / "mosquitto.conf").read_text()
    for where in ("/etc/mosquitto/certs/", "/etc/mosquitto/", "/var/lib/mosquitto/",
                  "/var/log/mosquitto/"):  # fmt: skip
        text = text.replace(where, f"{home}/")
    text = text.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    for option, value in overrides.items():
        text, n = re.subn(rf"^{option} .*$", f"{option} {value}", text, flags=re.M)
        assert n == 1, option
    if os.geteuid() == 0:
        text += "user root\n"  # as root, stay root: the files are in pytest's private dirs
    config = home / "mosquitto.conf"
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("pki")
    ca = _ca(home, "ca")
    _signed(home, "server", ca, "subjectAltName=IP:127.0.0.1")
    _signed(home, "client", ca, "extendedKeyUsage=clientAuth")
    _ca(home, "other-ca")
    return home


def start_shipped(home: Path, pki: Path, **overrides: str) -> Broker:
    """Mosquitto started from the shipped configuration and ACL (``overrides`` replacing
    options), with the users of the ACL in its password file."""
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(pki / name, home / name)
    shutil.copy(SHIPPED / "acl", home / "acl")
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    (home / "passwd").touch()
    for user, password in PASSWORDS.items():
        subprocess.run([passwd, "-b", home / "passwd", user, password], check=True)
    port = free_port()
    broker = Broker("127.0.0.1", port, shipped_config(home, port, **overrides))
    broker.start()
    return broker


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[Broker]:
    broker = start_shipped(tmp_path_factory.mktemp("mosquitto-secure"), pki)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
        yield store


def settings(broker: Broker, pki: Path, tmp_path: Path, user: str | None, **more: Any) -> Settings:
    """The settings of a client of the secure broker, as ``user`` with its password."""
    fields: dict[str, Any] = {
        "data_dir": tmp_path,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "mqtt_tls": True,
        "mqtt_ca_file": pki / "ca.crt",
        "mqtt_username": user,
        "mqtt_password": PASSWORDS.get(user or ""),
        "mqtt_client_id": f"sqems-{tmp_path.name}"[:60],
    }
    return Settings(**(fields | more))


def readings(graph: GraphStore, start: int, n: int, value: float) -> list[bytes]:
    """``n`` readings of the reflow peak inside one of its process runs, a second apart."""
    run = next(e.src for e in graph.edges(["M-REFLOW-2"], {"ON": Direction.IN}))
    span = graph.get(run).interval()
    assert span is not None
    at = datetime.fromtimestamp(span[0] + 1, UTC)
    return [
        json.dumps(
            {"ts": (at + timedelta(seconds=i)).isoformat(), "value": value, "unit": "degC",
             "id": f"peak-{i}"}
        ).encode()
        for i in range(start, start + n)
    ]  # fmt: skip


@dataclass
class Listener:
    """A client of the secure broker (MQTT 5, so refusals come back with a reason)."""

    client: mqtt.Client
    heard: list[tuple[str, Any]] = field(default_factory=list)
    acks: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, broker: Broker, pki: Path, user: str) -> Listener:
        access = BrokerAccess(broker.host, broker.port, user, PASSWORDS[user], tls=True,
                              ca_file=pki / "ca.crt")  # fmt: skip
        found = cls(access.client(f"test-{user}", protocol=mqtt.MQTTv5))
        found.client.on_message = lambda _c, _u, m: found.heard.append(
            (m.topic, json.loads(m.payload))
        )
        found.client.on_publish = lambda _c, _u, mid, reason, _p: found.acks.update(
            {mid: str(reason)}
        )
        connect(found.client, access)
        return found

    def subscribe(self, topic: str) -> str:
        """Subscribe to ``topic``; the broker's answer."""
        answer: list[str] = []
        self.client.on_subscribe = lambda _c, _u, _mid, reasons, _p: answer.append(str(reasons[0]))
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: bool(answer), f"the broker to answer the subscription to {topic}")
        return answer[0]

    def publish(self, topic: str, body: bytes) -> str:
        """Publish ``body`` at QoS 1; the broker's answer (its PUBACK reason)."""
        mid = self.client.publish(topic, body, qos=1).mid
        wait_for(lambda: mid in self.acks, f"the broker to acknowledge a message on {topic}")
        return self.acks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- TLS and credentials --------------------------------------------------------------------


def test_readings_over_tls_with_a_password_are_ingested_and_the_line_gets_its_stop(
    secure: Broker, pki: Path, graph: GraphStore, tmp_path: Path
) -> None:
    """End to end through the shipped configuration: a sensor publishes over TLS with its
    password, the ingestion (its own user) stores the readings and, on the drift, sends
    the stop-line command that the line's controller receives."""
    line = Listener.of(secure, pki, "line-SITE-1-LINE-PCB")
    line.subscribe(COMMAND)
    config = settings(secure, pki, tmp_path, "sqems")
    with (
        service.ingestor(config, graph) as pipeline,
        service.mqtt_ingestion(config, pipeline) as bridge,
    ):
        assert bridge.connected.is_set()
        sensor = service.mqtt_publisher(settings(secure, pki, tmp_path, "sensors"), "sensor")
        for body in readings(graph, 0, 100, 242.5) + readings(graph, 100, 50, 249.6):
            sensor.publish(PEAK, body, qos=1)
        wait_for(lambda: bridge.counters.received == 150, "150 readings over TLS")
        assert bridge.counters.accepted == 150
        wait_for(lambda: bool(line.heard), "the stop-line command at the line controller")
        sensor.disconnect()
        sensor.loop_stop()
    assert line.heard[0][0] == COMMAND and line.heard[0][1]["command"] == "stop_line"
    line.close()


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        ("sqems", "not-the-password", "Not authorized .check SQEMS_MQTT_USERNAME"),
        (None, None, "Not authorized .the broker allows no anonymous clients"),
    ],
    ids=["wrong-password", "anonymous"],
)
def test_a_refused_login_is_a_clear_error_for_ingestion_and_publishers(
    secure: Broker, pki: Path, graph: GraphStore, tmp_path: Path,
    user: str | None, password: str | None, reason: str,
) -> None:  # fmt: skip
    config = settings(secure, pki, tmp_path, user).model_copy(update={"mqtt_password": password})
    began = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"refused the connection: {reason}"):
        service.mqtt_publisher(config, "sensor-refused")
    with service.ingestor(config, graph) as pipeline:
        bridge = service.mqtt_ingestion(config, pipeline)
        with pytest.raises(BrokerUnavailable, match=f"refused the connection: {reason}"):
            bridge.start()
    assert time.monotonic() - began < 5


def test_serve_says_why_the_broker_refused_in_one_line(
    secure: Broker, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a traceback from the server's start-up (`sqems ingest` raises the same error
    from the ingestion's start, tested above)."""
    env = {"SQEMS_DATA_DIR": str(tmp_path), "SQEMS_GRAPH_URI": "memory",
           "SQEMS_API_PORT": str(free_port()), "SQEMS_MQTT_HOST": secure.host,
           "SQEMS_MQTT_PORT": str(secure.port), "SQEMS_MQTT_TLS": "true",
           "SQEMS_MQTT_CA_FILE": str(pki / "ca.crt"), "SQEMS_MQTT_USERNAME": "sqems",
           "SQEMS_MQTT_PASSWORD": "not-the-password", "COLUMNS": "300"}  # fmt: skip
    root = logging.getLogger()  # serve sets the process's logging up: undone after
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    done = CliRunner().invoke(cli.app, ["serve", "--ingest"], env=env)
    assert done.exit_code == 2, done.output
    assert done.exc_info is None or done.exc_info[0] is SystemExit
    assert "error: the MQTT broker at mqtts://" in done.stderr
    assert "refused the connection: Not authorized" in done.stderr


def test_a_broker_whose_certificate_does_not_chain_to_the_ca_is_refused(
    secure: Broker, pki: Path, graph: GraphStore, tmp_path: Path
) -> None:
    config = settings(secure, pki, tmp_path, "sqems", mqtt_ca_file=pki / "other-ca.crt")
    with pytest.raises(BrokerUnavailable, match=r"did not prove who it is: .*certificate"):
        service.mqtt_publisher(config, "sensor-wrong-ca")
    with service.ingestor(config, graph) as pipeline:
        bridge = service.mqtt_ingestion(config, pipeline)
        with pytest.raises(BrokerUnavailable, match="did not prove who it is"):
            bridge.start()


def test_a_certificate_that_names_another_host_is_refused(
    secure: Broker, pki: Path, tmp_path: Path
) -> None:
    """The certificate names 127.0.0.1, not localhost, the name dialled."""
    config = settings(secure, pki, tmp_path, "sqems", mqtt_host="localhost")
    with pytest.raises(BrokerUnavailable, match=r"did not prove who it is: .*mismatch"):
        service.mqtt_publisher(config, "sensor-wrong-host")


def test_a_broker_that_requires_client_certificates_takes_the_configured_one(
    pki: Path, tmp_path: Path
) -> None:
    broker = start_shipped(tmp_path, pki, require_certificate="true")
    try:
        without = settings(broker, pki, tmp_path, "sensors")
        with pytest.raises(BrokerUnavailable, match="require a client certificate"):
            service.mqtt_publisher(without, "sensor-no-cert")
        with_cert = without.model_copy(
            update={"mqtt_cert_file": pki / "client.crt", "mqtt_key_file": pki / "client.key"}
        )
        sensor = service.mqtt_publisher(with_cert, "sensor-cert")
        assert sensor.is_connected()
        sensor.disconnect()
        sensor.loop_stop()
    finally:
        broker.stop()


def test_a_password_sent_in_clear_off_the_machine_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sqems.ingestion.broker"):
        assert BrokerAccess("127.0.0.1", 1883, "sqems", "pw").tls_context() is None
        assert caplog.text == ""
        BrokerAccess("mqtt.plant.example", 1883, "sqems", "pw").tls_context()
    assert "the MQTT password goes to mqtt://mqtt.plant.example:1883 in clear" in caplog.text


def test_tls_files_without_tls_are_a_config_error(tmp_path: Path, pki: Path) -> None:
    """A CA file set with TLS off would send the password in clear while looking secure."""
    config = Settings(data_dir=tmp_path, mqtt_ca_file=pki / "ca.crt")
    with pytest.raises(ConfigError, match="SQEMS_MQTT_CA_FILE set but SQEMS_MQTT_TLS is off"):
        service.mqtt_publisher(config, "sensor")
    with pytest.raises(ConfigError, match="not a readable PEM CA certificate"):
        BrokerAccess("h", 1, tls=True, ca_file=tmp_path / "missing.crt").tls_context()


# --- the ACL --------------------------------------------------------------------------------


def test_a_sensor_cannot_send_commands_or_alarms_nor_read_anything(
    secure: Broker, pki: Path
) -> None:
    line = Listener.of(secure, pki, "line-SITE-1-LINE-PCB")
    line.subscribe(COMMAND)
    sensor = Listener.of(secure, pki, "sensors")
    sensor.subscribe("sqems/v1/#")  # Mosquitto grants it, and delivers nothing it may not read
    forged = json.dumps({"command": "stop_line", "reason": "forged"}).encode()
    assert sensor.publish(COMMAND, forged) == "Not authorized"
    assert sensor.publish(f"{PEAK}/alarm", forged) == "Not authorized"
    assert sensor.publish(FAULT_TOPIC, forged) == "Not authorized"
    assert sensor.publish(PEAK, b"{}") == "Success"  # readings it may send
    # the ingestion's user may command the line: what arrives is its command alone
    ingestion = Listener.of(secure, pki, "sqems")
    assert ingestion.publish(COMMAND, json.dumps({"command": "resume"}).encode()) == "Success"
    assert ingestion.publish(FAULT_TOPIC, b"{}") == "Success"
    wait_for(lambda: bool(line.heard), "the ingestion's command")
    time.sleep(0.3)
    assert [body["command"] for _, body in line.heard] == ["resume"]
    assert sensor.heard == []
    for c in (line, sensor, ingestion):
        c.close()


def test_a_line_controller_reads_only_its_own_line_commands(secure: Broker, pki: Path) -> None:
    line = Listener.of(secure, pki, "line-SITE-1-LINE-PCB")
    line.subscribe("sqems/v1/#")
    ingestion = Listener.of(secure, pki, "sqems")
    for topic in ("sqems/v1/SITE-1/LINE-SMT/command", COMMAND):
        assert ingestion.publish(topic, json.dumps({"command": topic}).encode()) == "Success"
    assert line.publish(COMMAND, b"{}") == "Not authorized"
    wait_for(lambda: bool(line.heard), "its own line's command")
    time.sleep(0.3)
    assert line.heard == [(COMMAND, {"command": COMMAND})]
    for c in (line, ingestion):
        c.close()


# --- loss at the broker ---------------------------------------------------------------------


def test_messages_the_broker_drops_are_counted_and_warned_about(
    graph: GraphStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue of 10 (Mosquitto's default is 1000) and a burst of 500 readings while the
    ingestion is away: the broker keeps 10 and drops the rest, and the ingestion reports
    what it dropped: what it got plus what the broker dropped is every reading sent."""
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path}/\nmax_queued_messages 10\nsys_interval 1\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    broker = Broker("127.0.0.1", port, config)
    broker.start()
    ingestor = Ingestor(graph, ReadingsStore(tmp_path / "r.duckdb"), Quarantine(tmp_path / "q.db"))
    try:
        with MqttIngestion(ingestor, broker.host, port, client_id="sqems-dropped") as first:
            assert first.connected.is_set()
            wait_for(lambda: first.broker_dropped == 0, "the broker's count, 0 so far")
        sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="burst")
        sender.connect(broker.host, port)
        sender.loop_start()
        for body in readings(graph, 0, 500, 242.5):
            sender.publish(PEAK, body, qos=1).wait_for_publish(5)
        sender.disconnect()
        sender.loop_stop()
        with (
            caplog.at_level(logging.WARNING, logger="sqems.ingestion.mqtt"),
            MqttIngestion(ingestor, broker.host, port, client_id="sqems-dropped") as again,
        ):
            # the count comes every second (sys_interval): the first may be from mid-burst
            wait_for(
                lambda: again.counters.accepted + (again.broker_dropped or 0) == 500,
                "every reading stored or counted as dropped",
            )
            dropped = again.broker_dropped
        assert dropped is not None and 400 < dropped < 500
        assert f"({dropped} in all since it started)" in caplog.text
    finally:
        ingestor.readings.close()
        ingestor.quarantine.close()
        broker.stop()


# --- the shipped configuration --------------------------------------------------------------


def test_the_shipped_configuration_starts_with_its_limits(secure: Broker) -> None:
    """The fixture started Mosquitto from it; it found nothing wrong with any option."""
    log = secure.log.read_text(errors="replace")
    startup = log[: log.index(" running")]
    assert "rror" not in startup, startup
    shipped = (SHIPPED / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "max_queued_messages 300000",
                 "max_inflight_messages 1000", "persistence true"):  # fmt: skip
        assert f"\n{line}\n" in shipped


def test_the_api_ingests_over_tls_and_reports_what_the_broker_dropped(
    pki: Path, graph: GraphStore, tmp_path: Path
) -> None:
    """`sqems serve --ingest` as deployed: the shipped broker (its queue cut to 10), the
    ingestion inside the API over TLS with its password, and a burst of 200 readings
    while it was away; ingestionStatus says how many the broker dropped."""
    broker = start_shipped(tmp_path, pki, max_queued_messages="10", sys_interval="1")
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    config = settings(broker, pki, tmp_path, "sqems", ingest=True)
    try:
        with (
            service.ingestor(config, graph) as pipeline,
            service.mqtt_ingestion(config, pipeline),
        ):
            pass  # its persistent session: what comes next waits on the broker, up to 10
        sensor = service.mqtt_publisher(settings(broker, pki, tmp_path, "sensors"), "burst")
        for body in readings(graph, 0, 200, 242.5):
            sensor.publish(PEAK, body, qos=1).wait_for_publish(5)
        sensor.disconnect()
        sensor.loop_stop()
        query = "{ ingestionStatus { broker connected accepted brokerDropped } }"

        with LiveServer(create_app(config, store=graph, access=access)) as server:

            def status() -> dict[str, Any]:
                answer = httpx.post(
                    f"{server.url}/graphql",
                    json={"query": query},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                found: dict[str, Any] = answer.json()["data"]["ingestionStatus"]
                return found

            wait_for(
                lambda: status()["accepted"] + (status()["brokerDropped"] or 0) == 200,
                "every reading stored or counted as dropped",
            )
            seen = status()
        assert seen["broker"] == f"mqtts://{broker.host}:{broker.port}" and seen["connected"]
        assert seen["brokerDropped"] > 150
    finally:
        access.close()
        broker.stop()


class SlowSink(logging.Handler):
    """A log sink that takes its time (a blocked stderr, a slow collector)."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.5)


def test_connected_means_subscribed_so_the_first_readings_are_not_lost(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A client id the broker has never seen has no subscription until the broker
    acknowledges it; readings published before then go to nobody. `connected` (and the
    return of `start`) wait for that acknowledgement, even when the network thread is
    held up after connecting (here by a slow log sink)."""
    logger = logging.getLogger("sqems.ingestion.mqtt")
    sink, level = SlowSink(logging.INFO), logger.level
    logger.addHandler(sink)
    logger.setLevel(logging.INFO)
    ingestor = Ingestor(graph, ReadingsStore(tmp_path / "r.duckdb"), Quarantine(tmp_path / "q.db"))
    client_id = f"sqems-fresh-{request.node.name}-{time.time_ns()}"[:60]
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fresh-sensor")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        with MqttIngestion(ingestor, mosquitto.host, mosquitto.port, client_id=client_id) as bridge:
            assert bridge.connected.is_set()
            for body in readings(graph, 0, 5, 242.5):
                sender.publish(PEAK, body, qos=1).wait_for_publish(5)
            wait_for(lambda: bridge.counters.received == 5, "the 5 readings sent at once")
    finally:
        logger.removeHandler(sink)
        logger.setLevel(level)
        sender.disconnect()
        sender.loop_stop()
        ingestor.readings.close()
        ingestor.quarantine.close()
