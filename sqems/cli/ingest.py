"""Ingestion commands: ingest, sensors, import, quarantine."""

from __future__ import annotations

import json
import signal
import time
from contextlib import ExitStack, closing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sqems.cli.app import command, err, out, quarantine_app
from sqems.cli.common import audit_trail, cli_user, graph_store
from sqems.cli.render import Column, print_table
from sqems.errors import NotFound, ValidationFailed

if TYPE_CHECKING:
    from sqems.ingestion.mqtt import MqttIngestion
    from sqems.ingestion.partition import Partition
    from sqems.settings import Settings


@command("ingest")
def ingest_cmd(
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: until Ctrl-C).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes sharing the stream, each owning a fixed share of the "
            "series (needs a Neo4j graph store when more than one).",
        ),
    ] = 1,
    partition: Annotated[
        str | None,
        typer.Option(
            help="Run one worker of several: k/N, the k-th (from 0) of N (e.g. under "
            "systemd, or on another machine).",
        ),
    ] = None,
) -> None:
    """Subscribe to the MQTT broker (SQEMS_MQTT_HOST/PORT) and ingest readings: validate,
    normalise units, dedup, store, quarantine what is refused, raise alarms; a critical
    alarm opens a CAPA. With --workers N, N processes share the stream, each series
    always ingested, in order, by the same one (see docs/ingestion.md).

    Example: sqems ingest --seconds 60
    Example: sqems ingest --workers 4
    """
    from sqems.ingestion.partition import WHOLE, Partition
    from sqems.settings import Settings

    if workers > 1 and partition is not None:
        raise ValidationFailed("give --workers N or --partition k/N, not both")
    share = Partition.parse(partition) if partition is not None else WHOLE
    count = workers if partition is None else share.count
    if count > 1:
        _need_shared_graph(Settings(), count)
    _stop_on_sigterm()
    if workers > 1:
        _launch(workers, seconds)
    else:
        _ingest(share, seconds)


def _need_shared_graph(settings: Settings, count: int) -> None:
    """Several workers write alarms and run summaries to the graph at once: the embedded
    store takes one writing process."""
    from sqems.graph_model.open import NEO4J_SCHEMES

    if not settings.graph_uri.strip().startswith(NEO4J_SCHEMES):
        raise ValidationFailed(
            f"{count} ingestion workers write alarms and run summaries to the graph at "
            f"once, and the embedded store ({settings.graph_uri}) takes one writing "
            "process: use Neo4j (SQEMS_GRAPH_URI=neo4j://…), or one worker"
        )


def _stop_on_sigterm() -> None:
    """SIGTERM (systemd, the launcher, a container's stop) stops as Ctrl-C does: the
    batch in hand is finished and acknowledged first."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _ingest(share: Partition, seconds: float | None) -> None:
    from sqems.ingestion import service
    from sqems.ingestion.broker import BrokerAccess
    from sqems.ingestion.workers import StatusFile
    from sqems.quality.capa import Workflow, open_on_critical_alarms

    with graph_store() as (store, settings), service.ingestor(settings, store, share) as pipeline:
        trail = audit_trail(settings)
        pipeline.sinks.append(open_on_critical_alarms(Workflow(store, trail)))
        report = StatusFile(service.status_path(settings, share), share)
        bridge = service.mqtt_ingestion(settings, pipeline, share, on_progress=report)
        which = "" if share.whole else f"worker {share} "
        err.print(
            f"{which}ingesting from {BrokerAccess.of(settings).url} "
            f"into {store.description}; Ctrl-C to stop"
        )
        began = time.monotonic()
        with bridge:
            try:
                while seconds is None or time.monotonic() - began < seconds:
                    time.sleep(min(5.0, seconds or 5.0))
                    c = bridge.counters
                    err.print(
                        f"{which}received {c.received:,}  accepted {c.accepted:,}  "
                        f"quarantined {c.quarantined:,}  duplicates {c.duplicates:,}  "
                        f"alarms {c.alarms:,}  connected {bridge.connected.is_set()}"
                    )
                    if bridge.edge_records.states():
                        err.print(f"{which}{_edges_line(bridge)}", highlight=False)
            except KeyboardInterrupt:
                err.print(f"{which}stopping…")
        trail.close()
        c = bridge.counters
        out.print(
            f"{which}received {c.received:,}: accepted {c.accepted:,}, quarantined "
            f"{c.quarantined:,}, duplicates {c.duplicates:,}; {c.alarms:,} alarms"
        )
        if bridge.edge_records.states() or bridge.edge_records.counters.judgements:
            out.print(f"{which}{_edges_line(bridge)}", highlight=False)


def _edges_line(bridge: MqttIngestion) -> str:
    """The edge agents heard from and what became of their judgements, on one line."""
    now = datetime.now(UTC)
    shown = []
    for e in bridge.edge_records.states():
        ago = (now - datetime.fromisoformat(e.last_seen)).total_seconds()
        models = ",".join(f"{k} {v}" for k, v in sorted(e.models.items())) or "no model"
        queue = "?" if e.queue_depth is None else f"{e.queue_depth:,}"
        state = "online" if e.online else "OFFLINE"
        shown.append(f"{e.edge} {state} ({models}; queue {queue}; seen {ago:.0f} s ago)")
    j = bridge.edge_records.counters
    return (
        f"edges: {'; '.join(shown) or 'none'} | judgements {j.judgements:,}: stored "
        f"{j.stored:,}, duplicates {j.duplicates:,}, waiting for their unit {j.pending:,}"
    )


def _launch(workers: int, seconds: float | None) -> None:
    from sqems.ingestion import service
    from sqems.ingestion.broker import BrokerAccess
    from sqems.ingestion.workers import Launcher, statuses, totals, worker_command
    from sqems.settings import Settings

    settings = Settings()
    launcher = Launcher(workers, worker_command, say=lambda m: err.print(m, highlight=False))
    err.print(
        f"{workers} ingestion workers on {BrokerAccess.of(settings).url}, each owning a "
        "fixed share of the series; Ctrl-C to stop"
    )

    def total() -> str:
        found = statuses(lambda p: service.status_path(settings, p), workers)
        c = totals(found)
        up = sum(1 for s in found if s is not None and s.connected)
        return (
            f"received {c.received:,}: accepted {c.accepted:,}, quarantined "
            f"{c.quarantined:,}, duplicates {c.duplicates:,}, spooled {c.spooled:,}; "
            f"{c.alarms:,} alarms; {up} of {workers} workers connected"
        )

    launcher.start()
    began = time.monotonic()
    shown = began
    try:
        while seconds is None or time.monotonic() - began < seconds:
            time.sleep(0.2)
            launcher.watch()
            if time.monotonic() - shown >= 5.0:
                shown = time.monotonic()
                err.print(total(), highlight=False)
    except KeyboardInterrupt:
        err.print("stopping the workers…")
    finally:
        codes = launcher.stop()
    if any(code not in (0, None) for code in codes):
        err.print(f"[yellow]worker exit codes: {codes}[/yellow]")
    out.print(f"{workers} workers: {total()}", highlight=False)


@command("sensors")
def sensors_cmd(
    rate: Annotated[float, typer.Option(help="Readings per second per sensor.")] = 10.0,
    seconds: Annotated[float, typer.Option(help="How much time the stream covers.")] = 60.0,
    per_message: Annotated[int, typer.Option(help="Readings in one MQTT message.")] = 10,
    drift: Annotated[bool, typer.Option(help="Plant the reflow oven's drift.")] = True,
    fast: Annotated[bool, typer.Option(help="Publish as fast as possible.")] = False,
) -> None:
    """Publish realistic sensor streams for the plant in the graph to the MQTT broker.

    Example: sqems sensors --rate 10 --seconds 60
    """
    from sqems.ingestion import sensors, service

    with graph_store(read_only=True) as (store, settings):
        found = sensors.sensors_of(store)
    if not found:
        raise ValidationFailed("the graph has no parameters with spec limits: run `sqems demo`")
    client = service.mqtt_publisher(settings, "sqems-sensors")
    began = time.monotonic()
    sent = 0
    session = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    try:
        for topic, body in sensors.stream(
            found,
            rate_hz=rate,
            seconds=seconds,
            per_message=per_message,
            drift=sensors.Drift() if drift else None,
            session=session,
        ):
            client.publish(topic, body, qos=1)
            sent += 1
            if not fast:
                due = began + sent / len(found) * per_message / rate
                time.sleep(max(0.0, due - time.monotonic()))
    finally:
        client.loop_stop()
        client.disconnect()
    out.print(f"published {sent:,} messages from {len(found)} sensors")


@command("import")
def import_cmd(
    kind: Annotated[str, typer.Argument(help="erp, plm, crm or inspection.")],
    path: Annotated[Path, typer.Argument(help="A CSV file named after its table, or a folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import an ERP, PLM, CRM or inspection extract, cleansed: what cannot be taken goes
    to the quarantine with the reason (see `sqems quarantine list`). A batch's hold or a
    unit's disposition is never changed by an import; a quality record it changes is
    written to the audit trail.

    Example: sqems import inspection inspection.csv
    """
    from sqems.ingestion import importers, service

    if not path.exists():  # before the store and the quarantine are opened for writing
        raise NotFound(f"{path} does not exist")
    with graph_store() as (store, settings), ExitStack() as opened:
        q = service.open_quarantine(settings)
        opened.callback(q.close)
        report = importers.import_file(
            store, q, kind, path, actor=cli_user(),
            trail=lambda: opened.enter_context(closing(audit_trail(settings))),
            max_cell_chars=settings.import_max_cell_chars,
        )  # fmt: skip
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    print_table(
        [Column("table", "id"), Column("read", "number"), Column("imported", "number"),
         Column("duplicates", "number"), Column("quarantined", "number")],
        [(name, f"{report.read[name]:,}", f"{report.imported[name]:,}",
          f"{report.duplicates[name]:,}", f"{report.quarantined[name]:,}")
         for name in sorted(report.read)],
    )  # fmt: skip
    if report.reasons:
        out.print("quarantined: " + ", ".join(f"{n} {r}" for r, n in report.reasons.items()))
    if report.units_unified:
        out.print(f"unit spellings unified: {report.units_unified}")
    for k in report.kept:
        out.print(f"[yellow]kept, the quality workflow owns it:[/yellow] {escape(str(k))}")
    for c in report.changed:
        out.print(f"changed {c.after.uid} ({', '.join(c.fields)}) from {c.row}; in the audit trail")


@command("list", on=quarantine_app)
def quarantine_list(
    every: Annotated[bool, typer.Option("--all", help="Include entries replayed OK.")] = False,
    after: Annotated[int, typer.Option(help="Only entries with a higher id.")] = 0,
    limit: Annotated[int, typer.Option(help="How many.")] = 50,
) -> None:
    """What ingestion refused, oldest first, with the reasons.

    Example: sqems quarantine list --all
    """
    from sqems.ingestion import service
    from sqems.settings import Settings

    q = service.open_quarantine(Settings())
    try:
        entries = q.entries(after=after, limit=limit, open_only=not every, raw_bytes=0)
        total = q.count()
    finally:
        q.close()
    print_table(
        [Column("id", "number"), Column("received", "id"), Column("source", "id"), "reason",
         "outcome"],
        [(str(e.id), e.received_at, e.source, escape(e.reason), escape(e.outcome or ""))
         for e in entries],
    )  # fmt: skip
    out.print(f"{len(entries):,} shown of {total:,} kept")


@command("show", on=quarantine_app)
def quarantine_show(entry_id: Annotated[int, typer.Argument(help="The entry's id.")]) -> None:
    """One entry with its raw payload exactly as received.

    Example: sqems quarantine show 12
    """
    from sqems.ingestion import service
    from sqems.settings import Settings

    q = service.open_quarantine(Settings())
    try:
        e = q.get(entry_id)
    finally:
        q.close()
    out.print(
        f"id {e.id}\nreceived {e.received_at}\nsource {e.source}\nitem {e.item}\n"
        f"reason {e.reason}\noutcome {e.outcome or '-'}"
    )
    out.print("raw:")
    out.print(e.raw.decode("utf-8", errors="backslashreplace"), markup=False, highlight=False)


@command("replay", on=quarantine_app)
def quarantine_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Entry ids.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every open entry.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="How many workers ingest the stream (default: as the data directory's "
            "worker stores say, else one).",
        ),
    ] = None,
) -> None:
    """Run entries through the pipeline again, once their cause is fixed. With several
    ingestion workers, each entry's readings go to the store of the worker that owns its
    series; the workers concerned must be stopped (each holds its store while it runs).

    Example: sqems quarantine replay --all
    Example: sqems quarantine replay 12 13 --workers 4
    """
    from sqems.ingestion import service
    from sqems.ingestion.partition import WHOLE
    from sqems.settings import Settings

    if bool(ids) == every:
        raise ValidationFailed("give entry ids or --all")
    settings = Settings()
    count = workers or _worker_count(settings)
    q = service.open_quarantine(settings)
    try:
        if ids:
            wanted = [q.get(entry_id) for entry_id in ids]
        else:
            wanted = q.entries(limit=1_000_000, raw_bytes=0)
    finally:
        q.close()
    routes = service.by_owner(wanted, count) if count > 1 else {WHOLE: [e.id for e in wanted]}
    with graph_store() as (store, settings), ExitStack() as opened:
        # every store concerned first: a running worker refuses the replay before any
        # entry is replayed, not half-way through
        pipelines = {
            part: opened.enter_context(service.ingestor(settings, store, part)) for part in routes
        }
        for part, entry_ids in routes.items():
            which = "" if part.whole else f" (worker {part})"
            for entry_id in entry_ids:
                e = pipelines[part].replay(entry_id)
                out.print(f"{e.id}: {e.outcome}{which}", highlight=False)


def _worker_count(settings: Settings) -> int:
    """How many workers the data directory's stores were written by: one count, or a
    question for the user when it has stores of several."""
    from sqems.ingestion import service

    counts = service.worker_counts(settings)
    if len(counts) > 1:
        raise ValidationFailed(
            f"the data directory has stores of {', '.join(map(str, counts))} workers: "
            "say with --workers N how many ingest the stream now"
        )
    return counts[0] if counts else 1
