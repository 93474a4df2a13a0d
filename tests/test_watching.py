"""Watches over HTTP against the emulated API server: events, reconnects, 410 re-lists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from gatekeeper import tasks, watching
from gatekeeper.config import PairConfig, RouteRef
from tests.fixtures.kube import (
    BLUE,
    DEPLOYMENT,
    GREEN,
    ROUTE_NAME,
    ROUTING,
    api_client_for,
)

GENEROUS = 10.0
PAIR = PairConfig(name="api", namespaces=(BLUE, GREEN),
                  routes=(RouteRef(name=ROUTE_NAME, namespace=ROUTING),))
FAST = watching.WatchSettings(backoff=tasks.Backoff(initial=0.05, maximum=0.5))


class Recorder:
    """Collects callback events and wakes waiters on each one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self._arrived = asyncio.Condition()

    async def __call__(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        self.events.append((kind, event_type, obj))
        async with self._arrived:
            self._arrived.notify_all()

    def matching(self, kind: str, event_type: str, name: str) -> list[dict[str, Any]]:
        return [o for k, t, o in self.events
                if (k, t, o["metadata"]["name"]) == (kind, event_type, name)]

    async def wait_for(self, kind: str, event_type: str, name: str, check=None) -> dict:
        """The first such event (satisfying `check`), waiting a bounded time for it."""
        def found() -> dict | None:
            return next((o for o in self.matching(kind, event_type, name)
                         if check is None or check(o)), None)

        async with asyncio.timeout(GENEROUS), self._arrived:
            await self._arrived.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result


@pytest.fixture
async def other_api(kube_bluegreen) -> AsyncIterator[client.ApiClient]:
    """A second client, as a human with kubectl would be."""
    api = api_client_for(str(kube_bluegreen.url))
    yield api
    await api.close()


@pytest.fixture
async def started(kube_bluegreen, kube_api) -> AsyncIterator[tuple[watching.Watcher, Recorder]]:
    """A synced watcher of the blue/green pair and its recorded callback events."""
    recorder = Recorder()
    watcher = watching.Watcher(kube_api, [PAIR], on_event=recorder, settings=FAST)
    task = tasks.start_task("watcher", watcher.run)
    await asyncio.wait_for(watcher.wait_synced(), GENEROUS)
    yield watcher, recorder
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def admin(emulator, path: str) -> dict[str, Any]:
    """Call an `/_emulator/` endpoint over HTTP."""
    async with aiohttp.ClientSession() as session, session.post(
        f"{emulator.url}/_emulator/{path}"
    ) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def live(api: client.ApiClient, kind: str, namespace: str) -> dict[str, str]:
    """name -> resourceVersion of the live objects, straight from the API."""
    if kind == "Pod":
        items = (await client.CoreV1Api(api).list_namespaced_pod(namespace)).items
    else:
        items = (await client.AppsV1Api(api).list_namespaced_deployment(namespace)).items
    return {item.metadata.name: item.metadata.resource_version for item in items}


def cached(watcher: watching.Watcher, kind: str, namespace: str) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"]
            for o in watcher.objects(kind, namespace)}


async def converged(watcher: watching.Watcher, api: client.ApiClient) -> None:
    """Wait (bounded) until the cache equals the live Pods and Deployments of both namespaces."""
    for _ in range(int(GENEROUS / 0.05)):
        same = True
        for namespace in (BLUE, GREEN):
            for kind in ("Pod", "Deployment"):
                if cached(watcher, kind, namespace) != await live(api, kind, namespace):
                    same = False
        if same:
            return
        await asyncio.sleep(0.05)
    diff = {f"{kind}/{ns}": (cached(watcher, kind, ns), await live(api, kind, ns))
            for ns in (BLUE, GREEN) for kind in ("Pod", "Deployment")}
    raise AssertionError(f"the watch cache did not converge to the live objects: {diff} "
                         f"{watcher.streams}")


async def watches_open(watcher: watching.Watcher) -> None:
    """Wait (bounded) until every stream has a watch open: each got a bookmark on it."""
    marks = {t: s.bookmarks for t, s in watcher.streams.items()}
    await asyncio.wait_for(watcher.wait_until(
        lambda: all(s.bookmarks > marks[t] for t, s in watcher.streams.items())), GENEROUS)


async def scale(api: client.ApiClient, namespace: str, replicas: int) -> None:
    await client.AppsV1Api(api).patch_namespaced_deployment_scale(
        DEPLOYMENT, namespace, {"spec": {"replicas": replicas}},
        _content_type="application/merge-patch+json")


def test_targets_cover_both_namespaces_and_every_route_group() -> None:
    """Pods and Deployments of each namespace, each route's kind in its own API group, once."""
    pair = PAIR.model_copy(update={"routes": (
        RouteRef(name="a", namespace=ROUTING),
        RouteRef(name="b", namespace=ROUTING),
        RouteRef(name="c", namespace=ROUTING, api_group="traefik.containo.us"),
        RouteRef(kind="TraefikService", name="w", namespace=ROUTING),
    )})
    names = sorted(str(t) for t in watching.targets_for([pair, pair]))
    assert names == sorted([
        f"pods/{BLUE}", f"pods/{GREEN}", f"deployments.apps/{BLUE}",
        f"deployments.apps/{GREEN}", f"ingressroutes.traefik.io/{ROUTING}",
        f"ingressroutes.traefik.containo.us/{ROUTING}", f"traefikservices.traefik.io/{ROUTING}",
    ])


async def test_initial_list_fills_the_cache(started, kube_api) -> None:
    """After wait_synced the cache holds every watched object, each reported as ADDED."""
    watcher, recorder = started
    await converged(watcher, kube_api)
    route = watcher.get("IngressRoute", ROUTING, ROUTE_NAME)
    assert route is not None and route["apiVersion"] == "traefik.io/v1alpha1"
    assert recorder.matching("IngressRoute", "ADDED", ROUTE_NAME)
    assert recorder.matching("Deployment", "ADDED", DEPLOYMENT)
    assert len(watcher.objects("Pod", BLUE)) == 2
    assert all(state.lists == 1 and state.synced for state in watcher.streams.values())


async def test_paged_list_gets_every_object(kube_bluegreen, kube_api) -> None:
    """With one object per page the list follows `continue` tokens to the end."""
    paged = watching.WatchSettings(page_size=1, backoff=FAST.backoff)
    watcher = watching.Watcher(kube_api, [PAIR], settings=paged)
    task = tasks.start_task("paged watcher", watcher.run)
    try:
        await asyncio.wait_for(watcher.wait_synced(), GENEROUS)
        await converged(watcher, kube_api)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    pages = [r for r in kube_bluegreen.requests.records(verb="list", path_contains=f"{BLUE}/pods")
             if "limit=1" in r.query]  # the watcher's, not the test's own unpaged lists
    assert len(pages) == 2 and "continue=" in pages[1].query


async def test_manual_route_patch_is_seen_at_once(started, other_api) -> None:
    """A `kubectl patch` of the route by someone else reaches the callback promptly."""
    watcher, recorder = started
    patch = [{"op": "replace", "path": "/spec/routes/0/services/0/namespace", "value": GREEN}]
    patched = await client.CustomObjectsApi(other_api).patch_namespaced_custom_object(
        "traefik.io", "v1alpha1", ROUTING, "ingressroutes", ROUTE_NAME, patch,
        _content_type="application/json-patch+json")
    # The callback is what reacts; it must fire (bounded wait) with the patched object.
    seen = await recorder.wait_for(
        "IngressRoute", "MODIFIED", ROUTE_NAME,
        check=lambda o: o["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"])
    assert seen["spec"]["routes"][0]["services"][0]["namespace"] == GREEN
    assert watcher.get("IngressRoute", ROUTING, ROUTE_NAME, group="traefik.io") == seen


async def test_pod_and_deployment_changes_are_reported(started, other_api, kube_api) -> None:
    """Scaling a Deployment reports the Deployment change and the pods added and deleted."""
    watcher, recorder = started
    before = watcher.changes
    await scale(other_api, GREEN, 3)
    await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                            check=lambda o: o["metadata"]["namespace"] == GREEN
                            and o["spec"]["replicas"] == 3)
    await watcher.wait_until(lambda: len(watcher.objects("Pod", GREEN)) == 3)
    await scale(other_api, GREEN, 1)
    await asyncio.wait_for(
        watcher.wait_until(lambda: len(watcher.objects("Pod", GREEN)) == 1), GENEROUS)
    assert [t for k, t, _ in recorder.events if k == "Pod"].count("DELETED") >= 2
    assert watcher.changes > before
    await converged(watcher, kube_api)


async def test_dropped_watch_reconnects_and_misses_nothing(
    started, kube_bluegreen, other_api, kube_api
) -> None:
    """After the server drops every watch, streams resume from their resourceVersion: changes
    made meanwhile arrive and the cache equals the live objects, without a re-list."""
    watcher, recorder = started
    await watches_open(watcher)
    connections = {t: s.connections for t, s in watcher.streams.items()}
    dropped = await admin(kube_bluegreen, "watches/drop")
    assert dropped["dropped"] == len(watcher.targets)
    await scale(other_api, BLUE, 4)
    await scale(other_api, GREEN, 0)
    await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                            check=lambda o: o["spec"]["replicas"] == 0)
    await converged(watcher, kube_api)
    for target, state in watcher.streams.items():
        assert state.connections > connections[target], f"{target} did not reconnect"
        assert state.lists == 1 and state.gone == 0, f"{target} re-listed needlessly"


async def test_changes_while_disconnected_are_replayed(kube_bluegreen, kube_api, other_api) -> None:
    """A stream that was down while objects changed catches up from its resourceVersion."""
    recorder = Recorder()
    watcher = watching.Watcher(kube_api, [PAIR], on_event=recorder, settings=FAST)
    task = tasks.start_task("watcher", watcher.run)
    await asyncio.wait_for(watcher.wait_synced(), GENEROUS)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    await scale(other_api, BLUE, 3)  # nobody is watching now
    task = tasks.start_task("watcher", watcher.run)
    try:
        await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                                check=lambda o: o["spec"]["replicas"] == 3)
        await converged(watcher, kube_api)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert all(state.lists == 1 for state in watcher.streams.values())


async def test_gone_triggers_a_relist_that_reports_the_gap(
    kube_bluegreen, kube_api, other_api
) -> None:
    """410 Gone on reconnect: the stream re-lists, and objects deleted in the gap are reported
    as DELETED (the diff against the cache), so the cache converges."""
    recorder = Recorder()
    watcher = watching.Watcher(kube_api, [PAIR], on_event=recorder, settings=FAST)
    task = tasks.start_task("watcher", watcher.run)
    await asyncio.wait_for(watcher.wait_synced(), GENEROUS)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    victim = watcher.objects("Pod", GREEN)[0]["metadata"]["name"]
    await client.CoreV1Api(other_api).delete_namespaced_pod(victim, GREEN)
    await admin(kube_bluegreen, "watches/expire")  # history compacted: old versions are gone
    task = tasks.start_task("watcher", watcher.run)
    try:
        await recorder.wait_for("Pod", "DELETED", victim)
        await converged(watcher, kube_api)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    pods = watcher.streams[watching.Target(watching.PODS, GREEN)]
    assert pods.gone >= 1 and pods.lists >= 2


async def test_gone_on_an_open_watch_relists(started, kube_bluegreen, other_api,
                                             kube_api) -> None:
    """Expiring history and dropping the watches makes every stream re-list, then watch on."""
    watcher, recorder = started
    await watches_open(watcher)
    await admin(kube_bluegreen, "watches/expire?drop=true")
    await watcher.wait_until(lambda: all(s.lists >= 2 for s in watcher.streams.values()))
    assert all(s.gone >= 1 for s in watcher.streams.values())
    await scale(other_api, GREEN, 3)
    await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                            check=lambda o: o["spec"]["replicas"] == 3)
    await converged(watcher, kube_api)


async def test_bookmarks_advance_the_resource_version(started, kube_api) -> None:
    """Writes elsewhere move the server's resourceVersion; bookmarks carry it to idle streams
    without any event, so a reconnect resumes from there."""
    watcher, _ = started
    target = watching.Target(watching.DEPLOYMENTS, BLUE)
    state = watcher.streams[target]
    changes = state.changes
    created = await client.CoreV1Api(kube_api).create_namespaced_config_map(
        ROUTING, {"metadata": {"name": "unrelated"}, "data": {"k": "v"}})
    elsewhere = int(created.metadata.resource_version)
    await asyncio.wait_for(watcher.wait_until(
        lambda: int(state.resource_version or 0) >= elsewhere), GENEROUS)
    assert state.bookmarks >= 1
    assert state.changes == changes  # no event reached this stream; only bookmarks did


async def test_errors_back_off_and_recover(started, kube_bluegreen, other_api, kube_api) -> None:
    """Watch requests answered 500 are retried with backoff; the stream recovers."""
    watcher, recorder = started
    await watches_open(watcher)
    rule = kube_bluegreen.faults.add(status=500, verb="watch", times=3)
    await admin(kube_bluegreen, "watches/drop")
    await watcher.wait_until(lambda: rule.injected == 3)
    await scale(other_api, BLUE, 1)
    await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                            check=lambda o: o["metadata"]["namespace"] == BLUE
                            and o["spec"]["replicas"] == 1)
    await converged(watcher, kube_api)
    assert sum(s.failures for s in watcher.streams.values()) == 3


async def test_failing_callback_is_logged_and_the_stream_carries_on(started, other_api) -> None:
    """One callback raising does not stop the stream nor the other callbacks."""
    watcher, recorder = started

    async def broken(kind: str, event_type: str, obj: dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    unsubscribe = watcher.subscribe(broken)
    with capture_logs() as logs:
        await scale(other_api, BLUE, 3)
        await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                                check=lambda o: o["spec"]["replicas"] == 3)
        unsubscribe()
        await scale(other_api, BLUE, 2)
        await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                                check=lambda o: o["metadata"]["namespace"] == BLUE
                                and o["spec"]["replicas"] == 2)
    failed = [e for e in logs if e["event"] == "watch callback failed"]
    assert failed and failed[0]["kind"] == "Deployment" and failed[0]["exc_info"]


def test_targets_go_cluster_wide_past_max_streams() -> None:
    """Past `max_streams`, `auto` watches each kind once over all namespaces, keeping the
    same namespaces; `namespaces` and a roomy `auto` keep one stream per namespace."""
    pairs = [PairConfig(name=f"p{k}", namespaces=(f"p{k}-blue", f"p{k}-green"),
                        routes=(RouteRef(name="live", namespace="routing"),)) for k in range(3)]
    assert len(watching.targets_for(pairs, scope="auto", max_streams=13)) == 13
    assert len(watching.targets_for(pairs, scope="namespaces", max_streams=5)) == 13
    wide = watching.targets_for(pairs, scope="auto", max_streams=12)
    assert [str(t) for t in wide] == ["deployments.apps/*", "ingressroutes.traefik.io/*",
                                      "pods/*"]
    pods = next(t for t in wide if t.resource == watching.PODS)
    assert pods.kept == tuple(sorted(ns for p in pairs for ns in p.namespaces))
    assert pods.keeps("p1-green") and not pods.keeps("routing") and not pods.keeps("other")
    assert watching.targets_for(pairs[:1], scope="cluster") == tuple(
        watching.Target(t.resource, watching.ALL_NAMESPACES, t.kept) for t in wide)


def test_more_streams_than_allowed_is_refused(kube_api) -> None:
    """Scope `namespaces` with more streams than `max_streams` is an error, not a stall."""
    settings = watching.WatchSettings(scope="namespaces", max_streams=4)
    with pytest.raises(ValueError, match="5 watch streams exceed max_streams 4"):
        watching.Watcher(kube_api, [PAIR], settings=settings)


async def test_cluster_wide_streams_keep_only_the_managed_namespaces(
    kube_bluegreen, kube_api, other_api
) -> None:
    """One stream per kind over all namespaces: the pair's objects are cached and reported,
    another namespace's are not; a 410 re-list keeps it so."""
    kube_bluegreen.load([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DEPLOYMENT, "namespace": "elsewhere"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                  "template": {"metadata": {"labels": {"app": "x"}},
                               "spec": {"containers": [{"name": "x", "image": "x:1"}]}}}},
    ])
    recorder = Recorder()
    settings = watching.WatchSettings(scope="cluster", backoff=FAST.backoff)
    watcher = watching.Watcher(kube_api, [PAIR], on_event=recorder, settings=settings)
    assert all(t.cluster_wide for t in watcher.targets) and len(watcher.targets) == 3
    task = tasks.start_task("cluster-wide watcher", watcher.run)
    try:
        await asyncio.wait_for(watcher.wait_synced(), GENEROUS)
        await converged(watcher, kube_api)
        await watches_open(watcher)
        await scale(other_api, "elsewhere", 2)
        await scale(other_api, GREEN, 3)
        await recorder.wait_for("Deployment", "MODIFIED", DEPLOYMENT,
                                check=lambda o: o["metadata"]["namespace"] == GREEN)
        await converged(watcher, kube_api)
        await admin(kube_bluegreen, "watches/expire?drop=true")
        await scale(other_api, BLUE, 1)
        await asyncio.wait_for(watcher.wait_until(
            lambda: len(watcher.objects("Pod", BLUE)) == 1), GENEROUS)
        await converged(watcher, kube_api)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not watcher.objects(namespace="elsewhere")
    assert not [o for _k, _t, o in recorder.events if o["metadata"]["namespace"] == "elsewhere"]
    assert sum(state.gone for state in watcher.streams.values()) >= 1
    assert watcher.get("IngressRoute", ROUTING, ROUTE_NAME) is not None


async def test_streams_never_take_the_callers_connections(kube_bluegreen) -> None:
    """Streams run on a pool of their own: with a caller's pool of one connection and five
    open watches, the caller's own calls still get through."""
    configuration = client.Configuration(host=str(kube_bluegreen.url))
    configuration.connection_pool_maxsize = 1
    api = client.ApiClient(configuration)
    watcher = watching.Watcher(api, [PAIR], settings=FAST)
    task = tasks.start_task("watcher", watcher.run)
    try:
        await asyncio.wait_for(watcher.wait_synced(), GENEROUS)
        await watches_open(watcher)
        assert kube_bluegreen.open_watches == len(watcher.targets) == 5
        for _ in range(3):
            deployments = await asyncio.wait_for(
                client.AppsV1Api(api).list_namespaced_deployment(GREEN), GENEROUS)
            assert [d.metadata.name for d in deployments.items] == [DEPLOYMENT]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()


async def test_watching_another_set_of_pairs_stops_and_starts_only_the_streams_that_differ(
        started, kube_bluegreen):
    """`watch` follows a new set of pairs (an object added or deleted, shards moved): the
    streams no longer needed close and their objects leave the cache (reads go to the API
    server), the kept ones go on without re-listing, new ones list before answering."""
    watcher, _recorder = started
    routes = watching.Target(watching.route_resource(PAIR.routes[0]), ROUTING)
    assert watcher.listed(watching.PODS, GREEN)
    routes_lists = watcher.streams[routes].lists
    only_routes = PairConfig(name="routes-only", namespaces=("elsewhere-a", "elsewhere-b"),
                             routes=PAIR.routes)
    assert watcher.watch([only_routes])
    assert watcher.listed(watching.PODS, GREEN) is None  # no stream covers it now
    await wait_for_true(lambda: kube_bluegreen.open_watches == len(watcher.targets)
                        and all(s.live for s in watcher.streams.values()))
    assert not watcher.objects("Pod", GREEN) and not watcher.objects("Deployment", BLUE)
    assert watcher.streams[routes].lists == routes_lists  # kept, not re-listed
    assert watcher.watch([PAIR])
    await asyncio.wait_for(watcher.wait_synced(), GENEROUS)
    assert [p["metadata"]["name"] for p in watcher.listed(watching.PODS, GREEN) or []]
    assert watcher.listed(watching.PODS, "elsewhere-a") is None


async def wait_for_true(predicate) -> None:
    for _ in range(int(GENEROUS / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")
