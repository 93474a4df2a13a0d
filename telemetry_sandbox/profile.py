"""TrafficProfile: what one namespace's services are doing (rate, errors, latency, log volume).

Tests state intent ("green serves 5 % errors at p99 800 ms") and the synthetic exporters
turn it into metrics and logs; the profile validates early so a typo fails at set time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from telemetry_sandbox.latency import DEFAULT_BUCKETS, LatencyDistribution

__all__ = ["TrafficProfile", "weighted_choice"]


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class TrafficProfile:
    """Traffic shape of one namespace.

    rps: requests per second (virtual for SyntheticFleet); 0 stops the counters.
    error_ratio: share of requests answered with one of `error_statuses` (5xx).
    latency_p50_s / latency_p99_s: what histogram_quantile(0.5/0.99) should return.
    success_statuses / error_statuses / methods / services: relative weights of label values.
    info_log_rps: INFO access-log lines per second (sampled, capped by the success rate).
    error_log_share: share of failed requests that write an ERROR or Exception log line.
    max_log_lines_per_s: cap on generated log lines per second (per kind).
    """

    rps: float = 10.0
    error_ratio: float = 0.0
    latency_p50_s: float = 0.05
    latency_p99_s: float = 0.25
    success_statuses: Mapping[str, float] = field(
        default_factory=lambda: _frozen({"200": 0.9, "201": 0.05, "404": 0.05})
    )
    error_statuses: Mapping[str, float] = field(
        default_factory=lambda: _frozen({"500": 0.7, "503": 0.3})
    )
    methods: Mapping[str, float] = field(default_factory=lambda: _frozen({"GET": 0.9, "POST": 0.1}))
    services: Mapping[str, float] = field(default_factory=lambda: _frozen({"api": 1.0}))
    info_log_rps: float = 1.0
    error_log_share: float = 1.0
    max_log_lines_per_s: float = 50.0

    def __post_init__(self) -> None:
        _require(math.isfinite(self.rps) and self.rps >= 0, f"rps must be >= 0, got {self.rps}")
        _require(
            0.0 <= self.error_ratio <= 1.0, f"error_ratio must be in [0, 1]: {self.error_ratio}"
        )
        _require(self.info_log_rps >= 0, "info_log_rps must be >= 0")
        _require(0.0 <= self.error_log_share <= 1.0, "error_log_share must be in [0, 1]")
        _require(self.max_log_lines_per_s >= 0, "max_log_lines_per_s must be >= 0")
        for name in ("success_statuses", "error_statuses", "methods", "services"):
            weights = getattr(self, name)
            _require(bool(weights), f"{name} must not be empty")
            _require(
                all(w >= 0 for w in weights.values()) and sum(weights.values()) > 0,
                f"{name} weights must be >= 0 and not all zero: {dict(weights)}",
            )
            object.__setattr__(self, name, _frozen(weights))
        for status in (*self.success_statuses, *self.error_statuses):
            _require(status.isdigit() and len(status) == 3, f"bad HTTP status {status!r}")
        # Validates p50/p99 eagerly.
        _ = self.distribution

    @cached_property
    def distribution(self) -> LatencyDistribution:
        """Latency bucket fractions for the default buckets."""
        return LatencyDistribution.from_quantiles(
            self.latency_p50_s, self.latency_p99_s, DEFAULT_BUCKETS
        )

    def replace(self, **fields: Any) -> TrafficProfile:
        """Copy with some fields changed (validated again)."""
        unknown = set(fields) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown TrafficProfile fields: {sorted(unknown)}")
        return dataclasses.replace(self, **fields)

    def shares(self, *, errors: bool) -> dict[tuple[str, str, str], float]:
        """Normalised weight of each (service, method, status) among successes or errors."""
        statuses = self.error_statuses if errors else self.success_statuses
        total = sum(self.services.values()) * sum(self.methods.values()) * sum(statuses.values())
        return {
            (service, method, status): s_weight * m_weight * st_weight / total
            for service, s_weight in self.services.items()
            for method, m_weight in self.methods.items()
            for status, st_weight in statuses.items()
        }


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def weighted_choice(weights: Mapping[str, float], u: float) -> str:
    """Deterministic weighted pick for a point `u` in [0, 1) (no randomness in the sandbox)."""
    total = sum(weights.values())
    running = 0.0
    for name, weight in weights.items():
        running += weight / total
        if u < running:
            return name
    return list(weights)[-1]
