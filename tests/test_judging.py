"""The judge: rule results, Keptn scoring and the fail-closed verdict."""

import pytest

from gatekeeper.judging import judge_pair, judge_rule
from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule, RuleSet, ScoreThresholds


def rule(**fields) -> Rule:
    base = {"name": "r", "source": "prometheus", "query": "q", "pass": ["< 0.01"]}
    base.update(fields)
    return Rule.model_validate(base)


def ok(value, **extra):
    return Measurement.ok(value, **extra)


@pytest.mark.parametrize(
    ("fields", "value", "baseline", "status"),
    [
        ({}, 0.001, None, "pass"),
        ({}, 0.05, None, "fail"),
        ({"warning": ["< 0.02"]}, 0.015, None, "warning"),
        ({"warning": ["< 0.02"]}, 0.05, None, "fail"),
        ({"pass": ["<= +10%"]}, 0.0011, 0.001, "pass"),
        ({"pass": ["<= +10%"]}, 0.005, 0.001, "fail"),
        ({"pass": ["<= +10%"], "relative_floor": 0.01}, 0.005, 0.001, "pass"),
        ({"pass": ["<= +10%"], "relative_floor": 0.001}, 0.005, 0.001, "fail"),
        ({"pass": ["<= +10%"]}, 0.005, None, "no_data"),
        ({"pass": ["<= +10%"], "no_data": "fail"}, 0.005, None, "fail"),
    ],
)
def test_candidate_rule_status(fields, value, baseline, status):
    """Absolute, warning, relative and floor criteria give the expected status."""
    base = ok(baseline) if baseline is not None else Measurement.no_data("no traffic")
    result = judge_rule(rule(**fields), "green", ok(value), role="candidate", baseline=base)
    assert result.status == status, result.reason


@pytest.mark.parametrize(
    ("measurement", "policy", "status", "counted"),
    [
        (Measurement.error("prometheus unreachable"), "fail", "error", False),
        (Measurement.no_data("empty"), "unknown", "no_data", False),
        (Measurement.no_data("empty"), "fail", "fail", True),
        (Measurement.no_data("empty"), "pass", "pass", True),
        (Measurement.no_data("empty"), "ignore", "no_data", False),
        (ok(float("nan")), "unknown", "no_data", False),
        (ok(float("inf")), "fail", "fail", True),
    ],
)
def test_missing_data_follows_the_policy(measurement, policy, status, counted):
    """Errors are never judged; no data (or NaN/Inf) follows the rule's no-data policy."""
    result = judge_rule(rule(no_data=policy), "green", measurement, role="candidate")
    assert (result.status, result.counted) == (status, counted)


def test_min_samples_turns_thin_traffic_into_no_data():
    """Too few requests behind a ratio is no data, not a pass."""
    thin = judge_rule(rule(min_samples=100), "g", ok(0.0, sample_count=20), role="candidate")
    enough = judge_rule(rule(min_samples=100), "g", ok(0.0, sample_count=500), role="candidate")
    assert thin.status == "no_data" and "only 20 samples" in thin.reason
    assert enough.status == "pass"


def test_baseline_is_judged_on_absolute_criteria_only():
    """Relative criteria compare against the baseline, so they do not apply to it."""
    mixed = rule(**{"pass": ["< 0.01", "<= +10%"]})
    assert judge_rule(mixed, "blue", ok(0.05), role="baseline").status == "fail"
    relative_only = rule(**{"pass": ["<= +10%"]})
    result = judge_rule(relative_only, "blue", ok(0.05), role="baseline")
    assert result.status == "pass" and not result.counted


def test_statistical_comparison_fails_a_real_shift_and_passes_noise():
    """Mann-Whitney: a clear shift above the allowed effect fails; equal noise passes."""
    stat_rule = rule(**{"pass": None, "compare": {"allowed_effect": 1.2, "min_samples": 8}})
    base = ok(0.1, samples=tuple(0.1 + 0.001 * (i % 5) for i in range(30)))
    worse = ok(0.2, samples=tuple(0.2 + 0.001 * (i % 5) for i in range(30)))
    same = ok(0.1, samples=tuple(0.1 + 0.001 * ((i + 2) % 5) for i in range(30)))
    assert judge_rule(stat_rule, "g", worse, role="candidate", baseline=base).status == "fail"
    assert judge_rule(stat_rule, "g", same, role="candidate", baseline=base).status == "pass"
    few = ok(0.2, samples=(0.2, 0.3))
    assert judge_rule(stat_rule, "g", few, role="candidate", baseline=base).status == "no_data"


def ruleset(*rules, pass_=90, warning=75):
    return RuleSet(rules=rules, score=ScoreThresholds.model_validate(
        {"pass": pass_, "warning": warning}))


def verdict_for(rules, values):
    """values: {rule: (candidate Measurement, baseline Measurement)}"""
    measurements = {name: {"green": c, "blue": b} for name, (c, b) in values.items()}
    return judge_pair("api", ruleset(*rules), candidate="green", baseline="blue",
                      measurements=measurements, evaluated_at=0.0)


def test_key_rule_failure_is_unsafe_whatever_the_score():
    """A failing key rule fails the verdict even at a high score."""
    rules = [rule(name="errors", key=True, weight=1)] + [
        rule(name=f"other{i}", weight=10) for i in range(3)]
    values = {"errors": (ok(0.05), ok(0.001))}
    values |= {f"other{i}": (ok(0.0), ok(0.0)) for i in range(3)}
    verdict = verdict_for(rules, values)
    assert verdict.verdict == "unsafe"
    assert verdict.candidate.score == pytest.approx(96.77, abs=0.01)
    assert verdict.reasons[0].startswith("errors [key] on green: 0.05 misses < 0.01")


def test_keptn_scoring_half_weight_for_warning():
    """Pass counts fully, warning half, fail nothing; below the pass threshold is unsafe."""
    rules = [rule(name="a", weight=1, warning=["< 1"]), rule(name="b", weight=1)]
    verdict = verdict_for(rules, {"a": (ok(0.5), ok(0)), "b": (ok(0), ok(0))})
    assert verdict.candidate.score == 75.0
    assert verdict.candidate.grade == "warning"
    assert verdict.verdict == "unsafe"


def test_source_down_is_unknown_never_safe():
    """A key rule that could not be evaluated makes the verdict unknown."""
    rules = [rule(name="errors", key=True), rule(name="other")]
    down = Measurement.error("prometheus unreachable: cannot connect")
    verdict = verdict_for(rules, {"errors": (down, down), "other": (ok(0), ok(0))})
    assert verdict.verdict == "unknown"
    assert not verdict.safe
    assert any("unknown" in r and "unreachable" in r for r in verdict.reasons)


def test_unknown_non_key_rule_is_unknown_unless_already_unsafe():
    """Fail closed on any undecided rule, but a definite failure still says unsafe."""
    rules = [rule(name="a", weight=1), rule(name="b", weight=1)]
    missing = Measurement.no_data("empty result")
    assert verdict_for(rules, {"a": (ok(0), ok(0)), "b": (missing, ok(0))}).verdict == "unknown"
    assert verdict_for(rules, {"a": (ok(1), ok(0)), "b": (missing, ok(0))}).verdict == "unsafe"


def test_ignored_no_data_does_not_block():
    """`no_data: ignore` leaves the rule out of the score and of the verdict."""
    rules = [rule(name="a"), rule(name="b", no_data="ignore")]
    verdict = verdict_for(rules, {"a": (ok(0), ok(0)), "b": (Measurement.no_data("x"), ok(0))})
    assert verdict.verdict == "safe"
    assert verdict.candidate.score == 100.0


def test_all_pass_is_safe_with_score_reason():
    """Everything passing is safe and says the score."""
    verdict = verdict_for([rule(name="a", key=True)], {"a": (ok(0.001), ok(0.002))})
    assert verdict.verdict == "safe"
    assert verdict.reasons[-1].startswith("score 100%")


def rate_rule(**fields) -> Rule:
    base = {"name": "errors-vs-active", "source": "prometheus", "key": True,
            "rate": {"bad": "increase(bad[${window}])", "total": "increase(all[${window}])",
                     "allowed_ratio": 1.5, "confidence": 0.99, "detect": 5}}
    base.update(fields)
    return Rule.model_validate(base)


def counted(bad, total, baseline_bad=None, baseline_total=None):
    counts = {"bad": float(bad), "total": float(total)}
    if baseline_total is not None:
        counts.update({"baseline.bad": float(baseline_bad),
                       "baseline.total": float(baseline_total)})
    return ok(bad / total, sample_count=total, counts=counts)


@pytest.mark.parametrize(
    ("dark", "active", "status", "verdict"),
    [
        (counted(14, 2400), counted(1, 2400, 6, 12000), "fail", "unsafe"),
        (counted(7, 2400), counted(7, 2400, 36, 12000), "pass", "safe"),
        (counted(7, 2400), counted(7, 2400), "no_data", "unknown"),  # pending
        (counted(7, 2400), Measurement.error("prometheus down"), "no_data", "unknown"),
        (ok(0.1), counted(7, 2400), "error", "unknown"),  # no counts: cannot compare
    ],
)
def test_count_comparison_outcomes_and_verdicts(dark, active, status, verdict):
    """fail is unsafe (key), pass is safe, pending or missing counts leave the verdict unknown;
    the active side is judged over its baseline-window counts when it has them."""
    rules = RuleSet(rules=(rate_rule(),))
    result = judge_rule(rules.rules[0], "green", dark, role="candidate", baseline=active)
    assert result.status == status, result.reason
    got = judge_pair("p", rules, candidate="green", baseline="blue",
                     measurements={"errors-vs-active": {"green": dark, "blue": active}},
                     evaluated_at=0.0)
    assert got.verdict == verdict, got.reasons


def test_pending_is_never_ignored_whatever_the_no_data_policy():
    """`no_data: ignore` or `pass` does not turn "not enough evidence" into a pass."""
    for policy in ("ignore", "pass"):
        rules = RuleSet(rules=(rate_rule(no_data=policy),))
        got = judge_pair("p", rules, candidate="green", baseline="blue",
                         measurements={"errors-vs-active": {"green": counted(7, 2400),
                                                            "blue": counted(7, 2400)}},
                         evaluated_at=0.0)
        assert got.verdict == "unknown"
        assert any("pending:" in reason for reason in got.reasons)


def test_latency_comparison_reason_has_both_quantiles():
    """A latency rule's reason reads `p99 x s [lo, hi] vs active y s [lo, hi]`."""
    latency = Rule.model_validate({
        "name": "latency-vs-active", "source": "prometheus",
        "latency": {"histogram": "h", "quantile": 0.99, "allowed_ratio": 1.25, "detect": 3}})
    bounds = (0.1, 0.25, 0.5, 1.0)

    def buckets(shares, total):
        return {f"le:{b}": s * total for b, s in zip(bounds, shares, strict=True)} | {
            "le:+Inf": float(total)}

    dark = ok(0.75, counts=buckets((0.5, 0.9, 0.98, 1.0), 12000))
    active = ok(0.5, counts=buckets((0.5, 0.9, 0.99, 1.0), 60000))
    result = judge_rule(latency, "green", dark, role="candidate", baseline=active)
    assert result.status == "fail", result.reason
    assert result.reason.startswith("worse: p99 0.75 s [")
    assert "vs active 0.5 s [" in result.reason
    assert result.details["boundary"] == 0.5


def test_count_details_are_json_safe_when_the_active_served_nothing():
    """An active with no requests gives pending, and no NaN reaches the JSON details."""
    import json

    result = judge_rule(rate_rule(), "green", counted(3, 1000), role="candidate",
                        baseline=ok(0.0, counts={"bad": 0.0, "total": 0.0}))
    assert result.status == "no_data" and "pending" in result.reason
    json.dumps(result.to_dict(), allow_nan=False)
