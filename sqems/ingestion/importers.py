"""File importers: ERP, PLM, CRM and inspection extracts, cleansed on the way in.

``import_file(store, quarantine, kind, path)`` reads CSV in the plant format of
docs/data-formats.md — one file per node label or relationship type, the file named
after it (``MaterialLot.csv``, ``SUPPLIED.csv``), or a directory of such files — and
each kind accepts the tables its system owns:

* ``erp``: suppliers, materials, material lots, batches, shipments, customers and how
  they join (``SUPPLIED``, ``LOT_OF``, ``CONSUMED_IN``, ``OF_PRODUCT``, ``SHIPPED_IN``,
  ``DELIVERED_TO``);
* ``plm``: products, bills of materials, routings and parameter spec limits;
* ``crm``: customers and complaints (``ABOUT``, ``RAISED_BY``, ``OF_TYPE``);
* ``inspection``: inspections and defects (AOI, X-ray, manual; ``image_ref`` kept).

Cleansing, row by row, nothing lost: a row the model refuses (a missing key, a
negative quantity, an end before its start), a timestamp in the future, a relationship
to something neither in the graph nor in the import (an unknown lot), or a malformed
line goes to the quarantine with the reason and the row as written, and so does a row
with a cell longer than ``max_cell_chars``. A uid repeated in the file is a duplicate
(the first row wins, a differing repeat is quarantined). Unit spellings are unified
(``°C`` → ``degC``, ``µm`` → ``um``). The :class:`ImportReport` counts all of it.

A file is read as UTF-8 unless it starts with a byte-order mark (Excel's "CSV UTF-8"
writes one, its "Unicode text" is UTF-16 and tab-separated). A file whose header lacks
a required column or names one the table does not have is refused whole, before
anything is written: every one of its rows would be refused anyway.

State the quality workflow owns (:data:`WORKFLOW_FIELDS`: a batch's hold, a unit's
disposition) is never changed by an import: the row's value is set aside, the report
names the row (:attr:`ImportReport.kept`), and every existing quality record the import
does change is listed with its values before and after (:attr:`ImportReport.changed`)
and, given an audit trail, written to it. Those records are read and written inside one
transaction of the trail, the one a hold or a disposition takes too, so an import
cannot overwrite a hold made while it ran.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from sqems.errors import NotFound, SqemsError, ValidationFailed
from sqems.graph_model.edges import REL_TYPES
from sqems.graph_model.integrity import GenealogyViolation
from sqems.graph_model.nodes import NODE_TYPES, Node, node_type
from sqems.graph_model.store import Edge, GraphStore
from sqems.ingestion.quarantine import NewEntry, Quarantine

KINDS: dict[str, frozenset[str]] = {
    "erp": frozenset(
        {
            "Supplier",
            "Material",
            "MaterialLot",
            "Batch",
            "Shipment",
            "Customer",
            "SUPPLIED",
            "LOT_OF",
            "CONSUMED_IN",
            "OF_PRODUCT",
            "SHIPPED_IN",
            "DELIVERED_TO",
        }
    ),
    "plm": frozenset(
        {
            "Product",
            "Material",
            "ProcessStep",
            "Parameter",
            "USES",
            "STEP_OF",
            "PARAMETER_OF",
            "CAN_PERFORM",
            "ORIGINATES_AT",
        }
    ),
    "crm": frozenset({"Customer", "Complaint", "ABOUT", "RAISED_BY", "OF_TYPE"}),
    "inspection": frozenset(
        {
            "Inspection",
            "Defect",
            "DefectType",
            "INSPECTED",
            "FOUND_ON",
            "DETECTED_IN",
            "OF_TYPE",
        }
    ),
}
"""The tables each source system may import."""

WORKFLOW_FIELDS: dict[str, frozenset[str]] = {
    "Batch": frozenset({"status"}),
    "Unit": frozenset({"status"}),
}
"""Fields the quality workflow owns (containment: a hold, a release, a disposition), by
label: an import sets them on a record it creates, never on one that exists."""

MAX_CELL_CHARS = 10_000
"""The longest cell an import takes (``SQEMS_IMPORT_MAX_CELL_CHARS``): the longest text
property of an importable label."""

BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
"""Byte-order marks, longest first (a UTF-32 LE mark starts with the UTF-16 LE one)."""
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
"""A byte that was not UTF-8, as ``surrogateescape`` keeps it."""

UNIT_SPELLINGS = {"°C": "degC", "℃": "degC", "°F": "degF", "µm": "um", "μm": "um", "Nm": "N*m"}
FUTURE_TOLERANCE = timedelta(minutes=5)


class TrailWriter(Protocol):
    """One open transaction of an audit trail (:class:`sqems.quality.audit.Writer`)."""

    def append(
        self,
        actor: str,
        role: str,
        label: str,
        uid: str,
        action: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> object: ...

    def on_abort(self, undo: Callable[[], object]) -> None: ...


class Trail(Protocol):
    """An audit trail (:class:`sqems.quality.audit.AuditTrail`)."""

    def writing(self) -> AbstractContextManager[TrailWriter]: ...


@dataclass(slots=True)
class ImportReport:
    """What an import did, table by table."""

    kind: str
    files: list[str] = field(default_factory=list)
    read: Counter[str] = field(default_factory=Counter)
    imported: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    """Quarantine reasons by kind of problem."""
    units_unified: int = 0
    encodings: dict[str, str] = field(default_factory=dict)
    """How each file was read (``utf-8``, ``utf-16-le``, …)."""
    kept: list[Kept] = field(default_factory=list)
    """Rows that would have changed state the quality workflow owns; it was kept."""
    changed: list[Changed] = field(default_factory=list)
    """Existing quality records (labels of :data:`WORKFLOW_FIELDS`) the import changed."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "files": self.files,
            "encodings": self.encodings,
            "read": dict(self.read),
            "imported": dict(self.imported),
            "duplicates": dict(self.duplicates),
            "quarantined": dict(self.quarantined),
            "reasons": dict(self.reasons),
            "units_unified": self.units_unified,
            "kept": [k.as_dict() for k in self.kept],
            "changed": [c.as_dict() for c in self.changed],
        }


@dataclass(frozen=True, slots=True)
class Kept:
    """A workflow-owned field a row would have changed, left as the workflow set it."""

    row: str
    """``<file>#<line>``."""
    uid: str
    field: str
    kept: str
    refused: str

    def __str__(self) -> str:
        said = f"(the row says {self.refused})"
        return f"{self.row}: {self.uid} {self.field} stays {self.kept} {said}"

    def as_dict(self) -> dict[str, str]:
        return {"row": self.row, "uid": self.uid, "field": self.field, "kept": self.kept,
                "refused": self.refused}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Changed:
    """An existing quality record the import changed, before and after."""

    row: str
    before: Node
    after: Node

    @property
    def fields(self) -> list[str]:
        return [k for k in type(self.after).model_fields
                if getattr(self.before, k) != getattr(self.after, k)]  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "uid": self.after.uid, "fields": self.fields}


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    raw: bytes
    cells: dict[str, str]


def import_file(
    store: GraphStore,
    quarantine: Quarantine,
    kind: str,
    path: Path,
    *,
    max_cell_chars: int = MAX_CELL_CHARS,
    trail: Callable[[], Trail] | None = None,
    actor: str = "import",
) -> ImportReport:
    """Import ``path`` (a CSV file or a directory of them) as ``kind``.

    Every file is decoded and its header checked before anything is written, so a file
    that cannot be read refuses the whole import (:class:`ValidationFailed`). Changes
    to existing quality records go to the audit trail ``trail()`` opens (called only
    when the import holds a label of :data:`WORKFLOW_FIELDS`) as ``actor``, role
    ``import``.
    """
    if kind not in KINDS:
        raise ValidationFailed(f"unknown import kind {kind!r}; kinds: {', '.join(sorted(KINDS))}")
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    tables = [(f, f.stem) for f in files]
    for f, name in tables:
        if name not in NODE_TYPES and name not in REL_TYPES:
            raise ValidationFailed(
                f"{f.name}: the file name must be a node label or relationship type "
                "(MaterialLot.csv, SUPPLIED.csv)"
            )
        if name not in KINDS[kind]:
            allowed = ", ".join(sorted(KINDS[kind]))
            raise ValidationFailed(f"{f.name}: a {kind} import holds {allowed}, not {name}")
    report = ImportReport(kind, [str(f) for f in files])
    sources = [_Source.read(f, name) for f, name in tables]
    report.encodings = {str(s.path): s.encoding for s in sources}
    rejected: list[NewEntry] = []
    nodes: dict[str, Node] = {}
    rows: dict[str, str] = {}
    # nodes first, so relationships may point at nodes of the same import
    for source in sources:
        if source.table in NODE_TYPES:
            refuse = _Refuse(report, rejected, kind, source.path, source.table)
            _nodes(source, refuse, max_cell_chars, nodes, rows)
    tracked = {uid: node for uid, node in nodes.items() if node.label in WORKFLOW_FIELDS}
    if len(tracked) < len(nodes):
        store.upsert_nodes(node for uid, node in nodes.items() if uid not in tracked)
    if tracked:
        with trail().writing() if trail is not None else nullcontext() as writer:
            _keep_workflow_state(store, tracked, rows, report)
            store.upsert_nodes(tracked.values())
            if writer is not None:
                _record(writer, store, report, kind, actor)
    for source in sources:
        if source.table in REL_TYPES:
            refuse = _Refuse(report, rejected, kind, source.path, source.table)
            _edges(store, source, refuse, max_cell_chars)
    quarantine.add(rejected)
    return report


@dataclass(frozen=True, slots=True)
class _Source:
    """One file, decoded, with a header its table accepts."""

    path: Path
    table: str
    text: str
    encoding: str
    delimiter: str
    header: list[str]

    @classmethod
    def read(cls, path: Path, table: str) -> _Source:
        text, encoding = _decode(path)
        first = text.split("\n", 1)[0]
        # Excel's "Unicode text" separates by tabs
        delimiter = "\t" if "\t" in first and "," not in first else ","
        header = [h.strip() for h in next(csv.reader([first], delimiter=delimiter), [])]
        if not any(header):
            raise ValidationFailed(f"{path}: empty file, expected a header row")
        _check_header(path, table, header)
        return cls(path, table, text, encoding, delimiter, header)


def _decode(path: Path) -> tuple[str, str]:
    """The file's text and encoding: the one its byte-order mark names, else UTF-8.

    Bytes that are not UTF-8 are kept as they were (``surrogateescape``), so a row
    holding them reaches the quarantine intact.
    """
    data = path.read_bytes()
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding), encoding
            except UnicodeDecodeError as exc:
                raise ValidationFailed(
                    f"{path}: starts with a {encoding} byte-order mark but byte "
                    f"{exc.start + len(bom):,} is not {encoding} ({exc.reason}); "
                    "save it again as CSV UTF-8"
                ) from None
    return data.decode("utf-8", errors="surrogateescape"), "utf-8"


def _check_header(path: Path, table: str, header: list[str]) -> None:
    """Refuse a header that lacks a required column or names one the table lacks."""
    if table in NODE_TYPES:
        fields = node_type(table).model_fields
        columns = {k: f.is_required() for k, f in fields.items()}
    else:
        props = REL_TYPES[table].props
        columns = {"src": True, "dst": True}
        columns |= {k: f.is_required() for k, f in (props.model_fields if props else {}).items()}
    twice = sorted({h for h in header if header.count(h) > 1})
    missing = [k for k, required in columns.items() if required and k not in header]
    unknown = [h or "(empty)" for h in header if h not in columns]
    problems = [
        *([f"lacks {', '.join(missing)}"] if missing else []),
        *([f"has unknown column(s) {', '.join(unknown)}"] if unknown else []),
        *([f"repeats {', '.join(twice)}"] if twice else []),
    ]
    if problems:
        expected = ", ".join(k if required else f"{k}?" for k, required in columns.items())
        raise ValidationFailed(
            f"{path}: the header {' and '.join(problems)}; a {table} file has the columns "
            f"{expected} (? = optional). Nothing was imported"
        )


def _rows(source: _Source, refuse: _Refuse, max_cell_chars: int) -> Iterator[_Row]:
    # the whole file is in memory already: let the csv module parse a cell of any size,
    # and quarantine the rows holding one over the limit rather than fail on its own
    csv.field_size_limit(max(csv.field_size_limit(), len(source.text) + 1))
    lines: list[str] = []

    def physical() -> Iterator[str]:
        for line in io.StringIO(source.text, newline=""):
            lines.append(line)
            yield line

    reader = csv.reader(physical(), delimiter=source.delimiter)
    header = source.header
    next(reader)
    while True:
        lines.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row, problem = None, str(exc)
        number = reader.line_num
        raw = "".join(lines).rstrip("\r\n").encode("utf-8", errors="surrogateescape")
        refuse.report.read[refuse.table] += 1
        if row is None:
            refuse(number, raw, "malformed", problem)
            continue
        if len(row) != len(header):
            refuse(number, raw, "malformed", f"{len(row)} cells, the header has {len(header)}")
            continue
        if bad := next((k for k, v in zip(header, row, strict=True) if _NOT_UTF8.search(v)), None):
            refuse(number, raw, "encoding",
                   f"{bad} holds bytes that are not UTF-8; save the file as CSV UTF-8")  # fmt: skip
            continue
        long = [(k, len(v)) for k, v in zip(header, row, strict=True) if len(v) > max_cell_chars]
        if long:
            cells = ", ".join(f"{k} holds {n:,} characters" for k, n in long)
            limit = f"a cell may hold {max_cell_chars:,} (SQEMS_IMPORT_MAX_CELL_CHARS)"
            refuse(number, raw, "oversized", f"{cells}; {limit}")
            continue
        yield _Row(number, raw, {k: v for k, v in zip(header, row, strict=True) if v != ""})


def _keep_workflow_state(
    store: GraphStore, nodes: dict[str, Node], rows: dict[str, str], report: ImportReport
) -> None:
    """Set aside what the import would change of :data:`WORKFLOW_FIELDS` on existing
    records, and list the existing quality records it changes."""
    tracked = [uid for uid, node in nodes.items() if node.label in WORKFLOW_FIELDS]
    for uid, before in store.get_many(tracked).items():
        after = nodes[uid]
        if before.label != after.label:
            continue
        owned = {k: getattr(before, k) for k in sorted(WORKFLOW_FIELDS[after.label])
                 if getattr(before, k) != getattr(after, k)}  # fmt: skip
        for k, value in owned.items():
            report.kept.append(Kept(rows[uid], uid, k, _text(value), _text(getattr(after, k))))
        if owned:
            after = nodes[uid] = after.model_copy(update=owned)
        if after != before:
            report.changed.append(Changed(rows[uid], before, after))


def _record(
    writer: TrailWriter, store: GraphStore, report: ImportReport, kind: str, actor: str
) -> None:
    for c in report.changed:
        action = f"imported ({kind}): {', '.join(c.fields)} from {c.row}"
        before, after = c.before.model_dump(mode="json"), c.after.model_dump(mode="json")
        writer.append(actor, "import", c.after.label, c.after.uid, action, before, after)
    if report.changed:
        previous = [c.before for c in report.changed]
        writer.on_abort(lambda: store.upsert_nodes(previous))


def _text(value: object) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def _nodes(
    source: _Source,
    refuse: _Refuse,
    max_cell_chars: int,
    nodes: dict[str, Node],
    rows: dict[str, str],
) -> None:
    report, label = refuse.report, refuse.table
    model = node_type(label)
    seen: dict[str, dict[str, str]] = {}
    latest = datetime.now(UTC) + FUTURE_TOLERANCE
    for row in _rows(source, refuse, max_cell_chars):
        cells = row.cells
        if "unit" in cells and cells["unit"] in UNIT_SPELLINGS:
            cells["unit"] = UNIT_SPELLINGS[cells["unit"]]
            report.units_unified += 1
        uid = cells.get("uid", "")
        if uid in seen:
            if seen[uid] == cells:
                report.duplicates[label] += 1
            else:
                refuse(
                    row.line,
                    row.raw,
                    "conflict",
                    f"uid {uid} appears again with other values; the first row was kept",
                )
            continue
        try:
            node = model.parse(cells)
        except ValidationFailed as exc:
            refuse(row.line, row.raw, "invalid", exc.message)
            continue
        future = [k for k, v in node.model_dump().items() if isinstance(v, datetime) and v > latest]
        if future:
            refuse(
                row.line,
                row.raw,
                "future",
                f"{', '.join(future)} is in the future ({getattr(node, future[0])})",
            )
            continue
        seen[uid] = cells
        nodes[uid] = node
        rows[uid] = f"{source.path.name}#{row.line}"
        report.imported[label] += 1


def _edges(store: GraphStore, source: _Source, refuse: _Refuse, max_cell_chars: int) -> None:
    report, type_ = refuse.report, refuse.table
    rows = list(_rows(source, refuse, max_cell_chars))
    ends = {r.cells.get(k, "") for r in rows for k in ("src", "dst")} - {""}
    known = set(store.get_many(ends))
    edges: list[tuple[Edge, _Row]] = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        props = dict(row.cells)
        src, dst = props.pop("src", ""), props.pop("dst", "")
        missing = [u or "(empty)" for u in (src, dst) if u not in known]
        if missing:
            refuse(
                row.line,
                row.raw,
                "unknown reference",
                f"{type_} {src or '?'}→{dst or '?'}: {', '.join(missing)} "
                "is neither in the graph nor in this import",
            )
            continue
        if (src, dst) in seen:
            report.duplicates[type_] += 1
            continue
        seen.add((src, dst))
        edges.append((Edge(type_, src, dst, props), row))
    # one bad relationship must not sink the rest: write in one batch, and if the
    # model refuses it, row by row to find the culprits
    try:
        store.upsert_edges(edge for edge, _ in edges)
        report.imported[type_] += len(edges)
    except SqemsError:
        for edge, row in edges:
            try:
                store.upsert_edges([edge])
                report.imported[type_] += 1
            except SqemsError as exc:
                problem = "genealogy" if isinstance(exc, GenealogyViolation) else "invalid"
                refuse(row.line, row.raw, problem, exc.message)


@dataclass(frozen=True, slots=True)
class _Refuse:
    """Quarantines rows of one table of one file, counting them in the report."""

    report: ImportReport
    rejected: list[NewEntry]
    kind: str
    path: Path
    table: str

    def __call__(self, line: int, raw: bytes, problem: str, reason: str) -> None:
        self.report.quarantined[self.table] += 1
        self.report.reasons[problem] += 1
        source = f"file:{self.kind}:{self.path}#{line}"
        self.rejected.append(NewEntry(source, f"{self.table}: {reason}", raw))
