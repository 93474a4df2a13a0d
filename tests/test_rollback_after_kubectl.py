"""A person rolls back with kubectl; `gatekeeper rollback` then must not undo their rollback.

The issue's reproduction: gatekeeper flips blue -> green, a person points the routes back at
blue with kubectl, then someone runs `gatekeeper rollback` (CLI or `POST .../rollback`). The
traffic is already where a rollback would send it: the answer is "nothing to do", and the
routes stay on blue. (It used to flip to green, the release that was just rolled back,
while the lifecycle said there was nothing to roll back to.)

Everything runs through kubernetes_asyncio against the emulated API server; the person's edits
go through another client, as `kubectl edit` would (GET, change, PUT).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from gatekeeper.kubeclient import TimeoutApiClient, read_json
from gatekeeper.operations import Operations
from gatekeeper.service.app import create_service
from kube_emulator import Emulator, running
from kube_emulator.kubeconfig import DUMMY_TOKEN
from tests import service_support as support
from tests.fixtures.kube import BLUE, GREEN
from tests.reliability.test_kube_faults import IR, ROUTES, pair_config, three_route_seed

pytestmark = pytest.mark.timeout(60)


def _client(url: str) -> client.ApiClient:
    configuration = client.Configuration(host=url)
    configuration.api_key = {"authorization": DUMMY_TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return TimeoutApiClient(configuration, request_timeout=2.0)


async def kubectl_point(person: client.ApiClient, namespace: str, name: str,
                        target: str) -> None:
    """A person points one route's service at `target` (kubectl edit: GET, change, PUT)."""
    objects = client.CustomObjectsApi(person)
    body = await read_json(objects.get_namespaced_custom_object, "traefik.io", "v1alpha1",
                           namespace, "ingressroutes", name)
    body["spec"]["routes"][0]["services"][0]["namespace"] = target
    await read_json(objects.replace_namespaced_custom_object, "traefik.io", "v1alpha1",
                    namespace, "ingressroutes", name, body)


def pointed(emulator: Emulator) -> set[str]:
    """Where the routes send traffic now (read from the emulator's store)."""
    targets = set()
    for namespace, name in ROUTES:
        body = emulator.get_object(IR, "IngressRoute", name, namespace)
        assert body is not None
        targets.add(body["spec"]["routes"][0]["services"][0]["namespace"])
    return targets


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[tuple[Emulator, client.ApiClient, client.ApiClient]]:
    """Blue active behind three routes, both namespaces Ready; gatekeeper's and a person's
    clients."""
    async with running(three_route_seed(), ready_delay=0.0) as emulator:
        api, person = _client(str(emulator.url)), _client(str(emulator.url))
        try:
            yield emulator, api, person
        finally:
            await api.close()
            await person.close()


async def test_a_rollback_after_a_kubectl_rollback_is_a_no_op(cluster):
    """The CLI's path (`Operations`, a fresh one per command as `gatekeeper rollback` makes):
    after the kubectl rollback the record follows the routes (rolled back, nothing
    to roll back to) and `rollback` answers so without moving traffic."""
    emulator, api, person = cluster
    flipped = await Operations(api, pair_config()).flip(pair_config().pairs[0])
    assert flipped.changed and flipped.active == GREEN, flipped.reasons
    for namespace, name in ROUTES:
        await kubectl_point(person, namespace, name, BLUE)
    assert pointed(emulator) == {BLUE}

    ops = Operations(api, pair_config())
    back = await ops.rollback(ops.config.pairs[0], reason="after kubectl")
    assert not back.changed, back.reasons
    assert pointed(emulator) == {BLUE}
    assert "already rolled back" in back.reasons[0], back.reasons

    status = await ops.status(ops.config.pairs[0])
    assert status.state.phase == "rolled_back" and status.state.previous is None
    # One record: the lifecycle's fields are stored once, not beside a second copy.
    stored = emulator.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper")
    assert stored is not None
    record = json.loads(stored["data"][ops.config.pairs[0].name])
    assert not {"active", "dark", "previous", "phase"} & set(record), record
    assert record["lifecycle"]["phase"] == "rolled_back", record
    assert record["lifecycle"]["previous"] is None, record


async def test_api_rollback_after_a_kubectl_rollback_is_a_no_op(
        tmp_path: Any, kube_emulator: Emulator, kube_api: client.ApiClient,
        aiohttp_server: Any) -> None:
    """The same through a running service: flip by the API, kubectl back to blue, the next
    evaluations follow it, `POST .../rollback` leaves blue serving."""
    sb, sg, sr = "rk-blue", "rk-green", "rk-routing"
    kube_emulator.load(support.seed(sb, sg, sr, green_image=support.NEW))
    loaded = support.write_config(tmp_path, [("api", sb, sg, sr)], prometheus_url=None,
                                  rules=[support.PODS_READY_RULE], policy={"auto_flip": False})
    service = create_service(loaded, kube_api, token=support.TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    person = _client(str(kube_emulator.url))
    try:
        await support.wait_until(lambda: service.controller.ticks >= 1, within=10,
                                 what="first evaluation")
        async with aiohttp.ClientSession() as http:
            status, body = await support.post_json(http, f"{url}/api/v1/pairs/api/flip",
                                                   {"force": True})
            assert status == 200 and body["changed"], body
            assert await support.route_target(kube_api, sr) == sg
            await kubectl_point(person, sr, "api-live", sb)
            ticks = service.controller.ticks
            await support.wait_until(lambda: service.controller.ticks >= ticks + 2, within=10,
                                     what="two evaluations after the kubectl rollback")
            assert service.controller.views["api"].state.phase == "rolled_back"
            status, body = await support.post_json(http, f"{url}/api/v1/pairs/api/rollback",
                                                   {"reason": "after kubectl"})
    finally:
        await person.close()
        await service.close()
    assert status == 200 and not body["changed"], body
    assert "already rolled back" in body["reasons"][0], body
    assert await support.route_target(kube_api, sr) == sb
