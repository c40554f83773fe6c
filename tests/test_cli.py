"""The ``sqems`` command as a user runs it: a real process, real files, exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sqems.graph_model.neo4j_server import free_port

SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]


def sqems(
    data_dir: Path, *args: str, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "200", **extra}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [*SQEMS, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo")
    done = sqems(data, "demo", "--units", "3000")
    assert done.returncode == 0, done.stderr
    assert "Recall scope of material lot LOT-RESIN-" in done.stdout
    assert "Upstream trace of complaint CMP-" in done.stdout
    assert "customers to notify" in done.stdout
    assert "Investigation of complaint CMP-" in done.stdout
    assert "Suggested recall: material lot LOT-RESIN-" in done.stdout
    (data / "demo.out").write_text(done.stdout)
    return data


def test_demo_builds_the_embedded_store_under_the_data_dir(demo_dir: Path) -> None:
    assert (demo_dir / "graph.db").is_file()
    assert (demo_dir / "demo-plant" / "ground_truth.json").is_file()
    stats = sqems(demo_dir, "stats")
    assert stats.returncode == 0
    assert "3,000" in stats.stdout  # units


def test_recall_json_lists_units_with_their_paths(demo_dir: Path) -> None:
    truth = json.loads((demo_dir / "demo-plant" / "ground_truth.json").read_text())
    lot = truth["causes"][0]["uid"]
    done = sqems(demo_dir, "recall", "--lot", lot, "--json")
    assert done.returncode == 0, done.stderr
    scope = json.loads(done.stdout)
    assert scope["counts"]["units"] == len(scope["units"]) > 0
    assert all(u["path"][0]["uid"] == lot for u in scope["units"])
    assert scope["counts"]["customers"] == len(scope["customers"])


def test_machine_recall_with_a_window(demo_dir: Path) -> None:
    truth = json.loads((demo_dir / "demo-plant" / "ground_truth.json").read_text())
    drift = truth["causes"][1]
    done = sqems(
        demo_dir,
        "recall",
        "--machine",
        drift["uid"],
        "--from",
        drift["window"]["start"],
        "--to",
        drift["window"]["end"],
        "--json",
    )
    assert done.returncode == 0, done.stderr
    scope = json.loads(done.stdout)
    assert set(drift["runs"]) <= set(scope["triggers"])


def test_trace_a_complaint_upstream(demo_dir: Path) -> None:
    done = sqems(demo_dir, "trace", "--complaint", "CMP-000001", "--json")
    assert done.returncode == 0, done.stderr
    labels = {n["label"] for n in json.loads(done.stdout)["nodes"]}
    assert {"Unit", "Batch", "MaterialLot", "Supplier", "Machine", "Operator"} <= labels


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trace", "--unit", "SN-NOPE"], "SN-NOPE is not in the graph"),
        (["recall", "--machine", "M-REFLOW-2", "--from", "2026-13-01"], "is not a date"),
        (
            ["recall", "--machine", "M-REFLOW-2", "--from", "2026-03-02", "--to", "2026-03-01"],
            "ends",
        ),
        (["recall", "--lot", "WO-ASM-00001"], "is a Batch, not a MaterialLot"),
        (["recall"], "exactly one of"),
        (["load", "/no/such/dir"], "does not exist"),
        (["rootcause"], "exactly one of"),
        (["rootcause", "--defect-type", "DT-NOPE"], "DT-NOPE is not in the graph"),
        (["kpis", "--start", "yesterday"], "is not a date"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    demo_dir: Path, args: list[str], message: str
) -> None:
    done = sqems(demo_dir, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().startswith("error:")


def test_rootcause_names_the_planted_lot_first(demo_dir: Path) -> None:
    truth = json.loads((demo_dir / "demo-plant" / "ground_truth.json").read_text())
    lot = truth["causes"][0]
    done = sqems(demo_dir, "rootcause", "--defect-type", lot["defect_type"], "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    first = report["causes"][0]
    # a small plant may feed the lot's batches from one fastener lot too: the two are
    # then inseparable, and listed together
    assert f"material_lot:{lot['uid']}" in [first["factor"], *first["aliases"]]
    assert report["causes"][0]["why"][-1]["label"] == "MaterialLot"


def test_rootcause_at_80_columns_prints_each_cause_whole(demo_dir: Path) -> None:
    truth = json.loads((demo_dir / "demo-plant" / "ground_truth.json").read_text())
    lot = truth["causes"][0]
    done = sqems(demo_dir, "rootcause", "--defect-type", lot["defect_type"], COLUMNS="80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    # no cell is cut to "LOT-RES…": too wide for a table, each cause is a block of
    # labelled lines
    assert "…" not in done.stdout and lot["uid"] in done.stdout
    assert re.search(r"^significant:\s+yes", done.stdout, re.M)
    assert re.search(r"^defective units:\s+\d+ of [\d,]+", done.stdout, re.M)


def test_kpis_print_yields_and_the_shift_test(demo_dir: Path) -> None:
    done = sqems(demo_dir, "kpis")
    assert done.returncode == 0, done.stderr
    assert "rolled throughput yield" in done.stdout
    assert "cost of poor quality" in done.stdout
    as_json = json.loads(sqems(demo_dir, "kpis", "--json").stdout)
    assert as_json["total"]["produced"] == 3000


def test_rootcause_and_kpis_take_a_window_as_from_and_to_and_still_as_start_and_end(
    demo_dir: Path,
) -> None:
    morning = ("2026-01-05", "2026-01-05T12:00")  # the demo plant's first half day
    new = sqems(demo_dir, "kpis", "--from", morning[0], "--to", morning[1], "--json")
    assert new.returncode == 0, new.stderr
    old = sqems(demo_dir, "kpis", "--start", morning[0], "--end", morning[1], "--json")
    assert old.stdout == new.stdout
    everything = json.loads(sqems(demo_dir, "kpis", "--json").stdout)
    assert 0 < json.loads(new.stdout)["total"]["produced"] < everything["total"]["produced"]
    both = sqems(demo_dir, "rootcause", "--defect-type", "DT-CRACKED-HOUSING",
                 "--from", "2026-01-05", "--start", "2026-01-06")  # fmt: skip
    assert both.returncode == 2
    assert both.stderr.strip() == "error: give --from or --start (its old name), not both"
    shown = sqems(demo_dir, "rootcause", "--help").stdout
    assert "--from" in shown
    assert "--start" not in shown


def test_the_demo_complaint_is_investigated_to_a_simulated_fix_at_the_default_sampler(
    demo_dir: Path,
) -> None:
    # the complaint the demo investigates, with its fix simulated on the line's twin at
    # the product's own sampler settings (a small plant's lot spread is weakly
    # identified: too few draws leave the lot model short of its ESS floor)
    shown = (demo_dir / "demo.out").read_text()
    complaint = re.search(r"Investigation of complaint (CMP-\d+)", shown)
    assert complaint, shown[-2000:]
    done = sqems(
        demo_dir, "investigate", complaint[1], "--hours", "2", "--replications", "20",
        "--json", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["whatif_error"] is None, found["whatif_error"]
    result = found["whatif"]
    assert result is not None and result["line"] == found["fix"]["line"]
    assert result["replications"] == 20 and result["verdict"]
    for kpi, v in result["kpis"].items():
        d = v["difference"]
        assert d["low"] <= d["mean"] <= d["high"], kpi


def test_query_on_an_empty_data_dir_says_to_load_first(tmp_path: Path) -> None:
    done = sqems(tmp_path, "stats")
    assert done.returncode == 2
    assert "load a plant first" in done.stderr


def test_generate_then_load_is_idempotent(tmp_path: Path) -> None:
    plant = tmp_path / "plant"
    assert sqems(tmp_path, "generate", "--units", "1000", "--out", str(plant)).returncode == 0
    first = sqems(tmp_path, "load", str(plant))
    again = sqems(tmp_path, "load", str(plant))
    assert first.returncode == again.returncode == 0
    assert sqems(tmp_path, "stats").stdout == sqems(tmp_path, "stats").stdout
    assert "1,000" in sqems(tmp_path, "stats").stdout


def test_serve_prints_a_bootstrap_key_that_opens_the_api(demo_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "SQEMS_DATA_DIR": str(demo_dir), "SQEMS_API_PORT": str(port),
           "COLUMNS": "200"}  # fmt: skip
    env.pop("SQEMS_GRAPH_URI", None)
    (demo_dir / "access.db").unlink(missing_ok=True)
    server = subprocess.Popen([*SQEMS, "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        token = ""
        for line in server.stdout:
            if line.strip().startswith("sqems_"):
                token = line.strip()
                break
        assert token, "serve did not print a bootstrap admin key"
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)
        answer = httpx.post(f"{url}/graphql", headers={"Authorization": f"Bearer {token}"},
                            json={"query": "{ apiKeys { name role } }"}).json()  # fmt: skip
        assert answer["data"]["apiKeys"][0]["role"] == "ADMIN"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_whatif_prints_each_kpi_with_its_interval_and_the_paired_difference(
    tmp_path: Path,
) -> None:
    plant = tmp_path / "plant"
    assert (
        sqems(
            tmp_path, "generate", "--units", "12000", "--seed", "2", "--out", str(plant)
        ).returncode
        == 0
    )
    assert sqems(tmp_path, "load", str(plant)).returncode == 0
    small = {"SQEMS_TWIN_DRAWS": "800", "SQEMS_TWIN_TUNE": "600"}
    done = sqems(
        tmp_path, "whatif", "LINE-PCB", "--set", "P-REFLOW-PEAK=250", "--hours", "4",
        "--replications", "8", **small,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {line.split(")")[0] + ")": line for line in done.stdout.splitlines() if ")" in line}
    for kpi in ("throughput (units/h", "yield (%", "defectives shipped (ppm", "scrap and rework"):
        assert any(r.startswith(kpi) for r in rows), done.stdout
    assert rows["yield (%)"].count(" to ") == 3  # baseline, scenario, change with intervals
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    bad = sqems(tmp_path, "whatif", "LINE-PCB", "--set", "P-REFLOW-PEAK", **small)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: --set takes NAME=NUMBER")


NOISE = ("WARNING", "FutureWarning", "DeprecationWarning", "Sampling", "BLAS", "samples per chain")


def test_a_twin_command_shows_the_sampler_s_warnings_only_when_verbose(tmp_path: Path) -> None:
    """Fifty draws a chain make PyMC warn that its diagnostics need longer chains (and the
    twin then refuses the fit): a real third-party warning, which stays off the terminal
    unless --verbose. Each run has its own data dir: a fit is saved and reused."""
    quiet_dir, loud_dir, plant = tmp_path / "quiet", tmp_path / "loud", tmp_path / "plant"
    assert sqems(quiet_dir, "generate", "--units", "1000", "--out", str(plant)).returncode == 0
    assert sqems(quiet_dir, "load", str(plant)).returncode == 0
    shutil.copytree(quiet_dir, loud_dir)
    few = {"SQEMS_TWIN_DRAWS": "50", "SQEMS_TWIN_TUNE": "50", "SQEMS_TWIN_CHAINS": "2"}
    args = ("whatif", "LINE-PCB", "--speed", "1.1", "--hours", "1", "--replications", "2")
    quiet = sqems(quiet_dir, *args, **few)
    assert quiet.returncode == 2, quiet.stderr
    assert "failed its diagnostics" in quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE)] == []
    loud = sqems(loud_dir, "--verbose", *args, **few)
    assert loud.returncode == 2, loud.stderr
    assert "Only 50 samples per chain" in loud.stderr


def test_the_demo_imports_its_hall_and_scene_lists_the_line_in_3d(demo_dir: Path) -> None:
    scene = sqems(demo_dir, "scene", "LINE-PCB", "--json")
    assert scene.returncode == 0, scene.stderr
    objects = json.loads(scene.stdout)["objects"]
    assert len(objects) == 5 and all(o["bim_element"] for o in objects)
    table = sqems(demo_dir, "scene", "LINE-ASM")
    assert table.returncode == 0 and "M-MOULD-1 " in table.stdout
    models = sqems(demo_dir, "bim", "list")
    assert models.returncode == 0 and "hall.ifc" in models.stdout and "IFC4" in models.stdout


def test_bim_import_links_by_a_csv_and_a_survey_exits_1_on_deviations(
    demo_dir: Path, tmp_path: Path
) -> None:
    hall = demo_dir / "demo-plant" / "hall.ifc"
    proxy = next(ln for ln in hall.read_text().splitlines() if "'M-AOI-1'" in ln)
    global_id = proxy.split("'")[1]
    links = tmp_path / "links.csv"
    links.write_text(f"machine,global_id\nM-AOI-1,{global_id}\nM-NOPE,{global_id}\n")
    refused = sqems(demo_dir, "bim", "import", str(hall), "--links", str(links))
    assert refused.returncode == 2 and "not in the graph: M-NOPE" in refused.stderr
    links.write_text(f"machine,global_id\nM-AOI-1,{global_id}\n")
    done = sqems(demo_dir, "bim", "import", str(hall), "--links", str(links), "--cores", "1")
    assert done.returncode == 0, done.stderr
    assert "(tessellation from the cache)" in done.stdout
    assert f"M-AOI-1 -> {global_id}" in done.stdout
    uid = done.stdout.split()[0]
    surveyed = tmp_path / "survey.csv"
    surveyed.write_text(
        f"global_id,x_m,y_m,z_m,length_m,width_m,height_m\n{global_id},12.5,0,1.1,,,\n"
    )
    report = sqems(demo_dir, "bim", "survey", uid, str(surveyed), "--tolerance", "0.05")
    assert report.returncode == 1, report.stderr
    assert "1 surveyed, 0 within 50 mm, 1 deviating" in report.stdout and "500" in report.stdout
    bad = sqems(demo_dir, "bim", "import", str(links))
    assert bad.returncode == 2 and "links.csv is not an IFC file" in bad.stderr


def test_audit_verify_finds_an_edited_entry_and_checks_an_export(tmp_path: Path) -> None:
    import sqlite3  # noqa: PLC0415

    from sqems.quality.audit import TRAIL_FILE, AuditTrail  # noqa: PLC0415

    trail = AuditTrail(tmp_path / TRAIL_FILE)
    for i in range(3):
        trail.append("erik", "engineer", "Capa", "CAPA-1", f"change {i}", None, {"v": i})
    trail.close()
    ok = sqems(tmp_path, "audit", "verify")
    assert ok.returncode == 0 and "3 entries, chain intact" in ok.stdout
    exported = sqems(tmp_path, "audit", "export", "--to", str(tmp_path / "trail.jsonl"))
    assert exported.returncode == 0
    raw = sqlite3.connect(tmp_path / TRAIL_FILE)
    raw.executescript("DROP TRIGGER trail_no_update;")
    raw.execute("UPDATE trail SET actor = 'mallory' WHERE seq = 2")
    raw.commit()
    raw.close()
    tampered = sqems(tmp_path, "audit", "verify")
    assert tampered.returncode == 1
    assert "entry 2 was changed after it was written" in tampered.stderr
    kept = sqems(tmp_path, "audit", "verify", "--export", str(tmp_path / "trail.jsonl"))
    assert kept.returncode == 0 and "3 entries" in kept.stdout


def test_suppliers_ranks_the_scorecards_and_shows_one_with_its_trend(demo_dir: Path) -> None:
    ranked = sqems(demo_dir, "suppliers", "--json")
    assert ranked.returncode == 0, ranked.stderr
    cards = json.loads(ranked.stdout)
    ppm = [c["material_ppm"] or 0 for c in cards]
    assert ppm == sorted(ppm, reverse=True) and ppm[0] > 0
    worst = cards[0]
    one = sqems(demo_dir, "suppliers", "--supplier", worst["supplier"])
    assert one.returncode == 0 and "month" in one.stdout and worst["name"] in one.stdout


def test_report_dhr_writes_html_and_pdf_for_a_batch(demo_dir: Path, tmp_path: Path) -> None:
    truth = json.loads((demo_dir / "demo-plant" / "ground_truth.json").read_text())
    batch = truth["causes"][0]["batches"][0]
    html_out, pdf_out = tmp_path / "dhr.html", tmp_path / "dhr.pdf"
    done = sqems(demo_dir, "report", "dhr", batch, "--html", str(html_out), "--pdf", str(pdf_out))
    assert done.returncode == 0, done.stderr
    assert f"batch {batch}:" in done.stdout and "deviation(s)" in done.stdout
    assert f"Device history record — batch {batch}" in html_out.read_text()
    assert pdf_out.read_bytes().startswith(b"%PDF-")
    missing = sqems(demo_dir, "report", "dhr", "WO-NONE")
    assert missing.returncode == 2 and "batch WO-NONE is not in the graph" in missing.stderr


def test_rdf_export_validate_query_and_import_of_a_recall_scope(
    demo_dir: Path, tmp_path: Path
) -> None:
    truth = json.loads((demo_dir / "demo-plant" / "ground_truth.json").read_text())
    lot = truth["causes"][0]["uid"]
    scope_file = tmp_path / "scope.jsonld"
    done = sqems(demo_dir, "rdf", "export", "--lot", lot, "--out", str(scope_file))
    assert done.returncode == 0, done.stderr
    assert f"the recall scope of lot {lot}" in done.stderr
    assert json.loads(scope_file.read_text())["@context"]["sqems"]

    valid = sqems(demo_dir, "rdf", "validate", str(scope_file))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "no violations" in valid.stdout

    recall = json.loads(sqems(demo_dir, "recall", "--lot", lot, "--json").stdout)
    rows = sqems(demo_dir, "rdf", "query", str(scope_file), "recall-customers", "--json",
                 "--bind", f"lot=https://sqems.dev/id/MaterialLot/{lot}")  # fmt: skip
    assert rows.returncode == 0, rows.stderr
    assert [r["uid"] for r in json.loads(rows.stdout)] == recall["customers"]

    fresh = tmp_path / "fresh"
    imported = sqems(fresh, "rdf", "import", str(scope_file))
    assert imported.returncode == 0, imported.stderr
    assert f"{recall['counts']['units']:,}" in sqems(fresh, "stats").stdout


def test_rdf_validate_exits_1_with_the_findings_and_import_refuses_the_file(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "incoming.ttl"
    bad.write_text(
        "@prefix sqems: <https://sqems.dev/ontology#> .\n"
        "@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .\n"
        '<https://x/Parameter/P-1> a sqems:Parameter ; sqems:uid "P-1" ; sqems:name "peak" ;\n'
        '  sqems:unit "degC" ; sqems:lsl "250.0"^^xsd:double ; sqems:usl "240.0"^^xsd:double .\n'
    )
    done = sqems(tmp_path, "rdf", "validate", str(bad))
    assert done.returncode == 1
    assert "lsl must be below usl" in done.stdout
    refused = sqems(tmp_path, "rdf", "import", str(bad))
    assert refused.returncode == 2
    assert "nothing was imported" in refused.stderr and "Traceback" not in refused.stderr
    assert "Parameter" not in sqems(tmp_path, "stats").stdout
