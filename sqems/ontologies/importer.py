"""RDF import: read Turtle, JSON-LD or N-Triples written in the SQEMS vocabulary back
into nodes and relationships of a store.

The import is all or nothing. The file is parsed, checked against the SHACL shapes and
turned into graph-model records, which the models validate again; only when every
record passes is anything written, nodes first, then relationships. A refusal names
each offending resource and property, and the file is left as it was — nothing of it
is half-imported.

Terms of other vocabularies (``qudt:unit``, ``rdfs:label``, …) are ignored; an unknown
term in the SQEMS namespace is an error, since it is a typo or a newer ontology.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rdflib import RDF, XSD, Graph, Literal, URIRef
from rdflib.term import Node as Term

from sqems.errors import ValidationFailed
from sqems.graph_model import NODE_TYPES, Edge, GraphStore, Node
from sqems.ontologies.export import RdfFormat
from sqems.ontologies.shacl import ShaclReport, validate
from sqems.ontologies.vocabulary import SQEMS, Vocabulary, vocabulary

MAX_PROBLEMS = 50

_RDFLIB_FORMAT = {RdfFormat.TURTLE: "turtle", RdfFormat.JSONLD: "json-ld", RdfFormat.NTRIPLES: "nt"}


def parse(data: bytes | str | Path, fmt: RdfFormat | None = None) -> Graph:
    """An RDF graph from a file or its bytes; :class:`ValidationFailed` naming the
    position when it does not parse."""
    if isinstance(data, Path):
        fmt = fmt or RdfFormat.of_path(data.name)
        source = data.read_bytes()
        where = str(data)
    else:
        if fmt is None:
            raise ValidationFailed("give the RDF format of the data (turtle, json-ld, ntriples)")
        source = data.encode("utf-8") if isinstance(data, str) else data
        where = "the data"
    g = Graph(bind_namespaces="none")
    try:
        g.parse(data=source, format=_RDFLIB_FORMAT[fmt])
    except Exception as exc:  # rdflib's parsers raise many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationFailed(f"{where} is not valid {fmt.value}: {first[:500]}") from None
    return g


@dataclass(slots=True)
class Records:
    """What an RDF graph holds, as graph-model records."""

    nodes: list[Node]
    edges: list[Edge]
    ignored: Counter[str] = field(default_factory=Counter)
    """Predicates of other vocabularies, with how often each was skipped."""


def records(g: Graph, vocab: Vocabulary | None = None) -> Records:
    """The nodes and relationships ``g`` describes; :class:`ValidationFailed` listing
    every problem (up to :data:`MAX_PROBLEMS`) when any is found."""
    v = vocab or vocabulary()
    terms = v.by_iri()
    label_of_class: dict[Term, str] = {iri: label for label, iri in v.classes.items()}
    qualified_classes = {q.cls for q in v.qualified.values()}
    qualified_links = {q.link for q in v.qualified.values()}
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)

    # every typed resource, with its label
    labels: dict[Term, str] = {}
    for subject, cls in g.subject_objects(RDF.type):
        if cls in label_of_class:
            earlier = labels.get(subject)
            if earlier is not None and earlier != label_of_class[cls]:
                problem(f"{subject} is typed both {earlier} and {label_of_class[cls]}")
            labels[subject] = label_of_class[cls]
        elif (
            isinstance(cls, URIRef) and cls.startswith(str(SQEMS)) and cls not in qualified_classes
        ):
            problem(f"{subject}: unknown class {cls}")

    uids: dict[Term, str] = {}
    nodes: list[Node] = []
    ignored: Counter[str] = Counter()
    for subject, label in labels.items():
        model = NODE_TYPES[label]
        values: dict[str, Any] = {}
        for p, o in g.predicate_objects(subject):
            if p == RDF.type:
                continue
            kind, name = terms.get(p, ("", ""))
            if kind == "property":
                if name not in model.model_fields:
                    problem(f"{subject}: a {label} has no property {name} ({p})")
                elif name in values:
                    problem(f"{subject}: {name} is given more than once")
                else:
                    values[name] = _value(o, v.datatypes[(label, name)])
            elif kind == "relation" or p in qualified_links:
                continue  # relationships are read below
            elif isinstance(p, URIRef) and p.startswith(str(SQEMS)):
                problem(f"{subject}: unknown property {p}")
            else:
                ignored[str(p)] += 1
        uid = values.get("uid")
        if not isinstance(uid, str):
            problem(f"{subject}: a {label} needs exactly one sqems:uid")
            continue
        uids[subject] = uid
        try:
            nodes.append(model.parse(values))
        except ValidationFailed as exc:
            problem(exc.message)

    edges = _edges(g, v, uids, problem)
    if problems:
        more = " (and more)" if len(problems) == MAX_PROBLEMS else ""
        raise ValidationFailed(
            f"{len(problems)} problem(s){more} in the RDF data:\n  " + "\n  ".join(problems)
        )
    return Records(nodes, edges, ignored)


def _value(o: Term, datatype: URIRef) -> Any:
    """A literal as the model's input: strings as written, other types as Python values
    (an ill-typed literal stays a string, so the model names the field and the value)."""
    if not isinstance(o, Literal):
        return str(o)
    if datatype == XSD.string or o.datatype is None:
        return str(o)
    value = o.toPython()
    return str(o) if isinstance(value, Literal) else value


def _end_uid(term: Term, uids: dict[Term, str]) -> str | None:
    """The uid of a relationship end: from the resource's own ``sqems:uid`` or, for a
    node that is not in the file (it must then be in the store), from its IRI."""
    if term in uids:
        return uids[term]
    if isinstance(term, URIRef) and "/" in term:
        return unquote(term.rsplit("/", 1)[1]) or None
    return None


def _edges(
    g: Graph,
    v: Vocabulary,
    uids: dict[Term, str],
    problem: Any,
) -> list[Edge]:
    by_relation: dict[Term, str] = {iri: name for name, iri in v.relations.items()}
    terms = v.by_iri()
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s, p, o in g.triples((None, None, None)):
        type_name = by_relation.get(p)
        if type_name is None:
            continue
        src, dst = _end_uid(s, uids), _end_uid(o, uids)
        if src is None or dst is None:
            problem(f"{type_name} {s} → {o}: cannot tell the uids of its ends")
            continue
        found.setdefault((type_name, src, dst), {})
    for type_name, q in v.qualified.items():
        for s, node in g.subject_objects(q.link):
            targets = list(g.objects(node, v.to))
            if len(targets) != 1:
                problem(f"{node}: a qualified {type_name} needs exactly one sqems:to")
                continue
            src, dst = _end_uid(s, uids), _end_uid(targets[0], uids)
            if src is None or dst is None:
                problem(f"{node}: cannot tell the ends of this qualified {type_name}")
                continue
            props: dict[str, Any] = {}
            for p, o in g.predicate_objects(node):
                kind, name = terms.get(p, ("", ""))
                if kind == "property":
                    props[name] = _value(o, v.datatypes.get((type_name, name), XSD.string))
            found[(type_name, src, dst)] = props
    return [Edge(t, s, d, props) for (t, s, d), props in sorted(found.items())]


@dataclass(slots=True)
class ImportReport:
    nodes: dict[str, int]
    edges: dict[str, int]
    ignored: dict[str, int]
    shacl: ShaclReport | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "edges": self.edges,
            "ignored": self.ignored,
            "shacl": self.shacl.as_dict() if self.shacl else None,
        }


def import_graph(
    store: GraphStore,
    g: Graph,
    *,
    check_shapes: bool = True,
) -> ImportReport:
    """Write what ``g`` holds into ``store``, after the SHACL shapes (unless
    ``check_shapes`` is off) and the models accept all of it."""
    report = validate(g) if check_shapes else None
    if report is not None and not report.conforms:
        raise ValidationFailed(
            f"the RDF data breaks {report.violations} SHACL constraint(s); nothing was "
            f"imported:\n{report.text(limit=20)}"
        )
    found = records(g)
    # one transaction: the store checks that every relationship's ends exist (in the
    # file or already in the store) and writes all of it or, on any refusal, nothing
    with store.transaction() as batch:
        batch.add_nodes(found.nodes)
        batch.add_edges(found.edges)
    return ImportReport(
        nodes=dict(sorted(Counter(n.label for n in found.nodes).items())),
        edges=dict(sorted(Counter(e.type for e in found.edges).items())),
        ignored=dict(found.ignored),
        shacl=report,
    )
