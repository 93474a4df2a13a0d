"""The shipped rule sets for the users' stack, validated and judged against a real Prometheus.

rules/sets/opentelemetry.yaml (OpenTelemetry's HTTP semantic conventions), rules/sets/
resources.yaml (cAdvisor and kube-state-metrics as kube-prometheus-stack names them) and
rules/examples/database.yaml (a database-client histogram). The live tests feed the session's
real Prometheus from telemetry_sandbox's StackExporter, which serves synthetic series under
exactly those metric names and labels, and judge dark against active with the real evaluator.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.cli import main
from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.judging import RuleResult
from gatekeeper.rules import RuleSet, load_rule_set
from gatekeeper.sources.prometheus import PrometheusSource
from telemetry_sandbox import TrafficProfile
from telemetry_sandbox.stack_exporter import PodResources, StackExporter

ROOT = Path(__file__).resolve().parent.parent
SETS = ROOT / "rules" / "sets"
OTEL = SETS / "opentelemetry.yaml"
RESOURCES = SETS / "resources.yaml"
DATABASE = ROOT / "rules" / "examples" / "database.yaml"
WINDOW_S = 20.0
_numbers = itertools.count(1)

# docs/rules.md's "which set?" query: the HTTP metric names a namespace's services export.
WHICH_METRICS = (
    'count by (namespace, __name__) ({{__name__=~"http_requests_total|'
    'http_server_request_duration_seconds_count", namespace="{namespace}"}})'
)


class Scenarios:
    """Every live scenario's namespaces, set up at once so their windows fill together."""

    def __init__(self) -> None:
        self.pairs: dict[str, tuple[str, str]] = {}

    def add(self, name: str) -> tuple[str, str]:
        prefix = f"stack{next(_numbers)}"
        self.pairs[name] = (f"{prefix}-blue", f"{prefix}-green")
        return self.pairs[name]

    def names(self) -> tuple[str, ...]:
        return tuple(ns for pair in self.pairs.values() for ns in pair)


@pytest.fixture(scope="module")
def scenarios(prometheus: Any, stack_exporter: StackExporter,
              synthetic_fleet: Any) -> Iterator[dict[str, tuple[str, str]]]:
    """(active, dark) per scenario, fed by the session's StackExporter; yielded once every
    series spans the whole test window (rate() divides by all of it)."""
    stack, made = stack_exporter, Scenarios()
    active, dark = made.add("otel")
    stack.set_otel_http(active, TrafficProfile(rps=400, error_ratio=0.001, latency_p99_s=0.25))
    stack.set_otel_http(dark, TrafficProfile(rps=400, error_ratio=0.05, latency_p50_s=0.2,
                                             latency_p99_s=2.5))
    synthetic_fleet.set_profile(f"{active}-classic", rps=50)
    active, dark = made.add("status-variable")
    stack.set_otel_http(active, TrafficProfile(rps=400, success_statuses={"200": 1.0}))
    stack.set_otel_http(dark, TrafficProfile(rps=400, success_statuses={"200": 0.9, "404": 0.1}))
    active, dark = made.add("leak")
    stack.set_resources(active, PodResources(memory_bytes=200e6, memory_jitter_bytes=20e3))
    stack.set_resources(dark, PodResources(memory_bytes=200e6, memory_growth_bytes_per_s=100e3,
                                           memory_jitter_bytes=20e3))
    active, dark = made.add("resources")
    stack.set_resources(active, PodResources(pods=3, memory_bytes=400e6, cpu_cores=0.3,
                                             throttled_share=0.02))
    stack.set_resources(dark, PodResources(pods=2, memory_bytes=800e6, cpu_cores=0.6,
                                           throttled_share=0.6, oom_kills=1, oom_after_s=5.0))
    for namespace in made.add("no-limits"):
        stack.set_resources(namespace, PodResources(cpu_limited=False))
    active, dark = made.add("database")
    operations = {"SELECT": 0.8, "INSERT": 0.2}
    stack.set_db(active, TrafficProfile(rps=300, services=operations, latency_p50_s=0.01,
                                        latency_p99_s=0.05))
    stack.set_db(dark, TrafficProfile(rps=300, services=operations, latency_p50_s=0.3,
                                      latency_p99_s=1.0))
    try:
        regex = "|".join(made.names())
        prometheus.wait_for(
            f'count by (namespace) (count_over_time({{namespace=~"{regex}", '
            f'__name__=~"container_memory_working_set_bytes|'
            f'http_server_request_duration_seconds_count|db_client_operation_duration_seconds_count"}}'
            f"[{WINDOW_S:g}s]) >= {int(WINDOW_S) - 1})",
            lambda result: len(result) == len(made.names()), timeout_s=60)
        yield made.pairs
    finally:
        stack.remove(*made.names())
        synthetic_fleet.remove(f"{made.pairs['otel'][0]}-classic")


def _short(rule_set: RuleSet, window: float) -> RuleSet:
    """The set with every rule's own window cut to the test window (the soak is hours)."""
    rules = tuple(r.model_copy(update={"window": window}) if r.window else r
                  for r in rule_set.rules)
    return rule_set.model_copy(update={"rules": rules})


async def _judge(rule_set: RuleSet, url: str, active: str, dark: str, *,
                 window: float = WINDOW_S) -> tuple[dict[str, RuleResult], dict[str, RuleResult]]:
    """Evaluate the Prometheus rules of `rule_set`; (dark results, active results) by rule."""
    rules = tuple(r for r in rule_set.rules if r.source == "prometheus")
    rule_set = _short(rule_set.model_copy(update={"rules": rules}), window)
    source = PrometheusSource(url, timeout=5)
    pair = PairConfig(name="api", namespaces=(active, dark),
                      routes=(RouteRef(name="api-live", namespace="routing"),))
    evaluator = Evaluator(rule_set, {"prometheus": source}, window=window, source_timeout=10)
    try:
        verdicts = await evaluator.evaluate([Assignment(pair, dark, active)])
    finally:
        await source.close()
    verdict = verdicts["api"]
    return ({r.rule: r for r in verdict.candidate.results},
            {r.rule: r for r in verdict.baseline.results})


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("files", [
    [OTEL], [RESOURCES], [DATABASE],
    [OTEL, ROOT / "rules" / "preflight.yaml", RESOURCES, DATABASE],
    [ROOT / "rules", RESOURCES],
], ids=["opentelemetry", "resources", "database", "otel-combined", "default-combined"])
def test_sets_validate_with_the_cli(files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`gatekeeper rules validate` accepts each set alone and in the documented combinations."""
    assert main(["rules", "validate", *map(str, files)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_the_two_http_sets_cannot_be_loaded_together(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Loading both HTTP sets is a duplicate-name error, not twice the rules."""
    assert main(["rules", "validate", str(ROOT / "rules" / "default.yaml"), str(OTEL)]) == 2
    assert "duplicate rule name" in capsys.readouterr().err


def test_opentelemetry_set_judges_like_the_default_set() -> None:
    """Same rules, criteria, weights, keys and sample minimums as rules/default.yaml; only
    the Prometheus queries differ, and they read the OpenTelemetry histogram."""
    default = load_rule_set([ROOT / "rules" / "default.yaml"])
    otel = load_rule_set([OTEL])
    assert [r.name for r in otel.rules] == [r.name for r in default.rules]
    assert otel.score == default.score
    ignored = {"query": True, "samples_query": True, "description": True,
               "rate": {"bad", "total"}}
    for mine, theirs in zip(otel.rules, default.rules, strict=True):
        assert mine.model_dump(exclude=ignored) == theirs.model_dump(exclude=ignored), mine.name
        if mine.rate is not None:
            for query in (mine.rate.bad, mine.rate.total):
                assert "${duration_metric}_count" in query and "requests_metric" not in query
        elif mine.latency is not None:
            assert mine.latency.histogram == "${duration_metric}"
        elif mine.source == "prometheus":
            assert mine.query is not None
            assert "${duration_metric}" in mine.query and "requests_metric" not in mine.query
        else:
            assert (mine.query, mine.samples_query) == (theirs.query, theirs.samples_query)
    assert otel.variables["status_label"] == "http_response_status_code"
    assert otel.variables["error_status"] == "5.."


# -- judged against a real Prometheus --------------------------------------------------------


async def test_opentelemetry_set_on_an_aspnetcore_histogram(
        prometheus: Any, scenarios: dict[str, tuple[str, str]]) -> None:
    """Dark with 5 % 5xx and a 2.5 s p99 fails error-rate and warns on latency; the active
    namespace passes; the documented one-query check tells the two metric families apart."""
    active, dark = scenarios["otel"]
    classic = f"{active}-classic"
    dark_results, active_results = await _judge(load_rule_set([OTEL]), prometheus.url,
                                                active, dark)
    assert dark_results["error-rate"].status == "fail"
    assert dark_results["error-rate"].value == pytest.approx(0.05, rel=0.15)
    assert active_results["error-rate"].status == "pass"
    assert active_results["error-rate"].value == pytest.approx(0.001, abs=0.002)
    assert dark_results["latency-p99"].status == "warning"
    assert dark_results["latency-p99"].value == pytest.approx(2.5, rel=0.2)
    assert active_results["latency-p99"].status == "pass"
    assert dark_results["latency-vs-active"].status == "fail"
    assert dark_results["error-rate-vs-active"].status == "fail"

    def families(namespace: str) -> set[str]:
        result = prometheus.query_result(WHICH_METRICS.format(namespace=namespace))
        return {r["metric"]["__name__"] for r in result}

    assert families(dark) == {"http_server_request_duration_seconds_count"}
    assert families(classic) == {"http_requests_total"}


async def test_status_label_and_error_pattern_are_variables(
        prometheus: Any, scenarios: dict[str, tuple[str, str]]) -> None:
    """`error_status` widened to 4xx|5xx counts the dark's 404s as errors too."""
    active, dark = scenarios["status-variable"]
    base = load_rule_set([OTEL])
    strict = base.model_copy(update={"variables": {**base.variables, "error_status": "[45].."}})
    dark_default, _ = await _judge(base, prometheus.url, active, dark)
    dark_strict, active_strict = await _judge(strict, prometheus.url, active, dark)
    assert dark_default["error-rate"].value == 0
    assert dark_strict["error-rate"].value == pytest.approx(0.1, rel=0.15)
    assert dark_strict["error-rate"].status == "fail"
    assert active_strict["error-rate"].value == 0


async def test_a_memory_leak_is_caught_and_a_flat_line_is_not(
        prometheus: Any, scenarios: dict[str, tuple[str, str]]) -> None:
    """Dark leaks 100 kB/s on 200 MB (a steady slope): memory-growth fails for it; the active
    namespace's flat line with a +/-20 kB wobble passes, its slope close to zero."""
    active, dark = scenarios["leak"]
    dark_results, active_results = await _judge(load_rule_set([RESOURCES]), prometheus.url,
                                                active, dark)
    leak, flat = dark_results["memory-growth"], active_results["memory-growth"]
    assert leak.status == "fail"
    # 100 kB/s on ~200 MB is ~1.8 per hour (180 %/h).
    assert leak.value is not None and 1.0 < leak.value < 2.5
    assert flat.status == "pass"
    assert flat.value is not None and abs(flat.value) < 0.05
    assert active_results["memory-per-pod-vs-active"].status == "pass"


async def test_oom_kills_throttling_and_resources_per_pod(
        prometheus: Any, scenarios: dict[str, tuple[str, str]]) -> None:
    """Dark pods OOMKilled, throttled 60 % and using 2x the CPU and memory of the active
    pods fail oom-killed, cpu-throttling and both per-pod comparisons; active passes all.
    Per pod, not per namespace: the active namespace runs three pods to the dark's two."""
    active, dark = scenarios["resources"]
    dark_results, active_results = await _judge(load_rule_set([RESOURCES]), prometheus.url,
                                                active, dark)
    assert dark_results["cpu-throttling"].status == "fail"
    assert dark_results["cpu-throttling"].value == pytest.approx(0.6, abs=0.05)
    assert active_results["cpu-throttling"].status == "pass"
    memory = dark_results["memory-per-pod-vs-active"]
    assert memory.status == "fail"
    assert memory.value == pytest.approx(800e6, rel=0.01)  # per pod, pod-level cgroup dropped
    assert memory.baseline_value == pytest.approx(400e6, rel=0.01)
    cpu = dark_results["cpu-per-pod-vs-active"]
    assert cpu.status == "fail"
    assert cpu.value == pytest.approx(0.6, rel=0.1)
    assert cpu.baseline_value is not None and math.isclose(cpu.baseline_value, 0.3, rel_tol=0.1)
    # The kills happened 5 s after the scenario started: a window reaching back to them.
    dark_results, active_results = await _judge(load_rule_set([RESOURCES]), prometheus.url,
                                                active, dark, window=300)
    assert dark_results["oom-killed"].status == "fail"
    assert dark_results["oom-killed"].value is not None and dark_results["oom-killed"].value >= 2
    assert active_results["oom-killed"].status == "pass"
    assert active_results["oom-killed"].value == 0


async def test_cpu_throttling_without_limits_is_ignored_not_unknown(
        prometheus: Any, scenarios: dict[str, tuple[str, str]]) -> None:
    """No CPU limit means no CFS counters: cpu-throttling is no data and left out."""
    active, dark = scenarios["no-limits"]
    dark_results, _ = await _judge(load_rule_set([RESOURCES]), prometheus.url, active, dark)
    assert dark_results["cpu-throttling"].status == "no_data"
    assert not dark_results["cpu-throttling"].counted
    assert dark_results["oom-killed"].status == "pass"


async def test_database_example_flags_slow_queries(
        prometheus: Any, scenarios: dict[str, tuple[str, str]]) -> None:
    """Dark's database p95 at ~0.8 s warns on the absolute rule and fails against active."""
    active, dark = scenarios["database"]
    dark_results, active_results = await _judge(load_rule_set([DATABASE]), prometheus.url,
                                                active, dark)
    assert dark_results["db-latency-p95"].status == "warning"
    assert active_results["db-latency-p95"].status == "pass"
    assert dark_results["db-latency-p95-vs-active"].status == "fail"
