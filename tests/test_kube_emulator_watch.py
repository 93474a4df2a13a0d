"""Watches through kubernetes_asyncio's watch.Watch: replay from a resourceVersion,
selector moves, bookmarks, 410 Expired after compaction, and dropped connections."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fixtures.kube import BLUE, GREEN, ROUTE_NAME, ROUTING

TRAEFIK = ("traefik.io", "v1alpha1")


async def collect(stream, count: int, *, skip_bookmarks: bool = True) -> list[dict]:
    events = []
    async for event in stream:
        if skip_bookmarks and event["type"] == "BOOKMARK":
            continue
        events.append(event)
        if len(events) >= count:
            break
    return events


async def test_watch_replays_modified_event_after_patch(kube_bluegreen, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    listing = await custom.list_namespaced_custom_object(*TRAEFIK, ROUTING, "ingressroutes")
    since = listing["metadata"]["resourceVersion"]
    patched = await custom.patch_namespaced_custom_object(
        *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME,
        [{"op": "replace", "path": "/spec/routes/0/services/0/namespace", "value": GREEN}],
        _content_type="application/json-patch+json")
    async with watch.Watch() as w:
        stream = w.stream(custom.list_namespaced_custom_object, *TRAEFIK, ROUTING,
                          "ingressroutes", resource_version=since, timeout_seconds=2)
        [event] = await collect(stream, 1)
    assert event["type"] == "MODIFIED"
    obj = event["raw_object"]
    assert obj["kind"] == "IngressRoute"
    assert obj["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    assert obj["spec"]["routes"][0]["services"][0]["namespace"] == GREEN


async def test_watch_without_version_starts_with_current_state_then_live(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)

    async def later():
        await asyncio.sleep(0.1)
        await core.patch_namespaced_service(
            "api-service", BLUE, {"metadata": {"labels": {"x": "1"}}})

    task = asyncio.create_task(later())
    async with watch.Watch() as w:
        stream = w.stream(core.list_namespaced_service, BLUE, timeout_seconds=3)
        events = await collect(stream, 2)
    await task
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    assert events[1]["object"].metadata.labels == {"x": "1"}


async def test_watch_translates_selector_moves(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "w"}})
    start = (await core.list_namespaced_config_map("w")).metadata.resource_version
    await core.create_namespaced_config_map("w", {"metadata": {"name": "c", "labels": {"on": "y"}}})
    await core.patch_namespaced_config_map("c", "w", {"metadata": {"labels": {"on": "n"}}})
    await core.patch_namespaced_config_map("c", "w", {"metadata": {"labels": {"on": "y"}}})
    async with watch.Watch() as w:
        stream = w.stream(core.list_namespaced_config_map, "w", label_selector="on=y",
                          resource_version=start, timeout_seconds=2)
        events = await collect(stream, 3)
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED"]


async def test_bookmarks_carry_current_resource_version(kube_bluegreen, kube_api):
    apps = client.AppsV1Api(kube_api)
    listing = await apps.list_deployment_for_all_namespaces()
    async with watch.Watch() as w:
        stream = w.stream(apps.list_deployment_for_all_namespaces, allow_watch_bookmarks=True,
                          resource_version=listing.metadata.resource_version, timeout_seconds=3)
        [bookmark] = await collect(stream, 1, skip_bookmarks=False)
    assert bookmark["type"] == "BOOKMARK"
    current = kube_bluegreen.store.resource_version
    assert bookmark["raw_object"]["metadata"]["resourceVersion"] == current
    assert w.resource_version == kube_bluegreen.store.resource_version


async def test_too_old_resource_version_is_410(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    old = (await core.list_namespaced_pod(BLUE)).metadata.resource_version
    kube_bluegreen.expire_watches()
    with pytest.raises(ApiException) as exc:
        async with watch.Watch() as w:
            async for _ in w.stream(core.list_namespaced_pod, BLUE, resource_version=old,
                                    timeout_seconds=2):
                pass
    assert exc.value.status == 410
    # A fresh list gives a version that can be watched again.
    fresh = (await core.list_namespaced_pod(BLUE)).metadata.resource_version
    async with watch.Watch() as w:
        stream = w.stream(core.list_namespaced_pod, BLUE, resource_version=fresh,
                          allow_watch_bookmarks=True, timeout_seconds=2)
        [event] = await collect(stream, 1, skip_bookmarks=False)
    assert event["type"] == "BOOKMARK"


async def test_bounded_history_expires_old_versions(kube_emulator, kube_api):
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "h"}})
    start = (await core.list_namespaced_config_map("h")).metadata.resource_version
    kube_emulator.store._history = type(kube_emulator.store._history)(maxlen=3)
    for i in range(5):
        await core.create_namespaced_config_map("h", {"metadata": {"name": f"c{i}"}})
    with pytest.raises(ApiException) as exc:
        async with watch.Watch() as w:
            async for _ in w.stream(core.list_namespaced_config_map, "h", resource_version=start,
                                    timeout_seconds=1):
                pass
    assert exc.value.status == 410


async def test_dropped_watch_is_resumed_by_client(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    listing = await core.list_namespaced_config_map(GREEN)
    seen: list[str] = []

    async def consume():
        async with watch.Watch() as w:  # no timeout_seconds: the client reconnects by itself
            async for event in w.stream(core.list_namespaced_config_map, GREEN,
                                        resource_version=listing.metadata.resource_version):
                seen.append(event["object"].metadata.name)
                if len(seen) == 2:
                    return

    task = asyncio.create_task(consume())
    await core.create_namespaced_config_map(GREEN, {"metadata": {"name": "first"}})
    await kube_bluegreen.wait_for(lambda: kube_bluegreen.open_watches == 1, within=2)
    await asyncio.sleep(0.05)
    assert kube_bluegreen.drop_watches() == 1
    await core.create_namespaced_config_map(GREEN, {"metadata": {"name": "second"}})
    await asyncio.wait_for(task, 3)
    assert seen == ["first", "second"]
    watches = kube_bluegreen.requests.records(verb="watch")
    assert len(watches) == 2


async def test_expired_and_dropped_watch_surfaces_410(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    listing = await core.list_namespaced_config_map(GREEN)

    async def consume():
        async with watch.Watch() as w:
            async for _ in w.stream(core.list_namespaced_config_map, GREEN,
                                    resource_version=listing.metadata.resource_version):
                pass

    task = asyncio.create_task(consume())
    await kube_bluegreen.wait_for(lambda: kube_bluegreen.open_watches == 1, within=2)
    kube_bluegreen.expire_watches(drop=True)
    with pytest.raises(ApiException) as exc:
        await asyncio.wait_for(task, 3)
    assert exc.value.status == 410


async def test_watch_timeout_ends_stream(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with watch.Watch() as w:
        events = [e async for e in w.stream(core.list_namespaced_secret, BLUE, timeout_seconds=1)]
    assert events == []
    assert 0.9 <= loop.time() - started < 2.5
