"""How SQEMS reaches the MQTT broker: the address, the credentials and TLS, for every
client it opens.

Every paho client the product creates (the ingestion's subscriber, which also sends
alarms and stop-line commands, and the sensor simulator's publisher) is built from one
:class:`BrokerAccess`, so none of them can forget the password or the certificate
check. TLS always verifies the broker: its certificate must chain to the CA in
``SQEMS_MQTT_CA_FILE`` (or the system's CAs) and name the host SQEMS dials; there is
no setting that turns the check off.

A broker that refuses SQEMS (a certificate that does not verify, a wrong password)
is an error with the reason, raised at once, not a connection retried for ever:

>>> access = BrokerAccess("broker.plant.example", 8883, tls=True)
>>> access.url
'mqtts://broker.plant.example:8883'
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sqems.errors import BrokerUnavailable, ConfigError
from sqems.settings import Settings

log = logging.getLogger(__name__)

ANSWER_S = 10.0
"""How long a connection waits for the broker's answer (CONNACK) before giving up."""


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    """Where the broker is and how SQEMS proves who it is to it."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    """The CA that signed the broker's certificate; None trusts the system's CAs."""
    cert_file: Path | None = None
    """A client certificate, for a broker that asks for one (``require_certificate``)."""
    key_file: Path | None = None

    @classmethod
    def of(cls, settings: Settings) -> BrokerAccess:
        return cls(
            settings.mqtt_host,
            settings.mqtt_port,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            tls=settings.mqtt_tls,
            ca_file=settings.mqtt_ca_file,
            cert_file=settings.mqtt_cert_file,
            key_file=settings.mqtt_key_file,
        )

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context every client uses (None without TLS): the broker's certificate
        is verified and must name :attr:`host`."""
        files = {"CA_FILE": self.ca_file, "CERT_FILE": self.cert_file, "KEY_FILE": self.key_file}
        named = ", ".join(f"SQEMS_MQTT_{name}" for name, path in files.items() if path)
        if not self.tls:
            if named:
                raise ConfigError(
                    f"{named} set but SQEMS_MQTT_TLS is off: the connection would not use "
                    "them (set SQEMS_MQTT_TLS=true, or unset them)"
                )
            if self.password is not None and not _loopback(self.host):
                log.warning(
                    "the MQTT password goes to %s in clear: anyone on the network path can "
                    "read it (set SQEMS_MQTT_TLS=true; deploy/mosquitto has a TLS listener)",
                    self.url,
                )
            return None
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("SQEMS_MQTT_KEY_FILE is set without SQEMS_MQTT_CERT_FILE")
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"SQEMS_MQTT_CA_FILE={self.ca_file} is not a readable PEM CA certificate: {exc}"
            ) from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"SQEMS_MQTT_CERT_FILE={self.cert_file} with SQEMS_MQTT_KEY_FILE="
                    f"{self.key_file} is not a client certificate and its key: {exc}"
                ) from None
        return context

    def client(self, client_id: str, **options: Any) -> mqtt.Client:
        """A paho client with this access's credentials and TLS (``options`` go to
        :class:`paho.mqtt.client.Client`); not connected yet."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, **options)
        self.secure(client)
        return client

    def secure(self, client: mqtt.Client) -> None:
        """Give ``client`` this access's credentials and TLS."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        context = self.tls_context()
        if context is not None:
            client.tls_set_context(context)

    def unreachable(self, exc: OSError) -> BrokerUnavailable:
        """The error for a connection that failed before the broker could answer."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return BrokerUnavailable(
                f"the MQTT broker at {self.url} did not prove who it is: "
                f"{exc.verify_message} (SQEMS_MQTT_CA_FILE must name the CA that signed "
                f"its certificate, and the certificate must name {self.host})"
            )
        if isinstance(exc, ssl.SSLError):
            return BrokerUnavailable(
                f"no TLS session with the MQTT broker at {self.url}: {exc.reason or exc} "
                "(is that port a TLS listener? SQEMS_MQTT_TLS must match the broker)"
            )
        return BrokerUnavailable(f"cannot reach the MQTT broker at {self.url}: {exc}")

    def refused(self, reason: object) -> BrokerUnavailable:
        """The error for a broker that answered the connection with ``reason``."""
        hint = (
            "check SQEMS_MQTT_USERNAME and SQEMS_MQTT_PASSWORD against the broker's password_file"
            if self.username is not None
            else "the broker allows no anonymous clients: set SQEMS_MQTT_USERNAME and "
            "SQEMS_MQTT_PASSWORD"
        )
        return BrokerUnavailable(
            f"the MQTT broker at {self.url} refused the connection: {reason} ({hint})"
        )

    def silent(self) -> BrokerUnavailable:
        """The error for a broker that took the connection but closed it, or never
        answered it."""
        client_cert = (
            "; does it require a client certificate? (SQEMS_MQTT_CERT_FILE, SQEMS_MQTT_KEY_FILE)"
            if self.tls and self.cert_file is None
            else ""
        )
        return BrokerUnavailable(
            f"the MQTT broker at {self.url} closed the connection or did not answer it "
            f"within {ANSWER_S:g} s (is that port a {'plain' if self.tls else 'TLS'} "
            f"listener? SQEMS_MQTT_TLS must match the broker{client_cert})"
        )


def send_promptly(client: mqtt.Client) -> None:
    """Switch Nagle's algorithm off on every socket ``client`` opens, reconnections too.

    paho leaves it on, so a small publish that follows one not yet acknowledged by TCP
    waits for the peer's delayed ACK: about 40 ms on Linux. That is nothing for a bulk
    sender, which gains from the coalescing, but it is the most of a stop-line
    command's or a judgement's way to the line."""

    def no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = no_delay


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(client: mqtt.Client, access: BrokerAccess, *, reach: bool = True) -> bool:
    """Connect ``client`` and start its network loop, or raise :class:`BrokerUnavailable`
    with the reason: a certificate that does not verify, refused credentials, no answer
    within :data:`ANSWER_S`, and (with ``reach``) a broker that cannot be reached; without
    ``reach`` that last one returns False instead."""
    answered = threading.Event()
    verdict: list[Any] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        verdict.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_: answered.set()  # closed before it answered
    try:
        client.connect(access.host, access.port)
    except OSError as exc:
        if reach or isinstance(exc, ssl.SSLError):
            raise access.unreachable(exc) from None
        return False
    client.loop_start()
    if not (answered.wait(ANSWER_S) and verdict and not verdict[0].is_failure):
        client.disconnect()
        client.loop_stop()
        raise access.refused(verdict[0]) if verdict else access.silent()
    return True


def check(access: BrokerAccess, client_id: str) -> None:
    """Raise :class:`BrokerUnavailable` if the broker refuses SQEMS (its certificate, the
    credentials); one that cannot be reached yet passes, as the ingestion will retry it.
    ``client_id`` must not be the ingestion's: a clean session under its id would end
    the ingestion's persistent one."""
    client = access.client(client_id)
    if connect(client, access, reach=False):
        client.disconnect()
        client.loop_stop()
