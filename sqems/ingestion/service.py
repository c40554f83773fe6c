"""Where ingestion keeps its files, and the pipeline built from settings.

Under the data directory: ``readings.duckdb`` (the readings store),
``quarantine.db`` (everything refused), ``spool.jsonl`` (what waits for the graph store)
and ``parquet/`` (exports).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt

from sqems.graph_model.store import GraphStore
from sqems.ingestion.broker import BrokerAccess, connect
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.spool import Spool
from sqems.settings import Settings

READINGS_FILE = "readings.duckdb"
QUARANTINE_FILE = "quarantine.db"
SPOOL_FILE = "spool.jsonl"


def open_quarantine(settings: Settings) -> Quarantine:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Quarantine(settings.data_dir / QUARANTINE_FILE)


@contextmanager
def ingestor(settings: Settings, graph: GraphStore) -> Iterator[Ingestor]:
    """A pipeline on the data directory's readings store and quarantine."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    readings = ReadingsStore(settings.data_dir / READINGS_FILE)
    quarantine = Quarantine(settings.data_dir / QUARANTINE_FILE)
    try:
        yield Ingestor(graph, readings, quarantine, spool=Spool(settings.data_dir / SPOOL_FILE))
    finally:
        readings.close()
        quarantine.close()


def mqtt_ingestion(settings: Settings, pipeline: Ingestor) -> MqttIngestion:
    """The subscriber for the configured broker, with its credentials and TLS."""
    access = BrokerAccess.of(settings)
    return MqttIngestion(
        pipeline,
        access.host,
        access.port,
        client_id=settings.mqtt_client_id,
        username=access.username,
        password=access.password,
        tls=access.tls_context(),
    )


def mqtt_publisher(settings: Settings, client_id: str) -> mqtt.Client:
    """A paho client connected to the configured broker with its credentials and TLS,
    its network loop running; :class:`~sqems.errors.BrokerUnavailable` with the reason
    if the broker cannot be reached or refuses it."""
    access = BrokerAccess.of(settings)
    client = access.client(client_id)
    connect(client, access)
    return client
