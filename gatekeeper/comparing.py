"""A rule's sequential count comparison applied to two measurements (pure, no I/O).

Reads the counts a source put in `Measurement.counts` (see gatekeeper.measurements), builds
the test from the rule's `rate` or `latency` section and returns the outcome with its reason.
The statistics live in gatekeeper.sequential.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gatekeeper import sequential
from gatekeeper.rules import LatencyComparison, RateComparison, Rule

BASELINE = "baseline."
"""Prefix of the counts taken over the rule's `baseline_window` (used for the active side)."""


def rate_test(spec: RateComparison | LatencyComparison) -> sequential.RateTest:
    """The statistical test a rule section describes."""
    return sequential.RateTest(
        allowed_ratio=spec.allowed_ratio,
        allowed_margin=spec.allowed_margin,
        confidence=spec.confidence,
        detect=spec.detect,
        power=spec.power,
    )


def target_text(rule: Rule) -> str:
    """Human text of what the dark must show, e.g. `5xx share <= x1.5 active (99%)`."""
    spec = rule.count_comparison
    if spec is None:
        return ""
    margin = f" or +{spec.allowed_margin * 100:g} pp" if spec.allowed_margin else ""
    what = "rate" if isinstance(spec, RateComparison) else (
        f"share slower than the p{spec.quantile * 100:g} boundary")
    return f"{what} <= x{spec.allowed_ratio:g} active{margin} ({spec.confidence:.0%} anytime)"


def _side(counts: Mapping[str, float], baseline: bool) -> dict[str, float]:
    """The counts of one span: the judged span, or the baseline window when asked and present."""
    if baseline and any(key.startswith(BASELINE) for key in counts):
        return {key[len(BASELINE):]: value for key, value in counts.items()
                if key.startswith(BASELINE)}
    return {key: value for key, value in counts.items() if not key.startswith(BASELINE)}


def histogram(counts: Mapping[str, float]) -> sequential.Histogram:
    """`le:<bound>` counts as a Histogram; ValueError when there are none or they are bad."""
    buckets = []
    for key, value in counts.items():
        if key.startswith("le:"):
            try:
                bound = float(key[3:])
            except ValueError as exc:
                raise ValueError(f"bad bucket boundary le={key[3:]!r}") from exc
            buckets.append((bound, value))
    if not buckets:
        raise ValueError("no histogram buckets (is the metric a histogram with an `le` label?)")
    return sequential.histogram_from_buckets(buckets)


def compare(
    rule: Rule, dark: Mapping[str, float], active: Mapping[str, float]
) -> tuple[sequential.Outcome, str, dict[str, Any]]:
    """(outcome, reason, details) of the dark's counts against the active's.

    The active side uses its baseline-window counts when the source took them. Raises
    ValueError when the counts cannot be compared (missing, not a histogram).
    """
    dark_counts, active_counts = _side(dark, baseline=False), _side(active, baseline=True)
    if rule.rate is not None:
        test = rate_test(rule.rate)
        try:
            args = (dark_counts["bad"], dark_counts["total"], active_counts["bad"],
                    active_counts["total"])
        except KeyError as exc:
            raise ValueError(f"no count of {exc.args[0]} events") from exc
        if not all(math.isfinite(v) for v in args):
            raise ValueError("a count is NaN or infinite")
        decision = sequential.compare_rates(*args, test, what="rate")
        details = _rate_details(decision)
        return decision.outcome, decision.reason, details
    if rule.latency is None:
        raise ValueError(f"rule '{rule.name}' has no count comparison")
    test = rate_test(rule.latency)
    latency = sequential.compare_latency(histogram(dark_counts), histogram(active_counts),
                                         q=rule.latency.quantile, test=test)
    details = _rate_details(latency.rate)
    details.update(boundary=latency.boundary,
                   dark_quantile=[_finite(v) for v in latency.dark_quantile],
                   active_quantile=[_finite(v) for v in latency.active_quantile])
    return latency.outcome, latency.reason, details


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: such figures are shown as null."""
    return value if math.isfinite(value) else None


def _rate_details(decision: sequential.RateDecision) -> dict[str, Any]:
    return {
        "outcome": decision.outcome,
        "e_value": _finite(decision.e_value),
        "reject_at": decision.threshold,
        "power": decision.power,
        "dark_rate": _finite(decision.dark_rate),
        "active_rate": _finite(decision.active_rate),
        "dark_interval": list(decision.dark_interval),
        "active_interval": list(decision.active_interval),
    }
