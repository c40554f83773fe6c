"""Node and relationship models refuse bad records before they reach any store."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqems.errors import ValidationFailed
from sqems.graph_model import NODE_TYPES, REL_TYPES, node_type, rel_type
from sqems.graph_model.nodes import Batch, Inspection, Node, Parameter, ProcessRun, Unit

T0 = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)
NAIVE = datetime(2024, 3, 1, 6, 0)


# --- labels ---------------------------------------------------------------------------------------


def test_every_label_has_a_node_model_keyed_by_uid() -> None:
    assert len(NODE_TYPES) == 31
    for label, model in NODE_TYPES.items():
        assert issubclass(model, Node)
        assert model.label == label
        assert "uid" in model.model_fields
        assert model.model_fields["uid"].is_required()


def test_every_label_refuses_a_record_without_uid() -> None:
    for label, model in NODE_TYPES.items():
        with pytest.raises(ValidationFailed, match=rf"^{label} \?: .*uid"):
            model.parse({})


def test_time_span_fields_of_every_label_are_fields_of_its_model() -> None:
    for model in NODE_TYPES.values():
        if model.time_span is None:
            continue
        start, end = model.time_span
        assert start in model.model_fields
        assert end is None or end in model.model_fields


def test_unknown_label_is_refused_with_the_known_labels_listed() -> None:
    with pytest.raises(ValidationFailed) as err:
        node_type("Widget")
    message = str(err.value)
    assert "'Widget'" in message
    for label in NODE_TYPES:
        assert label in message


def test_unknown_relationship_type_is_refused_with_the_known_types_listed() -> None:
    with pytest.raises(ValidationFailed) as err:
        rel_type("MADE_OF")
    message = str(err.value)
    assert "'MADE_OF'" in message
    for name in REL_TYPES:
        assert name in message


# --- time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "record", "field"),
    [
        (Unit, {"uid": "U-0042", "produced_at": NAIVE}, "produced_at"),
        (Batch, {"uid": "B-7", "started_at": NAIVE, "quantity": 10}, "started_at"),
        (
            ProcessRun,
            {"uid": "RUN-3", "started_at": T0, "ended_at": NAIVE, "shift": "early"},
            "ended_at",
        ),
    ],
)
def test_naive_datetime_is_refused_naming_label_uid_and_field(
    model: type[Node], record: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationFailed) as err:
        model.parse(record)
    message = str(err.value)
    assert message.startswith(f"{model.label} {record['uid']}: ")
    assert field in message
    assert "timezone" in message


def test_aware_datetime_in_any_zone_is_accepted_and_placed_in_time() -> None:
    unit = Unit.parse({"uid": "U-1", "produced_at": "2024-03-01T08:00:00+02:00"})
    assert unit.interval() == (T0.timestamp(), T0.timestamp())


def test_batch_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValidationFailed, match=r"^Batch B-1: .*ends .* before it starts"):
        Batch.parse({"uid": "B-1", "started_at": T0, "ended_at": T0.replace(hour=5), "quantity": 5})


def test_process_run_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValidationFailed, match=r"^ProcessRun RUN-1: .*ends .* before it starts"):
        ProcessRun.parse(
            {"uid": "RUN-1", "started_at": T0, "ended_at": T0.replace(hour=5), "shift": "early"}
        )


def test_run_that_ends_when_it_starts_is_accepted() -> None:
    run = ProcessRun.parse({"uid": "RUN-1", "started_at": T0, "ended_at": T0, "shift": "night"})
    assert run.interval() == (T0.timestamp(), T0.timestamp())


# --- quantities and limits ------------------------------------------------------------------------


def test_inspection_finding_more_defects_than_it_sampled_is_refused() -> None:
    record = {
        "uid": "INS-1",
        "inspected_at": T0,
        "method": "aoi",
        "sample_size": 5,
        "defects_found": 6,
    }
    with pytest.raises(ValidationFailed, match=r"^Inspection INS-1: .*defects_found \(6\)"):
        Inspection.parse(record)
    assert Inspection.parse({**record, "defects_found": 5}).defects_found == 5


@pytest.mark.parametrize(("lsl", "usl"), [(250.0, 235.0), (240.0, 240.0)])
def test_parameter_lsl_not_below_usl_is_refused(lsl: float, usl: float) -> None:
    with pytest.raises(ValidationFailed, match=r"^Parameter P-1: .*lsl .* must be below usl"):
        Parameter.parse({"uid": "P-1", "name": "peak", "unit": "degC", "lsl": lsl, "usl": usl})


@pytest.mark.parametrize(
    ("limits", "target", "words"),
    [
        ({"lsl": 235, "usl": 250}, 234.9, "below lsl"),
        ({"lsl": 235, "usl": 250}, 250.1, "above usl"),
        ({"lsl": 235}, 200, "below lsl"),
        ({"usl": 250}, 300, "above usl"),
    ],
)
def test_parameter_target_outside_its_limits_is_refused(
    limits: dict[str, float], target: float, words: str
) -> None:
    record = {"uid": "P-1", "name": "peak", "unit": "degC", "target": target, **limits}
    with pytest.raises(ValidationFailed, match=rf"^Parameter P-1: .*target .*{words}"):
        Parameter.parse(record)


def test_parameter_limits_must_be_finite() -> None:
    with pytest.raises(ValidationFailed, match="usl"):
        Parameter.parse({"uid": "P-1", "name": "peak", "unit": "degC", "usl": math.inf})


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@given(
    limits=st.tuples(finite, finite).filter(lambda pair: pair[0] != pair[1]),
    value=st.floats(allow_nan=False),
    open_lower=st.booleans(),
    open_upper=st.booleans(),
)
def test_parameter_in_spec_agrees_with_closed_interval(
    limits: tuple[float, float], value: float, open_lower: bool, open_upper: bool
) -> None:
    lsl, usl = sorted(limits)
    parameter = Parameter(
        uid="P-1",
        name="peak",
        unit="degC",
        lsl=None if open_lower else lsl,
        usl=None if open_upper else usl,
    )
    expected = (open_lower or lsl <= value) and (open_upper or value <= usl)
    assert parameter.in_spec(value) is expected
    assert parameter.in_spec(math.nan) is False


def test_parameter_limits_are_inclusive() -> None:
    parameter = Parameter(uid="P-1", name="peak", unit="degC", lsl=235, usl=250)
    assert parameter.in_spec(235.0)
    assert parameter.in_spec(250.0)
    assert not parameter.in_spec(250.000001)
    assert not parameter.in_spec(234.999999)


# --- relationships --------------------------------------------------------------------------------


def test_relationship_endpoints_must_match_its_label_pairs() -> None:
    with pytest.raises(ValidationFailed) as err:
        rel_type("SUPPLIED").check("Batch", "Unit")
    assert "SUPPLIED cannot join Batch→Unit" in str(err.value)
    assert "Supplier→MaterialLot" in str(err.value)
    rel_type("SUPPLIED").check("Supplier", "MaterialLot")


def test_relationship_is_checked_in_its_direction() -> None:
    with pytest.raises(ValidationFailed, match="PRODUCED cannot join Unit→Batch"):
        rel_type("PRODUCED").check("Unit", "Batch")


def test_every_relationship_joins_known_labels() -> None:
    for rel in REL_TYPES.values():
        assert rel.pairs
        for src, dst in rel.pairs:
            assert src in NODE_TYPES
            assert dst in NODE_TYPES


def test_recorded_needs_a_value_and_a_unit() -> None:
    recorded = rel_type("RECORDED")
    with pytest.raises(ValidationFailed) as err:
        recorded.check_props("RUN-1", "P-1", {})
    message = str(err.value)
    assert message.startswith("RECORDED RUN-1→P-1: ")
    assert "value" in message
    assert "unit" in message
    assert recorded.check_props("RUN-1", "P-1", {"value": 243, "unit": "degC"}) == {
        "value": 243.0,
        "unit": "degC",
    }


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_recorded_value_must_be_finite(value: float) -> None:
    with pytest.raises(ValidationFailed, match="value"):
        rel_type("RECORDED").check_props("RUN-1", "P-1", {"value": value, "unit": "degC"})


def test_recorded_refuses_properties_it_does_not_know() -> None:
    with pytest.raises(ValidationFailed, match="operator"):
        rel_type("RECORDED").check_props(
            "RUN-1", "P-1", {"value": 1.0, "unit": "degC", "operator": "OP-1"}
        )


def test_relationship_without_properties_refuses_properties() -> None:
    produced = rel_type("PRODUCED")
    with pytest.raises(ValidationFailed, match=r"PRODUCED B-1→U-1: .*no properties.*quantity"):
        produced.check_props("B-1", "U-1", {"quantity": 3})
    assert produced.check_props("B-1", "U-1", None) == {}
    assert produced.check_props("B-1", "U-1", {}) == {}


def test_consumed_quantity_is_optional_but_positive() -> None:
    consumed = rel_type("CONSUMED_IN")
    assert consumed.check_props("LOT-1", "B-1", None) == {}
    assert consumed.check_props("LOT-1", "B-1", {"quantity": 2.5}) == {"quantity": 2.5}
    with pytest.raises(ValidationFailed, match="quantity"):
        consumed.check_props("LOT-1", "B-1", {"quantity": 0})
