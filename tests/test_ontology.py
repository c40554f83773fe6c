"""The ontology and the shapes against the graph model: no drift in either direction.

Every label, relationship type and property of ``sqems.graph_model`` must have its term
in ``sqems.ttl`` with a label, a definition, the right domain and range; every term of
the ontology must stand for something in the model. The shipped shapes must be what the
generator writes from the model today, and the rules the models check in code must be
refused by the shapes too.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from rdflib import OWL, RDF, RDFS, SKOS, XSD, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.term import Node as Term

from sqems.errors import ValidationFailed
from sqems.graph_model import NODE_TYPES, REL_TYPES
from sqems.ontologies import shapes as shape_rules
from sqems.ontologies.export import Mapper
from sqems.ontologies.shacl import validate
from sqems.ontologies.vocabulary import SQEMS, shapes_text, vocabulary

V = vocabulary()
ONTO = V.ontology
META = {SQEMS.graphName, SQEMS.qualifies, SQEMS.genealogyLink, SQEMS.to}
"""Terms about the mapping itself, which stand for no element of the model."""


def _members(node: Term | None) -> set[Term]:
    """A class or datatype expression as the set of its members (a union or one)."""
    if node is None:
        return set()
    union = ONTO.value(node, OWL.unionOf)
    if union is not None:
        return set(Collection(ONTO, union))
    return {node}


def _field_owners() -> dict[str, set[Term]]:
    owners: dict[str, set[Term]] = {}
    for label, model in NODE_TYPES.items():
        for name in model.model_fields:
            owners.setdefault(name, set()).add(V.classes[label])
    for type_name, rel in REL_TYPES.items():
        if rel.props is not None:
            for name in rel.props.model_fields:
                owners.setdefault(name, set()).add(V.qualified[type_name].cls)
    return owners


def test_every_label_type_and_property_of_the_model_has_an_ontology_term() -> None:
    assert set(V.classes) == set(NODE_TYPES)
    assert set(V.relations) == set(REL_TYPES)
    assert set(V.properties) == set(_field_owners())
    assert set(V.qualified) == {t for t, r in REL_TYPES.items() if r.props is not None}


def test_every_ontology_term_stands_for_something_in_the_model() -> None:
    declared = {
        s
        for s in ONTO.subjects(RDF.type, None)
        if isinstance(s, URIRef) and s.startswith(str(SQEMS))
    }
    mapped = {*V.classes.values(), *V.relations.values(), *V.properties.values()}
    qualification = {t for q in V.qualified.values() for t in (q.cls, q.link)}
    assert declared - mapped - qualification - META == set()
    # and nothing is named twice
    names = [str(o) for o in ONTO.objects(None, SQEMS.graphName)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("term", sorted(set(vocabulary().by_iri()) | {SQEMS.to}), ids=str)
def test_every_term_has_an_english_label_and_definition(term: URIRef) -> None:
    labels = [o for o in ONTO.objects(term, RDFS.label) if isinstance(o, Literal)]
    definitions = [o for o in ONTO.objects(term, SKOS.definition) if isinstance(o, Literal)]
    assert [x.language for x in labels] == ["en"]
    assert [x.language for x in definitions] == ["en"]
    assert len(str(definitions[0])) > 10


def test_property_domains_are_the_labels_that_have_the_property() -> None:
    for name, owners in _field_owners().items():
        iri = V.properties[name]
        assert (iri, RDF.type, OWL.DatatypeProperty) in ONTO, name
        domain = _members(ONTO.value(iri, RDFS.domain))
        if owners == set(V.classes.values()):
            assert domain == set(), f"{name} is on every node; it needs no domain"
        else:
            assert domain == owners, name


def test_property_ranges_hold_the_datatype_every_owner_writes() -> None:
    for (owner, name), datatype in V.datatypes.items():
        assert datatype in _members(ONTO.value(V.properties[name], RDFS.range)), (owner, name)


def test_relationship_domains_and_ranges_are_the_label_pairs_it_joins() -> None:
    for type_name, rel in REL_TYPES.items():
        iri = V.relations[type_name]
        sources = {V.classes[a] for a, _ in rel.pairs}
        targets = {V.classes[b] for _, b in rel.pairs}
        assert _members(ONTO.value(iri, RDFS.domain)) == sources, type_name
        assert _members(ONTO.value(iri, RDFS.range)) == targets, type_name


def test_genealogy_links_are_exactly_the_genealogy_relationships() -> None:
    genealogy = {
        s for s in ONTO.subjects(RDFS.subPropertyOf, SQEMS.genealogyLink) if isinstance(s, URIRef)
    }
    assert genealogy == {V.relations[t] for t, r in REL_TYPES.items() if r.genealogy}


@pytest.mark.parametrize(
    ("namespace", "what"),
    [
        ("http://www.w3.org/ns/sosa/", "SOSA/SSN"),
        ("http://www.w3.org/ns/prov#", "PROV-O"),
        ("http://qudt.org/schema/qudt/", "QUDT"),
        ("http://www.w3id.org/hsu-aut/DINEN62264-2#", "ISA-95 / IEC 62264"),
    ],
)
def test_ontology_is_aligned_to_the_standard_vocabularies(namespace: str, what: str) -> None:
    alignment = (RDFS.subClassOf, RDFS.subPropertyOf, SKOS.exactMatch, SKOS.closeMatch,
                 SKOS.relatedMatch, OWL.inverseOf)  # fmt: skip
    targets = {str(o) for p in alignment for o in ONTO.objects(None, p) if isinstance(o, URIRef)}
    assert any(t.startswith(namespace) for t in targets), what


def test_the_equipment_hierarchy_maps_to_isa95_levels() -> None:
    isa95 = "http://www.w3id.org/hsu-aut/DINEN62264-2#"
    assert (V.classes["Site"], SKOS.exactMatch, URIRef(isa95 + "Site")) in ONTO
    assert (V.classes["Line"], SKOS.closeMatch, URIRef(isa95 + "Production_Line")) in ONTO
    assert (V.classes["Machine"], SKOS.closeMatch, URIRef(isa95 + "Work_Cell")) in ONTO


def test_ontology_declares_itself_with_a_version() -> None:
    (ontology,) = ONTO.subjects(RDF.type, OWL.Ontology)
    assert ONTO.value(ontology, OWL.versionIRI) is not None


def test_shipped_shapes_are_what_the_model_writes_today() -> None:
    assert shapes_text() == shape_rules.shapes_turtle(), (
        "sqems/ontologies/shapes.ttl is stale: run "
        "`python -m sqems.ontologies.shapes > sqems/ontologies/shapes.ttl`"
    )


# --- the shapes refuse what the models refuse ---------------------------------------------

T0, T1 = "2026-03-01T06:00:00Z", "2026-03-01T08:00:00Z"
VALID: dict[str, dict[str, Any]] = {
    "MaterialLot": {"uid": "LOT-1", "received_at": T0, "quantity": 5.0, "expires_at": T1},
    "Batch": {"uid": "B-1", "started_at": T0, "ended_at": T1, "quantity": 10},
    "ProcessRun": {"uid": "R-1", "started_at": T0, "ended_at": T1, "shift": "early"},
    "Calibration": {"uid": "CAL-1", "performed_at": T0, "due_at": T1},
    "Alarm": {"uid": "A-1", "raised_at": T0, "cleared_at": T1, "rule": "usl"},
    "Capa": {"uid": "CAPA-1", "title": "t", "opened_at": T0, "closed_at": T1},
    "Operator": {"uid": "OP-1", "name": "n", "qualified_from": T0, "qualified_until": T1},
    "Parameter": {"uid": "P-1", "name": "n", "unit": "degC", "lsl": 1.0, "usl": 3.0, "target": 2.0},
    "Inspection": {
        "uid": "I-1",
        "inspected_at": T0,
        "method": "aoi",
        "sample_size": 5,
        "defects_found": 2,
    },
    "Supplier": {"uid": "SUP-1", "name": "n", "country": "DE"},
    "Scenario": {"uid": "SC-1", "name": "n", "progress": 0.5},
    "BimModel": {
        "uid": "BIM-1",
        "name": "n",
        "ifc_schema": "IFC4",
        "sha256": "a" * 64,
        "file_name": "f.ifc",
        "size_bytes": 1,
        "elements": 1,
        "triangles": 1,
        "imported_at": T0,
    },
    "Unit": {"uid": "U-1", "produced_at": T0, "status": "good"},
    "Judgement": {
        "uid": "EDGE-1/U-1/3",
        "judged_at": T0,
        "probability": 0.7,
        "verdict": "suspect",
        "threshold": 0.5,
        "model_kind": "unit-judgement",
        "model_product": "PRD-1",
        "model_version": "3",
        "edge": "EDGE-1",
    },
    "Machine": {"uid": "M-1", "name": "n", "x_m": 1.0},
    "Qualification": {
        "uid": "QUAL-1",
        "granted_at": T0,
        "expires_at": T1,
        "revoked_at": T1,
        "reason": "failed audit",
    },
    "WorkInstruction": {
        "uid": "WI-PUMP-30/C",
        "instruction": "WI-PUMP-30",
        "revision": "C",
        "title": "t",
        "effective_at": T0,
    },
    "DeviationDisposition": {
        "uid": "DISP-1",
        "batch": "WO/2026/001",
        "deviation": "R-1:calibration",
        "decision": "rework",
        "rationale": "r",
        "signer": "s",
        "signed_at": T0,
        "meaning": "approved",
    },
    "PlannedProduct": {
        "uid": "PLAN-1",
        "name": "n",
        "status": "released",
        "plan": "{}",
        "saved_at": T0,
        "released_at": T1,
        "released_as": "PRD-1",
    },
}


def _shacl_violations(label: str, values: dict[str, Any]) -> list[str]:
    mapper = Mapper()
    subject = V.node_iri(mapper.base, label, str(values["uid"]))
    g = Graph()
    g.add((subject, RDF.type, V.classes[label]))
    for p, o in mapper.literals(label, values):
        g.add((subject, p, o))
    report = validate(g)
    return [f.constraint for f in report.findings]


@pytest.mark.parametrize("label", sorted(VALID))
def test_valid_records_pass_the_models_and_the_shapes(label: str) -> None:
    NODE_TYPES[label].parse(VALID[label])
    assert _shacl_violations(label, VALID[label]) == []


def _swapped(label: str, first: str, second: str) -> dict[str, Any]:
    bad = dict(VALID[label])
    bad[first], bad[second] = bad[second], bad[first]
    return bad


@pytest.mark.parametrize(("label", "first", "second", "strictly"), shape_rules.ORDERED)
def test_an_order_the_model_refuses_is_a_shacl_violation(
    label: str, first: str, second: str, strictly: bool
) -> None:
    bad = _swapped(label, first, second)
    with pytest.raises(ValidationFailed):
        NODE_TYPES[label].parse(bad)
    expected = "LessThanConstraintComponent" if strictly else "LessThanOrEqualsConstraintComponent"
    assert expected in _shacl_violations(label, bad)


@pytest.mark.parametrize(
    ("label", "field", "value", "constraint"),
    [
        ("Inspection", "sample_size", -1, "MinInclusiveConstraintComponent"),
        ("MaterialLot", "quantity", 0.0, "MinExclusiveConstraintComponent"),
        ("Scenario", "progress", 1.5, "MaxInclusiveConstraintComponent"),
        ("Supplier", "country", "de", "PatternConstraintComponent"),
        ("BimModel", "sha256", "not-a-digest", "PatternConstraintComponent"),
        ("Unit", "status", "lost", "InConstraintComponent"),
        ("Judgement", "verdict", "fail", "InConstraintComponent"),
        ("Calibration", "verdict", "ok", "InConstraintComponent"),
        ("Calibration", "tolerance", -0.1, "MinInclusiveConstraintComponent"),
        ("Judgement", "probability", 1.5, "MaxInclusiveConstraintComponent"),
        ("Unit", "uid", "has space", "PatternConstraintComponent"),
        ("Machine", "x_m", math.nan, "PatternConstraintComponent"),
        ("Machine", "name", "", "MinLengthConstraintComponent"),
        ("Unit", "produced_at", "2026-03-01T06:00:00", "PatternConstraintComponent"),
    ],
)
def test_a_value_the_model_refuses_is_a_shacl_violation(
    label: str, field: str, value: Any, constraint: str
) -> None:
    bad = {**VALID[label], field: value}
    with pytest.raises(ValidationFailed):
        NODE_TYPES[label].parse(bad)
    assert constraint in _shacl_violations(label, bad)


def test_a_missing_required_property_is_a_shacl_violation() -> None:
    bad = {k: v for k, v in VALID["Batch"].items() if k != "started_at"}
    with pytest.raises(ValidationFailed):
        NODE_TYPES["Batch"].parse(bad)
    assert "MinCountConstraintComponent" in _shacl_violations("Batch", bad)


def test_shapes_check_the_datatype_of_literals() -> None:
    g = Graph()
    subject = V.node_iri(Mapper().base, "Batch", "B-1")
    g.add((subject, RDF.type, V.classes["Batch"]))
    g.add((subject, V.properties["uid"], Literal("B-1")))
    g.add((subject, V.properties["started_at"], Literal(T0)))  # a plain string, no type
    g.add((subject, V.properties["quantity"], Literal("ten", datatype=XSD.integer)))
    found = {(f.path, f.constraint) for f in validate(g).findings}
    assert ("sqems:startedAt", "DatatypeConstraintComponent") in found
    assert ("sqems:quantity", "DatatypeConstraintComponent") in found
