"""The design review's evidence from history: supplier rates with a plant-wide prior,
machines' capability against a plan's tolerances, defect types at the plan's steps.

Every method on null data (nothing planted: nothing found), on planted data (a supplier
with a bad record, a machine with a wide spread, a tolerance tighter than a machine
holds) and on the battery plant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import stats

from sqems.datasets import BatteryCauses, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import Causes
from sqems.design.capability import (
    CAPABLE_AT,
    machine_capability,
    out_of_spec_draws,
    step_capability,
    step_history,
)
from sqems.design.plan import BomItem, PlannedParameter, RoutingStep
from sqems.design.precedents import defect_history, step_defects
from sqems.design.rates import fit_prior, posterior
from sqems.design.suppliers import history, prior, supplier_evidence
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.nodes import Capa, CapaStatus, Parameter
from sqems.graph_model.store import Direction, Edge, GraphStore

IN, OUT = Direction.IN, Direction.OUT

# nothing planted; housings crack at a plant-wide 1 % whoever supplied the resin, so
# that the suppliers have a record to compare (at the default 0.1 % few units crack)
QUIET = Causes(
    bad_lot_added_p=0.0,
    shift_added_p=0.0,
    drift_amount=0.0,
    baseline=(
        ("DT-SOLDER-VOID", 0.002),
        ("DT-SOLDER-BRIDGE", 0.003),
        ("DT-CRACKED-HOUSING", 0.01),
        ("DT-MISALIGNED-SHAFT", 0.004),
        ("DT-TORQUE-LOW", 0.003),
        ("DT-SCRATCH", 0.004),
    ),
)


def _store(spec: PlantSpec, causes: Causes | BatteryCauses) -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(spec, causes)))
    return store


@pytest.fixture(scope="module")
def quiet() -> Iterator[EmbeddedGraphStore]:
    with _store(PlantSpec(units=12_000, seed=5), QUIET) as store:
        yield store


def _pairs(store: GraphStore) -> list[tuple[str, str]]:
    return sorted(history(store).pairs)


# --- the beta-binomial -------------------------------------------------------------------------


def test_the_prior_is_recovered_from_groups_drawn_from_it() -> None:
    rng = np.random.default_rng(3)
    rates = rng.beta(2.0, 398.0, 400)  # mean 0.005
    units = rng.integers(500, 3000, 400)
    counts = [(int(rng.binomial(n, p)), int(n)) for p, n in zip(rates, units, strict=True)]
    fitted = fit_prior(counts)
    assert fitted.pairs == 400
    assert fitted.mean == pytest.approx(0.005, rel=0.1)
    assert 1.2 < fitted.alpha < 3.5, fitted  # the spread, not only the mean
    # the groups' 90 % credible intervals hold their true rates about nine times in ten
    covered = [
        (r := posterior(k, n, fitted)).low <= p <= r.high
        for p, (k, n) in zip(rates, counts, strict=True)
    ]
    assert 0.85 <= float(np.mean(covered)) <= 0.95


def test_groups_alike_are_pulled_to_the_plant_rate() -> None:
    """Binomial scatter only: the prior's concentration a + b grows far past a group's
    units, so it outweighs each group's own record, and every interval holds the
    plant's rate."""
    rng = np.random.default_rng(4)
    counts = [(int(rng.binomial(2000, 0.004)), 2000) for _ in range(30)]
    fitted = fit_prior(counts)
    assert fitted.alpha + fitted.beta > 5 * 2000
    for k, n in counts:
        rate = posterior(k, n, fitted)
        assert rate.low <= fitted.mean <= rate.high


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="5 defective of 3 units"):
        fit_prior([(5, 3)])
    with pytest.raises(ValidationFailed, match="no group"):
        fit_prior([(0, 0)])


def test_three_lots_are_not_judged_like_three_hundred() -> None:
    """The same observed rate, three times the plant's, on a supplier with a few units
    and on one with many, under the prior of a plant whose suppliers differ: the few are
    pulled most of the way to the plant's rate and not flagged; the many keep their
    rate and are."""
    causes = replace(QUIET, bad_supplier="SUP-07", bad_supplier_added_p=0.03)
    with _store(PlantSpec(units=8_000, seed=6), causes) as store:
        plant = prior(store)
    observed = 3 * plant.mean
    few = posterior(1, round(1 / observed), plant)
    many = posterior(100, round(100 / observed), plant)
    assert few.defective / few.units == pytest.approx(many.defective / many.units, rel=0.02)
    assert abs(few.mean - plant.mean) < abs(few.mean - observed) / 2  # shrunk
    assert many.mean == pytest.approx(observed, rel=0.15)  # its own
    assert few.high - few.low > many.high - many.low
    assert few.low <= plant.mean <= few.high
    assert many.low > plant.mean
    from sqems.design.rates import worse_than  # noqa: PLC0415

    assert worse_than(few, plant.mean) < 0.95 <= worse_than(many, plant.mean)


# --- suppliers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_nothing_planted_no_supplier_is_flagged(seed: int) -> None:
    with _store(PlantSpec(units=8_000, seed=seed), QUIET) as quiet:
        _no_supplier_flagged(quiet)


def test_the_default_plants_bad_lot_flags_its_resin_supplier_once() -> None:
    """The default plant's bad resin lot went into batches with one shaft supplier's
    lots: the resin's supplier is flagged; the shaft's is explained by it or named as
    co-exposed with it, never flagged alone."""
    with _store(PlantSpec(units=6_000, seed=3), Causes()) as store:
        known = history(store)
        plant = prior(store, known)
        found = [
            supplier_evidence(store, BomItem(material=m, supplier=s), plant, known=known)
            for s, m in sorted(known.pairs)
        ]
    flagged = [e for e in found if e.flagged]
    resin = [e for e in flagged if e.material == "MAT-RESIN"]
    assert len(resin) == 1, flagged
    for e in flagged:
        if e is not resin[0]:
            assert e.co_exposed == [(resin[0].supplier, "MAT-RESIN")], e
    for e in found:
        if e.explained_by is not None:
            assert not e.flagged and e.worse_than_plant >= 0.95


def _no_supplier_flagged(quiet: EmbeddedGraphStore) -> None:
    """No pair flagged and no interval above the plant's rate; the interval of every pair
    whose lots went into a product where material defects arise holds it (one that only
    went into boards, where none can, may lie below it)."""
    known = history(quiet)
    plant = prior(quiet, known)
    assert plant.pairs >= 4
    assert 0.002 < plant.mean < 0.02, plant
    for supplier, material in sorted(known.pairs):
        ev = supplier_evidence(
            quiet, BomItem(material=material, supplier=supplier), plant, known=known
        )
        assert not ev.flagged, ev
        assert ev.rate.low <= ev.plant_rate, ev  # never credibly worse
        if known.pairs[(supplier, material)].exposed:
            assert ev.plant_rate <= ev.rate.high, ev
        assert ev.lots == len(known.pairs[(supplier, material)].lots)
        assert 0 <= ev.lots_rejected <= ev.lots_inspected <= ev.lots
        assert ev.material_complaints <= ev.complaints


def test_the_counts_are_the_scorecards(quiet: EmbeddedGraphStore) -> None:
    """A supplier of one material: its rate's counts, inspections and complaints are
    what its scorecard counts."""
    from sqems.quality.suppliers import scorecard  # noqa: PLC0415

    known = history(quiet)
    materials_of: dict[str, list[str]] = {}
    for supplier, material in known.pairs:
        materials_of.setdefault(supplier, []).append(material)
    supplier = next(s for s, ms in sorted(materials_of.items()) if len(ms) == 1)
    material = materials_of[supplier][0]
    ev = supplier_evidence(quiet, BomItem(material=material, supplier=supplier), prior(quiet))
    card = scorecard(quiet, supplier)
    assert (ev.rate.defective, ev.rate.units) == (card.material_defective, card.units)
    assert (ev.lots, ev.lots_inspected, ev.lots_rejected) == (
        card.lots,
        card.lots_inspected,
        card.lots_rejected,
    )
    assert ev.incoming_ppm == card.incoming_ppm
    assert (ev.complaints, ev.material_complaints) == (card.complaints, card.material_complaints)


@pytest.fixture(
    scope="module",
    # seed 5 with SUP-08: its resin went into most of the units with SUP-09's shafts,
    # whose record it raises past the flag (explained, not flagged)
    params=[(5, "SUP-08"), (6, "SUP-07"), (8, "SUP-08")],
    ids=["5-SUP-08", "6-SUP-07", "8-SUP-08"],
)
def bad_supplier(request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddedGraphStore, str]]:
    seed, supplier = request.param
    causes = replace(QUIET, bad_supplier=supplier, bad_supplier_added_p=0.03)
    with _store(PlantSpec(units=8_000, seed=seed), causes) as store:
        yield store, supplier


def test_a_supplier_with_a_bad_record_is_flagged_and_ranked_worst(
    bad_supplier: tuple[EmbeddedGraphStore, str],
) -> None:
    store, bad = bad_supplier
    known = history(store)
    plant = prior(store, known)
    found = {
        key: supplier_evidence(store, BomItem(material=key[1], supplier=key[0]), plant, known=known)
        for key in known.pairs
    }
    ev = found[(bad, "MAT-RESIN")]
    assert ev.flagged and ev.worse_than_plant >= 0.99
    assert ev.explained_by is None and ev.co_exposed == []
    # only the planted supplier: a pair its lots shared units with is explained by it
    for key, other in found.items():
        if key != (bad, "MAT-RESIN"):
            assert not other.flagged, other
            if other.worse_than_plant >= 0.95:
                assert other.explained_by == (bad, "MAT-RESIN"), other
    assert ev.rate.low > plant.mean
    worst = max(found.values(), key=lambda e: e.rate.mean)
    assert (worst.supplier, worst.material) == (bad, "MAT-RESIN")
    assert ev.material_rate.mean < ev.rate.mean  # the material over all its suppliers
    assert ev.alternatives, "the other resin supplier"
    for _, rate, better in ev.alternatives:
        assert better > 0.95 and rate.mean < ev.rate.mean
    # the alternative, reviewed as planned, is not flagged and sees the bad one as worse
    other = ev.alternatives[0][0]
    alt = found[(other, "MAT-RESIN")]
    assert not alt.flagged
    assert dict((s, b) for s, _, b in alt.alternatives)[bad] < 0.05


def test_a_material_without_a_planned_supplier_and_unknown_uids(
    bad_supplier: tuple[EmbeddedGraphStore, str],
) -> None:
    store, bad = bad_supplier
    plant = prior(store)
    ev = supplier_evidence(store, BomItem(material="MAT-RESIN"), plant)
    assert ev.supplier is None and ev.rate == ev.material_rate
    assert {s for s, _, _ in ev.alternatives} >= {bad}
    with pytest.raises(NotFound, match="MAT-NONE"):
        supplier_evidence(store, BomItem(material="MAT-NONE"), plant)
    with pytest.raises(NotFound, match="SUP-NONE"):
        supplier_evidence(store, BomItem(material="MAT-RESIN", supplier="SUP-NONE"), plant)


# --- capability --------------------------------------------------------------------------------


def _limits(store: GraphStore, parameter: str, scale: float) -> PlannedParameter:
    """The released limits of ``parameter`` around its target, ``scale`` times as wide."""
    p = store.get(parameter)
    assert isinstance(p, Parameter) and p.lsl is not None and p.usl is not None
    centre = p.target if p.target is not None else (p.lsl + p.usl) / 2
    half = (p.usl - p.lsl) / 2 * scale
    return PlannedParameter(
        parameter=parameter, lsl=centre - half, usl=centre + half, target=p.target
    )


def test_a_tighter_tolerance_than_the_machine_holds(quiet: EmbeddedGraphStore) -> None:
    tight = _limits(quiet, "P-TORQUE", 0.3)
    [found] = step_capability(
        quiet, RoutingStep(step="STEP-ASM-30", machine="M-SCREW-1", parameters=[tight])
    )
    cap = found.planned
    assert not isinstance(cap, list)
    assert cap.runs >= 20
    assert cap.capable is False and cap.cpk_high is not None and cap.cpk_high < CAPABLE_AT
    assert cap.out_of_spec_low is not None and cap.out_of_spec_low > 0.01
    assert cap.holds is not None
    low, high = cap.holds
    assert low is not None and high is not None and tight.lsl is not None and tight.usl is not None
    assert low < tight.lsl and high > tight.usl
    assert [a.machine for a in found.alternatives] == ["M-SCREW-2"]
    # at the limits it holds, it is capable by construction
    held = machine_capability(
        "STEP-ASM-30",
        "M-SCREW-1",
        step_history(quiet, "STEP-ASM-30")[("M-SCREW-1", "P-TORQUE")],
        PlannedParameter(parameter="P-TORQUE", lsl=low, usl=high, target=tight.target),
    )
    assert held.cpk_low == pytest.approx(CAPABLE_AT, abs=0.02)
    # wide limits: capable, with an out-of-spec interval near zero
    wide = step_capability(
        quiet,
        RoutingStep(
            step="STEP-ASM-30", machine="M-SCREW-1", parameters=[_limits(quiet, "P-TORQUE", 3.0)]
        ),
    )
    easy = wide[0].planned
    assert not isinstance(easy, list)
    assert easy.capable is True and easy.out_of_spec_high is not None
    assert easy.out_of_spec_high < 1e-6


def test_the_machine_kind_and_no_machine(quiet: EmbeddedGraphStore) -> None:
    limits = _limits(quiet, "P-TORQUE", 1.0)
    [by_kind] = step_capability(
        quiet, RoutingStep(step="STEP-ASM-30", machine_kind="nutrunner", parameters=[limits])
    )
    assert isinstance(by_kind.planned, list)
    assert {c.machine for c in by_kind.planned} == {"M-SCREW-1", "M-SCREW-2"}
    assert by_kind.alternatives == []
    with pytest.raises(NotFound, match="STEP-NONE"):
        step_capability(quiet, RoutingStep(step="STEP-NONE", parameters=[limits]))


def test_a_machine_with_a_wide_spread_is_worse_than_its_sister() -> None:
    causes = replace(QUIET, wide_machine="M-SCREW-2", wide_parameter="P-TORQUE", wide_factor=3.0)
    with _store(PlantSpec(units=12_000, seed=5), causes) as store:
        limits = _limits(store, "P-TORQUE", 1.0)
        [found] = step_capability(
            store, RoutingStep(step="STEP-ASM-30", machine="M-SCREW-2", parameters=[limits])
        )
    wide = found.planned
    assert not isinstance(wide, list)
    [sister] = found.alternatives
    assert sister.machine == "M-SCREW-1"
    assert wide.cpk_high is not None and sister.cpk_low is not None
    assert wide.cpk_high < sister.cpk_low
    assert wide.capable is False
    assert wide.out_of_spec_low is not None and sister.out_of_spec is not None
    assert wide.out_of_spec_low > sister.out_of_spec
    assert wide.holds is not None and sister.holds is not None
    assert wide.holds[1] - wide.holds[0] > 2 * (sister.holds[1] - sister.holds[0])  # type: ignore[operator]


def test_the_out_of_spec_interval_covers_the_truth() -> None:
    """Normal runs with a known out-of-spec fraction: the 90 % interval covers it about
    nine times in ten, and the draws centre on the reported mean."""
    rng = np.random.default_rng(8)
    limits = PlannedParameter(parameter="P-X", lsl=-2.0, usl=2.5)
    truth = float(stats.norm.cdf(-2.0) + stats.norm.sf(2.5))
    covered = 0
    trials = 120
    for i in range(trials):
        cap = machine_capability("S", "M", rng.normal(0.0, 1.0, 30).tolist(), limits, seed=i)
        assert cap.out_of_spec_low is not None and cap.out_of_spec_high is not None
        covered += cap.out_of_spec_low <= truth <= cap.out_of_spec_high
    assert 0.82 <= covered / trials <= 0.97, covered
    draws = out_of_spec_draws(cap, 4000, np.random.default_rng(1))
    assert draws.shape == (4000,) and np.all((draws >= 0) & (draws <= 1))
    assert float(draws.mean()) == pytest.approx(cap.out_of_spec, rel=0.1)
    few = machine_capability("S", "M", [1.0], limits)
    assert few.cpk is None and few.capable is None
    with pytest.raises(ValidationFailed, match="1 run"):
        out_of_spec_draws(few, 10, np.random.default_rng(1))


# --- defect types at the plan's steps ----------------------------------------------------------


def test_defect_types_at_a_step_with_their_rate_precedents_and_capas(
    quiet: EmbeddedGraphStore,
) -> None:
    known = defect_history(quiet)
    [housing] = step_defects(quiet, "STEP-ASM-10", ["PRD-DRIVE"], known=known)
    assert housing.defect_type == "DT-CRACKED-HOUSING" and housing.category == "material"
    drives = known.units["PRD-DRIVE"]
    cracked = known.with_type["DT-CRACKED-HOUSING"] & drives
    assert (housing.rate.defective, housing.rate.units) == (len(cracked), len(drives))
    assert housing.rate.low <= len(cracked) / len(drives) <= housing.rate.high
    assert housing.capas == [] and housing.precedents == []
    # the default similar products are those that ran the step
    assert step_defects(quiet, "STEP-ASM-10", [], known=known) == [housing]
    with pytest.raises(NotFound, match="PRD-NONE"):
        step_defects(quiet, "STEP-ASM-10", ["PRD-NONE"], known=known)


def test_a_capa_that_addressed_the_type_is_its_precedent() -> None:
    with _store(PlantSpec(units=3_000, seed=5), QUIET) as store:
        defect = next(e.src for e in store.edges(["DT-CRACKED-HOUSING"], {"OF_TYPE": IN}))
        opened = datetime(2026, 2, 1, tzinfo=UTC)
        capa = Capa(
            uid="CAPA-HOUSING",
            title="Cracked housings",
            opened_at=opened,
            closed_at=opened.replace(month=3),
            status=CapaStatus.CLOSED,
            effective=True,
            five_why=json.dumps(["housing cracked", "resin wet"]),
            corrective=json.dumps([{"text": "dry resin 4 h at 80 °C"}]),
        )
        store.upsert_nodes([capa])
        store.upsert_edges([Edge("ADDRESSES", "CAPA-HOUSING", defect)])
        [housing] = step_defects(store, "STEP-ASM-10", [])
    assert housing.capas == ["CAPA-HOUSING"]
    assert housing.precedents[0].root_cause == "resin wet"
    assert housing.precedents[0].corrective == ["dry resin 4 h at 80 °C"]


# --- a plant shaped differently ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [2, 3])
def test_the_battery_plant_with_nothing_planted(seed: int) -> None:
    quiet = BatteryCauses.none()
    with _store(PlantSpec(shape="battery", units=3_000, seed=seed), quiet) as store:
        known = history(store)
        plant = prior(store, known)
        assert known.pairs
        for supplier, material in sorted(known.pairs):
            ev = supplier_evidence(
                store, BomItem(material=material, supplier=supplier), plant, known=known
            )
            assert not ev.flagged, ev
            assert ev.rate.low <= plant.mean <= ev.rate.high, ev
        defects = defect_history(store)
        steps = sorted(n.uid for page in store.iter_nodes("ProcessStep") for n in page.items)
        seen = 0
        for step in steps:
            parameters = [e.src for e in store.edges([step], {"PARAMETER_OF": IN})]
            if parameters:
                limits = [_limits(store, p, 1.0) for p in parameters]
                for found in step_capability(store, RoutingStep(step=step, parameters=limits)):
                    assert isinstance(found.planned, list) and found.planned
                    for cap in found.planned:
                        assert cap.runs > 0
                        if cap.runs < 2:  # one run: no spread to judge by
                            assert cap.cpk is None and cap.capable is None
                            continue
                        assert cap.cpk is not None and cap.out_of_spec is not None
                        seen += 1
            for d in step_defects(store, step, [], known=defects):
                assert 0.0 <= d.rate.low <= d.rate.mean <= d.rate.high <= 1.0
        assert seen >= 4
        assert not math.isnan(plant.mean)


def test_replace_keeps_rates_frozen() -> None:
    rate = posterior(1, 10, fit_prior([(1, 10), (2, 10)]))
    assert replace(rate, units=10) == rate
