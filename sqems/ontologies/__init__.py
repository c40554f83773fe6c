"""The ontology of the quality graph and its SHACL shapes; RDF export, import,
validation and SPARQL over them (rdflib, pyshacl)."""

from sqems.ontologies.export import Part, RdfFormat, export_text, to_graph, write
from sqems.ontologies.importer import ImportReport, import_graph, parse, records
from sqems.ontologies.shacl import Finding, ShaclReport, validate
from sqems.ontologies.sparql import queries, run
from sqems.ontologies.vocabulary import DEFAULT_BASE, SQEMS, Vocabulary, vocabulary

__all__ = [
    "DEFAULT_BASE",
    "SQEMS",
    "Finding",
    "ImportReport",
    "Part",
    "RdfFormat",
    "ShaclReport",
    "Vocabulary",
    "export_text",
    "import_graph",
    "parse",
    "queries",
    "records",
    "run",
    "to_graph",
    "validate",
    "vocabulary",
    "write",
]
