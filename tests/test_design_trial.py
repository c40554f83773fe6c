"""Planted design facts (a bad supplier, a wide machine) and a plan's trial production.

The generator's new planted facts are off by default, and off they change nothing: the
plant of a fixed spec is byte for byte the one generated before they existed (its
digest is pinned below). On, they raise their defect type on the supplier's units and
widen the machine's spread, and ``produce`` realises a plan's first-pass yield from the
same truths.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import pytest

from sqems.datasets import PlantSpec, generate, layout
from sqems.datasets.plant import Plant
from sqems.datasets.trial import Trial, produce
from sqems.design.plan import PlannedProductSpec
from sqems.errors import ValidationFailed

# the plant PlantSpec(units=3000, seed=7) generated before the bad supplier and the wide
# machine existed
DRIVES_3000_SEED_7 = "613ef9aacbd28e2217d3f1cbc3e31cb3ddf1bf943db191decc6361a14c1c9d32"
BAD = layout.Causes(bad_supplier="SUP-08", bad_supplier_added_p=0.08)
WIDE = layout.Causes(wide_machine="M-SCREW-2", wide_parameter="P-TORQUE", wide_factor=2.5)


def _digest(plant: Plant) -> str:
    """A digest of every table and the ground truth of ``plant``."""
    h = hashlib.sha256()
    for kind, tables in (("nodes", plant.nodes), ("edges", plant.edges)):
        for name in sorted(tables):
            table = tables[name]
            rows = [list(r) for r in table.tuples()]
            h.update(json.dumps([kind, name, table.header, rows], default=str).encode())
    h.update(json.dumps(plant.truth, sort_keys=True, default=str).encode())
    units = plant.truth_units
    h.update(json.dumps([units.header, [list(r) for r in units.tuples()]]).encode())
    return h.hexdigest()


def test_the_planted_facts_off_leave_the_plant_byte_for_byte_as_it_was() -> None:
    assert _digest(generate(PlantSpec(units=3000, seed=7))) == DRIVES_3000_SEED_7
    explicit_off = layout.Causes(bad_supplier=None, wide_machine=None, wide_factor=1.0)
    assert _digest(generate(PlantSpec(units=3000, seed=7), explicit_off)) == DRIVES_3000_SEED_7


def _resin_supplier_of_drives(plant: Plant) -> dict[str, str]:
    """Drive serial → the supplier of the resin lot its batch consumed."""
    supplier_of_lot = {lot: sup for sup, lot in plant.edges["SUPPLIED"].tuples()}
    consumed = plant.edges["CONSUMED_IN"].columns
    resin_of_batch = {
        batch: supplier_of_lot[lot]
        for lot, batch in zip(consumed["src"], consumed["dst"], strict=True)
        if lot.startswith("LOT-RESIN-")
    }
    produced = plant.edges["PRODUCED"].columns
    return {
        unit: resin_of_batch[batch]
        for batch, unit in zip(produced["src"], produced["dst"], strict=True)
        if batch in resin_of_batch
    }


def test_a_bad_supplier_cracks_the_housings_made_from_its_lots() -> None:
    plant = generate(PlantSpec(units=6000, seed=5), BAD)
    fact = next(c for c in plant.truth["causes"] if c["kind"] == "supplier")
    assert fact["uid"] == "SUP-08"
    assert fact["material"] == "MAT-RESIN"
    assert fact["defect_type"] == "DT-CRACKED-HOUSING"
    assert fact["added_probability"] == 0.08
    supplier = _resin_supplier_of_drives(plant)
    exposed = [u for u, s in supplier.items() if s == "SUP-08"]
    assert fact["exposed_units"] == len(exposed) > 300
    cracked = {
        row[0] for row in plant.truth_units.tuples() if "DT-CRACKED-HOUSING" in row[1].split(";")
    }
    assert fact["defective_units"] == sum(u in cracked for u in exposed)
    bad_lot = next(c for c in plant.truth["causes"] if c["kind"] == "material_lot")
    in_bad_lot = {u for b in bad_lot["batches"] for u in _units_of(plant, b)}
    assert fact["exposed_in_bad_lot"] == sum(u in in_bad_lot for u in exposed)
    rate = {
        s: np.mean([u in cracked for u, t in supplier.items() if t == s and u not in in_bad_lot])
        for s in ("SUP-07", "SUP-08")
    }
    # baseline 0.001 for SUP-07, 0.081 for SUP-08: far apart for a few hundred units each
    assert rate["SUP-07"] < 0.02
    assert rate["SUP-08"] > 0.04


def _units_of(plant: Plant, batch: str) -> list[str]:
    produced = plant.edges["PRODUCED"].columns
    return [u for b, u in zip(produced["src"], produced["dst"], strict=True) if b == batch]


def test_a_wide_machine_spreads_its_parameter_and_the_others_do_not() -> None:
    plant = generate(PlantSpec(units=6000, seed=5), WIDE)
    fact = next(c for c in plant.truth["causes"] if c["kind"] == "machine_spread")
    assert (fact["uid"], fact["step"], fact["parameter"]) == (
        "M-SCREW-2",
        "STEP-ASM-30",
        "P-TORQUE",
    )
    on = dict(plant.edges["ON"].tuples())
    recorded = plant.edges["RECORDED"].columns
    values: dict[str, list[float]] = {"M-SCREW-1": [], "M-SCREW-2": []}
    for run, par, value in zip(recorded["src"], recorded["dst"], recorded["value"], strict=True):
        if par == "P-TORQUE":
            values[on[run]].append(float(value))
    sigma = (2.6 - 2.0) / 8
    assert fact["runs"] == len(values["M-SCREW-2"])
    assert fact["sigma"] == pytest.approx(2.5 * sigma)
    # sample SDs of ~15 runs each: within a factor ~1.6 of the truth
    assert np.std(values["M-SCREW-1"], ddof=1) < 1.6 * sigma
    assert np.std(values["M-SCREW-2"], ddof=1) > 2.5 * sigma / 1.6
    # nothing else moved: the other parameters are the plant's without the fact
    plain = generate(PlantSpec(units=6000, seed=5))
    assert plain.edges["ON"].columns == plant.edges["ON"].columns
    plain_values = plain.edges["RECORDED"].columns["value"]
    changed = {
        par
        for par, run, a, b in zip(
            recorded["dst"], recorded["src"], recorded["value"], plain_values, strict=True
        )
        if a != b
    }
    assert changed == {"P-TORQUE"}


@pytest.mark.parametrize(
    ("causes", "match"),
    [
        (layout.Causes(bad_supplier="SUP-01", bad_supplier_added_p=0.1), "SUP-01"),
        (layout.Causes(bad_supplier="SUP-08", bad_supplier_added_p=1.5), "probability"),
        (layout.Causes(wide_machine="M-NOPE", wide_parameter="P-TORQUE"), "M-NOPE"),
        (layout.Causes(wide_machine="M-SCREW-2", wide_parameter="P-MELT-TEMP"), "P-MELT-TEMP"),
        (
            layout.Causes(wide_machine="M-SCREW-2", wide_parameter="P-TORQUE", wide_factor=0),
            "wide_factor",
        ),
    ],
)
def test_facts_the_plant_cannot_honour_are_refused(causes: layout.Causes, match: str) -> None:
    with pytest.raises(ValidationFailed, match=match):
        generate(PlantSpec(units=1000, seed=1), causes)


# --- trial production ------------------------------------------------------------------

SPEC = PlantSpec(units=3000, seed=7)
UNITS = 40_000
NULL = layout.Causes(shift_added_p=0.0)
"""Nothing planted on the plan's path: the bad lot is history, no drift reaches a trial."""
GENEROUS = {"P-MELT-TEMP": (200, 290), "P-INJ-PRESS": (500, 1300), "P-PRESS-FORCE": (2, 8)}


def _plan(
    resin: str | None = "SUP-07", torque: tuple[float, float] = (1.4, 3.2), **screw: Any
) -> PlannedProductSpec:
    """A compact drive on the assembly line's steps, with generous tolerances except
    ``torque`` (a parameter's ``(lsl, usl)``) at screw fastening on ``screw``."""
    resin_item: dict[str, Any] = {"material": "MAT-RESIN", "quantity": 0.25}
    if resin is not None:
        resin_item["supplier"] = resin

    def params(*uids: str) -> list[dict[str, Any]]:
        return [{"parameter": u, "lsl": GENEROUS[u][0], "usl": GENEROUS[u][1]} for u in uids]

    return PlannedProductSpec.model_validate(
        {
            "uid": "PLAN-DRIVE-MINI",
            "name": "Servo drive, compact",
            "bom": [resin_item, {"material": "MAT-SHAFT", "supplier": "SUP-09"}],
            "routing": [
                {"step": "STEP-ASM-10", "parameters": params("P-MELT-TEMP", "P-INJ-PRESS")},
                {"step": "STEP-ASM-20", "parameters": params("P-PRESS-FORCE")},
                {
                    "step": "STEP-ASM-30",
                    **screw,
                    "parameters": [{"parameter": "P-TORQUE", "lsl": torque[0], "usl": torque[1]}],
                },
                {"step": "STEP-ASM-40"},
            ],
        }
    )


BOARD_PLAN = PlannedProductSpec.model_validate(
    {
        "uid": "PLAN-BOARD-LITE",
        "name": "Controller board, lite",
        "bom": [{"material": "MAT-PCB", "supplier": "SUP-01"}, {"material": "MAT-PASTE"}],
        "routing": [
            {"step": "STEP-PCB-10", "parameters": [{"parameter": "P-PASTE-THICK", "lsl": 50}]},
            {"step": "STEP-PCB-20", "machine": "M-REFLOW-1"},
            {"step": "STEP-PCB-30"},
        ],
    }
)


def _plan_types(plan: PlannedProductSpec) -> set[str]:
    """The defect types a trial of ``plan`` can show: those originating at its steps or
    with its materials."""
    steps = {r.step for r in plan.routing}
    return {t for t, step in layout.ORIGINS.items() if step in steps} | {
        layout.MATERIAL_DEFECTS[b.material]
        for b in plan.bom
        if b.material in layout.MATERIAL_DEFECTS
    }


def _no_defect(plan: PlannedProductSpec, causes: layout.Causes) -> float:
    """P(a unit of ``plan`` has none of its defect types) at the baseline rates."""
    rates = dict(causes.baseline)
    return math.prod(1.0 - rates[t] for t in _plan_types(plan))


def _within(observed: float, expected: float, n: int, sds: float = 4.0) -> bool:
    """``observed`` is a proportion of ``n`` within ``sds`` binomial SDs of ``expected``."""
    return abs(observed - expected) <= sds * math.sqrt(expected * (1 - expected) / n)


def _out_of_spec(half_width: float, sigma: float) -> float:
    """P(a normal run centred in limits ``half_width`` either side falls outside)."""
    return math.erfc(half_width / sigma / math.sqrt(2))


def test_a_trial_is_deterministic_by_its_seed() -> None:
    plan = _plan(torque=(2.2, 2.4))
    first = produce(SPEC, BAD, plan, units=5000, seed=3)
    assert produce(SPEC, BAD, plan, units=5000, seed=3) == first
    other = produce(SPEC, BAD, plan, units=5000, seed=4)
    assert (other.first_pass, other.by_cause) != (first.first_pass, first.by_cause)
    assert first.units == 5000
    assert first.batches == 50
    assert first.fpy == first.first_pass / 5000
    assert produce(SPEC, BAD, plan, seed=3).units == plan.volume


@pytest.mark.parametrize("plan", [_plan(), BOARD_PLAN], ids=["drive", "board"])
def test_with_nothing_planted_the_yield_is_the_baseline_rates(plan: PlannedProductSpec) -> None:
    trial = produce(SPEC, NULL, plan, units=UNITS, seed=1)
    expected = _no_defect(plan, NULL)
    assert 0.99 < expected < 0.996
    assert trial.batches_out_of_spec == 0
    assert not any(k.endswith("out of spec") and v for k, v in trial.by_cause.items())
    assert set(trial.by_cause) <= _plan_types(plan) | {f"{p} out of spec" for p in GENEROUS} | {
        "P-PASTE-THICK out of spec",
        "P-TORQUE out of spec",
    }
    assert _within(trial.fpy, expected, UNITS), (trial.fpy, expected)
    # the plan's inspections catch some of the defects, never more than there are
    assert trial.first_pass <= trial.passed < UNITS
    assert trial.fpy <= trial.passed_fpy == trial.passed / UNITS


def test_buying_from_the_bad_supplier_costs_about_its_added_probability() -> None:
    added = 0.06
    causes = layout.Causes(shift_added_p=0.0, bad_supplier="SUP-08", bad_supplier_added_p=added)
    good = produce(SPEC, causes, _plan(resin="SUP-07"), units=UNITS, seed=2)
    bad = produce(SPEC, causes, _plan(resin="SUP-08"), units=UNITS, seed=2)
    base = _no_defect(_plan(), causes)
    assert _within(good.fpy, base, UNITS)
    cracked = dict(causes.baseline)["DT-CRACKED-HOUSING"]
    # every unit's housing comes from SUP-08: its crack rate rises by `added`
    expected_bad = base / (1 - cracked) * (1 - cracked - added)
    assert _within(bad.fpy, expected_bad, UNITS), (bad.fpy, expected_bad)
    assert good.fpy - bad.fpy == pytest.approx(added, abs=0.012)
    assert _within(bad.by_cause["DT-CRACKED-HOUSING"] / UNITS, cracked + added, UNITS)
    # no supplier named: lots come from both suppliers as the generator draws them
    mixed = produce(SPEC, causes, _plan(resin=None), units=UNITS, seed=2)
    assert bad.fpy < mixed.fpy < good.fpy


@pytest.mark.parametrize(
    ("screw", "factors"),
    [
        ({"machine": "M-SCREW-2"}, [2.5]),
        ({"machine": "M-SCREW-1"}, [1.0]),
        ({"machine_kind": "nutrunner"}, [1.0, 2.5]),  # the two machines in turn
    ],
    ids=["wide-machine", "plain-machine", "both-in-turn"],
)
def test_a_tolerance_tighter_than_the_process_fails_the_batches_outside_it(
    screw: dict[str, str], factors: list[float]
) -> None:
    units = 100_000
    plan = _plan(torque=(2.2, 2.4), **screw)
    trial: Trial = produce(SPEC, WIDE, plan, units=units, seed=5)
    sigma = (2.6 - 2.0) / 8  # the released tolerance's ParamSpec sigma
    out = sum(_out_of_spec(0.1, sigma * f) for f in factors) / len(factors)
    batches = units // plan.batch_size
    assert trial.batches == batches
    assert _within(trial.batches_out_of_spec / batches, out, batches), (trial, out)
    assert trial.by_cause["P-TORQUE out of spec"] == trial.batches_out_of_spec * plan.batch_size
    expected = (1 - out) * _no_defect(plan, WIDE)
    shift = WIDE.shift_added_p  # the night shift at press-fit reaches the trial
    spread = math.sqrt(out * (1 - out) / batches) + shift
    assert abs(trial.fpy - expected) <= 4 * spread


def test_the_plants_night_shift_reaches_the_trial_at_its_step() -> None:
    with_shift = produce(SPEC, layout.Causes(), _plan(), units=UNITS, seed=6)
    without = produce(SPEC, NULL, _plan(), units=UNITS, seed=6)
    added = with_shift.by_cause["DT-MISALIGNED-SHAFT"] - without.by_cause["DT-MISALIGNED-SHAFT"]
    # one shift in three, give or take where the batches fall
    assert 0.2 * 0.03 * UNITS < added < 0.45 * 0.03 * UNITS


@pytest.mark.parametrize(
    ("spec", "plan", "match"),
    [
        (PlantSpec(units=3000, shape="battery"), _plan(), "drives plant"),
        (SPEC, _plan(machine="M-PRESS-1"), "M-PRESS-1 does not run STEP-ASM-30"),
        (SPEC, _plan(machine_kind="robot"), "robot"),
        (
            SPEC,
            PlannedProductSpec.model_validate(
                {
                    "uid": "P",
                    "name": "p",
                    "bom": [{"material": "MAT-RESIN"}],
                    "routing": [{"step": "STEP-CELL-10"}],
                }
            ),
            "STEP-CELL-10",
        ),
        (
            SPEC,
            PlannedProductSpec.model_validate(
                {
                    "uid": "P",
                    "name": "p",
                    "bom": [{"material": "MAT-RESIN"}],
                    "routing": [
                        {
                            "step": "STEP-ASM-30",
                            "parameters": [{"parameter": "P-MELT-TEMP", "usl": 1}],
                        }
                    ],
                }
            ),
            "P-MELT-TEMP is not recorded at STEP-ASM-30",
        ),
    ],
)
def test_a_trial_the_drives_plant_cannot_make_is_refused(
    spec: PlantSpec, plan: PlannedProductSpec, match: str
) -> None:
    with pytest.raises(ValidationFailed, match=match):
        produce(spec, None, plan, units=1000)
