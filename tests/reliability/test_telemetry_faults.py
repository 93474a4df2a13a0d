"""Telemetry faults during evaluation: the verdict is `unknown`, nothing is flipped or rolled
back for lack of data, and gatekeeper recovers when the data returns.

The service runs as `gatekeeper serve` wires it (`create_service`), against real Prometheus
(and a loopback proxy in front of it that answers errors on demand), the emulated Kubernetes
API and, for the webhook, no reachable Alertmanager at all.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gatekeeper.service.app import create_service
from telemetry_sandbox import ScrapeTarget
from tests.fixtures.telemetry import FLEET_JOB
from tests.service_support import (
    NEW,
    PODS_READY_RULE,
    TOKEN,
    free_port,
    post_json,
    rfc3339,
    route_target,
    seed,
    set_image,
    wait_until,
    write_config,
    writes,
)

pytestmark = pytest.mark.timeout(120)

HEALTHY = {"rps": 50.0, "error_ratio": 0.001}
FAST = {"interval": "1s", "window": "10s", "source_timeout": "2s"}


class FaultyPrometheus:
    """A loopback proxy to a real Prometheus that can answer each query with a fault."""

    MODES = ("pass", "500", "503", "garbage", "truncated", "error_json", "empty", "nan",
             "slow")

    def __init__(self, upstream: str, namespaces: tuple[str, ...] = ()) -> None:
        self.upstream = upstream.rstrip("/")
        self.namespaces = namespaces
        self.mode = "pass"
        self.answered: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mode = self.mode
        self.answered[mode] += 1
        if mode == "500":
            return web.Response(status=500, text="internal server error")
        if mode == "503":
            return web.Response(status=503, text="Service Unavailable")
        if mode == "garbage":
            return web.Response(status=200, text="<html>a proxy error page</html>",
                                content_type="text/html")
        if mode == "truncated":
            return web.Response(status=200, text='{"status":"success","data":{"resultTy',
                                content_type="application/json")
        if mode == "error_json":
            return web.json_response({"status": "error", "errorType": "execution",
                                      "error": "query processing would load too many samples"},
                                     status=422)
        if mode in ("empty", "nan"):
            result = [] if mode == "empty" else [
                {"metric": {"namespace": ns}, "value": [time.time(), "NaN"]}
                for ns in self.namespaces]
            return web.json_response({"status": "success",
                                      "data": {"resultType": "vector", "result": result}})
        if mode == "slow":
            await asyncio.sleep(3.0)
        assert self._session is not None
        async with self._session.request(
                request.method, self.upstream + request.path_qs, data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "")}) as answer:
            return web.Response(body=await answer.read(), status=answer.status,
                                content_type=answer.content_type)


@pytest.fixture
async def start_service(aiohttp_server, kube_api) -> AsyncIterator[Any]:
    """Start `create_service` for a loaded configuration; closed after the test."""
    started = []

    async def run(loaded: Any) -> tuple[Any, str]:
        service = create_service(loaded, kube_api, token=TOKEN)
        server = await aiohttp_server(service.app)
        started.append(service)
        return service, str(server.make_url("")).rstrip("/")

    yield run
    for service in started:
        await service.close()


async def ticks(service: Any, count: int, *, within: float = 30.0) -> list[Any]:
    """Wait for `count` more completed ticks; the verdict object seen after each."""
    controller = service.controller
    seen = []
    for _ in range(count):
        target = controller.ticks + 1
        await wait_until(lambda t=target: controller.ticks >= t, within=within, interval=0.05,
                         what="a tick")
        seen.append(controller.views["api"].verdict)
    return seen


def route_patches(emulator: Any) -> list[str]:
    """Writes to IngressRoutes (flips and rollbacks)."""
    return [w for w in writes(emulator) if "/ingressroutes/" in w]


async def test_prometheus_answering_errors_never_flips_and_recovery_does(
    tmp_path, kube_emulator, kube_api, prometheus, synthetic_fleet, unique_pair, start_service
):
    """A dark release waiting for its passes while Prometheus answers 500, 503, an HTML
    page, truncated JSON, an execution error, no series, NaN, or nothing within the
    timeout: every verdict is unknown, no pass is counted, nothing is flipped. When the
    answers come back, the release flips on its own."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    kube_emulator.load(seed(blue, green, routing))
    synthetic_fleet.set_profile(blue, **HEALTHY)
    synthetic_fleet.set_profile(green, **HEALTHY)
    proxy = FaultyPrometheus(prometheus.url, (blue, green))
    await proxy.start()
    try:
        loaded = write_config(
            tmp_path, [("api", blue, green, routing)], prometheus_url=None,
            evaluation=FAST, prometheus={"url": proxy.url, "timeout": "1s"},
            policy={"auto_flip": True, "soak": "1s", "consecutive_passes": 2})
        proxy.mode = "500"
        service, _url = await start_service(loaded)
        view = service.controller.views["api"]
        await wait_until(lambda: view.state.active == blue, within=15, what="first tick")
        await set_image(kube_api, green, NEW)  # a release lands in the dark namespace
        await wait_until(lambda: view.state.phase == "validating", within=15,
                         what="validating")
        seen: Counter[str] = Counter()
        for mode in FaultyPrometheus.MODES[1:]:
            proxy.mode = mode
            await ticks(service, 1)  # the tick in flight may predate the mode
            for verdict in await ticks(service, 1):
                assert verdict is not None and verdict.verdict == "unknown", (mode, verdict)
                assert any("error-rate" in r and "unknown" in r for r in verdict.reasons)
                seen[mode] += 1
            assert view.state.phase == "validating" and view.state.passes == 0, mode
        assert route_patches(kube_emulator) == []
        assert await route_target(kube_api, routing) == blue
        faulted = sum(n for m, n in proxy.answered.items() if m != "pass")
        proxy.mode = "pass"
        recovered = time.monotonic()
        await wait_until(lambda: view.state.phase == "flipped", within=40, what="the flip")
        took = time.monotonic() - recovered
        assert await route_target(kube_api, routing) == green
        print(f"\n[prometheus errors] unknown verdicts per mode {dict(seen)}; "
              f"{faulted} Prometheus queries faulted; 0 flips during faults; "
              f"flipped {took:.1f}s after the answers came back")
    finally:
        await proxy.close()


async def test_prometheus_stopped_or_hung_after_a_flip_never_rolls_back(
    tmp_path, kube_emulator, kube_api, synthetic_fleet, unique_pair, prometheus_factory,
    start_service
):
    """After a flip, with rollback after 2 failing evaluations: Prometheus stopped, then
    hung (SIGSTOP, answers after the timeout) for several evaluations each: unknown, no
    failure counted, no rollback; each time it returns the verdict is safe again."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    kube_emulator.load(seed(blue, green, routing, green_image=NEW))
    synthetic_fleet.set_profile(blue, **HEALTHY)
    synthetic_fleet.set_profile(green, **HEALTHY)
    target = ScrapeTarget(FLEET_JOB, (synthetic_fleet.address,), honor_labels=True)
    prom = await asyncio.to_thread(prometheus_factory, [target])
    await asyncio.to_thread(prom.wait_for_scrapes, FLEET_JOB, timeout_s=30)
    loaded = write_config(
        tmp_path, [("api", blue, green, routing)], prometheus_url=None, evaluation=FAST,
        prometheus={"url": prom.url, "timeout": "1s"},
        policy={"auto_flip": False, "rollback_on_gate_failures": 2})
    service, url = await start_service(loaded)
    view = service.controller.views["api"]
    await wait_until(lambda: view.verdict is not None and view.verdict.verdict == "safe",
                     within=40, what="a safe verdict")
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip",
                                       {"force": True, "reason": "release"})
    assert status == 200 and body["changed"], body
    await wait_until(lambda: view.observation is not None
                     and view.observation.active_health == "pass", within=30,
                     what="the new active's key gates passing")
    patches = len(route_patches(kube_emulator))
    unknown: Counter[str] = Counter()
    for fault, inject, heal in (("stopped", prom.stop, prom.restart),
                                ("hung", prom.pause, prom.resume)):
        await asyncio.to_thread(inject)
        await ticks(service, 1)
        for verdict in await ticks(service, 3):
            assert verdict is not None and verdict.verdict == "unknown", (fault, verdict)
            assert view.observation is not None
            assert view.observation.active_health == "unknown"
            assert view.state.phase == "flipped" and view.state.failures == 0, fault
            unknown[fault] += 1
        assert len(route_patches(kube_emulator)) == patches, f"{fault}: routes written"
        await asyncio.to_thread(heal)
        await wait_until(lambda: view.verdict is not None and view.verdict.verdict == "safe",
                         within=40, what=f"recovery after {fault}")
    assert await route_target(kube_api, routing) == green
    assert view.state.phase == "flipped"
    print(f"\n[prometheus down after a flip] unknown evaluations {dict(unknown)}; "
          "0 failures counted, 0 rollbacks, safe again after each recovery")


async def test_alertmanager_unreachable_alert_rules_unknown_webhook_rollback_works(
    tmp_path, kube_emulator, kube_api, unique_pair, start_service
):
    """Alertmanager's API unreachable: the alert rule is unknown (so is the verdict, never
    safe), while its webhook, which needs no connection to Alertmanager, still rolls back."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    kube_emulator.load(seed(blue, green, routing, green_image=NEW))
    alerts_rule = {"name": "critical-alerts", "source": "alertmanager",
                   "matchers": {"severity": "critical"}, "pass": ["== 0"], "key": True}
    loaded = write_config(
        tmp_path, [("api", blue, green, routing)], prometheus_url=None, evaluation=FAST,
        rules=[PODS_READY_RULE, alerts_rule],
        alertmanager={"url": f"http://127.0.0.1:{free_port()}", "timeout": "1s"},
        policy={"auto_flip": False})
    service, url = await start_service(loaded)
    view = service.controller.views["api"]
    verdicts = await ticks(service, 3)
    for verdict in verdicts:
        assert verdict is not None and verdict.verdict == "unknown"
        results = {r.rule: r.status for r in verdict.candidate.results}
        assert results == {"pods-ready": "pass", "critical-alerts": "error"}, results
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip", {"force": True})
        assert status == 200 and body["changed"], body
        labels = {"alertname": "ApiDown", "namespace": green, "severity": "critical"}
        payload = {"version": "4", "status": "firing", "receiver": "gatekeeper",
                   "groupLabels": {}, "commonLabels": labels, "commonAnnotations": {},
                   "externalURL": "http://am", "groupKey": "{}", "alerts": [
                       {"status": "firing", "labels": labels, "annotations": {},
                        "startsAt": rfc3339(), "fingerprint": "f00d"}]}
        started = time.monotonic()
        status, body = await post_json(http, f"{url}/api/v1/alertmanager", payload)
        took = time.monotonic() - started
    assert status == 200 and body["outcome"] == "rollback", body
    assert await route_target(kube_api, routing) == blue
    assert view.state.phase == "rolled_back"
    print(f"\n[alertmanager unreachable] {len(verdicts)} evaluations unknown "
          f"(critical-alerts: error); webhook rollback answered in {took * 1000:.0f} ms")
