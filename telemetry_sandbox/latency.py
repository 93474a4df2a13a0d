"""Deterministic latency distributions that PromQL's histogram_quantile reads back exactly.

Tests say "green's p99 is 800 ms" and expect `histogram_quantile(0.99, ...)` to answer
0.8, not "somewhere in the 0.5-1 s bucket". So the cumulative bucket fractions are shaped
like a log-normal (median p50, 99th percentile p99), then corrected in the buckets that
hold p50 and p99 so that Prometheus' linear interpolation inside those buckets lands on the
configured values. When p50 and p99 are too close for the bucket layout to express both,
p99 wins (it is what release gates usually check).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from statistics import NormalDist

__all__ = [
    "DEFAULT_BUCKETS",
    "LatencyDistribution",
    "golden_sequence",
    "histogram_quantile",
]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the finite buckets; `+Inf` is implicit."""

_NORMAL = NormalDist()
_Z99 = _NORMAL.inv_cdf(0.99)
_MIN_SIGMA = 1e-3
_EPS = 1e-12
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_Cdf = Callable[[float], float]


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float:
    """Prometheus' bucketQuantile: `cumulative` holds counts at `bounds` plus the +Inf count."""
    if len(cumulative) != len(bounds) + 1:
        raise ValueError("cumulative needs one count per finite bound plus the +Inf count")
    total = cumulative[-1]
    if total <= 0 or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * total
    index = next((i for i, count in enumerate(cumulative[:-1]) if count >= rank), len(bounds))
    if index == len(bounds):
        return bounds[-1]
    start, below = (0.0, 0.0) if index == 0 else (bounds[index - 1], cumulative[index - 1])
    in_bucket = cumulative[index] - below
    if in_bucket <= 0:
        return bounds[index]
    return start + (bounds[index] - start) * (rank - below) / in_bucket


def golden_sequence(index: int) -> float:
    """Low-discrepancy points in [0, 1): deterministic, yet evenly spread after a few dozen."""
    return (index * _GOLDEN) % 1.0


@dataclass(frozen=True)
class LatencyDistribution:
    """Cumulative share of requests at or below each bucket bound, for a given p50/p99."""

    p50_s: float
    p99_s: float
    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def from_quantiles(
        cls, p50_s: float, p99_s: float, bounds: Sequence[float] = DEFAULT_BUCKETS
    ) -> LatencyDistribution:
        """Build the bucket fractions for the configured median and 99th percentile."""
        if not 0 < p50_s <= p99_s:
            raise ValueError(f"need 0 < p50 <= p99, got p50={p50_s} p99={p99_s}")
        ordered = tuple(float(bound) for bound in bounds)
        if not ordered or any(b <= a for a, b in pairwise(ordered)):
            raise ValueError("bucket bounds must be increasing")
        if ordered[0] <= 0:
            raise ValueError("bucket bounds must be positive")
        return cls(p50_s, p99_s, ordered, _fractions(p50_s, p99_s, ordered))

    def quantile(self, q: float) -> float:
        """What histogram_quantile(q) answers for this distribution."""
        return histogram_quantile(q, self.bounds, (*self.cumulative, 1.0))

    def sample(self, u: float) -> float:
        """Latency for a uniform point `u` in [0, 1): inverse CDF, tail past the last bound."""
        last = self.cumulative[-1]
        if u <= last:
            return self.quantile(u)
        tail = (u - last) / max(1.0 - last, _EPS)
        return self.bounds[-1] * (1.0 + tail)

    def mean(self) -> float:
        """Mean latency: bucket midpoints weighted by bucket mass (feeds `_sum`)."""
        total = 0.0
        lower, below = 0.0, 0.0
        for bound, fraction in zip(self.bounds, self.cumulative, strict=True):
            total += (fraction - below) * (lower + bound) / 2.0
            lower, below = bound, fraction
        return total + (1.0 - below) * self.bounds[-1] * 1.5


def _fractions(p50: float, p99: float, bounds: tuple[float, ...]) -> tuple[float, ...]:
    """Cumulative fractions at each finite bound (see the module docstring)."""
    sigma = max(math.log(p99 / p50) / _Z99, _MIN_SIGMA)

    def lognormal(x: float) -> float:
        if x <= 0:
            return 0.0
        if math.isinf(x):
            return 1.0
        return _NORMAL.cdf((math.log(x) - math.log(p50)) / sigma)

    anchors = _anchors(p50, p99, bounds, lognormal)
    anchors[-1] = 0.0
    anchors[len(bounds)] = 1.0
    positions = sorted(anchors)
    values: list[float] = []
    for index in range(len(bounds)):
        if index in anchors:
            values.append(anchors[index])
            continue
        right = positions[bisect_left(positions, index)]
        left = positions[bisect_left(positions, index) - 1]
        f_left, f_right = anchors[left], anchors[right]
        l_left = lognormal(_bound(left, bounds))
        l_right = lognormal(_bound(right, bounds))
        if l_right - l_left > _EPS:
            share = (lognormal(bounds[index]) - l_left) / (l_right - l_left)
        else:
            share = (index - left) / (right - left)
        values.append(f_left + (f_right - f_left) * share)
    # Guard against rounding noise: monotone and within [0, 1].
    clean: list[float] = []
    for value in values:
        clean.append(min(1.0, max(clean[-1] if clean else 0.0, value)))
    return tuple(clean)


def _bound(index: int, bounds: tuple[float, ...]) -> float:
    """Bound at `index`, with -1 meaning 0 and len(bounds) meaning +Inf."""
    if index < 0:
        return 0.0
    if index >= len(bounds):
        return math.inf
    return bounds[index]


@dataclass(frozen=True)
class _Target:
    q: float
    bucket: int  # index of the bucket's upper bound
    t: float  # relative position of the value inside the bucket, in (0, 1]

    @property
    def first(self) -> bool:
        return self.bucket == 0

    def caps(self) -> float:
        """Largest bucket mass that keeps F(lower) >= 0 and F(upper) <= 1."""
        cap = self.q / self.t
        if self.t < 1.0:
            cap = min(cap, (1.0 - self.q) / (1.0 - self.t))
        return cap


def _locate(q: float, value: float, bounds: tuple[float, ...]) -> _Target | None:
    """The bucket holding `value`, or None when it falls into the +Inf bucket."""
    index = bisect_left(bounds, value)
    if index == len(bounds):
        return None
    lower = bounds[index - 1] if index > 0 else 0.0
    return _Target(q, index, (value - lower) / (bounds[index] - lower))


def _single(target: _Target, bounds: tuple[float, ...], lognormal: _Cdf) -> tuple[float, float]:
    """(F(lower), F(upper)) putting quantile q exactly at the target value."""
    if target.first:  # the first bucket starts at 0 with nothing below it
        return 0.0, min(1.0, target.q / target.t)
    lower = bounds[target.bucket - 1]
    mass = lognormal(bounds[target.bucket]) - lognormal(lower)
    mass = max(min(mass, target.caps()), _EPS)
    f_lower = max(0.0, target.q - target.t * mass)
    return f_lower, min(1.0, f_lower + mass)


def _anchors(
    p50: float, p99: float, bounds: tuple[float, ...], lognormal: _Cdf
) -> dict[int, float]:
    """Fixed F values at bound indices (-1 is the implicit 0 bound)."""
    median = _locate(0.5, p50, bounds)
    tail = _locate(0.99, p99, bounds)
    if tail is None:
        if median is None:
            return {}
        return _as_anchors(median, _single(median, bounds, lognormal))
    p99_only = _as_anchors(tail, _single(tail, bounds, lognormal))
    if median is None:
        return p99_only
    if median.bucket == tail.bucket:
        return _same_bucket(median, tail) or _spread(tail, p99_only)
    exact = _two_buckets(median, tail, bounds, lognormal)
    if exact is not None:
        return exact
    f_between = (tail.q - tail.t) / (1.0 - tail.t) if tail.t < 1.0 else -1.0
    if tail.bucket == median.bucket + 1 and f_between >= median.q:
        # Too narrow for both: put as little mass below p50's bucket as p99 allows.
        anchors = {median.bucket: f_between, tail.bucket: 1.0}
        if not median.first:
            anchors[median.bucket - 1] = 0.0
        return anchors
    return p99_only


def _spread(tail: _Target, p99_only: dict[int, float]) -> dict[int, float]:
    """p50 shares p99's bucket but cannot be exact: widen the bucket's mass as far as the
    exact p99 allows, which brings the interpolated p50 closest to the configured one."""
    if tail.first:
        return p99_only
    f_upper = min(1.0, tail.q / tail.t)
    f_lower = max(0.0, (tail.q - f_upper * tail.t) / (1.0 - tail.t)) if tail.t < 1.0 else 0.0
    return {tail.bucket - 1: f_lower, tail.bucket: f_upper}


def _as_anchors(target: _Target, values: tuple[float, float]) -> dict[int, float]:
    anchors = {target.bucket: values[1]}
    if not target.first:
        anchors[target.bucket - 1] = values[0]
    return anchors


def _same_bucket(median: _Target, tail: _Target) -> dict[int, float] | None:
    """Both quantiles in one bucket: two equations fix F(lower) and F(upper), if feasible."""
    if median.first or tail.t - median.t <= _EPS:
        return None
    mass = (tail.q - median.q) / (tail.t - median.t)
    f_lower = median.q - median.t * mass
    f_upper = f_lower + mass
    if f_lower < -_EPS or f_upper > 1.0 + _EPS:
        return None
    return {median.bucket - 1: max(0.0, f_lower), median.bucket: min(1.0, f_upper)}


def _two_buckets(
    median: _Target, tail: _Target, bounds: tuple[float, ...], lognormal: _Cdf
) -> dict[int, float] | None:
    """Different buckets: keep F(upper of p50 bucket) <= F(lower of p99 bucket), equal if
    the buckets are adjacent, by scaling the two bucket masses."""
    m_lower, m_upper = _single(median, bounds, lognormal)
    t_lower, t_upper = _single(tail, bounds, lognormal)
    adjacent = tail.bucket == median.bucket + 1
    if median.first:
        # F(upper of the median bucket) is forced; only the tail bucket's mass can move.
        room = tail.q - m_upper
        if room < -_EPS:
            return None
        tail_mass = t_upper - t_lower
        if adjacent or tail.t * tail_mass > room:
            tail_mass = room / tail.t
            if tail_mass > tail.caps() + _EPS:
                return None
        t_lower = tail.q - tail.t * tail_mass
        return {median.bucket: m_upper, tail.bucket - 1: t_lower, tail.bucket: t_lower + tail_mass}
    gap = tail.q - median.q
    above_median = (1.0 - median.t) * (m_upper - m_lower)  # mass above p50 in its bucket
    below_tail = tail.t * (t_upper - t_lower)  # mass below p99 in its bucket
    used = above_median + below_tail
    if used > gap or (adjacent and used < gap):
        if used > gap:
            scale = gap / used
            above_median *= scale
            below_tail *= scale
        else:
            missing = gap - used
            extra = min(tail.t * tail.caps() - below_tail, missing)
            below_tail += extra
            missing -= extra
            extra = min((1.0 - median.t) * median.caps() - above_median, missing)
            above_median += extra
            missing -= extra
            if missing > 1e-9:
                return None
    tail_mass = below_tail / tail.t
    anchors = {tail.bucket - 1: tail.q - below_tail, tail.bucket: tail.q - below_tail + tail_mass}
    if median.t < 1.0:
        median_mass = above_median / (1.0 - median.t)
        anchors[median.bucket - 1] = median.q - median.t * median_mass
        anchors[median.bucket] = median.q + above_median
    else:
        anchors[median.bucket] = median.q
        anchors.setdefault(median.bucket - 1, m_lower)
    if adjacent:
        anchors[median.bucket] = anchors[tail.bucket - 1]
    return anchors
