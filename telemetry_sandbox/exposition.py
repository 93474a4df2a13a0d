"""Prometheus text exposition (format 0.0.4) for the two HTTP metric families the apps export.

Hand-written instead of prometheus_client because the fleet's values are computed from
virtual time rather than incremented, and both exporters must emit identical shapes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CONTENT_TYPE",
    "DURATION_HELP",
    "DURATION_METRIC",
    "REQUESTS_HELP",
    "REQUESTS_METRIC",
    "CounterSample",
    "HistogramSample",
    "HistogramState",
    "render_counter_family",
    "render_histogram_family",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUESTS_METRIC = "http_requests_total"
REQUESTS_HELP = "HTTP requests served, by namespace, service, method and status code."
DURATION_METRIC = "http_request_duration_seconds"
DURATION_HELP = "HTTP request latency in seconds, by namespace and service."


@dataclass(frozen=True)
class CounterSample:
    """One counter series."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class HistogramSample:
    """One histogram series: cumulative counts at each finite bound, then sum and count."""

    labels: Mapping[str, str]
    bounds: Sequence[float]
    cumulative: Sequence[float]
    sum: float
    count: float


@dataclass
class HistogramState:
    """Observation counts for real requests (SyntheticApp); not thread-safe by itself."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        """Record one latency."""
        self.total += value
        self.observations += 1
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
                break

    def sample(self, labels: Mapping[str, str]) -> HistogramSample:
        """Snapshot with cumulative bucket counts."""
        cumulative: list[float] = []
        running = 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        return HistogramSample(labels, self.bounds, cumulative, self.total, self.observations)


def format_value(value: float) -> str:
    """Integers without a decimal point, floats with repr precision, +Inf/-Inf/NaN spelled out."""
    if type(value) is int:
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def format_labels(labels: Mapping[str, str]) -> str:
    """`{a="x",b="y"}` with the text format's escaping."""
    inner = _inner(tuple(labels.items())) if labels else ""
    return "{" + inner + "}" if inner else ""


@functools.lru_cache(maxsize=1 << 18)
def _inner(items: tuple[tuple[str, str], ...]) -> str:
    """`a="x",b="y"`: a fleet renders the same label sets at every scrape (a 5,000-pair
    fleet, 240,000 lines a scrape, spent most of its time escaping them)."""
    return ",".join(f'{name}="{_escape(str(value))}"' for name, value in items)


@functools.lru_cache(maxsize=64)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return tuple(repr(float(bound)) for bound in bounds)  # "1.0" as prometheus_client


def render_counter_family(name: str, help_text: str, samples: Iterable[CounterSample]) -> str:
    """HELP/TYPE header plus one line per series."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f"{name}{format_labels(s.labels)} {format_value(s.value)}" for s in samples]
    return "\n".join(lines) + "\n"


def render_histogram_family(name: str, help_text: str, samples: Iterable[HistogramSample]) -> str:
    """HELP/TYPE header plus _bucket (with le, ending at +Inf), _sum and _count per series."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for sample in samples:
        inner = _inner(tuple(sample.labels.items())) if sample.labels else ""
        bucket = f"{name}_bucket{{{inner},le=" if inner else f"{name}_bucket{{le="
        les = _le_values(tuple(sample.bounds))
        for le, count in zip(les, sample.cumulative, strict=True):
            lines.append(f'{bucket}"{le}"}} {format_value(count)}')
        lines.append(f'{bucket}"+Inf"}} {format_value(sample.count)}')
        labels = "{" + inner + "}" if inner else ""
        lines.append(f"{name}_sum{labels} {format_value(sample.sum)}")
        lines.append(f"{name}_count{labels} {format_value(sample.count)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
