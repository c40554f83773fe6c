"""RDF export of a whole store or a part of it, in Turtle, JSON-LD or N-Triples.

A node becomes a resource typed by its label's class, with one literal per property that
is set; a relationship becomes one triple, and, when it carries properties, a qualified
node holding them (see the ontology's header). Units of measure the ontology knows also
get their QUDT unit. IRIs are minted by :class:`~sqems.ontologies.vocabulary.Vocabulary`
from the node's uid, so the same node has the same IRI in every export.

The writers stream: a node at a time, in the store's page order, so a whole plant is
written without building an in-memory RDF graph. :func:`to_graph` builds one for a
part of the store (validation, SPARQL, tests).

>>> from sqems.graph_model import EmbeddedGraphStore
>>> from sqems.graph_model.nodes import Supplier
>>> store = EmbeddedGraphStore(None)
>>> _ = store.upsert_nodes([Supplier(uid="SUP-1", name="Acme")])
>>> print(export_text(Part.whole(store), "turtle").split("\\n\\n")[1])
<https://sqems.dev/id/Supplier/SUP-1>
    a sqems:Supplier ;
    sqems:uid "SUP-1" ;
    sqems:name "Acme" ;
    sqems:status "approved" .
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

from rdflib import RDF, XSD, Graph, Literal, URIRef
from rdflib.term import Node as Term

from sqems import deadline
from sqems.errors import ValidationFailed
from sqems.graph_model import (
    NODE_TYPES,
    REL_TYPES,
    Edge,
    GraphStore,
    Node,
    RecallSource,
    Subgraph,
    Traceability,
)
from sqems.ontologies.vocabulary import (
    DEFAULT_BASE,
    PREFIXES,
    QUDT,
    QUDT_UNIT,
    QUDT_UNITS,
    Vocabulary,
    vocabulary,
)

Triple = tuple[Term, Term, Term]


class RdfFormat(StrEnum):
    TURTLE = "turtle"
    JSONLD = "json-ld"
    NTRIPLES = "ntriples"

    @property
    def media_type(self) -> str:
        return {
            RdfFormat.TURTLE: "text/turtle",
            RdfFormat.JSONLD: "application/ld+json",
            RdfFormat.NTRIPLES: "application/n-triples",
        }[self]

    @property
    def suffix(self) -> str:
        return {RdfFormat.TURTLE: ".ttl", RdfFormat.JSONLD: ".jsonld", RdfFormat.NTRIPLES: ".nt"}[
            self
        ]

    @classmethod
    def parse(cls, text: str) -> RdfFormat:
        aliases = {"ttl": "turtle", "jsonld": "json-ld", "nt": "ntriples", "n-triples": "ntriples"}
        key = aliases.get(text.lower(), text.lower())
        try:
            return cls(key)
        except ValueError:
            raise ValidationFailed(
                f"unknown RDF format {text!r}; use turtle, json-ld or ntriples"
            ) from None

    @classmethod
    def of_path(cls, name: str) -> RdfFormat:
        """The format a file name's suffix names (``.ttl``, ``.jsonld``/``.json``, ``.nt``)."""
        lower = name.lower()
        for fmt in cls:
            if lower.endswith(fmt.suffix):
                return fmt
        if lower.endswith(".json"):
            return cls.JSONLD
        raise ValidationFailed(
            f"cannot tell the RDF format of {name!r} from its suffix; name it .ttl, .jsonld "
            "or .nt, or give the format"
        )


@dataclass(slots=True)
class Part:
    """What to export: a whole store, or some nodes and the relationships among them."""

    store: GraphStore
    uids: list[str] | None = None
    """None for the whole store."""
    description: str = "the whole graph"
    page: int = 10_000
    _subgraph_cache: Subgraph | None = field(default=None, repr=False)

    @classmethod
    def whole(cls, store: GraphStore) -> Part:
        return cls(store)

    @classmethod
    def of_uids(cls, store: GraphStore, uids: Iterable[str]) -> Part:
        wanted = sorted(set(uids))
        missing = sorted(set(wanted) - set(store.get_many(wanted)))
        if missing:
            raise ValidationFailed(
                f"{len(missing)} uid(s) are not in the graph: {', '.join(missing[:10])}"
            )
        return cls(store, wanted, f"{len(wanted)} named nodes")

    @classmethod
    def recall(cls, store: GraphStore, source: RecallSource) -> Part:
        """The recall scope of ``source``: the source, the runs that triggered it, and
        every batch, unit, shipment and customer it reaches."""
        trace = Traceability(store)
        scope = trace.recall_scope(source)
        uids = {source.uid, *scope.triggers, *scope.batches, *scope.shipments, *scope.customers}
        for unit in scope.units:
            uids.update(step.uid for step in unit.path)
        return cls(store, sorted(uids), f"the recall scope of {source.describe()}")

    @classmethod
    def upstream(cls, store: GraphStore, uids: Iterable[str]) -> Part:
        """Everything a root-cause trace reaches from units or complaints."""
        genealogy = Traceability(store).upstream(uids)
        reached = sorted(genealogy.traversal.reached)
        return cls(store, reached, f"upstream of {', '.join(genealogy.start)}")

    def nodes(self) -> Iterator[Node]:
        if self.uids is None:
            for label in NODE_TYPES:
                for page in self.store.iter_nodes(label, page=self.page):
                    yield from page.items
            return
        yield from self._subgraph().nodes

    def edges(self) -> Iterator[Edge]:
        if self.uids is None:
            for type_name in REL_TYPES:
                for page in self.store.iter_edges(type_name, page=self.page):
                    yield from page.items
            return
        yield from self._subgraph().edges

    def _subgraph(self) -> Subgraph:
        assert self.uids is not None
        if self._subgraph_cache is None:
            self._subgraph_cache = self.store.subgraph(self.uids)
        return self._subgraph_cache


@dataclass(slots=True)
class ExportCounts:
    nodes: int = 0
    edges: int = 0
    triples: int = 0


class Mapper:
    """Turns nodes and edges into triples with one vocabulary and one IRI base."""

    def __init__(self, base: str = DEFAULT_BASE, vocab: Vocabulary | None = None) -> None:
        self.base = check_base(base)
        self.vocab = vocab or vocabulary()
        self.labels: dict[str, str] = {}
        """uid → label of the nodes seen, to mint the IRIs of relationship ends."""

    def iri(self, uid: str) -> URIRef:
        label = self.labels.get(uid)
        if label is None:
            raise ValidationFailed(f"relationship end {uid} was not among the exported nodes")
        return self.vocab.node_iri(self.base, label, uid)

    def node(self, node: Node) -> tuple[URIRef, list[tuple[Term, Term]]]:
        """The node's IRI and its (predicate, object) pairs, the type first."""
        v = self.vocab
        self.labels[node.uid] = node.label
        subject = v.node_iri(self.base, node.label, node.uid)
        pairs: list[tuple[Term, Term]] = [(RDF.type, v.classes[node.label])]
        pairs += self.literals(node.label, node.model_dump(mode="json"))
        return subject, pairs

    def edge(self, edge: Edge) -> list[Triple]:
        v = self.vocab
        src, dst = self.iri(edge.src), self.iri(edge.dst)
        triples: list[Triple] = [(src, v.relations[edge.type], dst)]
        qualified = v.qualified.get(edge.type)
        if qualified is not None and edge.props:
            q = v.qualified_iri(src, edge.type, edge.dst)
            triples += [(src, qualified.link, q), (q, RDF.type, qualified.cls), (q, v.to, dst)]
            model = REL_TYPES[edge.type].props
            assert model is not None
            # the model's field order, whatever order the backend returned them in
            props = {k: edge.props[k] for k in model.model_fields if k in edge.props}
            triples += [(q, p, o) for p, o in self.literals(edge.type, props)]
        return triples

    def literals(self, owner: str, values: dict[str, Any]) -> list[tuple[Term, Term]]:
        """(property, literal) pairs of the values set in ``values`` (a label's or a
        relationship type's properties, as the model dumps them to JSON)."""
        v = self.vocab
        pairs: list[tuple[Term, Term]] = []
        for name, value in values.items():
            if value is None:
                continue
            pairs.append((v.properties[name], literal(value, v.datatypes[(owner, name)])))
            if name == "unit" and value in QUDT_UNITS:
                pairs.append((QUDT.unit, QUDT_UNIT[QUDT_UNITS[value]]))
        return pairs


def literal(value: Any, datatype: URIRef) -> Literal:
    """A property value (as the model dumps it to JSON) as a typed literal; strings stay
    plain (``xsd:string``)."""
    if datatype == XSD.string:
        return Literal(str(value))
    if datatype == XSD.double:
        return Literal(repr(float(value)), datatype=XSD.double)
    return Literal(value, datatype=datatype)


def check_base(base: str) -> str:
    if not (base.startswith(("http://", "https://", "urn:")) and base[-1] in "/#:"):
        raise ValidationFailed(
            f"RDF base {base!r} must be an http(s) or urn IRI ending in '/', '#' or ':', "
            "e.g. https://plant.example/id/"
        )
    return base


# --- writers -------------------------------------------------------------------------------


def write(part: Part, out: TextIO, fmt: RdfFormat, *, base: str = DEFAULT_BASE) -> ExportCounts:
    """Write ``part`` to ``out`` in ``fmt``, a node at a time; returns what was written."""
    mapper = Mapper(base)
    counts = ExportCounts()
    writer = {RdfFormat.TURTLE: _Turtle, RdfFormat.NTRIPLES: _NTriples, RdfFormat.JSONLD: _JsonLd}[
        fmt
    ](out, mapper)
    writer.start()
    for node in part.nodes():
        deadline.check()  # a request that timed out stops here
        subject, pairs = mapper.node(node)
        writer.resource(subject, pairs)
        counts.nodes += 1
        counts.triples += len(pairs)
    for edge in part.edges():
        deadline.check()
        triples = mapper.edge(edge)
        writer.triples(triples)
        counts.edges += 1
        counts.triples += len(triples)
    writer.end()
    return counts


def export_text(part: Part, fmt: RdfFormat | str, *, base: str = DEFAULT_BASE) -> str:
    buffer = io.StringIO()
    write(part, buffer, RdfFormat.parse(fmt) if isinstance(fmt, str) else fmt, base=base)
    return buffer.getvalue()


def to_graph(part: Part, *, base: str = DEFAULT_BASE) -> Graph:
    """``part`` as an in-memory RDF graph with the SQEMS prefixes bound."""
    mapper = Mapper(base)
    g = Graph(bind_namespaces="none")
    for prefix, ns in PREFIXES.items():
        g.bind(prefix, ns)
    for node in part.nodes():
        deadline.check()  # a request that timed out stops here
        subject, pairs = mapper.node(node)
        for p, o in pairs:
            g.add((subject, p, o))
    for edge in part.edges():
        deadline.check()
        for triple in mapper.edge(edge):
            g.add(triple)
    return g


class _Writer:
    """Writes resources; a relationship's triples are grouped by subject (its
    qualification becomes one resource) unless a format writes triples as they come."""

    def __init__(self, out: TextIO, mapper: Mapper) -> None:
        self.out = out
        self.nsm = mapper.vocab.namespaces()

    def start(self) -> None: ...

    def end(self) -> None: ...

    def resource(self, subject: URIRef, pairs: list[tuple[Term, Term]]) -> None:
        raise NotImplementedError

    def triples(self, triples: list[Triple]) -> None:
        grouped: dict[Term, list[tuple[Term, Term]]] = {}
        for s, p, o in triples:
            grouped.setdefault(s, []).append((p, o))
        for subject, pairs in grouped.items():
            assert isinstance(subject, URIRef)
            self.resource(subject, pairs)


_NT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def _nt(term: Term) -> str:
    """A term as N-Triples writes it: one line, whatever the literal holds."""
    if isinstance(term, Literal):
        text = '"' + str(term).translate(_NT_ESCAPES) + '"'
        if term.language:
            return f"{text}@{term.language}"
        return f"{text}^^<{term.datatype}>" if term.datatype is not None else text
    return str(term.n3())


class _NTriples(_Writer):
    def resource(self, subject: URIRef, pairs: list[tuple[Term, Term]]) -> None:
        self.triples([(subject, p, o) for p, o in pairs])

    def triples(self, triples: list[Triple]) -> None:
        self.out.write("".join(f"{_nt(s)} {_nt(p)} {_nt(o)} .\n" for s, p, o in triples))


class _Turtle(_Writer):
    def start(self) -> None:
        for prefix, ns in PREFIXES.items():
            self.out.write(f"@prefix {prefix}: <{ns}> .\n")
        self.out.write("\n")

    def _term(self, term: Term) -> str:
        if term == RDF.type:
            return "a"
        return term.n3(self.nsm)

    def resource(self, subject: URIRef, pairs: list[tuple[Term, Term]]) -> None:
        if len(pairs) == 1:  # a plain relationship: one line
            ((p, o),) = pairs
            self.out.write(f"{subject.n3()} {self._term(p)} {self._term(o)} .\n")
            return
        body = " ;\n    ".join(f"{self._term(p)} {self._term(o)}" for p, o in pairs)
        self.out.write(f"{subject.n3()}\n    {body} .\n\n")


class _JsonLd(_Writer):
    """JSON-LD in compacted form: one object per node (and per relationship), in one
    ``@graph``; strings, integers and booleans native, other literals typed."""

    def start(self) -> None:
        self.out.write('{\n "@context": ' + json.dumps(PREFIXES) + ',\n "@graph": [\n')
        self.first = True

    def end(self) -> None:
        self.out.write("\n ]\n}\n")

    def _emit(self, obj: dict[str, Any]) -> None:
        self.out.write(("  " if self.first else ",\n  ") + json.dumps(obj, ensure_ascii=False))
        self.first = False

    def _key(self, term: Term) -> str:
        return str(term.n3(self.nsm))

    def _value(self, term: Term) -> Any:
        if isinstance(term, Literal):
            dt = term.datatype
            if dt is None:
                return str(term)
            if dt in (XSD.integer, XSD.boolean):
                return term.toPython()
            return {"@value": str(term), "@type": self._key(dt)}
        return {"@id": str(term)}

    def resource(self, subject: URIRef, pairs: list[tuple[Term, Term]]) -> None:
        obj: dict[str, Any] = {"@id": str(subject)}
        for p, o in pairs:
            if p == RDF.type:
                obj["@type"] = self._key(o)
            else:
                obj[self._key(p)] = self._value(o)
        self._emit(obj)
