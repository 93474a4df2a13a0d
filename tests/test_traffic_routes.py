"""Mirroring and progressive splits of a gatekeeper-owned TraefikService, over HTTP against
the emulated API server (which validates TraefikServices like Traefik's CRD schema)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper.routers import reading, switching, traefikservice
from gatekeeper.routers.base import RouteConflict
from gatekeeper.routers.traefikservice import EXPOSURE, MIRRORING, Exposure
from tests.fixtures.kube import BLUE, GREEN, ROUTING, SERVICE, SERVICE_PORT, load_bluegreen_seed
from tests.test_routers import pair_config, stored, traefikservice_body

NAME = "api-weighted"
TS_REF = {"kind": "TraefikService", "name": NAME, "namespace": ROUTING}
GROUP = ("traefik.io", "v1alpha1", ROUTING, "traefikservices")


@pytest.fixture
def seeded(kube_emulator: Any) -> Any:
    """The blue/green seed with a weighted TraefikService all on blue."""
    load_bluegreen_seed(kube_emulator)
    kube_emulator.put_object(traefikservice_body({BLUE: 100}))
    return kube_emulator


def _mirroring_body(**changes: Any) -> dict[str, Any]:
    mirror = {"name": SERVICE, "namespace": GREEN, "port": SERVICE_PORT, "percent": 10}
    body = {"apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
            "metadata": {"name": "m", "namespace": ROUTING},
            "spec": {"mirroring": {"name": SERVICE, "namespace": BLUE, "port": SERVICE_PORT,
                                   "maxBodySize": 1024, "mirrorBody": True,
                                   "mirrors": [mirror]}}}
    for path, value in changes.items():
        node: Any = body["spec"]["mirroring"]
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return body


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"mirrors.0.percent": "10"}, "spec.mirroring.mirrors[0].percent", "must be of type integer"),
    ({"maxBodySize": "1Mi"}, "spec.mirroring.maxBodySize", "must be of type integer"),
    ({"mirrorBody": "yes"}, "spec.mirroring.mirrorBody", "must be of type boolean"),
    ({"kind": "Ingress"}, "spec.mirroring.kind", "Unsupported value"),
    ({"mirrors.0.weight": -1}, "spec.mirroring.mirrors[0].weight", "greater than or equal to 0"),
    ({"mirrors.0.port": 1.5}, "spec.mirroring.mirrors[0].port", "integer or string"),
])
async def test_emulator_rejects_what_traefiks_crd_rejects(
        kube_emulator: Any, kube_api: client.ApiClient, change: dict[str, Any], field: str,
        says: str) -> None:
    """A mirroring spec of the wrong shape is a 422 naming the field; nothing is stored."""
    load_bluegreen_seed(kube_emulator)
    objects = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as caught:
        await objects.create_namespaced_custom_object(*GROUP, _mirroring_body(**change))
    assert caught.value.status == 422
    causes = json.loads(caught.value.body)["details"]["causes"]
    assert any(c["field"] == field and says in c["message"] for c in causes), causes
    nameless = _mirroring_body()
    del nameless["spec"]["mirroring"]["mirrors"][0]["name"]
    with pytest.raises(ApiException) as missing:
        await objects.create_namespaced_custom_object(*GROUP, nameless)
    assert "spec.mirroring.mirrors[0].name" in missing.value.body
    assert kube_emulator.list_objects("traefik.io/v1alpha1", "TraefikService", ROUTING) == []


async def test_emulator_accepts_what_only_traefik_refuses(
        kube_emulator: Any, kube_api: client.ApiClient) -> None:
    """Like the real CRD: a percent above 100 and weighted+mirroring together are stored
    (Traefik refuses the first at run time and serves `weighted` for the second)."""
    load_bluegreen_seed(kube_emulator)
    objects = client.CustomObjectsApi(kube_api)
    over = _mirroring_body(**{"mirrors.0.percent": 150})
    await objects.create_namespaced_custom_object(*GROUP, over)
    both = _mirroring_body()
    both["metadata"]["name"] = "both"
    both["spec"]["weighted"] = {"services": [{"name": SERVICE, "namespace": BLUE, "weight": 1}]}
    await objects.create_namespaced_custom_object(*GROUP, both)
    bad_weight = traefikservice_body({BLUE: -5}, name="neg")
    with pytest.raises(ApiException) as caught:
        await objects.create_namespaced_custom_object(*GROUP, bad_weight)
    assert "spec.weighted.services[0].weight" in caught.value.body


async def test_mirroring_installed_read_and_removed(seeded: Any,
                                                    kube_api: client.ApiClient) -> None:
    """Mirroring replaces the weighted form in one guarded patch; the route still points at
    blue; removal puts back exactly the weighted form it replaced."""
    pair = pair_config(TS_REF)
    router = traefikservice.TraefikServiceRouter(kube_api)
    before = copy.deepcopy(stored(seeded, NAME, "TraefikService")["spec"])
    snapshot = await router.read(pair.routes[0])
    mirrored = await router.install_mirroring(snapshot, dark=GREEN, percent=20,
                                              max_body_size=65536)
    spec = stored(seeded, NAME, "TraefikService")["spec"]
    assert "weighted" not in spec
    assert spec["mirroring"]["namespace"] == BLUE and spec["mirroring"]["maxBodySize"] == 65536
    assert spec["mirroring"]["mirrors"] == [
        {"name": SERVICE, "port": SERVICE_PORT, "namespace": GREEN, "percent": 20}]
    live = await reading.read_active(kube_api, pair)
    assert live.consistent and live.active == BLUE
    assert [v.mirroring for v in live.mirrored] == [{"from": BLUE, "to": GREEN, "percent": 20}]
    again = await router.install_mirroring(mirrored, dark=GREEN, percent=20, max_body_size=65536)
    assert again.view.resource_version == mirrored.view.resource_version  # idempotent
    restored = await router.remove_mirroring(await router.read(pair.routes[0]))
    body = stored(seeded, NAME, "TraefikService")
    assert body["spec"] == before and MIRRORING not in body["metadata"].get("annotations", {})
    assert restored.view.mirroring is None
    with pytest.raises(RouteConflict):
        await router.remove_mirroring(mirrored)  # a stale snapshot overwrites nothing


async def test_mirroring_someone_else_set_is_not_gatekeepers(seeded: Any,
                                                             kube_api: client.ApiClient) -> None:
    """Without gatekeeper's annotation a mirroring form points nowhere gatekeeper knows:
    the routes are not consistent, and removal leaves it alone."""
    body = _mirroring_body()
    body["metadata"]["name"] = NAME
    seeded.put_object(body)
    pair = pair_config(TS_REF)
    live = await reading.read_active(kube_api, pair)
    assert not live.consistent
    router = traefikservice.TraefikServiceRouter(kube_api)
    snapshot = await router.read(pair.routes[0])
    assert await router.remove_mirroring(snapshot) is snapshot


async def test_flip_from_mirroring_form_ends_mirroring_in_the_same_patch(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """A flip of a mirrored route: weighted form on green, mirroring and its mark gone."""
    pair = pair_config(TS_REF)
    router = traefikservice.TraefikServiceRouter(kube_api)
    await router.install_mirroring(await router.read(pair.routes[0]), dark=GREEN, percent=5,
                                   max_body_size=1024)
    patches = len(seeded.requests.records(method="PATCH", path_contains=NAME))
    outcome = await switching.switch_all(kube_api, pair, await reading.read_active(kube_api, pair),
                                         target=GREEN)
    assert outcome.ok
    body = stored(seeded, NAME, "TraefikService")
    assert "mirroring" not in body["spec"]
    assert body["spec"]["weighted"]["services"] == [
        {"name": SERVICE, "namespace": GREEN, "port": SERVICE_PORT, "weight": 100}]
    assert MIRRORING not in body["metadata"]["annotations"]
    assert len(seeded.requests.records(method="PATCH", path_contains=NAME)) == patches + 1


async def test_gatekeepers_split_is_not_inconsistent(seeded: Any,
                                                     kube_api: client.ApiClient) -> None:
    """A split gatekeeper set still has blue as the active namespace; the same weights
    without its mark, or with edited weights, are an inconsistency."""
    pair = pair_config(TS_REF)
    router = traefikservice.TraefikServiceRouter(kube_api)
    split = await router.expose(await router.read(pair.routes[0]),
                                Exposure(active=BLUE, dark=GREEN, percent=5, step=2))
    assert split.view.weights == {BLUE: 95, GREEN: 5}
    live = await reading.read_active(kube_api, pair)
    assert live.consistent and live.active == BLUE
    assert (live.exposed, live.exposure_step) == (5, 2)
    edited = await router.set_weights(split, {BLUE: 90, GREEN: 10},
                                      annotations={EXPOSURE: split.view.annotations[EXPOSURE]})
    assert edited.view.exposure is None
    assert not (await reading.read_active(kube_api, pair)).consistent
    bare = await router.set_weights(edited, {BLUE: 95, GREEN: 5})
    assert EXPOSURE not in bare.view.annotations
    assert not (await reading.read_active(kube_api, pair)).consistent


async def test_failed_step_back_to_zero_in_one_patch_and_flip_from_split(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """Percent 0 drops the dark's entry and the mark in one patch; a flip from a split
    moves all weight to the dark in one patch."""
    pair = pair_config(TS_REF)
    router = traefikservice.TraefikServiceRouter(kube_api)
    split = await router.expose(await router.read(pair.routes[0]),
                                Exposure(active=BLUE, dark=GREEN, percent=25, step=3))
    patches = len(seeded.requests.records(method="PATCH", path_contains=NAME))
    back = await router.expose(split, Exposure(active=BLUE, dark=GREEN, percent=0, step=0))
    assert len(seeded.requests.records(method="PATCH", path_contains=NAME)) == patches + 1
    assert back.view.weights == {BLUE: 100} and EXPOSURE not in back.view.annotations
    await router.expose(back, Exposure(active=BLUE, dark=GREEN, percent=25, step=3))
    outcome = await switching.switch_all(kube_api, pair, await reading.read_active(kube_api, pair),
                                         target=GREEN)
    assert outcome.ok and outcome.verified is not None and outcome.verified.active == GREEN
    body = stored(seeded, NAME, "TraefikService")
    assert [e["namespace"] for e in body["spec"]["weighted"]["services"]] == [GREEN]
    assert EXPOSURE not in body["metadata"]["annotations"]


async def test_a_step_from_the_mirroring_form_ends_the_mirroring(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """Mirroring still on when the first step comes: one patch, weighted split, no mirror."""
    pair = pair_config(TS_REF)
    router = traefikservice.TraefikServiceRouter(kube_api)
    mirrored = await router.install_mirroring(await router.read(pair.routes[0]), dark=GREEN,
                                              percent=10, max_body_size=1024)
    split = await router.expose(mirrored, Exposure(active=BLUE, dark=GREEN, percent=1, step=1))
    body = stored(seeded, NAME, "TraefikService")
    assert "mirroring" not in body["spec"] and split.view.weights == {BLUE: 99, GREEN: 1}
    assert MIRRORING not in body["metadata"]["annotations"]
    assert EXPOSURE in body["metadata"]["annotations"]
    assert (await reading.read_active(kube_api, pair)).exposed == 1
