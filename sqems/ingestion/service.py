"""Where ingestion keeps its files, and the pipeline built from settings.

Under the data directory: ``readings.duckdb`` (the readings store),
``quarantine.db`` (everything refused), ``spool.jsonl`` (what waits for the graph store)
and ``parquet/`` (exports).

Several workers sharing the stream (``sqems ingest --workers N``) each write a readings
store and a spool of their own, under ``workers/<k>of<N>/`` (DuckDB takes one writing
process per file), and report their counters in ``ingest-status.json`` there
(:mod:`sqems.ingestion.workers`). They share the quarantine: SQLite in WAL mode takes
writers from several processes, one at a time. The readings of a deployment are the
union of every store (:func:`readings_files`, :class:`~sqems.ingestion.union.
ReadingsUnion`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt

from sqems.graph_model.store import GraphStore
from sqems.ingestion.broker import BrokerAccess, connect
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.partition import WHOLE, Partition
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.spool import Spool
from sqems.settings import Settings

READINGS_FILE = "readings.duckdb"
QUARANTINE_FILE = "quarantine.db"
SPOOL_FILE = "spool.jsonl"
WORKERS_DIR = "workers"
STATUS_FILE = "ingest-status.json"


def open_quarantine(settings: Settings) -> Quarantine:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Quarantine(settings.data_dir / QUARANTINE_FILE)


def worker_dir(settings: Settings, partition: Partition) -> Path:
    """Where the worker of ``partition`` keeps its readings, spool and status (the data
    directory itself for a single worker)."""
    if partition.whole:
        return settings.data_dir
    return settings.data_dir / WORKERS_DIR / partition.name


def status_path(settings: Settings, partition: Partition) -> Path:
    """Where the worker of ``partition`` reports its counters."""
    return worker_dir(settings, partition) / STATUS_FILE


def readings_files(settings: Settings) -> list[Path]:
    """Every readings store of the data directory: the single worker's, and each
    partition's of every worker count it has run with."""
    found = [settings.data_dir / READINGS_FILE]
    found += sorted((settings.data_dir / WORKERS_DIR).glob(f"*of*/{READINGS_FILE}"))
    return [f for f in found if f.is_file()]


@contextmanager
def ingestor(
    settings: Settings, graph: GraphStore, partition: Partition = WHOLE
) -> Iterator[Ingestor]:
    """A pipeline on the readings store and spool of ``partition``'s worker and the
    data directory's quarantine."""
    home = worker_dir(settings, partition)
    home.mkdir(parents=True, exist_ok=True)
    readings = ReadingsStore(home / READINGS_FILE)
    quarantine = open_quarantine(settings)
    try:
        yield Ingestor(graph, readings, quarantine, spool=Spool(home / SPOOL_FILE))
    finally:
        readings.close()
        quarantine.close()


def mqtt_ingestion(
    settings: Settings,
    pipeline: Ingestor,
    partition: Partition = WHOLE,
    on_progress: Callable[[MqttIngestion], None] | None = None,
) -> MqttIngestion:
    """The subscriber for the configured broker, with its credentials and TLS; a
    partition's worker has a session of its own, ``<client id>-<k>of<N>``."""
    access = BrokerAccess.of(settings)
    client_id = settings.mqtt_client_id
    if not partition.whole:
        client_id = f"{client_id}-{partition.name}"
    return MqttIngestion(
        pipeline,
        access.host,
        access.port,
        client_id=client_id,
        username=access.username,
        password=access.password,
        tls=access.tls_context(),
        partition=partition,
        subscription=settings.mqtt_subscription,
        on_progress=on_progress,
    )


def mqtt_publisher(settings: Settings, client_id: str) -> mqtt.Client:
    """A paho client connected to the configured broker with its credentials and TLS,
    its network loop running; :class:`~sqems.errors.BrokerUnavailable` with the reason
    if the broker cannot be reached or refuses it."""
    access = BrokerAccess.of(settings)
    client = access.client(client_id)
    connect(client, access)
    return client
