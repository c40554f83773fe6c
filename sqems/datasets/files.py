"""The plant file format: one CSV per node label and per relationship type.

See ``docs/data-formats.md`` for the contract. A plant directory holds::

    manifest.json            format, version, plant identity, generator spec, row counts
    nodes/<Label>.csv        one row per node; columns are the label's properties
    edges/<TYPE>.csv         src,dst then the relationship's properties, if any
    ground_truth.json        what the generator planted (generated plants only)
    truth/defective_units.csv

Empty cells mean "not given" (the model's default applies). Timestamps are ISO 8601
with an offset; booleans are ``true``/``false``.

A plant has an identity (:func:`plant_identity`), which a store records so that a
second, different plant is not loaded into it by mistake: the manifest's ``plant``
(written for generated plants from their spec), or for a hand-made plant without one,
its sites' uids.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqems.datasets.plant import Plant, PlantSpec
from sqems.datasets.tables import Table
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.edges import REL_TYPES
from sqems.graph_model.nodes import NODE_TYPES

FORMAT = "sqems-plant"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Section:
    """One table of a plant: a node label or a relationship type, and its rows."""

    kind: str  # "nodes" | "edges"
    name: str
    rows: int
    origin: str
    """Where the rows come from, for error messages (a file path or 'generator')."""
    records: Iterable[tuple[int, dict[str, Any]]]
    """(line number, record) pairs, empty cells left out; each iteration reads the rows
    again from the start (a loader checks a whole plant before it writes any of it)."""


MAX_PLANT_ID = 200


def spec_identity(spec: PlantSpec) -> str:
    """The identity of a generated plant: its shape, size and seed, and a digest of the
    whole spec (two specs that differ anywhere are two plants).

    >>> spec_identity(PlantSpec(units=1_000, seed=3))  # doctest: +ELLIPSIS
    'drives-1000u-seed3-...'
    """
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:8]
    return f"{spec.shape}-{spec.units}u-seed{spec.seed}-{digest}"


def plant_identity(directory: Path) -> str:
    """The identity of the plant in ``directory``: the manifest's ``plant``, else
    ``sites:`` and its Site uids (sorted, joined by ``+``); a plant with neither is
    refused, asking for a ``plant`` in its manifest."""
    manifest = read_manifest(directory)
    given = manifest.get("plant")
    if given is not None:
        if not isinstance(given, str) or not given.strip() or len(given) > MAX_PLANT_ID:
            raise ValidationFailed(
                f"{directory / 'manifest.json'}: plant must be a name of 1 to "
                f"{MAX_PLANT_ID} characters, got {given!r}"
            )
        return given.strip()
    entry = manifest.get("nodes", {}).get("Site")
    sites: list[str] = []
    if entry is not None and (directory / entry["file"]).is_file():
        sites = sorted({r["uid"] for _, r in _CsvRows(directory / entry["file"]) if "uid" in r})
    if not sites:
        raise ValidationFailed(
            f"{directory / 'manifest.json'}: the plant has no identity; add "
            '"plant": "<a name for this plant>" to the manifest (or Site rows)'
        )
    return "sites:" + "+".join(sites)


def write_plant(plant: Plant, out: Path) -> dict[str, Any]:
    """Write ``plant`` under ``out`` (created if missing); returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "plant": spec_identity(plant.spec),
        "spec": plant.spec.model_dump(mode="json"),
        "nodes": {},
        "edges": {},
    }
    for kind, tables in (("nodes", plant.nodes), ("edges", plant.edges)):
        (out / kind).mkdir(exist_ok=True)
        for name in sorted(tables):
            rel = f"{kind}/{name}.csv"
            _write_csv(out / rel, tables[name])
            manifest[kind][name] = {"file": rel, "rows": len(tables[name])}
    if plant.truth:
        (out / "ground_truth.json").write_text(json.dumps(plant.truth, indent=2) + "\n")
        (out / "truth").mkdir(exist_ok=True)
        _write_csv(out / "truth" / "defective_units.csv", plant.truth_units)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_csv(path: Path, table: Table) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(table.header)
        writer.writerows(table.tuples())


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not directory.is_dir():
        raise NotFound(f"plant directory {directory} does not exist")
    if not path.is_file():
        raise NotFound(
            f"{directory} has no manifest.json; it is not a plant directory "
            "(see docs/data-formats.md)"
        )
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValidationFailed(
            f"{path}: expected format {FORMAT!r} version {VERSION}, got "
            f"{manifest.get('format')!r} version {manifest.get('version')!r}"
        )
    return manifest


def read_plant(directory: Path) -> list[Section]:
    """The sections of a plant directory, nodes first, streamed from disk."""
    manifest = read_manifest(directory)
    sections = []
    for kind, known in (("nodes", NODE_TYPES), ("edges", REL_TYPES)):
        for name, entry in manifest.get(kind, {}).items():
            if name not in known:
                raise ValidationFailed(
                    f"{directory / 'manifest.json'}: unknown {kind[:-1]} kind {name!r}"
                )
            path = directory / entry["file"]
            if not path.is_file():
                raise NotFound(f"{path} is listed in the manifest but missing")
            try:
                rows = int(entry["rows"])
            except (KeyError, TypeError, ValueError):
                raise ValidationFailed(
                    f"{directory / 'manifest.json'}: {kind[:-1]} {name} needs a row count "
                    f"(rows), got {entry.get('rows')!r}"
                ) from None
            sections.append(Section(kind, name, rows, str(path), _CsvRows(path, rows)))
    return sections


def plant_sections(plant: Plant) -> list[Section]:
    """The sections of an in-memory plant, in the same shape as :func:`read_plant`."""
    out = []
    for kind, tables in (("nodes", plant.nodes), ("edges", plant.edges)):
        for name in sorted(tables):
            table = tables[name]
            out.append(Section(kind, name, len(table), "generator", _TableRows(table)))
    return out


@dataclass(frozen=True, slots=True)
class _TableRows:
    table: Table

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return enumerate(self.table.records(), start=2)


@dataclass(frozen=True, slots=True)
class _CsvRows:
    """A plant CSV file's records, read from disk on each iteration; with ``expected``,
    a file whose row count differs from the manifest's is refused at its end."""

    path: Path
    expected: int | None = None

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        path = self.path
        try:
            handle = path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise NotFound(f"cannot read {path}: {exc.strerror}") from None
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise ValidationFailed(f"{path}: empty file, expected a header row")
            width = len(header)
            count = 0
            for number, row in enumerate(reader, start=2):
                if len(row) != width:
                    raise ValidationFailed(
                        f"{path} line {number}: {len(row)} cells, the header has {width}"
                    )
                count += 1
                yield number, {k: v for k, v in zip(header, row, strict=True) if v != ""}
        if self.expected is not None and count != self.expected:
            raise ValidationFailed(
                f"{path}: the file has {count} rows but manifest.json says {self.expected}; "
                "fix the manifest or the file"
            )
