"""Synthetic load and checks (gatekeeper.drivers.load): the schedule, configuration
validation, the generator against a real HTTP service, the `validation` rule source, and the
whole service where a dark without user traffic is validated on gatekeeper's load alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import yaml

from gatekeeper.config import load_config
from gatekeeper.drivers import DriverTarget
from gatekeeper.drivers.load import LoadDriver, Tally, due, pick
from gatekeeper.metrics import Recorder
from gatekeeper.outcomes import Outcome, OutcomeBoard
from gatekeeper.rules import Rule
from gatekeeper.service.app import create_service
from gatekeeper.sources.base import Target
from gatekeeper.sources.validation import ValidationSource
from gatekeeper.yamlfiles import ConfigFileError
from telemetry_sandbox import SyntheticApp
from telemetry_sandbox.servicedns import ServiceDNS
from tests.service_support import (
    ERROR_RATE_RULE,
    NEW,
    PODS_READY_RULE,
    TOKEN,
    metric_value,
    route_target,
    seed,
    set_image,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

SERVICE_URL = "http://api-service.${namespace}.svc:8080"
FRANCHISE = {"path": "/api/franchises/lsu-tigers", "expect_json": {"id": "lsu-tigers"},
             "require_fields": ["links.self"], "max_latency": "2s"}


# -- the schedule ------------------------------------------------------------------------------

@pytest.mark.parametrize(("rate", "ramp", "elapsed", "expected"), [
    (10, 0, 3, 30), (10, 0, 0, 0), (10, 4, 2, 5), (10, 4, 4, 20), (10, 4, 6, 40),
    (500, 10, 10, 2500), (100, 2, -1, 0),
])
def test_requests_due_follow_a_linear_ramp_then_the_rate(rate, ramp, elapsed, expected):
    assert due(rate, ramp, elapsed) == pytest.approx(expected)


def test_requests_are_picked_in_proportion_to_their_weights_and_spread_out():
    choose = pick([3, 1])
    picks = [choose() for _ in range(8)]
    assert picks.count(0) == 6 and picks.count(1) == 2
    assert picks[:4].count(1) == 1  # spread, not a run of three then one


def test_the_tally_forgets_checks_older_than_its_window():
    tally = Tally(window=5)
    for second in range(10):
        tally.sent(100 + second + 0.5)
        tally.checked(100 + second + 0.5, ("status", "x") if second < 5 else None)
    sent, checked, failed = tally.totals(110.0)
    assert (checked, failed) == (5, 0) and sent == 5
    assert tally.totals(110.0, 2)[0] == 2


# -- configuration -----------------------------------------------------------------------------

def _config(tmp_path: Path, load: dict, **top) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": [PODS_READY_RULE]}))
    document = {"rule_files": ["rules.yaml"], **top, "pairs": [{
        "name": "api", "namespaces": ["blue", "green"],
        "routes": [{"name": "live", "namespace": "routing"}], "load": load}]}
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _problems(path: Path) -> str:
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    return str(caught.value)


def _line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1)
                if text in line)


def test_a_valid_load_configuration_loads(tmp_path):
    loaded = load_config(_config(tmp_path, {"url": SERVICE_URL, "rate": 50, "ramp": "10s",
                                            "requests": [FRANCHISE, {"path": "/health"}]}))
    load = loaded.config.pairs[0].load
    assert load is not None and load.rate == 50 and load.ramp == 10
    assert load.requests[0].max_latency == 2 and load.requests[1].label == "GET /health"


@pytest.mark.parametrize(("load", "top", "key", "says"), [
    ({"rate": 900}, {}, "rate", "900 is above the ceiling load_limits.max_rate (200)"),
    ({"rate": 900}, {"load_limits": {"max_rate": 1000}}, None, None),
    ({"concurrency": 512}, {}, "concurrency", "above the ceiling load_limits.max_concurrency"),
    ({"url": "http://api-service.blue.svc:8080"}, {}, "url", "outside the dark namespace"),
    ({"url": "http://10.0.0.7:8080"}, {}, "url", "outside the dark namespace"),
    ({"url": "http://api.${other}.svc"}, {}, "url", "unknown variable(s) other"),
    ({"requests": [{"path": "http://db.example.com/wipe"}]}, {}, "path",
     "outside the dark namespace"),
    ({"requests": [{"path": "api/x"}]}, {}, "path", "must start with '/'"),
    ({"requests": [{"path": "/x", "expect_json": {"checks[0": "ok"}}]}, {}, "expect_json",
     "cannot be followed at character 7"),
    ({"requests": [{"path": "/x", "require_fields": [""]}]}, {}, "require_fields",
     "an empty path"),
    ({"requests": [{"path": "/x", "body": "a", "json": {"b": 1}}]}, {}, "body",
     "give 'body' or 'json', not both"),
    ({"requests": [{"path": "/x", "expect_status": 700}]}, {}, "expect_status",
     "less than or equal to 599"),
])
def test_bad_load_configuration_is_refused_naming_file_line_and_key(tmp_path, load, top,
                                                                     key, says):
    spec = {"url": SERVICE_URL, "rate": 10, "requests": [{"path": "/health"}], **load}
    path = _config(tmp_path, spec, **top)
    if says is None:
        assert load_config(path).config.pairs[0].load.rate == 900
        return
    problems = _problems(path)
    assert says in problems, problems
    line = _line_of(path, f"{key}:") if key not in ("body",) else _line_of(path, "- path:")
    assert f"{path}:{line}: pair 'api': field 'pairs[0].load." in problems, problems


# -- the generator against a real service ------------------------------------------------------

@pytest.fixture
async def dark_app():
    """A real HTTP service for namespace `green`, reachable as api-service.green.svc:8080."""
    async with SyntheticApp("green") as app:
        dns = ServiceDNS()
        dns.add("api-service", "green", 8080, app.port)
        yield app, dns


def _target(tmp_path, load: dict) -> DriverTarget:
    loaded = load_config(_config(tmp_path, {"url": SERVICE_URL, **load}))
    pair = loaded.config.pairs[0]
    return DriverTarget(pair, "green", "blue", "r1",
                        variables={"namespace": "green", "other": "blue", "pair": "api"})


async def _drive(driver: LoadDriver, target: DriverTarget, seconds: float) -> list[Outcome]:
    outcomes: list[Outcome] = []
    task = asyncio.create_task(driver.run(target, outcomes.append))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await driver.stop(target, "flip")
    return outcomes


async def test_the_load_reaches_the_dark_at_its_rate_and_its_checks_pass(tmp_path, dark_app):
    app, dns = dark_app
    recorder = Recorder()
    driver = LoadDriver(recorder, window=10, resolver=dns)
    target = _target(tmp_path, {"rate": 40, "ramp": 0, "requests": [FRANCHISE]})
    outcomes = await _drive(driver, target, 2.2)
    served = app.served_by_status()
    assert 70 <= sum(served.values()) <= 95, served  # 40/s for 2.2 s, bounded
    assert set(served) == {"200"}
    last = outcomes[-1]
    assert last.status == "pass" and last.value == 1.0 and last.samples >= 60, last
    text = recorder.registry
    sent = text.get_sample_value("gatekeeper_load_requests_total", {"pair": "api"})
    assert 0 <= sent - sum(served.values()) <= 16  # those in flight at the stop, at most
    assert 'namespace="green"' in app.render_metrics()  # the app counts them per namespace


async def test_failed_checks_say_why_and_count_by_reason(tmp_path, dark_app):
    app, dns = dark_app
    app.set_profile(error_ratio=0.25)
    recorder = Recorder()
    driver = LoadDriver(recorder, window=10, resolver=dns)
    target = _target(tmp_path, {"rate": 40, "ramp": 0, "requests": [
        FRANCHISE, {"path": "/api/franchises/saints", "expect_json": {"league": "NBA"}}]})
    outcomes = await _drive(driver, target, 1.6)
    last = outcomes[-1]
    assert last.status == "fail" and last.value is not None and last.value <= 0.6, last
    assert "synthetic checks failed" in last.reason
    assert "field league is 'NFL', expected 'NBA'" in last.reason or "HTTP 5" in last.reason
    by_reason = {reason: recorder.registry.get_sample_value(
        "gatekeeper_load_failed_total", {"pair": "api", "reason": reason}) or 0
        for reason in ("status", "json")}
    assert by_reason["status"] > 0 and by_reason["json"] > 0, by_reason


async def test_a_slow_dark_fails_on_latency_and_an_unknown_service_on_connect(tmp_path,
                                                                           dark_app):
    app, dns = dark_app
    app.set_profile(latency_p50_s=0.3, latency_p99_s=0.5)
    recorder = Recorder()
    driver = LoadDriver(recorder, window=10, resolver=dns)
    slow = _target(tmp_path, {"rate": 20, "ramp": 0, "requests": [
        {**FRANCHISE, "max_latency": "100ms"}]})
    outcomes = await _drive(driver, slow, 1.5)
    assert outcomes[-1].status == "fail" and "no answer within 0.1s" in outcomes[-1].reason
    dns.remove("green")
    outcomes = await _drive(driver, _target(tmp_path, {"rate": 20, "ramp": 0, "requests": [
        FRANCHISE]}), 1.2)
    assert outcomes[-1].status == "fail" and "cannot connect" in outcomes[-1].reason
    assert recorder.registry.get_sample_value(
        "gatekeeper_load_failed_total", {"pair": "api", "reason": "connect"}) > 0


# -- the validation rule source ----------------------------------------------------------------

async def test_the_validation_source_reads_only_the_namespace_an_outcome_is_about():
    board = OutcomeBoard()
    source = ValidationSource(board)
    rule = Rule.model_validate({"name": "checks", "source": "validation", "driver": "load",
                                "pass": [">= 0.99"], "min_samples": 20})
    targets = [Target("api", "green", "blue"), Target("api", "blue", "green")]
    first = await source.measure(rule, targets, window=60, variables={})
    assert first["green"].status == "no_data" and first["blue"].status == "no_data"
    board.post("api", "green", "r1", "load", Outcome("pass", "40 passed", value=1.0,
                                                     samples=40))
    later = await source.measure(rule, targets, window=60, variables={})
    assert later["green"].status == "ok" and later["green"].value == 1.0
    assert later["green"].sample_count == 40 and later["blue"].status == "no_data"
    board.post("api", "green", "r1", "load", Outcome("error", "the load driver crashed"))
    crashed = await source.measure(rule, targets, window=60, variables={})
    assert crashed["green"].status == "error"
    with pytest.raises(ValueError, match="needs the field 'driver'"):
        Rule.model_validate({"name": "x", "source": "validation", "pass": ["== 1"]})


# -- the whole service -------------------------------------------------------------------------

CHECKS_RULE = {"name": "integration-checks", "source": "validation", "driver": "load",
               "pass": [">= 0.99"], "min_samples": 20, "weight": 2, "key": True}


@pytest.fixture
async def validated(tmp_path, kube_emulator, kube_api, aiohttp_server, prometheus,
                    synthetic_fleet, unique_pair):
    """A service validating green on gatekeeper's load alone: green's app is scraped by
    the real Prometheus and serves no user traffic; blue has the fleet's user traffic."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    kube_emulator.load(seed(blue, green, routing))
    synthetic_fleet.set_profile(blue, rps=50.0, error_ratio=0.001)
    started = []

    async def start(**profile):
        app = await SyntheticApp(green).start()
        app.set_profile(**profile)
        job = f"dark-{green}"
        prometheus.add_scrape_target(app.address, job=job, honor_labels=True)
        loaded = write_config(
            tmp_path, [("api", blue, green, routing)], prometheus_url=prometheus.url,
            rules=[ERROR_RATE_RULE, PODS_READY_RULE, CHECKS_RULE],
            evaluation={"window": "5s"}, policy={"soak": "2s"})
        document = yaml.safe_load(loaded.path.read_text())
        document["pairs"][0]["load"] = {"url": SERVICE_URL, "rate": 25, "ramp": "1s",
                                        "requests": [FRANCHISE]}
        # Outside a cluster the Service's name is mapped to its stand-in (curl's --resolve).
        document["service_addresses"] = {f"api-service.{green}.svc:8080": app.address}
        loaded.path.write_text(yaml.safe_dump(document))
        service = create_service(load_config(loaded.path), kube_api, token=TOKEN)
        server = await aiohttp_server(service.app)
        started.append((service, server, app, job))
        view = service.controller.views["api"]
        await wait_until(lambda: view.state.active == blue, within=10, what="first tick")
        return service, app, server

    yield start, blue, green, routing
    for service, server, app, job in started:
        await server.close()
        await service.close()
        await app.stop()
        prometheus.remove_scrape_job(job)


async def test_a_dark_without_user_traffic_is_validated_on_gatekeepers_load_and_flipped(
        validated, kube_api):
    start, _blue, green, routing = validated
    service, app, _server = await start()
    view = service.controller.views["api"]
    assert sum(app.served_by_status().values()) == 0  # no traffic before the release
    await set_image(kube_api, green, NEW)
    await wait_until(lambda: view.state.phase == "flipped", within=40, what="the flip")
    assert await route_target(kube_api, routing) == green
    await asyncio.sleep(0.6)  # requests cut off at the stop finish on the server's side
    served = sum(app.served_by_status().values())
    assert served >= 20, served  # every request the dark served came from gatekeeper
    drivers = service.controller.drivers
    assert drivers.running("api") is None and drivers.stops[-1][1:] == (green, "flip")
    sent = service.recorder.registry.get_sample_value("gatekeeper_load_requests_total",
                                                      {"pair": "api"})
    assert sent - 16 <= served <= sent  # the app counted what gatekeeper sent
    after = served
    await asyncio.sleep(1.0)
    assert sum(app.served_by_status().values()) == after  # stopped at the flip


async def test_a_dark_failing_its_synthetic_checks_is_unsafe_and_stays_dark(
        validated, kube_api):
    start, blue, green, routing = validated
    service, _app, server = await start(error_ratio=0.2)
    view = service.controller.views["api"]
    await set_image(kube_api, green, NEW)
    await wait_until(lambda: view.verdict is not None and view.verdict.verdict == "unsafe",
                     within=30, what="an unsafe verdict")
    reasons = " ".join(view.verdict.reasons)
    assert "integration-checks" in reasons or "error-rate" in reasons, reasons
    assert view.state.phase == "validating"
    assert await route_target(kube_api, routing) == blue
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{str(server.make_url('')).rstrip('/')}/metrics") as response:
            exposition = await response.text()
    assert metric_value(exposition, "gatekeeper_load_failed_total", pair="api",
                        reason="status") > 0



def test_a_pair_with_load_round_trips_through_its_custom_resource():
    """A rate, a weight and a JSON body stay numbers (only durations become `1.5s`)."""
    from gatekeeper import crd
    from gatekeeper.config import PairConfig

    pair = PairConfig.model_validate({
        "name": "api", "namespaces": ["blue", "green"],
        "routes": [{"name": "live", "namespace": "routing"}],
        "load": {"url": SERVICE_URL, "rate": 5.5, "ramp": "1.5s", "requests": [
            {"path": "/x", "json": {"a": [1.5]}, "expect_json": {"b.c": True},
             "weight": 0.2}]}})
    manifest = crd.manifest_of(pair, "gatekeeper")
    assert manifest["spec"]["load"]["rate"] == 5.5 and manifest["spec"]["load"]["ramp"] == "1.5s"
    assert crd.parse_object(manifest).model_dump() == pair.model_dump()


def test_service_addresses_must_map_a_service_name_to_an_ip(tmp_path):
    spec = {"url": SERVICE_URL, "rate": 10, "requests": [{"path": "/health"}]}
    path = _config(tmp_path, spec, service_addresses={"db.example.com": "127.0.0.1:5432"})
    problems = _problems(path)
    assert f"{path}:{_line_of(path, 'service_addresses:')}: field 'service_addresses'" \
        in problems and "is not a Service name and port" in problems, problems
    path = _config(tmp_path, spec, service_addresses={"api-service.green.svc:8080": "api:80"})
    assert "is not an IP address and port" in _problems(path)
    good = {"api-service.green.svc:8080": "127.0.0.1:41000"}
    assert load_config(_config(tmp_path, spec, service_addresses=good)).config \
        .service_addresses == good


def test_a_misspelt_driver_is_refused_with_file_and_line(tmp_path):
    """`driver: laod` would read as "runs no laod driver" (a pass): refused instead."""
    from gatekeeper.rules import load_rule_set

    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump({"rules": [{**CHECKS_RULE, "driver": "laod"}]},
                                   sort_keys=False))
    with pytest.raises(ConfigFileError) as caught:
        load_rule_set([path])
    line = _line_of(path, "driver:")
    assert f"{path}:{line}:" in str(caught.value) and "'load', 'jobs' or 'mirroring'" \
        in str(caught.value), caught.value
    shipped = load_rule_set([Path(__file__).resolve().parent.parent / "rules" / "sets"
                             / "synthetic-checks.yaml"])
    assert [r.driver for r in shipped.rules] == ["load"]
