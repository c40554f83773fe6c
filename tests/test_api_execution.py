"""The API's executor answers plain fields the short way (sqems/graphql/execution.py):
the same answers, errors and nulls as strawberry's own executor, field for field."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension

from sqems.datasets import Plant, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.graphql import AccessStore, Role
from sqems.graphql.context import Context
from sqems.graphql.execution import Executor
from sqems.graphql.schema import build_schema
from sqems.graphql.types import global_id
from sqems.settings import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"


def _answer(result: Any) -> str:
    """A result as a client gets it: data, then each error's message and path."""
    errors = [(e.message, e.path) for e in result.errors or []]
    return json.dumps({"data": result.data, "errors": errors}, sort_keys=True, default=str)


# --- the product's schema: the published queries on a plant ---------------------------------


@pytest.fixture(scope="module")
def plant() -> Plant:
    return generate(PlantSpec(units=1_500, seed=11))


@pytest.fixture(scope="module")
def run(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Run a document through both executors on one store: (short way, strawberry's)."""
    tmp = tmp_path_factory.mktemp("execution")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    access = AccessStore(None)
    _, token = access.create_key("reader", Role.VIEWER)
    settings = Settings(data_dir=tmp)
    short, usual = build_schema(settings), build_schema(settings, execution_class=None)

    def both(query: str, variables: dict[str, Any]) -> tuple[str, str]:
        async def one(schema: Any) -> str:
            context = Context(store=store, access=access, settings=settings,
                              principal=access.verify(token), request_id="test")  # fmt: skip
            return _answer(await schema.execute(query, variable_values=variables,
                                                context_value=context))  # fmt: skip

        return asyncio.run(one(short)), asyncio.run(one(usual))

    yield both
    access.close()
    store.close()


def _published(plant: Plant) -> list[tuple[str, dict[str, Any]]]:
    lot = plant.truth["causes"][0]["uid"]
    drift = plant.truth["causes"][1]
    unit = plant.edges["PRODUCED"].columns["dst"][10]
    batch = plant.edges["PRODUCED"].columns["src"][10]
    complaint = plant.nodes["Complaint"].columns["uid"][0]
    window = {"start": drift["window"]["start"], "end": drift["window"]["end"]}
    return [
        ("recall_scope", {"input": {"lot": lot}, "first": 30}),
        ("recall_scope", {"input": {"lot": lot}, "first": 5, "after": "b2Zmc2V0OjQ="}),
        ("recall_scope", {"input": {"machine": {"uid": drift["uid"], "window": window}}}),
        ("genealogy", {"uid": lot, "direction": "DOWNSTREAM", "first": 40}),
        ("trace", {"unit": unit}),
        ("trace", {"complaint": complaint}),
        ("entity", {"uid": batch, "type": "PRODUCED", "first": 5}),
        ("node", {"id": global_id("Unit", unit)}),
        ("device_history_record", {"batch": batch}),
        ("supplier_scorecards", {}),
    ]


def test_published_queries_answer_the_same_through_the_short_way(plant: Plant, run: Any) -> None:
    for name, variables in _published(plant):
        short, usual = run((OPERATIONS / f"{name}.graphql").read_text(), variables)
        assert '"errors": []' in short, short[:500]
        assert short == usual, name


def test_errors_of_the_product_schema_are_the_same(plant: Plant, run: Any) -> None:
    lot = plant.truth["causes"][0]["uid"]
    for query, variables in (
        ("query($lot: String!) { recallScope(input: {lot: $lot}) { units(first: 9999) "
         "{ totalCount } } }", {"lot": lot}),
        ("query($lot: String!) { recallScope(input: {lot: $lot}) { __typename counts "
         "{ __typename units } units(first: 2) { edges { __typename node { __typename uid "
         "path { __typename uid direction } } } } } }", {"lot": lot}),
        ('{ recallScope(input: {lot: "NO-SUCH-LOT"}) { source } }', {}),
    ):  # fmt: skip
        short, usual = run(query, variables)
        assert short == usual


# --- a schema made to hold what a plain field should not ----------------------------------


@strawberry.enum
class Colour(Enum):
    RED = "red"


@strawberry.type
class Step:
    uid: str
    edge: str | None
    count: int
    colour: Colour


@strawberry.type
class Holder:
    steps: list[Step]
    maybe: list[Step | None] | None
    names: list[str]
    score: float | None


async def _later(value: Any) -> Any:
    return value


def _holder(case: str) -> Holder:
    step: dict[str, Any] = {"uid": "U-1", "edge": None, "count": 3, "colour": Colour.RED}
    steps = [Step(**step), Step(**{**step, "uid": "U-2", "edge": "PRODUCED"})]
    names: Any = ["a", "b"]
    score: Any = 1.5
    if case == "null uid":
        steps[1].uid = None  # type: ignore[assignment]
    elif case == "count past 32 bits":
        steps[0].count = 2**40
    elif case == "colour not in the enum":
        steps[1].colour = "purple"  # type: ignore[assignment]
    elif case == "null name":
        names = ["a", None]
    elif case == "steps not a list":
        steps = 7  # type: ignore[assignment]
    elif case == "uid awaited":
        steps[0].uid = _later("U-1")  # type: ignore[assignment]
    elif case == "score a string":
        score = "high"
    elif case == "a uid that is a number":
        steps[0].uid = 12  # type: ignore[assignment]
    return Holder(steps=steps, maybe=[None, *steps], names=names, score=score)


CASES = ["fine", "null uid", "count past 32 bits", "colour not in the enum", "null name",
         "steps not a list", "uid awaited", "score a string", "a uid that is a number"]  # fmt: skip


@strawberry.type
class Query:
    @strawberry.field
    def holder(self, case: str) -> Holder | None:
        return _holder(case)

    @strawberry.field
    def sure(self, case: str) -> Holder:
        return _holder(case)


DOCUMENT = """query($case: String!) {
  holder(case: $case) { names score steps { uid edge count colour __typename }
                        maybe { uid colour } }
  sure(case: $case) { maybe { uid edge count } }
}"""


def _both(schema_kwargs: dict[str, Any], case: str) -> tuple[str, str]:
    answers = []
    for executor in (Executor, None):
        schema = strawberry.Schema(query=Query, execution_context_class=executor, **schema_kwargs)
        result = asyncio.run(schema.execute(DOCUMENT, variable_values={"case": case}))
        answers.append(_answer(result))
    return answers[0], answers[1]


@pytest.mark.parametrize("case", CASES)
def test_a_value_a_plain_field_should_not_hold_is_reported_as_strawberry_does(case: str) -> None:
    short, usual = _both({}, case)
    assert short == usual
    if case == "fine":
        assert '"errors": []' in short
    elif case not in ("uid awaited", "a uid that is a number"):
        assert '"errors": []' not in short  # the case did hold something wrong


def test_an_extension_that_hooks_resolve_still_sees_every_field() -> None:
    seen: list[list[str]] = []

    class Fields(SchemaExtension):
        def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
            seen[-1].append(info.field_name)
            return _next(root, info, *args, **kwargs)

    counts = []
    for executor in (Executor, None):
        seen.append([])
        schema = strawberry.Schema(query=Query, execution_context_class=executor,
                                   extensions=[Fields])  # fmt: skip
        asyncio.run(schema.execute(DOCUMENT, variable_values={"case": "fine"}))
        counts.append(len(seen[-1]))
    assert seen[0] == seen[1]
    assert counts[0] > 20  # every step's fields, not only the root's
