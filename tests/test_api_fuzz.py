"""Generated GraphQL documents against the live API find no server errors.

hypothesis-graphql builds queries and mutations that are valid against the published
schema, with arbitrary arguments (unknown uids, huge pages, odd times, deep nesting);
every answer must be a typed error or data, never a 5xx, a masked internal error, or a
traceback.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes, queries
from live_server import LiveServer

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.graphql import AccessStore, Role, create_app, sdl
from sqems.graphql.types import global_id
from sqems.settings import Settings

SDL = sdl()
SCALARS = {
    "DateTime": st.datetimes(timezones=st.just(UTC)).map(lambda d: nodes.String(d.isoformat())),
    "JSON": st.integers().map(nodes.Int),
    # a file can only come as a multipart part; inline, it must be refused with a reason
    "Upload": st.text(max_size=8).map(nodes.String),
}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Target:
    def __init__(self, url: str, token: str, uids: list[str]) -> None:
        self.url = url
        self.uids = uids
        self.client = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"})

    def check(self, document: str, variables: dict[str, Any] | None = None) -> None:
        response = self.client.post(
            f"{self.url}/graphql", json={"query": document, "variables": variables or {}}
        )
        assert response.status_code < 500, (document, response.text)
        assert "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        for error in body.get("errors", []):
            code = (error.get("extensions") or {}).get("code")
            assert code != "INTERNAL_ERROR", (document, error)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    plant = generate(PlantSpec(units=1_000, seed=3))
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    access = AccessStore(None)
    _, token = access.create_key("fuzzer", Role.ADMIN)
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    with LiveServer(create_app(Settings(data_dir=data_dir), store=store, access=access)) as s:
        tables = plant.nodes
        uids = [
            u
            for label in (
                "MaterialLot",
                "Batch",
                "Unit",
                "Complaint",
                "Machine",
                "Parameter",
                "Customer",
            )
            for u in tables[label].columns["uid"][:15]
        ]
        yield Target(s.url, token, uids)
    store.close()
    access.close()


@FUZZ
@given(document=queries(SDL, custom_scalars=SCALARS))
def test_generated_queries_get_data_or_typed_errors(target: Target, document: str) -> None:
    target.check(document)


@FUZZ
@given(document=mutations(SDL, custom_scalars=SCALARS))
def test_generated_mutations_get_data_or_typed_errors(target: Target, document: str) -> None:
    target.check(document)


# --- the published operations, with generated variables ----------------------------------
#
# Documents built from the schema alone rarely get past their root field (an arbitrary
# uid is simply not found), so the published operations also run with variables drawn
# from the plant's real uids, cursors and ids as well as arbitrary values: that reaches
# the nested resolvers, pagination and the mutations' domain rules.

OPERATIONS = sorted(
    p
    for p in (Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations").glob(
        "*.graphql"
    )
    # subscriptions are not served over HTTP; test_api_ingestion.py runs them
    if "\nsubscription " not in "\n" + p.read_text()
)


def _values(schema: graphql.GraphQLSchema, type_: Any, uids: list[str]) -> st.SearchStrategy[Any]:
    if isinstance(type_, graphql.GraphQLNonNull):
        return _values(schema, type_.of_type, uids)
    if isinstance(type_, graphql.GraphQLList):
        return st.lists(_values(schema, type_.of_type, uids), max_size=3)
    nullable = st.none()
    if isinstance(type_, graphql.GraphQLEnumType):
        return st.sampled_from(list(type_.values)) | nullable
    if isinstance(type_, graphql.GraphQLInputObjectType):
        fields = {name: _values(schema, f.type, uids) for name, f in type_.fields.items()}
        if type_.is_one_of:
            return st.one_of([st.fixed_dictionaries({k: v}) for k, v in fields.items()])
        required = {
            k: v
            for k, v in fields.items()
            if isinstance(type_.fields[k].type, graphql.GraphQLNonNull)
        }
        optional = {k: v for k, v in fields.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    name = type_.name
    cursors = [base64.urlsafe_b64encode(f"offset:{i}".encode()).decode() for i in (0, 3, 199)]
    return {
        "String": st.sampled_from(uids) | st.sampled_from(cursors) | st.text(max_size=12),
        "ID": st.builds(
            global_id, st.sampled_from(["Unit", "Batch", "Customer"]), st.sampled_from(uids)
        )
        | st.text(max_size=12),
        "Int": st.integers(min_value=-3, max_value=1_200),
        "Float": st.floats(allow_nan=False, allow_infinity=False),  # JSON has no infinity
        "Boolean": st.booleans(),
        "DateTime": st.datetimes().map(lambda d: d.isoformat())
        | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        "JSON": st.integers(),
        "Upload": st.text(max_size=12),
    }[name] | nullable


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda p: p.stem)
def test_published_operations_with_generated_variables(target: Target, operation: Path) -> None:
    schema = graphql.build_schema(SDL)
    document = operation.read_text()
    definition = graphql.parse(document).definitions[0]
    assert isinstance(definition, graphql.OperationDefinitionNode)
    uids = target.uids
    variables = st.fixed_dictionaries(
        {
            v.variable.name.value: _values(schema, graphql.type_from_ast(schema, v.type), uids)
            for v in definition.variable_definitions or ()
        }
    )

    @settings(max_examples=60, deadline=None)
    @given(values=variables)
    def run(values: dict[str, Any]) -> None:
        target.check(document, values)

    run()
