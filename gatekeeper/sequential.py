"""Anytime-valid comparisons of event counts, dark against active (pure, no I/O).

Rates ("bad events / all events": 5xx per request, requests slower than a latency boundary)
are compared by a mixture sequential probability ratio test on the counts, after Lindon,
Sanden & Shirikian, "Rapid Regression Detection in Software Deployments through Sequential
Testing" (KDD 2022):

* Bad events are modelled as Poisson processes whose clock is the number of requests: the dark
  makes bad events at `rate_d` per request, the active at `rate_a`. Conditional on the total
  number of bad events N, each one is the dark's with probability
  theta = ratio * w / (ratio * w + 1), where ratio = rate_d / rate_a and w is the dark's share
  of exposure (dark requests / active requests). The active's unknown rate drops out.
* The null hypothesis is "the dark is within the allowed degradation": ratio <= allowed_ratio,
  i.e. theta <= theta0. The e-value is the Beta-mixture likelihood ratio
  E = integral over theta >= theta0 of L(theta) / L(theta0), with a Beta prior truncated to
  [theta0, 1]. For every theta' <= theta0 it is a nonnegative supermartingale, so by Ville's
  inequality the chance that E ever reaches 1 / alpha, however often it is looked at, is at
  most alpha = 1 - confidence. The test only needs the cumulative counts (a sufficient
  statistic), so it is recomputed from Prometheus at every look: no state is kept.
* Exposure is taken from the cumulative request counts; this is exact when the traffic split
  between the namespaces is steady and an approximation otherwise.

Three outcomes: `fail` (E >= 1 / alpha, and the dark's rate exceeds the active's by more than
the practical margin), `pass` (no rejection although a `detect` x regression would have been
caught by now with probability >= `power`), `pending` (neither: not enough evidence, never a
pass). Latency uses the same test on the share of requests slower than a histogram bucket
boundary near the pooled quantile. All functions take plain numbers and are vectorised where
the benchmark needs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import betaincc, betaln

Outcome = Literal["fail", "pass", "pending"]
FloatArray = npt.NDArray[np.float64]

PRIOR_STRENGTH = 2.0
"""a + b of the Beta mixing prior (in pseudo-events): weak, so large effects are found fast."""
MAX_POWER_EVENTS = 20_000
"""Power is computed at no more than this many bad events (power only grows with N)."""
_LOG_TINY = -745.0


@dataclass(frozen=True)
class RateTest:
    """What a rate comparison tolerates and how sure it must be."""

    allowed_ratio: float = 1.5
    """The dark may make this many times the active's bad events per request (the null)."""
    allowed_margin: float = 0.0
    """A difference of rates (absolute, e.g. 0.001 = 0.1 percentage points) that never fails."""
    confidence: float = 0.99
    """1 - confidence bounds the chance of a false `fail` over the whole soak."""
    detect: float = 5.0
    """The regression (ratio to the active) the test must be able to catch before `pass`."""
    power: float = 0.8
    """... with at least this probability at the counts seen so far."""

    @property
    def alpha(self) -> float:
        """The anytime false-alarm bound."""
        return 1.0 - self.confidence


@dataclass(frozen=True)
class RateDecision:
    """One rate comparison with the figures a person needs to trust it."""

    outcome: Outcome
    e_value: float
    threshold: float
    power: float
    dark_rate: float
    active_rate: float
    dark_interval: tuple[float, float]
    active_interval: tuple[float, float]
    reason: str


def null_share(allowed_ratio: float | FloatArray, exposure: float | FloatArray) -> FloatArray:
    """theta0: the dark's share of bad events when its rate is `allowed_ratio` x the active's.

    `exposure` is dark requests / active requests.
    """
    scaled = np.asarray(allowed_ratio, dtype=float) * np.asarray(exposure, dtype=float)
    return np.asarray(scaled / (scaled + 1.0), dtype=float)


def prior_parameters(
    allowed_ratio: float, detect: float, exposure: float | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Beta(a, b) centred on the share of bad events a `detect` x regression would give."""
    centre = null_share(max(detect, allowed_ratio * 1.01), exposure)
    return PRIOR_STRENGTH * centre, PRIOR_STRENGTH * (1.0 - centre)


def log_e_value(
    dark_bad: float | FloatArray,
    active_bad: float | FloatArray,
    theta0: float | FloatArray,
    a: float | FloatArray,
    b: float | FloatArray,
) -> FloatArray:
    """log E of the truncated Beta(a, b) mixture against theta0 (vectorised, real counts)."""
    x = np.asarray(dark_bad, dtype=float)
    y = np.asarray(active_bad, dtype=float)
    t0 = np.clip(np.asarray(theta0, dtype=float), 1e-300, 1.0 - 1e-16)
    a_ = np.asarray(a, dtype=float)
    b_ = np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Posterior and prior mass above theta0 (complemented regularised incomplete beta,
        # precise in the tail). Posterior mass that underflows to 0 means the data sit far
        # below theta0: the e-value is then 0 to machine precision (log clamped below).
        post_tail = np.log(betaincc(x + a_, y + b_, t0))
        prior_tail = np.log(np.maximum(betaincc(a_, b_, t0), 1e-300))
        log_mix = betaln(x + a_, y + b_) - betaln(a_, b_) + post_tail - prior_tail
        log_null = x * np.log(t0) + y * np.log1p(-t0)
        out = log_mix - log_null
    out = np.where(np.isnan(out), _LOG_TINY, out)
    return np.asarray(np.maximum(out, _LOG_TINY), dtype=float)


def e_value(
    dark_bad: float, dark_total: float, active_bad: float, active_total: float, test: RateTest
) -> float:
    """The mixture SPRT's e-value for "dark rate <= allowed_ratio x active rate"."""
    if dark_total <= 0 or active_total <= 0:
        return 1.0
    exposure = dark_total / active_total
    theta0 = null_share(test.allowed_ratio, exposure)
    a, b = prior_parameters(test.allowed_ratio, test.detect, exposure)
    return float(np.exp(min(log_e_value(dark_bad, active_bad, theta0, a, b).item(), 700.0)))


def _practical(dark_rate: float | FloatArray, active_rate: float | FloatArray,
               margin: float) -> npt.NDArray[np.bool_]:
    return np.asarray(np.asarray(dark_rate) - np.asarray(active_rate) > margin)


def detection_power(
    dark_total: float, active_total: float, active_rate: float, test: RateTest
) -> float:
    """Chance the test fails now if the dark's rate were `detect` x the active's.

    The regression looked for is max(detect x rate_a, rate_a + 2 x allowed_margin), so a
    margin never makes a tiny regression "detectable". Exact binomial sum over the dark's
    share of N bad events, N the number expected under that regression.
    """
    if dark_total <= 0 or active_total <= 0 or active_rate <= 0:
        return 0.0
    regressed = max(test.detect * active_rate, active_rate + 2.0 * test.allowed_margin)
    expected_dark = regressed * dark_total
    total_events = round(min(expected_dark + active_rate * active_total, MAX_POWER_EVENTS))
    if total_events <= 0:
        return 0.0
    exposure = dark_total / active_total
    theta1 = expected_dark / (expected_dark + active_rate * active_total)
    theta0 = null_share(test.allowed_ratio, exposure)
    a, b = prior_parameters(test.allowed_ratio, test.detect, exposure)
    dark_counts = np.arange(total_events + 1, dtype=float)
    scale = dark_total if total_events < MAX_POWER_EVENTS else (
        dark_total * total_events / (expected_dark + active_rate * active_total))
    active_scale = active_total * scale / dark_total
    rejects = (log_e_value(dark_counts, total_events - dark_counts, theta0, a, b)
               >= math.log(1.0 / test.alpha)) & _practical(
        dark_counts / scale, (total_events - dark_counts) / active_scale, test.allowed_margin)
    from scipy.stats import binom

    weights = binom.pmf(dark_counts, total_events, theta1)
    return float(np.sum(weights[rejects]))


def rate_interval(bad: float, total: float, confidence: float) -> tuple[float, float]:
    """Jeffreys interval of a rate at `confidence` (descriptive, for reasons; fixed-sample)."""
    if total <= 0:
        return (0.0, 1.0)
    from scipy.stats import beta

    bad = min(max(bad, 0.0), total)
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if bad <= 0 else float(beta.ppf(tail, bad + 0.5, total - bad + 0.5))
    high = 1.0 if bad >= total else float(beta.ppf(1.0 - tail, bad + 0.5, total - bad + 0.5))
    return (low, high)


def compare_rates(
    dark_bad: float,
    dark_total: float,
    active_bad: float,
    active_total: float,
    test: RateTest,
    *,
    what: str = "bad events",
) -> RateDecision:
    """Decide fail / pass / pending for one pair of counts; see the module docstring."""
    threshold = 1.0 / test.alpha
    dark_bad, active_bad = max(dark_bad, 0.0), max(active_bad, 0.0)
    dark_rate = dark_bad / dark_total if dark_total > 0 else math.nan
    active_rate = active_bad / active_total if active_total > 0 else math.nan
    dark_ci = rate_interval(dark_bad, dark_total, test.confidence)
    active_ci = rate_interval(active_bad, active_total, test.confidence)
    if dark_total <= 0 or active_total <= 0:
        who = "dark" if dark_total <= 0 else "active"
        return RateDecision("pending", 1.0, threshold, 0.0, dark_rate, active_rate, dark_ci,
                            active_ci, f"pending: no requests counted for the {who} namespace")
    evidence = e_value(dark_bad, dark_total, active_bad, active_total, test)
    shown = (f"{what} {_pct(dark_rate)} [{_pct(dark_ci[0])}, {_pct(dark_ci[1])}] of "
             f"{_count(dark_total)} vs active {_pct(active_rate)} "
             f"[{_pct(active_ci[0])}, {_pct(active_ci[1])}] of {_count(active_total)}")
    allowed = f"allowed x{test.allowed_ratio:g}"
    if test.allowed_margin > 0:
        allowed += f" or +{_pct(test.allowed_margin)}"
    evidence_text = f"e={_evalue(evidence)}, reject at {threshold:.0f}"
    if evidence >= threshold and bool(_practical(dark_rate, active_rate, test.allowed_margin)):
        return RateDecision("fail", evidence, threshold, 1.0, dark_rate, active_rate, dark_ci,
                            active_ci, f"worse: {shown} ({allowed}; {evidence_text})")
    # Power at the active's rate, plus half an event so that zero errors still leaves a rate.
    power = detection_power(dark_total, active_total, (active_bad + 0.5) / active_total, test)
    if power >= test.power:
        return RateDecision(
            "pass", evidence, threshold, power, dark_rate, active_rate, dark_ci, active_ci,
            f"no sign of degradation: {shown} ({allowed}; {evidence_text}; a x{test.detect:g} "
            f"regression would be caught with {power:.0%} probability)")
    return RateDecision(
        "pending", evidence, threshold, power, dark_rate, active_rate, dark_ci, active_ci,
        f"pending: {shown} ({allowed}; {evidence_text}); not enough seen yet to catch a "
        f"x{test.detect:g} regression ({power:.0%} probability, need {test.power:.0%})")


# -- histograms --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts: `counts[i]` requests took at most `bounds[i]` seconds.

    `bounds` is sorted and ends with +Inf, so `counts[-1]` is the total.
    """

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @property
    def total(self) -> float:
        """All requests counted."""
        return self.counts[-1] if self.counts else 0.0

    def slower_than(self, bound: float) -> float:
        """Requests that took longer than the finite bucket boundary `bound`."""
        index = self.bounds.index(bound)
        return max(self.total - self.counts[index], 0.0)


def histogram_from_buckets(buckets: Sequence[tuple[float, float]]) -> Histogram:
    """Build a Histogram from (le, cumulative count) pairs; raise ValueError if unusable.

    Counts are made monotone (Prometheus' increase() of separate bucket series can cross by
    a fraction of a request).
    """
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        raise ValueError("histogram has no +Inf bucket (is the metric a histogram?)")
    bounds = tuple(le for le, _ in ordered)
    if len(set(bounds)) != len(bounds):
        raise ValueError("histogram has duplicate bucket boundaries")
    counts: list[float] = []
    for _, count in ordered:
        value = count if math.isfinite(count) else 0.0
        counts.append(max(value, counts[-1] if counts else 0.0))
    return Histogram(bounds=bounds, counts=tuple(counts))


def quantile_at_rank(hist: Histogram, rank: float) -> float:
    """The latency at `rank` (0..total) by linear interpolation inside the bucket, as PromQL's
    histogram_quantile does (the +Inf bucket answers its lower boundary)."""
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in zip(hist.bounds, hist.counts, strict=True):
        if count >= rank and count > previous_count:
            if math.isinf(bound):
                return previous_bound
            share = (rank - previous_count) / (count - previous_count)
            return previous_bound + (bound - previous_bound) * min(max(share, 0.0), 1.0)
        previous_bound, previous_count = (bound if math.isfinite(bound) else previous_bound,
                                          count)
    return previous_bound


def quantile_interval(
    hist: Histogram, q: float, confidence: float
) -> tuple[float, float, float]:
    """(estimate, low, high) of the q-quantile: the order statistics whose ranks bound the
    true quantile's rank with `confidence` (binomial ranks), read off the histogram."""
    from scipy.stats import binom

    total = hist.total
    if total <= 0:
        return (math.nan, math.nan, math.nan)
    n = max(round(total), 1)
    tail = (1.0 - confidence) / 2.0
    low_rank = float(binom.ppf(tail, n, q))
    high_rank = min(float(binom.ppf(1.0 - tail, n, q)) + 1.0, float(n))
    scale = total / n
    return (quantile_at_rank(hist, q * total), quantile_at_rank(hist, low_rank * scale),
            quantile_at_rank(hist, high_rank * scale))


def pooled_boundary(dark: Histogram, active: Histogram, q: float) -> float:
    """The finite bucket boundary the latency test counts requests above: the largest one at
    or below the pooled q-quantile (else the smallest). Pooled, so that neither namespace's
    own noise chooses it; below the quantile, so that more requests are counted."""
    if dark.bounds != active.bounds:
        raise ValueError("the two namespaces' histograms have different bucket boundaries")
    pooled = Histogram(dark.bounds, tuple(d + a for d, a in zip(dark.counts, active.counts,
                                                                strict=True)))
    finite = [b for b in pooled.bounds if math.isfinite(b)]
    if not finite:
        raise ValueError("histogram has no finite bucket boundary")
    value = quantile_at_rank(pooled, q * pooled.total)
    below = [b for b in finite if b <= value + 1e-12]
    return below[-1] if below else finite[0]


@dataclass(frozen=True)
class LatencyDecision:
    """A latency comparison: the rate decision on slow requests plus quantile estimates."""

    rate: RateDecision
    boundary: float
    dark_quantile: tuple[float, float, float]
    active_quantile: tuple[float, float, float]
    reason: str

    @property
    def outcome(self) -> Outcome:
        """fail / pass / pending, from the rate of slow requests."""
        return self.rate.outcome


def compare_latency(
    dark: Histogram, active: Histogram, *, q: float, test: RateTest
) -> LatencyDecision:
    """Is the dark's latency shifted up? Compares the share of requests slower than
    `pooled_boundary` as a rate (same three outcomes), and reports both q-quantiles."""
    boundary = pooled_boundary(dark, active, q)
    rate = compare_rates(dark.slower_than(boundary), dark.total, active.slower_than(boundary),
                         active.total, test, what=f"slower than {_seconds(boundary)}")
    dq = quantile_interval(dark, q, test.confidence)
    aq = quantile_interval(active, q, test.confidence)
    label = f"p{q * 100:g}"
    quantiles = (f"{label} {_seconds(dq[0])} [{_seconds(dq[1])}, {_seconds(dq[2])}] vs active "
                 f"{_seconds(aq[0])} [{_seconds(aq[1])}, {_seconds(aq[2])}]")
    head, _, tail = rate.reason.partition(": ")
    return LatencyDecision(rate, boundary, dq, aq, f"{head}: {quantiles}; {tail}")


# -- formatting --------------------------------------------------------------------------------


def _pct(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value * 100:.3g}%"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3g} s"


def _evalue(value: float) -> str:
    return f"{value:.3g}" if value < 1e6 else f"{value:.1e}"
