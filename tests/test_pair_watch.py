"""The BlueGreenPair objects followed by a watch in the running service (service.pairwatch),
against the emulator serving the CRD, through kubernetes_asyncio over HTTP: an object added,
edited or deleted changes that pair only, within seconds, while every other pair keeps
ticking; no restart. A spec edit while the pair's action runs waits for it to end."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from gatekeeper import crd
from gatekeeper.kubeclient import read_json
from gatekeeper.service.app import Service
from tests.service_support import (
    NEW,
    get_json,
    seed,
    serve_pair_objects,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

WITHIN = 30.0
"""Seconds a change may take to apply on a loaded machine (it takes well under one)."""


def pair_object(name: str, *, selector: str = "app=api") -> dict[str, Any]:
    return {"apiVersion": crd.API_VERSION, "kind": crd.KIND,
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"namespaces": [f"{name}-blue", f"{name}-green"], "selector": selector,
                     "routes": [{"name": "api-live", "namespace": f"{name}-routing"}]}}


@pytest.fixture
def cluster(kube_emulator: Any) -> Any:
    kube_emulator.load([crd.definition(), {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": "team"}}])
    return kube_emulator


def declare(cluster: Any, name: str) -> None:
    cluster.load(seed(f"{name}-blue", f"{name}-green", f"{name}-routing", green_image=NEW))
    cluster.load(pair_object(name))


async def edit(api: client.ApiClient, name: str, spec: dict[str, Any]) -> None:
    """Read, change the spec, replace (with the resourceVersion read), as `kubectl edit`."""
    objects = client.CustomObjectsApi(api)
    obj = await read_json(objects.get_namespaced_custom_object, crd.GROUP, crd.VERSION,
                          "team", crd.PLURAL, name)
    obj["spec"].update(spec)
    await read_json(objects.replace_namespaced_custom_object, crd.GROUP, crd.VERSION,
                    "team", crd.PLURAL, name, obj)


@dataclasses.dataclass
class Running:
    service: Service
    url: str

    @property
    def controller(self) -> Any:
        return self.service.controller


@pytest.fixture
async def running(tmp_path, cluster, kube_api, aiohttp_server) -> AsyncIterator[Running]:
    """`gatekeeper serve`'s service over pairs `a` and `b`, declared as objects."""
    for name in ("a", "b"):
        declare(cluster, name)
    service, server = await serve_pair_objects(tmp_path, kube_api, aiohttp_server)
    try:
        yield Running(service, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
        await service.close()


def verdict(service: Running, name: str) -> str | None:
    view = service.controller.views.get(name)
    return view.verdict.verdict if view is not None and view.verdict is not None else None


async def listed(service: Running) -> list[str]:
    async with aiohttp.ClientSession() as http:
        _code, body = await get_json(http, f"{service.url}/api/v1/pairs")
    return sorted(p["pair"] for p in body["pairs"])


async def test_objects_added_edited_and_deleted_change_only_their_pair(running, cluster,
                                                                     kube_api):
    service, controller = running, running.controller
    with capture_logs() as logs:
        await wait_until(lambda: verdict(service, "a") == verdict(service, "b") == "safe",
                         within=WITHIN, what="both pairs judged safe")
        ticks = controller.ticks

        declare(cluster, "c")
        await wait_until(lambda: verdict(service, "c") == "safe", within=WITHIN,
                         what="the added object's pair judged")
        assert await listed(service) == ["a", "b", "c"]
        # The watch's first pass found the pairs the service started with unchanged.
        assert not [e for e in logs if e["event"] in ("pair's new spec served",
                                                      "pair no longer served")]

        # An edited spec is judged with the new spec: no pod matches the new selector.
        b_judged = controller.views["b"].evaluated_at
        await edit(kube_api, "a", {"selector": "app=nothing-matches"})
        await wait_until(lambda: controller.views["a"].pair.selector == "app=nothing-matches"
                         and verdict(service, "a") not in (None, "safe"), within=WITHIN,
                         what="the edited pair judged with its new spec")
        assert controller.views["b"].evaluated_at > b_judged  # the others went on ticking

        cluster.delete_object(crd.API_VERSION, crd.KIND, "b", "team")
        await wait_until(lambda: "b" not in controller.views, within=WITHIN,
                         what="the deleted object's pair gone")
        assert await listed(service) == ["a", "c"]
        async with aiohttp.ClientSession() as http:
            code, _body = await get_json(http, f"{service.url}/api/v1/pairs/b")
        assert code == 404

        # An edit the models refuse takes the pair away (fails closed) and says why.
        await edit(kube_api, "c", {"namespaces": ["c-blue", "c-blue"]})
        await wait_until(lambda: "c" not in controller.views, within=WITHIN,
                         what="the invalidated pair gone")

        def condition() -> list[str]:
            status = cluster.get_object(crd.API_VERSION, crd.KIND, "c", "team").get(
                "status") or {}
            return [c["message"] for c in status.get("conditions") or []
                    if c["type"] == "Valid" and c["status"] == "False"]

        await wait_until(lambda: condition(), within=WITHIN, what="the Valid=False condition")
        assert "namespaces" in condition()[0]
        await wait_until(lambda: controller.ticks > ticks + 3, within=WITHIN,
                         what="more ticks")
    failed = [e for e in logs if e["log_level"] in ("error", "critical")
              and e["event"] != "BlueGreenPair skipped: its spec is invalid"]
    assert not failed, failed  # no "lifecycle step failed", no failed tick
    assert controller.dispatcher.closing is False  # the same service all along


async def test_a_spec_edited_during_an_action_waits_for_it_to_end(running, kube_api):
    """The pair's lock is what an action in flight holds (flip, rollback, scaling): held
    here, the new spec waits; the other pair keeps ticking; released, it applies."""
    service, controller = running, running.controller
    await wait_until(lambda: verdict(service, "a") == "safe", within=WITHIN,
                     what="pair a judged")
    old = controller.views["a"].pair
    async with controller.pairs.locks["a"]:
        await edit(kube_api, "a", {"selector": "app=nothing-matches"})
        await wait_until(lambda: controller.settling == ["a"], within=WITHIN,
                         what="the edit waiting for the action")
        ticks = controller.ticks
        b_judged = controller.views["b"].evaluated_at
        await wait_until(lambda: controller.ticks >= ticks + 2, within=WITHIN,
                         what="two more ticks")
        assert controller.views["a"].pair is old
        assert controller.views["b"].evaluated_at > b_judged
    await wait_until(lambda: controller.views["a"].pair.selector == "app=nothing-matches",
                     within=WITHIN, what="the edit applied after the action")
    assert controller.settling == []
