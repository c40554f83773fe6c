"""The conformance suite every ``GraphStore`` backend must pass.

Traversal is checked against the rules written in the docstring of
``sqems/graph_model/store.py``; the property test compares it with networkx's shortest
paths on a graph built independently of the store.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import networkx as nx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import (
    Direction,
    Edge,
    GraphStore,
    Reached,
    TimeWindow,
    hops,
)
from sqems.graph_model.integrity import GenealogyViolation
from sqems.graph_model.nodes import (
    Batch,
    BatchStatus,
    Customer,
    Machine,
    Material,
    MaterialLot,
    Operator,
    Parameter,
    ProcessRun,
    Product,
    Shipment,
    Supplier,
    SupplierStatus,
    Unit,
    UnitStatus,
)

if TYPE_CHECKING:
    from tests.conftest import Reopenable, StoreFactory

T0 = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)
OUT, IN, BOTH = Direction.OUT, Direction.IN, Direction.BOTH
ASSEMBLY_OUT = hops(OUT, "ASSEMBLED_INTO")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def unit(uid: str, hours: float = 0.0, status: UnitStatus = UnitStatus.GOOD) -> Unit:
    return Unit(uid=uid, produced_at=at(hours), status=status)


def assembled(src: str, dst: str) -> Edge:
    return Edge("ASSEMBLED_INTO", src, dst)


# Traversal's rules are checked on arbitrary directed graphs (cycles, several parents),
# which a genealogy may not hold (sqems.graph_model.integrity): products and their
# bills of materials (USES) carry them.
BOM_OUT = hops(OUT, "USES")


def product(uid: str) -> Product:
    return Product(uid=uid, name=uid)


def uses(src: str, dst: str) -> Edge:
    return Edge("USES", src, dst)


def chain(store: GraphStore, uids: list[str]) -> None:
    """Units ``uids[0] → uids[1] → …`` joined by ASSEMBLED_INTO."""
    store.upsert_nodes(unit(u) for u in uids)
    store.upsert_edges(assembled(a, b) for a, b in itertools.pairwise(uids))


def edge_keys(edges: list[Edge]) -> list[tuple[str, str, str]]:
    return [(e.src, e.type, e.dst) for e in edges]


def depths(reached: dict[str, Reached]) -> dict[str, int]:
    return {uid: r.depth for uid, r in reached.items()}


# --- upsert ---------------------------------------------------------------------------------------


def test_upserting_the_same_nodes_and_edges_twice_changes_no_counts(store: GraphStore) -> None:
    nodes = [
        Supplier(uid="SUP-1", name="Acme"),
        MaterialLot(uid="LOT-1", received_at=T0, quantity=100),
        Batch(uid="B-1", started_at=T0, quantity=2),
        unit("U-1"),
        unit("U-2"),
    ]
    edges = [
        Edge("SUPPLIED", "SUP-1", "LOT-1"),
        Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 4}),
        Edge("PRODUCED", "B-1", "U-1"),
        Edge("PRODUCED", "B-1", "U-2"),
    ]
    for _ in range(2):
        assert store.upsert_nodes(nodes) == 5
        assert store.upsert_edges(edges) == 4
        assert store.count() == 5
        assert store.count("Unit") == 2
        assert store.count("Supplier") == 1
        assert store.count_edges() == 4
        assert store.count_edges("PRODUCED") == 2
        assert store.count_edges("CONSUMED_IN") == 1


def test_upsert_replaces_every_property_of_a_node(store: GraphStore) -> None:
    store.upsert_nodes([Supplier(uid="SUP-1", name="Acme", country="DE")])
    store.upsert_nodes([Supplier(uid="SUP-1", name="Acme GmbH", status="conditional")])
    got = store.get("SUP-1")
    assert got == Supplier(uid="SUP-1", name="Acme GmbH", status=SupplierStatus.CONDITIONAL)
    assert got.country is None  # replaced, not merged
    assert store.count("Supplier") == 1


def test_upsert_moves_a_node_in_time_for_windowed_traversals(store: GraphStore) -> None:
    chain(store, ["U-1", "U-2"])
    window = TimeWindow(at(10), at(11))
    assert "U-2" not in store.traverse(["U-1"], ASSEMBLY_OUT, window=window)
    store.upsert_nodes([unit("U-2", hours=10.5)])
    assert "U-2" in store.traverse(["U-1"], ASSEMBLY_OUT, window=window)


def test_a_uid_cannot_change_its_label(store: GraphStore) -> None:
    store.upsert_nodes([unit("X-1")])
    with pytest.raises(ValidationFailed, match=r"X-1 .*Unit.*Batch"):
        store.upsert_nodes([Batch(uid="X-1", started_at=T0, quantity=1)])
    assert store.label_of("X-1") == "Unit"
    assert store.count("Batch") == 0


def test_a_uid_cannot_take_two_labels_in_one_batch(store: GraphStore) -> None:
    with pytest.raises(ValidationFailed, match="X-1"):
        store.upsert_nodes([unit("X-1"), Batch(uid="X-1", started_at=T0, quantity=1)])
    assert store.count() == 0


def test_the_last_copy_of_a_uid_in_one_batch_wins(store: GraphStore) -> None:
    store.upsert_nodes([unit("U-1"), unit("U-1", status=UnitStatus.SCRAPPED)])
    assert store.count() == 1
    assert store.get("U-1").status is UnitStatus.SCRAPPED


def test_an_edge_needs_both_ends_to_exist_and_names_the_missing_one(store: GraphStore) -> None:
    store.upsert_nodes([Batch(uid="B-1", started_at=T0, quantity=1)])
    with pytest.raises(ValidationFailed, match="U-404"):
        store.upsert_edges([Edge("PRODUCED", "B-1", "U-404")])
    with pytest.raises(ValidationFailed, match="B-404"):
        store.upsert_edges([Edge("PRODUCED", "B-404", "B-1")])
    assert store.count_edges() == 0


def test_an_edge_between_wrong_labels_is_refused(store: GraphStore) -> None:
    store.upsert_nodes([Batch(uid="B-1", started_at=T0, quantity=1), unit("U-1")])
    with pytest.raises(ValidationFailed, match="SUPPLIED cannot join Batch→Unit"):
        store.upsert_edges([Edge("SUPPLIED", "B-1", "U-1")])
    with pytest.raises(ValidationFailed, match="PRODUCED cannot join Unit→Batch"):
        store.upsert_edges([Edge("PRODUCED", "U-1", "B-1")])
    assert store.count_edges() == 0


def test_an_edge_of_unknown_type_is_refused(store: GraphStore) -> None:
    store.upsert_nodes([unit("U-1"), unit("U-2")])
    with pytest.raises(ValidationFailed, match="unknown relationship type 'WELDED_TO'"):
        store.upsert_edges([Edge("WELDED_TO", "U-1", "U-2")])


def test_edge_properties_are_validated_on_write(store: GraphStore) -> None:
    store.upsert_nodes(
        [
            ProcessRun(uid="RUN-1", started_at=T0, shift="early"),
            Parameter(uid="P-1", name="peak", unit="degC"),
            Operator(uid="OP-1", name="Ana"),
        ]
    )
    with pytest.raises(ValidationFailed, match="RECORDED RUN-1→P-1"):
        store.upsert_edges([Edge("RECORDED", "RUN-1", "P-1", {"value": 243.0})])
    with pytest.raises(ValidationFailed, match="no properties"):
        store.upsert_edges([Edge("OPERATED_BY", "RUN-1", "OP-1", {"x": 1})])
    assert store.count_edges() == 0


def test_edges_are_unique_per_type_and_ends_and_reupsert_updates_props(
    store: GraphStore,
) -> None:
    store.upsert_nodes([MaterialLot(uid="LOT-1", received_at=T0, quantity=10)])
    store.upsert_nodes([Batch(uid="B-1", started_at=T0, quantity=1)])
    store.upsert_edges([Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 2})])
    store.upsert_edges([Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 5})])
    assert store.count_edges() == 1
    found = store.edges(["LOT-1"], hops(OUT, "CONSUMED_IN"))
    assert found == [Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 5.0})]
    store.upsert_edges([Edge("CONSUMED_IN", "LOT-1", "B-1")])
    assert store.edges(["B-1"], hops(IN, "CONSUMED_IN"))[0].props == {}
    assert store.count_edges("CONSUMED_IN") == 1


def test_edges_of_different_types_between_the_same_nodes_are_distinct(
    store: GraphStore,
) -> None:
    store.upsert_nodes([Machine(uid="M-1", name="press"), Parameter(uid="P-1", name="f", unit="N")])
    store.upsert_nodes([ProcessRun(uid="RUN-1", started_at=T0, shift="late")])
    recorded = Edge("RECORDED", "RUN-1", "P-1", {"value": 1, "unit": "N"})
    store.upsert_edges([Edge("ON", "RUN-1", "M-1"), recorded])
    assert store.count_edges() == 2
    assert store.count_edges("ON") == 1
    assert store.count_edges("RECORDED") == 1


# --- transactions ---------------------------------------------------------------------------------


def test_exception_inside_a_transaction_writes_nothing(store: GraphStore) -> None:
    class AbortedError(Exception):
        pass

    with pytest.raises(AbortedError), store.transaction() as batch:
        batch.add_nodes([Batch(uid="B-1", started_at=T0, quantity=1), unit("U-1")])
        batch.add_edges([Edge("PRODUCED", "B-1", "U-1")])
        raise AbortedError
    assert store.count() == 0
    assert store.count_edges() == 0
    assert store.get_many(["B-1", "U-1"]) == {}
    with pytest.raises(NotFound):
        store.traverse(["B-1"], hops(OUT, "PRODUCED"))


def test_a_bad_edge_in_a_transaction_writes_nothing_at_all(store: GraphStore) -> None:
    store.upsert_nodes([unit("U-0")])
    with pytest.raises(ValidationFailed, match="U-404"), store.transaction() as batch:
        batch.add_nodes([Batch(uid="B-1", started_at=T0, quantity=2), unit("U-1")])
        batch.add_nodes([unit("U-0", status=UnitStatus.SCRAPPED)])
        batch.add_edges([Edge("PRODUCED", "B-1", "U-1"), Edge("PRODUCED", "B-1", "U-404")])
    assert store.count() == 1
    assert store.get("U-0").status is UnitStatus.GOOD
    assert store.label_of("B-1") is None
    assert store.count_edges() == 0


def test_a_bad_node_in_a_transaction_writes_nothing_at_all(store: GraphStore) -> None:
    store.upsert_nodes([unit("X-1")])
    with pytest.raises(ValidationFailed), store.transaction() as batch:
        batch.add_nodes([unit("U-1"), Batch(uid="X-1", started_at=T0, quantity=1)])
    assert store.count() == 1
    assert store.label_of("U-1") is None


def test_edges_may_reference_nodes_written_in_the_same_transaction(store: GraphStore) -> None:
    with store.transaction() as batch:
        # edges first: order inside a batch does not matter
        batch.add_edges([Edge("PRODUCED", "B-1", "U-1"), assembled("U-1", "U-2")])
        batch.add_nodes([Batch(uid="B-1", started_at=T0, quantity=1), unit("U-1"), unit("U-2")])
    assert store.count() == 3
    assert store.count_edges() == 2
    reached = store.traverse(["B-1"], {"PRODUCED": OUT, "ASSEMBLED_INTO": OUT}).reached
    assert depths(reached) == {"B-1": 0, "U-1": 1, "U-2": 2}


def test_an_empty_transaction_writes_nothing(store: GraphStore) -> None:
    with store.transaction():
        pass
    assert store.count() == 0


def test_store_stays_usable_after_a_failed_transaction(store: GraphStore) -> None:
    with pytest.raises(ValidationFailed), store.transaction() as batch:
        batch.add_edges([assembled("U-1", "U-2")])
    chain(store, ["U-1", "U-2"])
    assert store.count_edges("ASSEMBLED_INTO") == 1


# --- reads ----------------------------------------------------------------------------------------


@pytest.fixture
def catalogue(store: GraphStore) -> GraphStore:
    store.upsert_nodes(
        [
            Supplier(uid="SUP-3", name="Cobalt Co", country="FR"),
            Supplier(uid="SUP-1", name="Acme", country="DE"),
            Supplier(uid="SUP-2", name="Bolt Ltd", status="disqualified", country="DE"),
            Material(uid="MAT-2", name="solder paste", unit="g", critical=True),
            Material(uid="MAT-1", name="PCB"),
            Material(uid="MAT-3", name="flux", unit="g", critical=True),
            Batch(uid="B-2", started_at=T0, quantity=5, status="on_hold"),
            Batch(uid="B-1", started_at=T0, quantity=5),
        ]
    )
    return store


def test_get_returns_the_node_as_written(catalogue: GraphStore) -> None:
    assert catalogue.get("SUP-2") == Supplier(
        uid="SUP-2", name="Bolt Ltd", status=SupplierStatus.DISQUALIFIED, country="DE"
    )
    assert catalogue.get("B-1") == Batch(uid="B-1", started_at=T0, quantity=5)
    assert catalogue.label_of("MAT-1") == "Material"
    assert catalogue.label_of("NOPE") is None


def test_get_of_an_unknown_uid_is_not_found_naming_the_uid(catalogue: GraphStore) -> None:
    with pytest.raises(NotFound, match="U-0042"):
        catalogue.get("U-0042")


def test_get_many_leaves_out_unknown_uids(catalogue: GraphStore) -> None:
    got = catalogue.get_many(["SUP-1", "NOPE", "MAT-3", "SUP-1"])
    assert set(got) == {"SUP-1", "MAT-3"}
    assert got["MAT-3"] == Material(uid="MAT-3", name="flux", unit="g", critical=True)
    assert catalogue.get_many([]) == {}


def test_get_many_reads_more_uids_than_one_sql_statement_takes(store: GraphStore) -> None:
    store.upsert_nodes(unit(f"U-{i:05d}") for i in range(2_500))
    got = store.get_many(f"U-{i:05d}" for i in range(0, 2_600, 2))
    assert len(got) == 1_250


def test_find_returns_nodes_of_one_label_ordered_by_uid(catalogue: GraphStore) -> None:
    assert [n.uid for n in catalogue.find("Supplier")] == ["SUP-1", "SUP-2", "SUP-3"]
    assert [n.uid for n in catalogue.find("Unit")] == []


def test_find_filters_on_string_values(catalogue: GraphStore) -> None:
    assert [n.uid for n in catalogue.find("Supplier", {"country": "DE"})] == ["SUP-1", "SUP-2"]
    assert [n.uid for n in catalogue.find("Material", {"unit": "g", "name": "flux"})] == ["MAT-3"]
    assert catalogue.find("Supplier", {"country": "US"}) == []


def test_find_filters_on_enum_values(catalogue: GraphStore) -> None:
    found = catalogue.find("Supplier", {"status": SupplierStatus.DISQUALIFIED})
    assert [n.uid for n in found] == ["SUP-2"]
    assert [n.uid for n in catalogue.find("Supplier", {"status": "approved"})] == [
        "SUP-1",
        "SUP-3",
    ]
    assert [n.uid for n in catalogue.find("Batch", {"status": BatchStatus.ON_HOLD})] == ["B-2"]


def test_find_filters_on_bool_values(catalogue: GraphStore) -> None:
    assert [n.uid for n in catalogue.find("Material", {"critical": True})] == ["MAT-2", "MAT-3"]
    assert [n.uid for n in catalogue.find("Material", {"critical": False})] == ["MAT-1"]


def test_find_filters_on_a_missing_optional_value(store: GraphStore) -> None:
    store.upsert_nodes(
        [Supplier(uid="SUP-1", name="A"), Supplier(uid="SUP-2", name="B", country="DE")]
    )
    assert [n.uid for n in store.find("Supplier", {"country": None})] == ["SUP-1"]


def test_find_limit_keeps_the_first_uids(catalogue: GraphStore) -> None:
    assert [n.uid for n in catalogue.find("Supplier", limit=2)] == ["SUP-1", "SUP-2"]
    assert [n.uid for n in catalogue.find("Material", {"critical": True}, limit=1)] == ["MAT-2"]


def test_find_on_an_unknown_property_is_refused(catalogue: GraphStore) -> None:
    with pytest.raises(ValidationFailed, match="'colour'"):
        catalogue.find("Supplier", {"colour": "red"})


def test_find_on_an_unknown_label_is_refused(catalogue: GraphStore) -> None:
    with pytest.raises(ValidationFailed, match="'Widget'"):
        catalogue.find("Widget")


def test_count_by_label_and_edge_type(catalogue: GraphStore) -> None:
    assert catalogue.count() == 8
    assert catalogue.count("Supplier") == 3
    assert catalogue.count("Batch") == 2
    assert catalogue.count("Unit") == 0
    assert catalogue.count_edges() == 0
    assert catalogue.count_edges("PRODUCED") == 0
    with pytest.raises(ValidationFailed):
        catalogue.count("Widget")
    with pytest.raises(ValidationFailed):
        catalogue.count_edges("WELDED_TO")


# --- edges() --------------------------------------------------------------------------------------


@pytest.fixture
def small_line(store: GraphStore) -> GraphStore:
    """B-1 made U-1 and U-2; U-0 went into U-2; U-1 and U-2 into U-3."""
    store.upsert_nodes(
        [
            Batch(uid="B-1", started_at=T0, quantity=2),
            unit("U-0"),
            unit("U-1"),
            unit("U-2"),
            unit("U-3"),
        ]
    )
    store.upsert_edges(
        [
            Edge("PRODUCED", "B-1", "U-1"),
            Edge("PRODUCED", "B-1", "U-2"),
            assembled("U-0", "U-2"),
            assembled("U-1", "U-3"),
            assembled("U-2", "U-3"),
        ]
    )
    return store


def test_edges_out_in_and_both_directions(small_line: GraphStore) -> None:
    store = small_line
    assert edge_keys(store.edges(["U-2"], hops(OUT, "ASSEMBLED_INTO"))) == [
        ("U-2", "ASSEMBLED_INTO", "U-3")
    ]
    assert edge_keys(store.edges(["U-2"], hops(IN, "ASSEMBLED_INTO"))) == [
        ("U-0", "ASSEMBLED_INTO", "U-2")
    ]
    assert edge_keys(store.edges(["U-2"], hops(BOTH, "ASSEMBLED_INTO", "PRODUCED"))) == [
        ("B-1", "PRODUCED", "U-2"),
        ("U-0", "ASSEMBLED_INTO", "U-2"),
        ("U-2", "ASSEMBLED_INTO", "U-3"),
    ]


def test_edges_follow_only_the_types_asked_for(small_line: GraphStore) -> None:
    assert small_line.edges(["U-2"], hops(OUT, "SHIPPED_IN")) == []
    assert edge_keys(small_line.edges(["U-2"], {"PRODUCED": IN, "ASSEMBLED_INTO": OUT})) == [
        ("B-1", "PRODUCED", "U-2"),
        ("U-2", "ASSEMBLED_INTO", "U-3"),
    ]


def test_edges_at_several_uids_are_listed_once_each(small_line: GraphStore) -> None:
    found = small_line.edges(["U-1", "U-2", "U-1"], hops(BOTH, "ASSEMBLED_INTO"))
    assert edge_keys(found) == [
        ("U-0", "ASSEMBLED_INTO", "U-2"),
        ("U-1", "ASSEMBLED_INTO", "U-3"),
        ("U-2", "ASSEMBLED_INTO", "U-3"),
    ]


def test_edges_at_an_unknown_uid_is_not_found(small_line: GraphStore) -> None:
    with pytest.raises(NotFound, match="U-404"):
        small_line.edges(["U-404"], hops(OUT, "ASSEMBLED_INTO"))


@pytest.mark.parametrize(
    "hop",
    [
        hops(OUT, "ASSEMBLED_INTO"),
        hops(IN, "ASSEMBLED_INTO"),
        hops(BOTH, "ASSEMBLED_INTO", "PRODUCED"),
        {"PRODUCED": IN, "ASSEMBLED_INTO": OUT},
        hops(OUT, "SHIPPED_IN"),
    ],
    ids=["out", "in", "both", "mixed", "none"],
)
def test_degrees_count_what_edges_would_list(small_line: GraphStore, hop: Any) -> None:
    uids = ["U-1", "U-2", "U-3", "B-1"]
    listed = {u: len(small_line.edges([u], hop)) for u in uids}
    assert small_line.degrees(uids, hop) == listed


def test_degrees_of_an_unknown_uid_is_not_found(small_line: GraphStore) -> None:
    with pytest.raises(NotFound, match="U-404"):
        small_line.degrees(["U-1", "U-404"], hops(OUT, "ASSEMBLED_INTO"))


def test_edges_along_steps_start_where_the_step_before_led(small_line: GraphStore) -> None:
    down = small_line.edges_along(["B-1"], [hops(OUT, "PRODUCED"), ASSEMBLY_OUT])
    assert down == [
        small_line.edges(["B-1"], hops(OUT, "PRODUCED")),
        small_line.edges(["U-1", "U-2"], ASSEMBLY_OUT),
    ]
    assert [(e.src, e.dst) for e in down[1]] == [("U-1", "U-3"), ("U-2", "U-3")]
    # against the edges: a unit's sub-assemblies, then the batches that made them
    up = small_line.edges_along(["U-3"], [hops(IN, "ASSEMBLED_INTO"), hops(IN, "PRODUCED")])
    assert [[(e.type, e.src, e.dst) for e in step] for step in up] == [
        [("ASSEMBLED_INTO", "U-1", "U-3"), ("ASSEMBLED_INTO", "U-2", "U-3")],
        [("PRODUCED", "B-1", "U-1"), ("PRODUCED", "B-1", "U-2")],
    ]


def test_edges_along_mixed_steps_list_each_edge_once(small_line: GraphStore) -> None:
    steps = [hops(BOTH, "ASSEMBLED_INTO"), {"ASSEMBLED_INTO": BOTH, "PRODUCED": IN}]
    first, second = small_line.edges_along(["U-2"], steps)
    assert [(e.src, e.dst) for e in first] == [("U-0", "U-2"), ("U-2", "U-3")]
    # from U-0 and U-3: back to U-2 twice over, and U-3's other component
    assert second == small_line.edges(["U-0", "U-3"], steps[1])
    assert [(e.src, e.dst) for e in second] == [("U-0", "U-2"), ("U-1", "U-3"), ("U-2", "U-3")]
    assert small_line.edges_along(["U-0"], [hops(IN, "ASSEMBLED_INTO"), ASSEMBLY_OUT]) == [[], []]
    assert small_line.edges_along(["U-0"], []) == []


def test_edges_along_from_an_unknown_uid_is_not_found(small_line: GraphStore) -> None:
    with pytest.raises(NotFound, match="B-404"):
        small_line.edges_along(["B-1", "B-404"], [hops(OUT, "PRODUCED")])


def test_edges_with_an_unknown_type_is_refused(small_line: GraphStore) -> None:
    with pytest.raises(ValidationFailed, match="WELDED_TO"):
        small_line.edges(["U-1"], hops(OUT, "WELDED_TO"))


# --- traverse -------------------------------------------------------------------------------------


def test_traverse_goes_level_by_level_and_records_the_first_edge(small_line: GraphStore) -> None:
    t = small_line.traverse(["B-1"], {"PRODUCED": OUT, "ASSEMBLED_INTO": OUT})
    assert t.start == ("B-1",)
    assert t.reached == {
        "B-1": Reached("B-1", "Batch", 0),
        "U-1": Reached("U-1", "Unit", 1, "B-1", "PRODUCED", OUT),
        "U-2": Reached("U-2", "Unit", 1, "B-1", "PRODUCED", OUT),
        "U-3": Reached("U-3", "Unit", 2, "U-1", "ASSEMBLED_INTO", OUT),
    }
    assert [r.uid for r in t.path("U-3")] == ["B-1", "U-1", "U-3"]
    assert [r.uid for r in t.by_label("Unit")] == ["U-1", "U-2", "U-3"]
    assert len(t) == 4
    assert "U-3" in t


def test_traverse_follows_only_the_hops_given(small_line: GraphStore) -> None:
    t = small_line.traverse(["B-1"], hops(OUT, "PRODUCED"))
    assert depths(t.reached) == {"B-1": 0, "U-1": 1, "U-2": 1}
    # in the other direction, the edges lead nowhere from B-1
    assert depths(small_line.traverse(["B-1"], hops(IN, "PRODUCED")).reached) == {"B-1": 0}


def test_traverse_first_level_wins_over_a_longer_path(store: GraphStore) -> None:
    # S → A → B and S → B: B is at depth 1, via S
    store.upsert_nodes(product(u) for u in ["S", "A", "B"])
    store.upsert_edges([uses("S", "A"), uses("A", "B"), uses("S", "B")])
    reached = store.traverse(["S"], BOM_OUT).reached
    assert reached["B"] == Reached("B", "Product", 1, "S", "USES", OUT)


def test_traverse_attributes_a_node_to_its_smallest_parent(store: GraphStore) -> None:
    # both Z and A (depth 1) reach C; the edge from Z is written first, A still wins
    store.upsert_nodes(product(u) for u in ["S", "Z", "A", "C"])
    store.upsert_edges([uses("S", "Z"), uses("Z", "C")])
    store.upsert_edges([uses("S", "A"), uses("A", "C")])
    reached = store.traverse(["S"], BOM_OUT).reached
    assert reached["C"] == Reached("C", "Product", 2, "A", "USES", OUT)


def test_traverse_attributes_a_node_to_its_smallest_parent_across_directions(
    store: GraphStore,
) -> None:
    # depth-1 nodes A and Z reach C: Z by an out-edge, A by an in-edge; A is smaller
    store.upsert_nodes(product(u) for u in ["S", "Z", "A", "C"])
    store.upsert_edges([uses("S", "Z"), uses("Z", "C")])
    store.upsert_edges([uses("S", "A"), uses("C", "A")])
    reached = store.traverse(["S"], hops(BOTH, "USES")).reached
    assert reached["C"] == Reached("C", "Product", 2, "A", "USES", IN)


def test_traverse_prefers_out_before_in_from_the_same_parent(store: GraphStore) -> None:
    store.upsert_nodes(product(u) for u in ["P", "C"])
    store.upsert_edges([uses("C", "P"), uses("P", "C")])
    reached = store.traverse(["P"], hops(BOTH, "USES")).reached
    assert reached["C"] == Reached("C", "Product", 1, "P", "USES", OUT)


def test_traverse_stops_at_max_depth(store: GraphStore) -> None:
    chain(store, ["U-0", "U-1", "U-2", "U-3", "U-4", "U-5"])
    assert depths(store.traverse(["U-0"], ASSEMBLY_OUT, max_depth=2).reached) == {
        "U-0": 0,
        "U-1": 1,
        "U-2": 2,
    }
    assert depths(store.traverse(["U-0"], ASSEMBLY_OUT, max_depth=0).reached) == {"U-0": 0}
    assert len(store.traverse(["U-0"], ASSEMBLY_OUT)) == 6


def test_traverse_terminates_on_cycles(store: GraphStore) -> None:
    store.upsert_nodes(product(u) for u in ["U-1", "U-2", "U-3"])
    store.upsert_edges([uses("U-1", "U-2"), uses("U-2", "U-3")])
    store.upsert_edges([uses("U-3", "U-1"), uses("U-2", "U-2")])
    t = store.traverse(["U-1"], BOM_OUT, max_depth=1_000)
    assert depths(t.reached) == {"U-1": 0, "U-2": 1, "U-3": 2}
    both = store.traverse(["U-2"], hops(BOTH, "USES"), max_depth=1_000)
    assert depths(both.reached) == {"U-2": 0, "U-1": 1, "U-3": 1}
    assert both.reached["U-1"].direction is IN
    assert both.reached["U-3"].direction is OUT


def test_traverse_both_walks_edges_against_their_direction(small_line: GraphStore) -> None:
    t = small_line.traverse(["U-3"], {"ASSEMBLED_INTO": IN, "PRODUCED": BOTH})
    assert t.reached["U-1"] == Reached("U-1", "Unit", 1, "U-3", "ASSEMBLED_INTO", IN)
    assert t.reached["B-1"] == Reached("B-1", "Batch", 2, "U-1", "PRODUCED", IN)
    assert set(t.reached) == {"U-3", "U-1", "U-2", "B-1", "U-0"}


def test_traverse_from_several_starts_puts_them_all_at_depth_zero(store: GraphStore) -> None:
    chain(store, ["U-1", "U-2", "U-3", "U-4"])
    t = store.traverse(["U-3", "U-1", "U-3"], ASSEMBLY_OUT)
    assert t.start == ("U-1", "U-3")
    assert depths(t.reached) == {"U-1": 0, "U-2": 1, "U-3": 0, "U-4": 1}


def test_traverse_records_its_start_when_given_a_generator(store: GraphStore) -> None:
    chain(store, ["U-1", "U-2"])
    t = store.traverse((u for u in ["U-1"]), ASSEMBLY_OUT)
    assert t.start == ("U-1",)
    assert set(t.reached) == {"U-1", "U-2"}


def test_traverse_from_an_unknown_uid_is_not_found(store: GraphStore) -> None:
    chain(store, ["U-1", "U-2"])
    with pytest.raises(NotFound, match="U-404"):
        store.traverse(["U-1", "U-404"], ASSEMBLY_OUT)


def test_traverse_with_an_unknown_edge_type_is_refused(store: GraphStore) -> None:
    chain(store, ["U-1", "U-2"])
    with pytest.raises(ValidationFailed, match="WELDED_TO"):
        store.traverse(["U-1"], hops(OUT, "WELDED_TO"))


def test_traverse_in_both_directions_by_type_attributes_to_the_smallest_parent(
    small_line: GraphStore,
) -> None:
    # from U-3 against the assembly edges to U-1 and U-2, then against PRODUCED to B-1,
    # which both reach at depth 2: U-1 is the smaller parent
    t = small_line.traverse(["U-3"], {"ASSEMBLED_INTO": IN, "PRODUCED": IN})
    assert t.reached == {
        "U-3": Reached("U-3", "Unit", 0),
        "U-1": Reached("U-1", "Unit", 1, "U-3", "ASSEMBLED_INTO", IN),
        "U-2": Reached("U-2", "Unit", 1, "U-3", "ASSEMBLED_INTO", IN),
        "B-1": Reached("B-1", "Batch", 2, "U-1", "PRODUCED", IN),
        "U-0": Reached("U-0", "Unit", 2, "U-2", "ASSEMBLED_INTO", IN),
    }
    # breadth-first order: every parent comes before its children
    order = list(t.reached)
    assert all(order.index(r.via) < order.index(r.uid) for r in t.reached.values() if r.via)


def test_traverse_checks_the_labels_of_its_starts(small_line: GraphStore) -> None:
    produced = hops(OUT, "PRODUCED")
    t = small_line.traverse(["B-1"], produced, of={"Batch", "MaterialLot"})
    assert set(t.reached) == {"B-1", "U-1", "U-2"}
    with pytest.raises(ValidationFailed, match="U-1 is a Unit, not a Batch or MaterialLot"):
        small_line.traverse(["B-1", "U-1"], produced, of={"MaterialLot", "Batch"})
    with pytest.raises(NotFound, match="B-404"):
        small_line.traverse(["B-404", "B-1"], produced, of={"Batch"})


def test_traverse_lists_the_edges_asked_for_at_every_node_it_reached(
    small_line: GraphStore,
) -> None:
    t = small_line.traverse(["B-1"], hops(OUT, "PRODUCED"), edges=ASSEMBLY_OUT)
    assert t.edges == small_line.edges(["B-1", "U-1", "U-2"], ASSEMBLY_OUT)
    assert [(e.src, e.dst) for e in t.edges] == [("U-1", "U-3"), ("U-2", "U-3")]
    # both ways: U-0 → U-2 enters a reached node; each edge is listed once
    both = small_line.traverse(["B-1"], hops(OUT, "PRODUCED"), edges=hops(BOTH, "ASSEMBLED_INTO"))
    assert [(e.src, e.dst) for e in both.edges] == [("U-0", "U-2"), ("U-1", "U-3"), ("U-2", "U-3")]
    assert small_line.traverse(["B-1"], hops(OUT, "PRODUCED")).edges == []
    assert small_line.traverse(["B-1"], ASSEMBLY_OUT, edges=hops(OUT, "PRODUCED")).edges == [
        Edge("PRODUCED", "B-1", "U-1"),
        Edge("PRODUCED", "B-1", "U-2"),
    ]


@pytest.fixture
def timed_line(store: GraphStore) -> GraphStore:
    """LOT-1 → B-1 (10:00-12:00) → U-1 (11:00), U-2 (13:00), U-3 (14:00);
    U-1 and U-2 → SHP-1 (15:00) → CUST-1 (no time); U-3 → SHP-2 (9:00 next day)."""
    store.upsert_nodes(
        [
            MaterialLot(uid="LOT-1", received_at=at(-48), quantity=10),
            Batch(uid="B-1", started_at=at(4), ended_at=at(6), quantity=3),
            unit("U-1", 5),
            unit("U-2", 7),
            unit("U-3", 8),
            Shipment(uid="SHP-1", shipped_at=at(9)),
            Shipment(uid="SHP-2", shipped_at=at(27)),
            Customer(uid="CUST-1", name="OEM"),
        ]
    )
    store.upsert_edges(
        [
            Edge("CONSUMED_IN", "LOT-1", "B-1"),
            Edge("PRODUCED", "B-1", "U-1"),
            Edge("PRODUCED", "B-1", "U-2"),
            Edge("PRODUCED", "B-1", "U-3"),
            Edge("SHIPPED_IN", "U-1", "SHP-1"),
            Edge("SHIPPED_IN", "U-2", "SHP-1"),
            Edge("SHIPPED_IN", "U-3", "SHP-2"),
            Edge("DELIVERED_TO", "SHP-1", "CUST-1"),
            Edge("DELIVERED_TO", "SHP-2", "CUST-1"),
        ]
    )
    return store


RECALL = hops(OUT, "CONSUMED_IN", "PRODUCED", "SHIPPED_IN", "DELIVERED_TO")


def test_window_keeps_nodes_whose_time_overlaps_it(timed_line: GraphStore) -> None:
    # 10:30-13:00: the batch overlaps; U-1 (11:00) and U-2 (13:00, on the closed end) are in
    window = TimeWindow(at(4.5), at(7))
    t = timed_line.traverse(["B-1"], RECALL, window=window)
    assert set(t.reached) == {"B-1", "U-1", "U-2"}


def test_window_never_filters_nodes_without_a_time(timed_line: GraphStore) -> None:
    # the shipments are all outside the window, so the customer is unreachable; with an
    # open start the customer, which has no time, passes
    window = TimeWindow(at(4.5), at(7))
    assert "CUST-1" not in timed_line.traverse(["B-1"], RECALL, window=window)
    open_start = TimeWindow(None, at(9))
    t = timed_line.traverse(["LOT-1"], RECALL, window=open_start)
    assert set(t.reached) == {"LOT-1", "B-1", "U-1", "U-2", "U-3", "SHP-1", "CUST-1"}
    assert t.reached["CUST-1"].via == "SHP-1"


def test_window_blocks_the_paths_through_a_filtered_node(timed_line: GraphStore) -> None:
    # U-3 (14:00) is outside; SHP-2 is inside but only reachable through U-3
    window = TimeWindow(at(0), at(7))
    late_ship = TimeWindow(at(26), None)
    assert "SHP-2" not in timed_line.traverse(["B-1"], RECALL, window=window)
    # the batch itself is outside this one, so nothing past the start is reached
    assert set(timed_line.traverse(["LOT-1"], RECALL, window=late_ship).reached) == {"LOT-1"}


def test_edges_listed_by_a_windowed_traversal_are_those_at_the_nodes_it_reached(
    timed_line: GraphStore,
) -> None:
    # U-3 (14:00) is outside the window, so its shipment is not listed; U-2's shipment
    # is listed although the shipment itself (15:00) is outside
    window = TimeWindow(at(4.5), at(7))
    t = timed_line.traverse(["B-1"], RECALL, window=window, edges=hops(OUT, "SHIPPED_IN"))
    assert set(t.reached) == {"B-1", "U-1", "U-2"}
    assert [(e.src, e.dst) for e in t.edges] == [("U-1", "SHP-1"), ("U-2", "SHP-1")]


def test_window_overlap_uses_the_whole_interval_of_a_node(timed_line: GraphStore) -> None:
    # the batch ran 10:00-12:00; a window inside it, touching neither end, overlaps it
    t = timed_line.traverse(["LOT-1"], RECALL, window=TimeWindow(at(4.9), at(5.1)))
    assert set(t.reached) == {"LOT-1", "B-1", "U-1"}
    before = timed_line.traverse(["LOT-1"], RECALL, window=TimeWindow(at(1), at(3.99)))
    assert set(before.reached) == {"LOT-1"}


def test_time_window_refuses_naive_or_reversed_bounds() -> None:
    with pytest.raises(ValidationFailed, match="time zone"):
        TimeWindow(datetime(2024, 3, 1), None)
    with pytest.raises(ValidationFailed, match="before it starts"):
        TimeWindow(at(2), at(1))


# --- subgraph -------------------------------------------------------------------------------------


def test_subgraph_returns_the_nodes_and_their_induced_edges(small_line: GraphStore) -> None:
    sub = small_line.subgraph(["U-3", "B-1", "U-1"])
    assert [n.uid for n in sub.nodes] == ["B-1", "U-1", "U-3"]
    assert edge_keys(sub.edges) == [
        ("B-1", "PRODUCED", "U-1"),
        ("U-1", "ASSEMBLED_INTO", "U-3"),
    ]
    data = sub.as_dict()
    assert data["nodes"][0] == {
        "label": "Batch",
        "uid": "B-1",
        "started_at": "2024-03-01T06:00:00Z",
        "ended_at": None,
        "quantity": 2,
        "status": "completed",
    }
    assert data["edges"][1] == {"type": "ASSEMBLED_INTO", "src": "U-1", "dst": "U-3", "props": {}}


def test_subgraph_keeps_edge_properties(store: GraphStore) -> None:
    store.upsert_nodes([MaterialLot(uid="LOT-1", received_at=T0, quantity=10)])
    store.upsert_nodes([Batch(uid="B-1", started_at=T0, quantity=1)])
    store.upsert_edges([Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 2.5})])
    assert store.subgraph(["LOT-1", "B-1"]).edges == [
        Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 2.5})
    ]
    assert store.subgraph(["LOT-1"]).edges == []


def test_subgraph_of_an_unknown_uid_is_not_found(small_line: GraphStore) -> None:
    with pytest.raises(NotFound, match="U-404"):
        small_line.subgraph(["U-1", "U-404"])


# --- persistence ----------------------------------------------------------------------------------


def test_a_reopened_store_has_the_same_nodes_edges_and_answers(reopenable: Reopenable) -> None:
    first = reopenable.create()
    try:
        first.upsert_nodes(
            [
                Supplier(uid="SUP-1", name="Acme", country="DE"),
                MaterialLot(uid="LOT-1", received_at=T0, quantity=10),
                Batch(uid="B-1", started_at=at(1), ended_at=at(2), quantity=2),
                unit("U-1", 1.5),
                unit("U-2", 5),
                ProcessRun(uid="RUN-1", started_at=at(1), shift="early"),
                Parameter(uid="P-1", name="peak", unit="degC", lsl=235, usl=250),
            ]
        )
        first.upsert_edges(
            [
                Edge("SUPPLIED", "SUP-1", "LOT-1"),
                Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 2.5}),
                Edge("PRODUCED", "B-1", "U-1"),
                Edge("PRODUCED", "B-1", "U-2"),
                assembled("U-1", "U-2"),
                Edge("RAN", "B-1", "RUN-1"),
                Edge("RECORDED", "RUN-1", "P-1", {"value": 251.5, "unit": "degC"}),
            ]
        )
        everything = hops(
            BOTH, "SUPPLIED", "CONSUMED_IN", "PRODUCED", "ASSEMBLED_INTO", "RAN", "RECORDED"
        )
        window = TimeWindow(at(0), at(3))
        uids = ["SUP-1", "LOT-1", "B-1", "U-1", "U-2", "RUN-1", "P-1"]
        before = (
            first.subgraph(uids),
            first.traverse(["U-2"], everything),
            first.traverse(["SUP-1"], everything, window=window),
            first.count(),
            first.count_edges(),
            first.count("Unit"),
            first.count_edges("PRODUCED"),
            first.find("Unit"),
        )
    finally:
        first.close()
    again = reopenable.reopen()
    try:
        after = (
            again.subgraph(uids),
            again.traverse(["U-2"], everything),
            again.traverse(["SUP-1"], everything, window=window),
            again.count(),
            again.count_edges(),
            again.count("Unit"),
            again.count_edges("PRODUCED"),
            again.find("Unit"),
        )
        assert after == before
        assert after[3:7] == (7, 7, 2, 2)
        assert "U-2" not in after[2]
        assert again.edges(["P-1"], hops(IN, "RECORDED")) == [
            Edge("RECORDED", "RUN-1", "P-1", {"value": 251.5, "unit": "degC"})
        ]
        # the reopened store is writable and keeps its rules
        with pytest.raises(ValidationFailed, match="U-1"):
            again.upsert_nodes([Batch(uid="U-1", started_at=T0, quantity=1)])
        again.upsert_edges([Edge("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 3})])
        assert again.count_edges() == 7
    finally:
        again.close()


def test_a_failed_transaction_leaves_nothing_after_reopen(reopenable: Reopenable) -> None:
    first = reopenable.create()
    try:
        chain(first, ["U-1", "U-2"])
        with pytest.raises(ValidationFailed), first.transaction() as batch:
            batch.add_nodes([unit("U-3")])
            batch.add_edges([assembled("U-3", "U-404")])
    finally:
        first.close()
    again = reopenable.reopen()
    try:
        assert again.count() == 2
        assert again.count_edges() == 1
        assert again.label_of("U-3") is None
    finally:
        again.close()


# --- traversal against networkx -------------------------------------------------------------------

uids_of = [f"U-{i:02d}" for i in range(12)]

Graph = tuple[int, list[tuple[int, int]], list[int]]


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    """``n`` nodes, up to ``3n`` distinct edges (self-loops allowed), 1-3 start nodes."""
    n = draw(st.integers(min_value=2, max_value=12))
    size = draw(st.integers(min_value=0, max_value=3 * n))
    node = st.integers(min_value=0, max_value=n - 1)
    pairs = draw(st.lists(st.tuples(node, node), min_size=size, max_size=size, unique=True))
    starts = draw(st.lists(node, min_size=1, max_size=3, unique=True))
    return n, pairs, starts


def expected_parent(
    g: nx.DiGraph, depth: dict[str, int], v: str, direction: Direction
) -> tuple[str, Direction]:
    """The documented attribution: smallest parent uid on the level above, out before in."""
    candidates: list[tuple[str, int, Direction]] = []
    for u, d in depth.items():
        if d != depth[v] - 1:
            continue
        if direction in (OUT, BOTH) and g.has_edge(u, v):
            candidates.append((u, 0, OUT))
        if direction in (IN, BOTH) and g.has_edge(v, u):
            candidates.append((u, 1, IN))
    u, _, how = min(candidates)
    return u, how


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(graph=(4, [(0, 1), (0, 2), (2, 3), (1, 3)], [0]), max_depth=3, direction=OUT)
@given(
    graph=graphs(),
    max_depth=st.integers(min_value=0, max_value=6),
    direction=st.sampled_from([OUT, IN, BOTH]),
)
def test_traverse_reaches_what_networkx_reaches_at_the_shortest_depth(
    make_store: StoreFactory,
    graph: Graph,
    max_depth: int,
    direction: Direction,
) -> None:
    n, pairs, starts = graph
    names = uids_of[:n]
    g = nx.DiGraph()
    g.add_nodes_from(names)
    g.add_edges_from((names[a], names[b]) for a, b in pairs)
    walk: nx.Graph = {OUT: g, IN: g.reverse(copy=True), BOTH: g.to_undirected()}[direction]
    start = sorted({names[i] for i in starts})
    shortest: dict[str, int] = {}
    for s in start:
        for v, d in nx.single_source_shortest_path_length(walk, s, cutoff=max_depth).items():
            shortest[v] = min(d, shortest.get(v, d))

    with make_store() as store:
        store.upsert_nodes(product(u) for u in names)
        store.upsert_edges(uses(names[a], names[b]) for a, b in pairs)
        t = store.traverse(start, hops(direction, "USES"), max_depth=max_depth)

    assert depths(t.reached) == shortest
    for v, r in t.reached.items():
        if r.depth == 0:
            assert (r.via, r.edge, r.direction) == (None, None, None)
            continue
        assert (r.via, r.direction) == expected_parent(g, shortest, v, direction)
        assert r.edge == "USES"
        assert t.path(v)[0].uid in start
        assert len(t.path(v)) == r.depth + 1


# --- genealogy integrity --------------------------------------------------------------------------


def test_a_unit_goes_into_one_assembly_only(store: GraphStore) -> None:
    chain(store, ["C-1", "M-1"])
    store.upsert_nodes([unit("M-2")])
    store.upsert_edges([assembled("C-1", "M-1")])  # the same edge again is fine
    with pytest.raises(GenealogyViolation, match=r"C-1 would be assembled into 2 units, M-1, M-2"):
        store.upsert_edges([assembled("C-1", "M-2")])
    with (
        pytest.raises(GenealogyViolation, match="C-2 would be assembled into 2 units"),
        store.transaction() as batch,
    ):
        batch.add_nodes([unit("C-2")])
        batch.add_edges([assembled("C-2", "M-1"), assembled("C-2", "M-2")])
    assert store.label_of("C-2") is None
    assert store.count_edges("ASSEMBLED_INTO") == 1


def test_an_assembly_cannot_go_into_itself(store: GraphStore) -> None:
    chain(store, ["C-1", "M-1", "P-1"])
    with pytest.raises(GenealogyViolation, match="C-1 cannot be assembled into itself"):
        store.upsert_edges([assembled("C-1", "C-1")])
    store.upsert_nodes([unit("X-1")])
    with pytest.raises(GenealogyViolation, match=r"P-1 cannot be assembled into C-1.*cycle"):
        store.upsert_edges([assembled("P-1", "C-1")])
    # a cycle made of the stored chain and edges of one batch
    with pytest.raises(GenealogyViolation, match="cycle"):
        store.upsert_edges([assembled("P-1", "X-1"), assembled("X-1", "C-1")])
    with pytest.raises(GenealogyViolation, match="cycle"), store.transaction() as batch:
        batch.add_nodes([unit("Y-1"), unit("Y-2")])
        batch.add_edges([assembled("Y-1", "Y-2"), assembled("Y-2", "Y-1")])
    assert store.count_edges("ASSEMBLED_INTO") == 2


def test_an_assembly_is_not_produced_before_its_component(store: GraphStore) -> None:
    store.upsert_nodes([unit("C-1", hours=5), unit("M-1", hours=3), unit("M-2", hours=5)])
    with pytest.raises(
        GenealogyViolation,
        match=r"C-1 \(produced 2024-03-01T11:00:00Z\) cannot be assembled into M-1 "
        r"\(produced 2024-03-01T09:00:00Z\)",
    ):
        store.upsert_edges([assembled("C-1", "M-1")])
    store.upsert_edges([assembled("C-1", "M-2")])  # the same time is fine
    # moving a stored unit's time is checked against its parent and its children
    with pytest.raises(GenealogyViolation, match=r"C-1 .* cannot be assembled into M-2"):
        store.upsert_nodes([unit("C-1", hours=6)])
    with pytest.raises(GenealogyViolation, match=r"C-1 .* cannot be assembled into M-2"):
        store.upsert_nodes([unit("M-2", hours=4)])
    store.upsert_nodes([unit("C-1", hours=1), unit("M-2", hours=2)])
    assert store.get("M-2").produced_at == at(2)


def test_a_shipped_unit_is_not_scrapped(store: GraphStore) -> None:
    store.upsert_nodes(
        [
            unit("U-1"),
            unit("U-2", status=UnitStatus.SCRAPPED),
            Shipment(uid="SHP-1", shipped_at=at(9)),
        ]
    )
    with pytest.raises(GenealogyViolation, match="U-2 is scrapped; a scrapped unit cannot be"):
        store.upsert_edges([Edge("SHIPPED_IN", "U-2", "SHP-1")])
    store.upsert_edges([Edge("SHIPPED_IN", "U-1", "SHP-1")])
    with pytest.raises(GenealogyViolation, match="U-1 left in shipment SHP-1"):
        store.upsert_nodes([unit("U-1", status=UnitStatus.SCRAPPED)])
    with pytest.raises(GenealogyViolation, match="U-3 is scrapped"), store.transaction() as batch:
        batch.add_nodes([unit("U-3", status=UnitStatus.SCRAPPED)])
        batch.add_edges([Edge("SHIPPED_IN", "U-3", "SHP-1")])
    store.upsert_nodes([unit("U-1", status=UnitStatus.REWORKED)])
    assert store.get("U-1").status is UnitStatus.REWORKED
    assert store.label_of("U-3") is None


def test_genealogy_reports_what_the_rules_need(store: GraphStore) -> None:
    store.upsert_nodes(
        [
            unit("C-1", hours=1),
            unit("M-1", hours=2),
            unit("P-1", hours=3, status=UnitStatus.SCRAPPED),
            Shipment(uid="SHP-1", shipped_at=at(9)),
        ]
    )
    store.upsert_edges([assembled("C-1", "M-1"), assembled("M-1", "P-1")])
    store.upsert_edges([Edge("SHIPPED_IN", "C-1", "SHP-1")])
    got = store.genealogy(["M-1", "C-1", "P-1", "SHP-1", "U-404"])
    assert got.produced == {"C-1": at(1).timestamp(), "M-1": at(2).timestamp(),
                            "P-1": at(3).timestamp()}  # fmt: skip
    assert got.scrapped == {"P-1"}
    assert got.parents == {"C-1": {"M-1"}, "M-1": {"P-1"}}
    assert got.children == {"M-1": {"C-1"}, "P-1": {"M-1"}}
    assert got.ancestors == {"C-1": {"M-1", "P-1"}, "M-1": {"P-1"}}
    assert got.shipments == {"C-1": "SHP-1"}


def test_labels_of_many_uids(store: GraphStore) -> None:
    store.upsert_nodes([unit("U-1"), Shipment(uid="SHP-1", shipped_at=at(9))])
    assert store.labels(["SHP-1", "U-1", "U-404"]) == {"SHP-1": "Shipment", "U-1": "Unit"}


def test_metadata_lives_apart_from_the_graph(store: GraphStore) -> None:
    store.set_metadata("plant", "drives-1000u-seed3")
    store.set_metadata("load.in_progress", '{"plant": null}')
    store.set_metadata("load.in_progress", '{"plant": "x"}')
    assert store.metadata()["plant"] == "drives-1000u-seed3"
    assert store.metadata()["load.in_progress"] == '{"plant": "x"}'
    store.set_metadata("load.in_progress", None)
    assert "load.in_progress" not in store.metadata()
    assert store.count() == 0
    assert list(store.iter_nodes("Unit")) == []


def test_metadata_survives_reopen(reopenable: Reopenable) -> None:
    first = reopenable.create()
    try:
        first.set_metadata("plant", "sites:SITE-1")
    finally:
        first.close()
    again = reopenable.reopen()
    try:
        assert again.metadata()["plant"] == "sites:SITE-1"
    finally:
        again.close()
