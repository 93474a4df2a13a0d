"""How much evidence backs the dark's verdict, read from the rule results (no queries)."""

from __future__ import annotations

from gatekeeper.evidence import dark_evidence
from gatekeeper.measurements import NamespaceScore, RuleResult, Verdict


def result(rule: str, status: str, samples: float | None, min_samples: float = 0,
           source: str = "prometheus", **details: object) -> RuleResult:
    return RuleResult(rule=rule, namespace="green", status=status,  # type: ignore[arg-type]
                      value=None, target="", reason="no series", weight=1, key=True,
                      counted=status != "no_data", details=dict(details), source=source,
                      samples=samples, min_samples=min_samples)


def verdict(*results: RuleResult) -> Verdict:
    candidate = NamespaceScore("green", "candidate", results, None, "unknown")  # type: ignore[arg-type]
    baseline = NamespaceScore("blue", "baseline", (), None, "unknown")  # type: ignore[arg-type]
    return Verdict("api", candidate, baseline, "unknown", (), 0.0)


def test_too_few_requests_and_no_data_are_named_with_what_to_do():
    """A rule below its minimum says how many requests the dark served in its window; a rule
    without data says so; a rule with enough is not in the hint."""
    found = dark_evidence(verdict(
        result("error-rate", "no_data", 0, 100),
        result("latency", "no_data", None, no_data_policy="unknown"),
        result("pods-ready", "pass", 2, source="kubernetes"),
    ), {"latency": 600.0}, 300.0)
    assert found["enough"] is False
    assert "error-rate: dark served 0 requests in 5m (minimum 100): enable load or mirroring" \
        in found["hint"]
    assert "latency: no data for the dark in 10m" in found["hint"]
    assert "pods-ready" not in found["hint"]
    assert [r["enough"] for r in found["rules"]] == [False, False, True]
    assert found["rules"][0]["samples"] == 0 and found["rules"][0]["min_samples"] == 100


def test_enough_samples_and_ignored_rules_need_no_hint():
    """Every deciding rule has its samples; a rule whose no_data policy is `ignore` does not
    count as missing evidence."""
    found = dark_evidence(verdict(
        result("error-rate", "pass", 1500, 100),
        result("optional", "no_data", None, no_data_policy="ignore"),
    ), {}, 300.0)
    assert found == {"enough": True, "hint": None, "rules": found["rules"]}
    assert dark_evidence(None, {}, 300.0)["enough"] is False


def test_a_pair_that_already_sends_load_is_told_to_raise_it_or_check_the_metrics():
    from gatekeeper.evidence import advice

    found = dark_evidence(verdict(result("error-rate", "no_data", 12, 100)), {}, 300.0,
                          todo=advice(20.0))
    assert "dark served 12 requests in 5m (minimum 100): the pair's load sends 20 " \
           "requests/s" in found["hint"] and "raise load.rate" in found["hint"]
    assert advice(None) == "enable load or mirroring for the dark"
