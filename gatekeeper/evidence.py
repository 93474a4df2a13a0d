"""How much evidence backs the dark's verdict: per rule, the samples (requests, lines, pods) its
source reported in the judged span, and what to do when there are too few. Derived from the
verdict already made; no queries of its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatekeeper.criteria import format_number
from gatekeeper.durations import promql_duration
from gatekeeper.measurements import RuleResult, Verdict

ADVICE = "enable load or mirroring for the dark"


def advice(load_rate: float | None) -> str:
    """What to do about too little evidence: enable load, or (when the pair already sends
    `load_rate` requests/s) raise it or look at why the dark's metrics miss them."""
    if load_rate is None:
        return ADVICE
    return (f"the pair's load sends {format_number(load_rate)} requests/s while the dark "
            "validates and is Ready: raise load.rate, or check that the dark's metrics are "
            "scraped and count those requests")


def _lacking(result: RuleResult) -> bool:
    if result.status == "no_data":
        return result.details.get("no_data_policy") != "ignore"
    return bool(result.min_samples) and (result.samples or 0) < result.min_samples


def _hint(result: RuleResult, window: float, todo: str) -> str:
    span = promql_duration(window)
    unit = "requests" if result.source == "prometheus" else "samples"
    if result.samples is not None:
        minimum = (f" (minimum {format_number(result.min_samples)})"
                   if result.min_samples else "")
        return (f"{result.rule}: dark served {format_number(result.samples)} {unit} in "
                f"{span}{minimum}: {todo}")
    return f"{result.rule}: no data for the dark in {span} ({result.reason}): {todo}, " \
           f"or fix the {result.source or 'source'}"


def dark_evidence(verdict: Verdict | None, windows: Mapping[str, float],
                  default_window: float, *, todo: str = ADVICE) -> dict[str, Any]:
    """Per rule of the dark: source, status, samples seen and the rule's minimum; `enough` is
    False when a rule that decides lacks data or samples, and `hint` then says what to do
    (`todo`: `advice(...)`). `windows` maps a rule to its judged span (else
    `default_window`)."""
    if verdict is None:
        return {"enough": False, "rules": [], "hint": "not evaluated yet"}
    rules = []
    hints = []
    for result in verdict.candidate.results:
        window = windows.get(result.rule, default_window)
        lacking = _lacking(result)
        rules.append({"rule": result.rule, "source": result.source, "status": result.status,
                      "samples": result.samples, "min_samples": result.min_samples,
                      "window": window, "enough": not lacking})
        if lacking:
            hints.append(_hint(result, window, todo))
    return {"enough": not hints, "rules": rules, "hint": "; ".join(hints) or None}
