"""The SHACL shapes of SQEMS data, written from the graph model.

Per-property constraints — datatype, required or optional, at most one value, the values
of an enumeration, patterns, lengths and numeric bounds — come from the pydantic models
of :mod:`sqems.graph_model.nodes` and :mod:`~sqems.graph_model.edges`, so the shapes
cannot disagree with the models about them. What the models check in code (an end after
its start, ``lsl < target < usl``, no more defects than the sample) and the
cardinalities of relationships are the tables below; tests feed the same bad records to
the models and to the shapes, so the two stay one rule.

Every node shape is closed: a property the ontology does not give that label is a
violation, which catches misspelt and misplaced terms in incoming data.

``python -m sqems.ontologies.shapes > sqems/ontologies/shapes.ttl`` writes the shipped
file; a test checks that it is current.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rdflib import XSD, URIRef

from sqems.graph_model import NODE_TYPES, REL_TYPES
from sqems.ontologies.vocabulary import PREFIXES, SQEMS, Vocabulary, python_type, vocabulary

ORDERED: list[tuple[str, str, str, bool]] = [
    # (label, first, second, strictly): the first may not exceed the second
    ("MaterialLot", "received_at", "expires_at", False),
    ("Batch", "started_at", "ended_at", False),
    ("ProcessRun", "started_at", "ended_at", False),
    ("Calibration", "performed_at", "due_at", False),
    ("Alarm", "raised_at", "cleared_at", False),
    ("Capa", "opened_at", "closed_at", False),
    ("Operator", "qualified_from", "qualified_until", False),
    ("Qualification", "granted_at", "expires_at", False),
    ("Qualification", "granted_at", "revoked_at", False),
    ("PlannedProduct", "saved_at", "released_at", False),
    ("Parameter", "lsl", "usl", True),
    ("Parameter", "lsl", "target", False),
    ("Parameter", "target", "usl", False),
    ("Inspection", "defects_found", "sample_size", False),
]
"""Pairs of properties in order, as the models' validators require."""

AT_MOST_ONE: list[tuple[str, str, bool]] = [
    # (label, relationship type, inverse): a node of the label has at most one such link
    ("MaterialLot", "SUPPLIED", True),  # one supplier per lot
    ("MaterialLot", "LOT_OF", False),  # one part number per lot
    ("Batch", "OF_PRODUCT", False),
    ("ProcessRun", "RAN", True),  # a run belongs to one batch
    ("ProcessRun", "ON", False),
    ("ProcessRun", "FOR_STEP", False),
    ("Unit", "PRODUCED", True),  # a unit comes from one batch
    ("Unit", "ASSEMBLED_INTO", False),  # and goes into at most one assembly
    ("Machine", "PART_OF", False),
    ("Line", "PART_OF", False),
    ("Shipment", "DELIVERED_TO", False),
    ("Complaint", "RAISED_BY", False),
    ("Defect", "OF_TYPE", False),
    ("Calibration", "CALIBRATES", False),
    ("Qualification", "HOLDS", True),  # a qualification is one operator's
    ("ProcessRun", "FOLLOWED", False),  # a run follows one instruction revision
    ("WorkInstruction", "FOR_STEP", False),
    ("Judgement", "JUDGES", False),  # a judgement is about one unit
    ("BimElement", "IN_MODEL", False),
    ("Scenario", "IN_SESSION", False),
    ("WhatIfSession", "STUDIES", False),
]

GENEALOGY_RULES: list[tuple[str, str]] = [
    # (message, SPARQL select whose ?value is each unit that breaks it): the rules of
    # sqems.graph_model.integrity a shape can state (a unit in at most one assembly is
    # the maxCount of AT_MOST_ONE above). They hang on one shape whose only target is
    # a node of the shapes' own namespace: each query runs once over the whole data,
    # not once per unit (which took pyshacl over two minutes for a 1,000-unit plant)
    (
        "a unit cannot be built into itself (an assembly cycle)",
        "SELECT $this ?value WHERE { ?value sqems:assembledInto+ ?value }",
    ),
    (
        "an assembly cannot be produced before its component",
        "SELECT $this ?value WHERE { ?value sqems:assembledInto ?assembly ; "
        "sqems:producedAt ?t . ?assembly sqems:producedAt ?at . FILTER (?at < ?t) }",
    ),
    (
        "a scrapped unit cannot be in a shipment",
        'SELECT $this ?value WHERE { ?value sqems:status "scrapped" ; sqems:shippedIn ?s }',
    ),
]
"""Genealogy rules as SPARQL-based constraints (one rule with the stores' checks)."""

UTC_OFFSET = r"(Z|[+-][0-9]{2}:[0-9]{2})$"
FINITE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def shapes_turtle(vocab: Vocabulary | None = None) -> str:
    """The shapes file's text."""
    v = vocab or vocabulary()
    out = [
        "# SHACL shapes of SQEMS data. Written by `python -m sqems.ontologies.shapes` from",
        "# the graph model; do not edit by hand (tests/test_ontology.py checks it).",
        "",
        "@prefix sh: <http://www.w3.org/ns/shacl#> .",
        "@prefix sqemsh: <https://sqems.dev/shapes#> .",
        *(f"@prefix {p}: <{ns}> ." for p, ns in PREFIXES.items()),
        "",
    ]
    for label, model in NODE_TYPES.items():
        out.append(_node_shape(v, label, model))
    for type_name, q in v.qualified.items():
        out.append(_qualified_shape(v, type_name, q.cls, q.link))
    for type_name in REL_TYPES:
        out.append(_source_shape(v, type_name))
    out.append(_genealogy_shape())
    out.append(_PREFIX_DECLARATIONS)
    return "\n".join(out)


def _n(v: Vocabulary, iri: URIRef) -> str:
    return str(iri.n3(v.namespaces()))


def _lit(value: Any, datatype: URIRef) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if datatype == XSD.integer:
        return str(int(value))
    if datatype == XSD.double:
        return f'"{float(value)!r}"^^xsd:double'
    return _string(str(value))


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _constraints(info: FieldInfo) -> dict[str, Any]:
    """The field's constraints, wherever pydantic keeps them (the field's metadata, or
    inside an ``Optional[Annotated[...]]``)."""
    found: dict[str, Any] = {}
    pending: list[Any] = list(info.metadata)
    tp = info.annotation
    stack = [tp]
    while stack:
        t = stack.pop()
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            args = typing.get_args(t)
            stack.append(args[0])
            for extra in args[1:]:
                pending += extra.metadata if isinstance(extra, FieldInfo) else [extra]
        elif origin is not None:
            stack.extend(typing.get_args(t))
    for item in pending:
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
        if getattr(item, "allow_inf_nan", None) is False:
            found["finite"] = True
    return found


def _field_shapes(v: Vocabulary, owner: str, name: str, info: FieldInfo) -> list[str]:
    datatype = v.datatypes[(owner, name)]
    parts = [f"sh:path {_n(v, v.properties[name])}", f"sh:datatype {_n(v, datatype)}"]
    if info.is_required():
        parts.append("sh:minCount 1")
    parts.append("sh:maxCount 1")
    c = _constraints(info)
    if "pattern" in c:
        parts.append(f"sh:pattern {_string(c['pattern'])}")
    if "min_length" in c:
        parts.append(f"sh:minLength {int(c['min_length'])}")
    if "max_length" in c:
        parts.append(f"sh:maxLength {int(c['max_length'])}")
    for key, term in (
        ("ge", "minInclusive"),
        ("gt", "minExclusive"),
        ("le", "maxInclusive"),
        ("lt", "maxExclusive"),
    ):
        if key in c:
            parts.append(f"sh:{term} {_lit(c[key], datatype)}")
    shapes = ["[ " + " ;\n        ".join(parts) + " ]"]
    # order, value-set and lexical checks get their own shapes, so that each message
    # names its rule
    path = _n(v, v.properties[name])
    for label, first, second, strictly in ORDERED:
        if label == owner and first == name:
            term = "sh:lessThan" if strictly else "sh:lessThanOrEquals"
            bound = "below" if strictly else "at most"
            message = f"{name} must be {bound} {second}"
            shapes.append(_own(path, f"{term} {_n(v, v.properties[second])}", message))
    tp = python_type(info)
    if isinstance(tp, type) and issubclass(tp, Enum):
        values = [str(m.value) for m in tp]
        listed = " ".join(map(_string, values))
        shapes.append(_own(path, f"sh:in ( {listed} )", "must be one of " + ", ".join(values)))
    if datatype == XSD.double and c.get("finite"):
        shapes.append(_own(path, f"sh:pattern {_string(FINITE)}", "must be a finite number"))
    if datatype == XSD.dateTime:
        rule = f"sh:pattern {_string(UTC_OFFSET)}"
        shapes.append(_own(path, rule, "a time must carry its UTC offset (Z or +hh:mm)"))
    return shapes


def _own(path: str, constraint: str, message: str) -> str:
    return f"[ sh:path {path} ; {constraint} ;\n        sh:message {_string(message)} ]"


def _targets(v: Vocabulary, labels: list[str]) -> str:
    if len(labels) == 1:
        return f"sh:class {_n(v, v.classes[labels[0]])}"
    inner = " ".join(f"[ sh:class {_n(v, v.classes[x])} ]" for x in labels)
    return f"sh:or ( {inner} )"


def _relation_shapes(v: Vocabulary, label: str) -> Iterator[str]:
    for type_name, rel in REL_TYPES.items():
        ends = sorted({b for a, b in rel.pairs if a == label})
        if ends:
            parts = [
                f"sh:path {_n(v, v.relations[type_name])}",
                "sh:nodeKind sh:IRI",
                _targets(v, ends),
            ]
            if (label, type_name, False) in AT_MOST_ONE:
                parts.append("sh:maxCount 1")
            yield "[ " + " ;\n        ".join(parts) + " ]"
            q = v.qualified.get(type_name)
            if q is not None:
                yield f"[ sh:path {_n(v, q.link)} ; sh:class {_n(v, q.cls)} ]"
        if (label, type_name, True) in AT_MOST_ONE:
            path = f"[ sh:inversePath {_n(v, v.relations[type_name])} ]"
            yield f"[ sh:path {path} ; sh:maxCount 1 ]"


def _ignored(model: type[BaseModel]) -> str:
    extra = " qudt:unit" if "unit" in model.model_fields else ""
    return f"sh:ignoredProperties ( rdf:type{extra} )"


def _node_shape(v: Vocabulary, label: str, model: type[BaseModel]) -> str:
    props = [p for n, i in model.model_fields.items() for p in _field_shapes(v, label, n, i)]
    props += list(_relation_shapes(v, label))
    body = "".join(f" ;\n    sh:property {p}" for p in props)
    return (
        f"sqemsh:{label}\n    a sh:NodeShape ;\n    sh:targetClass {_n(v, v.classes[label])} ;\n"
        f"    sh:closed true ;\n    {_ignored(model)} ;\n"
        f"    sh:message {_string(f'not a property of a {label} in the SQEMS ontology')}{body} .\n"
    )


def _qualified_shape(v: Vocabulary, type_name: str, cls: URIRef, link: URIRef) -> str:
    rel = REL_TYPES[type_name]
    assert rel.props is not None
    ends = sorted({b for _, b in rel.pairs})
    props = [f"[ sh:path {_n(v, v.to)} ; sh:nodeKind sh:IRI ; {_targets(v, ends)} ;\n"
             "        sh:minCount 1 ; sh:maxCount 1 ]"]  # fmt: skip
    for name, info in rel.props.model_fields.items():
        props += _field_shapes(v, type_name, name, info)
    props.append(f"[ sh:path [ sh:inversePath {_n(v, link)} ] ; sh:minCount 1 ; sh:maxCount 1 ]")
    body = "".join(f" ;\n    sh:property {p}" for p in props)
    plain, qualified_by = _n(v, v.relations[type_name]), _n(v, link)
    checks = [
        (
            f"a qualified {type_name} must repeat its relationship as a plain {plain} triple",
            f"SELECT $this WHERE {{ ?source {qualified_by} $this . $this sqems:to ?end . "
            f"FILTER NOT EXISTS {{ ?source {plain} ?end }} }}",
        )
    ]
    if "unit" in rel.props.model_fields:
        checks.append(
            (
                "a parameter actual must be in its parameter's unit",
                "SELECT $this ?value WHERE { $this sqems:unit ?value ; sqems:to ?p . "
                "?p sqems:unit ?expected . FILTER (?value != ?expected) }",
            )
        )
    for message, select in checks:
        body += _sparql(message, select)
    name = str(cls).rsplit("#", 1)[1]
    return (
        f"sqemsh:{name}\n    a sh:NodeShape ;\n    sh:targetClass {_n(v, cls)} ;\n"
        f"    sh:closed true ;\n    sh:ignoredProperties ( rdf:type qudt:unit ){body} .\n"
    )


def _genealogy_shape() -> str:
    body = "".join(_sparql(message, select) for message, select in GENEALOGY_RULES)
    return f"sqemsh:Genealogy\n    a sh:NodeShape ;\n    sh:targetNode sqemsh:genealogy{body} .\n"


def _sparql(message: str, select: str) -> str:
    return (
        " ;\n    sh:sparql [ a sh:SPARQLConstraint ;\n"
        f"        sh:message {_string(message)} ;\n"
        f'        sh:prefixes sqemsh:prefixes ;\n        sh:select """{select}""" ]'
    )


def _source_shape(v: Vocabulary, type_name: str) -> str:
    sources = sorted({a for a, _ in REL_TYPES[type_name].pairs})
    return (
        f"sqemsh:{type_name}-source\n    a sh:NodeShape ;\n"
        f"    sh:targetSubjectsOf {_n(v, v.relations[type_name])} ;\n"
        f"    {_targets(v, sources)} ;\n"
        f'    sh:message "{type_name} must start at a {" or ".join(sources)}" .\n'
    )


_PREFIX_DECLARATIONS = (
    'sqemsh:prefixes\n    sh:declare [ sh:prefix "sqems" ;\n'
    f'        sh:namespace "{SQEMS}"^^xsd:anyURI ] .\n'
)


def main() -> None:
    print(shapes_turtle(), end="")


if __name__ == "__main__":
    main()
