"""The shipped SPARQL examples, runnable by name over an RDF export.

Each query lives in ``queries/<name>.rq`` with a comment saying what it answers and
which variables to bind; tests check that their answers equal the store's own
traversals on the same plant (docs/ontology.md shows them).

>>> sorted(queries())[:2]
['complaint-suppliers', 'out-of-spec-actuals']
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from rdflib import Graph, Literal, URIRef
from rdflib.plugins.sparql import prepareQuery
from rdflib.query import ResultRow

from sqems.errors import NotFound, ValidationFailed


def queries() -> dict[str, str]:
    """Every shipped query by name, with its text."""
    folder = resources.files("sqems.ontologies").joinpath("queries")
    return {
        entry.name.removesuffix(".rq"): entry.read_text("utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".rq")
    }


def query_text(name_or_text: str) -> str:
    """A shipped query by name, or the text itself if it is a query."""
    shipped = queries()
    if name_or_text in shipped:
        return shipped[name_or_text]
    if any(word in name_or_text.upper() for word in ("SELECT", "ASK", "CONSTRUCT")):
        return name_or_text
    raise NotFound(f"no shipped query {name_or_text!r}; there are {', '.join(sorted(shipped))}")


def run(g: Graph, query: str, **bindings: str) -> list[dict[str, Any]]:
    """Rows of a SELECT query (a shipped name or SPARQL text) over ``g``, each a dict
    of variable → Python value (IRIs as strings); ``bindings`` give IRIs for the
    query's variables, e.g. ``lot="https://…/MaterialLot/LOT-7"``."""
    text = query_text(query)
    try:
        prepared = prepareQuery(text)
    except Exception as exc:  # pyparsing's errors carry the position
        raise ValidationFailed(f"the SPARQL query does not parse: {exc}") from None
    init = {name: URIRef(value) for name, value in bindings.items()}
    result = g.query(prepared, initBindings=init)
    if result.type != "SELECT":
        raise ValidationFailed("only SELECT queries give rows")
    names = [str(v) for v in result.vars or []]
    rows = []
    for row in result:
        assert isinstance(row, ResultRow)
        rows.append({n: _python(row[i]) for i, n in enumerate(names)})
    return rows


def _python(term: Any) -> Any:
    if term is None:
        return None
    if isinstance(term, Literal):
        value = term.toPython()
        return str(term) if isinstance(value, Literal) else value
    return str(term)
