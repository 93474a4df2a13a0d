"""The judge against a real Prometheus and Alertmanager: known traffic in, verdicts out."""

import math
from pathlib import Path

import pytest

from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.rules import RuleSet, load_rule_set
from gatekeeper.sources.alertmanager import AlertmanagerSource
from gatekeeper.sources.prometheus import PrometheusSource
from telemetry_sandbox import make_alert

ROOT = Path(__file__).resolve().parent.parent
CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens on loopback


def telemetry_rules(**overrides) -> RuleSet:
    """The shipped Prometheus and Alertmanager rules, with a short window for tests."""
    shipped = load_rule_set([ROOT / "rules" / "default.yaml"])
    rules = tuple(r for r in shipped.rules if r.source in ("prometheus", "alertmanager"))
    return shipped.model_copy(update={"rules": rules, **overrides})


def pair_of(blue: str, green: str) -> PairConfig:
    return PairConfig(name="api", namespaces=(blue, green),
                      routes=(RouteRef(name="api-live", namespace="routing"),))


async def evaluate(rule_set, prometheus_url, alertmanager_url, blue, green, dark=None):
    prom = PrometheusSource(prometheus_url, timeout=3)
    alerts = AlertmanagerSource(alertmanager_url, timeout=3)
    evaluator = Evaluator(rule_set, {"prometheus": prom, "alertmanager": alerts},
                          window=10, source_timeout=5)
    dark = dark or green
    active = blue if dark == green else green
    try:
        verdicts = await evaluator.evaluate([Assignment(pair_of(blue, green), dark, active)])
    finally:
        await prom.close()
        await alerts.close()
    return verdicts["api"], prom


def wait_for_ratio(prometheus, names, expected):
    """Wait until Prometheus has enough scrapes for a 10s rate of every namespace."""
    regex = "|".join(names)
    query = (f'sum by (namespace) (rate(http_requests_total{{namespace=~"{regex}",'
             f'status=~"5.."}}[10s])) / sum by (namespace) '
             f'(rate(http_requests_total{{namespace=~"{regex}"}}[10s]))')

    def ready(result):
        values = {r["metric"]["namespace"]: float(r["value"][1]) for r in result}
        return all(ns in values and math.isclose(values[ns], expected[ns], rel_tol=0.2)
                   for ns in names)

    prometheus.wait_for(query, ready, timeout_s=30)


def by_rule(namespace_score):
    return {r.rule: r for r in namespace_score.results}


async def test_green_with_5_percent_errors_is_unsafe_and_safe_the_other_way(
        prometheus, alertmanager, synthetic_fleet, unique_pair):
    """Green 5% vs blue 0.1% errors: green unsafe on error-rate; the other way round: safe."""
    blue, green = unique_pair
    synthetic_fleet.set_profile(green, rps=2000, error_ratio=0.05)
    synthetic_fleet.set_profile(blue, rps=2000, error_ratio=0.001)
    wait_for_ratio(prometheus, [blue, green], {green: 0.05, blue: 0.001})
    rules = telemetry_rules()

    verdict, prom = await evaluate(rules, prometheus.url, alertmanager.url, blue, green)
    dark = by_rule(verdict.candidate)
    assert verdict.verdict == "unsafe"
    assert dark["error-rate"].status == "fail"
    assert dark["error-rate"].value == pytest.approx(0.05, rel=0.1)
    assert dark["error-rate"].baseline_value == pytest.approx(0.001, rel=0.3)
    assert verdict.reasons[0].startswith(f"error-rate [key] on {green}")
    assert by_rule(verdict.baseline)["error-rate"].status == "pass"
    # The absolute rules send a query and a samples query each (4); the rate comparison counts
    # bad and all requests over the judged span and the baseline window (4, one shared with
    # error-rate's samples query), the latency comparison buckets over both (2): identical
    # queries are sent once per evaluation.
    assert prom.queries_sent == 9

    reverse, _ = await evaluate(rules, prometheus.url, alertmanager.url, blue, green, dark=blue)
    assert reverse.verdict == "safe", reverse.reasons
    assert by_rule(reverse.candidate)["error-rate"].status == "pass"


async def test_firing_critical_alert_fails_the_dark_namespace(
        prometheus, alertmanager, synthetic_fleet, unique_pair):
    """A critical alert with the dark namespace's label makes the key alert rule fail."""
    blue, green = unique_pair
    for namespace in unique_pair:
        synthetic_fleet.set_profile(namespace, rps=2000, error_ratio=0.0)
    alertmanager.post_alerts([make_alert("HighErrorRate", green, severity="critical"),
                              make_alert("Minor", blue, severity="warning")])
    wait_for_ratio(prometheus, [blue, green], {blue: 0.0, green: 0.0})
    verdict, _ = await evaluate(telemetry_rules(), prometheus.url, alertmanager.url, blue, green)
    assert by_rule(verdict.candidate)["critical-alerts"].status == "fail"
    assert by_rule(verdict.baseline)["critical-alerts"].status == "pass"
    assert verdict.verdict == "unsafe"


async def test_no_traffic_is_unknown_not_safe(prometheus, alertmanager, synthetic_fleet,
                                              unique_pair):
    """A dark namespace that serves nothing (0/0 = NaN, or no series) is unknown."""
    blue, green = unique_pair
    synthetic_fleet.set_profile(blue, rps=2000, error_ratio=0.0)
    synthetic_fleet.set_profile(green, rps=0, error_ratio=0.0, warm_start_s=0)
    wait_for_ratio(prometheus, [blue], {blue: 0.0})
    verdict, _ = await evaluate(telemetry_rules(), prometheus.url, alertmanager.url, blue, green)
    dark = by_rule(verdict.candidate)
    assert dark["error-rate"].status == "no_data"
    assert verdict.verdict == "unknown"
    assert not verdict.safe


async def test_prometheus_down_is_unknown(alertmanager, prometheus_factory, synthetic_fleet,
                                          unique_pair):
    """Stopping Prometheus turns every Prometheus rule into an error and the verdict unknown."""
    blue, green = unique_pair
    server = prometheus_factory()
    url = server.url
    server.stop()
    verdict, _ = await evaluate(telemetry_rules(), url, alertmanager.url, blue, green)
    dark = by_rule(verdict.candidate)
    assert dark["error-rate"].status == "error"
    assert "unreachable" in dark["error-rate"].reason
    assert verdict.verdict == "unknown"


async def test_unreachable_alertmanager_is_unknown(prometheus, synthetic_fleet, unique_pair):
    """An unreachable Alertmanager makes the key alert rule unknown, never a silent pass."""
    blue, green = unique_pair
    for namespace in unique_pair:
        synthetic_fleet.set_profile(namespace, rps=2000, error_ratio=0.0)
    wait_for_ratio(prometheus, [blue, green], {blue: 0.0, green: 0.0})
    verdict, _ = await evaluate(telemetry_rules(), prometheus.url, CLOSED_PORT_URL, blue, green)
    assert by_rule(verdict.candidate)["critical-alerts"].status == "error"
    assert verdict.verdict == "unknown"


async def test_bad_query_is_reported_as_bad_data(prometheus, alertmanager, unique_pair):
    """A PromQL syntax error is an error naming Prometheus's bad_data, not no data."""
    blue, green = unique_pair
    broken = telemetry_rules()
    first = broken.rules[0].model_copy(update={"query": "sum by (namespace) (rate(x[5m]"})
    broken = broken.model_copy(update={"rules": (first,)})
    verdict, _ = await evaluate(broken, prometheus.url, alertmanager.url, blue, green)
    result = verdict.candidate.results[0]
    assert result.status == "error"
    assert "bad_data" in result.reason
    assert verdict.verdict == "unknown"
