"""The control loop's reads and folding, through the real kubernetes_asyncio client against
the emulated API server (requests counted at the server).

A tick reads Deployments, pods (for readiness, the `restarts` rule and the logs source) and
the routes from the watch cache (one list+watch per resource and namespace) while its
streams are listed and connected, and lists afresh otherwise. Routes come from the cache
only while they say what the pair's record expects: a change, and the first read, are read
afresh (a GET per route). What it publishes is the cluster's either way.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from kubernetes_asyncio import client

from gatekeeper.lifecycle import Action, ReleaseState
from gatekeeper.operations import ActionResult, Operations
from gatekeeper.service.app import create_service
from gatekeeper.service.livereads import ROUTE_RESYNC
from gatekeeper.watching import DEPLOYMENTS, route_resource
from tests.fixtures.kube import api_client_for
from tests.service_support import (
    NEW,
    PODS_READY_RULE,
    ROUTE,
    TOKEN,
    seed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

BLUE, GREEN, ROUTING = "ctl-blue", "ctl-green", "ctl-routing"
PAIRS = [("ctl", BLUE, GREEN, ROUTING)]
RESTARTS_RULE = {"name": "restarts", "source": "kubernetes", "check": "restarts",
                 "pass": ["== 0"], "weight": 1}
LOG_RULE = {"name": "log-errors", "source": "logs", "logs": {"pattern": "(?i)error"},
            "pass": ["<= 10"], "weight": 1}
ROUTE_GET = ("get", ROUTE)


@pytest.fixture
async def service(tmp_path, kube_emulator, kube_api, aiohttp_server):
    """A service for pair `ctl` with its watcher running and the loop left to the test."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    loaded = write_config(tmp_path, PAIRS, prometheus_url=None,
                          rules=[PODS_READY_RULE, RESTARTS_RULE, LOG_RULE],
                          policy={"auto_flip": False})
    started = create_service(loaded, kube_api, token=TOKEN, run_loop=False)
    await aiohttp_server(started.app)  # starts the background tasks: the watch streams
    yield started
    await started.close()


def streams(service):
    return service.controller.ticker.cache.streams.values()


def requests_by_kind(emulator) -> Counter[tuple[str, str]]:
    """(verb, resource) of every request since the last clear, e.g. ("list", "pods")."""
    return Counter((r.verb, r.path.rstrip("/").split("/")[-1])
                   for r in emulator.requests.records())


async def test_a_tick_lists_nothing_while_the_watch_cache_is_current(service, kube_emulator):
    """Deployments and pods come from the cache (readiness, `restarts`, the logs source): a
    tick makes no list request, only the route GETs of the first read, and still sees a
    change made a moment ago by someone else."""
    controller = service.controller
    await wait_until(lambda: all(s.synced and s.live for s in streams(service)), within=10,
                     what="every watch stream listed and connected")
    kube_emulator.requests.clear()
    await controller.tick()
    seen = requests_by_kind(kube_emulator)
    assert not [k for k in seen if k[0] == "list"], seen
    # The route, read afresh: in its configured Traefik API group and in the other one.
    assert seen[ROUTE_GET] == 2, seen
    assert seen[("get", "log")] == 4, seen  # the logs of 2 pods in each namespace
    view = controller.views["ctl"]
    assert view.readiness[GREEN].ready and view.readiness[GREEN].pods_total == 2
    assert view.verdict is not None and view.verdict.verdict == "safe"

    person = api_client_for(str(kube_emulator.url))
    try:
        await client.AppsV1Api(person).patch_namespaced_deployment_scale(
            "api", GREEN, {"spec": {"replicas": 0}},
            _content_type="application/merge-patch+json")
    finally:
        await person.close()
    cache = controller.ticker.cache
    await wait_until(lambda: [d["spec"]["replicas"] for d in
                              cache.listed(DEPLOYMENTS, GREEN) or []] == [0], within=10,
                     what="the cache to see green scaled to 0")
    kube_emulator.requests.clear()
    await controller.tick()
    assert not [k for k in requests_by_kind(kube_emulator) if k[0] == "list"]
    assert not view.readiness[GREEN].ready
    assert "Deployment api is scaled to 0" in view.readiness[GREEN].reasons
    assert view.verdict is not None and view.verdict.verdict != "safe"


async def test_a_tick_lists_afresh_while_the_watch_is_down(service, kube_emulator):
    """A stream that cannot watch never answers from its stale copy: the tick lists the
    Deployments and pods itself, and goes back to the cache once the streams are back."""
    controller = service.controller
    await wait_until(lambda: all(s.synced and s.live for s in streams(service)), within=10,
                     what="every watch stream listed and connected")
    rule = kube_emulator.faults.add(status=500, verb="watch", times=200)
    kube_emulator.drop_watches()
    await wait_until(lambda: not any(s.live for s in streams(service)), within=10,
                     what="every stream down")
    kube_emulator.requests.clear()
    await controller.tick()
    seen = requests_by_kind(kube_emulator)
    for namespace_lists in (("list", "deployments"), ("list", "pods")):
        assert seen[namespace_lists] >= 2, seen  # both namespaces, read afresh
    view = controller.views["ctl"]
    assert view.readiness[GREEN].ready and view.readiness[BLUE].ready
    # The streams' reconnects were refused (they retry after a backoff, so wait for one).
    await wait_until(lambda: rule.injected > 0, within=15, what="a refused watch reconnect")

    kube_emulator.faults.clear()
    await wait_until(lambda: all(s.live for s in streams(service)), within=15,
                     what="the streams back")
    kube_emulator.requests.clear()
    await controller.tick()
    assert not [k for k in requests_by_kind(kube_emulator) if k[0] == "list"]


async def current(service) -> None:
    await wait_until(lambda: all(s.synced and s.live for s in streams(service)), within=10,
                     what="every watch stream listed and connected")


def cached_target(service) -> str | None:
    """Where the watch cache's copy of the route sends traffic."""
    pair = service.controller.config.pairs[0]
    ref = pair.routes[0]
    body = service.controller.ticker.cache.named(route_resource(ref), ref.namespace, ref.name)
    return body["spec"]["routes"][0]["services"][0]["namespace"] if body else None


async def point_route(emulator, namespace: str) -> None:
    """A person's `kubectl edit` of the route: all traffic to `namespace`."""
    body = seed(BLUE, GREEN, ROUTING)[-1]
    body["spec"]["routes"][0]["services"][0]["namespace"] = namespace
    person = api_client_for(str(emulator.url))
    try:
        await client.CustomObjectsApi(person).patch_namespaced_custom_object(
            "traefik.io", "v1alpha1", ROUTING, "ingressroutes", ROUTE, {"spec": body["spec"]},
            _content_type="application/merge-patch+json")
    finally:
        await person.close()


async def test_a_tick_reads_the_routes_from_the_cache_while_they_say_what_the_record_expects(
        service, kube_emulator):
    """After the first read (afresh: the record knew nothing), a tick GETs no route and
    lists nothing; the active namespace it publishes is still the routes'."""
    controller = service.controller
    await current(service)
    await controller.tick()
    view = controller.views["ctl"]
    assert view.state.active == BLUE
    kube_emulator.requests.clear()
    await controller.tick()
    seen = requests_by_kind(kube_emulator)
    assert seen[ROUTE_GET] == 0 and not [k for k in seen if k[0] == "list"], seen
    assert view.observation is not None and view.observation.active == BLUE
    assert view.verdict is not None and view.verdict.verdict == "safe"
    # Every ROUTE_RESYNC (give or take a quarter) the routes are read afresh once anyway.
    memory = controller.ticker.routes
    later = time.monotonic() + 1.3 * ROUTE_RESYNC
    memory.clock = lambda: later
    kube_emulator.requests.clear()
    await controller.tick()
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 2
    kube_emulator.requests.clear()
    await controller.tick()
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 0


async def test_a_route_change_seen_in_the_cache_is_confirmed_by_a_fresh_read(
        service, kube_emulator):
    """A person moves the traffic with kubectl: the cache shows it, the tick reads the route
    afresh before following it, and the ticks after take it from the cache again."""
    controller = service.controller
    await current(service)
    await controller.tick()
    await point_route(kube_emulator, GREEN)
    await wait_until(lambda: cached_target(service) == GREEN, within=10,
                     what="the cache to see the route on green")
    kube_emulator.requests.clear()
    await controller.tick()
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 2  # both Traefik API groups
    view = controller.views["ctl"]
    assert view.state.active == GREEN and view.state.previous == BLUE
    kube_emulator.requests.clear()
    await controller.tick()
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 0
    assert view.observation is not None and view.observation.active == GREEN


async def test_the_tick_after_a_flip_reads_the_routes_afresh_while_the_cache_lags(
        service, kube_emulator):
    """The watch event of gatekeeper's own flip has not arrived yet: the tick does not take
    the old route from the cache (that would read as someone moving the traffic back), it
    reads it afresh and sees the flip."""
    controller = service.controller
    await current(service)
    await controller.tick()
    kube_emulator.watch_lag = 5.0  # the API server's watch trails its writes
    outcome = await controller.request("ctl", "flip", force=True)
    assert outcome.changed and outcome.active == GREEN, outcome
    assert cached_target(service) == BLUE  # the cache has not seen the flip
    kube_emulator.requests.clear()
    await controller.tick()
    view = controller.views["ctl"]
    assert view.observation is not None and view.observation.active == GREEN
    assert (view.state.active, view.state.phase) == (GREEN, "flipped")
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 2
    kube_emulator.watch_lag = 0.0
    await wait_until(lambda: cached_target(service) == GREEN, within=15,
                     what="the cache to catch up")
    kube_emulator.requests.clear()
    await controller.tick()
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 0
    assert (view.state.active, view.state.phase) == (GREEN, "flipped")


async def test_a_flip_by_another_process_the_cache_has_not_seen_is_not_undone(
        service, kube_emulator):
    """Another gatekeeper (the CLI, a former leader) flips and records it while this one's
    cache lags: the stored record, read at the step, expects other routes than the cache
    shows, so the step is skipped rather than taken as traffic moved back; the next tick
    reads the routes afresh and agrees with the record."""
    controller = service.controller
    await current(service)
    await controller.tick()
    await controller.tick()  # the routes now come from the cache
    view = controller.views["ctl"]
    assert view.state.active == BLUE
    kube_emulator.watch_lag = 5.0
    other = api_client_for(str(kube_emulator.url))
    try:
        pair = controller.config.pairs[0]
        flipped = await Operations(other, controller.config).flip(pair, to=GREEN)
        assert flipped.changed, flipped
    finally:
        await other.close()
    assert cached_target(service) == BLUE
    kube_emulator.requests.clear()
    await controller.tick()
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 0  # taken from the lagging cache
    assert view.state.active == GREEN and view.state.previous == BLUE  # the record's
    kube_emulator.requests.clear()
    await controller.tick()
    assert requests_by_kind(kube_emulator)[ROUTE_GET] == 2
    assert view.observation is not None and view.observation.active == GREEN
    assert (view.state.active, view.state.previous) == (GREEN, BLUE)
    kube_emulator.watch_lag = 0.0


async def test_results_are_folded_once_the_same_way_for_the_loop_and_requests(service):
    """`Folder.fold`: a switch that happened completes the step for every caller; a no-op
    completes only the loop's own step; a refusal blocks only what gatekeeper decided."""
    folder = service.controller.folder
    pair = service.controller.config.pairs[0]
    state = ReleaseState(phase="ready", active=BLUE, dark=GREEN, since=0.0)
    flip = Action("flip", GREEN, trigger="auto", reason="gates passed")
    moved = ActionResult("flip", True, False, ("flipped",), GREEN, {"from": BLUE})
    stayed = ActionResult("flip", False, False, ("already active",), GREEN, {})
    refused = ActionResult("flip", False, True, ("green cannot take traffic",), BLUE, {})

    for requested in (False, True):
        done = folder.fold(pair, state, flip, moved, 0.0, automatic=True, requested=requested)
        assert (done.state.phase, done.state.active, done.state.previous) == (
            "flipped", GREEN, BLUE)
        assert [t.target for t in done.transitions] == ["flipped"]
    assert folder.fold(pair, state, flip, stayed, 0.0, automatic=True,
                       requested=False).state.phase == "flipped"
    assert folder.fold(pair, state, flip, stayed, 0.0, automatic=False,
                       requested=True).state == state
    blocked = folder.fold(pair, state, flip, refused, 0.0, automatic=True, requested=False)
    assert blocked.state.phase == "blocked" and "cannot take traffic" in blocked.state.reason
    assert folder.fold(pair, state, flip, refused, 0.0, automatic=False,
                       requested=True).state == state


async def test_a_record_whose_first_write_failed_is_written_by_a_later_tick(service,
                                                                            kube_emulator):
    """The first state write of a pair is refused (the API server answers 500): a later tick
    writes the record although the lifecycle changed nothing since (before, "nothing
    stored" carried the state in memory and no later step wrote it)."""
    controller = service.controller
    await current(service)
    refused = kube_emulator.faults.add(status=500, path="configmaps", verb="create",
                                       times=1000)
    await controller.tick()
    view = controller.views["ctl"]
    assert refused.injected > 0 and view.state.active == BLUE
    assert view.state_error and "state not written" in view.state_error
    kube_emulator.faults.clear()
    await controller.tick()
    stored = await controller.store.load(controller.config.pairs[0])
    assert stored.release is not None and stored.release.active == BLUE, stored
    assert view.state_error is None
