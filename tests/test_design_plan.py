"""Planned products: a plan file read strictly, checked against a generated plant (unknown
uids refused where they stand, what history does not back warned about), saved, listed
and released through the audit trail — in Python on both backends, over the API and on
the command line at 80 columns."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.design import (
    PlannedProductSpec,
    check_plan,
    get_plan,
    parse_plan,
    planned_products,
    read_plan,
    release_plan,
    save_plan,
)
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore, GraphStore, open_store
from sqems.graph_model.nodes import PlannedProduct, PlanStatus, Product
from sqems.graphql import AccessStore, Role, create_app
from sqems.quality.audit import AuditTrail
from sqems.quality.capa import Actor
from sqems.settings import Settings

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "design" / "drive-mini.json"
ANA = Actor("ana", "engineer")
SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]


def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


@cache
def _plant() -> Any:
    return generate(PlantSpec(units=3_000, seed=1))


@pytest.fixture(scope="module")
def plant() -> Iterator[GraphStore]:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(_plant()))
    yield store
    store.close()


# --- reading ---------------------------------------------------------------------------------


def test_the_example_plan_reads_with_its_defaults_filled_in() -> None:
    plan = read_plan(EXAMPLE)
    assert plan.uid == "PLAN-DRIVE-MINI" and plan.volume == 2000
    assert [b.material for b in plan.bom] == ["MAT-RESIN", "MAT-SHAFT", "MAT-SCREW"]
    screw = next(r for r in plan.routing if r.step == "STEP-ASM-30")
    assert screw.machine == "M-SCREW-2"
    (torque,) = screw.parameters
    assert (torque.lsl, torque.usl, torque.centre) == (2.15, 2.45, 2.3)
    # what the file holds survives the trip through the node's JSON
    assert PlannedProductSpec.model_validate_json(plan.to_json()) == plan


def _edited(path: str, value: Any) -> dict[str, Any]:
    """The example with the value at ``path`` (dotted; list indices as numbers) set,
    or deleted when ``value`` is ``...``."""
    data = copy.deepcopy(example())
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    at: Any = data
    for p in parents:
        at = at[p]
    if value is ...:
        del at[last]
    else:
        at[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("suplier", "SUP-08", "suplier: not a field of a plan here"),
        ("bom.0.suplier", "SUP-08", "bom[0].suplier: not a field of a plan here"),
        ("routing.2.parameters.0.lsl", 2.5, "lsl (2.5) must be below usl (2.45)"),
        ("routing.2.parameters.0.target", 2.6, "target (2.6) is above usl (2.45)"),
        ("routing.2.parameters.0.target", 2.0, "target (2.0) is below lsl (2.15)"),
        ("routing.1.parameters.0.usl", float("nan"), "routing[1].parameters[0].usl"),
        ("routing.3.step", "STEP-ASM-10", "routing: step STEP-ASM-10 is listed twice"),
        ("bom.1.material", "MAT-RESIN", "bom: material MAT-RESIN is listed twice"),
        ("volume", 0, "volume: Input should be greater than 0 (got 0)"),
        ("batch_size", -5, "batch_size: Input should be greater than 0 (got -5)"),
        ("volume", "1000", "volume: Input should be a valid integer (got '1000')"),
        ("bom.0.quantity", 0, "bom[0].quantity: Input should be greater than 0"),
        ("routing.1.machine_kind", "servo press", "give a machine (M-PRESS-1) or a machine_kind"),
        ("routing", [], "routing: List should have at least 1 item"),
        ("uid", "PLAN DRIVE", "uid: String should match pattern"),
        ("name", ..., "name: Field required"),
    ],
)
def test_a_plan_the_format_does_not_allow_is_refused_naming_the_field(
    path: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_plan(_edited(path, value), source="drive-mini.json")
    assert refused.value.message.startswith("drive-mini.json: ")
    assert message in refused.value.message, refused.value.message


def test_a_parameter_without_a_tolerance_or_listed_twice_is_refused() -> None:
    bare = _edited("routing.2.parameters.0", {"parameter": "P-TORQUE"})
    with pytest.raises(ValidationFailed, match="P-TORQUE needs a tolerance"):
        parse_plan(bare)
    twice = _edited("routing.2.parameters", [{"parameter": "P-TORQUE", "usl": 2.5}] * 2)
    with pytest.raises(ValidationFailed, match="parameter P-TORQUE is listed twice"):
        parse_plan(twice)
    one_sided = parse_plan(_edited("routing.2.parameters.0", {"parameter": "P-TORQUE", "lsl": 2}))
    assert one_sided.routing[2].parameters[0].centre is None


def test_a_file_that_is_missing_or_not_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"plan file .*nope.json does not exist"):
        read_plan(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"uid": "PLAN-1",\n "name": }')
    with pytest.raises(ValidationFailed, match="not JSON at line 2, column 10"):
        read_plan(broken)


# --- checking against a generated plant ------------------------------------------------------


def test_the_example_plan_fits_the_generated_plant_without_warnings(plant: GraphStore) -> None:
    assert check_plan(plant, read_plan(EXAMPLE)) == []


@pytest.mark.parametrize(
    ("path", "value", "warning"),
    [
        ("bom.1.supplier", "SUP-10", "SUP-10 never supplied MAT-SHAFT (its lots are of MAT-SCREW)"),
        ("routing.1.machine", "M-SCREW-1", "M-SCREW-1 never ran STEP-ASM-20: its capability"),
        (
            "routing.0.machine_kind",
            "reflow oven",
            "no machine of kind 'reflow oven' runs or is qualified for STEP-ASM-10 "
            "(kinds there: 'injection moulding')",
        ),
        (
            "routing.1.parameters.0.parameter",
            "P-TORQUE",
            "P-TORQUE was never recorded at STEP-ASM-20",
        ),
        ("batch_size", 5000, "batch_size (5000) is larger than the volume (2000)"),
    ],
)
def test_what_history_does_not_back_is_a_warning(
    plant: GraphStore, path: str, value: Any, warning: str
) -> None:
    warnings = check_plan(plant, parse_plan(_edited(path, value)))
    assert len(warnings) == 1 and warning in warnings[0], warnings


def test_a_routing_out_of_the_steps_sequence_is_a_warning(plant: GraphStore) -> None:
    data = example()
    data["routing"].reverse()
    (warning,) = check_plan(plant, parse_plan(data))
    assert warning.startswith("the routing is not in the steps' sequence: STEP-ASM-40 (4)")


def test_uids_the_graph_does_not_hold_are_refused_where_they_stand(plant: GraphStore) -> None:
    data = _edited("bom.0.supplier", "SUP-99")
    data["routing"][2]["machine"] = "M-SCREW-9"
    with pytest.raises(NotFound) as refused:
        check_plan(plant, parse_plan(data))
    assert "bom[0].supplier: SUP-99" in refused.value.message
    assert "routing[2].machine: M-SCREW-9" in refused.value.message
    with pytest.raises(ValidationFailed, match=r"bom\[2\].material: SUP-01 is a Supplier, not"):
        check_plan(plant, parse_plan(_edited("bom.2.material", "SUP-01")))
    with pytest.raises(ValidationFailed, match="plan uid PRD-DRIVE is a Product"):
        check_plan(plant, parse_plan(_edited("uid", "PRD-DRIVE")))


# --- storing and releasing -------------------------------------------------------------------


SUPPLY_AND_ROUTING = {
    "Supplier", "Material", "MaterialLot", "Product", "Line", "Site", "Machine",
    "ProcessStep", "Parameter", "ProcessRun", "SUPPLIED", "LOT_OF", "USES", "STEP_OF",
    "PARAMETER_OF", "CAN_PERFORM", "PART_OF", "FOR_STEP", "ON", "RECORDED",
}  # fmt: skip
"""What a plan is checked against: the plant without its units, batches and quality
records (a smaller load on a server)."""


def test_a_plan_is_saved_listed_and_released_as_a_product_on_each_backend(
    store: GraphStore,
) -> None:
    load_plant(store, [s for s in plant_sections(_plant()) if s.name in SUPPLY_AND_ROUTING])
    trail = AuditTrail(None)
    plan = read_plan(EXAMPLE)
    saved = save_plan(store, trail, ANA, plan)
    assert (saved.created, saved.changed, saved.warnings) == (True, True, [])
    # a planned product is not a product: nothing that reads the plant's products sees it
    assert "PLAN-DRIVE-MINI" not in {p.uid for p in store.find("Product")}
    assert [p.uid for p in planned_products(store)] == ["PLAN-DRIVE-MINI"]
    assert get_plan(store, "PLAN-DRIVE-MINI").spec == plan

    again = save_plan(store, trail, ANA, plan)
    assert (again.created, again.changed) == (False, False)
    revised = save_plan(store, trail, ANA, parse_plan(_edited("volume", 500)))
    assert (revised.created, revised.changed) == (False, True)
    assert get_plan(store, "PLAN-DRIVE-MINI").spec.volume == 500

    done = release_plan(store, trail, ANA, "PLAN-DRIVE-MINI", "PRD-DRIVE-MINI")
    assert done.status is PlanStatus.RELEASED and done.node.released_as == "PRD-DRIVE-MINI"
    product = store.get("PRD-DRIVE-MINI")
    assert isinstance(product, Product) and product.name == plan.name
    uses = {e.dst: e.props["quantity"] for e in store.edges(["PRD-DRIVE-MINI"], {"USES": "out"})}
    assert uses == {"MAT-RESIN": 0.25, "MAT-SHAFT": 1.0, "MAT-SCREW": 3.0}
    assert planned_products(store, PlanStatus.DRAFT) == []
    node = store.get("PLAN-DRIVE-MINI")
    assert isinstance(node, PlannedProduct) and node.status is PlanStatus.RELEASED

    entries = [(e.label, e.uid, e.action, e.actor) for e in trail.entries()]
    assert entries == [
        ("PlannedProduct", "PLAN-DRIVE-MINI", "saved", "ana"),
        ("PlannedProduct", "PLAN-DRIVE-MINI", "revised", "ana"),
        ("PlannedProduct", "PLAN-DRIVE-MINI", "released as PRD-DRIVE-MINI", "ana"),
        ("Product", "PRD-DRIVE-MINI", "created from plan PLAN-DRIVE-MINI", "ana"),
    ]
    assert trail.entries("PLAN-DRIVE-MINI")[1].before["plan"]["volume"] == 2000
    assert trail.verify().ok

    with pytest.raises(ValidationFailed, match="released already, as PRD-DRIVE-MINI"):
        release_plan(store, trail, ANA, "PLAN-DRIVE-MINI", "PRD-OTHER")
    with pytest.raises(ValidationFailed, match="save the revision under a new uid"):
        save_plan(store, trail, ANA, plan)
    trail.close()


def test_a_release_as_a_uid_in_use_or_of_an_unknown_plan_is_refused(plant: GraphStore) -> None:
    trail = AuditTrail(None)
    save_plan(plant, trail, ANA, parse_plan(_edited("uid", "PLAN-TAKEN")))
    with pytest.raises(ValidationFailed, match="PRD-DRIVE is a Product of the graph already"):
        release_plan(plant, trail, ANA, "PLAN-TAKEN", "PRD-DRIVE")
    with pytest.raises(NotFound, match="planned product PLAN-NONE is not in the graph"):
        release_plan(plant, trail, ANA, "PLAN-NONE", "PRD-NEW")
    assert [e.action for e in trail.entries()] == ["saved"]
    assert get_plan(plant, "PLAN-TAKEN").status is PlanStatus.DRAFT
    trail.close()


def test_a_stored_plan_that_is_not_a_plan_is_named() -> None:
    store = EmbeddedGraphStore(None)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    store.upsert_nodes(
        [
            PlannedProduct(uid="PLAN-X", name="x", plan="{oops", saved_at=at),
            PlannedProduct(uid="PLAN-Y", name="y", plan="{}", saved_at=at),
        ]
    )
    with pytest.raises(ValidationFailed, match="stored plan PLAN-X: its plan property is not JSON"):
        get_plan(store, "PLAN-X")
    with pytest.raises(ValidationFailed, match="stored plan PLAN-Y: uid: Field required"):
        planned_products(store)
    store.close()


# --- over the API ----------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    tokens: dict[str, str]

    def post(self, who: str, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=60,
        )
        assert response.status_code == 200 and "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(_plant()))
    access = AccessStore(None)
    tokens = {name: access.create_key(name, role)[1]
              for name, role in (("erik", Role.ENGINEER), ("val", Role.VIEWER))}  # fmt: skip
    settings = Settings(data_dir=tmp_path_factory.mktemp("api-design"))
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, tokens)
    access.close()
    store.close()


OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"


def test_the_published_save_mutation_stores_a_plan_over_a_live_server(served: Served) -> None:
    save = (OPERATIONS / "save_planned_product.graphql").read_text()
    data = _edited("bom.1.supplier", "SUP-10")
    denied = served.post("val", save, plan=data)["errors"][0]
    assert denied["extensions"]["code"] == "FORBIDDEN"
    saved = served.post("erik", save, plan=data)["data"]["savePlannedProduct"]
    assert saved["plannedProduct"]["uid"] == "PLAN-DRIVE-MINI"
    assert saved["plannedProduct"]["status"] == "DRAFT"
    assert saved["created"] and saved["changed"]
    assert [w.split(" (")[0] for w in saved["warnings"]] == ["SUP-10 never supplied MAT-SHAFT"]

    listed = served.post("val", (OPERATIONS / "planned_products.graphql").read_text())
    (plan,) = listed["data"]["plannedProducts"]
    assert json.loads(plan["plan"])["bom"][1]["supplier"] == "SUP-10"

    bad = served.post("erik", save, plan=_edited("routing.2.parameters.0.lsl", 3.0))
    error = bad["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_FAILED"
    assert "routing[2].parameters[0]: P-TORQUE: lsl (3.0) must be below usl" in error["message"]
    unknown = served.post("erik", save, plan=_edited("bom.0.material", "MAT-NONE"))["errors"][0]
    assert unknown["extensions"]["code"] == "NOT_FOUND"
    assert "bom[0].material: MAT-NONE" in unknown["message"]

    release = """mutation($u: String!, $p: String!) {
        releasePlannedProduct(uid: $u, product: $p) { uid ... on PlannedProduct {
        status releasedAs } } }"""
    done = served.post("erik", release, u="PLAN-DRIVE-MINI", p="PRD-DRIVE-MINI")["data"]
    assert done["releasePlannedProduct"]["releasedAs"] == "PRD-DRIVE-MINI"
    history = served.post(
        "val", 'query { recordHistory(uid: "PLAN-DRIVE-MINI") { actor action } }'
    )["data"]["recordHistory"]
    assert history == [{"actor": "erik", "action": "saved"},
                       {"actor": "erik", "action": "released as PRD-DRIVE-MINI"}]  # fmt: skip


# --- on the command line ---------------------------------------------------------------------


def _sqems(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "80"}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [*SQEMS, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _narrow(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line.rstrip()) > 80]
    assert not wide, "\n".join(wide)


def test_the_design_commands_check_save_list_and_release_at_80_columns(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path))
    load_plant(store, plant_sections(_plant()))
    store.close()
    plan = tmp_path / "mini.json"
    plan.write_text(json.dumps(_edited("routing.1.machine", "M-SCREW-1")))

    checked = _sqems(tmp_path, "design", "check", str(plan))
    assert checked.returncode == 0, checked.stderr
    assert "1 warning:" in checked.stdout and "- M-SCREW-1 never ran STEP-ASM-20" in checked.stdout
    _narrow(checked.stdout)

    saved = _sqems(tmp_path, "design", "save", str(plan))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.startswith("saved PLAN-DRIVE-MINI as a draft")
    again = _sqems(tmp_path, "design", "save", str(plan))
    assert again.stdout.startswith("unchanged: PLAN-DRIVE-MINI is stored as")
    _narrow(saved.stdout + again.stdout)

    released = _sqems(tmp_path, "design", "release", "PLAN-DRIVE-MINI", "--as", "PRD-DRIVE-MINI")
    assert released.returncode == 0, released.stderr
    assert "released PLAN-DRIVE-MINI as product PRD-DRIVE-MINI" in released.stdout
    listed = _sqems(tmp_path, "design", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "PLAN-DRIVE-MINI" in line)
    assert "released" in row and "PRD-DRIVE-MINI" in row
    _narrow(released.stdout + listed.stdout)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_edited("bom.0.supplier", "SUP-99")))
    refused = _sqems(tmp_path, "design", "check", str(bad))
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: plan PLAN-DRIVE-MINI: not in the graph")
    assert "bom[0].supplier: SUP-99" in line
