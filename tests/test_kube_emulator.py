"""The emulated API server through the real kubernetes_asyncio client: CRUD, optimistic
concurrency, patches, selectors, discovery and Status errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fixtures.kube import BLUE, GREEN, ROUTE_NAME, ROUTING, bluegreen_seed

TRAEFIK = ("traefik.io", "v1alpha1")
JSON_PATCH = "application/json-patch+json"


def status_of(exc: ApiException) -> dict:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == exc.status
    return body


async def get_route(custom: client.CustomObjectsApi) -> dict:
    return await custom.get_namespaced_custom_object(*TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME)


def test_example_yaml_matches_fixture_seed():
    path = Path(__file__).parents[1] / "kube_emulator" / "examples" / "bluegreen.yaml"
    assert list(yaml.safe_load_all(path.read_text())) == bluegreen_seed()


async def test_create_get_delete_configmap_with_status_errors(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "team"}})
    body = {"metadata": {"name": "state", "labels": {"app": "gk"}}, "data": {"active": "blue"}}
    created = await core.create_namespaced_config_map("team", body)
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and meta.namespace == "team"
    assert int(meta.resource_version) > 0

    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map("team", body)
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "AlreadyExists"

    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map("nowhere", body)
    assert exc.value.status == 404
    assert status_of(exc.value)["message"] == 'namespaces "nowhere" not found'

    generated = await core.create_namespaced_config_map(
        "team", {"metadata": {"generateName": "state-"}, "data": {}})
    assert generated.metadata.name.startswith("state-") and len(generated.metadata.name) == 11

    await core.delete_namespaced_config_map("state", "team")
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_config_map("state", "team")
    status = status_of(exc.value)
    assert (exc.value.status, status["reason"]) == (404, "NotFound")
    assert status["details"] == {"name": "state", "kind": "configmaps"}
    with pytest.raises(ApiException) as exc:
        await core.delete_namespaced_config_map("state", "team")
    assert exc.value.status == 404


async def test_stale_replace_is_409_and_fresh_replace_bumps_version(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "team"}})
    first = await core.create_namespaced_config_map(
        "team", {"metadata": {"name": "state"}, "data": {"v": "1"}})
    first.data = {"v": "2"}
    second = await core.replace_namespaced_config_map("state", "team", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)

    first.data = {"v": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as exc:
        await core.replace_namespaced_config_map("state", "team", first)
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "Conflict"
    assert (await core.read_namespaced_config_map("state", "team")).data == {"v": "2"}

    # An identical write is a no-op: no new resourceVersion, like the real server.
    same = await core.replace_namespaced_config_map("state", "team", second)
    assert same.metadata.resource_version == second.metadata.resource_version


async def test_custom_object_replace_requires_resource_version(kube_bluegreen, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    route = await get_route(custom)
    del route["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as exc:
        await custom.replace_namespaced_custom_object(
            *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME, route)
    assert exc.value.status == 422


async def test_failed_json_patch_test_is_422_and_leaves_route_unchanged(kube_bluegreen, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    before = await get_route(custom)
    path = "/spec/routes/0/services/0/namespace"
    flip = [{"op": "test", "path": path, "value": GREEN},
            {"op": "replace", "path": path, "value": BLUE}]
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object(
            *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME, flip, _content_type=JSON_PATCH)
    assert exc.value.status == 422 and status_of(exc.value)["reason"] == "Invalid"
    assert await get_route(custom) == before

    bad_path = [{"op": "replace", "path": "/spec/routes/7/services/0/namespace", "value": BLUE}]
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object(
            *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME, bad_path, _content_type=JSON_PATCH)
    assert exc.value.status == 422

    rv = before["metadata"]["resourceVersion"]
    ok = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
          {"op": "test", "path": path, "value": BLUE},
          {"op": "replace", "path": path, "value": GREEN}]
    after = await custom.patch_namespaced_custom_object(
        *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME, ok, _content_type=JSON_PATCH)
    assert after["spec"]["routes"][0]["services"][0]["namespace"] == GREEN
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert int(after["metadata"]["resourceVersion"]) > int(rv)

    # Replaying the same guarded patch now fails: the resourceVersion test is stale.
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object(
            *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME, ok, _content_type=JSON_PATCH)
    assert exc.value.status == 422


async def test_merge_patch_and_stale_resource_version_in_patch(kube_bluegreen, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    before = await get_route(custom)
    patched = await custom.patch_namespaced_custom_object(
        *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME,
        {"metadata": {"annotations": {"gatekeeper/active": "blue"}}, "spec": {"entryPoints": None}},
        _content_type="application/merge-patch+json")
    assert patched["metadata"]["annotations"] == {"gatekeeper/active": "blue"}
    assert "entryPoints" not in patched["spec"]
    assert patched["spec"]["routes"] == before["spec"]["routes"]

    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object(
            *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME,
            {"metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
             "spec": {"entryPoints": ["web"]}},
            _content_type="application/merge-patch+json")
    assert exc.value.status == 409

    # Strategic merge patch is not available for custom resources (415, as on a cluster).
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object(
            *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME, {"spec": {}},
            _content_type="application/strategic-merge-patch+json")
    assert exc.value.status == 415


async def test_strategic_merge_patch_merges_containers_by_name(kube_bluegreen, kube_api):
    apps = client.AppsV1Api(kube_api)
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "registry.example.com/proxy:2"},
        {"name": "api", "env": [{"name": "MODE", "value": "canary"}]},
    ]}}}}
    deploy = await apps.patch_namespaced_deployment("api", GREEN, patch)
    containers = {c.name: c for c in deploy.spec.template.spec.containers}
    assert set(containers) == {"api", "sidecar"}
    assert containers["api"].image == "registry.example.com/api:1.5.0"
    assert containers["api"].env[0].value == "canary"
    assert deploy.metadata.generation == 2


async def test_label_and_field_selectors(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "sel"}})
    for name, labels in {
        "a": {"app": "api", "track": "blue"},
        "b": {"app": "api", "track": "green"},
        "c": {"app": "web"},
        "d": {},
    }.items():
        await core.create_namespaced_config_map(
            "sel", {"metadata": {"name": name, "labels": labels}})

    async def names(**kwargs):
        listing = await core.list_namespaced_config_map("sel", **kwargs)
        assert listing.metadata.resource_version
        return sorted(item.metadata.name for item in listing.items)

    assert await names(label_selector="app=api") == ["a", "b"]
    assert await names(label_selector="app==api,track=green") == ["b"]
    assert await names(label_selector="track!=blue") == ["b", "c", "d"]
    assert await names(label_selector="track in (blue, green)") == ["a", "b"]
    assert await names(label_selector="app notin (api)") == ["c", "d"]
    assert await names(label_selector="track") == ["a", "b"]
    assert await names(label_selector="!track") == ["c", "d"]
    assert await names(field_selector="metadata.name=c") == ["c"]
    assert await names(field_selector="metadata.name!=c,metadata.namespace=sel") == ["a", "b", "d"]
    with pytest.raises(ApiException) as exc:
        await names(field_selector="spec.whatever=1")
    assert exc.value.status == 400
    with pytest.raises(ApiException) as exc:
        await names(label_selector="app in (")
    assert exc.value.status == 400

    everything = await core.list_config_map_for_all_namespaces(label_selector="app")
    assert {i.metadata.name for i in everything.items} == {"a", "b", "c"}

    page = await core.list_namespaced_config_map("sel", limit=3)
    assert len(page.items) == 3 and page.metadata._continue
    rest = await core.list_namespaced_config_map("sel", limit=3, _continue=page.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["d"] and not rest.metadata._continue


async def test_pod_field_selector_on_phase(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    running = await core.list_pod_for_all_namespaces(field_selector="status.phase=Running")
    assert len(running.items) == 4
    pending = await core.list_namespaced_pod(BLUE, field_selector="status.phase=Pending")
    assert pending.items == []


async def test_validation_matches_real_server(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "val"}})
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map(
            "val", {"metadata": {"name": "Bad_Name"}, "data": {}})
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map(
            "val", {"metadata": {"name": "x", "labels": {"version": "1.5.0+build"}}})
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map(
            "val", {"metadata": {"name": "x"}, "data": {"n": 1}})
    assert exc.value.status == 400


async def test_dry_run_does_not_persist(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "dry"}})
    await core.create_namespaced_config_map("dry", {"metadata": {"name": "x"}}, dry_run="All")
    assert (await core.list_namespaced_config_map("dry")).items == []


async def test_discovery_lists_traefik_crds_in_both_groups(kube_emulator, kube_api):
    apis = await client.ApisApi(kube_api).get_api_versions()
    groups = {g.name for g in apis.groups}
    assert {"apps", "coordination.k8s.io", "traefik.io", "traefik.containo.us"} <= groups
    custom = client.CustomObjectsApi(kube_api)
    for group in ("traefik.io", "traefik.containo.us"):
        resources = await custom.get_api_resources(group, "v1alpha1")
        by_name = {r.name: r for r in resources.resources}
        assert by_name["ingressroutes"].kind == "IngressRoute"
        assert by_name["ingressroutes"].namespaced
        assert "patch" in by_name["traefikservices"].verbs
    core = await client.CoreV1Api(kube_api).get_api_resources()
    served = {r.name for r in core.resources}
    assert {"pods", "pods/log", "configmaps", "events", "namespaces"} <= served
    version = await client.VersionApi(kube_api).get_code()
    assert version.major == "1"


async def test_both_traefik_groups_are_separate_storage(kube_emulator, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    await client.CoreV1Api(kube_api).create_namespace({"metadata": {"name": ROUTING}})
    body = {"apiVersion": "traefik.containo.us/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": "legacy"}, "spec": {"routes": []}}
    await custom.create_namespaced_custom_object(
        "traefik.containo.us", "v1alpha1", ROUTING, "ingressroutes", body)
    legacy = await custom.list_namespaced_custom_object(
        "traefik.containo.us", "v1alpha1", ROUTING, "ingressroutes")
    current = await custom.list_namespaced_custom_object(*TRAEFIK, ROUTING, "ingressroutes")
    assert [i["metadata"]["name"] for i in legacy["items"]] == ["legacy"]
    assert current["items"] == []


async def test_lease_create_and_replace_with_conflicts(kube_emulator, kube_api):
    coordination = client.CoordinationV1Api(kube_api)
    await client.CoreV1Api(kube_api).create_namespace({"metadata": {"name": "gk"}})
    spec = {"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
            "acquireTime": "2024-05-01T10:00:00.000000Z",
            "renewTime": "2024-05-01T10:00:00.000000Z"}
    lease = await coordination.create_namespaced_lease(
        "gk", {"metadata": {"name": "gatekeeper"}, "spec": spec})
    with pytest.raises(ApiException) as exc:
        await coordination.create_namespaced_lease(
            "gk", {"metadata": {"name": "gatekeeper"}, "spec": spec})
    assert exc.value.status == 409

    # Two candidates read the same version; only the first renewal wins.
    mine = await coordination.read_namespaced_lease("gatekeeper", "gk")
    theirs = await coordination.read_namespaced_lease("gatekeeper", "gk")
    mine.spec.renew_time = "2024-05-01T10:00:05.000000Z"
    renewed = await coordination.replace_namespaced_lease("gatekeeper", "gk", mine)
    assert int(renewed.metadata.resource_version) > int(lease.metadata.resource_version)
    theirs.spec.holder_identity = "pod-b"
    with pytest.raises(ApiException) as exc:
        await coordination.replace_namespaced_lease("gatekeeper", "gk", theirs)
    assert exc.value.status == 409
    current = await coordination.read_namespaced_lease("gatekeeper", "gk")
    assert current.spec.holder_identity == "pod-a"

    bad = {"metadata": {"name": "naive"}, "spec": {"renewTime": "2024-05-01T10:00:00.000000"}}
    with pytest.raises(ApiException) as exc:
        await coordination.create_namespaced_lease("gk", bad)
    assert exc.value.status == 400  # a timestamp without zone does not parse on a real server


async def test_events_are_recorded(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    event = {
        "metadata": {"generateName": "api-live."},
        "involvedObject": {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                           "name": ROUTE_NAME, "namespace": ROUTING},
        "reason": "RouteFlipped", "message": "blue -> green", "type": "Normal",
        "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:00:00Z",
        "count": 1, "source": {"component": "gatekeeper"},
    }
    await core.create_namespaced_event(ROUTING, event)
    found = await core.list_namespaced_event(
        ROUTING, field_selector=f"involvedObject.name={ROUTE_NAME},reason=RouteFlipped")
    assert [e.message for e in found.items] == ["blue -> green"]
    event["involvedObject"]["namespace"] = BLUE
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_event(ROUTING, event)
    assert exc.value.status == 422


async def test_events_k8s_io_strict_validation(kube_bluegreen, kube_api):
    events = client.EventsV1Api(kube_api)
    body = {
        "metadata": {"name": "flip.1"},
        "eventTime": "2024-05-01T10:00:00.000000Z",
        "regarding": {"kind": "IngressRoute", "name": ROUTE_NAME, "namespace": ROUTING},
        "reason": "RouteFlipped", "note": "blue -> green", "type": "Normal",
        "action": "Flip", "reportingController": "gatekeeper", "reportingInstance": "gk-0",
    }
    created = await events.create_namespaced_event(ROUTING, body)
    assert created.regarding.name == ROUTE_NAME
    del body["reportingController"]
    body["metadata"]["name"] = "flip.2"
    with pytest.raises(ApiException) as exc:
        await events.create_namespaced_event(ROUTING, body)
    assert exc.value.status == 422


async def test_server_side_apply_creates_then_merges(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "ssa"}})
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "ssa"}, "data": {"a": "1"}}
    await core.patch_namespaced_config_map("cfg", "ssa", manifest, field_manager="gk",
                                           _content_type="application/apply-patch+yaml")
    manifest["data"] = {"b": "2"}
    applied = await core.patch_namespaced_config_map(
        "cfg", "ssa", manifest, field_manager="gk", _content_type="application/apply-patch+yaml")
    assert applied.data == {"a": "1", "b": "2"}
    with pytest.raises(ApiException) as exc:  # fieldManager is required for apply
        await core.patch_namespaced_config_map(
            "cfg", "ssa", manifest, _content_type="application/apply-patch+yaml")
    assert exc.value.status == 422


async def test_finalizers_delay_deletion_and_namespace_deletion_cascades(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "fin"}})
    await core.create_namespaced_config_map(
        "fin", {"metadata": {"name": "held", "finalizers": ["example.com/keep"]}})
    await core.create_namespaced_secret("fin", {"metadata": {"name": "s"},
                                                "stringData": {"token": "abc"}})
    assert (await core.read_namespaced_secret("s", "fin")).data == {"token": "YWJj"}

    await core.delete_namespaced_config_map("held", "fin")
    held = await core.read_namespaced_config_map("held", "fin")
    assert held.metadata.deletion_timestamp is not None
    await core.patch_namespaced_config_map("held", "fin", {"metadata": {"finalizers": None}},
                                           _content_type="application/merge-patch+json")
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_config_map("held", "fin")
    assert exc.value.status == 404

    await core.delete_namespace("fin")
    assert (await core.list_secret_for_all_namespaces(field_selector="metadata.namespace=fin")
            ).items == []
