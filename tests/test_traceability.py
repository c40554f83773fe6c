"""Genealogy upstream and recall scope downstream on a small hand-built plant.

The plant (all times UTC)::

    SUP-A ─SUPPLIED→ LOT-A1 (PCB), LOT-A2 (solder)
    SUP-B ─SUPPLIED→ LOT-B1 (housing), LOT-B2 (solder)

    B-OLD  29 Feb 06-08  ← LOT-B2           RUN-OLD   on M-SMT   P-TEMP 230 (low)
    B-SUB  1 Mar 06-08   ← LOT-A1, LOT-A2   RUN-SUB-1 on M-SMT   P-TEMP 250 (on usl)
    B-FIN  1 Mar 10-16   ← LOT-B1, LOT-A2,  RUN-FIN-1 on M-PRESS P-FORCE 12, P-HUMID 40
                           LOT-B2           RUN-FIN-2 on M-SMT   P-TEMP 256 (high)

    B-OLD → U-OLD-1 (29 Feb 08:00) → SHP-4 → CUST-2
    B-SUB → SA-1, SA-2, SA-3 (1 Mar 08:00)     SA-3 → SHP-3 → CUST-3 (spare part)
    B-FIN → FU-1, FU-2, FU-3, FU-4 (1 Mar 16:00)
    SA-1 ─ASSEMBLED_INTO→ FU-1,  SA-2 → FU-2,  FU-4 → FU-3 (built in the same batch)
    FU-1, FU-2 → SHP-1 → CUST-1;  FU-3 → SHP-2 → CUST-2;  FU-4 not shipped
    CMP-1 ─ABOUT→ FU-1, raised by CUST-1

P-TEMP has limits 235..250 degC, P-FORCE 10..14 kN, P-HUMID none.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import (
    AffectedUnit,
    Direction,
    Edge,
    GraphStore,
    PathStep,
    RecallScope,
    RecallSource,
    SourceKind,
    TimeWindow,
    Traceability,
    render_path,
)
from sqems.graph_model.nodes import (
    Batch,
    Complaint,
    Customer,
    Machine,
    Material,
    MaterialLot,
    Operator,
    Parameter,
    ProcessRun,
    Shipment,
    Supplier,
    Unit,
)

OUT, IN = Direction.OUT, Direction.IN


def t(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in 2024: ``day`` counts from 1 March (0 is 29 February)."""
    if day == 0:
        return datetime(2024, 2, 29, hour, minute, tzinfo=UTC)
    return datetime(2024, 3, day, hour, minute, tzinfo=UTC)


def run(uid: str, start: datetime, end: datetime | None) -> ProcessRun:
    return ProcessRun(uid=uid, started_at=start, ended_at=end, shift="early")


GENEALOGY = """
SUPPLIED       SUP-A>LOT-A1  SUP-A>LOT-A2  SUP-B>LOT-B1  SUP-B>LOT-B2
LOT_OF         LOT-A1>MAT-PCB  LOT-A2>MAT-SOLDER  LOT-B1>MAT-HOUSING  LOT-B2>MAT-SOLDER
CONSUMED_IN    LOT-B2>B-OLD  LOT-A1>B-SUB  LOT-A2>B-SUB  LOT-B1>B-FIN  LOT-A2>B-FIN  LOT-B2>B-FIN
RAN            B-OLD>RUN-OLD  B-SUB>RUN-SUB-1  B-FIN>RUN-FIN-1  B-FIN>RUN-FIN-2
ON             RUN-OLD>M-SMT  RUN-SUB-1>M-SMT  RUN-FIN-1>M-PRESS  RUN-FIN-2>M-SMT
OPERATED_BY    RUN-OLD>OP-2  RUN-SUB-1>OP-1  RUN-FIN-1>OP-2  RUN-FIN-2>OP-1
PRODUCED       B-OLD>U-OLD-1  B-SUB>SA-1  B-SUB>SA-2  B-SUB>SA-3
PRODUCED       B-FIN>FU-1  B-FIN>FU-2  B-FIN>FU-3  B-FIN>FU-4
ASSEMBLED_INTO SA-1>FU-1  SA-2>FU-2  FU-4>FU-3
SHIPPED_IN     U-OLD-1>SHP-4  SA-3>SHP-3  FU-1>SHP-1  FU-2>SHP-1  FU-3>SHP-2
DELIVERED_TO   SHP-1>CUST-1  SHP-2>CUST-2  SHP-3>CUST-3  SHP-4>CUST-2
ABOUT          CMP-1>FU-1
RAISED_BY      CMP-1>CUST-1
"""
"""The plant's edges without properties: a type, then its ``src>dst`` pairs."""


def build_plant(store: GraphStore) -> None:
    with store.transaction() as batch:
        batch.add_nodes(
            [
                Supplier(uid="SUP-A", name="Alpha Boards"),
                Supplier(uid="SUP-B", name="Beta Plastics"),
                Material(uid="MAT-PCB", name="PCB"),
                Material(uid="MAT-SOLDER", name="solder paste", unit="g"),
                Material(uid="MAT-HOUSING", name="housing"),
                MaterialLot(uid="LOT-A1", received_at=t(0, 1), quantity=500),
                MaterialLot(uid="LOT-A2", received_at=t(0, 1), quantity=2_000, unit="g"),
                MaterialLot(uid="LOT-B1", received_at=t(0, 2), quantity=300),
                MaterialLot(uid="LOT-B2", received_at=t(0, 2), quantity=1_000, unit="g"),
                Batch(uid="B-OLD", started_at=t(0, 6), ended_at=t(0, 8), quantity=1),
                Batch(uid="B-SUB", started_at=t(1, 6), ended_at=t(1, 8), quantity=3),
                Batch(uid="B-FIN", started_at=t(1, 10), ended_at=t(1, 16), quantity=4),
                Machine(uid="M-SMT", name="SMT placer"),
                Machine(uid="M-PRESS", name="housing press"),
                Operator(uid="OP-1", name="Ana"),
                Operator(uid="OP-2", name="Ben"),
                Parameter(uid="P-TEMP", name="reflow peak", unit="degC", lsl=235, usl=250),
                Parameter(uid="P-FORCE", name="press force", unit="kN", lsl=10, usl=14),
                Parameter(uid="P-HUMID", name="ambient humidity", unit="%RH"),
                run("RUN-OLD", t(0, 6), t(0, 8)),
                run("RUN-SUB-1", t(1, 6), t(1, 8)),
                run("RUN-FIN-1", t(1, 10), t(1, 12)),
                run("RUN-FIN-2", t(1, 14), t(1, 16)),
                Unit(uid="U-OLD-1", produced_at=t(0, 8)),
                *(Unit(uid=f"SA-{i}", produced_at=t(1, 8)) for i in (1, 2, 3)),
                *(Unit(uid=f"FU-{i}", produced_at=t(1, 16)) for i in (1, 2, 3, 4)),
                Shipment(uid="SHP-1", shipped_at=t(2, 9)),
                Shipment(uid="SHP-2", shipped_at=t(2, 9)),
                Shipment(uid="SHP-3", shipped_at=t(2, 10)),
                Shipment(uid="SHP-4", shipped_at=t(1, 9)),
                Customer(uid="CUST-1", name="OEM One"),
                Customer(uid="CUST-2", name="OEM Two"),
                Customer(uid="CUST-3", name="Service Depot"),
                Complaint(uid="CMP-1", received_at=t(9, 12), description="no boot"),
            ]
        )

        for line in GENEALOGY.strip().splitlines():
            rel, *pairs = line.split()
            batch.add_edges(Edge(rel, *pair.split(">")) for pair in pairs)
        for run_uid, parameter, value, unit in [
            ("RUN-OLD", "P-TEMP", 230.0, "degC"),
            ("RUN-SUB-1", "P-TEMP", 250.0, "degC"),
            ("RUN-FIN-2", "P-TEMP", 256.0, "degC"),
            ("RUN-FIN-1", "P-FORCE", 12.0, "kN"),
            ("RUN-FIN-1", "P-HUMID", 40.0, "%RH"),
        ]:
            props = {"value": value, "unit": unit}
            batch.add_edges([Edge("RECORDED", run_uid, parameter, props)])


@pytest.fixture
def plant(store: GraphStore) -> GraphStore:
    build_plant(store)
    return store


@pytest.fixture
def trace(plant: GraphStore) -> Traceability:
    return Traceability(plant)


def unit_uids(scope: RecallScope) -> list[str]:
    return [u.uid for u in scope.units]


def affected(scope: RecallScope, uid: str) -> AffectedUnit:
    (found,) = [u for u in scope.units if u.uid == uid]
    return found


def assert_real_path(store: GraphStore, path: tuple[PathStep, ...], first: str, last: str) -> None:
    """The path runs from ``first`` to ``last``, each step along a real edge of the graph
    in the direction it claims, each node with its own label."""
    assert path[0].uid == first
    assert path[0].edge is None
    assert path[-1].uid == last
    for step in path:
        assert store.label_of(step.uid) == step.label
    for before, step in itertools.pairwise(path):
        assert step.edge is not None
        assert step.direction in (OUT, IN)
        src, dst = (before.uid, step.uid) if step.direction is OUT else (step.uid, before.uid)
        found = store.edges([src], {step.edge: OUT})
        assert (src, dst) in {(e.src, e.dst) for e in found}, f"no {step.edge} {src}→{dst}"


def assert_every_path_is_real(store: GraphStore, scope: RecallScope) -> None:
    for u in scope.units:
        assert_real_path(store, u.path, scope.source.uid, u.uid)


# --- upstream -------------------------------------------------------------------------------------


def test_upstream_from_a_finished_unit_reaches_its_subassemblies_roots(
    trace: Traceability,
) -> None:
    g = trace.upstream(["FU-1"])
    assert g.nodes("Unit") == ["FU-1", "SA-1"]
    assert g.nodes("Batch") == ["B-FIN", "B-SUB"]
    assert g.nodes("MaterialLot") == ["LOT-A1", "LOT-A2", "LOT-B1", "LOT-B2"]
    assert g.nodes("Supplier") == ["SUP-A", "SUP-B"]
    assert g.nodes("Material") == ["MAT-HOUSING", "MAT-PCB", "MAT-SOLDER"]
    assert g.nodes("ProcessRun") == ["RUN-FIN-1", "RUN-FIN-2", "RUN-SUB-1"]
    assert g.nodes("Machine") == ["M-PRESS", "M-SMT"]
    assert g.nodes("Operator") == ["OP-1", "OP-2"]
    assert g.nodes("Parameter") == ["P-FORCE", "P-HUMID", "P-TEMP"]
    for label in ("Shipment", "Customer", "Complaint"):
        assert g.nodes(label) == []
    assert g.counts() == {
        "Batch": 2,
        "Machine": 2,
        "Material": 3,
        "MaterialLot": 4,
        "Operator": 2,
        "Parameter": 3,
        "ProcessRun": 3,
        "Supplier": 2,
        "Unit": 1,
    }


def test_upstream_path_names_each_edge_walked_backwards(trace: Traceability) -> None:
    g = trace.upstream(["FU-1"])
    assert render_path(g.path("SUP-A")) == (
        "FU-1 <-PRODUCED- B-FIN <-CONSUMED_IN- LOT-A2 <-SUPPLIED- SUP-A"
    )
    assert render_path(g.path("LOT-A1")) == (
        "FU-1 <-ASSEMBLED_INTO- SA-1 <-PRODUCED- B-SUB <-CONSUMED_IN- LOT-A1"
    )
    assert render_path(g.path("M-PRESS")) == "FU-1 <-PRODUCED- B-FIN -RAN-> RUN-FIN-1 -ON-> M-PRESS"


def test_upstream_from_a_complaint_goes_through_its_unit(trace: Traceability) -> None:
    g = trace.upstream(["CMP-1"])
    from_unit = trace.upstream(["FU-1"])
    assert set(g.traversal.reached) == set(from_unit.traversal.reached) | {"CMP-1"}
    assert g.traversal.reached["FU-1"].depth == 1
    assert render_path(g.path("LOT-A1")) == (
        "CMP-1 -ABOUT-> FU-1 <-ASSEMBLED_INTO- SA-1 <-PRODUCED- B-SUB <-CONSUMED_IN- LOT-A1"
    )
    assert g.nodes("Customer") == []


def test_upstream_from_a_subassembly_excludes_the_unit_it_went_into(
    trace: Traceability,
) -> None:
    g = trace.upstream(["SA-1"])
    assert g.nodes("Unit") == ["SA-1"]
    assert g.nodes("Batch") == ["B-SUB"]
    assert g.nodes("MaterialLot") == ["LOT-A1", "LOT-A2"]
    assert g.nodes("Supplier") == ["SUP-A"]
    assert g.nodes("ProcessRun") == ["RUN-SUB-1"]
    assert g.nodes("Machine") == ["M-SMT"]
    assert g.nodes("Operator") == ["OP-1"]
    assert g.nodes("Parameter") == ["P-TEMP"]


def test_upstream_reaches_a_subassembly_of_the_same_batch(trace: Traceability) -> None:
    g = trace.upstream(["FU-3"])
    assert g.nodes("Unit") == ["FU-3", "FU-4"]
    assert g.nodes("Batch") == ["B-FIN"]
    assert g.traversal.reached["FU-4"].depth == 1


def test_upstream_respects_max_depth(trace: Traceability) -> None:
    assert set(trace.upstream(["FU-1"], max_depth=1).traversal.reached) == {
        "FU-1",
        "SA-1",
        "B-FIN",
    }


def test_upstream_with_max_depth_zero_reaches_only_the_start(trace: Traceability) -> None:
    # as store.traverse(max_depth=0) does; 0 must not fall back to the default depth
    assert set(trace.upstream(["FU-1"], max_depth=0).traversal.reached) == {"FU-1"}
    assert set(trace.downstream(["B-SUB"], max_depth=0).traversal.reached) == {"B-SUB"}


def test_upstream_refuses_a_start_that_is_not_a_unit_or_complaint(trace: Traceability) -> None:
    with pytest.raises(ValidationFailed, match="B-SUB is a Batch, not a Complaint or Unit"):
        trace.upstream(["FU-1", "B-SUB"])


def test_upstream_of_an_unknown_uid_is_not_found(trace: Traceability) -> None:
    with pytest.raises(NotFound, match="U-404"):
        trace.upstream(["U-404"])


def test_downstream_genealogy_from_a_lot_follows_assemblies(trace: Traceability) -> None:
    g = trace.downstream(["LOT-A1"])
    assert g.nodes("Unit") == ["FU-1", "FU-2", "SA-1", "SA-2", "SA-3"]
    assert render_path(g.path("CUST-1")) == (
        "LOT-A1 -CONSUMED_IN-> B-SUB -PRODUCED-> SA-1 -ASSEMBLED_INTO-> FU-1 "
        "-SHIPPED_IN-> SHP-1 -DELIVERED_TO-> CUST-1"
    )


# --- recall from a lot or a batch -----------------------------------------------------------------


def test_recall_scope_follows_subassemblies_downstream(trace: Traceability) -> None:
    scope = trace.recall_scope(RecallSource(SourceKind.LOT, "LOT-A1"))
    assert scope.triggers == []
    assert scope.batches == ["B-SUB"]
    assert unit_uids(scope) == ["FU-1", "FU-2", "SA-1", "SA-2", "SA-3"]
    assert scope.shipments == ["SHP-1", "SHP-3"]
    assert scope.customers == ["CUST-1", "CUST-3"]
    assert scope.counts == {
        "process_runs": 0,
        "batches": 1,
        "units": 5,
        "units_shipped": 3,
        "shipments": 2,
        "customers": 2,
    }
    assert render_path(affected(scope, "FU-1").path) == (
        "LOT-A1 -CONSUMED_IN-> B-SUB -PRODUCED-> SA-1 -ASSEMBLED_INTO-> FU-1"
    )
    assert affected(scope, "FU-1").shipment == "SHP-1"
    assert affected(scope, "SA-1").shipment is None  # it travels inside FU-1
    assert affected(scope, "SA-3").shipment == "SHP-3"
    assert_every_path_is_real(trace.store, scope)


def test_recall_from_a_lot_used_by_two_batches_reaches_both(trace: Traceability) -> None:
    scope = trace.recall_scope(RecallSource(SourceKind.LOT, "LOT-A2"))
    assert scope.batches == ["B-FIN", "B-SUB"]
    assert unit_uids(scope) == ["FU-1", "FU-2", "FU-3", "FU-4", "SA-1", "SA-2", "SA-3"]
    assert scope.shipments == ["SHP-1", "SHP-2", "SHP-3"]
    assert scope.customers == ["CUST-1", "CUST-2", "CUST-3"]
    assert scope.counts == {
        "process_runs": 0,
        "batches": 2,
        "units": 7,
        "units_shipped": 4,
        "shipments": 3,
        "customers": 3,
    }
    # FU-1 is two hops from the lot through its own batch, three through SA-1
    assert render_path(affected(scope, "FU-1").path) == (
        "LOT-A2 -CONSUMED_IN-> B-FIN -PRODUCED-> FU-1"
    )
    assert affected(scope, "FU-4").shipment is None
    assert_every_path_is_real(trace.store, scope)


def test_recall_from_a_batch(trace: Traceability) -> None:
    scope = trace.recall_scope(RecallSource(SourceKind.BATCH, "B-SUB"))
    assert scope.batches == ["B-SUB"]
    assert unit_uids(scope) == ["FU-1", "FU-2", "SA-1", "SA-2", "SA-3"]
    assert scope.shipments == ["SHP-1", "SHP-3"]
    assert scope.customers == ["CUST-1", "CUST-3"]
    assert scope.counts["units_shipped"] == 3
    assert render_path(affected(scope, "FU-2").path) == (
        "B-SUB -PRODUCED-> SA-2 -ASSEMBLED_INTO-> FU-2"
    )
    assert_every_path_is_real(trace.store, scope)


def test_recall_through_an_assembly_cycle_terminates(trace: Traceability) -> None:
    scope = trace.recall_scope(RecallSource(SourceKind.BATCH, "B-FIN"))
    assert unit_uids(scope) == ["FU-1", "FU-2", "FU-3", "FU-4"]
    assert scope.customers == ["CUST-1", "CUST-2"]
    assert_every_path_is_real(trace.store, scope)


def test_recall_source_of_the_wrong_label_is_refused(trace: Traceability) -> None:
    with pytest.raises(ValidationFailed, match="B-SUB is a Batch, not a MaterialLot"):
        trace.recall_scope(RecallSource(SourceKind.LOT, "B-SUB"))
    with pytest.raises(ValidationFailed, match="LOT-A1 is a MaterialLot, not a Machine"):
        trace.recall_scope(RecallSource(SourceKind.MACHINE, "LOT-A1"))


def test_recall_source_that_is_not_in_the_graph_is_not_found(trace: Traceability) -> None:
    with pytest.raises(NotFound, match="LOT-404"):
        trace.recall_scope(RecallSource(SourceKind.LOT, "LOT-404"))
    with pytest.raises(NotFound, match="P-404"):
        trace.recall_scope(RecallSource(SourceKind.PARAMETER, "P-404"))


# --- recall from a machine in a window ------------------------------------------------------------


def test_machine_recall_takes_only_runs_overlapping_the_window(trace: Traceability) -> None:
    window = TimeWindow(t(1, 6, 30), t(1, 7, 30))
    scope = trace.recall_scope(RecallSource(SourceKind.MACHINE, "M-SMT", window))
    assert scope.triggers == ["RUN-SUB-1"]
    assert scope.batches == ["B-SUB"]
    # all made after the window closed, still in scope through the run's batch
    assert unit_uids(scope) == ["FU-1", "FU-2", "SA-1", "SA-2", "SA-3"]
    assert scope.customers == ["CUST-1", "CUST-3"]
    assert scope.counts["process_runs"] == 1
    assert render_path(affected(scope, "FU-1").path) == (
        "M-SMT <-ON- RUN-SUB-1 <-RAN- B-SUB -PRODUCED-> SA-1 -ASSEMBLED_INTO-> FU-1"
    )
    assert_every_path_is_real(trace.store, scope)


def test_machine_recall_over_a_day_takes_that_days_runs(trace: Traceability) -> None:
    window = TimeWindow(t(1, 0), t(1, 23, 59))
    scope = trace.recall_scope(RecallSource(SourceKind.MACHINE, "M-SMT", window))
    assert scope.triggers == ["RUN-FIN-2", "RUN-SUB-1"]
    assert scope.batches == ["B-FIN", "B-SUB"]
    assert len(scope.units) == 7
    assert "U-OLD-1" not in unit_uids(scope)
    assert_every_path_is_real(trace.store, scope)


def test_machine_recall_without_a_window_takes_every_run(trace: Traceability) -> None:
    scope = trace.recall_scope(RecallSource(SourceKind.MACHINE, "M-SMT"))
    assert scope.triggers == ["RUN-FIN-2", "RUN-OLD", "RUN-SUB-1"]
    assert scope.batches == ["B-FIN", "B-OLD", "B-SUB"]
    assert len(scope.units) == 8
    assert scope.customers == ["CUST-1", "CUST-2", "CUST-3"]
    assert_every_path_is_real(trace.store, scope)


def test_machine_recall_with_no_run_in_the_window_is_empty(trace: Traceability) -> None:
    window = TimeWindow(t(1, 12, 1), t(1, 15))
    scope = trace.recall_scope(RecallSource(SourceKind.MACHINE, "M-PRESS", window))
    assert scope.triggers == []
    assert scope.units == []
    assert scope.counts == dict.fromkeys(
        ["process_runs", "batches", "units", "units_shipped", "shipments", "customers"], 0
    )


def test_machine_recall_includes_a_run_that_has_not_ended(plant: GraphStore) -> None:
    # RUN-OPEN started at 17:00 and has no end yet: it is running during 18:00-19:00
    plant.upsert_nodes(
        [
            Batch(uid="B-NEW", started_at=t(1, 17), quantity=1, status="in_process"),
            run("RUN-OPEN", t(1, 17), None),
            Unit(uid="U-NEW", produced_at=t(1, 20)),
        ]
    )
    plant.upsert_edges(
        [
            Edge("RAN", "B-NEW", "RUN-OPEN"),
            Edge("ON", "RUN-OPEN", "M-PRESS"),
            Edge("PRODUCED", "B-NEW", "U-NEW"),
        ]
    )
    window = TimeWindow(t(1, 18), t(1, 19))
    scope = Traceability(plant).recall_scope(RecallSource(SourceKind.MACHINE, "M-PRESS", window))
    assert scope.triggers == ["RUN-OPEN"]
    assert unit_uids(scope) == ["U-NEW"]


# --- recall from a parameter excursion ------------------------------------------------------------


def test_excursion_recall_takes_only_runs_recorded_outside_the_limits(
    trace: Traceability,
) -> None:
    scope = trace.recall_scope(RecallSource(SourceKind.PARAMETER, "P-TEMP"))
    # RUN-SUB-1 held 250.0, exactly on the usl: in spec
    assert scope.triggers == ["RUN-FIN-2", "RUN-OLD"]
    assert scope.batches == ["B-FIN", "B-OLD"]
    assert unit_uids(scope) == ["FU-1", "FU-2", "FU-3", "FU-4", "U-OLD-1"]
    assert scope.shipments == ["SHP-1", "SHP-2", "SHP-4"]
    assert scope.customers == ["CUST-1", "CUST-2"]
    assert scope.counts == {
        "process_runs": 2,
        "batches": 2,
        "units": 5,
        "units_shipped": 4,
        "shipments": 3,
        "customers": 2,
    }
    assert render_path(affected(scope, "FU-3").path) == (
        "P-TEMP <-RECORDED- RUN-FIN-2 <-RAN- B-FIN -PRODUCED-> FU-3"
    )
    assert_every_path_is_real(trace.store, scope)


def test_excursion_recall_respects_the_window(trace: Traceability) -> None:
    window = TimeWindow(t(1, 0), None)
    scope = trace.recall_scope(RecallSource(SourceKind.PARAMETER, "P-TEMP", window))
    assert scope.triggers == ["RUN-FIN-2"]
    assert scope.batches == ["B-FIN"]
    assert unit_uids(scope) == ["FU-1", "FU-2", "FU-3", "FU-4"]
    before = TimeWindow(None, t(0, 23))
    early = trace.recall_scope(RecallSource(SourceKind.PARAMETER, "P-TEMP", before))
    assert early.triggers == ["RUN-OLD"]
    assert unit_uids(early) == ["U-OLD-1"]
    assert_every_path_is_real(trace.store, early)


def test_excursion_recall_with_every_run_in_spec_is_empty(trace: Traceability) -> None:
    scope = trace.recall_scope(RecallSource(SourceKind.PARAMETER, "P-FORCE"))
    assert scope.triggers == []
    assert scope.batches == []
    assert scope.units == []


def test_excursion_recall_on_a_parameter_without_limits_is_refused(
    trace: Traceability,
) -> None:
    with pytest.raises(ValidationFailed, match="P-HUMID has no spec limits"):
        trace.recall_scope(RecallSource(SourceKind.PARAMETER, "P-HUMID"))


# --- rendering ------------------------------------------------------------------------------------


def test_render_path_draws_forward_and_backward_edges() -> None:
    path = [
        PathStep("M-SMT", "Machine"),
        PathStep("RUN-1", "ProcessRun", "ON", IN),
        PathStep("B-1", "Batch", "RAN", IN),
        PathStep("U-1", "Unit", "PRODUCED", OUT),
    ]
    assert render_path(path) == "M-SMT <-ON- RUN-1 <-RAN- B-1 -PRODUCED-> U-1"
    assert render_path(path[:1]) == "M-SMT"
    assert render_path([]) == ""


def test_recall_scope_as_dict_carries_source_counts_and_paths(trace: Traceability) -> None:
    window = TimeWindow(t(1, 6, 30), t(1, 7, 30))
    data = trace.recall_scope(RecallSource(SourceKind.MACHINE, "M-SMT", window)).as_dict()
    assert data["source"] == (
        "machine M-SMT from 2024-03-01T06:30:00+00:00 to 2024-03-01T07:30:00+00:00"
    )
    assert data["counts"]["units"] == 5
    sa1 = next(u for u in data["units"] if u["uid"] == "SA-1")
    assert sa1["shipment"] is None
    assert [s["uid"] for s in sa1["path"]] == ["M-SMT", "RUN-SUB-1", "B-SUB", "SA-1"]
    assert sa1["path"][1] == {
        "uid": "RUN-SUB-1",
        "label": "ProcessRun",
        "edge": "ON",
        "direction": "in",
    }
