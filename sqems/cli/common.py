"""What the commands share: opening the store, reading times and options from the
command line, progress bars, generating and loading plants.

Nothing here imports a heavy stack at module level: ``sqems --help`` must not pay for
the store, pydantic or numpy. Each function imports what it needs when it runs.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sqems import localtime
from sqems.cli.app import err
from sqems.errors import ValidationFailed

if TYPE_CHECKING:
    from rich.progress import Progress

    from sqems.datasets import PlantShape
    from sqems.datasets.files import Section
    from sqems.graph_model import GraphStore, RecallSource, TimeWindow
    from sqems.quality.audit import AuditTrail
    from sqems.settings import Settings


@contextmanager
def graph_store(
    *, read_only: bool = False, uri: str | None = None
) -> Iterator[tuple[GraphStore, Settings]]:
    from sqems.graph_model import open_store
    from sqems.settings import Settings

    settings = Settings()
    store = open_store(settings, uri=uri, read_only=read_only)
    try:
        yield store, settings
    finally:
        store.close()


@contextmanager
def whatif_stores(*, simulate: bool = True) -> Iterator[tuple[GraphStore, GraphStore, Settings]]:
    """The store a what-if reads its line from, the store its session is kept in, and
    the settings. Both are the store, writable, when this process may write it; while
    another process writes it (a running ``sqems serve``), the store is opened read-only
    and the session kept in memory - printed, not saved - which a note says. Without
    ``simulate`` (a command that only reads), the store read-only, twice."""
    from sqems.graph_model import EmbeddedGraphStore, StoreLocked, open_store
    from sqems.settings import Settings

    settings = Settings()
    try:
        store = open_store(settings, read_only=not simulate)
    except StoreLocked as exc:
        store = open_store(settings, read_only=True)
        err.print(
            f"note: the store is open for writing by {exc.holder}; this what-if reads it "
            "read-only and is not saved",
            highlight=False,
            soft_wrap=True,
        )
    else:
        try:
            yield store, store, settings
        finally:
            store.close()
        return
    sessions = EmbeddedGraphStore(None)
    try:
        # a session points at its line: the lines (a handful) come along
        sessions.upsert_nodes(list(store.find("Line")))
        yield store, sessions, settings
    finally:
        sessions.close()
        store.close()


def parse_time(text: str | None, option: str, *, end: bool = False) -> datetime | None:
    """An ISO 8601 date or time from the command line; without an offset, in the site's
    time zone, and a date alone as an ``end`` is the end of that day (sqems.localtime)."""
    if text is None:
        return None
    return localtime.parse(text, site_zone, end=end, what=option)


def site_zone() -> localtime.SiteZone:
    """The zone of times given without an offset (looked up only for those)."""
    from sqems.settings import Settings

    settings = Settings()
    if settings.site_timezone:
        return localtime.zone_of(settings, None)
    with graph_store(read_only=True) as (store, _):
        return localtime.zone_of(settings, store)


def progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def load_sections(
    store: GraphStore,
    sections: list[Section],
    settings: Settings,
    *,
    plant: str | None = None,
    merge: bool = False,
    source: str | None = None,
) -> int:
    """Load with a progress bar; the plant is checked whole before the bar moves."""
    from sqems.datasets import load_plant

    total = sum(s.rows for s in sections)
    with progress() as bar:
        task = bar.add_task("checking the plant", total=total)

        def advance(name: str, rows: int) -> None:
            bar.update(task, advance=rows, description=f"loading {name}")

        report = load_plant(
            store,
            sections,
            batch_size=settings.batch_size,
            progress=advance,
            plant=plant,
            merge=merge,
            source=source,
        )
        bar.update(task, description="loaded")
    return report.total


def generate_plant(units: int, seed: int, shape: PlantShape = "drives") -> Any:
    from sqems.datasets import PlantSpec, generate

    with err.status(f"generating a {shape} plant of {units:,} units (seed {seed})…"):
        return generate(PlantSpec(shape=shape, units=units, seed=seed))


def recall_source(
    lot: str | None,
    batch: str | None,
    machine: str | None,
    parameter: str | None,
    from_: str | None,
    to: str | None,
    *,
    all_history: bool = False,
) -> RecallSource | None:
    """The recall source the options name (:data:`RecallLot` and the aliases beside it);
    None when they name none."""
    from sqems.graph_model import RecallSource, SourceKind, TimeWindow

    given = {
        k: v
        for k, v in (("lot", lot), ("batch", batch), ("machine", machine), ("parameter", parameter))
        if v
    }
    if not given:
        if from_ or to:
            raise ValidationFailed("--from/--to need --machine or --parameter")
        return None
    if len(given) != 1:
        raise ValidationFailed("give at most one of --lot, --batch, --machine, --parameter")
    ((kind, uid),) = given.items()
    window = None
    if from_ or to:
        if kind in ("lot", "batch"):
            raise ValidationFailed("--from/--to apply to --machine and --parameter only")
        window = TimeWindow(parse_time(from_, "--from"), parse_time(to, "--to", end=True))
    elif kind == "machine" and not all_history:
        # a machine's whole history is rarely what a recall means; asked for, it is given
        raise ValidationFailed(
            f"--machine {uid} needs a window: --from DATE --to DATE (or --all-history for "
            "every unit it ever made)"
        )
    return RecallSource(SourceKind(kind), uid, window)


WindowFrom = Annotated[
    str | None,
    typer.Option(
        "--from", metavar="DATE", help=f"Window start ({localtime.RULE}); a date alone: its 00:00."
    ),
]
WindowTo = Annotated[
    str | None,
    typer.Option(
        "--to",
        metavar="DATE",
        help=f"Window end, inclusive ({localtime.RULE}); a date alone: to its end.",
    ),
]
# a recall's source, as `recall` and `rdf export` take it
RecallLot = Annotated[str | None, typer.Option("--lot", metavar="UID", help="Material lot uid.")]
RecallBatch = Annotated[str | None, typer.Option("--batch", metavar="UID", help="Batch uid.")]
RecallMachine = Annotated[
    str | None, typer.Option("--machine", metavar="UID", help="Machine uid (with --from/--to).")
]
RecallParameter = Annotated[
    str | None,
    typer.Option(
        "--parameter", metavar="UID", help="Parameter uid: runs whose actual left the spec."
    ),
]
AllHistory = Annotated[
    bool,
    typer.Option("--all-history", help="With --machine and no window: every unit it ever made."),
]
# --from/--to were --start/--end in rootcause and kpis; the old names still work, unlisted
OldStart = Annotated[str | None, typer.Option("--start", hidden=True)]
OldEnd = Annotated[str | None, typer.Option("--end", hidden=True)]


def time_window(
    start: str | None,
    end: str | None,
    *,
    old_start: str | None = None,
    old_end: str | None = None,
) -> TimeWindow | None:
    """The window ``--from START --to END`` name (or ``--start``/``--end``, their old
    names); None when none is given."""
    from sqems.graph_model import TimeWindow

    for new, old, names in (
        (start, old_start, "--from or --start"),
        (end, old_end, "--to or --end"),
    ):
        if new is not None and old is not None:
            raise ValidationFailed(f"give {names} (its old name), not both")
    start = start if start is not None else old_start
    end = end if end is not None else old_end
    if start is None and end is None:
        return None
    return TimeWindow(parse_time(start, "--from"), parse_time(end, "--to", end=True))


def number_pair(item: str, option: str) -> tuple[str, float]:
    key, sep, value = item.partition("=")
    try:
        if sep:
            return key.strip(), float(value)
    except ValueError:
        pass
    raise ValidationFailed(f"{option} takes NAME=NUMBER, got {item!r}")


def cli_user() -> str:
    """Who runs the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return "cli"


def audit_trail(settings: Settings) -> AuditTrail:
    from sqems.quality.audit import open_trail

    return open_trail(settings)


def text_pair(item: str, option: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
        raise ValidationFailed(f"{option} wants NAME=VALUE, got {item!r}")
    return name, value
