"""MQTT in and out: the subscriber that feeds the pipeline, and the alarm publisher.

:class:`MqttIngestion` subscribes to ``sqems/v1/+/+/+/+`` with QoS 1 in a persistent
session (the broker keeps what arrives while it is away), reconnects with backoff
(1 s doubling to 30 s), and hands messages to the :class:`Ingestor` in batches from a
worker thread. Messages are acknowledged to the broker only after their batch is
stored or quarantined (paho's manual acks), so a crash between receipt and storage
makes the broker deliver them again — and the readings store's message-id dedup makes
that redelivery harmless. A packet id means something only on the connection it came
in on: messages received before a reconnect are stored but not acknowledged (the broker
delivers them again from the session, or has lost them with the session, when their id
may already name another message). Nothing is lost across a broker restart only if the
broker keeps the session: persistence on, with a store it can write.

It also subscribes to the edge agents' judgements and status
(``sqems/v1/+/+/edge/+/+``, seven levels) and hands those to
:class:`~sqems.ingestion.edge_records.EdgeRecords`, in the same batches and under the
same acknowledgement rule.

Alarms go back out on the series' ``…/alarm`` topic (QoS 1, JSON); an alarm on a
critical parameter also sends ``{"command": "stop_line", …}`` to the line's
``sqems/v1/{site}/{line}/command`` topic (the line the graph puts the machine on).

Several workers may share the stream, each with a :class:`~sqems.ingestion.partition.
Partition`: a worker subscribes to the whole tree in its own persistent session and
acknowledges at once, unread, what another partition owns (that partition's session
holds its own copy), so each series is ingested, in order, by exactly one worker (see
:mod:`sqems.ingestion.partition` for why not a shared subscription).

A watchdog thread looks at the worker every ``WATCHDOG_S``: a worker that died (an
exception it could not isolate to one message, such as a store that fails) makes
ingestion unhealthy at once — logged, an alarm on ``sqems/v1/ingestion/alarm`` and to
every alarm sink, ``ingestionStatus.health`` and ``/readyz`` say why — and is started
again after a backoff (1 s doubling to 30 s). The batch it was working on is kept, not
acknowledged, and is the first thing the new worker tries; once that gets through,
ingestion is healthy again.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sqems.errors import BrokerUnavailable
from sqems.ingestion.broker import ANSWER_S, BrokerAccess
from sqems.ingestion.edge_records import EdgeRecords, is_edge_topic, subscription_for
from sqems.ingestion.partition import WHOLE, Owned, Partition
from sqems.ingestion.payloads import PREFIX
from sqems.ingestion.pipeline import FAULT_TOPIC, AlarmEvent, Counters, Ingestor, Message

log = logging.getLogger(__name__)

SUBSCRIPTION = f"{PREFIX}/+/+/+/+"
DROPPED = "$SYS/broker/publish/messages/dropped"
"""Where Mosquitto publishes how many messages it has dropped since it started (every
``sys_interval`` seconds, when the count changed): QoS 1 messages it threw away because
a subscriber's queue was full (``max_queued_messages``) are lost without the subscriber
ever hearing of them."""
BATCH = 2_000
"""Messages handed to the pipeline at most at once."""
LINGER_S = 0.02
"""How long a batch waits for more messages before it is written."""
WATCHDOG_S = 0.5
"""How often the watchdog looks whether the worker is alive."""
RESTART_S = (1.0, 30.0)
"""The watchdog's backoff before starting a dead worker again: first, at most."""
REPORT_S = 0.5
"""How often the worker calls ``on_progress`` (between batches, and when idle)."""

_Queued = tuple[Message, int, int]
"""A message, its packet id and the connection it came in on."""


class MqttIngestion:
    """A subscriber feeding ``ingestor`` from the broker at ``host:port``."""

    def __init__(
        self,
        ingestor: Ingestor,
        host: str,
        port: int,
        *,
        client_id: str = "sqems-ingest",
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        partition: Partition = WHOLE,
        subscription: str = SUBSCRIPTION,
        on_progress: Callable[[MqttIngestion], None] | None = None,
        edge_records: EdgeRecords | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.edge_records = edge_records or EdgeRecords(ingestor.graph, ingestor.quarantine, None)
        """Where judgements and statuses of the edge agents of the subscription's sites
        and lines (:func:`~sqems.ingestion.edge_records.subscription_for`) go; closed
        with the ingestion."""
        self.partition = partition
        self.subscription = subscription
        """The reading topics this worker listens to: the whole tree, or a part of it
        (a site, a line) that a deployment gives a set of workers of its own."""
        self._owned = None if partition.whole else Owned(partition)
        self.passed = 0
        """Messages another partition owns, acknowledged unread."""
        self.on_progress = on_progress
        """Called on the worker's thread between batches (at most every ``REPORT_S``,
        and once when it stops), when the counters are not moving: to report them."""
        self._reported = 0.0
        self.access = BrokerAccess(host, port, username, password, tls=tls is not None)
        self.refused: BrokerUnavailable | None = None
        """Why the broker refused the last connection or the subscription, if it did."""
        self._answered = threading.Event()
        self.broker_dropped: int | None = None
        """Messages the broker has dropped since it started, for all its subscribers (its
        ``$SYS`` count); None until the broker has told us."""
        self._inbox: deque[_Queued] = deque()
        """What paho's thread received, for the worker (appending and popping a deque
        is atomic, and far cheaper per message than a locked queue)."""
        self._arrived = threading.Event()
        """Set when a message arrives; the worker clears it before it waits."""
        self._pending: list[_Queued] = []
        """The batch being worked on: a worker that dies leaves it to the next one."""
        self._connection = 0
        """Counts the connections lost; a message carries the count it arrived under."""
        self._connects = 0
        self._stop = threading.Event()
        self.connected = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.manual_ack_set(True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(1_000)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.message_callback_add(DROPPED, self._on_dropped)
        self.client = client
        self.host, self.port = host, port
        ingestor.sinks.append(self.publish_alarm)
        self._worker = self._new_worker()
        self._watchdog = threading.Thread(
            target=self._watch, name="sqems-ingest-watchdog", daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start ingesting. A broker that cannot be reached yet is tried again
        in the background; one that refuses SQEMS (its certificate does not verify, the
        credentials are wrong, it never answers) raises
        :class:`~sqems.errors.BrokerUnavailable` with the reason instead."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
            reached = True
        except ssl.SSLError as exc:
            raise self.access.unreachable(exc) from None
        except OSError as exc:
            reached = False
            log.warning(
                "cannot reach the broker yet; retrying",
                extra={"url": self.access.url, "reason": str(exc)},
            )
        self.client.loop_start()
        if reached and not (self._answered.wait(ANSWER_S) and self.connected.is_set()):
            self.client.disconnect()
            self.client.loop_stop()
            raise self.refused or self.access.silent()
        self._worker.start()
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watchdog.is_alive():
            self._watchdog.join(timeout=30)
        self._worker.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()
        self.edge_records.close()

    def __enter__(self) -> MqttIngestion:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def counters(self) -> Counters:
        return self.ingestor.counters

    # --- callbacks (paho's network thread) -----------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused = self.access.refused(reason)
            self._answered.set()
            log.error("broker refused the connection", extra={"reason": str(reason)})
            return
        self._connects += 1
        if self._connects > 1 and not flags.session_present:
            log.warning(
                "the broker kept no session for us: what it held for us while we were away "
                "is lost (is its persistence on, with a store it can write?)",
                extra={"host": self.host, "port": self.port},
            )
        client.subscribe(
            [(self.subscription, 1), (DROPPED, 0), (subscription_for(self.subscription), 1)]
        )
        log.info("connected to the broker", extra={"host": self.host, "port": self.port})

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, reasons: list[Any], _p: Any) -> None:
        # connected means subscribed: until the broker has the subscription, readings
        # published for a session it has never seen go to nobody
        if reasons and reasons[0].is_failure:
            self.refused = BrokerUnavailable(
                f"the MQTT broker at {self.access.url} refused the subscription to "
                f"{self.subscription}: {reasons[0]} (its ACL must let SQEMS's user read it)"
            )
            log.error("broker refused the subscription", extra={"reason": str(reasons[0])})
        else:
            self.refused = None
            self.connected.set()
        self._answered.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connection += 1  # from now on acks for what came in before are not sent
        self.connected.clear()
        self._answered.set()  # closed before it answered: start() says so
        if not self._stop.is_set():
            log.warning("lost the broker; reconnecting", extra={"reason": str(reason)})

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._owned is not None and not self._owned(message.topic):
            # its owner gets its own copy in its own session
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            self.passed += 1
            return
        received = Message(message.topic, bytes(message.payload), datetime.now(UTC))
        mid = message.mid if message.qos > 0 else -1
        self._inbox.append((received, mid, self._connection))
        if not self._arrived.is_set():
            self._arrived.set()

    def _on_dropped(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            dropped = int(message.payload)
        except ValueError:
            return
        before = self.broker_dropped or 0
        self.broker_dropped = dropped
        if dropped > before:
            log.warning(
                "the broker dropped %d messages (%d in all since it started): a subscriber's "
                "queue was full, and what it dropped never reaches the readings store "
                "(raise the broker's max_queued_messages, or ingest faster)",
                dropped - before,
                dropped,
                extra={"url": self.access.url, "broker_dropped": dropped},
            )

    # --- the worker and its watchdog ------------------------------------------------------

    def _new_worker(self) -> threading.Thread:
        return threading.Thread(target=self._work, name="sqems-ingest", daemon=True)

    def _work(self) -> None:
        try:
            self._drain()
        except Exception as exc:  # reported; the watchdog starts a new worker
            self.ingestor.fault("the ingestion worker died", exc, down=True)
        self._progress(final=True)

    def _progress(self, *, final: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if final or now - self._reported >= REPORT_S:
            self._reported = now
            try:
                self.on_progress(self)
            except OSError as exc:  # a report that cannot be written must not stop ingestion
                log.warning("cannot report the ingestion's progress: %s", exc)

    def _drain(self) -> None:
        if self._pending:  # what a worker that died was working on
            self._handle(self._pending)
        self.ingestor.recovered()
        inbox = self._inbox
        quiet = True
        while not (self._stop.is_set() and not inbox):
            if not inbox:
                self._progress()
                self.edge_records.retry()
                self._arrived.clear()
                if not inbox:  # a message appended before the clear is seen here
                    self._arrived.wait(0.1)
                quiet = True
                continue
            if quiet:  # the first message after a quiet spell waits for others
                deadline = time.monotonic() + LINGER_S
                while len(inbox) < BATCH and (left := deadline - time.monotonic()) > 0:
                    time.sleep(min(left, 0.005))
            # what piled up meanwhile is taken at once: the broker sends no more than
            # its in-flight window until these are acknowledged
            self._pending = [inbox.popleft() for _ in range(min(len(inbox), BATCH))]
            self._handle(self._pending)
            self._progress()
            quiet = False

    def _handle(self, batch: list[_Queued]) -> None:
        # edge records first: a graph store that fails them leaves the whole batch to
        # be tried again, with none of its readings counted yet
        self.edge_records.handle_many(m for m, _, _ in batch if is_edge_topic(m.topic))
        self.ingestor.handle_many([m for m, _, _ in batch if not is_edge_topic(m.topic)])
        for _, mid, connection in batch:
            # an id from an earlier connection may name another message by now
            if mid >= 0 and connection == self._connection:
                self.client.ack(mid, 1)
        self._pending = []

    def _watch(self) -> None:
        """Start the worker again whenever it died (see the module docstring)."""
        delay = RESTART_S[0]
        while not self._stop.wait(WATCHDOG_S):
            if self._worker.is_alive():
                if self.ingestor.health.healthy:
                    delay = RESTART_S[0]
                continue
            if self.ingestor.health.healthy:  # it ended without a word
                self.ingestor.fault("the ingestion worker stopped", down=True)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RESTART_S[1])
            self.ingestor.health.restarts += 1
            log.warning("restarting the ingestion worker", extra={"pending": len(self._pending)})
            self._worker = self._new_worker()
            self._worker.start()

    # --- out -----------------------------------------------------------------------------

    def publish_alarm(self, event: AlarmEvent) -> None:
        for topic, payload in alarm_messages(event):
            self.client.publish(topic, payload, qos=1)


def alarm_messages(event: AlarmEvent) -> list[tuple[str, bytes]]:
    """What the line hears of ``event``, as (topic, payload) pairs to publish with QoS 1:
    the alarm on its series' ``…/alarm`` topic and, for a critical parameter, the
    stop-line command on the line's command topic (an alarm about ingestion itself goes
    to :data:`FAULT_TOPIC`). The edge agent publishes the same messages."""
    alarm = event.alarm
    body: dict[str, Any]
    if event.topic is None:  # about ingestion itself
        body = {
            "uid": alarm.uid,
            "rule": alarm.rule,
            "severity": alarm.severity.value,
            "raised_at": alarm.raised_at.isoformat(),
            "message": alarm.message,
        }
        return [(FAULT_TOPIC, json.dumps(body).encode())]
    body = {
        "uid": alarm.uid,
        "rule": alarm.rule,
        "severity": alarm.severity.value,
        "raised_at": alarm.raised_at.isoformat(),
        "machine": event.topic.machine,
        "parameter": event.topic.parameter,
        "run": event.run,
        "value": alarm.value,
        "message": alarm.message,
    }
    out = [(event.topic.alarm, json.dumps(body).encode())]
    if event.critical:
        command = {"command": "stop_line", "reason": alarm.message, "alarm": alarm.uid}
        out.append((event.topic.command, json.dumps(command).encode()))
    return out
