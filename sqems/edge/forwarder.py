"""Delivers the store-and-forward queue to the central broker, in order, at least once.

One paho client (MQTT 3.1.1, clean session) holds the edge's connection to the central
broker. Its network loop reconnects by itself with backoff (1 s doubling to 30 s by
default) for as long as the central broker is down. A delivery thread publishes the
queue's items oldest first with QoS 1, at most ``window`` unacknowledged at a time, and
removes an item from the queue only when the broker's PUBACK for it arrived.

Order: the items of one connection go out in queue order, and the broker takes a
client's QoS 1 messages in the order they arrive. Items still unacknowledged when the
connection drops stay in paho's outgoing window and are sent again first, in their
order, when it comes back (with the DUP flag); nothing newer is published until they are
acknowledged, and the window is never larger than paho's own in-flight limit, so nothing
overtakes them. After a restart of the agent the thread starts again from the oldest
item in the queue.

Once: a PUBACK lost with the connection means the broker may have the item already
and gets it again. That is harmless, because the central store keeps each record once
by its message id: a reading by its ``id``, a judgement by its ``id``, an alarm by its
uid. At-least-once delivery plus dedup by id gives each record once in the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from sqems.edge.queue import StoreQueue
from sqems.ingestion.broker import BrokerAccess

log = logging.getLogger(__name__)

WINDOW = 100
"""Items published and not yet acknowledged, at most."""
RECONNECT_S = (1, 30)
"""The backoff between attempts to reach the central broker: first, at most."""
IDLE_S = 0.2
"""How long the delivery thread sleeps when it has nothing to do (new items wake it)."""


class Forwarder:
    """The edge's connection to the central broker and the delivery of ``queue`` on it.

    ``will`` is the retained message the broker publishes if the edge vanishes (its
    status, offline); ``on_connect`` callbacks run on paho's thread after each
    connection (subscribe, publish the status)."""

    def __init__(
        self,
        queue: StoreQueue,
        access: BrokerAccess,
        client_id: str,
        *,
        window: int = WINDOW,
        reconnect: tuple[int, int] = RECONNECT_S,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.queue = queue
        self.access = access
        self.window = window
        self.forwarded = 0
        """Items the central broker acknowledged since the agent started."""
        self.connected = threading.Event()
        self.on_connect: list[Callable[[mqtt.Client], None]] = []
        self.last_error: str | None = None
        self._inflight: dict[int, int] = {}
        """paho's message id → queue sequence number, for items awaiting their PUBACK."""
        self._early: set[int] = set()
        """Message ids whose PUBACK came before :meth:`_send` noted them."""
        self._acked: deque[int] = deque()
        """Sequence numbers acknowledged by the broker, for the thread to remove."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sent = 0
        """The highest sequence number handed to paho (it resends what it holds)."""
        self._held = False
        """Items of a lost connection are still unacknowledged: paho sends them again
        first on the next one, and nothing newer goes out until they are acknowledged
        (a new item published between the reconnection and paho's resending would
        overtake them)."""
        client = access.client(client_id, clean_session=True, protocol=mqtt.MQTTv311)
        client.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])
        client.max_inflight_messages_set(window)
        client.max_queued_messages_set(0)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="sqems-edge-forward", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (in the background: a central broker that is down is tried
        again until it answers) and delivering."""
        self.client.connect_async(self.access.host, self.access.port, keepalive=15)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._remove_acked()
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def restart(self) -> None:
        """Start the delivery thread again after it died (the watchdog's call): it
        carries on from the oldest item the queue still holds that paho does not."""
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread = self._new_thread()
            self._thread.start()

    def notify(self) -> None:
        """New items are in the queue."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # --- paho's thread -----------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.last_error = str(self.access.refused(reason))
            log.error("the central broker refused the edge", extra={"reason": str(reason)})
            return
        self.last_error = None
        log.info("connected to the central broker", extra={"url": self.access.url})
        for callback in self.on_connect:
            callback(client)
        self.connected.set()
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self._held = True
        if was and not self._stop.is_set():
            log.warning(
                "lost the central broker; the queue keeps everything until it is back",
                extra={"reason": str(reason), "queue_depth": self.queue.depth},
            )

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early.add(mid)
                return
        self._acked.append(seq)
        self._wake.set()

    # --- the delivery thread -----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._remove_acked()
            if self.connected.is_set() and self._send():
                continue
            self._wake.wait(IDLE_S)

    def _send(self) -> bool:
        """Hand paho the next items that fit in the window; whether it sent any."""
        if self._held:
            if self._inflight:
                return False
            self._held = False
        room = self.window - len(self._inflight)
        if room <= 0:
            return False
        items = self.queue.peek(room, after=self._sent)
        for item in items:
            info = self.client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # cannot happen with no queue limit
                log.error("paho refused a message", extra={"seq": item.seq})
                return False
            # sent, or kept by paho for the next connection: either way it is paho's now
            self._sent = item.seq
            if item.qos == 0:
                self._acked.append(item.seq)
                continue
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self._acked.append(item.seq)
                else:
                    self._inflight[info.mid] = item.seq
        return bool(items)

    def _remove_acked(self) -> None:
        done = []
        while self._acked:
            done.append(self._acked.popleft())
        if done:
            removed = self.queue.ack_many(done)
            self.forwarded += removed


def drain_rate(forwarder: Forwarder, timeout: float) -> float:
    """Wait until ``forwarder``'s queue is empty; items delivered per second meanwhile
    (for benchmarks and tests)."""
    start, before = time.monotonic(), forwarder.forwarded
    while forwarder.queue.depth and time.monotonic() - start < timeout:
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    return (forwarder.forwarded - before) / elapsed if elapsed > 0 else 0.0
