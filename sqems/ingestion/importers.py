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
line goes to the quarantine with the reason and the row as written. A uid repeated in
the file is a duplicate (the first row wins, a differing repeat is quarantined). Unit
spellings are unified (``°C`` → ``degC``, ``µm`` → ``um``). The :class:`ImportReport`
counts all of it.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqems.errors import NotFound, SqemsError, ValidationFailed
from sqems.graph_model.edges import REL_TYPES
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

UNIT_SPELLINGS = {"°C": "degC", "℃": "degC", "°F": "degF", "µm": "um", "μm": "um", "Nm": "N*m"}
FUTURE_TOLERANCE = timedelta(minutes=5)


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "files": self.files,
            "read": dict(self.read),
            "imported": dict(self.imported),
            "duplicates": dict(self.duplicates),
            "quarantined": dict(self.quarantined),
            "reasons": dict(self.reasons),
            "units_unified": self.units_unified,
        }


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    raw: bytes
    cells: dict[str, str]


def import_file(store: GraphStore, quarantine: Quarantine, kind: str, path: Path) -> ImportReport:
    """Import ``path`` (a CSV file or a directory of them) as ``kind``."""
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
    rejected: list[NewEntry] = []
    nodes: dict[str, Node] = {}
    # nodes first, so relationships may point at nodes of the same import
    for f, name in sorted(tables, key=lambda t: t[1] in REL_TYPES):
        if name in NODE_TYPES:
            _nodes(f, _Refuse(report, rejected, kind, f, name), nodes)
    if nodes:
        store.upsert_nodes(nodes.values())
    for f, name in tables:
        if name in REL_TYPES:
            _edges(store, f, _Refuse(report, rejected, kind, f, name))
    quarantine.add(rejected)
    return report


def _rows(path: Path, refuse: _Refuse) -> Iterator[_Row]:
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ValidationFailed(f"{path}: empty file, expected a header row")
    for row in reader:
        number = reader.line_num
        raw = (lines[number - 1] if number - 1 < len(lines) else ",".join(row)).encode(
            "utf-8", errors="surrogateescape"
        )
        refuse.report.read[refuse.table] += 1
        if len(row) != len(header):
            refuse(
                number,
                raw,
                "malformed",
                f"{len(row)} cells, the header has {len(header)}",
            )
            continue
        yield _Row(number, raw, {k: v for k, v in zip(header, row, strict=True) if v != ""})


def _nodes(path: Path, refuse: _Refuse, nodes: dict[str, Node]) -> None:
    report, label = refuse.report, refuse.table
    model = node_type(label)
    seen: dict[str, dict[str, str]] = {}
    latest = datetime.now(UTC) + FUTURE_TOLERANCE
    for row in _rows(path, refuse):
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
        report.imported[label] += 1


def _edges(store: GraphStore, path: Path, refuse: _Refuse) -> None:
    report, type_ = refuse.report, refuse.table
    rows = list(_rows(path, refuse))
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
                refuse(row.line, row.raw, "invalid", exc.message)


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
