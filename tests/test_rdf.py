"""RDF export and import on every backend: round trips, parts of the graph, refusals,
and SPARQL answers that equal the store's own traversals."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from rdflib import RDF, Graph, URIRef
from rdflib.compare import isomorphic

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import ValidationFailed
from sqems.graph_model import (
    NODE_TYPES,
    REL_TYPES,
    Edge,
    EmbeddedGraphStore,
    GraphStore,
    Node,
    RecallSource,
    SourceKind,
    Traceability,
)
from sqems.graph_model import nodes as n
from sqems.ontologies import (
    Part,
    RdfFormat,
    export_text,
    import_graph,
    parse,
    records,
    run,
    to_graph,
    validate,
    vocabulary,
    write,
)

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
BASE = "https://plant.example/id/"


def _t(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def every_label() -> tuple[list[Node], list[Edge]]:
    """One node of every label with every property set, and one relationship of every
    type (with properties where it has them); a few uids hold characters that must be
    escaped in an IRI."""
    nodes: list[Node] = [
        n.Supplier(uid="SUP-1", name='Acme "Boards"', country="DE", status="conditional"),
        n.Material(uid="MAT/PCB#4", name="PCB 4 layer", unit="pcs", critical=True),
        n.MaterialLot(uid="LOT-1", received_at=T0, quantity=12.5, unit="kg", expires_at=_t(900)),
        n.Product(uid="PRD-1", name="Drive", revision="C", kind="finished"),
        n.Product(uid="PRD-SUB", name="Board", kind="subassembly"),
        n.Batch(uid="B-1", started_at=_t(1), ended_at=_t(3), quantity=2, status="on_hold"),
        n.Unit(uid="U-1", produced_at=_t(3), status="defective"),
        n.Unit(uid="U-2", produced_at=_t(3)),
        n.Site(uid="SITE-1", name="Plant", country="CZ", timezone="Europe/Prague"),
        n.Line(uid="L-1", name="Line 1"),
        n.Machine(
            uid="M-1",
            name="Oven",
            kind="reflow",
            x_m=1.5,
            y_m=-2.25,
            rotation_deg=90,
            length_m=4,
            width_m=1.2,
            height_m=1.8,
        ),
        n.ProcessStep(uid="S-10", name="reflow", sequence=1),
        n.Parameter(
            uid="P-1", name="peak", unit="degC", lsl=235, usl=250, target=242.5, critical=True
        ),
        n.ProcessRun(uid="R-1", started_at=_t(1), ended_at=_t(2), shift="late"),
        n.Operator(
            uid="OP-1",
            name="Ana",
            qualified=True,
            qualified_from=_t(-1000),
            qualified_until=_t(1000),
        ),
        n.Calibration(uid="CAL-1", performed_at=_t(-10), due_at=_t(500), verdict="fail"),
        n.Calibration(
            uid="CAL-2",
            performed_at=_t(600),
            due_at=_t(900),
            verdict="limited",
            as_found=5.31,
            as_left=5.02,
            reference=5.0,
            tolerance=0.2,
            measured_unit="psi",
            limitation="use below 10 psi only",
            performed_by="Metrology Lab",
        ),
        n.WorkInstruction(
            uid="WI-PUMP-30/C",
            instruction="WI-PUMP-30",
            revision="C",
            title="Occlusion test",
            effective_at=_t(-50),
        ),
        n.Qualification(
            uid="QUAL-OP-1-S-10-2",
            granted_at=_t(-40),
            expires_at=_t(400),
            revoked_at=_t(200),
            reason="failed the witnessed audit",
        ),
        n.DeviationDisposition(
            uid="DISP-1",
            batch="WO/2026/001",
            deviation="R-1:calibration",
            decision="use as is",
            rationale="the look-back retest passed",
            signer="qa.lead",
            signed_at=_t(700),
            meaning="approved the disposition",
        ),
        n.Inspection(
            uid="I-1",
            inspected_at=_t(3),
            method="xray",
            sample_size=2,
            defects_found=1,
            verdict="fail",
            image_ref="s3://aoi/1.png",
        ),
        n.DefectType(uid="DT-1", name="void", category="machine"),
        n.Defect(
            uid="D-1",
            found_at=_t(3),
            severity="critical",
            disposition="rework",
            description="void under\nthe QFN",
            evidence='["sha256:' + "ab" * 32 + '"]',
            reported_by="ines",
        ),
        n.Shipment(uid="SHP-1", shipped_at=_t(5), carrier="DHL"),
        n.Customer(uid="CUST-1", name="Atlas", country="US"),
        n.Complaint(uid="CMP-1", received_at=_t(100), severity="major", description="dead"),
        n.Alarm(
            uid="AL-1",
            raised_at=_t(1.5),
            cleared_at=_t(1.6),
            rule="nelson-1",
            severity="critical",
            value=251.5,
            message="above usl",
        ),
        n.Judgement(
            uid="EDGE-1/U-1/3",
            judged_at=_t(3.1),
            probability=0.82,
            verdict="suspect",
            threshold=0.5,
            model_kind="unit-judgement",
            model_product="PRD-1",
            model_version="3",
            edge="EDGE-1",
        ),
        n.Capa(
            uid="CAPA-1",
            title="Voids",
            status="closed",
            opened_at=_t(4),
            closed_at=_t(50),
            source="alarm",
            reported_by="ana",
            problem="voids",
            priority="high",
            owner="eng",
            verifier="qa",
            due_at=_t(60),
            five_why='["why"]',
            eight_d='{"D1": "team"}',
            containment="[]",
            corrective="[]",
            verification="no recurrence",
            effective=True,
            reopened=1,
        ),
        n.WhatIfSession(
            uid="WI-1", name="faster", created_at=_t(10), horizon_s=28800, replications=20, seed=3
        ),
        n.Scenario(
            uid="SC-1",
            name="base",
            baseline=True,
            changes="{}",
            status="done",
            progress=1.0,
            results='{"yield": 0.9}',
            message="ok",
            finished_at=_t(11),
        ),
        n.PlannedProduct(
            uid="PLAN-1",
            name="Smaller drive",
            status="released",
            plan='{"uid": "PLAN-1", "bom": [], "routing": []}',
            saved_at=_t(12),
            released_at=_t(13),
            released_as="PRD-1",
        ),
        n.BimModel(
            uid="BIM-abc",
            name="Hall",
            ifc_schema="IFC4",
            sha256="a" * 64,
            file_name="hall.ifc",
            size_bytes=1024,
            elements=1,
            triangles=12,
            imported_at=_t(0),
        ),
        n.BimElement(
            uid="2O2Fr$t4X7Zf8NOew3FLOH",
            ifc_class="IfcBuildingElementProxy",
            name="oven",
            storey="GF",
            x_m=1,
            y_m=2,
            z_m=0.9,
            length_m=4,
            width_m=1.2,
            height_m=1.8,
            triangles=12,
            as_built_x_m=1.01,
            as_built_y_m=2,
            as_built_z_m=0.9,
            as_built_length_m=4,
            as_built_width_m=1.2,
            as_built_height_m=1.8,
            deviation_m=0.01,
        ),
    ]
    e = Edge
    edges = [
        e("SUPPLIED", "SUP-1", "LOT-1"),
        e("CONSUMED_IN", "LOT-1", "B-1", {"quantity": 0.5}),
        e("RAN", "B-1", "R-1"),
        e("ON", "R-1", "M-1"),
        e("PRODUCED", "B-1", "U-1"),
        e("PRODUCED", "B-1", "U-2"),
        e("ASSEMBLED_INTO", "U-2", "U-1"),
        e("SHIPPED_IN", "U-1", "SHP-1"),
        e("DELIVERED_TO", "SHP-1", "CUST-1"),
        e("FOUND_ON", "D-1", "U-1"),
        e("OF_TYPE", "D-1", "DT-1"),
        e("OF_TYPE", "CMP-1", "DT-1"),
        e("ABOUT", "CMP-1", "U-1"),
        e("ADDRESSES", "CAPA-1", "AL-1"),
        e("DETECTED_IN", "D-1", "I-1"),
        e("INSPECTED", "I-1", "U-1"),
        e("RAISED_BY", "CMP-1", "CUST-1"),
        e("RAISED_ON", "AL-1", "M-1"),
        e("JUDGES", "EDGE-1/U-1/3", "U-1"),
        e("PART_OF", "M-1", "L-1"),
        e("PART_OF", "L-1", "SITE-1"),
        e("MODELLED_BY", "M-1", "2O2Fr$t4X7Zf8NOew3FLOH"),
        e("IN_MODEL", "2O2Fr$t4X7Zf8NOew3FLOH", "BIM-abc"),
        e("LOT_OF", "LOT-1", "MAT/PCB#4"),
        e("OF_PRODUCT", "B-1", "PRD-1"),
        e("USES", "PRD-1", "MAT/PCB#4", {"quantity": 1.0}),
        e("USES", "PRD-1", "PRD-SUB"),
        e("STEP_OF", "S-10", "PRD-1"),
        e("PARAMETER_OF", "P-1", "S-10"),
        e("CAN_PERFORM", "M-1", "S-10"),
        e("FOR_STEP", "R-1", "S-10"),
        e("RECORDED", "R-1", "P-1", {"value": 244.25, "unit": "degC"}),
        e("OPERATED_BY", "R-1", "OP-1"),
        e("CALIBRATES", "CAL-1", "M-1"),
        e("CALIBRATES", "CAL-2", "M-1"),
        e("FOR_STEP", "WI-PUMP-30/C", "S-10"),
        e("FOLLOWED", "R-1", "WI-PUMP-30/C"),
        e("HOLDS", "OP-1", "QUAL-OP-1-S-10-2"),
        e("QUALIFIES_FOR", "QUAL-OP-1-S-10-2", "WI-PUMP-30/C"),
        e("ADDRESSES", "CAPA-1", "CAL-1"),
        e("ORIGINATES_AT", "DT-1", "S-10"),
        e("STUDIES", "WI-1", "L-1"),
        e("IN_SESSION", "SC-1", "WI-1"),
    ]
    return nodes, edges


def test_the_sample_covers_every_label_type_and_property() -> None:
    nodes, edges = every_label()
    assert {x.label for x in nodes} == set(NODE_TYPES)
    assert {x.type for x in edges} == set(REL_TYPES)
    for label, model in NODE_TYPES.items():
        some = [x for x in nodes if x.label == label]
        unset = {f for f in model.model_fields if all(getattr(x, f) is None for x in some)}
        assert unset == set(), f"{label} leaves {unset} unset"


def _content(store: GraphStore) -> tuple[dict[str, dict[str, Any]], set[tuple[Any, ...]]]:
    part = Part.whole(store)
    nodes = {x.uid: {"label": x.label, **x.model_dump()} for x in part.nodes()}
    edges = {(x.type, x.src, x.dst, tuple(sorted(dict(x.props).items()))) for x in part.edges()}
    return nodes, edges


def _load(store: GraphStore, nodes: list[Node], edges: list[Edge]) -> None:
    store.upsert_nodes(nodes)
    store.upsert_edges(edges)


@pytest.mark.parametrize("fmt", list(RdfFormat))
def test_every_label_survives_a_round_trip_through_each_backend(
    store: GraphStore, fmt: RdfFormat
) -> None:
    nodes, edges = every_label()
    _load(store, nodes, edges)
    text = export_text(Part.whole(store), fmt, base=BASE)

    back = EmbeddedGraphStore(None)
    report = import_graph(back, parse(text, fmt))
    assert _content(back) == _content(store)
    assert sum(report.nodes.values()) == len(nodes)
    assert sum(report.edges.values()) == len(edges)
    assert report.shacl is not None and report.shacl.conforms
    # the same graph exports to the same text: IRIs are stable
    assert export_text(Part.whole(back), fmt, base=BASE) == text


def test_an_import_into_each_backend_gives_the_graph_that_was_exported(store: GraphStore) -> None:
    nodes, edges = every_label()
    source = EmbeddedGraphStore(None)
    _load(source, nodes, edges)
    import_graph(store, parse(export_text(Part.whole(source), "turtle"), RdfFormat.TURTLE))
    assert _content(store) == _content(source)


def test_the_three_formats_hold_the_same_triples() -> None:
    source = EmbeddedGraphStore(None)
    _load(source, *every_label())
    graphs = [parse(export_text(Part.whole(source), f), f) for f in RdfFormat]
    assert len(graphs[0]) > 100
    assert isomorphic(graphs[0], graphs[1])
    assert isomorphic(graphs[0], graphs[2])
    assert isomorphic(graphs[0], to_graph(Part.whole(source)))


def test_iris_are_minted_from_the_uid_and_escape_what_a_path_cannot_hold() -> None:
    source = EmbeddedGraphStore(None)
    _load(source, *every_label())
    g = to_graph(Part.whole(source), base=BASE)
    v = vocabulary()
    material = URIRef(BASE + "Material/MAT%2FPCB%234")
    assert (material, RDF.type, v.classes["Material"]) in g
    assert (URIRef(BASE + "BimElement/2O2Fr$t4X7Zf8NOew3FLOH"), None, None) in g
    qualified = URIRef(BASE + "ProcessRun/R-1/RECORDED/P-1")
    assert (qualified, v.properties["value"], None) in g
    assert (qualified, URIRef("http://qudt.org/schema/qudt/unit"),
            URIRef("http://qudt.org/vocab/unit/DEG_C")) in g  # fmt: skip


def test_json_ld_is_plain_json_with_a_context() -> None:
    source = EmbeddedGraphStore(None)
    _load(source, *every_label())
    doc = json.loads(export_text(Part.whole(source), "json-ld"))
    assert doc["@context"]["sqems"] == "https://sqems.dev/ontology#"
    supplier = next(x for x in doc["@graph"] if x.get("@type") == "sqems:Supplier")
    assert supplier["sqems:name"] == 'Acme "Boards"'


def test_an_export_of_the_sample_conforms_to_the_shapes() -> None:
    source = EmbeddedGraphStore(None)
    _load(source, *every_label())
    report = validate(to_graph(Part.whole(source)))
    assert report.conforms, report.text()


# --- refusals: all or nothing ----------------------------------------------------------


def _turtle(body: str) -> Graph:
    prefixes = (
        "@prefix sqems: <https://sqems.dev/ontology#> .\n"
        "@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .\n"
    )
    return parse(prefixes + body, RdfFormat.TURTLE)


GOOD_UNIT = (
    '<https://x/Unit/U-9> a sqems:Unit ; sqems:uid "U-9" ;\n'
    '    sqems:producedAt "2026-03-01T06:00:00Z"^^xsd:dateTime .\n'
)


def test_a_file_that_breaks_the_shapes_imports_nothing(store: GraphStore) -> None:
    bad = GOOD_UNIT + '<https://x/Unit/U-8> a sqems:Unit ; sqems:uid "U-8" ; sqems:colour "red" .'
    with pytest.raises(ValidationFailed, match=r"SHACL.*nothing was imported") as err:
        import_graph(store, _turtle(bad))
    assert "sqems:colour" in err.value.message
    assert store.count() == 0


def test_a_relationship_to_a_node_nowhere_imports_nothing(store: GraphStore) -> None:
    dangling = GOOD_UNIT + "<https://x/Unit/U-9> sqems:shippedIn <https://x/Shipment/SHP-404> ."
    with pytest.raises(ValidationFailed, match="SHP-404"):
        import_graph(store, _turtle(dangling), check_shapes=False)
    assert store.count() == 0


def test_a_relationship_may_join_a_node_already_in_the_store(store: GraphStore) -> None:
    store.upsert_nodes([n.Shipment(uid="SHP-7", shipped_at=T0)])
    import_graph(
        store,
        _turtle(GOOD_UNIT + "<https://x/Unit/U-9> sqems:shippedIn <https://x/Shipment/SHP-7> ."),
        check_shapes=False,
    )
    assert [(x.src, x.dst) for x in Part.whole(store).edges()] == [("U-9", "SHP-7")]


def test_records_name_every_problem_even_without_the_shapes() -> None:
    g = _turtle(
        '<https://x/Unit/U-1> a sqems:Unit ; sqems:uid "U-1" ; sqems:lsl "1.0"^^xsd:double ;\n'
        '    sqems:producedAt "yesterday"^^xsd:dateTime .\n'
        '<https://x/Unit/U-2> a sqems:Unit ; sqems:producedAt "2026-03-01T06:00:00Z" .\n'
        '<https://x/Thing/T-1> a sqems:Thing ; sqems:uid "T-1" .\n'
    )
    with pytest.raises(ValidationFailed) as err:
        records(g)
    text = err.value.message
    assert "a Unit has no property lsl" in text
    assert "produced_at" in text  # the model names the field and the value
    assert "U-2" in text and "needs exactly one sqems:uid" in text
    assert "unknown class https://sqems.dev/ontology#Thing" in text


def test_a_file_that_does_not_parse_names_its_format(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ttl"
    broken.write_text("<https://x/a> <https://x/b> .")
    with pytest.raises(ValidationFailed, match=r"broken\.ttl is not valid turtle"):
        parse(broken)
    with pytest.raises(ValidationFailed, match="cannot tell the RDF format"):
        parse(tmp_path / "graph.xml")


def test_other_vocabularies_are_ignored_and_counted(store: GraphStore) -> None:
    g = _turtle(
        GOOD_UNIT + '<https://x/Unit/U-9> <http://www.w3.org/2000/01/rdf-schema#label> "u" .'
    )
    report = import_graph(store, g, check_shapes=False)
    assert report.ignored == {"http://www.w3.org/2000/01/rdf-schema#label": 1}
    assert store.count("Unit") == 1


# --- a generated plant: parts of the graph and SPARQL ------------------------------------


@cache
def _plant() -> Any:
    return generate(PlantSpec(units=1_000, seed=11))


@pytest.fixture
def plant_store(store: GraphStore) -> GraphStore:
    load_plant(store, plant_sections(_plant()))
    return store


def _lots(store: GraphStore) -> list[str]:
    return [x.uid for x in store.find("MaterialLot")]


def test_a_whole_plant_conforms_and_round_trips(plant_store: GraphStore) -> None:
    buffer = io.StringIO()
    counts = write(Part.whole(plant_store), buffer, RdfFormat.NTRIPLES)
    assert counts.nodes == plant_store.count()
    assert counts.edges == plant_store.count_edges()
    g = parse(buffer.getvalue(), RdfFormat.NTRIPLES)
    assert len(g) == counts.triples
    report = validate(g)
    assert report.conforms, report.text(limit=10)
    back = EmbeddedGraphStore(None)
    import_graph(back, g, check_shapes=False)
    assert _content(back) == _content(plant_store)


def test_a_recall_scope_exports_as_a_subgraph_whose_sparql_answer_is_the_scope(
    plant_store: GraphStore,
) -> None:
    trace = Traceability(plant_store)
    lots = _lots(plant_store)
    checked = 0
    for lot in lots[:: max(1, len(lots) // 6)]:
        scope = trace.recall_scope(RecallSource(SourceKind.LOT, lot))
        g = to_graph(Part.recall(plant_store, RecallSource(SourceKind.LOT, lot)), base=BASE)
        assert validate(g).conforms
        iri = BASE + f"MaterialLot/{lot}"
        units = run(g, "recall-units", lot=iri)
        assert [r["uid"] for r in units] == [u.uid for u in scope.units]
        shipped = {r["uid"]: r["shipment"] for r in units if r["shipment"]}
        assert shipped == {
            u.uid: BASE + f"Shipment/{u.shipment}" for u in scope.units if u.shipment
        }
        customers = run(g, "recall-customers", lot=iri)
        assert [r["uid"] for r in customers] == scope.customers
        checked += bool(scope.units)
    assert checked >= 3


def test_sparql_over_the_whole_export_equals_the_traversals(plant_store: GraphStore) -> None:
    g = to_graph(Part.whole(plant_store), base=BASE)
    trace = Traceability(plant_store)
    for lot in _lots(plant_store)[:8]:
        scope = trace.recall_scope(RecallSource(SourceKind.LOT, lot))
        rows = run(g, "recall-units", lot=BASE + f"MaterialLot/{lot}")
        assert [r["uid"] for r in rows] == [u.uid for u in scope.units]
    complaints = plant_store.find("Complaint")
    assert complaints
    for complaint in complaints[:8]:
        genealogy = trace.upstream([complaint.uid])
        rows = run(g, "complaint-suppliers", complaint=BASE + f"Complaint/{complaint.uid}")
        assert sorted({r["uid"] for r in rows}) == genealogy.nodes("Supplier")
        assert sorted({r["lot"] for r in rows}) == sorted(
            BASE + f"MaterialLot/{x}" for x in genealogy.nodes("MaterialLot")
        )


def test_out_of_spec_actuals_are_the_runs_an_excursion_recall_starts_from(
    plant_store: GraphStore,
) -> None:
    g = to_graph(Part.whole(plant_store), base=BASE)
    rows = run(g, "out-of-spec-actuals")
    trace = Traceability(plant_store)
    for parameter in plant_store.find("Parameter"):
        assert isinstance(parameter, n.Parameter)
        if parameter.lsl is None and parameter.usl is None:
            continue
        scope = trace.recall_scope(RecallSource(SourceKind.PARAMETER, parameter.uid))
        iri = BASE + f"Parameter/{parameter.uid}"
        found = sorted(r["run"].rsplit("/", 1)[1] for r in rows if r["parameter"] == iri)
        assert found == scope.triggers


def test_an_upstream_part_holds_what_the_trace_reaches(plant_store: GraphStore) -> None:
    complaint = plant_store.find("Complaint")[0].uid
    part = Part.upstream(plant_store, [complaint])
    genealogy = Traceability(plant_store).upstream([complaint])
    assert {x.uid for x in part.nodes()} == set(genealogy.traversal.reached)
    assert validate(to_graph(part)).conforms


def test_a_part_of_unknown_uids_is_refused(plant_store: GraphStore) -> None:
    with pytest.raises(ValidationFailed, match="NOPE"):
        Part.of_uids(plant_store, ["NOPE"])
