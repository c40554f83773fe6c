"""SHACL validation of RDF data against the shipped shapes, with a readable report.

pyshacl does the checking; :class:`ShaclReport` keeps each result as the focus node,
the property, the offending value and the message, sorted so that one file always gives
the same report, and renders them as text a person can act on.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyshacl
from rdflib import RDF, Graph, Literal, Namespace, URIRef
from rdflib.term import Node as Term

from sqems.ontologies.vocabulary import shapes_text, vocabulary

SH = Namespace("http://www.w3.org/ns/shacl#")


@functools.cache
def shapes_graph() -> Graph:
    return Graph().parse(data=shapes_text(), format="turtle")


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    focus: str
    path: str
    severity: str
    message: str
    value: str | None
    constraint: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "focus": self.focus,
            "path": self.path,
            "severity": self.severity,
            "message": self.message,
            "value": self.value,
            "constraint": self.constraint,
        }


@dataclass(frozen=True, slots=True)
class ShaclReport:
    conforms: bool
    findings: list[Finding]
    triples: int

    @property
    def violations(self) -> int:
        return sum(f.severity == "Violation" for f in self.findings)

    def by_constraint(self) -> dict[str, int]:
        return dict(Counter(f.constraint for f in self.findings).most_common())

    def text(self, limit: int | None = None) -> str:
        if self.conforms:
            return f"conforms: {self.triples:,} triples, no violations"
        shown = self.findings if limit is None else self.findings[:limit]
        lines = [
            f"{f.severity.lower()}: {f.focus} {f.path}: {f.message}"
            + (f" (value {f.value})" if f.value is not None else "")
            for f in shown
        ]
        if len(shown) < len(self.findings):
            lines.append(f"… and {len(self.findings) - len(shown)} more")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "conforms": self.conforms,
            "triples": self.triples,
            "violations": self.violations,
            "by_constraint": self.by_constraint(),
            "findings": [f.as_dict() for f in self.findings],
        }


def validate(data: Graph) -> ShaclReport:
    """Check ``data`` against the SQEMS shapes (no inference: the data must say what
    it means)."""
    conforms, results, _ = pyshacl.validate(
        data,
        shacl_graph=shapes_graph(),
        inference="none",
        abort_on_first=False,
        allow_warnings=True,
    )
    assert isinstance(results, Graph)
    nsm = vocabulary().namespaces()

    def show(term: Term | None) -> str:
        if term is None:
            return ""
        if isinstance(term, Literal):
            return term.n3(nsm) if term.datatype is not None else repr(str(term))
        if isinstance(term, URIRef):
            return str(term.n3(nsm))
        # a path expression such as an inverse path is a blank node in the report
        inverse = results.value(term, SH.inversePath)
        return f"^{show(inverse)}" if inverse is not None else "(path)"

    findings = []
    for result in results.subjects(RDF.type, SH.ValidationResult):
        severity = results.value(result, SH.resultSeverity)
        constraint = results.value(result, SH.sourceConstraintComponent)
        value = results.value(result, SH.value)
        findings.append(
            Finding(
                focus=show(results.value(result, SH.focusNode)),
                path=show(results.value(result, SH.resultPath)),
                severity=str(severity).rsplit("#", 1)[-1] if severity else "Violation",
                message=str(results.value(result, SH.resultMessage) or ""),
                value=show(value) if value is not None else None,
                constraint=str(constraint).rsplit("#", 1)[-1] if constraint else "",
            )
        )
    return ShaclReport(bool(conforms), sorted(findings), len(data))
