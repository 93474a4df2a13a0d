"""Routers over HTTP against the emulated API server: read, guarded flips, all-or-none."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import structlog
from kubernetes_asyncio import client

from gatekeeper import kubeclient, switches
from gatekeeper.config import PairConfig
from gatekeeper.routers import ingressroute, reading, switching, traefikservice
from gatekeeper.routers.base import RouteConflict, RouteRefused
from tests.fixtures.kube import (
    BLUE,
    GREEN,
    ROUTE_NAME,
    ROUTING,
    SERVICE,
    SERVICE_PORT,
    load_bluegreen_seed,
)

SECOND = "api-live-admin"


def pair_config(*routes: dict[str, Any]) -> PairConfig:
    """A pair over the seed's namespaces with the given route references."""
    refs = list(routes) or [{"name": ROUTE_NAME, "namespace": ROUTING}]
    return PairConfig.model_validate(
        {"name": "api", "namespaces": [BLUE, GREEN], "routes": refs})


def ingressroute_body(name: str, active: str, *, group: str = "traefik.io",
                      labels: dict[str, str] | None = None) -> dict[str, Any]:
    """An IngressRoute in `routing` pointing at `active`."""
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": ROUTING, "labels": labels or {}},
        "spec": {"routes": [{
            "match": f"Host(`{name}.example.com`)", "kind": "Rule",
            "services": [{"name": SERVICE, "namespace": active, "port": SERVICE_PORT}],
        }]},
    }


def traefikservice_body(weights: dict[str, int], name: str = "api-weighted") -> dict[str, Any]:
    """A weighted TraefikService with one entry per namespace."""
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": {"name": name, "namespace": ROUTING},
        "spec": {"weighted": {"services": [
            {"name": SERVICE, "namespace": ns, "port": SERVICE_PORT, "weight": w}
            for ns, w in weights.items()
        ]}},
    }


def stored(emulator: Any, name: str = ROUTE_NAME, kind: str = "IngressRoute",
           group: str = "traefik.io") -> dict[str, Any]:
    """The route as the server holds it now."""
    return emulator.get_object(f"{group}/v1alpha1", kind, name, ROUTING)


def pointed(emulator: Any, name: str = ROUTE_NAME) -> str:
    """Namespace of the first service of a stored IngressRoute."""
    return stored(emulator, name)["spec"]["routes"][0]["services"][0]["namespace"]


@pytest.fixture
def seeded(kube_emulator: Any) -> Any:
    """The blue/green seed: blue is active, both namespaces Ready."""
    load_bluegreen_seed(kube_emulator)
    return kube_emulator


async def test_read_active_from_ingressroute(seeded: Any, kube_api: client.ApiClient) -> None:
    """The active namespace is where the route's services point."""
    live = await reading.read_active(kube_api, pair_config())
    assert live.consistent and live.active == BLUE
    assert live.routes[0].uid and live.routes[0].resource_version


async def test_flip_is_one_guarded_json_patch(seeded: Any, kube_api: client.ApiClient) -> None:
    """The flip is a JSON Patch testing resourceVersion and the current namespace."""
    router = ingressroute.IngressRouteRouter(kube_api)
    pair = pair_config()
    snapshot = await router.read(pair.routes[0])
    after = await router.switch(snapshot, source=BLUE, target=GREEN)
    assert after.view.namespaces == {GREEN}
    assert pointed(seeded) == GREEN
    patches = seeded.requests.records(method="PATCH", path_contains=ROUTE_NAME)
    assert [p.content_type for p in patches] == ["application/json-patch+json"]
    ops = patches[0].body
    assert {"op": "test", "path": "/metadata/resourceVersion",
            "value": snapshot.view.resource_version} in ops
    assert {"op": "test", "path": "/spec/routes/0/services/0/namespace", "value": BLUE} in ops


async def test_concurrent_edit_between_read_and_patch_is_not_overwritten(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """A human's edit after our read makes the patch fail (409/422); their edit survives."""
    router = ingressroute.IngressRouteRouter(kube_api)
    snapshot = await router.read(pair_config().routes[0])
    human = copy.deepcopy(stored(seeded))
    human["spec"]["routes"][0]["services"][0]["port"] = 9090
    seeded.put_object(human)
    with pytest.raises(RouteConflict) as caught:
        await router.switch(snapshot, source=BLUE, target=GREEN)
    assert caught.value.status in (409, 422)
    assert "nothing was overwritten" in str(caught.value)
    service = stored(seeded)["spec"]["routes"][0]["services"][0]
    assert service == {"name": SERVICE, "namespace": BLUE, "port": 9090}


async def test_concurrent_edit_by_a_second_client_is_reported_by_switch_all(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """An edit through another client between read_active and switch_all is a conflict."""
    pair = pair_config()
    live = await reading.read_active(kube_api, pair)
    await client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(  # type: ignore[call-arg]
        "traefik.io", "v1alpha1", ROUTING, "ingressroutes", ROUTE_NAME,
        {"metadata": {"labels": {"edited-by": "human"}}},
        _content_type="application/merge-patch+json")
    outcome = await switching.switch_all(kube_api, pair, live, target=GREEN)
    assert not outcome.ok and outcome.conflict and not outcome.changed
    assert stored(seeded)["metadata"]["labels"] == {"edited-by": "human"}
    assert pointed(seeded) == BLUE
    assert outcome.verified is not None and outcome.verified.active == BLUE


async def test_failure_on_second_route_reverts_the_first(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """All routes or none: route 2 answering 500 to every retry flips route 1 back, and the
    re-read agrees."""
    seeded.put_object(ingressroute_body(SECOND, BLUE))
    pair = pair_config({"name": ROUTE_NAME, "namespace": ROUTING},
                       {"name": SECOND, "namespace": ROUTING})
    live = await reading.read_active(kube_api, pair)
    seeded.faults.add(status=500, verb="patch", path=f"/ingressroutes/{SECOND}$",
                      times=kubeclient.ATTEMPTS)
    outcome = await switching.switch_all(kube_api, pair, live, target=GREEN)
    assert not outcome.ok and not outcome.conflict and not outcome.changed
    assert outcome.switched == (f"IngressRoute {ROUTING}/{ROUTE_NAME}",)
    assert outcome.reverted == outcome.switched and not outcome.revert_failures
    assert "HTTP 500" in (outcome.failed or "")
    assert pointed(seeded) == BLUE and pointed(seeded, SECOND) == BLUE
    assert outcome.verified is not None and outcome.verified.active == BLUE
    assert len(seeded.requests.records(method="PATCH", path_contains=ROUTE_NAME)) == \
        2 + kubeclient.ATTEMPTS


async def test_conflict_on_second_route_reverts_the_first(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """A concurrent edit of route 2 reverts route 1 and keeps the human's edit of route 2."""
    seeded.put_object(ingressroute_body(SECOND, BLUE))
    pair = pair_config({"name": ROUTE_NAME, "namespace": ROUTING},
                       {"name": SECOND, "namespace": ROUTING})
    live = await reading.read_active(kube_api, pair)
    seeded.put_object(ingressroute_body(SECOND, BLUE, labels={"touched": "yes"}))
    outcome = await switching.switch_all(kube_api, pair, live, target=GREEN)
    assert outcome.conflict and outcome.reverted and not outcome.changed
    assert pointed(seeded) == BLUE
    assert stored(seeded, SECOND)["metadata"]["labels"] == {"touched": "yes"}


async def test_routes_that_disagree_are_inconsistent(seeded: Any,
                                                     kube_api: client.ApiClient) -> None:
    """Two routes pointing at different namespaces: no active namespace, a problem."""
    seeded.put_object(ingressroute_body(SECOND, GREEN))
    pair = pair_config({"name": ROUTE_NAME, "namespace": ROUTING},
                       {"name": SECOND, "namespace": ROUTING})
    live = await reading.read_active(kube_api, pair)
    assert live.active is None and "disagree" in (live.problem or "")
    with pytest.raises(ValueError):
        await switching.switch_all(kube_api, pair, live, target=GREEN)


@pytest.mark.parametrize("label", ["kustomize.toolkit.fluxcd.io/name",
                                   "helm.toolkit.fluxcd.io/name"])
async def test_flux_labelled_route_is_refused(seeded: Any, kube_api: client.ApiClient,
                                              label: str) -> None:
    """Flux would revert a direct patch: refuse, and point at the TraefikService router."""
    seeded.put_object(ingressroute_body(ROUTE_NAME, BLUE, labels={label: "apps"}))
    pair = pair_config()
    live = await reading.read_active(kube_api, pair)
    outcome = await switching.switch_all(kube_api, pair, live, target=GREEN)
    assert outcome.refused and not outcome.switched
    assert "Flux" in (outcome.failed or "") and "TraefikService" in (outcome.failed or "")
    assert not seeded.requests.records(method="PATCH")
    router = ingressroute.IngressRouteRouter(kube_api)
    with pytest.raises(RouteRefused):
        await router.switch(live.snapshots[0], source=BLUE, target=GREEN)
    assert pointed(seeded) == BLUE


async def test_flux_hands_off_annotation_allows_patching(seeded: Any,
                                                         kube_api: client.ApiClient) -> None:
    """`kustomize.toolkit.fluxcd.io/reconcile: disabled` means Flux leaves the object alone."""
    body = ingressroute_body(ROUTE_NAME, BLUE,
                             labels={"kustomize.toolkit.fluxcd.io/name": "apps"})
    body["metadata"]["annotations"] = {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"}
    seeded.put_object(body)
    pair = pair_config()
    live = await reading.read_active(kube_api, pair)
    assert (await switching.switch_all(kube_api, pair, live, target=GREEN)).ok


async def test_service_without_namespace_gets_one_added(seeded: Any,
                                                        kube_api: client.ApiClient) -> None:
    """A service with no namespace uses the route's own; the flip adds one."""
    body = ingressroute_body(ROUTE_NAME, BLUE)
    body["metadata"]["namespace"] = BLUE
    del body["spec"]["routes"][0]["services"][0]["namespace"]
    seeded.put_object(body)
    pair = pair_config({"name": ROUTE_NAME, "namespace": BLUE})
    live = await reading.read_active(kube_api, pair)
    assert live.active == BLUE
    outcome = await switching.switch_all(kube_api, pair, live, target=GREEN)
    assert outcome.ok
    route = seeded.get_object("traefik.io/v1alpha1", "IngressRoute", ROUTE_NAME, BLUE)
    assert route["spec"]["routes"][0]["services"][0]["namespace"] == GREEN


async def test_legacy_api_group_and_warning_when_both_exist(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """traefik.containo.us works; a twin in both groups is flagged and logged."""
    seeded.put_object(ingressroute_body(ROUTE_NAME, GREEN, group="traefik.containo.us"))
    legacy = pair_config({"name": ROUTE_NAME, "namespace": ROUTING,
                          "api_group": "traefik.containo.us"})
    with structlog.testing.capture_logs() as logs:
        live = await reading.read_active(kube_api, legacy)
    assert live.active == GREEN and live.routes[0].also_in_group == "traefik.io"
    assert any("both traefik API groups" in entry["event"] for entry in logs)
    outcome = await switching.switch_all(kube_api, legacy, live, target=BLUE)
    assert outcome.ok
    legacy_route = stored(seeded, group="traefik.containo.us")
    assert legacy_route["spec"]["routes"][0]["services"][0]["namespace"] == BLUE


async def test_traefikservice_flip_moves_all_weight_and_drops_zero_entry(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """100/0 with the zero-weight entry removed (Traefik fails a route with an empty child)."""
    seeded.put_object(traefikservice_body({BLUE: 100, GREEN: 0}))
    pair = pair_config({"kind": "TraefikService", "name": "api-weighted", "namespace": ROUTING})
    live = await reading.read_active(kube_api, pair)
    assert live.active == BLUE and live.routes[0].weights == {BLUE: 100, GREEN: 0}
    outcome = await switching.switch_all(kube_api, pair, live, target=GREEN)
    assert outcome.ok
    services = stored(seeded, "api-weighted", "TraefikService")["spec"]["weighted"]["services"]
    assert services == [{"name": SERVICE, "namespace": GREEN, "port": SERVICE_PORT,
                         "weight": 100}]


async def test_the_patch_that_moves_a_route_records_the_switch_and_a_revert_restores_it(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """Both router kinds write gatekeeper.io/switch in the moving patch itself (one PATCH
    per route); the routes' record then names the rollback target. A reverted switch puts
    the route's earlier record back."""
    seeded.put_object(traefikservice_body({BLUE: 100}))
    pair = pair_config({"name": ROUTE_NAME, "namespace": ROUTING},
                       {"kind": "TraefikService", "name": "api-weighted", "namespace": ROUTING})
    live = await reading.read_active(kube_api, pair)
    record = switches.SwitchRecord("flip", BLUE, GREEN, 12.5, "abc", "manual")
    outcome = await switching.switch_all(kube_api, pair, live, target=GREEN, record=record)
    assert outcome.ok, outcome
    assert len(seeded.requests.records(method="PATCH")) == 2
    for name, kind in ((ROUTE_NAME, "IngressRoute"), ("api-weighted", "TraefikService")):
        text = stored(seeded, name, kind)["metadata"]["annotations"][switches.ANNOTATION]
        assert switches.SwitchRecord.parse(text) == record
    after = await reading.read_active(kube_api, pair)
    assert after.last_switch == record and after.last_switch.rollback_target == BLUE
    # The next switch fails on its second route: the first gets the flip record back.
    seeded.faults.add(status=500, verb="patch", path="/traefikservices/")
    back = switches.SwitchRecord("rollback", GREEN, BLUE, 20.0, "def", "manual")
    failed = await switching.switch_all(kube_api, pair, after, target=BLUE, record=back)
    assert not failed.ok and failed.reverted, failed
    text = stored(seeded, ROUTE_NAME, "IngressRoute")["metadata"]["annotations"]
    assert switches.SwitchRecord.parse(text[switches.ANNOTATION]) == record


@pytest.mark.parametrize("text", ["", "{", "[]", '{"kind": "flip"}',
                                  '{"kind": "shift", "from": "a", "to": "b", "at": 1}',
                                  '{"kind": "flip", "from": "a", "to": "a", "at": 1}',
                                  '{"kind": "flip", "from": "a", "to": "b", "at": "x"}',
                                  '{"kind": "flip", "from": "a", "to": "b", "at": NaN}'])
def test_a_malformed_switch_record_is_no_record(text: str) -> None:
    """A person's edit of the annotation never passes for a switch."""
    assert switches.SwitchRecord.parse(text) is None


def test_only_a_record_of_the_switch_to_the_active_namespace_counts() -> None:
    """Traffic moved by hand since the record was written: the record is history."""
    old = switches.SwitchRecord("flip", BLUE, GREEN, 1.0).to_annotation()
    new = switches.SwitchRecord("rollback", GREEN, BLUE, 2.0).to_annotation()
    notes = [{switches.ANNOTATION: old}, {switches.ANNOTATION: new}, {}]
    assert switches.latest(notes, active=BLUE, namespaces=(BLUE, GREEN)).kind == "rollback"
    assert switches.latest(notes, active=GREEN, namespaces=(BLUE, GREEN)).at == 1.0
    assert switches.latest(notes, active=GREEN, namespaces=("x", GREEN)) is None


async def test_traefikservice_progressive_weights(seeded: Any,
                                                  kube_api: client.ApiClient) -> None:
    """set_weights adds the missing namespace's entry; a split is not a single active."""
    seeded.put_object(traefikservice_body({BLUE: 100}))
    pair = pair_config({"kind": "TraefikService", "name": "api-weighted", "namespace": ROUTING})
    router = traefikservice.TraefikServiceRouter(kube_api)
    snapshot = await router.read(pair.routes[0])
    split = await router.set_weights(snapshot, {BLUE: 90, GREEN: 10})
    assert split.view.weights == {BLUE: 90, GREEN: 10}
    live = await reading.read_active(kube_api, pair)
    assert live.active is None
    full = await router.set_weights(split, {BLUE: 0, GREEN: 100})
    assert full.view.weights == {GREEN: 100}
    with pytest.raises(RouteConflict):
        await router.set_weights(split, {BLUE: 100})  # stale snapshot


def test_weighted_entries_keep_other_services() -> None:
    """Entries the pair does not switch (other names, TraefikService children) stay."""
    body = traefikservice_body({BLUE: 100})
    other = {"name": "static", "namespace": "web", "port": 80, "weight": 5, "kind": "Service"}
    body["spec"]["weighted"]["services"].insert(0, other)
    entries = traefikservice.weighted_entries(body, {GREEN: 100, BLUE: 0}, service=SERVICE)
    assert entries[0] == other
    assert entries[1] == {"name": SERVICE, "namespace": GREEN, "port": SERVICE_PORT,
                          "weight": 100}
    with pytest.raises(ValueError):
        traefikservice.weighted_entries(body, {GREEN: 0}, service=SERVICE)
