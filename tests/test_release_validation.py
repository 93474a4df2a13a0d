"""Validating a release through the running service against the emulated cluster: the dark
is validated at the size that will take traffic, and a dark that never turns Ready ends in
`blocked` (with a notification) after `policy.ready_timeout` instead of waiting forever."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from gatekeeper.operations import Operations
from gatekeeper.service.app import create_service
from tests.service_support import (
    NEW,
    PODS_READY_RULE,
    TOKEN,
    get_json,
    post_json,
    replicas,
    seed,
    wait_until,
    webhook_receiver,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

BLUE, GREEN, ROUTING = "api-blue", "api-green", "api-routing"


@pytest.fixture
async def start_service(tmp_path, kube_emulator, kube_api, aiohttp_server):
    """Starts `gatekeeper serve`'s app for pair `api` (blue live, green dark on new images at
    `green_replicas`); judged on pod readiness only."""
    started = []

    async def start(*, green_replicas: int = 2, policy: dict[str, Any] | None = None,
                    notifications: dict[str, Any] | None = None) -> Any:
        kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW,
                                green_replicas=green_replicas))
        loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                              rules=[PODS_READY_RULE],
                              policy={"auto_flip": False, **(policy or {})},
                              notifications=notifications or {})
        service = create_service(loaded, kube_api, token=TOKEN)
        server = await aiohttp_server(service.app)
        started.append(service)
        await wait_until(lambda: service.controller.ticks > 0, within=10, what="first tick")
        return service, str(server.make_url("")).rstrip("/")

    yield start
    for service in started:
        await service.close()


async def test_a_dark_kept_at_one_replica_is_validated_at_production_size(
        start_service: Any, kube_api: client.ApiClient) -> None:
    """scale_down_keep: 1 left the dark at 1 pod: validating scales it to the active's 2
    first, and no pass counts before both pods are Ready."""
    service, url = await start_service(green_replicas=1, policy={"soak": "1s"})
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/approve", {})
        assert status == 200 and body["phase"] == "validating", body
    view = service.controller.views["api"]
    await wait_until(lambda: view.state.phase == "ready", within=20, what="ready")
    assert await replicas(kube_api, GREEN) == 2


async def test_a_dark_that_never_turns_ready_is_blocked_after_ready_timeout(
        start_service: Any, kube_emulator: Any, aiohttp_server: Any, tmp_path: Any) -> None:
    """Pods that never pass their readiness probe: `blocked` naming ready_timeout and the
    pods, and the notifier tells the configured webhook."""
    received, url_file = await webhook_receiver(aiohttp_server, tmp_path)
    service, url = await start_service(
        policy={"ready_timeout": "2s"},
        notifications={"receivers": [{"kind": "webhook", "url_file": str(url_file)}]})
    for pod in kube_emulator.pods(GREEN):
        kube_emulator.set_pod_ready(GREEN, pod["metadata"]["name"], False)
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/approve", {})
        assert status == 200 and body["phase"] == "validating", body
    view = service.controller.views["api"]
    await wait_until(lambda: view.state.phase == "blocked", within=15, what="blocked")
    assert "ready_timeout 2s" in view.state.reason and "api-green" in view.state.reason
    await wait_until(lambda: received, within=10, what="a notification")
    assert any("ready_timeout" in str(notice) for notice in received), received




async def _series(url: str, name: str) -> set[tuple[str, str, str]]:
    """(namespace, role, rule) of every `name` sample of pair `api` on /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    return {(s.labels["namespace"], s.labels["role"], s.labels.get("rule", ""))
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and s.labels.get("pair") == "api"}


async def test_after_a_flip_outside_the_service_metrics_show_each_rule_once_per_namespace(
        start_service: Any, kube_api: client.ApiClient) -> None:
    """A flip made by the CLI (Operations on the cluster, not the service): once the service
    has evaluated again, every rule appears once per namespace, under its current role."""
    service, url = await start_service()
    view = service.controller.views["api"]
    assert await _series(url, "gatekeeper_rule_value") == {
        (BLUE, "active", "pods-ready"), (GREEN, "dark", "pods-ready")}
    cli = Operations(kube_api, service.controller.config)
    flipped = await cli.flip(service.controller.config.pairs[0], force=True)
    assert flipped.changed, flipped.reasons
    await wait_until(lambda: view.state.active == GREEN, within=10, what="the flip seen")
    expected = {(GREEN, "active", "pods-ready"), (BLUE, "dark", "pods-ready")}
    evaluated = service.controller.ticks
    await wait_until(lambda: service.controller.ticks > evaluated + 1, within=10,
                     what="two more evaluations")
    for name in ("gatekeeper_rule_value", "gatekeeper_rule_status"):
        assert await _series(url, name) == expected, name
    assert {(ns, role) for ns, role, _ in await _series(
        url, "gatekeeper_namespace_score_ratio")} == {(GREEN, "active"), (BLUE, "dark")}


async def test_flux_owning_the_darks_replicas_is_a_warning_in_the_api(
        start_service: Any, kube_emulator: Any) -> None:
    """GET /api/v1/pairs/api names the Flux-managed Deployment whose overlay sets replicas."""
    from tests.test_operations import flux_managed

    service, url = await start_service()
    flux_managed(kube_emulator, GREEN, owns_replicas=True)
    async with aiohttp.ClientSession() as http:
        async def warned() -> bool:
            status, body = await get_json(http, f"{url}/api/v1/pairs/api")
            return status == 200 and bool(body["readiness"][GREEN].get("warnings"))

        ticks = service.controller.ticks
        await wait_until(lambda: service.controller.ticks > ticks + 1, within=10, what="ticks")
        assert await warned()
        _, body = await get_json(http, f"{url}/api/v1/pairs/api")
    assert "Flux will undo" in body["readiness"][GREEN]["warnings"][0]
    assert body["readiness"][BLUE]["warnings"] == []
