"""Virtual traffic of one namespace: integer request counters advanced by elapsed time x rps.

No requests are sent. Fractional expectations accumulate and integer counters follow them
within one request, so the exported 5xx ratio equals the configured ratio to within one
request per scrape, and the latency histogram matches the profile's p50/p99. Everything is
deterministic (no randomness), so tests can state exact expectations.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from telemetry_sandbox.exposition import CounterSample, HistogramSample
from telemetry_sandbox.latency import DEFAULT_BUCKETS, golden_sequence
from telemetry_sandbox.loglines import access_line, error_line, exception_line
from telemetry_sandbox.profile import TrafficProfile, weighted_choice

__all__ = ["API_PATHS", "VirtualTraffic"]

API_PATHS = (
    "/api/franchises/lsu-tigers",
    "/api/franchises",
    "/api/franchises/lsu-tigers/schedule",
    "/api/standings",
)
_MAX_LOG_LINES_PER_ADVANCE = 1000

Key = tuple[str, str, str]
"""(service, method, status)."""


def _round(value: float) -> int:
    """Round half up: monotone in `value`, so counters never go backwards."""
    return math.floor(value + 0.5)


class _Group:
    """Integer counts of one request class (errors or successes) split across label sets."""

    def __init__(self) -> None:
        self.expected = 0.0
        self.total = 0
        self.targets: dict[Key, float] = defaultdict(float)
        self.counts: dict[Key, int] = defaultdict(int)

    def advance(self, amount: float, shares: Mapping[Key, float]) -> dict[Key, int]:
        """Add `amount` expected requests; return the integer increments per label set."""
        for key in shares:
            self.counts[key] += 0  # materialise zero series so they exist from the start
        self.expected += amount
        for key, share in shares.items():
            self.targets[key] += amount * share
        units = _round(self.expected) - self.total
        if units <= 0:
            return {}
        self.total += units
        return _allocate(self.counts, self.targets, units)


def _allocate(counts: dict[Key, int], targets: Mapping[Key, float], units: int) -> dict[Key, int]:
    """Hand out `units` to the label sets furthest behind their target (largest remainder).

    Each count only grows and stays within about one of its target, and the counts add up
    to the group's total exactly.
    """
    increments = {key: max(0, math.floor(targets[key]) - counts[key]) for key in targets}
    assigned = sum(increments.values())

    def deficit(key: Key) -> float:
        return targets[key] - counts[key] - increments[key]

    if assigned > units:  # rounding overshoot: take back from the most over-served
        excess = assigned - units
        for key in sorted(increments, key=deficit):
            take = min(excess, increments[key])
            increments[key] -= take
            excess -= take
            if excess == 0:
                break
    else:
        for _ in range(units - assigned):
            increments[max(increments, key=deficit)] += 1
    for key, increment in increments.items():
        counts[key] += increment
    return {key: inc for key, inc in increments.items() if inc}


class VirtualTraffic:
    """Cumulative counters, histogram and log lines of one namespace."""

    def __init__(
        self,
        namespace: str,
        profile: TrafficProfile,
        *,
        now: float,
        bounds: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.namespace = namespace
        self.profile = profile
        self.bounds = bounds
        self._last = now
        self._errors = _Group()
        self._successes = _Group()
        self._bucket_expected: dict[str, list[float]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)
        self._info_due = 0.0
        self._error_log_due = 0.0
        self._seq = 0
        self._touch_services()

    # -- time -------------------------------------------------------------------------------

    def advance(self, now: float, wall: float, *, logs: bool = True) -> list[str]:
        """Account for the traffic between the last call and `now`; return new log lines."""
        elapsed = now - self._last
        if elapsed <= 0:
            return []
        self._last = now
        profile = self.profile
        requests = profile.rps * elapsed
        failed = requests * profile.error_ratio
        per_service: dict[str, int] = defaultdict(int)
        for errors, amount in ((True, failed), (False, requests - failed)):
            group = self._errors if errors else self._successes
            for (service, _method, _status), inc in group.advance(
                amount, profile.shares(errors=errors)
            ).items():
                per_service[service] += inc
        self._observe(per_service)
        return self._log_lines(elapsed, wall) if logs else []

    def set_profile(self, profile: TrafficProfile, now: float, wall: float) -> list[str]:
        """Finish the elapsed time under the old profile, then switch."""
        lines = self.advance(now, wall)
        self.profile = profile
        self._touch_services()
        self._errors.advance(0.0, profile.shares(errors=True))
        self._successes.advance(0.0, profile.shares(errors=False))
        return lines

    # -- snapshots --------------------------------------------------------------------------

    def counter_samples(self) -> list[CounterSample]:
        """`http_requests_total` series of this namespace."""
        merged = {**self._successes.counts, **self._errors.counts}
        return [
            CounterSample(
                {"namespace": self.namespace, "service": s, "method": m, "status": st},
                merged[(s, m, st)],
            )
            for s, m, st in sorted(merged)
        ]

    def histogram_samples(self) -> list[HistogramSample]:
        """`http_request_duration_seconds` series, one per service."""
        samples = []
        for service in sorted(self._bucket_expected):
            count = self._count[service]
            cumulative = [min(count, _round(x)) for x in self._bucket_expected[service]]
            samples.append(
                HistogramSample(
                    {"namespace": self.namespace, "service": service},
                    self.bounds,
                    cumulative,
                    round(self._sum[service], 6),
                    count,
                )
            )
        return samples

    def totals_by_status(self) -> dict[str, int]:
        """Requests served so far, by status code."""
        totals: dict[str, int] = defaultdict(int)
        for group in (self._successes, self._errors):
            for (_service, _method, status), count in group.counts.items():
                totals[status] += count
        return dict(totals)

    # -- internals --------------------------------------------------------------------------

    def _touch_services(self) -> None:
        for service in self.profile.services:
            self._bucket_expected.setdefault(service, [0.0] * len(self.bounds))
            self._count[service] += 0

    def _observe(self, per_service: Mapping[str, int]) -> None:
        distribution = self.profile.distribution
        mean = distribution.mean()
        for service, requests in per_service.items():
            expected = self._bucket_expected.setdefault(service, [0.0] * len(self.bounds))
            for index, fraction in enumerate(distribution.cumulative):
                expected[index] += requests * fraction
            self._sum[service] += requests * mean
            self._count[service] += requests

    def _log_lines(self, elapsed: float, wall: float) -> list[str]:
        profile = self.profile
        cap = profile.max_log_lines_per_s
        error_rps = profile.rps * profile.error_ratio
        self._info_due += elapsed * min(profile.info_log_rps, profile.rps - error_rps, cap)
        self._error_log_due += elapsed * min(error_rps * profile.error_log_share, cap)
        n_info, n_error = math.floor(self._info_due), math.floor(self._error_log_due)
        self._info_due -= n_info
        self._error_log_due -= n_error
        n_info = min(n_info, _MAX_LOG_LINES_PER_ADVANCE)
        n_error = min(n_error, _MAX_LOG_LINES_PER_ADVANCE)
        events = [(i / max(n_info, 1), False) for i in range(n_info)]
        events += [(i / max(n_error, 1), True) for i in range(n_error)]
        events.sort()
        return [
            self._line(wall - elapsed * (1.0 - position), failed) for position, failed in events
        ]

    def _line(self, wall: float, failed: bool) -> str:
        profile = self.profile
        self._seq += 1
        seq = self._seq
        u = golden_sequence(seq)
        service = weighted_choice(profile.services, u)
        method = weighted_choice(profile.methods, golden_sequence(seq * 7))
        path = API_PATHS[seq % len(API_PATHS)]
        latency = profile.distribution.sample(golden_sequence(seq * 3))
        if not failed:
            status = int(weighted_choice(profile.success_statuses, golden_sequence(seq * 5)))
            return access_line(wall, service, method, path, status, latency, seq)
        if seq % 3 == 0:
            return exception_line(wall, service, method, path, seq)
        status = int(weighted_choice(profile.error_statuses, golden_sequence(seq * 5)))
        return error_line(wall, service, method, path, status, latency, seq)
