"""File importers: ERP, PLM, CRM and inspection extracts cleansed into the graph, on
both backends; what cannot be taken is quarantined with the reason and the row."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sqems.errors import ValidationFailed
from sqems.graph_model import Direction, GraphStore
from sqems.graph_model.embedded import EmbeddedGraphStore
from sqems.graph_model.nodes import Batch, BatchStatus, Material, Supplier
from sqems.ingestion.importers import import_file
from sqems.ingestion.quarantine import Quarantine
from sqems.quality import hold_batch, release_batch
from sqems.quality.audit import TRAIL_FILE, AuditTrail

SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]
BATCHES = (
    "uid,started_at,ended_at,quantity,status\n"
    "WO-1,2026-01-05T06:00:00Z,2026-01-05T08:00:00Z,{quantity},completed\n"
    "WO-2,2026-01-05T07:00:00Z,2026-01-05T09:00:00Z,200,completed\n"
)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    path.write_text(text)
    return path


@pytest.fixture
def erp(tmp_path: Path) -> Path:
    folder = tmp_path / "erp"
    write(
        folder,
        "MaterialLot",
        "\n".join(
            [
                "uid,received_at,quantity,unit,expires_at",
                "LOT-1,2026-01-05T06:00:00Z,500,kg,",
                "LOT-2,2026-01-06T06:00:00Z,-3,kg,",  # negative quantity
                "LOT-3,2026-01-07T06:00:00Z,200,kg,2026-01-01T00:00:00Z",  # expires before received
                "LOT-4,2099-01-01T00:00:00Z,100,kg,",  # received in the future
                "LOT-1,2026-01-05T06:00:00Z,500,kg,",  # the same row again
                "LOT-5,2026-01-05T06:00:00Z",  # malformed
                "LOT-6,2026-01-08T06:00:00Z,80,kg,",
            ]
        )
        + "\n",
    )
    write(folder, "SUPPLIED", "src,dst\nSUP-1,LOT-1\nSUP-1,LOT-6\nSUP-9,LOT-6\nSUP-1,LOT-2\n")
    write(folder, "LOT_OF", "src,dst\nLOT-1,MAT-1\nLOT-6,MAT-1\n")
    return folder


@pytest.fixture
def quarantine() -> Quarantine:
    return Quarantine(None)


def test_an_erp_extract_is_cleansed_into_the_graph(
    store: GraphStore, erp: Path, quarantine: Quarantine
) -> None:
    store.upsert_nodes(
        [Supplier(uid="SUP-1", name="Polymerix"), Material(uid="MAT-1", name="resin", unit="kg")]
    )
    report = import_file(store, quarantine, "erp", erp)
    assert report.imported == {"MaterialLot": 2, "SUPPLIED": 2, "LOT_OF": 2}
    assert report.duplicates == {"MaterialLot": 1}
    assert report.quarantined == {"MaterialLot": 4, "SUPPLIED": 2}
    assert report.reasons == {"invalid": 2, "future": 1, "malformed": 1, "unknown reference": 2}
    assert {n.uid for n in store.find("MaterialLot")} == {"LOT-1", "LOT-6"}
    fed = store.edges(["SUP-1"], {"SUPPLIED": Direction.OUT})
    assert [e.dst for e in fed] == ["LOT-1", "LOT-6"]
    reasons = [e.reason for e in quarantine.entries()]
    assert any("quantity" in r for r in reasons)
    assert any("SUP-9" in r and "neither in the graph nor in this import" in r for r in reasons)
    bad = next(e for e in quarantine.entries() if "LOT-2" in e.raw.decode())
    assert bad.raw == b"LOT-2,2026-01-06T06:00:00Z,-3,kg,"
    assert bad.source.endswith("MaterialLot.csv#3")


def test_an_import_is_idempotent(store: GraphStore, erp: Path, quarantine: Quarantine) -> None:
    store.upsert_nodes(
        [Supplier(uid="SUP-1", name="Polymerix"), Material(uid="MAT-1", name="resin", unit="kg")]
    )
    import_file(store, quarantine, "erp", erp)
    before = (store.count(), store.count_edges())
    import_file(store, quarantine, "erp", erp)
    assert (store.count(), store.count_edges()) == before


def test_plm_spec_limits_with_unit_spellings_unified(
    store: GraphStore, tmp_path: Path, quarantine: Quarantine
) -> None:
    path = write(
        tmp_path,
        "Parameter",
        "uid,name,unit,lsl,usl,target,critical\n"
        "P-1,peak,°C,235,250,242.5,true\nP-2,thickness,µm,150,100,125,false\n",
    )
    report = import_file(store, quarantine, "plm", path)
    assert report.units_unified == 2
    assert store.get("P-1").unit == "degC"  # type: ignore[attr-defined]
    assert report.quarantined == {"Parameter": 1}  # lsl above usl
    assert "lsl" in quarantine.entries()[0].reason


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("mes", "MaterialLot", "unknown import kind"),
        ("crm", "MaterialLot", "a crm import holds"),
        ("erp", "Lots", "must be a node label or relationship type"),
    ],
)
def test_a_file_outside_its_kind_is_refused_whole(
    store: GraphStore,
    tmp_path: Path,
    quarantine: Quarantine,
    kind: str,
    name: str,
    message: str,
) -> None:
    path = write(tmp_path, name, "uid\nX\n")
    with pytest.raises(ValidationFailed, match=message):
        import_file(store, quarantine, kind, path)


def sqems(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [*SQEMS, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_a_reimport_keeps_a_held_batch_on_hold_and_names_the_row(
    store: GraphStore, tmp_path: Path, quarantine: Quarantine
) -> None:
    extract = write(tmp_path, "Batch", BATCHES.format(quantity=200))
    import_file(store, quarantine, "erp", extract)
    hold_batch(store, "WO-1")
    report = import_file(store, quarantine, "erp", extract)
    assert store.get("WO-1").status is BatchStatus.ON_HOLD  # type: ignore[attr-defined]
    assert [str(k) for k in report.kept] == [
        "Batch.csv#2: WO-1 status stays on_hold (the row says completed)"
    ]
    assert report.changed == []
    assert report.as_dict()["kept"][0]["uid"] == "WO-1"
    # what the ERP does own is taken, the hold kept, and the change written to the trail
    write(tmp_path, "Batch", BATCHES.format(quantity=180))
    trail = AuditTrail(None)
    report = import_file(store, quarantine, "erp", extract, trail=lambda: trail, actor="erp-sync")
    held = store.get("WO-1")
    assert isinstance(held, Batch) and (held.quantity, held.status) == (180, BatchStatus.ON_HOLD)
    assert [(c.after.uid, c.fields) for c in report.changed] == [("WO-1", ["quantity"])]
    [entry] = trail.entries("WO-1")
    assert (entry.actor, entry.role, entry.action) == (
        "erp-sync",
        "import",
        "imported (erp): quantity from Batch.csv#2",
    )
    assert entry.before["quantity"] == 200 and entry.after["status"] == "on_hold"  # type: ignore[index]
    # nor does an import put a released batch back on hold
    release_batch(store, "WO-1")
    write(tmp_path, "Batch", BATCHES.format(quantity=180).replace("completed", "on_hold"))
    report = import_file(store, quarantine, "erp", extract)
    assert store.get("WO-1").status is BatchStatus.COMPLETED  # type: ignore[attr-defined]
    assert len(report.kept) == 2  # WO-1 and WO-2


def test_a_new_batch_takes_the_status_of_its_row(tmp_path: Path, quarantine: Quarantine) -> None:
    store = EmbeddedGraphStore(None)
    extract = write(tmp_path, "Batch", BATCHES.format(quantity=200).replace("completed", "on_hold"))
    report = import_file(store, quarantine, "erp", extract)
    assert store.get("WO-1").status is BatchStatus.ON_HOLD  # type: ignore[attr-defined]
    assert (report.kept, report.changed) == ([], [])


def test_cli_reimport_keeps_the_hold_and_writes_what_it_changed_to_the_trail(
    tmp_path: Path,
) -> None:
    data, extract = tmp_path / "data", write(tmp_path, "Batch", BATCHES.format(quantity=200))
    with EmbeddedGraphStore(data / "graph.db") as store:
        import_file(store, Quarantine(None), "erp", extract)
        hold_batch(store, "WO-1")
    write(tmp_path, "Batch", BATCHES.format(quantity=180))
    done = sqems(data, "import", "erp", str(extract), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kept"] == [
        {"row": "Batch.csv#2", "uid": "WO-1", "field": "status", "kept": "on_hold",
         "refused": "completed"}
    ]  # fmt: skip
    assert report["changed"] == [{"row": "Batch.csv#2", "uid": "WO-1", "fields": ["quantity"]}]
    with EmbeddedGraphStore(data / "graph.db") as store:
        assert store.get("WO-1").status is BatchStatus.ON_HOLD  # type: ignore[attr-defined]
    trail = AuditTrail(data / TRAIL_FILE)
    try:
        [entry] = trail.entries("WO-1")
    finally:
        trail.close()
    assert entry.action.startswith("imported (erp): quantity from Batch.csv#2")
    assert (entry.before["quantity"], entry.after["quantity"]) == (200, 180)
    assert entry.after["status"] == "on_hold"


ROWS = "uid,name,country\nSUP-1,Polymerix,DE\nSUP-2,Müller Kunststoffe,AT\n"


@pytest.mark.parametrize(
    ("encoding", "text", "read_as"),
    [
        ("utf-8-sig", ROWS, "utf-8"),  # Excel's "CSV UTF-8"
        ("utf-16", ROWS.replace(",", "\t"), "utf-16-le"),  # Excel's "Unicode text": tabs
        ("utf-16-be", "\ufeff" + ROWS, "utf-16-be"),
        ("utf-32", ROWS, "utf-32-le"),
        ("utf-8", ROWS.replace("\n", "\r\n"), "utf-8"),
    ],
    ids=["utf-8-bom", "utf-16-tabs", "utf-16-be", "utf-32", "utf-8-crlf"],
)
def test_a_file_with_a_byte_order_mark_is_read_in_its_encoding(
    tmp_path: Path, quarantine: Quarantine, encoding: str, text: str, read_as: str
) -> None:
    store = EmbeddedGraphStore(None)
    path = tmp_path / "Supplier.csv"
    path.write_bytes(text.encode(encoding))
    report = import_file(store, quarantine, "erp", path)
    assert report.imported == {"Supplier": 2} and not report.quarantined
    assert store.get("SUP-2").name == "Müller Kunststoffe"  # type: ignore[attr-defined]
    assert report.encodings == {str(path): read_as}


def test_a_row_of_a_utf16_file_is_quarantined_as_written(
    tmp_path: Path, quarantine: Quarantine
) -> None:
    path = tmp_path / "Supplier.csv"
    path.write_bytes((ROWS + "SUP-3,Zeta,Deutschland\n").encode("utf-16"))
    report = import_file(EmbeddedGraphStore(None), quarantine, "erp", path)
    assert report.quarantined == {"Supplier": 1}
    [entry] = quarantine.entries()
    assert entry.raw == b"SUP-3,Zeta,Deutschland" and entry.source.endswith("#4")


def test_a_row_that_is_not_utf8_is_quarantined_with_its_bytes_as_written(
    tmp_path: Path, quarantine: Quarantine
) -> None:
    path = tmp_path / "Supplier.csv"
    path.write_bytes("uid,name\nSUP-1,Müller\nSUP-2,Polymerix\n".encode("cp1252"))  # Excel's "CSV"
    report = import_file(EmbeddedGraphStore(None), quarantine, "erp", path)
    assert report.imported == {"Supplier": 1} and report.reasons == {"encoding": 1}
    [entry] = quarantine.entries()
    assert entry.raw == b"SUP-1,M\xfcller"
    assert "name holds bytes that are not UTF-8; save the file as CSV UTF-8" in entry.reason


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("uid,nmae,country", "lacks name and has unknown column(s) nmae"),
        ("name,country", "lacks uid"),
        ("uid,name,name", "repeats name"),
        ("uid,name,", "unknown column(s) (empty)"),
    ],
)
def test_a_header_without_required_columns_refuses_the_whole_import(
    tmp_path: Path, quarantine: Quarantine, header: str, message: str
) -> None:
    store = EmbeddedGraphStore(None)
    folder = tmp_path / "erp"
    write(folder, "Material", "uid,name,unit\nMAT-1,resin,kg\n")
    write(folder, "Supplier", f"{header}\nSUP-1,Polymerix,DE\n")
    with pytest.raises(ValidationFailed, match=re.escape(message)) as refused:
        import_file(store, quarantine, "erp", folder)
    assert "Nothing was imported" in refused.value.message
    assert "uid, name, country?, status?" in refused.value.message
    assert store.count() == 0 and quarantine.entries() == []


def test_a_relationship_file_needs_src_and_dst(tmp_path: Path, quarantine: Quarantine) -> None:
    path = write(tmp_path, "SUPPLIED", "source,dst\nSUP-1,LOT-1\n")
    with pytest.raises(ValidationFailed, match="lacks src and has unknown column"):
        import_file(EmbeddedGraphStore(None), quarantine, "erp", path)


def test_a_cell_over_the_limit_is_quarantined_and_the_rest_imported(
    tmp_path: Path, quarantine: Quarantine
) -> None:
    path = tmp_path / "Complaint.csv"
    with path.open("w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerow(["uid", "received_at", "description"])
        rows.writerow(["CMP-1", "2026-01-05T06:00:00Z", "x" * 131_073])  # over csv's own limit
        rows.writerow(["CMP-2", "2026-01-05T06:00:00Z", "a\nquoted, two-line complaint"])
        rows.writerow(["CMP-3", "2026-01-05T06:00:00Z", "y" * 10_001])
    store = EmbeddedGraphStore(None)
    report = import_file(store, quarantine, "crm", path)
    assert report.imported == {"Complaint": 1} and report.quarantined == {"Complaint": 2}
    assert report.reasons == {"oversized": 2}
    first, second = quarantine.entries()
    assert "description holds 131,073 characters; a cell may hold 10,000" in first.reason
    assert len(first.raw) > 131_073 and first.source.endswith("#2")
    assert second.source.endswith("#5")  # the quoted line break counts as a line
    assert store.get("CMP-2").description == "a\nquoted, two-line complaint"  # type: ignore[attr-defined]
    wider = import_file(store, Quarantine(None), "crm", path, max_cell_chars=200_000)
    assert wider.reasons == {"invalid": 2}  # now the model's own limit refuses them


def test_cli_import_of_a_file_with_a_bad_header_exits_2_naming_the_columns(
    tmp_path: Path,
) -> None:
    bad = write(tmp_path / "bad", "Supplier", "uid,nmae\nSUP-1,Polymerix\n")
    refused = sqems(tmp_path / "data", "import", "erp", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error:")
    assert "lacks name and has unknown column(s) nmae" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
