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

Alarms go back out on the series' ``…/alarm`` topic (QoS 1, JSON); an alarm on a
critical parameter also sends ``{"command": "stop_line", …}`` to the line's
``sqems/v1/{site}/{line}/command`` topic.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sqems.ingestion.payloads import PREFIX
from sqems.ingestion.pipeline import AlarmEvent, Counters, Ingestor, Message

log = logging.getLogger(__name__)

SUBSCRIPTION = f"{PREFIX}/+/+/+/+"
BATCH = 2_000
"""Messages handed to the pipeline at most at once."""
LINGER_S = 0.02
"""How long a batch waits for more messages before it is written."""


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
    ) -> None:
        self.ingestor = ingestor
        self._queue: queue.Queue[tuple[Message, int, int]] = queue.Queue()
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
        client.manual_ack_set(True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(1_000)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self.host, self.port = host, port
        ingestor.sinks.append(self.publish_alarm)
        self._worker = threading.Thread(target=self._drain, name="sqems-ingest", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        self._worker.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()

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
            log.error("broker refused the connection", extra={"reason": str(reason)})
            return
        self._connects += 1
        if self._connects > 1 and not flags.session_present:
            log.warning(
                "the broker kept no session for us: what it held for us while we were away "
                "is lost (is its persistence on, with a store it can write?)",
                extra={"host": self.host, "port": self.port},
            )
        client.subscribe(SUBSCRIPTION, qos=1)
        self.connected.set()
        log.info("connected to the broker", extra={"host": self.host, "port": self.port})

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connection += 1  # from now on acks for what came in before are not sent
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the broker; reconnecting", extra={"reason": str(reason)})

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        received = Message(message.topic, bytes(message.payload), datetime.now(UTC))
        mid = message.mid if message.qos > 0 else -1
        self._queue.put((received, mid, self._connection))

    # --- the worker ----------------------------------------------------------------------

    def _drain(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + LINGER_S
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self.ingestor.handle_many([m for m, _, _ in batch])
            for _, mid, connection in batch:
                # an id from an earlier connection may name another message by now
                if mid >= 0 and connection == self._connection:
                    self.client.ack(mid, 1)

    # --- out -----------------------------------------------------------------------------

    def publish_alarm(self, event: AlarmEvent) -> None:
        alarm = event.alarm
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
        self.client.publish(event.topic.alarm, json.dumps(body), qos=1)
        if event.critical:
            command = {"command": "stop_line", "reason": alarm.message, "alarm": alarm.uid}
            self.client.publish(event.topic.command, json.dumps(command), qos=1)
