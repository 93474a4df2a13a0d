"""Fail closed on ambiguous telemetry: answers that could be read as "safe" but are not.

Real Prometheus scraping synthetic exporters (two services sharing namespace names, one of
them scraped by two jobs) and real Alertmanager; the service as `gatekeeper serve` wires it
(`create_service`) against the emulated Kubernetes API. A local HTTP stand-in is used only
where a real server cannot be made to answer that way, and says so in its docstring.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.evaluating import Assignment, Evaluator, batches, targets_for
from gatekeeper.kubeclient import read_json
from gatekeeper.rules import Rule, RuleSet
from gatekeeper.service.app import create_service
from gatekeeper.sources.alertmanager import AlertmanagerSource
from gatekeeper.sources.base import Target
from gatekeeper.sources.prometheus import PrometheusSource
from telemetry_sandbox.alertmanager import make_alert
from tests.fixtures.telemetry import ServiceExporters
from tests.service_support import (
    NEW,
    OLD,
    TOKEN,
    get_json,
    namespace,
    uncache_routes,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

_names = itertools.count(1)
ERROR_RATIO = (
    '(sum by (namespace) (rate(http_requests_total{{namespace=~"${{namespaces}}", {match}, '
    'status=~"5.."}}[${{window}}])) or sum by (namespace) (rate(http_requests_total'
    '{{namespace=~"${{namespaces}}", {match}}}[${{window}}])) * 0) / sum by (namespace) '
    '(rate(http_requests_total{{namespace=~"${{namespaces}}", {match}}}[${{window}}]))'
)


def names() -> tuple[str, str]:
    """Fresh (blue, green) namespace names for this test."""
    number = next(_names)
    return f"amb{number}-blue", f"amb{number}-green"


def error_rule(name: str, match: str, **fields: Any) -> Rule:
    """A key error-ratio rule whose query narrows the series with `match`."""
    return Rule.model_validate({"name": name, "source": "prometheus", "key": True,
                                "query": ERROR_RATIO.format(match=match), "pass": ["< 0.01"],
                                **fields})


def shared_pairs(blue: str, green: str) -> tuple[PairConfig, PairConfig]:
    """api and producer in the same two namespaces: own route, selector and variables."""
    return (
        PairConfig(name="api", namespaces=(blue, green), selector="service=api",
                   variables={"service": "api"},
                   routes=(RouteRef(name="api-live", namespace="routing"),)),
        PairConfig(name="producer", namespaces=(blue, green), selector="service=producer",
                   variables={"service": "producer"},
                   routes=(RouteRef(name="producer-live", namespace="routing"),)),
    )


def serve_traffic(exporters: ServiceExporters, blue: str, green: str, *,
                  api_green: float, producer_green: float) -> None:
    """Both services in both namespaces; wait until Prometheus sees every ratio."""
    for fleet, service, dark_ratio in ((exporters.api, "api", api_green),
                                       (exporters.producer, "producer", producer_green)):
        fleet.set_profile(blue, rps=500, error_ratio=0.001, services={service: 1.0})
        fleet.set_profile(green, rps=500, error_ratio=dark_ratio, services={service: 1.0})
    expected = {("api", blue): 0.001, ("producer", blue): 0.001,
                ("api", green): api_green, ("producer", green): producer_green}
    query = (f'sum by (namespace, service) (rate(http_requests_total{{namespace=~"{blue}|'
             f'{green}", status=~"5.."}}[10s])) / sum by (namespace, service) (rate('
             f'http_requests_total{{namespace=~"{blue}|{green}"}}[10s]))')

    def ready(result: list[dict[str, Any]]) -> bool:
        seen = {(r["metric"]["service"], r["metric"]["namespace"]): float(r["value"][1])
                for r in result}
        return all(key in seen and math.isclose(seen[key], value, rel_tol=0.3, abs_tol=0.002)
                   for key, value in expected.items())

    exporters.prometheus.wait_for(query, ready, timeout_s=30)


@pytest.fixture
def shared_namespaces(service_exporters: ServiceExporters) -> Iterator[tuple[str, str]]:
    """Fresh namespace names in both exporters, removed afterwards."""
    blue, green = names()
    yield blue, green
    for fleet in (service_exporters.api, service_exporters.producer):
        fleet.remove(blue)
        fleet.remove(green)


# -- pairs that share namespaces ------------------------------------------------------------------


def test_pairs_sharing_a_namespace_never_share_a_source_call() -> None:
    """Batches never name a namespace twice; pairs without overlap stay in one batch."""
    api, producer = shared_pairs("b", "g")
    alone = PairConfig(name="web", namespaces=("x", "y"),
                       routes=(RouteRef(name="web-live", namespace="routing"),))
    groups = batches(targets_for([Assignment(p, "g", "b") for p in (api, producer)]
                                 + [Assignment(alone, "y", "x")]))
    assert len(groups) == 2
    for group in groups:
        assert len({t.namespace for t in group}) == len(group)
    assert sorted(len(g) for g in groups) == [2, 4]


async def test_overlapping_pairs_are_judged_on_their_own_series(
        service_exporters: ServiceExporters, shared_namespaces: tuple[str, str]) -> None:
    """api's dark serves 50 % errors, producer's dark none, in the same two namespaces:
    api is unsafe with 0.5, producer safe with 0 (by selector and by variable)."""
    blue, green = shared_namespaces
    serve_traffic(service_exporters, blue, green, api_green=0.5, producer_green=0.0)
    rules = RuleSet(rules=(error_rule("by-selector", "${selector}"),
                           error_rule("by-variable", 'service="${service}"')))
    prom = PrometheusSource(service_exporters.prometheus.url, timeout=3)
    evaluator = Evaluator(rules, {"prometheus": prom}, window=10, source_timeout=5)
    try:
        for order in (("api", "producer"), ("producer", "api")):
            pairs = {p.name: p for p in shared_pairs(blue, green)}
            verdicts = await evaluator.evaluate(
                [Assignment(pairs[name], green, blue) for name in order])
            api, producer = verdicts["api"], verdicts["producer"]
            assert api.verdict == "unsafe", (order, api.reasons)
            assert producer.verdict == "safe", (order, producer.reasons)
            for result in api.candidate.results:
                assert result.status == "fail" and result.value == pytest.approx(0.5, rel=0.2)
                assert result.baseline_value is not None and result.baseline_value < 0.01
            for result in producer.candidate.results:
                assert result.status == "pass" and result.value == pytest.approx(0.0, abs=0.002)
    finally:
        await prom.close()


def _deployment(ns: str, service: str, image: str) -> dict[str, Any]:
    labels = {"service": service}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": service, "namespace": ns, "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": service, "image": image}]}}},
    }


def _route(name: str, service: str, active: str) -> dict[str, Any]:
    return {
        "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": "routing"},
        "spec": {"entryPoints": ["web"], "routes": [{
            "match": f"Host(`{service}.example.com`)", "kind": "Rule",
            "services": [{"name": f"{service}-service", "namespace": active, "port": 8080}]}]},
    }


def _shared_config(tmp_path: Any, blue: str, green: str, prometheus_url: str) -> Any:
    import yaml

    from gatekeeper.config import load_config

    rules = [{"name": "error-rate", "source": "prometheus", "key": True, "weight": 3,
              "query": ERROR_RATIO.format(match="${selector}"), "pass": ["< 0.01"]},
             {"name": "pods-ready", "source": "kubernetes", "check": "pods_ready",
              "pass": ["== 1"], "key": True}]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}))
    config = {
        "evaluation": {"interval": "1s", "window": "10s", "source_timeout": "3s"},
        "rule_files": ["rules.yaml"],
        "prometheus": {"url": prometheus_url, "timeout": "3s"},
        "pairs": [{"name": p.name, "namespaces": [blue, green], "selector": p.selector,
                   "variables": p.variables,
                   "routes": [{"name": r.name, "namespace": r.namespace} for r in p.routes]}
                  for p in shared_pairs(blue, green)],
        "policy": {"auto_flip": False, "soak": "1s", "consecutive_passes": 2,
                   "observation": "1h", "cooldown": "60s", "ready_timeout": "10s"},
        "leader_election": {"enabled": False},
    }
    (tmp_path / "gatekeeper.yaml").write_text(yaml.safe_dump(config))
    return load_config(tmp_path / "gatekeeper.yaml")


async def test_flip_check_of_overlapping_pairs_answers_each_pair_on_its_own(
        tmp_path: Any, kube_emulator: Any, kube_api: Any, aiohttp_server: Any,
        service_exporters: ServiceExporters, shared_namespaces: tuple[str, str]) -> None:
    """`gatekeeper serve` with api and producer in the same namespaces, api's dark broken:
    flip-check answers 409 (unsafe, error-rate) for api and 200 for producer."""
    blue, green = shared_namespaces
    kube_emulator.load([namespace(blue), namespace(green), namespace("routing"),
                        *(_deployment(ns, s, OLD) for ns in (blue, green)
                          for s in ("api", "producer")),
                        _route("api-live", "api", blue), _route("producer-live", "producer", blue)])
    serve_traffic(service_exporters, blue, green, api_green=0.5, producer_green=0.0)
    service = create_service(_shared_config(tmp_path, blue, green,
                                            service_exporters.prometheus.url),
                             kube_api, token=TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    views = service.controller.views
    try:
        await wait_until(lambda: all(v.state.active == blue for v in views.values()),
                         within=15, what="first evaluation")
        apps = client.AppsV1Api(kube_api)
        for svc in ("api", "producer"):
            body = await read_json(apps.read_namespaced_deployment, svc, green)
            body["spec"]["template"]["spec"]["containers"][0]["image"] = NEW
            await read_json(apps.replace_namespaced_deployment, svc, green, body)
        await wait_until(lambda: views["producer"].state.phase == "ready", within=30,
                         what="producer ready")
        async with aiohttp.ClientSession() as http:
            status, api = await get_json(http, f"{url}/api/v1/pairs/api/flip-check")
            assert status == 409 and api["verdict"] == "unsafe", api
            assert any(r.startswith(f"error-rate [key] on {green}: 0.") and "misses < 0.01" in r
                       for r in api["reasons"]), api["reasons"]
            status, producer = await get_json(http, f"{url}/api/v1/pairs/producer/flip-check")
            assert status == 200 and producer["verdict"] == "safe", producer
            status, detail = await get_json(http, f"{url}/api/v1/pairs/api")
            dark = {r["rule"]: r for r in detail["result"]["candidate"]["results"]}
            assert dark["error-rate"]["value"] == pytest.approx(0.5, rel=0.2)
    finally:
        await service.close()


# -- Alertmanager: garbage, unprocessed and suppressed alerts --------------------------------------


def _alert_rule() -> Rule:
    return Rule.model_validate({"name": "critical-alerts", "source": "alertmanager", "key": True,
                                "matchers": {"severity": "critical"}, "pass": ["== 0"]})


def _pair_targets(blue: str, green: str) -> list[Target]:
    return [Target(pair="api", namespace=blue, other=green),
            Target(pair="api", namespace=green, other=blue)]


async def test_alertmanager_suppressed_alerts_are_reported_not_counted(alertmanager: Any) -> None:
    """Real Alertmanager: a silenced critical alert is not firing (value 0, the rule passes)
    but the result says it is there; an active one next to it is counted."""
    blue, green = names()
    alertmanager.post_alerts([make_alert("Loud", blue), make_alert("Hushed", green),
                              make_alert("Hushed", blue)])
    alertmanager.silence({"alertname": "Hushed"}, 300)
    rules = RuleSet(rules=(_alert_rule(),))
    source = AlertmanagerSource(alertmanager.url, timeout=3)
    pair = PairConfig(name="api", namespaces=(blue, green),
                      routes=(RouteRef(name="api-live", namespace="routing"),))
    try:
        verdict = (await Evaluator(rules, {"alertmanager": source}, window=10).evaluate(
            [Assignment(pair, green, blue)]))["api"]
    finally:
        await source.close()
    dark, active = verdict.candidate.results[0], verdict.baseline.results[0]
    assert dark.status == "pass" and dark.value == 0
    assert dark.details["measured"] == ("no firing alerts matching severity=critical; 1 "
                                        "suppressed (silenced or inhibited, not counted): Hushed")
    assert active.status == "fail" and active.value == 1
    assert active.details["measured"].startswith("1 firing alert(s) matching severity=critical: "
                                                 "Loud; 1 suppressed")


class AlertmanagerStandIn:
    """A stand-in for Alertmanager's `GET /api/v2/alerts`, answering 200 with a fixed body.

    Used only for what a real Alertmanager cannot be made to answer: garbage with a 200
    (a proxy or another service at its address), and alerts in state `unprocessed` (0.25
    reports new alerts as active at once; other versions report them unprocessed).
    """

    def __init__(self, aiohttp_server: Any) -> None:
        self._start = aiohttp_server
        self.body: Any = []
        self.url = ""

    async def start(self) -> AlertmanagerStandIn:
        async def alerts(_request: web.Request) -> web.Response:
            return web.json_response(self.body)

        app = web.Application()
        app.router.add_get("/api/v2/alerts", alerts)
        server = await self._start(app)
        self.url = str(server.make_url("")).rstrip("/")
        return self


def _alert_body(namespace: str, state: str, name: str = "HighErrorRate") -> dict[str, Any]:
    return {"labels": {"alertname": name, "namespace": namespace, "severity": "critical"},
            "annotations": {}, "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "2026-01-01T01:00:00Z", "fingerprint": "0",
            "receivers": [{"name": "null"}], "updatedAt": "2026-01-01T00:00:00Z",
            "status": {"state": state, "silencedBy": [], "inhibitedBy": []}}


@pytest.mark.parametrize(("body", "named"), [
    ([1, "two", None], "item 0 is not an alert"),
    ([{"alerts": []}], "item 0 has no 'labels'"),
    ([{"labels": {"namespace": "x"}, "status": "firing"}], "item 0 has no 'status.state'"),
    ([{"labels": {"namespace": "x"}, "status": {"state": "exploded"}}], "unknown state"),
    ({"status": "success", "data": []}, "expected a list of alerts, got dict"),
    ("no alerts", "expected a list of alerts, got str"),
])
async def test_alertmanager_garbage_is_a_source_error_not_no_alerts(
        aiohttp_server: Any, body: Any, named: str) -> None:
    """A 200 whose body is not a list of alerts makes the alert rule `error` and the
    verdict `unknown`, naming what was wrong (stand-in server: see its docstring)."""
    stand_in = await AlertmanagerStandIn(aiohttp_server).start()
    stand_in.body = body
    blue, green = names()
    source = AlertmanagerSource(stand_in.url, timeout=3)
    pair = PairConfig(name="api", namespaces=(blue, green),
                      routes=(RouteRef(name="api-live", namespace="routing"),))
    try:
        verdict = (await Evaluator(RuleSet(rules=(_alert_rule(),)), {"alertmanager": source},
                                   window=10).evaluate([Assignment(pair, green, blue)]))["api"]
    finally:
        await source.close()
    result = verdict.candidate.results[0]
    assert result.status == "error" and named in result.reason, result.reason
    assert verdict.verdict == "unknown"


async def test_alertmanager_unprocessed_alerts_count_as_firing(aiohttp_server: Any) -> None:
    """An alert in state `unprocessed` is firing: the dark fails (stand-in: see docstring)."""
    stand_in = await AlertmanagerStandIn(aiohttp_server).start()
    blue, green = names()
    stand_in.body = [_alert_body(green, "unprocessed"), _alert_body(blue, "suppressed", "Old")]
    source = AlertmanagerSource(stand_in.url, timeout=3)
    try:
        result = await source.measure(_alert_rule(), _pair_targets(blue, green), window=10,
                                      variables={})
    finally:
        await source.close()
    assert result[green].status == "ok" and result[green].value == 1
    assert result[blue].status == "ok" and result[blue].value == 0
    assert "1 suppressed" in result[blue].message


# -- several series for one namespace ----------------------------------------------------------

BY_SERVICE = (
    'sum by (namespace, service) (rate(http_requests_total{namespace=~"${namespaces}", '
    'status=~"5.."}[${window}])) / sum by (namespace, service) (rate(http_requests_total'
    '{namespace=~"${namespaces}"}[${window}]))'
)
BY_JOB = ERROR_RATIO.replace("by (namespace)", "by (namespace, job)").format(
    match='service="api"')


async def _measure_prometheus(url: str, rule: Rule, blue: str, green: str,
                              **options: Any) -> dict[str, Any]:
    source = PrometheusSource(url, timeout=3, **options)
    try:
        return await source.measure(rule, _pair_targets(blue, green), window=10, variables={})
    finally:
        await source.close()


async def test_several_series_for_one_namespace_is_an_error_naming_the_query(
        service_exporters: ServiceExporters, shared_namespaces: tuple[str, str]) -> None:
    """green holds api at 0 % and producer at 50 % errors; a query that keeps `service`
    (or `job`: two jobs scrape the api exporter) gives two series for green: an error
    naming the query and the series, not the first series' 0."""
    blue, green = shared_namespaces
    serve_traffic(service_exporters, blue, green, api_green=0.0, producer_green=0.5)
    service_exporters.prometheus.wait_for(  # both jobs' rates, not only the first one's
        f'count(sum by (job) (rate(http_requests_total{{namespace="{green}", service="api"}}'
        f'[10s]))) == 2', timeout_s=30)
    url = service_exporters.prometheus.url
    for query, labels in ((BY_SERVICE, ('service="api"', 'service="producer"')),
                          (BY_JOB, ('job="api-exporter"', 'job="api-exporter-copy"'))):
        rule = Rule.model_validate({"name": "errors", "source": "prometheus", "query": query,
                                    "pass": ["< 0.01"]})
        result = (await _measure_prometheus(url, rule, blue, green))[green]
        assert result.status == "error", result
        assert result.message.startswith(f"query returned 2 series for namespace {green}")
        assert all(label in result.message for label in labels), result.message
        assert "by (namespace)" in result.message and "series: worst" in result.message
        assert f'namespace=~"{blue}|{green}"' in result.message  # the query itself


async def test_series_worst_judges_the_worst_series(
        service_exporters: ServiceExporters, shared_namespaces: tuple[str, str]) -> None:
    """With `series: worst` the highest error ratio (upper-bound criteria) is judged; with
    lower-bound criteria (success ratio > 0.99) the lowest is."""
    blue, green = shared_namespaces
    serve_traffic(service_exporters, blue, green, api_green=0.0, producer_green=0.5)
    url = service_exporters.prometheus.url
    errors = Rule.model_validate({"name": "errors", "source": "prometheus", "query": BY_SERVICE,
                                  "pass": ["< 0.01"], "series": "worst"})
    result = (await _measure_prometheus(url, errors, blue, green))[green]
    assert result.status == "ok" and result.value == pytest.approx(0.5, rel=0.2)
    assert result.message == 'worst of 2 series: {service="producer"}'
    success = Rule.model_validate({"name": "success", "source": "prometheus",
                                   "query": f"1 - ({BY_SERVICE})", "pass": ["> 0.99"],
                                   "series": "worst"})
    result = (await _measure_prometheus(url, success, blue, green))[green]
    assert result.value == pytest.approx(0.5, rel=0.2)
    assert result.message.endswith('{service="producer"}')


def test_series_worst_needs_a_direction() -> None:
    """`series: worst` with criteria on both sides (or `==`) is refused: no worst exists."""
    with pytest.raises(ValueError, match="series: worst' needs criteria"):
        Rule.model_validate({"name": "x", "source": "prometheus", "query": "up",
                             "pass": ["> 0.1", "< 0.9"], "series": "worst"})


def test_rules_validate_warns_on_a_query_without_by_namespace(
        tmp_path: Any, capsys: Any) -> None:
    """A Prometheus query without `by (namespace)` is a warning (exit 0) naming file:line,
    rule and field; the shipped rules give none."""
    import yaml

    from gatekeeper.cli import main

    rules = [{"name": "loose", "source": "prometheus", "pass": ["< 1"],
              "query": 'rate(http_requests_total{namespace=~"${namespaces}"}[${window}])'},
             {"name": "tight", "source": "prometheus", "pass": ["< 1"],
              "query": BY_SERVICE.replace("namespace, service", "namespace"),
              "samples_query": "sum(up)"}]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}, sort_keys=False))
    assert main(["rules", "validate", str(tmp_path / "rules.yaml")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith(f"{tmp_path / 'rules.yaml'}:") and "warning: rule 'loose': " \
        "field 'rules[0].query': no `by (namespace)`" in err[0], err[0]
    assert "rule 'tight': field 'rules[1].samples_query'" in err[1], err[1]
    assert main(["rules", "validate", "rules"]) == 0
    assert capsys.readouterr().err == ""


# -- Prometheus partial answers and stale samples ------------------------------------------------


class PartialPrometheus:
    """A stand-in for Prometheus's query API answering `success` with `warnings`.

    Real Prometheus returns warnings for partial answers (a remote-read or federated
    backend that failed), which cannot be provoked with one local server; everything
    else in these tests runs against real Prometheus.
    """

    def __init__(self, aiohttp_server: Any, namespace_value: dict[str, float]) -> None:
        self._start = aiohttp_server
        self.values = namespace_value
        self.url = ""
        self.forms: list[dict[str, str]] = []

    async def start(self) -> PartialPrometheus:
        async def query(request: web.Request) -> web.Response:
            self.forms.append(dict(await request.post()))
            now = __import__("time").time()
            result = [{"metric": {"namespace": ns}, "value": [now, str(v)]}
                      for ns, v in self.values.items()]
            return web.json_response({"status": "success", "warnings": [
                "remote_read: store eu-west unavailable, answer is partial"],
                "data": {"resultType": "vector", "result": result}})

        app = web.Application()
        app.router.add_post("/api/v1/query", query)
        server = await self._start(app)
        self.url = str(server.make_url("")).rstrip("/")
        return self


async def test_a_partial_answer_is_unknown_unless_the_rule_accepts_it(
        aiohttp_server: Any) -> None:
    """`warnings` in a success answer: the rule is an error naming them, the verdict
    unknown; with `accept_partial: true` the value is judged (stand-in: see docstring)."""
    blue, green = names()
    stand_in = await PartialPrometheus(aiohttp_server, {blue: 0.0, green: 0.0}).start()
    pair = PairConfig(name="api", namespaces=(blue, green),
                      routes=(RouteRef(name="api-live", namespace="routing"),))
    for accept, expected in ((False, "unknown"), (True, "safe")):
        rule = error_rule("error-rate", 'service="api"', accept_partial=accept)
        source = PrometheusSource(stand_in.url, timeout=3)
        try:
            verdict = (await Evaluator(RuleSet(rules=(rule,)), {"prometheus": source},
                                       window=10).evaluate([Assignment(pair, green, blue)]))["api"]
        finally:
            await source.close()
        assert verdict.verdict == expected, verdict.reasons
        result = verdict.candidate.results[0]
        if not accept:
            assert result.status == "error"
            assert "partial result" in result.reason and "eu-west unavailable" in result.reason
    assert all("time" not in form for form in stand_in.forms)


async def test_samples_outside_the_staleness_bound_are_no_data(
        service_exporters: ServiceExporters, shared_namespaces: tuple[str, str]) -> None:
    """Real Prometheus, gatekeeper's clock an hour ahead or behind: its samples are stamped
    an hour from gatekeeper's clock, so no data; Prometheus still chooses the evaluation
    time (behind by an hour, `time=` would have found no series at all). Within the bound,
    the same answers are judged, for instant and for range (compare) rules."""
    import time

    blue, green = shared_namespaces
    serve_traffic(service_exporters, blue, green, api_green=0.0, producer_green=0.0)
    # The range rule needs a window's worth of rate() points: at least 8 of the last 10 s.
    service_exporters.prometheus.wait_for(
        f'count_over_time((sum by (namespace) (rate(http_requests_total{{namespace="{green}"}}'
        f'[10s])))[10s:1s]) >= 8', timeout_s=30)
    url = service_exporters.prometheus.url
    instant = error_rule("errors", 'service="api"')
    ranged = Rule.model_validate({"name": "ranged", "source": "prometheus",
                                  "query": ERROR_RATIO.format(match='service="api"'),
                                  "compare": {"step": "1s", "min_samples": 3}})
    for rule in (instant, ranged):
        # The age is the clock minus the samples' stamp: a second more when the query took
        # a while on a loaded machine.
        for shift, when in ((3600.0, r"360[0-9]s in the past"), (-3600.0, "in the future")):
            result = (await _measure_prometheus(
                url, rule, blue, green, max_sample_age=60,
                clock=lambda shift=shift: time.time() + shift))[green]
            assert result.status == "no_data", (rule.name, shift, result)
            assert "stamped" in result.message and re.search(when, result.message), \
                result.message
        fresh = (await _measure_prometheus(url, rule, blue, green, max_sample_age=60,
                                           clock=lambda: time.time() + 30))[green]
        assert fresh.status == "ok" and fresh.value == pytest.approx(0.0, abs=0.01), fresh
        if rule.compare is not None:
            assert len(fresh.samples) >= 5


# -- a verdict of unbounded age --------------------------------------------------------------------


def test_a_stale_verdict_is_unknown_to_the_lifecycle() -> None:
    """Pure: a `safe` verdict older than its bound neither flips a ready pair nor passes
    flip-check; a failing active health read from it rolls nothing back; fresh, it does."""
    from dataclasses import replace

    from gatekeeper import lifecycle
    from gatekeeper.config import PolicyConfig
    from gatekeeper.lifecycle import Observation, ReleaseState

    policy = PolicyConfig(auto_flip=True, soak=0, consecutive_passes=1, observation=100,
                          rollback_on_gate_failures=1, cooldown=0)
    seen = Observation(active="b", dark="g", active_images=("app:1",), dark_images=("app:2",),
                       dark_replicas=2, dark_ready=True, verdict="safe", active_health="pass",
                       verdict_at=100.0, verdict_max_age=3.0)
    ready = ReleaseState(phase="ready", active="b", dark="g",
                         dark_seen=lifecycle.fingerprint(("app:2",)), passes=1)
    assert [a.kind for a in lifecycle.step(ready, seen, policy, 102.0).actions] == ["flip"]
    late = lifecycle.step(ready, seen, policy, 104.0)
    assert list(late.actions) == []
    assert late.state.phase == "validating" and "4s old (bound 3s)" in late.state.reason
    assert lifecycle.flip_check(ready, seen, policy, 102.0) == []
    reasons = lifecycle.flip_check(ready, seen, policy, 104.0)
    assert reasons[:2] == ["verdict on g is unknown",
                           "the verdict is 4s old (bound 3s): the evaluation is late, so it "
                           "is unknown"]
    # A clock that went back is no fresher: the verdict is unknown too.
    assert lifecycle.flip_check(ready, seen, policy, 90.0) != []
    flipped = lifecycle.completed(ready, lifecycle.Action("flip", "g", trigger="auto"),
                                  100.0).state
    failing = replace(seen, active="g", dark="b", active_images=("app:2",),
                      dark_images=("app:1",), active_health="fail", active_reasons=("x",))
    assert [a.kind for a in lifecycle.step(flipped, failing, policy, 101.0).actions] == [
        "rollback"]
    assert list(lifecycle.step(flipped, failing, policy, 110.0).actions) == []


async def test_flip_check_stops_saying_safe_when_the_evaluation_is_late(
        tmp_path: Any, kube_emulator: Any, kube_api: Any, aiohttp_server: Any,
        service_exporters: ServiceExporters, shared_namespaces: tuple[str, str]) -> None:
    """`gatekeeper serve`: the dark is ready and flip-check answers 200; then the API
    server answers route reads 8 s late and the dark breaks: within the 3 s bound (plus
    one tick and one poll) flip-check answers 409 `unknown` naming the verdict's age, and
    the pair API shows the verdict unknown, instead of 200 "safe" until the read returns.
    The route watches are refused first, so each tick must GET the routes (the cache
    would otherwise answer them and the tick would not be late)."""
    import asyncio
    import time

    import yaml

    from gatekeeper.config import load_config

    blue, green = shared_namespaces
    kube_emulator.load([namespace(blue), namespace(green), namespace("routing"),
                        *(_deployment(ns, "api", OLD) for ns in (blue, green)),
                        _route("api-live", "api", blue)])
    serve_traffic(service_exporters, blue, green, api_green=0.0, producer_green=0.0)
    rules = [{"name": "error-rate", "source": "prometheus", "key": True,
              "query": ERROR_RATIO.format(match='service="api"'), "pass": ["< 0.01"]}]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}))
    (tmp_path / "gatekeeper.yaml").write_text(yaml.safe_dump({
        "evaluation": {"interval": "1s", "window": "10s", "source_timeout": "3s",
                       "max_verdict_age": "3s"},
        "rule_files": ["rules.yaml"],
        "prometheus": {"url": service_exporters.prometheus.url, "timeout": "3s"},
        "pairs": [{"name": "api", "namespaces": [blue, green], "selector": "service=api",
                   "routes": [{"name": "api-live", "namespace": "routing"}]}],
        "policy": {"auto_flip": False, "soak": "1s", "consecutive_passes": 2,
                   "observation": "1h", "cooldown": "60s", "ready_timeout": "10s"},
        "leader_election": {"enabled": False}}))
    service = create_service(load_config(tmp_path / "gatekeeper.yaml"), kube_api, token=TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    view = service.controller.views["api"]
    try:
        await wait_until(lambda: view.state.active == blue, within=15, what="first evaluation")
        apps = client.AppsV1Api(kube_api)
        body = await read_json(apps.read_namespaced_deployment, "api", green)
        body["spec"]["template"]["spec"]["containers"][0]["image"] = NEW
        await read_json(apps.replace_namespaced_deployment, "api", green, body)
        await wait_until(lambda: view.state.phase == "ready", within=30, what="ready")
        async with aiohttp.ClientSession() as http:
            status, answer = await get_json(http, f"{url}/api/v1/pairs/api/flip-check")
            assert status == 200 and answer["safe"], answer
            await uncache_routes(service, kube_emulator)
            kube_emulator.faults.add(delay=8.0, path="ingressroutes", verb="get")
            service_exporters.api.set_profile(green, error_ratio=0.5)
            broke = time.monotonic()
            answers = []
            while time.monotonic() - broke < 6.0:
                status, answer = await get_json(http, f"{url}/api/v1/pairs/api/flip-check")
                answers.append((round(time.monotonic() - broke, 1), status, answer["status"]))
                if status == 409:
                    break
                await asyncio.sleep(0.25)
            assert status == 409 and answer["status"] == "unknown", answers
            assert answer["verdict"] == "unknown"
            assert any("old (bound 3s): the evaluation is late" in r
                       for r in answer["reasons"]), answer["reasons"]
            status, detail = await get_json(http, f"{url}/api/v1/pairs/api")
            assert detail["verdict"] == "unknown" and "old (bound 3s)" in detail["verdict_stale"]
    finally:
        kube_emulator.faults.configure([])
        await service.close()
