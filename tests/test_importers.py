"""File importers: ERP, PLM, CRM and inspection extracts cleansed into the graph, on
both backends; what cannot be taken is quarantined with the reason and the row."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqems.errors import ValidationFailed
from sqems.graph_model import Direction, GraphStore
from sqems.graph_model.nodes import Material, Supplier
from sqems.ingestion.importers import import_file
from sqems.ingestion.quarantine import Quarantine


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
