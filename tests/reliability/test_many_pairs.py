"""Many pairs: watch streams must not starve the calls that act.

`gatekeeper serve` keeps a cache of every pair's Pods, Deployments and routes through watch
streams. At 25 pairs with their own namespaces that was 101 streams, each holding a
connection of the Kubernetes client's pool (100): every other call waited for a free
connection that never came, so first-sight state was never written, flips through the API
timed out and critical alerts were answered "ignored".

The service is the real aiohttp application (`create_service`) with its watcher, talking HTTP
to the emulated API server through kubernetes_asyncio with the client `gatekeeper serve`
builds (`kubeclient.TimeoutApiClient`, default pool).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from gatekeeper import kubeclient
from gatekeeper.service.app import Service, create_service
from kube_emulator import Emulator
from kube_emulator.kubeconfig import DUMMY_TOKEN
from tests.service_support import (
    PODS_READY_RULE,
    TOKEN,
    deployment,
    ingressroute,
    namespace,
    post_json,
    route_target,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(300)

IMAGE = "registry.example.com/api:1.4.0"
_fingerprints = itertools.count(1)


def names(count: int, prefix: str) -> list[tuple[str, str, str, str]]:
    """(pair, blue, green, routing namespace) for `count` pairs, each its own namespaces and
    its own routing namespace (so each route is its own watch stream, as in the field)."""
    return [(f"{prefix}{k}", f"{prefix}{k}-blue", f"{prefix}{k}-green", f"{prefix}{k}-routing")
            for k in range(count)]


def cluster(pairs: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """Blue live everywhere, one replica per namespace."""
    objects = [namespace("gatekeeper")]
    for _name, blue, green, routing in pairs:
        objects += [namespace(blue), namespace(green), namespace(routing),
                    deployment(blue, IMAGE, 1), deployment(green, IMAGE, 1),
                    ingressroute(routing, blue)]
    return objects


def alert(target: str) -> dict[str, Any]:
    """Alertmanager's webhook body for one new critical alert on namespace `target`."""
    labels = {"alertname": "ApiDown", "namespace": target, "severity": "critical"}
    starts = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    return {
        "version": "4", "groupKey": f'{{}}:{{namespace="{target}"}}', "truncatedAlerts": 0,
        "status": "firing", "receiver": "gatekeeper", "groupLabels": labels,
        "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                    "fingerprint": f"{next(_fingerprints):016x}"}],
    }


def serve_client(emulator: Emulator) -> kubeclient.TimeoutApiClient:
    """The client `gatekeeper serve` builds (10 s request timeout, the default pool)."""
    configuration = client.Configuration(host=str(emulator.url))
    configuration.api_key = {"authorization": DUMMY_TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return kubeclient.TimeoutApiClient(configuration, request_timeout=10.0)


Start = Callable[[int, str], Any]


@pytest.fixture
async def start(tmp_path, kube_emulator, aiohttp_server) -> AsyncIterator[Start]:
    """Seed `count` pairs and start the whole service (watcher on) against them."""
    opened: list[tuple[Service, kubeclient.TimeoutApiClient]] = []

    async def run(count: int, prefix: str, *, interval: str = "2s",
                  watch: dict[str, Any] | None = None,
                  lease: bool = False) -> tuple[Service, str, Any]:
        pairs = names(count, prefix)
        kube_emulator.load(cluster(pairs))
        loaded = write_config(tmp_path, pairs, prometheus_url=None, rules=[PODS_READY_RULE],
                              evaluation={"interval": interval},
                              policy={"auto_flip": False, "cooldown": "0s"},
                              kubernetes={"watch": watch or {}},
                              leader_election={"enabled": lease, "namespace": "gatekeeper"})
        api = serve_client(kube_emulator)
        service = create_service(loaded, api, token=TOKEN)
        opened.append((service, api))
        server = await aiohttp_server(service.app)
        return service, str(server.make_url("")).rstrip("/"), pairs

    yield run
    for service, api in opened:
        await service.close()
        await api.close()


async def first_sight(service: Service, pairs: list[tuple[str, str, str, str]],
                      within: float) -> None:
    """Every pair's state records its live namespace: the first tick read and wrote it."""
    views = service.controller.views
    await wait_until(lambda: all(views[name].state.active == blue
                                 for name, blue, _green, _routing in pairs),
                     within=within, what="first-sight state of every pair")


async def flip_and_roll_back(url: str, api: client.ApiClient,
                             pairs: list[tuple[str, str, str, str]]) -> None:
    """Flip each pair to green through the API, then roll it back by a critical alert."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for name, _blue, green, routing in pairs:
            status, body = await post_json(http, f"{url}/api/v1/pairs/{name}/flip",
                                           {"force": True, "reason": "many pairs"})
            assert status == 200 and body["active"] == green, (name, status, body)
            assert await route_target(api, routing) == green
        for name, blue, green, routing in pairs:
            status, body = await post_json(http, f"{url}/api/v1/alertmanager", alert(green))
            assert status == 200 and body.get("outcome") == "rollback", (name, status, body)
            assert await route_target(api, routing) == blue


@pytest.mark.parametrize(("watch", "streams"), [
    ({}, 3),  # auto: 150 per-namespace streams are over max_streams, so one per kind
    ({"scope": "namespaces", "max_streams": 150}, 150),  # each on the watcher's own pool
])
async def test_thirty_pairs_still_act_while_every_namespace_is_watched(
        start, kube_emulator, kube_api, watch, streams):
    """30 pairs with their own namespaces (150 streams at one per resource and namespace,
    more than the client's 100 connections): first-sight state is written for every pair,
    flips through the API and alert rollbacks through the webhook complete."""
    service, url, pairs = await start(30, "w", watch=watch)
    await first_sight(service, pairs, within=60)
    await kube_emulator.wait_for(lambda: kube_emulator.open_watches >= streams, within=30)
    assert kube_emulator.open_watches == streams
    await flip_and_roll_back(url, kube_api, pairs[:3] + pairs[-2:])


async def test_two_hundred_pairs_flip_and_roll_back(start, kube_emulator, kube_api):
    """200 pairs (400 namespaces, 200 routes), leader election on: every pair's first-sight
    state is written, and flips through the API and alert rollbacks through the webhook
    still complete (each needs the Lease, renewed meanwhile on its own connections)."""
    service, url, pairs = await start(200, "h", interval="5s", lease=True)
    await first_sight(service, pairs, within=180)
    chosen = pairs[::40] + pairs[-1:]
    await flip_and_roll_back(url, kube_api, chosen)
    assert kube_emulator.open_watches == 3
