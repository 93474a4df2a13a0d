"""The anytime-valid count comparisons: tables of cases and the false-alarm property."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper import sequential
from gatekeeper.sequential import Histogram, RateTest, compare_latency, compare_rates

SHIPPED = RateTest(allowed_ratio=1.5, allowed_margin=0.001, confidence=0.99, detect=5, power=0.8)


@pytest.mark.parametrize(
    ("counts", "test", "outcome"),
    [
        # 0.05 % vs 0.6 % at 40 req/s for a minute, the active counted over 5 minutes
        ((14, 2400, 6, 12000), SHIPPED, "fail"),
        # ... the same minute for both: 15 errors cannot reject x1.5 at 99 % anytime
        ((14, 2400, 1, 2400), SHIPPED, "pending"),
        # identical 0.3 %, active over 5 minutes: a x5 regression would have shown
        ((7, 2400, 36, 12000), SHIPPED, "pass"),
        # identical 0.3 % over the same minute: not enough yet for a x5 regression
        ((7, 2400, 7, 2400), SHIPPED, "pending"),
        # 5x regression under the SLO at 10 req/s after 15 minutes
        ((45, 9000, 9, 9000), SHIPPED, "fail"),
        # no errors at all after a million requests each: the margin makes it decidable
        ((0, 1e6, 0, 1e6), SHIPPED, "pass"),
        # no errors and the margin off: a x5 of nothing is nothing, never enough
        ((0, 1e6, 0, 1e6), RateTest(confidence=0.99), "pending"),
        # 3 req/s for 5 minutes at 0.1 %: too little to tell anything
        ((1, 900, 1, 900), SHIPPED, "pending"),
        # confidently 3x worse but within the absolute margin (0.03 % vs 0.01 %)
        ((300, 1e6, 100, 1e6), SHIPPED, "pass"),
        # the same without a margin fails
        ((300, 1e6, 100, 1e6), RateTest(confidence=0.99), "fail"),
        # no traffic on one side
        ((0, 0, 5, 1000), SHIPPED, "pending"),
        ((5, 1000, 0, 0), SHIPPED, "pending"),
        # fractional counts (Prometheus' increase() extrapolates)
        ((14.4, 2400.3, 6.1, 12000.8), SHIPPED, "fail"),
    ],
)
def test_compare_rates_table(counts, test, outcome):
    """Each case gives the expected outcome, and a pass names the regression it could catch."""
    decision = compare_rates(*counts, test)
    assert decision.outcome == outcome, decision.reason
    assert decision.reason.startswith(
        {"fail": "worse:", "pass": "no sign of degradation:", "pending": "pending:"}[outcome])
    if outcome == "pass":
        assert decision.power >= test.power
        assert f"x{test.detect:g} regression" in decision.reason


def test_reason_shows_rates_with_intervals_and_the_evidence():
    """The reason gives both rates with intervals, the allowed degradation and the e-value."""
    decision = compare_rates(14, 2400, 6, 12000, SHIPPED)
    assert "0.583% [" in decision.reason and "vs active 0.05% [" in decision.reason
    assert "allowed x1.5 or +0.1%" in decision.reason
    assert "reject at 100" in decision.reason
    low, high = decision.dark_interval
    assert low < decision.dark_rate < high


@pytest.mark.parametrize(("dark", "active"), [(0, 0), (0, 50), (3, 3)])
def test_e_value_is_small_without_evidence_against_the_null(dark, active):
    """No more dark events than expected under the null never gives evidence above 1."""
    assert sequential.e_value(dark, 1000, active, 1000, SHIPPED) <= 1.0 + 1e-9


def test_e_value_grows_with_the_dark_count():
    """More dark events, all else equal, is more evidence of a regression."""
    values = [sequential.e_value(x, 5000, 10, 5000, SHIPPED) for x in range(0, 80, 5)]
    assert values == sorted(values)
    assert values[-1] > 1e6


def test_e_value_stays_finite_far_in_the_tail():
    """A massive regression gives a huge finite e-value, not NaN or 0 (tail precision)."""
    value = sequential.e_value(5000, 10000, 1, 10000, SHIPPED)
    assert math.isfinite(value) and value > 1e100


def test_power_grows_with_traffic():
    """The chance of catching a x5 regression grows with the requests seen."""
    powers = [sequential.detection_power(n, n * 5, 0.003, SHIPPED) for n in (100, 1000, 10000)]
    assert powers[0] < powers[1] < powers[2]
    assert powers[2] > 0.99


# -- the false-alarm property ---------------------------------------------------------------


def _soak_false_alarms(rate: float, rps: float, looks: int, soaks: int, seed: int,
                       test: RateTest, baseline_factor: float = 1.0) -> float:
    """Share of simulated soaks (identical releases) with any rejection over `looks` looks."""
    rng = np.random.default_rng(seed)
    per_look = rps * 15.0
    dark_bad = np.cumsum(rng.poisson(rate * per_look, (soaks, looks)), axis=1).astype(float)
    active_bad = np.cumsum(rng.poisson(rate * per_look * baseline_factor, (soaks, looks)),
                           axis=1).astype(float)
    steps = np.arange(1, looks + 1, dtype=float)
    exposure = 1.0 / baseline_factor
    theta0 = sequential.null_share(test.allowed_ratio, exposure)
    a, b = sequential.prior_parameters(test.allowed_ratio, test.detect, exposure)
    log_e = sequential.log_e_value(dark_bad, active_bad, theta0, a, b)
    dark_rate = dark_bad / (per_look * steps)
    active_rate = active_bad / (per_look * steps * baseline_factor)
    rejects = (log_e >= math.log(1 / test.alpha)) & (dark_rate - active_rate > test.allowed_margin)
    return float(np.mean(rejects.any(axis=1)))


@settings(max_examples=12, deadline=None)
@given(
    rate=st.sampled_from([0.001, 0.003, 0.01, 0.05]),
    rps=st.sampled_from([1.0, 10.0, 40.0]),
    confidence=st.sampled_from([0.9, 0.95, 0.99]),
    ratio=st.sampled_from([1.0001, 1.5, 2.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_identical_rates_reject_at_most_at_the_nominal_level(rate, rps, confidence, ratio, seed):
    """Identical releases looked at every 15 s for an hour: the share of soaks with any false
    alarm stays at or below 1 - confidence (plus binomial slack of the 400 simulated soaks)."""
    test = RateTest(allowed_ratio=ratio, allowed_margin=0.0, confidence=confidence,
                    detect=max(5.0, ratio * 2))
    alarms = _soak_false_alarms(rate, rps, looks=240, soaks=400, seed=seed, test=test)
    alpha = test.alpha
    slack = 3 * math.sqrt(alpha * (1 - alpha) / 400)
    assert alarms <= alpha + slack


def test_repeated_fixed_sample_tests_would_fail_the_same_property():
    """Sanity check of the property test: a plain likelihood-ratio threshold at the same level
    (no mixture) looked at 240 times raises false alarms well above 1 - confidence."""
    rng = np.random.default_rng(7)
    x = np.cumsum(rng.poisson(3.0, (400, 240)), axis=1).astype(float)
    y = np.cumsum(rng.poisson(3.0, (400, 240)), axis=1).astype(float)
    n = x + y
    z = (x - n / 2) / np.sqrt(np.maximum(n, 1) / 4)  # one-sided z test of theta = 1/2
    repeated = float(np.mean((z > 2.326).any(axis=1)))  # 99 % one-sided, each look
    assert repeated > 0.05


# -- histograms -----------------------------------------------------------------------------

BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, math.inf)


def _hist(shares: tuple[float, ...], total: float) -> Histogram:
    """Cumulative shares at BOUNDS (the last is 1) times `total` requests."""
    return Histogram(BOUNDS, tuple(s * total for s in shares))


@pytest.mark.parametrize(
    ("shares", "q", "expected"),
    [
        ((0.5, 0.9, 0.99, 1.0, 1.0, 1.0), 0.99, 0.5),
        ((0.5, 0.9, 0.98, 1.0, 1.0, 1.0), 0.99, 0.75),
        ((0.5, 0.9, 0.95, 0.97, 0.98, 1.0), 0.99, 2.5),  # in +Inf: the highest finite bound
        ((0.2, 0.4, 0.6, 0.8, 1.0, 1.0), 0.5, 0.375),
    ],
)
def test_quantile_matches_promql_interpolation(shares, q, expected):
    """Quantiles interpolate linearly inside the bucket, as histogram_quantile does."""
    estimate, low, high = sequential.quantile_interval(_hist(shares, 10000), q, 0.95)
    assert estimate == pytest.approx(expected)
    assert low <= estimate <= high


def test_quantile_interval_narrows_with_more_requests():
    """More requests, tighter interval around the same p99."""
    shares = (0.5, 0.9, 0.98, 1.0, 1.0, 1.0)
    _, low_few, high_few = sequential.quantile_interval(_hist(shares, 500), 0.99, 0.95)
    _, low_many, high_many = sequential.quantile_interval(_hist(shares, 50000), 0.99, 0.95)
    assert high_many - low_many < high_few - low_few


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([(0.1, 5.0), (0.5, 9.0)], r"no \+Inf bucket"),
        ([], r"no \+Inf bucket"),
        ([(0.1, 5.0), (0.1, 6.0), (math.inf, 9.0)], "duplicate"),
    ],
)
def test_unusable_histograms_are_refused(buckets, message):
    """A series without +Inf (not a histogram) or with duplicate bounds is a clear error."""
    with pytest.raises(ValueError, match=message):
        sequential.histogram_from_buckets(buckets)


def test_crossing_bucket_counts_are_made_monotone():
    """increase() of separate bucket series may cross by a fraction: counts never go down."""
    hist = sequential.histogram_from_buckets([(0.1, 5.2), (0.5, 5.1), (math.inf, 9.0)])
    assert hist.counts == (5.2, 5.2, 9.0)


@pytest.mark.parametrize(
    ("dark_shares", "dark_total", "outcome"),
    [
        # p99 0.5 s -> 0.75 s (1 % -> 2 % slower than 0.5 s) with 12,000 dark requests
        ((0.5, 0.9, 0.98, 1.0, 1.0, 1.0), 12000, "fail"),
        # the same release as the active
        ((0.5, 0.9, 0.99, 1.0, 1.0, 1.0), 12000, "pass"),
        # a faster release
        ((0.6, 0.95, 0.995, 1.0, 1.0, 1.0), 12000, "pass"),
        # a slower one seen on too few requests
        ((0.5, 0.9, 0.98, 1.0, 1.0, 1.0), 200, "pending"),
    ],
)
def test_compare_latency_table(dark_shares, dark_total, outcome):
    """Latency shifted above the allowed ratio fails; same or faster passes; little is pending."""
    active = _hist((0.5, 0.9, 0.99, 1.0, 1.0, 1.0), 60000)
    test = RateTest(allowed_ratio=1.25, confidence=0.99, detect=3)
    decision = compare_latency(_hist(dark_shares, dark_total), active, q=0.99, test=test)
    assert decision.outcome == outcome, decision.reason
    assert decision.reason.count(" s [") == 2  # both quantiles with intervals
    assert "vs active 0.5 s [" in decision.reason


def test_latency_boundary_comes_from_both_namespaces():
    """The boundary is read off the pooled histogram (at or below its p99)."""
    dark = _hist((0.5, 0.9, 0.95, 0.99, 1.0, 1.0), 10000)
    active = _hist((0.5, 0.9, 0.99, 1.0, 1.0, 1.0), 10000)
    assert sequential.pooled_boundary(dark, active, 0.99) == 0.5
    assert sequential.pooled_boundary(dark, dark, 0.99) == 1.0
    assert sequential.pooled_boundary(active, active, 0.5) == 0.1


def test_histograms_with_different_buckets_are_refused():
    """Two layouts cannot be compared bucket by bucket."""
    other = Histogram((0.2, math.inf), (5.0, 10.0))
    with pytest.raises(ValueError, match="different bucket"):
        sequential.pooled_boundary(_hist((0.5, 0.9, 0.99, 1.0, 1.0, 1.0), 100), other, 0.99)
