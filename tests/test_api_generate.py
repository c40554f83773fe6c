"""GraphQL result types generated from domain records (sqems.graphql.generate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, NamedTuple

import pytest
import strawberry

from sqems.graphql.generate import Adapted, adapted, derived, given


class Shade(Enum):
    LIGHT = "light"
    DARK = "dark"


@dataclass(frozen=True, slots=True)
class Bound:
    low: float
    high: float | None


class Hop(NamedTuple):
    uid: str
    edge: str | None


@dataclass(frozen=True, slots=True)
class Report:
    name: str = field(metadata={"description": "What the report is about."})
    shade: Shade = Shade.LIGHT
    tag: Literal["a", "b"] = "a"
    made_at: datetime = datetime(2026, 1, 2, tzinfo=UTC)
    bounds: tuple[Bound, ...] = ()
    best: Bound | None = None
    hops: list[Hop] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    secret: str = "hidden"
    raw_count: int = 0

    @property
    def width(self) -> Bound:
        return Bound(0.0, 1.0)


@adapted(Bound, description="An interval.", descriptions={"low": "Its lower end."})
class BoundType(Adapted):
    pass


@adapted(Hop)
class HopType(Adapted):
    pass


@adapted(
    Report,
    name="Report",
    exclude=("secret",),
    rename={"raw_count": "count"},
    descriptions={"count": "How many."},
    after={"width": "name"},
)
class ReportType(Adapted):
    width: BoundType
    count: int = derived(lambda r: r.raw_count * 10)
    shout: str = derived(lambda r: r.name.upper(), description="The name, loud.")

    @strawberry.field(description="A resolver keeps its place at the end.")
    def hello(self) -> str:
        return "hi"


def _schema(answer: Report) -> strawberry.Schema:
    @strawberry.type
    class Query:
        @strawberry.field
        def report(self) -> ReportType:
            return ReportType.of(answer)

    return strawberry.Schema(query=Query)


def test_generated_type_follows_the_record_with_body_fields_in_place() -> None:
    sdl = _schema(Report("x")).as_str()
    block = sdl[sdl.index("type Report {") :]
    block = block[: block.index("}")]
    lines = block.splitlines()[1:]
    fields = [line.strip().split(":")[0] for line in lines if ":" in line and '"' not in line]
    assert fields == [
        "name", "width", "shade", "tag", "madeAt", "bounds", "best", "hops", "extra", "count",
        "shout", "hello",
    ]  # fmt: skip
    assert "secret" not in block and "rawCount" not in block
    assert '"""What the report is about."""\n  name: String!' in block
    assert '"""How many."""\n  count: Int!' in block
    assert "shade: Shade!" in block and "tag: String!" in block
    assert "bounds: [BoundType!]!" in block and "best: BoundType\n" in block
    assert "hops: [HopType!]!" in block and "extra: JSON!" in block
    assert '"""Its lower end."""\n  low: Float!' in sdl


def test_of_converts_nested_records_enums_and_derived_fields() -> None:
    report = Report(
        "cell",
        shade=Shade.DARK,
        bounds=(Bound(1.0, None), Bound(2.0, 3.0)),
        best=Bound(4.0, 5.0),
        hops=[Hop("U-1", None), Hop("B-1", "PRODUCED_IN")],
        extra={"k": [1, 2]},
        raw_count=4,
    )
    result = _schema(report).execute_sync(
        "{ report { name width { low high } shade tag madeAt bounds { low high } "
        "best { low } hops { uid edge } extra count shout hello } }"
    )
    assert result.errors is None
    assert result.data == {
        "report": {
            "name": "cell",
            "width": {"low": 0.0, "high": 1.0},
            "shade": "DARK",
            "tag": "a",
            "madeAt": "2026-01-02T00:00:00+00:00",
            "bounds": [{"low": 1.0, "high": None}, {"low": 2.0, "high": 3.0}],
            "best": {"low": 4.0},
            "hops": [{"uid": "U-1", "edge": None}, {"uid": "B-1", "edge": "PRODUCED_IN"}],
            "extra": {"k": [1, 2]},
            "count": 40,
            "shout": "CELL",
            "hello": "hi",
        }
    }


def test_of_takes_given_values_over_the_record() -> None:
    made = ReportType.of(Report("x", best=None), shout="quiet")
    assert made.shout == "quiet"  # type: ignore[attr-defined]
    assert made.best is None  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Labelled:
    uid: str
    kind: str


@adapted(Labelled)
class LabelledType(Adapted):
    kind: Shade = derived(lambda r: Shade(r.kind))
    node: str = given(description="Loaded beside the record.")


def test_a_given_field_must_be_passed_and_derived_ones_convert() -> None:
    made = LabelledType.of(Labelled("U-1", "dark"), node="N")
    assert (made.kind, made.node) == (Shade.DARK, "N")  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"LabelledType.of\(\) needs node"):
        LabelledType.of(Labelled("U-1", "dark"))


def test_misnamed_or_untranslatable_fields_are_refused_when_the_type_is_built() -> None:
    @dataclass
    class Plain:
        a: int
        pair: tuple[int, str]

    with pytest.raises(TypeError, match="Plain has no field nope"):
        adapted(Plain, exclude=("nope",))(type("NoField", (Adapted,), {}))
    with pytest.raises(TypeError, match="fixed tuple"):
        adapted(Plain)(type("Pair", (Adapted,), {}))
    with pytest.raises(TypeError, match="descriptions of no field: b"):
        adapted(Plain, exclude=("pair",), descriptions={"b": "typo"})(type("Typo", (Adapted,), {}))
    with pytest.raises(TypeError, match="must subclass Adapted"):
        adapted(Plain, exclude=("pair",))(type("NotAdapted", (), {}))
