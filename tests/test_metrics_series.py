"""The Recorder's per-namespace series of a pair: each evaluation leaves every rule once per
namespace under its current role, drops only that pair's stale series, and forgets a pair
or a flipped pair's namespaces without touching the other pairs."""

from __future__ import annotations

from prometheus_client import generate_latest

from gatekeeper.measurements import NamespaceScore, RuleResult, Verdict
from gatekeeper.metrics import Recorder


def _score(namespace: str, role: str, rules: tuple[str, ...]) -> NamespaceScore:
    results = tuple(RuleResult(rule, namespace, "pass", 0.5, "< 1", "ok", 1.0, False, True)
                    for rule in rules)
    return NamespaceScore(namespace, role, results, 100.0, "pass")  # type: ignore[arg-type]


def _verdict(pair: str, dark: str, active: str, rules: tuple[str, ...]) -> Verdict:
    return Verdict(pair, _score(dark, "candidate", rules), _score(active, "baseline", rules),
                   "safe", (), 1.0)


def _series(recorder: Recorder, pair: str) -> set[tuple[str, ...]]:
    """(metric, namespace, role, rule) of the pair's per-namespace series in the exposition."""
    found = set()
    for line in generate_latest(recorder.registry).decode().splitlines():
        if line.startswith("#") or f'pair="{pair}"' not in line:
            continue
        name = line.split("{", 1)[0]
        if name not in ("gatekeeper_rule_value", "gatekeeper_namespace_score_ratio"):
            continue
        labels = dict(part.split("=", 1) for part in
                      line.split("{", 1)[1].split("}", 1)[0].replace('"', "").split(","))
        found.add((name, labels["namespace"], labels["role"], labels.get("rule", "")))
    return found


def test_each_evaluation_drops_only_its_own_pairs_stale_series() -> None:
    recorder = Recorder()
    recorder.record_verdict(_verdict("a", "a-green", "a-blue", ("errors", "latency")))
    recorder.record_verdict(_verdict("b", "b-green", "b-blue", ("errors",)))
    b_before = _series(recorder, "b")
    # Flipped outside the service, and one rule no longer judged.
    recorder.record_verdict(_verdict("a", "a-blue", "a-green", ("errors",)))
    assert _series(recorder, "a") == {
        ("gatekeeper_rule_value", "a-blue", "dark", "errors"),
        ("gatekeeper_rule_value", "a-green", "active", "errors"),
        ("gatekeeper_namespace_score_ratio", "a-blue", "dark", ""),
        ("gatekeeper_namespace_score_ratio", "a-green", "active", ""),
    }
    assert _series(recorder, "b") == b_before and len(b_before) == 4
    lines = [line for line in generate_latest(recorder.registry).decode().splitlines()
             if 'pair="a"' in line]
    assert not [line for line in lines if 'rule="latency"' in line]
    # rule_status (5 statuses), rule_value and the score: once each, in the current role
    assert len([line for line in lines if 'namespace="a-blue"' in line]) == 7
    recorder.forget_namespace_roles("a", ["a-blue"])
    assert {s[1] for s in _series(recorder, "a")} == {"a-green"}
    recorder.forget_pair("a")
    assert _series(recorder, "a") == set() and _series(recorder, "b") == b_before
    # A pair forgotten and judged again starts afresh (its index went with it).
    recorder.record_verdict(_verdict("a", "a-green", "a-blue", ("latency",)))
    recorder.record_verdict(_verdict("a", "a-blue", "a-green", ("latency",)))
    assert {(s[1], s[2]) for s in _series(recorder, "a")} == {("a-blue", "dark"),
                                                             ("a-green", "active")}
