"""ProbeSource against a small local aiohttp service whose paths stand for namespaces."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule
from gatekeeper.sources.base import Target, measure_each
from gatekeeper.sources.probes import MISSING, ProbeSource, lookup

HEALTHY = {"status": "Healthy", "checks": [{"name": "ServiceBus", "status": "Healthy"}]}


def _app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        if namespace.endswith("-down"):
            return web.json_response({"status": "Unhealthy"}, status=503)
        if namespace.endswith("-degraded"):
            return web.json_response(
                {"status": "Degraded",
                 "checks": [{"name": "ServiceBus", "status": "Unhealthy"}]}
            )
        return web.json_response(HEALTHY)

    async def franchise(request: web.Request) -> web.Response:
        if request.match_info["namespace"].endswith("-nolinks"):
            return web.json_response({"name": "LSU Tigers", "links": {"self": ""}})
        return web.json_response({"name": "LSU Tigers", "links": {"self": "/franchises/lsu"}})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response(HEALTHY)

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/login")

    app = web.Application()
    app.router.add_get("/{namespace}/health", health)
    app.router.add_get("/{namespace}/franchise", franchise)
    app.router.add_get("/{namespace}/slow", slow)
    app.router.add_get("/{namespace}/text", text)
    app.router.add_get("/{namespace}/redirect", redirect)
    return app


@pytest.fixture
async def base_url(aiohttp_server):
    server = await aiohttp_server(_app())
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def source():
    probe_source = ProbeSource()
    yield probe_source
    await probe_source.close()


def _rule(url: str, **probe) -> Rule:
    return Rule.model_validate(
        {"name": "probe", "source": "probe", "probe": {"url": url, **probe}, "pass": ["== 1"]}
    )


def _targets(*namespaces: str) -> list[Target]:
    return [Target(pair="production", namespace=ns, other="x") for ns in namespaces]


async def test_healthy_and_unhealthy_namespaces(source, base_url):
    """Each namespace's own URL is probed; status and JSON checks decide 1 or 0."""
    rule = _rule(f"{base_url}/${{namespace}}/health", expect_json={"status": "Healthy"})
    result = await source.measure(
        rule, _targets("green", "blue-down", "red-degraded"), window=300, variables={}
    )
    assert result["green"].status == "ok" and result["green"].value == 1.0
    assert result["green"].query == f"{base_url}/green/health"
    assert "all checks passed" in result["green"].message
    assert result["blue-down"].value == 0.0
    assert "HTTP 503, expected 200" in result["blue-down"].message
    assert "field status is 'Unhealthy', expected 'Healthy'" in result["blue-down"].message
    assert result["red-degraded"].value == 0.0
    assert "'Degraded'" in result["red-degraded"].message
    assert " ms)" in result["red-degraded"].message


async def test_select_by_field_like_jq(source, base_url):
    """`checks[name=ServiceBus].status` reproduces the seed's jq select."""
    rule = _rule(f"{base_url}/${{namespace}}/health",
                 expect_json={"checks[name=ServiceBus].status": "Healthy"})
    result = await source.measure(rule, _targets("green", "red-degraded"), window=300,
                                  variables={})
    assert result["green"].value == 1.0
    assert result["red-degraded"].value == 0.0
    assert "checks[name=ServiceBus].status" in result["red-degraded"].message


async def test_required_field_missing_or_empty(source, base_url):
    """`require_fields` fails on an empty HATEOAS link and on a missing one."""
    rule = _rule(f"{base_url}/${{namespace}}/franchise", require_fields=["links.self"])
    result = await source.measure(rule, _targets("green", "blue-nolinks"), window=300,
                                  variables={})
    assert result["green"].value == 1.0
    assert result["blue-nolinks"].value == 0.0
    assert "required field links.self empty" in result["blue-nolinks"].message
    missing = _rule(f"{base_url}/${{namespace}}/franchise", require_fields=["links.next"])
    result = await source.measure(missing, _targets("green"), window=300, variables={})
    assert "required field links.next missing" in result["green"].message


async def test_slow_endpoint_fails_on_timeout(source, base_url):
    """A response slower than the timeout is a failed probe, not an error."""
    rule = _rule(f"{base_url}/${{namespace}}/slow", timeout="200ms")
    result = await source.measure(rule, _targets("green"), window=300, variables={})
    assert result["green"].status == "ok" and result["green"].value == 0.0
    assert "no answer within 0.2s" in result["green"].message


async def test_probes_run_concurrently(source, base_url):
    """Ten slow probes take about one timeout, not ten."""
    rule = _rule(f"{base_url}/${{namespace}}/slow", timeout="300ms")
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await source.measure(rule, _targets(*(f"ns{i}" for i in range(10))),
                                  window=300, variables={})
    assert loop.time() - started < 2.0
    assert {m.value for m in result.values()} == {0.0}


async def test_connection_refused_is_a_failed_probe(source):
    """A service nobody listens on fails the probe (value 0), it is not missing data."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rule = _rule(f"http://127.0.0.1:{port}/${{namespace}}/health")
    result = await source.measure(rule, _targets("green"), window=300, variables={})
    assert result["green"].status == "ok" and result["green"].value == 0.0
    assert "connection refused" in result["green"].message


async def test_unknown_host_is_a_failed_probe(source):
    """An unresolvable service name (no Service in that namespace) fails the probe."""
    rule = _rule("http://api-service.${namespace}.invalid/health", timeout="3s")
    result = await source.measure(rule, _targets("green"), window=300, variables={})
    assert result["green"].value == 0.0
    assert "api-service.green.invalid" in result["green"].message


async def test_not_json_and_redirect(source, base_url):
    """A non-JSON body fails JSON checks; a redirect is checked as is, not followed."""
    rule = _rule(f"{base_url}/${{namespace}}/text", expect_json={"status": "Healthy"})
    result = await source.measure(rule, _targets("green"), window=300, variables={})
    assert "body is not JSON" in result["green"].message
    rule = _rule(f"{base_url}/${{namespace}}/redirect")
    result = await source.measure(rule, _targets("green"), window=300, variables={})
    assert "HTTP 302, expected 200" in result["green"].message


async def test_variables_fill_the_template(source, base_url):
    """Rule variables and the target's own variables fill the URL; unknown ones are errors."""
    rule = _rule("${base}/${namespace}/${page}")
    targets = [Target(pair="p", namespace="green", other="blue", variables={"page": "health"})]
    result = await source.measure(rule, targets, window=300, variables={"base": base_url})
    assert result["green"].value == 1.0
    rule = _rule("${base}/${namespace}/${nowhere}")
    result = await source.measure(rule, targets, window=300, variables={"base": base_url})
    assert result["green"].status == "error"
    assert "nowhere" in result["green"].message


def test_lookup_paths():
    """Dotted paths reach keys, list indexes and selected list elements."""
    document = {"a": {"b": [{"n": "x", "v": 1}, {"n": "y", "v": 2}]}}
    assert lookup(document, "a.b.1.v") == 2
    assert lookup(document, "a.b[0].n") == "x"
    assert lookup(document, "a.b[n=y].v") == 2
    assert lookup(document, "a.c") is MISSING
    assert lookup(document, "a.b.5") is MISSING
    assert lookup(document, "a.b[n=z]") is MISSING


async def test_a_crash_measuring_one_target_is_its_error_and_spares_the_others():
    """measure_each (probes and logs): a bug measuring one namespace fails closed for that
    namespace only; the other namespaces keep their measurements."""
    targets = [Target("api", "green", "blue"), Target("api", "blue", "green")]

    async def measure(target):
        if target.namespace == "green":
            raise RuntimeError("a bug")
        return Measurement.ok(1.0)

    got = await measure_each(targets, measure, source="probe", rule="health")
    assert got["green"].status == "error"
    assert got["green"].message == "probe: internal error: RuntimeError('a bug')"
    assert got["blue"] == Measurement.ok(1.0)
