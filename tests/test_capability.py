"""Process capability matches published worked examples and keeps its invariants.

Published figures are asserted to the precision they are printed with (every printed digit
must agree), and each test names the source and the figures it checks. Where a source
gives only summary statistics (n, x̄, s), :func:`sample` builds a sample with exactly those
statistics, since every index depends on the data only through them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sqems.analysis.capability import (
    Capability,
    Estimate,
    capability,
    cp_interval,
    cpk_interval,
    range_constants,
)
from sqems.errors import ValidationFailed


def sample(n: int, mean: float, sd: float, seed: int = 20240301) -> npt.NDArray[np.float64]:
    """``n`` values with exactly this mean and sample standard deviation."""
    z = np.random.default_rng(seed).standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return np.asarray(mean + sd * z, dtype=np.float64)


def agrees(actual: float | None, printed: str) -> bool:
    """``actual`` rounds to the ``printed`` figure: equal within half a unit of its last
    printed digit."""
    assert actual is not None
    decimals = len(printed.partition(".")[2])
    return abs(actual - float(printed)) <= 0.5 * 10.0**-decimals + 1e-12


def estimate(e: Estimate | None) -> Estimate:
    assert e is not None
    return e


# --- NIST/SEMATECH e-Handbook -------------------------------------------------------------------


def test_nist_handbook_capability_example_off_centre_process() -> None:
    """NIST/SEMATECH e-Handbook of Statistical Methods, §6.1.6 "What is Process
    Capability?", capability index example: USL = 20, LSL = 8, x̄ = 16, s = 2 gives
    Cp = 1.0, Cpu = 0.6667, Cpl = 1.3333 and Cpk = 0.6667."""
    x = sample(50, 16.0, 2.0)
    overall = capability(x, lsl=8.0, usl=20.0)
    assert agrees(estimate(overall.pp).value, "1.0")
    assert agrees(estimate(overall.ppu).value, "0.6667")
    assert agrees(estimate(overall.ppl).value, "1.3333")
    assert agrees(estimate(overall.ppk).value, "0.6667")

    # the same figures as within-subgroup indices: rescale the sample about its mean so
    # that MR̄/d₂ is exactly 2
    within = capability(16.0 + (x - 16.0) * 2.0 / overall.sigma_within, lsl=8.0, usl=20.0)
    assert within.sigma_within == pytest.approx(2.0)
    assert agrees(estimate(within.cp).value, "1.0")
    assert agrees(estimate(within.cpu).value, "0.6667")
    assert agrees(estimate(within.cpl).value, "1.3333")
    assert agrees(estimate(within.cpk).value, "0.6667")


# --- Montgomery ---------------------------------------------------------------------------------


def test_montgomery_chi_square_interval_on_cp() -> None:
    """Montgomery, Introduction to Statistical Quality Control, 6th ed. (Wiley 2009),
    §8.3.5, worked example on a confidence interval for Cp: USL = 62, LSL = 38, n = 20,
    s = 1.75, process centred; Ĉp = 2.29 and the 95% interval is 1.57 ≤ Cp ≤ 3.01
    (printed to 3 significant digits)."""
    from_summary = cp_interval(2.29, dof=19, confidence=0.95)
    assert agrees(from_summary.lower, "1.57")
    assert agrees(from_summary.upper, "3.01")

    cap = capability(sample(20, 50.0, 1.75), lsl=38.0, usl=62.0)
    pp = estimate(cap.pp)  # Montgomery's Ĉp uses the sample s: our Pp
    assert agrees(pp.value, "2.29")
    assert agrees(pp.upper, "3.01")
    # the book multiplies the rounded Ĉp = 2.29 (from 24/10.5 = 2.2857); the interval
    # scales with Ĉp, so taking the same path reproduces its lower limit
    assert agrees(pp.lower * 2.29 / pp.value, "1.57")


def test_montgomery_bissell_interval_on_cpk() -> None:
    """Montgomery, Introduction to Statistical Quality Control, 6th ed. (Wiley 2009),
    §8.3.5, worked example on a confidence interval for Cpk (Bissell's approximation):
    n = 20 and Ĉpk = 1.33 give the approximate 95% interval 0.88 ≤ Cpk ≤ 1.78."""
    from_summary = cpk_interval(1.33, n=20, confidence=0.95)
    assert agrees(from_summary.lower, "0.88")
    assert agrees(from_summary.upper, "1.78")

    # a sample with x̄ = 0 and s = 1 against USL = 3.99 has Ĉpk = Ĉpu = 1.33 exactly
    cap = capability(sample(20, 0.0, 1.0), usl=3.99)
    ppk = estimate(cap.ppk)
    assert agrees(ppk.value, "1.33")
    assert agrees(ppk.lower, "0.88")
    assert agrees(ppk.upper, "1.78")


# --- SAS/QC User's Guide ------------------------------------------------------------------------

# SAS/QC User's Guide, the CAPABILITY procedure, "Computing Descriptive Statistics": fluid
# weights (ounces) of 100 drink cans, printed in the guide (and in the SAS sample CAPPROC).
CANS = [
    *(12.07, 12.02, 12.00, 12.01, 11.98, 11.96, 12.04, 12.05, 12.01, 11.97),
    *(12.03, 12.03, 12.00, 12.04, 11.96, 12.02, 12.06, 12.00, 12.02, 11.91),
    *(12.05, 11.98, 11.91, 12.01, 12.06, 12.02, 12.05, 11.90, 12.07, 11.98),
    *(12.02, 12.11, 12.00, 11.99, 11.95, 11.98, 12.05, 12.00, 12.10, 12.04),
    *(12.06, 12.04, 11.99, 12.06, 11.99, 12.07, 11.96, 11.97, 12.00, 11.97),
    *(12.09, 11.99, 11.95, 11.99, 11.99, 11.96, 11.94, 12.03, 12.09, 12.03),
    *(11.99, 12.00, 12.05, 12.04, 12.05, 12.01, 11.97, 11.93, 12.00, 11.97),
    *(12.13, 12.07, 12.00, 11.96, 11.99, 11.97, 12.05, 11.94, 11.99, 12.02),
    *(11.95, 11.99, 11.91, 12.06, 12.03, 12.06, 12.05, 12.04, 12.03, 11.98),
    *(12.05, 12.05, 12.11, 11.96, 12.00, 11.96, 11.96, 12.00, 12.01, 11.98),
]


def test_sas_cans_indices_and_confidence_limits() -> None:
    """SAS/QC User's Guide, CAPABILITY procedure, "Computing Capability Indices",
    Figure 5.2 (LSL = 11.95, target = 12, USL = 12.05; indices from the sample s):

    Cp 0.354967 (95% limits 0.305565, 0.404288) — chi-square;
    CPL 0.420991, CPU 0.288943;
    Cpk 0.288943 (0.212210, 0.365677) — Bissell;
    Cpm 0.348203 (0.301472, 0.398228) — Boyles;
    % < LSL 7.00000, % > USL 16.00000.

    (SAS's limits for CPL and CPU come from another method than NIST's, so only their
    values are checked.)"""
    cap = capability(CANS, lsl=11.95, usl=12.05, target=12.0)
    pp, ppk, cpm = estimate(cap.pp), estimate(cap.ppk), estimate(cap.cpm)
    assert agrees(pp.value, "0.354967")
    assert agrees(pp.lower, "0.305565")
    assert agrees(pp.upper, "0.404288")
    assert agrees(estimate(cap.ppl).value, "0.420991")
    assert agrees(estimate(cap.ppu).value, "0.288943")
    assert agrees(ppk.value, "0.288943")
    assert agrees(ppk.lower, "0.212210")
    assert agrees(ppk.upper, "0.365677")
    assert agrees(cpm.value, "0.348203")
    assert agrees(cpm.lower, "0.301472")
    assert agrees(cpm.upper, "0.398228")
    assert agrees(cap.ppm_observed.below_lsl, str(7.00000 * 1e4))
    assert agrees(cap.ppm_observed.above_usl, str(16.00000 * 1e4))


def test_sas_cans_are_judged_normal_and_in_control() -> None:
    """The same guide: "The analysis in that section provides evidence that the weight
    measurements are normally distributed", and the filling process "is assumed to be in
    statistical control" — neither check raises a warning, and n = 100 is enough."""
    cap = capability(CANS, lsl=11.95, usl=12.05, target=12.0)
    assert cap.normality is not None and cap.normality.normal
    assert cap.normality.test == "shapiro-wilk"
    assert cap.in_control is True and cap.control_source == "individuals_chart"
    assert cap.warnings == ()


# SAS/QC User's Guide, the SHEWHART procedure, "Creating Charts for Means from Raw Data":
# gap widths of 21 subgroups of five parts (sample SHWXCHR).
PARTGAPS = [
    (255, 270, 268, 290, 267),
    (260, 240, 265, 262, 263),
    (238, 236, 260, 250, 256),
    (260, 242, 281, 254, 263),
    (268, 260, 279, 289, 269),
    (270, 249, 265, 253, 263),
    (280, 260, 256, 256, 243),
    (229, 266, 250, 243, 252),
    (250, 270, 245, 273, 262),
    (248, 258, 247, 266, 256),
    (280, 251, 252, 270, 287),
    (245, 253, 243, 279, 245),
    (268, 260, 289, 275, 273),
    (264, 286, 275, 271, 279),
    (271, 257, 263, 247, 247),
    (291, 250, 273, 265, 266),
    (228, 253, 240, 260, 264),
    (270, 260, 269, 245, 276),
    (259, 257, 246, 271, 257),
    (252, 244, 230, 266, 248),
    (254, 251, 239, 233, 263),
]


def test_sas_partgaps_capability_from_rbar_over_d2() -> None:
    """SAS/QC User's Guide, SHEWHART procedure, XCHART statement, "Computing Process
    Capability Indices", OUTLIMITS= data set (LSL = 240, USL = 270; sigma = R̄/d₂):
    _MEAN_ 259.667, _STDDEV_ 13.1028, _LCLX_ 242.087, _UCLX_ 277.246, _CP_ 0.38160,
    _CPL_ 0.50032, _CPU_ 0.26288, _CPK_ 0.26288; and "the process is in statistical
    control"."""
    values = [v for subgroup in PARTGAPS for v in subgroup]
    cap = capability(values, lsl=240.0, usl=270.0, subgroup_size=5, within="range")
    assert cap.within_method == "range" and cap.subgroups == 21
    assert agrees(cap.mean, "259.667")
    assert agrees(cap.sigma_within, "13.1028")
    assert agrees(cap.mean - 3.0 * cap.sigma_within / math.sqrt(5), "242.087")
    assert agrees(cap.mean + 3.0 * cap.sigma_within / math.sqrt(5), "277.246")
    assert agrees(estimate(cap.cp).value, "0.38160")
    assert agrees(estimate(cap.cpl).value, "0.50032")
    assert agrees(estimate(cap.cpu).value, "0.26288")
    assert agrees(estimate(cap.cpk).value, "0.26288")
    assert cap.in_control is True and cap.control_source == "xbar_chart"


@pytest.mark.parametrize(
    ("size", "d2", "d3"),
    [
        (2, "1.128", "0.853"),
        (3, "1.693", "0.888"),
        (4, "2.059", "0.880"),
        (5, "2.326", "0.864"),
        (6, "2.534", "0.848"),
        (7, "2.704", "0.833"),
        (8, "2.847", "0.820"),
        (9, "2.970", "0.808"),
        (10, "3.078", "0.797"),
    ],
)
def test_range_constants_match_the_published_table(size: int, d2: str, d3: str) -> None:
    """Factors for constructing variables control charts, d₂ and d₃ (Montgomery,
    Introduction to Statistical Quality Control, Appendix Table VI; ASTM STP 15D)."""
    got_d2, got_d3 = range_constants(size)
    assert agrees(got_d2, d2)
    assert agrees(got_d3, d3)


# --- estimators -------------------------------------------------------------------------------


def test_moving_range_dof_matches_simulated_variance_of_mrbar() -> None:
    """The effective degrees of freedom of MR̄/d₂ are those of a sigma estimate with the
    same coefficient of variation: 1/(2·nu) = CV², checked on 20 000 simulated samples."""
    n = 30
    mr = np.abs(np.diff(np.random.default_rng(5).standard_normal((20_000, n)), axis=1))
    mr_bar = mr.mean(axis=1)
    simulated = 1.0 / (2.0 * mr_bar.var() / mr_bar.mean() ** 2)
    cap = capability(sample(n, 0.0, 1.0), lsl=-4.0, usl=4.0)
    assert cap.within_method == "moving_range"
    assert cap.dof_within == pytest.approx(simulated, rel=0.03)
    assert cap.dof_within < n - 1


def test_pooled_sigma_ignores_where_subgroups_sit_and_counts_their_dof() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(50.0, 2.0, 40)
    contiguous = capability(values, lsl=40.0, usl=60.0, subgroup_size=4)
    labels = np.repeat(np.array(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]), 4)
    order = rng.permutation(40)
    scattered = capability(values[order], lsl=40.0, usl=60.0, subgroup_size=list(labels[order]))
    expected = math.sqrt(np.mean(values.reshape(10, 4).var(axis=1, ddof=1)))
    assert contiguous.within_method == scattered.within_method == "pooled"
    assert contiguous.sigma_within == pytest.approx(expected)
    assert scattered.sigma_within == pytest.approx(expected)
    assert contiguous.dof_within == scattered.dof_within == 30.0
    assert contiguous.subgroups == scattered.subgroups == 10


def test_one_subgroup_pools_to_the_sample_standard_deviation() -> None:
    values = sample(12, 5.0, 0.3)
    cap = capability(values, lsl=4.0, usl=6.0, subgroup_size=[0] * 12)
    assert cap.sigma_within == pytest.approx(cap.sigma_overall)
    assert cap.cp == cap.pp


def test_expected_ppm_follows_the_normal_tails() -> None:
    # x̄ = 0, s = 1, limits at ±3: 1349.9 ppm each side (Φ(-3) = 0.0013499, normal table)
    cap = capability(sample(200, 0.0, 1.0), lsl=-3.0, usl=3.0)
    assert cap.ppm_overall is not None
    assert agrees(cap.ppm_overall.below_lsl, "1349.9")
    assert agrees(cap.ppm_overall.above_usl, "1349.9")
    assert agrees(cap.ppm_overall.total, "2699.8")


def test_a_value_on_a_limit_conforms() -> None:
    cap = capability([1.0, 2.0, 3.0, 4.0, 5.0], lsl=1.0, usl=4.5)
    assert cap.ppm_observed.below_lsl == 0.0
    assert cap.ppm_observed.above_usl == 200_000.0


def test_one_sided_specs_have_only_their_indices() -> None:
    upper = capability(sample(40, 10.0, 1.0), usl=14.0)
    assert upper.cp is None and upper.pp is None and upper.cpl is None and upper.ppl is None
    assert upper.cpk == upper.cpu and upper.ppk == upper.ppu
    assert upper.ppm_observed.below_lsl is None
    lower = capability(sample(40, 10.0, 1.0), lsl=7.0)
    assert lower.cp is None and lower.cpu is None
    assert lower.cpk == lower.cpl and lower.ppk == lower.ppl
    assert lower.ppm_overall is not None and lower.ppm_overall.above_usl is None


def test_to_dict_is_json_ready_and_complete() -> None:
    cap = capability(CANS, lsl=11.95, usl=12.05, target=12.0)
    data = json.loads(json.dumps(cap.to_dict()))
    assert set(data) == set(Capability.__dataclass_fields__)
    pp = estimate(cap.pp)
    assert data["pp"] == {"value": pp.value, "lower": pp.lower, "upper": pp.upper,
                          "lower_bound": pp.lower_bound}  # fmt: skip
    assert data["ppm_observed"]["total"] == pytest.approx(230_000.0)
    assert data["normality"]["normal"] is True
    assert data["warnings"] == []


# --- warnings -----------------------------------------------------------------------------------


def test_few_values_are_computed_with_a_warning() -> None:
    cap = capability(sample(12, 10.0, 1.0), lsl=6.0, usl=14.0)
    assert cap.pp is not None
    assert any(w.startswith("only 12 values") and "30" in w for w in cap.warnings)


def test_two_values_are_enough_to_compute_but_not_to_test_normality() -> None:
    cap = capability([1.0, 2.0], lsl=0.0, usl=3.0)
    assert cap.normality is None
    assert any("normality could not be tested" in w for w in cap.warnings)


def test_skewed_values_fail_the_normality_check() -> None:
    values = np.random.default_rng(3).exponential(1.0, 200)
    cap = capability(values, usl=8.0)
    assert cap.normality is not None and not cap.normality.normal
    assert any("not normal" in w and "shapiro-wilk" in w for w in cap.warnings)


def test_a_point_beyond_three_sigma_is_named_in_a_warning() -> None:
    values = sample(50, 10.0, 1.0)
    values[17] = 30.0
    cap = capability(values, lsl=5.0, usl=15.0)
    assert cap.in_control is False and cap.beyond_limits == (17,)
    assert any("beyond the 3-sigma limits" in w and "17" in w for w in cap.warnings)


def test_a_shifted_subgroup_breaks_control_on_the_xbar_chart() -> None:
    values = np.tile([99.0, 99.5, 100.0, 100.5, 101.0], (20, 1))
    values[6] += 5.0
    cap = capability(values.ravel(), lsl=90.0, usl=110.0, subgroup_size=5)
    assert cap.control_source == "xbar_chart"
    assert cap.beyond_limits == (6,)
    # positions follow production order, not the sort order of the labels
    names = np.array([f"lot-{99 - i}" for i in range(20)]).repeat(5)
    by_name = capability(values.ravel(), lsl=90.0, usl=110.0, subgroup_size=names)
    tuples = [("press-2", i // 5) for i in range(100)]
    by_tuple = capability(values.ravel(), lsl=90.0, usl=110.0, subgroup_size=tuples)
    assert by_name.beyond_limits == by_tuple.beyond_limits == (6,)
    assert by_name.sigma_within == by_tuple.sigma_within == cap.sigma_within


def test_the_callers_word_on_control_overrides_the_check() -> None:
    values = sample(50, 10.0, 1.0)
    values[3] = 30.0
    trusted = capability(values, lsl=5.0, usl=15.0, in_control=True)
    assert trusted.in_control is True and trusted.control_source == "caller"
    assert not any("control" in w for w in trusted.warnings)
    told = capability(sample(50, 10.0, 1.0), lsl=5.0, usl=15.0, in_control=False)
    assert told.in_control is False
    assert any("not in statistical control" in w for w in told.warnings)


def test_swapped_limits_are_computed_and_flagged() -> None:
    cap = capability(sample(40, 10.0, 1.0), lsl=14.0, usl=6.0)
    assert estimate(cap.pp).value < 0
    assert any("LSL 14 is not below USL 6" in w for w in cap.warnings)


def test_constant_values_have_no_indices_and_say_why() -> None:
    cap = capability([5.0] * 40, lsl=4.0, usl=6.0, target=5.0)
    indices = (cap.cp, cap.cpk, cap.pp, cap.ppk, cap.cpm)
    assert indices == (None,) * 5
    assert cap.ppm_within is None and cap.ppm_overall is None and cap.normality is None
    assert cap.ppm_observed.total == 0.0
    assert cap.in_control is None and cap.control_source == "not_checked"
    assert any("zero spread" in w for w in cap.warnings)


def test_constant_subgroups_leave_only_the_overall_indices() -> None:
    values = np.repeat([9.0, 10.0, 11.0, 10.0, 9.5, 10.5], 5)
    cap = capability(values, lsl=7.0, usl=13.0, subgroup_size=5)
    assert cap.cp is None and cap.pp is not None
    assert any("zero spread within subgroups" in w for w in cap.warnings)


def test_target_needs_two_limits_and_should_lie_between_them() -> None:
    one_sided = capability(sample(40, 10.0, 1.0), usl=14.0, target=10.0)
    assert one_sided.cpm is None
    assert any("Cpm needs both limits" in w for w in one_sided.warnings)
    outside = capability(sample(40, 10.0, 1.0), lsl=6.0, usl=14.0, target=15.0)
    assert outside.cpm is not None
    assert any("target 15 lies outside" in w for w in outside.warnings)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": []}, "0 value"),
        ({"values": [1.0]}, "1 value"),
        ({"values": [[1.0, 2.0], [3.0, 4.0]]}, "shape"),
        ({"values": [1.0, math.nan, 2.0]}, r"values\[1\] is nan"),
        ({"values": ["a", "b"]}, "not numbers"),
        ({"values": [1.0, 2.0, 3.0], "lsl": None, "usl": None}, "no specification limit"),
        ({"values": [1.0, 2.0, 3.0], "usl": math.inf}, "usl inf"),
        ({"values": [1.0, 2.0, 3.0], "confidence": 1.0}, "confidence 1.0"),
        ({"values": [1.0, 2.0, 3.0], "subgroup_size": 2}, "subgroups of 2"),
        ({"values": [1.0, 2.0, 3.0], "subgroup_size": 0}, "at least 1"),
        ({"values": [1.0, 2.0, 3.0], "subgroup_size": ["a", "b"]}, "2 subgroup labels"),
    ],
)
def test_inputs_that_cannot_be_computed_are_refused(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"lsl": 0.0, "usl": 5.0, **kwargs}
    with pytest.raises(ValidationFailed, match=message):
        capability(**args)  # type: ignore[arg-type]


# --- invariants ---------------------------------------------------------------------------------

readings = st.lists(st.integers(-500, 500), min_size=3, max_size=60).map(
    lambda ints: np.array(ints, dtype=np.float64) / 10.0
)
confidences = st.floats(0.5, 0.999)


def indices_of(cap: Capability) -> dict[str, Estimate]:
    names = ("cp", "cpk", "cpu", "cpl", "pp", "ppk", "ppu", "ppl", "cpm")
    return {name: e for name in names if (e := getattr(cap, name)) is not None}


def spec_around(values: npt.NDArray[np.float64], below: int, above: int) -> tuple[float, float]:
    return float(values.min()) - below / 10.0, float(values.max()) + above / 10.0


@settings(max_examples=60)
@given(readings, st.integers(0, 100), st.integers(0, 100), st.integers(-(10**6), 10**6))
def test_shifting_data_and_limits_changes_no_index(
    values: npt.NDArray[np.float64], below: int, above: int, shift: int
) -> None:
    assume(np.ptp(values) > 0)
    lsl, usl = spec_around(values, below, above)
    target = (lsl + usl) / 2.0 + 0.1
    base = capability(values, lsl, usl, target)
    moved = capability(values + shift, lsl + shift, usl + shift, target + shift)
    for name, e in indices_of(base).items():
        m = indices_of(moved)[name]
        for got, want in ((m.value, e.value), (m.lower, e.lower), (m.upper, e.upper)):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-9), name


@settings(max_examples=60)
@given(readings, st.integers(0, 100), st.integers(0, 100), st.floats(1e-3, 1e3))
def test_rescaling_data_and_limits_changes_no_index(
    values: npt.NDArray[np.float64], below: int, above: int, scale: float
) -> None:
    assume(np.ptp(values) > 0)
    lsl, usl = spec_around(values, below, above)
    base = capability(values, lsl, usl, subgroup_size=1)
    scaled = capability(values * scale, lsl * scale, usl * scale)
    for name, e in indices_of(base).items():
        assert indices_of(scaled)[name].value == pytest.approx(e.value, rel=1e-9), name
    assert scaled.sigma_overall == pytest.approx(base.sigma_overall * scale, rel=1e-9)


@given(readings, st.integers(-100, 100), st.integers(0, 100))
def test_cpk_never_exceeds_cp(values: npt.NDArray[np.float64], low: int, width: int) -> None:
    assume(np.ptp(values) > 0)
    lsl = float(values.mean()) + low / 10.0
    cap = capability(values, lsl, lsl + width / 10.0 + 0.1)
    assert estimate(cap.cpk).value <= estimate(cap.cp).value + 1e-12
    assert estimate(cap.ppk).value <= estimate(cap.pp).value + 1e-12


@given(readings, st.integers(0, 100), st.integers(0, 100), st.integers(0, 100), confidences)
def test_every_interval_contains_its_estimate(
    values: npt.NDArray[np.float64], below: int, above: int, at: int, confidence: float
) -> None:
    assume(np.ptp(values) > 0)
    lsl, usl = spec_around(values, below, above)
    target = lsl + (usl - lsl) * at / 100.0
    cap = capability(values, lsl, usl, target, confidence=confidence)
    assert len(indices_of(cap)) == 9
    for name, e in indices_of(cap).items():
        assert e.lower <= e.value <= e.upper, name


@given(readings, confidences, st.floats(0.5, 0.999))
def test_a_higher_confidence_gives_a_wider_interval(
    values: npt.NDArray[np.float64], c1: float, c2: float
) -> None:
    assume(np.ptp(values) > 0 and abs(c1 - c2) > 1e-6)
    low, high = sorted((c1, c2))
    lsl, usl = spec_around(values, 10, 10)
    narrow = indices_of(capability(values, lsl, usl, confidence=low))
    wide = indices_of(capability(values, lsl, usl, confidence=high))
    for name, e in narrow.items():
        assert wide[name].lower <= e.lower and e.upper <= wide[name].upper, name


@given(readings, st.integers(0, 100), st.integers(0, 100))
def test_mirroring_the_data_swaps_the_upper_and_lower_indices(
    values: npt.NDArray[np.float64], below: int, above: int
) -> None:
    assume(np.ptp(values) > 0)
    lsl, usl = spec_around(values, below, above)
    cap = capability(values, lsl, usl)
    mirror = capability(-values, -usl, -lsl)
    assert estimate(mirror.cpu).value == pytest.approx(estimate(cap.cpl).value)
    assert estimate(mirror.cpl).value == pytest.approx(estimate(cap.cpu).value)
    assert estimate(mirror.cpk).value == pytest.approx(estimate(cap.cpk).value)


@given(readings, st.integers(0, 100), st.integers(0, 100))
def test_the_few_values_warning_appears_exactly_below_thirty(
    values: npt.NDArray[np.float64], below: int, above: int
) -> None:
    lsl, usl = spec_around(values, below, above)
    cap = capability(values, lsl, usl, in_control=True)
    assert any(w.startswith("only ") for w in cap.warnings) == (values.size < 30)


@given(readings, st.booleans())
def test_a_process_reported_out_of_control_always_warns(
    values: npt.NDArray[np.float64], swapped: bool
) -> None:
    lsl, usl = spec_around(values, 5, 5)
    if swapped:
        lsl, usl = usl, lsl
    cap = capability(values, lsl, usl, in_control=False)
    assert any("not in statistical control" in w for w in cap.warnings)
    assert any("is not below USL" in w for w in cap.warnings) == swapped


# --- one-sided lower bounds ---------------------------------------------------------------------


def test_one_sided_lower_bounds_follow_bissell_and_the_chi_square() -> None:
    # Montgomery's Cpk example (n = 20, Cpk 1.33): the 95 % one-sided bound uses
    # z = 1.645 where the two-sided interval uses 1.96: 1.33 - 1.645·0.2302 = 0.951
    e = cpk_interval(1.33, n=20)
    assert e.lower_bound == pytest.approx(1.33 - 1.6449 * math.sqrt(1 / 180 + 1.33**2 / 38),
                                          abs=1e-3)  # fmt: skip
    assert e.lower < e.lower_bound < e.value
    # Cp: Ĉp·√(χ²₀.₀₅(19)/19) = 2.29·√(10.117/19) = 1.671
    assert cp_interval(2.29, dof=19).lower_bound == pytest.approx(1.671, abs=1e-3)


def test_one_sided_bounds_cover_the_true_index_at_their_level() -> None:
    # normal values, n = 50, true Cpk = Ppk = 4/3: measured coverage of the 95 % bounds
    # over 300 studies is 93 % (Ppk) and 94 % (Cpk), Bissell's being an approximation
    runs, ppk, cpk = 300, 0, 0
    for seed in range(runs):
        cap = capability(np.random.default_rng(1000 + seed).normal(10, 1, 50), lsl=6, usl=15)
        ppk += estimate(cap.ppk).lower_bound <= 4 / 3
        cpk += estimate(cap.cpk).lower_bound <= 4 / 3
    assert ppk / runs >= 0.9 and cpk / runs >= 0.9


def test_acceptance_is_judged_by_the_lower_bound_not_the_estimate() -> None:
    cap = capability(np.random.default_rng(1).normal(10.0, 1.2, 50), lsl=5.0, usl=15.0)
    judged = estimate(cap.judged)
    assert judged is cap.cpk and judged.value > 1.67 > judged.lower_bound
    assert cap.meets(1.33) and not cap.meets(1.67)


# --- non-normal values: ISO 22514-2 percentile method --------------------------------------------


def test_non_normal_values_are_judged_by_the_iso_percentile_indices() -> None:
    from scipy import stats  # noqa: PLC0415

    law = stats.lognorm(0.4)
    usl = float(law.isf(1e-5))
    x = law.rvs(300, random_state=np.random.default_rng(11))
    cap = capability(x, usl=usl)
    assert cap.method == "percentile" and cap.percentile is not None
    found = cap.percentile
    assert found.transform == "box-cox" and abs(found.lam) < 0.25  # log is exact here
    assert found.normality.normal
    assert found.x_high == pytest.approx(law.isf(0.00135), rel=0.2)
    assert found.x_median == pytest.approx(law.median(), rel=0.05)
    true_ppk = (usl - law.median()) / (law.isf(0.00135) - law.median())
    assert found.ppk.lower <= true_ppk <= found.ppk.upper  # coverage: the next test
    assert found.ppm.above_usl is not None and found.ppm.above_usl < 100  # true: 10 ppm
    assert cap.judged is found.ppk
    assert any("ISO 22514-2" in w and "box-cox" in w for w in cap.warnings)
    # the normal-theory Ppk misjudges the long upper tail
    assert estimate(cap.ppk).value > 1.2 * true_ppk


def test_percentile_bounds_cover_the_true_index() -> None:
    # 60 lognormal studies of 200: the 95 % bootstrap bound covered 90 % when measured
    from scipy import stats  # noqa: PLC0415

    law = stats.lognorm(0.4)
    usl = float(law.isf(1e-5))
    true_ppk = (usl - law.median()) / (law.isf(0.00135) - law.median())
    covered = studies = 0
    for seed in range(60):
        cap = capability(law.rvs(200, random_state=np.random.default_rng(seed)), usl=usl)
        if cap.percentile is not None:
            studies += 1
            covered += cap.percentile.ppk.lower_bound <= true_ppk
    assert studies >= 40 and covered / studies >= 0.83


def test_normal_values_keep_the_normal_indices() -> None:
    cap = capability(sample(200, 10.0, 1.0), lsl=6.0, usl=14.0)
    assert cap.method == "normal" and cap.percentile is None and cap.judged is cap.cpk


def test_values_with_negatives_are_fitted_by_yeo_johnson() -> None:
    from scipy import stats  # noqa: PLC0415

    rng = np.random.default_rng(5)
    x = rng.gamma(2.0, 1.0, 400) - 1.5  # skewed, a third of it below zero
    cap = capability(x, lsl=-2.0, usl=12.0)
    assert cap.percentile is not None and cap.percentile.transform == "yeo-johnson"
    assert cap.percentile.lam == pytest.approx(stats.yeojohnson(x)[1], abs=0.02)
    positive = capability(x + 2.0, lsl=0.0, usl=14.0)
    assert positive.percentile is not None
    assert positive.percentile.lam == pytest.approx(stats.boxcox(x + 2.0)[1], abs=0.02)


def test_too_few_non_normal_values_keep_the_warning_and_no_percentile_fit() -> None:
    x = np.random.default_rng(3).exponential(1.0, 15)
    x[0] = 9.0
    cap = capability(x, usl=20.0)
    assert cap.normality is not None and not cap.normality.normal
    assert cap.percentile is None and cap.method == "normal"
    assert any("too few to fit" in w for w in cap.warnings)
