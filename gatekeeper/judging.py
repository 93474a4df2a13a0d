"""The judge: measurements + rules -> rule results -> namespace scores -> a verdict.

Pure functions, no I/O. Scores follow Keptn (full weight on pass, half on warning, none on
fail). The verdict fails closed: a rule that could not be evaluated makes the verdict `unknown`
unless the rules that were evaluated already make it `unsafe` whatever the missing ones say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from gatekeeper import comparing
from gatekeeper.criteria import Criterion, all_hold, format_number
from gatekeeper.measurements import (
    Grade,
    Measurement,
    NamespaceScore,
    RuleResult,
    RuleStatus,
    Verdict,
    VerdictName,
)
from gatekeeper.rules import Rule, RuleSet, ScoreThresholds
from gatekeeper.statistics import compare_samples

Role = Literal["candidate", "baseline"]
_STATUS_POINTS = {"pass": 1.0, "warning": 0.5, "fail": 0.0}


def _target_text(rule: Rule, baseline_value: float | None, role: Role) -> str:
    if rule.count_comparison is not None:
        return comparing.target_text(rule) if role == "candidate" else "reference"
    criteria = _applicable(rule.pass_criteria, role)
    parts = [c.describe(baseline_value) for c in criteria]
    if rule.compare is not None and role == "candidate":
        parts.append(f"no significant {rule.compare.direction} > x{rule.compare.allowed_effect:g}")
    return " and ".join(parts) if parts else "reference"


def _applicable(criteria: tuple[Criterion, ...], role: Role) -> tuple[Criterion, ...]:
    # The baseline is judged on its own health only: relative criteria compare against it.
    return criteria if role == "candidate" else tuple(c for c in criteria if not c.is_relative)


def _result(
    rule: Rule,
    namespace: str,
    status: RuleStatus,
    measurement: Measurement,
    reason: str,
    *,
    target: str,
    counted: bool,
    baseline_value: float | None = None,
    **details: object,
) -> RuleResult:
    return RuleResult(
        rule=rule.name,
        namespace=namespace,
        status=status,
        value=measurement.value,
        target=target,
        reason=reason,
        weight=rule.weight,
        key=rule.key,
        counted=counted,
        query=measurement.query,
        baseline_value=baseline_value,
        source=rule.source, samples=measurement.sample_count, min_samples=rule.min_samples,
        # What the source said about a value it measured (e.g. alerts suppressed, not counted).
        details={**({"measured": measurement.message}
                    if measurement.status == "ok" and measurement.message else {}), **details},
    )


def _said(measurement: Measurement) -> str:
    """What the source said about a value that misses its target (a failed probe's answer,
    a failed test Job's reason and log tail), so the verdict's reason explains the miss."""
    return f": {measurement.message}" if measurement.message else ""


def _missing(
    rule: Rule, namespace: str, measurement: Measurement, why: str, target: str,
    baseline_value: float | None,
) -> RuleResult:
    """Apply the rule's no-data policy."""
    policy = rule.no_data
    if policy == "fail":
        return _result(rule, namespace, "fail", measurement, f"{why} (no_data policy: fail)",
                       target=target, counted=True, baseline_value=baseline_value)
    if policy == "pass":
        return _result(rule, namespace, "pass", measurement, f"{why} (no_data policy: pass)",
                       target=target, counted=True, baseline_value=baseline_value)
    return _result(rule, namespace, "no_data", measurement, why, target=target, counted=False,
                   baseline_value=baseline_value, no_data_policy=policy)


def judge_rule(
    rule: Rule,
    namespace: str,
    measurement: Measurement,
    *,
    role: Role,
    baseline: Measurement | None = None,
) -> RuleResult:
    """Judge one rule for one namespace; `baseline` is the other namespace's measurement."""
    baseline_value = (
        baseline.value if baseline is not None and baseline.status == "ok" else None
    )
    target = _target_text(rule, baseline_value, role)
    if measurement.status == "error":
        return _result(rule, namespace, "error", measurement,
                       f"source error: {measurement.message}", target=target, counted=False,
                       baseline_value=baseline_value)
    if measurement.status == "no_data" or measurement.value is None:
        return _missing(rule, namespace, measurement, measurement.message or "no data", target,
                        baseline_value)
    value = measurement.value
    if not math.isfinite(value):
        return _missing(rule, namespace, measurement, f"value is {format_number(value)}", target,
                        baseline_value)
    if rule.count_comparison is not None:
        return _judge_counts(rule, namespace, measurement, role=role, baseline=baseline,
                             target=target, baseline_value=baseline_value)
    if rule.min_samples and (measurement.sample_count or 0) < rule.min_samples:
        return _missing(
            rule, namespace, measurement,
            f"only {format_number(measurement.sample_count or 0)} samples "
            f"(minimum {format_number(rule.min_samples)})",
            target, baseline_value,
        )

    comparison_note = ""
    if rule.compare is not None and role == "candidate":
        comparison = compare_samples(
            measurement.samples,
            baseline.samples if baseline is not None else (),
            confidence=rule.compare.confidence,
            direction=rule.compare.direction,
            allowed_effect=rule.compare.allowed_effect,
            min_samples=rule.compare.min_samples,
        )
        if comparison.outcome == "no_data":
            return _missing(rule, namespace, measurement, comparison.reason, target,
                            baseline_value)
        if comparison.outcome == "fail":
            return _result(rule, namespace, "fail", measurement, comparison.reason, target=target,
                           counted=True, baseline_value=baseline_value,
                           p_value=comparison.p_value, effect_ratio=comparison.effect_ratio)
        comparison_note = "; " + comparison.reason

    pass_criteria = _applicable(rule.pass_criteria, role)
    if not pass_criteria:
        if rule.compare is not None and role == "candidate":
            return _result(rule, namespace, "pass", measurement,
                           f"{format_number(value)}{comparison_note}", target=target,
                           counted=True, baseline_value=baseline_value)
        return _result(rule, namespace, "pass", measurement,
                       f"{format_number(value)} (reference for the relative comparison)",
                       target=target, counted=False, baseline_value=baseline_value)

    below_floor = rule.relative_floor is not None and value <= rule.relative_floor
    effective_baseline = baseline_value

    def check(criteria: tuple[Criterion, ...]) -> tuple[bool | None, Criterion | None]:
        if below_floor:
            criteria = tuple(c for c in criteria if not c.is_relative)
        return all_hold(criteria, value, effective_baseline)

    passed, failing = check(pass_criteria)
    if passed is None and failing is not None:
        why = "baseline has no data for the relative criterion " + repr(failing.text)
        if baseline is not None and baseline.message:
            why += f" ({baseline.message})"
        return _missing(rule, namespace, measurement, why, target, baseline_value)
    floor_note = (
        f" (at or below the floor {format_number(rule.relative_floor)})" if below_floor else ""
    )
    shown = format_number(value)
    if passed:
        return _result(rule, namespace, "pass", measurement,
                       f"{shown} meets {target}{floor_note}{comparison_note}", target=target,
                       counted=True, baseline_value=baseline_value)
    warning_criteria = _applicable(rule.warning_criteria, role)
    if warning_criteria:
        warned, _ = check(warning_criteria)
        if warned:
            return _result(rule, namespace, "warning", measurement,
                           f"{shown} misses {_describe(failing, effective_baseline)} "
                           f"(within the warning range){comparison_note}{_said(measurement)}",
                           target=target, counted=True, baseline_value=baseline_value)
    return _result(rule, namespace, "fail", measurement,
                   f"{shown} misses {_describe(failing, effective_baseline)}{comparison_note}"
                   f"{_said(measurement)}",
                   target=target, counted=True, baseline_value=baseline_value)


def _judge_counts(
    rule: Rule, namespace: str, measurement: Measurement, *, role: Role,
    baseline: Measurement | None, target: str, baseline_value: float | None,
) -> RuleResult:
    """A sequential count comparison (gatekeeper.comparing): fail, pass, or pending.

    Pending is not a pass whatever the rule's no_data policy: it leaves the verdict unknown.
    """
    if role == "baseline":
        return _result(rule, namespace, "pass", measurement,
                       f"{format_number(measurement.value)} (reference for the comparison)",
                       target=target, counted=False, baseline_value=baseline_value)
    if baseline is None or baseline.status != "ok":
        why = "the active namespace has no counts to compare with"
        if baseline is not None and baseline.message:
            why += f" ({baseline.message})"
        return _missing(rule, namespace, measurement, why, target, baseline_value)
    try:
        outcome, reason, details = comparing.compare(rule, measurement.counts, baseline.counts)
    except ValueError as exc:
        return _result(rule, namespace, "error", measurement, f"cannot compare counts: {exc}",
                       target=target, counted=False, baseline_value=baseline_value)
    if outcome == "pending":
        return _result(rule, namespace, "no_data", measurement, reason, target=target,
                       counted=False, baseline_value=baseline_value, **details)
    return _result(rule, namespace, outcome, measurement, reason, target=target, counted=True,
                   baseline_value=baseline_value, **details)


def _describe(criterion: Criterion | None, baseline_value: float | None) -> str:
    return criterion.describe(baseline_value) if criterion is not None else "its criteria"


def _undecided(result: RuleResult) -> bool:
    """A result the verdict cannot rely on (fail closed)."""
    if result.weight == 0 and not result.key:
        return False
    if result.status == "error":
        return True
    return result.status == "no_data" and result.details.get("no_data_policy") != "ignore"


def _score(results: tuple[RuleResult, ...], undecided_as: float | None) -> float | None:
    total = earned = 0.0
    for result in results:
        if result.counted:
            total += result.weight
            earned += result.weight * _STATUS_POINTS[result.status]
        elif undecided_as is not None and _undecided(result):
            total += result.weight
            earned += result.weight * undecided_as
    if total == 0:
        return None
    return round(100.0 * earned / total, 2)


def grade(score: float | None, thresholds: ScoreThresholds) -> Grade:
    """Keptn grading of a total score."""
    if score is None:
        return "unknown"
    if score >= thresholds.pass_:
        return "pass"
    if score >= thresholds.warning:
        return "warning"
    return "fail"


def score_namespace(
    namespace: str, role: Role, results: tuple[RuleResult, ...], thresholds: ScoreThresholds
) -> NamespaceScore:
    """Weighted score of the counted results."""
    score = _score(results, undecided_as=None)
    return NamespaceScore(namespace=namespace, role=role, results=results, score=score,
                          grade=grade(score, thresholds))


def _line(result: RuleResult, other: str | None) -> str:
    key = " [key]" if result.key else ""
    text = f"{result.rule}{key} on {result.namespace}: {result.reason}"
    if other is not None and result.baseline_value is not None:
        text += f" (active {other}: {format_number(result.baseline_value)})"
    return text


def decide(
    pair: str,
    candidate: NamespaceScore,
    baseline: NamespaceScore,
    thresholds: ScoreThresholds,
    *,
    evaluated_at: float,
) -> Verdict:
    """Roll the candidate's results up into safe / unsafe / unknown, with reasons first."""
    results = candidate.results
    key_failures = [r for r in results if r.key and r.status == "fail"]
    failures = sorted((r for r in results if not r.key and r.status == "fail"),
                      key=lambda r: -r.weight)
    warnings = [r for r in results if r.status == "warning"]
    undecided = [r for r in results if _undecided(r)]
    best_case = _score(results, undecided_as=1.0)
    reasons = [_line(r, baseline.namespace) for r in (*key_failures, *failures, *warnings)]
    reasons += [
        f"{r.rule}{' [key]' if r.key else ''} on {r.namespace}: unknown: {r.reason}"
        for r in undecided
    ]
    verdict: VerdictName
    if key_failures:
        verdict = "unsafe"
    elif best_case is not None and grade(best_case, thresholds) != "pass":
        verdict = "unsafe"
    elif undecided or candidate.score is None:
        verdict = "unknown"
        if candidate.score is None and not undecided:
            reasons.append("no rule could be evaluated")
    elif candidate.grade == "pass":
        verdict = "safe"
    else:
        verdict = "unsafe"
    score_text = "n/a" if candidate.score is None else f"{candidate.score:g}%"
    reasons.append(
        f"score {score_text} (pass >= {thresholds.pass_:g}%, warning >= {thresholds.warning:g}%)"
    )
    return Verdict(pair=pair, candidate=candidate, baseline=baseline, verdict=verdict,
                   reasons=tuple(reasons), evaluated_at=evaluated_at)


def judge_pair(
    pair: str,
    rule_set: RuleSet,
    *,
    candidate: str,
    baseline: str,
    measurements: Mapping[str, Mapping[str, Measurement]],
    evaluated_at: float,
) -> Verdict:
    """Judge `candidate` against `baseline`; `measurements[rule][namespace]`."""
    candidate_results = []
    baseline_results = []
    missing = Measurement.error("no measurement was taken")
    for rule in rule_set.rules:
        by_namespace = measurements.get(rule.name, {})
        cand = by_namespace.get(candidate, missing)
        base = by_namespace.get(baseline, missing)
        candidate_results.append(judge_rule(rule, candidate, cand, role="candidate", baseline=base))
        baseline_results.append(judge_rule(rule, baseline, base, role="baseline"))
    thresholds = rule_set.score
    cand_score = score_namespace(candidate, "candidate", tuple(candidate_results), thresholds)
    base_score = score_namespace(baseline, "baseline", tuple(baseline_results), thresholds)
    return decide(pair, cand_score, base_score, thresholds, evaluated_at=evaluated_at)
