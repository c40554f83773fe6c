"""Where ingestion keeps its files, and the pipeline built from settings.

Under the data directory: ``readings.duckdb`` (the readings store),
``quarantine.db`` (everything refused), ``spool.jsonl`` (what waits for the graph store),
``edge-pending.db`` (edge judgements whose unit is not in the graph yet) and
``parquet/`` (exports).

Several workers sharing the stream (``sqems ingest --workers N``) each write a readings
store and a spool of their own, under ``workers/<k>of<N>/`` (DuckDB takes one writing
process per file), and report their counters in ``ingest-status.json`` there
(:mod:`sqems.ingestion.workers`). They share the quarantine: SQLite in WAL mode takes
writers from several processes, one at a time. The readings of a deployment are the
union of every store (:func:`readings_files`, :class:`~sqems.ingestion.union.
ReadingsUnion`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt

from sqems.errors import ValidationFailed
from sqems.graph_model.store import GraphStore
from sqems.ingestion.broker import BrokerAccess, connect
from sqems.ingestion.edge_records import PENDING_FILE, EdgeRecords
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.partition import WHOLE, Partition, owner
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Entry, Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.spool import Spool
from sqems.settings import Settings

READINGS_FILE = "readings.duckdb"
QUARANTINE_FILE = "quarantine.db"
SPOOL_FILE = "spool.jsonl"
WORKERS_DIR = "workers"
STATUS_FILE = "ingest-status.json"
_WORKER_DIR = re.compile(r"^(\d+)of(\d+)$")


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


def worker_counts(settings: Settings) -> list[int]:
    """The numbers of workers the data directory has readings stores of
    (``workers/<k>of<N>/``), smallest first; empty when only one worker has run."""
    found = set()
    for home in (settings.data_dir / WORKERS_DIR).glob("*of*"):
        named = _WORKER_DIR.match(home.name)
        if named and (home / READINGS_FILE).is_file():
            found.add(int(named[2]))
    return sorted(found)


def by_owner(entries: Iterable[Entry], count: int) -> dict[Partition, list[int]]:
    """Quarantine entries' ids by the partition of ``count`` workers that owns each
    one's topic, in id order within each (so a series is replayed in the order it was
    refused); an entry from a file (no topic) goes with partition 0, which refuses it
    with the reason."""
    found: dict[Partition, list[int]] = {}
    for e in sorted(entries, key=lambda e: e.id):
        topic = e.source.removeprefix("mqtt:") if e.source.startswith("mqtt:") else ""
        k = owner(topic, count) if topic else 0
        found.setdefault(Partition(k, count), []).append(e.id)
    return dict(sorted(found.items(), key=lambda item: item[0].index))


@contextmanager
def ingestor(
    settings: Settings, graph: GraphStore, partition: Partition = WHOLE
) -> Iterator[Ingestor]:
    """A pipeline on the readings store and spool of ``partition``'s worker and the
    data directory's quarantine; :class:`ValidationFailed` saying so when that worker
    is running (it holds its readings store: DuckDB takes one writing process)."""
    home = worker_dir(settings, partition)
    home.mkdir(parents=True, exist_ok=True)
    try:
        readings = ReadingsStore(home / READINGS_FILE)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        which = "sqems ingest" if partition.whole else f"ingestion worker {partition}"
        raise ValidationFailed(
            f"{which} is running and holds its readings store {home / READINGS_FILE}: "
            "stop it first (readings go to the store of the worker that owns their series)"
        ) from exc
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
    home = worker_dir(settings, partition)
    home.mkdir(parents=True, exist_ok=True)
    edges = EdgeRecords(pipeline.graph, pipeline.quarantine, home / PENDING_FILE)
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
        edge_records=edges,
    )


def mqtt_publisher(settings: Settings, client_id: str) -> mqtt.Client:
    """A paho client connected to the configured broker with its credentials and TLS,
    its network loop running; :class:`~sqems.errors.BrokerUnavailable` with the reason
    if the broker cannot be reached or refuses it."""
    access = BrokerAccess.of(settings)
    client = access.client(client_id)
    connect(client, access)
    return client
