"""The edge agent (``sqems edge run``): judges a line's units and keeps its SPC running
beside the line's own broker, whether or not the central system can be reached.

On the **line's broker** (persistent session, QoS 1, messages acknowledged only once
what follows from them is safe in the queue) it listens to

* the line's readings, ``sqems/v1/S/L/+/+``: each message is checked as the central
  ingestion checks it (:func:`~sqems.ingestion.payloads.decode`, the machine and
  parameter against the line file, the unit converted to the parameter's), and its good
  readings run through the same streaming rules with the same limits
  (:func:`~sqems.ingestion.pipeline.monitor_for`, :func:`~sqems.ingestion.pipeline.opened`,
  :func:`~sqems.ingestion.pipeline.alarm_for`). An alarm is published on the line's
  broker at once, with the stop-line command for a critical parameter
  (:func:`~sqems.ingestion.mqtt.alarm_messages`). What is refused goes to the edge's
  own quarantine with the reason; the message itself is forwarded all the same, so the
  central quarantine holds it too.
* the line's unit events, ``sqems/v1/S/L/unit``: the unit's feature row is built from the
  mean of each parameter's readings since the previous unit event (the last mean known
  for a parameter that said nothing since), scored by the current model, and the unit
  judged ``suspect`` when the probability reaches the manifest's threshold. The
  judgement is published on the line's broker and queued for the centre.

Every reading message (verbatim: same topic, same bytes), alarm and judgement goes into
the store-and-forward queue (:mod:`sqems.edge.queue`) before the agent acts on it, and
the forwarder (:mod:`sqems.edge.forwarder`) delivers the queue to the **central broker**
when it can. On the central broker the agent also takes its model, retained on
``sqems/v1/S/L/model/unit-judgement/bundle``: a bundle is verified with the edge's public key
(:func:`~sqems.edge.portable.verify`) and, if accepted, stored in the data directory, so
an agent started again without a network still judges; a refused bundle leaves the
current model in place, and the status says why. The status is retained on
``sqems/v1/S/L/edge/E/status``, with a will that says offline.

A message whose handling throws is logged, kept in the quarantine alone with the
exception as its reason, and counted; the agent goes on with the next. A failure of the
queue or the quarantine themselves (the disk) is no message's fault: the worker thread
dies with it, the message stays unacknowledged, and the watchdog starts the worker
again after a backoff, counting the restart.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, TypeAdapter, ValidationError

from sqems.analysis.judgement import KIND, features_from_means
from sqems.analysis.prediction import FeatureSchema
from sqems.analysis.streaming import RuleMonitor
from sqems.edge.forwarder import RECONNECT_S, WINDOW, Forwarder
from sqems.edge.line import LINE_FILE, LineSpec
from sqems.edge.portable import PortableModel, load_public_key, model_topic, verify
from sqems.edge.queue import Item, StoreQueue
from sqems.errors import ConfigError, ValidationFailed
from sqems.graph_model.nodes import Parameter, Uid
from sqems.ingestion.broker import BrokerAccess, send_promptly
from sqems.ingestion.mqtt import alarm_messages
from sqems.ingestion.payloads import PREFIX, MessageId, Quality, Topic, decode
from sqems.ingestion.pipeline import AlarmEvent, alarm_for, monitor_for, opened
from sqems.ingestion.quarantine import NewEntry, Quarantine
from sqems.ingestion.units import UnitConverter
from sqems.settings import Settings

log = logging.getLogger(__name__)

QUEUE_FILE = "queue.db"
QUARANTINE_FILE = "quarantine.db"
MODELS_DIR = "models"
STATUS_S = 5.0
"""How often the status is published on the central broker."""
WATCHDOG_S = 0.5
RESTART_S = (1.0, 30.0)
"""The watchdog's backoff before starting a dead worker again: first, at most."""
OUTAGES: tuple[type[Exception], ...] = (OSError, sqlite3.OperationalError)
"""Failures of the edge's own files, not of a message: the message is kept and tried again."""


class UnitEvent(BaseModel):
    """A unit leaving the line's last step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: MessageId
    unit: Uid
    batch: Uid
    ts: AwareDatetime


_UNIT_EVENTS: TypeAdapter[UnitEvent | list[UnitEvent]] = TypeAdapter(UnitEvent | list[UnitEvent])


class _Inbound(NamedTuple):
    central: bool
    """From the central broker (a model), else from the line's broker."""
    topic: str
    payload: bytes
    mid: int
    """The packet id to acknowledge (-1: none)."""
    connection: int


@dataclass(slots=True)
class _Watch:
    """One machine's parameter as the agent follows it."""

    spec: Parameter
    monitor: RuleMonitor | None
    quiet: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class AgentTally:
    """What the agent did at the line since it started (its status publishes these;
    central keeps them per edge as :class:`~sqems.ingestion.edge_records.AgentCounters`)."""

    received: int = 0
    """Messages from the line's broker handled (readings and unit events)."""
    readings: int = 0
    """Good readings run through the rules."""
    quarantined: int = 0
    judged: int = 0
    unjudged: int = 0
    """Units that came while the agent had no model."""
    suspects: int = 0
    alarms: int = 0
    stop_commands: int = 0
    failures: int = 0
    """Messages whose handling threw (each quarantined alone)."""
    restarts: int = 0
    """Workers the watchdog started again."""


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Who the edge is and where it talks."""

    edge_id: str
    line: LineSpec
    data_dir: Path
    local: BrokerAccess
    central: BrokerAccess
    public_key: Ed25519PublicKey
    status_s: float = STATUS_S
    window: int = WINDOW
    reconnect: tuple[int, int] = RECONNECT_S


class EdgeAgent:
    """See the module docstring. ``start()``, then ``stop()`` (or use it as a context
    manager)."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.edge = config.edge_id
        self.site, self.line_uid = config.line.site, config.line.line
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.queue = StoreQueue(config.data_dir / QUEUE_FILE)
        self.quarantine = Quarantine(config.data_dir / QUARANTINE_FILE)
        self.counters = AgentTally()
        self.convert = UnitConverter()
        self.model: PortableModel | None = None
        self._schema: FeatureSchema | None = None
        self.model_refused: str | None = None
        """Why the last model bundle was refused (kept until one is accepted)."""
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._sums: dict[str, list[float]] = {}
        """Parameter → [sum, count] of its good readings since the last unit event."""
        self._last_mean: dict[str, float] = {}
        self._inbox: deque[_Inbound] = deque()
        self._arrived = threading.Event()
        self._pending: _Inbound | None = None
        """The message a worker that died was handling: the next worker starts with it."""
        self._connection = 0
        self._stop = threading.Event()
        self.local_connected = threading.Event()
        self._load_stored_model()

        prefix = f"{PREFIX}/{self.site}/{self.line_uid}"
        self.readings_topic = f"{prefix}/+/+"
        self.unit_topic = f"{prefix}/unit"
        self.model_topic = model_topic(self.site, self.line_uid, KIND)
        self.judgement_topic = f"{prefix}/edge/{self.edge}/judgement"
        self.status_topic = f"{prefix}/edge/{self.edge}/status"

        will = json.dumps(self._status_body(online=False)).encode()
        self.forwarder = Forwarder(
            self.queue,
            config.central,
            f"sqems-edge-{self.edge}",
            window=config.window,
            reconnect=config.reconnect,
            will=(self.status_topic, will),
        )
        self.forwarder.on_connect.append(self._on_central_connect)
        self.forwarder.client.message_callback_add(self.model_topic, self._on_model)

        local = config.local.client(
            f"sqems-edge-{self.edge}-line", clean_session=False, protocol=mqtt.MQTTv311
        )
        send_promptly(local)  # alarms, stop-line commands and judgements are small and urgent
        local.manual_ack_set(True)
        local.reconnect_delay_set(min_delay=1, max_delay=10)
        local.max_inflight_messages_set(1_000)
        local.on_connect = self._on_local_connect
        local.on_disconnect = self._on_local_disconnect
        local.on_message = self._on_local_message
        self.local = local
        self._worker = self._new_worker()
        self._watchdog = threading.Thread(
            target=self._guard, name="sqems-edge-watchdog", daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect to both brokers (each tried again in the background until it
        answers) and start judging."""
        self.local.connect_async(self.config.local.host, self.config.local.port, keepalive=15)
        self.local.loop_start()
        self.forwarder.start()
        self._worker.start()
        self._watchdog.start()

    def stop(self) -> None:
        """Finish what arrived, say offline on the central broker, and disconnect; what
        the queue holds stays for the next start."""
        self._stop.set()
        self._arrived.set()
        self._watchdog.join(timeout=30)
        self._worker.join(timeout=30)
        if self.forwarder.connected.is_set():
            info = self.forwarder.client.publish(
                self.status_topic,
                json.dumps(self._status_body(online=False)).encode(),
                qos=1,
                retain=True,
            )
            info.wait_for_publish(5)
        self.forwarder.stop()
        self.local.disconnect()
        self.local.loop_stop()
        self.queue.close()
        self.quarantine.close()

    def __enter__(self) -> EdgeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the agent publishes as its status (online)."""
        return self._status_body(online=True)

    def _status_body(self, *, online: bool) -> dict[str, Any]:
        c = self.counters
        forwarder = getattr(self, "forwarder", None)
        return {
            "edge": self.edge,
            "site": self.site,
            "line": self.line_uid,
            "online": online,
            "at": datetime.now(UTC).isoformat(),
            "models": {} if self.model is None else {self.model.kind: self.model.version},
            "model_refused": self.model_refused,
            "queue_depth": self.queue.depth,
            "queue_bytes": self.queue.bytes,
            "forwarded": 0 if forwarder is None else forwarder.forwarded,
            "central_connected": forwarder is not None and forwarder.connected.is_set(),
            "judged": c.judged,
            "suspects": c.suspects,
            "unjudged": c.unjudged,
            "alarms": c.alarms,
            "stop_commands": c.stop_commands,
            "received": c.received,
            "quarantined": c.quarantined,
            "failures": c.failures,
            "restarts": c.restarts,
        }

    def publish_status(self) -> None:
        """Publish the status, retained, if the central broker is there (a status queued
        for later would be stale when it arrives)."""
        if self.forwarder.connected.is_set():
            body = json.dumps(self.status()).encode()
            self.forwarder.client.publish(self.status_topic, body, qos=1, retain=True)

    # --- paho's threads ----------------------------------------------------------------

    def _on_local_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any
    ) -> None:
        if reason.is_failure:
            log.error("the line's broker refused the edge", extra={"reason": str(reason)})
            return
        client.subscribe([(self.readings_topic, 1), (self.unit_topic, 1)])
        self.local_connected.set()
        log.info("connected to the line's broker", extra={"url": self.config.local.url})

    def _on_local_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connection += 1  # acks for what came in before mean nothing now
        self.local_connected.clear()
        if not self._stop.is_set():
            log.warning("lost the line's broker; reconnecting", extra={"reason": str(reason)})

    def _on_local_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        mid = message.mid if message.qos > 0 else -1
        self._inbox.append(
            _Inbound(False, message.topic, bytes(message.payload), mid, self._connection)
        )
        self._arrived.set()

    def _on_central_connect(self, client: mqtt.Client) -> None:
        client.subscribe(self.model_topic, qos=1)
        body = json.dumps(self.status()).encode()
        client.publish(self.status_topic, body, qos=1, retain=True)

    def _on_model(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.append(_Inbound(True, message.topic, bytes(message.payload), -1, -1))
        self._arrived.set()

    # --- the worker and its watchdog -----------------------------------------------------

    def _new_worker(self) -> threading.Thread:
        return threading.Thread(target=self._work, name="sqems-edge-worker", daemon=True)

    def _work(self) -> None:
        try:
            if self._pending is not None:
                self._handle(self._pending)
            while not (self._stop.is_set() and not self._inbox):
                if not self._inbox:
                    self._arrived.clear()
                    if not self._inbox:
                        self._arrived.wait(0.2)
                    continue
                self._pending = self._inbox.popleft()
                self._handle(self._pending)
        except Exception:  # logged; the watchdog starts a new worker, which tries again
            log.exception("the edge worker stopped (its queue or quarantine failed?)")

    def _guard(self) -> None:
        """The watchdog: starts a dead worker or forwarder thread again, and publishes
        the status every ``status_s``."""
        delay = RESTART_S[0]
        next_status = time.monotonic() + self.config.status_s
        while not self._stop.wait(WATCHDOG_S):
            if not self.forwarder.alive:
                self.counters.restarts += 1
                log.warning("restarting the edge's forwarder")
                self.forwarder.restart()
            if not self._worker.is_alive():
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, RESTART_S[1])
                self.counters.restarts += 1
                log.warning("restarting the edge worker", extra={"pending": self._pending})
                self._worker = self._new_worker()
                self._worker.start()
            elif self._pending is None:
                delay = RESTART_S[0]
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.config.status_s
                self.publish_status()

    def _handle(self, inbound: _Inbound) -> None:
        """Handle one message; see the module docstring for what a failure does."""
        try:
            if inbound.central:
                self._take_model(inbound.payload)
            elif inbound.topic == self.unit_topic:
                self._judge(inbound)
            else:
                self._reading(inbound)
        except OUTAGES:
            raise
        except Exception as exc:  # one bad message must not stop the line's judging
            self._failed(inbound, exc)
        if not inbound.central:
            self.counters.received += 1
            if inbound.mid >= 0 and inbound.connection == self._connection:
                self.local.ack(inbound.mid, 1)
        self._pending = None

    def _failed(self, inbound: _Inbound, exc: Exception) -> None:
        """Handling ``inbound`` threw: logged, counted, and the message quarantined alone
        with the exception as its reason."""
        self.counters.failures += 1
        log.error(
            "the edge agent failed on a message", exc_info=exc, extra={"topic": inbound.topic}
        )
        reason = f"the edge agent failed on it: {type(exc).__name__}: {exc}"
        self._refuse(inbound.topic, reason, inbound.payload)

    def _refuse(self, topic: str, reason: str, raw: bytes, item: int | None = None) -> None:
        self.counters.quarantined += self.quarantine.add(
            [NewEntry(f"mqtt:{topic}", reason[:2_000], raw, item)]
        )

    # --- readings ----------------------------------------------------------------------

    def _reading(self, inbound: _Inbound) -> None:
        """Run a reading message through the rules; queue it and its alarms, then tell
        the line."""
        events: list[AlarmEvent] = []
        forwarded = [Item(inbound.topic, inbound.payload)]
        try:
            events = self._spc(inbound)
        except ValidationFailed as exc:
            self._refuse(inbound.topic, exc.message, inbound.payload)
        except OUTAGES:
            raise
        except Exception as exc:  # quarantined here, so that it is still forwarded
            self._failed(inbound, exc)
        local: list[tuple[str, bytes]] = []
        for event in events:
            messages = alarm_messages(event)
            assert event.topic is not None
            forwarded += [Item(t, p) for t, p in messages if t != event.topic.command]
            local += messages
        self.queue.append(forwarded)
        self.forwarder.notify()
        for topic, payload in local:
            self.local.publish(topic, payload, qos=1)
        self.counters.alarms += len(events)
        self.counters.stop_commands += sum(e.critical for e in events)

    def _spc(self, inbound: _Inbound) -> list[AlarmEvent]:
        topic = Topic.parse(inbound.topic)
        if (topic.site, topic.line) != (self.site, self.line_uid):
            raise ValidationFailed(f"topic {topic} is not on this edge's line")
        watch = self._watch_of(topic)
        payload = decode(inbound.payload)
        for rejected in payload.rejected:
            self._refuse(inbound.topic, rejected.reason, rejected.raw, rejected.item)
        spec = watch.spec
        kept: list[tuple[datetime, float]] = []
        for reading, item in zip(payload.readings, payload.items, strict=True):
            if reading.quality is not Quality.GOOD:
                continue
            try:
                kept.append((reading.ts, self.convert(reading.value, reading.unit, spec.unit)))
            except ValidationFailed as exc:
                self._refuse(inbound.topic, exc.message, inbound.payload, item)
        if not kept:
            return []
        kept.sort(key=lambda r: r[0])
        values = np.array([v for _, v in kept])
        sums = self._sums.setdefault(spec.uid, [0.0, 0.0])
        sums[0] += float(values.sum())
        sums[1] += values.size
        self.counters.readings += values.size
        if watch.monitor is None:
            return []
        first = watch.monitor.points
        hits = watch.monitor.push_many(values)
        return [
            AlarmEvent(
                alarm_for(topic, spec, rule, kept[point][0], float(values[point])),
                topic,
                None,
                spec.critical,
            )
            for point, rule in opened(watch.quiet, hits, first, values.size)
        ]

    def _watch_of(self, topic: Topic) -> _Watch:
        key = (topic.machine, topic.parameter)
        found = self._watches.get(key)
        if found is None:
            spec = self.config.line.parameter(topic.machine, topic.parameter)
            found = self._watches[key] = _Watch(spec, monitor_for(spec))
        return found

    # --- units -------------------------------------------------------------------------

    def _judge(self, inbound: _Inbound) -> None:
        """Judge the units of a unit event on the readings since the previous one."""
        try:
            parsed = _UNIT_EVENTS.validate_json(inbound.payload)
        except ValidationError as exc:
            raise ValidationFailed(f"not a unit event: {exc.errors()[0]['msg']}") from None
        events = parsed if isinstance(parsed, list) else [parsed]
        means = self._means()
        model, schema = self.model, self._schema
        if model is None or schema is None:
            self.counters.unjudged += len(events)
            log.warning("a unit left the line and the edge has no model to judge it")
            return
        row = features_from_means(schema, means)
        probability = float(model.score(row)[0])
        threshold = model.threshold if model.threshold is not None else 0.5
        verdict = "suspect" if probability >= threshold else "pass"
        judged_at = datetime.now(UTC).isoformat()
        bodies = [
            json.dumps(
                {
                    "id": f"{self.edge}/{event.unit}/{model.version}",
                    "edge": self.edge,
                    "unit": event.unit,
                    "batch": event.batch,
                    "judged_at": judged_at,
                    "probability": probability,
                    "verdict": verdict,
                    "threshold": threshold,
                    "model": {
                        "kind": model.kind,
                        "product": model.product,
                        "version": model.version,
                    },
                }
            ).encode()
            for event in events
        ]
        self.queue.append(Item(self.judgement_topic, body) for body in bodies)
        self.forwarder.notify()
        for body in bodies:
            self.local.publish(self.judgement_topic, body, qos=1)
        self.counters.judged += len(bodies)
        self.counters.suspects += len(bodies) if verdict == "suspect" else 0

    def _means(self) -> dict[str, float]:
        """Each parameter's mean since the last unit event (else its last mean known);
        starts the next unit's sums."""
        for parameter, (total, count) in self._sums.items():
            if count:
                self._last_mean[parameter] = total / count
        self._sums = {}
        return dict(self._last_mean)

    # --- models ------------------------------------------------------------------------

    @property
    def model_file(self) -> Path:
        return self.config.data_dir / MODELS_DIR / f"{KIND}.sqems-model.json"

    def _take_model(self, bundle: bytes) -> None:
        if not bundle:  # the retained model was cleared: keep judging with the one held
            return
        current = None if self.model is None else self.model.manifest
        try:
            model = verify(bundle, self.config.public_key, kind=KIND, current=current)
        except ValidationFailed as exc:
            self.model_refused = exc.message
            log.warning("refused a model bundle: %s", exc.message)
            self.publish_status()
            return
        if self.model is not None and model.manifest == self.model.manifest:
            return  # the retained bundle again, after a reconnect
        self._use(model)
        self.model_refused = None
        self.model_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.model_file.with_suffix(".tmp")
        temporary.write_bytes(bundle)
        temporary.replace(self.model_file)
        log.info("took model %s %s", model.kind, model.version)
        self.publish_status()

    def _use(self, model: PortableModel) -> None:
        schema = FeatureSchema.from_dict(_schema_of(model.manifest))
        self.model, self._schema = model, schema

    def _load_stored_model(self) -> None:
        """The model accepted before the last stop, verified again (the file may have
        been altered since)."""
        if not self.model_file.is_file():
            return
        try:
            self._use(verify(self.model_file.read_bytes(), self.config.public_key, kind=KIND))
        except ValidationFailed as exc:
            self.model_refused = f"the stored model {self.model_file}: {exc.message}"
            log.warning("refused the stored model: %s", exc.message)


def _schema_of(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """The feature schema a manifest describes, in the form ``FeatureSchema.from_dict``
    reads (the manifest's copy also names ``schema_version`` and ``columns``)."""
    schema = manifest.get("schema")
    if not isinstance(schema, dict):
        raise ValidationFailed(f"model {manifest.get('version')} has no feature schema")
    return schema


def edge_dir(settings: Settings) -> Path:
    """Where the edge ``settings.edge_id`` keeps its queue, quarantine, model and line
    file: ``<data dir>/edge/<edge id>``."""
    return settings.data_dir / "edge" / settings.edge_id


def config_of(settings: Settings) -> EdgeConfig:
    """The edge agent's configuration from the ``SQEMS_EDGE_*`` settings (the central
    broker is the ``SQEMS_MQTT_*`` one); :class:`ConfigError` naming what is missing."""
    missing = [
        name
        for name, value in (
            ("SQEMS_EDGE_SITE", settings.edge_site),
            ("SQEMS_EDGE_LINE", settings.edge_line),
            ("SQEMS_EDGE_MODEL_KEY", settings.edge_model_key),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(
            f"the edge agent needs {', '.join(missing)}: the line it watches and the public "
            "key its models are signed with (see docs/edge.md)"
        )
    assert settings.edge_model_key is not None
    home = edge_dir(settings)
    line = LineSpec.load(home / LINE_FILE)
    if (line.site, line.line) != (settings.edge_site, settings.edge_line):
        raise ConfigError(
            f"the line file {home / LINE_FILE} is for {line.site}/{line.line}, not "
            f"{settings.edge_site}/{settings.edge_line}: export it again with `sqems edge line`"
        )
    return EdgeConfig(
        edge_id=settings.edge_id,
        line=line,
        data_dir=home,
        local=BrokerAccess(settings.edge_local_host, settings.edge_local_port),
        central=BrokerAccess.of(settings),
        public_key=load_public_key(settings.edge_model_key),
    )
