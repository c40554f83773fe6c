"""The mapping between the property graph and RDF, read from the ontology.

``sqems.ttl`` names, with ``sqems:graphName``, the node label, relationship type or
property each of its terms stands for; :func:`vocabulary` reads those names once, so the
export, the import, the shapes and the SPARQL examples all use one mapping, and the
ontology is the only place a term's IRI is written down.

A node's IRI is ``{base}{Label}/{uid}`` with the uid percent-encoded where it holds a
character that may not stand in a path segment (``/``, ``#``): stable as long as the
uid is, and the uid is the node's business key. A qualified relationship (one with
properties) gets ``{source IRI}/{TYPE}/{target uid}``.

>>> v = vocabulary()
>>> v.node_iri("https://plant.example/id/", "Unit", "U-0042")
rdflib.term.URIRef('https://plant.example/id/Unit/U-0042')
>>> v.classes["MaterialLot"]
rdflib.term.URIRef('https://sqems.dev/ontology#MaterialLot')
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from importlib import resources
from typing import Any
from urllib.parse import quote

from pydantic import AwareDatetime
from pydantic.fields import FieldInfo
from rdflib import OWL, RDF, XSD, Graph, Namespace, URIRef
from rdflib.namespace import NamespaceManager
from rdflib.term import Node as Term

from sqems.errors import ValidationFailed
from sqems.graph_model import NODE_TYPES, REL_TYPES

SQEMS = Namespace("https://sqems.dev/ontology#")
SQEMS_SHAPES = Namespace("https://sqems.dev/shapes#")
QUDT = Namespace("http://qudt.org/schema/qudt/")
QUDT_UNIT = Namespace("http://qudt.org/vocab/unit/")
ONTOLOGY_IRI = URIRef("https://sqems.dev/ontology")
DEFAULT_BASE = "https://sqems.dev/id/"
"""Where node IRIs live unless ``SQEMS_RDF_BASE`` says otherwise; a plant that publishes
its graph sets it to an address of its own."""

PREFIXES: dict[str, str] = {
    "sqems": str(SQEMS),
    "rdf": str(RDF),
    "xsd": str(XSD),
    "qudt": str(QUDT),
    "unit": str(QUDT_UNIT),
}

# The unit symbols of specs and payloads with the QUDT unit each stands for. A symbol
# not listed here is exported as written, without qudt:unit.
QUDT_UNITS: dict[str, str] = {
    "degC": "DEG_C",
    "°C": "DEG_C",
    "degF": "DEG_F",
    "K": "K",
    "bar": "BAR",
    "mbar": "MilliBAR",
    "Pa": "PA",
    "kPa": "KiloPA",
    "MPa": "MegaPA",
    "N": "N",
    "kN": "KiloN",
    "N*m": "N-M",
    "Nm": "N-M",
    "m": "M",
    "mm": "MilliM",
    "um": "MicroM",
    "µm": "MicroM",
    "cm/min": "CentiM-PER-MIN",
    "mm/s": "MilliM-PER-SEC",
    "m/s": "M-PER-SEC",
    "kg": "KiloGM",
    "g": "GM",
    "mg": "MilliGM",
    "s": "SEC",
    "ms": "MilliSEC",
    "min": "MIN",
    "h": "HR",
    "rpm": "REV-PER-MIN",
    "Hz": "HZ",
    "V": "V",
    "A": "A",
    "W": "W",
    "kW": "KiloW",
    "L": "L",
    "mL": "MilliL",
    "%": "PERCENT",
    "pcs": "NUM",
}


@dataclass(frozen=True, slots=True)
class Qualified:
    """How a relationship with properties is qualified: its class and the property from
    the source node to the qualification node."""

    cls: URIRef
    link: URIRef


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The ontology's terms by graph name, and the XSD datatype of every property."""

    ontology: Graph
    classes: dict[str, URIRef]
    """Node label → class."""
    relations: dict[str, URIRef]
    """Relationship type → object property."""
    properties: dict[str, URIRef]
    """Property name (of nodes and of relationships) → datatype property."""
    qualified: dict[str, Qualified]
    """Relationship type with properties → its qualification."""
    to: URIRef
    """From a qualification node to the relationship's far end."""
    datatypes: dict[tuple[str, str], URIRef]
    """(label or relationship type, property) → the XSD datatype it is written as."""

    def node_iri(self, base: str, label: str, uid: str) -> URIRef:
        return URIRef(f"{base}{label}/{quote(uid, safe=':@+$')}")

    def qualified_iri(self, source: URIRef, type: str, target_uid: str) -> URIRef:
        return URIRef(f"{source}/{type}/{quote(target_uid, safe=':@+$')}")

    def by_iri(self) -> dict[Term, tuple[str, str]]:
        """Every mapped term → (what it is, its graph name)."""
        found: dict[Term, tuple[str, str]] = {}
        for kind, terms in (
            ("class", self.classes),
            ("relation", self.relations),
            ("property", self.properties),
        ):
            found.update({iri: (kind, name) for name, iri in terms.items()})
        return found

    def namespaces(self) -> NamespaceManager:
        nsm = NamespaceManager(Graph(), bind_namespaces="none")
        for prefix, ns in PREFIXES.items():
            nsm.bind(prefix, ns)
        return nsm


def ontology_text() -> str:
    """The ontology as shipped, in Turtle."""
    return resources.files("sqems.ontologies").joinpath("sqems.ttl").read_text("utf-8")


def shapes_text() -> str:
    """The SHACL shapes as shipped, in Turtle."""
    return resources.files("sqems.ontologies").joinpath("shapes.ttl").read_text("utf-8")


@functools.cache
def vocabulary() -> Vocabulary:
    """The mapping, read from the shipped ontology (once per process)."""
    onto = Graph().parse(data=ontology_text(), format="turtle")
    named: dict[URIRef, str] = {
        s: str(o) for s, o in onto.subject_objects(SQEMS.graphName) if isinstance(s, URIRef)
    }
    classes, relations, properties = {}, {}, {}
    for iri, name in named.items():
        if (iri, RDF.type, OWL.Class) in onto:
            classes[name] = iri
        elif (iri, RDF.type, OWL.ObjectProperty) in onto:
            relations[name] = iri
        elif (iri, RDF.type, OWL.DatatypeProperty) in onto:
            properties[name] = iri
    by_relation = {iri: name for name, iri in relations.items()}
    qualified: dict[str, dict[str, URIRef]] = {}
    for term, rel in onto.subject_objects(SQEMS.qualifies):
        kind = "cls" if (term, RDF.type, OWL.Class) in onto else "link"
        qualified.setdefault(by_relation[URIRef(str(rel))], {})[kind] = URIRef(str(term))
    return Vocabulary(
        ontology=onto,
        classes=classes,
        relations=relations,
        properties=properties,
        qualified={t: Qualified(q["cls"], q["link"]) for t, q in qualified.items()},
        to=SQEMS.to,
        datatypes=_datatypes(),
    )


def _datatypes() -> dict[tuple[str, str], URIRef]:
    found = {}
    for label, model in NODE_TYPES.items():
        for name, info in model.model_fields.items():
            found[(label, name)] = xsd_type(info)
    for type_name, rel in REL_TYPES.items():
        if rel.props is not None:
            for name, info in rel.props.model_fields.items():
                found[(type_name, name)] = xsd_type(info)
    return found


def python_type(info: FieldInfo) -> Any:
    """The field's type without ``None`` and without ``Annotated`` constraints."""
    tp = info.annotation
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(inner) != 1:
                raise ValidationFailed(f"no single RDF datatype for {tp}")
            tp = inner[0]
        else:
            return tp


def xsd_type(info: FieldInfo) -> URIRef:
    """The XSD datatype a model field is written as."""
    tp = python_type(info)
    if tp is AwareDatetime:
        return XSD.dateTime
    if isinstance(tp, type):
        if issubclass(tp, bool):
            return XSD.boolean
        if issubclass(tp, int) and not issubclass(tp, Enum):
            return XSD.integer
        if issubclass(tp, float):
            return XSD.double
        if issubclass(tp, datetime):
            return XSD.dateTime
        if issubclass(tp, str):
            return XSD.string
    raise ValidationFailed(f"no RDF datatype for field type {tp!r}")
