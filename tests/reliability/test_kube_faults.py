"""Kubernetes API faults: flips and rollbacks through `Operations` against the emulated API
server answering 500, 429, 409, 422 and timeouts (before and after applying a write) on a
seeded share of calls, while a person edits the routes by hand.

Guarantees: never a half-flip (every route of the pair is checked after every attempt), never
a clobbered human edit, transient errors retried with jittered exponential backoff, and a
clear refusal (no exception, routes untouched) when the API keeps failing.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from gatekeeper.config import Config, PairConfig
from gatekeeper.kubeclient import TimeoutApiClient
from gatekeeper.operations import ActionResult, ClusterError, Operations
from gatekeeper.routers import reading
from kube_emulator import Emulator, running
from kube_emulator.kubeconfig import DUMMY_TOKEN
from tests.fixtures.kube import BLUE, GREEN, ROUTE_NAME, ROUTING, bluegreen_seed
from tests.service_support import route_targets

IR = "traefik.io/v1alpha1"
EDGE = "edge"
ROUTES = ((ROUTING, ROUTE_NAME), (ROUTING, "api-live-2"), (EDGE, "api-edge"))
REQUEST_TIMEOUT = 0.3
"""Client timeout: an injected delay of 0.6 s is a timeout."""


def three_route_seed() -> list[dict[str, Any]]:
    """The canonical blue/green seed with the pair's traffic behind three IngressRoutes."""
    objects = bluegreen_seed()
    route = next(o for o in objects if o["kind"] == "IngressRoute")
    extra: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": EDGE}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gatekeeper"}},
    ]
    for namespace, name in ROUTES[1:]:
        twin = copy.deepcopy(route)
        twin["metadata"].update(name=name, namespace=namespace)
        extra.append(twin)
    return objects + extra


def pair_config() -> Config:
    """One pair whose three routes must always agree."""
    return Config.model_validate({
        "pairs": [{"name": "api", "namespaces": [BLUE, GREEN],
                   "routes": [{"name": n, "namespace": ns} for ns, n in ROUTES]}],
        "state": {"configmap": "gatekeeper-state", "namespace": "gatekeeper"},
        "policy": {"ready_timeout": "5s"},
    })


@dataclass
class Cluster:
    """The emulator, a client with a short request timeout, and operations over both."""

    emulator: Emulator
    api: client.ApiClient
    ops: Operations

    @property
    def pair(self) -> PairConfig:
        return self.ops.config.pairs[0]

    def route(self, namespace: str, name: str) -> dict[str, Any]:
        """A route as stored (Python API: never faulted)."""
        body = self.emulator.get_object(IR, "IngressRoute", name, namespace)
        assert body is not None
        return body

    def pointed(self) -> dict[str, str]:
        """Where each route sends traffic now."""
        return route_targets(self.emulator, ROUTES)

    def assert_not_half_flipped(self) -> str:
        """All routes point at the same namespace; returns it."""
        pointed = self.pointed()
        assert len(set(pointed.values())) == 1, f"HALF-FLIP: {pointed}"
        return next(iter(pointed.values()))


def api_client(url: str) -> client.ApiClient:
    """The production client type (kubeclient.TimeoutApiClient) for the emulator."""
    configuration = client.Configuration(host=url)
    configuration.api_key = {"authorization": DUMMY_TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return TimeoutApiClient(configuration, request_timeout=REQUEST_TIMEOUT)


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """Blue active behind three routes, both namespaces Ready; a big request log."""
    async with running(three_route_seed(), ready_delay=0.0, request_log_size=100_000,
                       seed=8) as emulator:
        api = api_client(str(emulator.url))
        try:
            yield Cluster(emulator, api, Operations(api, pair_config()))
        finally:
            await api.close()


def route_requests(emulator: Emulator, method: str, name: str) -> list[Any]:
    """Requests of `method` to one route, oldest first."""
    return [r for r in emulator.requests.records(method=method)
            if r.path.endswith(f"/ingressroutes/{name}")]


def _gaps(records: list[Any]) -> list[float]:
    """Seconds between successive requests."""
    return [b.time - a.time for a, b in itertools.pairwise(records)]


# ---- random faults ------------------------------------------------------------------------

FAULTS = [
    {"status": 500, "share": 0.05},
    {"status": 429, "share": 0.05, "retry_after": 0},
    {"status": 409, "share": 0.03, "verb": "patch"},
    {"status": 422, "share": 0.03, "verb": "patch"},
    {"status": 503, "share": 0.03},
    {"delay": 0.6, "share": 0.02},                      # a timeout before the server acts
    {"delay": 0.6, "share": 0.03, "after": True},       # ... after it applied the write
    {"status": 500, "share": 0.04, "after": True},      # applied, but answered 500
]
"""About a quarter of all calls are disturbed; seeded, so every run sees the same."""
ATTEMPTS = 20


async def human_edits(cluster: Cluster, rng: random.Random, last: dict[str, int],
                      stop: asyncio.Event) -> None:
    """A person edits the routes' ports and annotations by hand, at random moments."""
    edit = 0
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        namespace, name = rng.choice(ROUTES)
        edit += 1
        body = copy.deepcopy(cluster.route(namespace, name))
        body["metadata"].setdefault("annotations", {})["example.com/edit"] = str(edit)
        body["spec"]["routes"][0]["services"][0]["port"] = 8000 + edit
        cluster.emulator.put_object(body)
        last[f"{namespace}/{name}"] = edit


def assert_human_edits_kept(cluster: Cluster, last: dict[str, int]) -> None:
    """Every route still carries the last edit the person made to it."""
    for namespace, name in ROUTES:
        key = f"{namespace}/{name}"
        if key not in last:
            continue
        body = cluster.route(namespace, name)
        assert body["metadata"]["annotations"]["example.com/edit"] == str(last[key]), key
        assert body["spec"]["routes"][0]["services"][0]["port"] == 8000 + last[key], key


async def test_random_api_faults_never_half_flip_nor_clobber_and_converge(cluster, capsys):
    """20 flips and rollbacks with a quarter of API calls faulted and a person editing the
    routes: after every attempt all three routes agree, the result says where traffic is,
    the person's edits survive, and with the faults gone the pair converges."""
    emulator = cluster.emulator
    emulator.faults.configure(FAULTS, seed=8)
    rng = random.Random(8)
    outcomes: collections.Counter[str] = collections.Counter()
    last_edit: dict[str, int] = {}
    stop = asyncio.Event()
    editor = asyncio.create_task(human_edits(cluster, random.Random(9), last_edit, stop))
    try:
        for _ in range(ATTEMPTS):
            before = cluster.assert_not_half_flipped()
            action = rng.choice(["flip", "flip", "rollback"])
            result: ActionResult | None = None
            try:
                if action == "flip":
                    target = cluster.pair.other(before)
                    result = await cluster.ops.flip(cluster.pair, to=target, trigger="test")
                else:
                    result = await cluster.ops.rollback(cluster.pair, trigger="test")
            except ClusterError as exc:
                assert str(exc), "a ClusterError must say what failed"
                outcomes[f"{action}: cluster error"] += 1
            now = cluster.assert_not_half_flipped()
            if result is not None:
                if result.changed and not result.refused:
                    outcomes[f"{action}: switched"] += 1
                    assert now == result.active != before
                elif result.refused:
                    outcomes[f"{action}: refused"] += 1
                    assert result.reasons
                    if not result.changed:
                        assert now == before, result.reasons
                    assert result.active in (now, None)
                else:
                    outcomes[f"{action}: nothing to do"] += 1
                    assert now == before
            assert_human_edits_kept(cluster, last_edit)
    finally:
        stop.set()
        await editor
    counters = emulator.faults.counters()
    requests = len(emulator.requests.records())
    emulator.faults.clear()
    # Convergence: without faults the next flip switches everything, and the state agrees.
    current = cluster.assert_not_half_flipped()
    final = await cluster.ops.flip(cluster.pair, to=cluster.pair.other(current))
    assert final.changed and not final.refused, final.reasons
    assert cluster.assert_not_half_flipped() == cluster.pair.other(current)
    live = await reading.read_active(cluster.ops.api, cluster.pair)
    state = await cluster.ops.store.reconcile(cluster.pair, live)
    assert state.active == cluster.pair.other(current)
    assert_human_edits_kept(cluster, last_edit)

    injected = {f"{r['status'] or 'delay'}{' after' if r['after'] else ''}": r["injected"]
                for r in counters["rules"]}
    with capsys.disabled():
        print(f"\n[kube faults] attempts={ATTEMPTS} requests={requests} "
              f"faults={counters['total']} {injected} "
              f"human_edits={max(last_edit.values(), default=0)} outcomes={dict(outcomes)}")
    assert counters["total"] >= 20, counters
    assert injected["500 after"] + injected["delay after"] >= 2
    switched = sum(n for k, n in outcomes.items() if k.endswith("switched"))
    assert switched >= ATTEMPTS // 3, outcomes


# ---- targeted faults ----------------------------------------------------------------------

async def test_a_patch_applied_but_answered_500_is_not_a_half_flip(cluster):
    """The second route's patch is applied, then answered 500: the flip completes (the retry
    finds the change in place) instead of leaving that route flipped alone."""
    cluster.emulator.faults.add(status=500, after=True, verb="patch", path="/api-live-2$",
                                times=1)
    result = await cluster.ops.flip(cluster.pair)
    assert cluster.assert_not_half_flipped() == GREEN
    assert result.changed and not result.refused and result.active == GREEN, result.reasons


async def test_a_patch_applied_but_never_answered_completes_the_flip(cluster):
    """The second route's patch is applied but no answer ever arrives in time, on any of
    its tries: the route is read (after fencing) and found switched, so the flip completes
    instead of stranding that route."""
    rule = cluster.emulator.faults.add(delay=1.0, after=True, verb="patch",
                                       path="/api-live-2$", times=4)
    result = await cluster.ops.flip(cluster.pair)
    assert cluster.assert_not_half_flipped() == GREEN
    assert result.changed and not result.refused and result.active == GREEN, result.reasons
    assert rule.injected == 4, "every try timed out"


async def test_a_timed_out_patch_landing_late_cannot_half_flip(cluster):
    """The second route's patches are held past the client's timeout and applied later
    (the API server still processes a request its client gave up on): the flip gives up
    and reverts, and the late patches fail their resourceVersion test (the route was
    fenced), so no route moves after the answer."""
    rule = cluster.emulator.faults.add(delay=3.0, verb="patch", path="/api-live-2$", times=4)
    result = await cluster.ops.flip(cluster.pair)
    assert result.refused and not result.changed and result.active == BLUE, result.reasons
    assert cluster.assert_not_half_flipped() == BLUE
    await asyncio.sleep(3.5)  # every held patch has been processed by now
    assert cluster.assert_not_half_flipped() == BLUE, "a late patch landed"
    late = [r for r in route_requests(cluster.emulator, "PATCH", "api-live-2") if r.fault is None
            and r.status == 422]
    assert rule.injected == 4 and len(late) >= 1, late


async def test_transient_errors_are_retried_with_jittered_backoff(cluster):
    """500, 503 and 429 on reads and patches are retried after growing, jittered delays."""
    emulator = cluster.emulator
    emulator.faults.configure([
        {"status": 500, "verb": "get", "path": "/api-edge$", "times": 2},
        {"status": 503, "verb": "patch", "path": f"/{ROUTE_NAME}$", "times": 1},
        {"status": 429, "verb": "patch", "path": "/api-edge$", "times": 2, "retry_after": 0},
    ])
    result = await cluster.ops.flip(cluster.pair)
    assert result.changed and cluster.assert_not_half_flipped() == GREEN, result.reasons
    assert emulator.faults.total == 5
    gaps = _gaps(route_requests(emulator, "GET", "api-edge")[:3])
    # Exponential: ~0.1 s then ~0.2 s, each up to half shorter (jitter).
    assert len(gaps) == 2 and gaps[0] >= 0.045 and gaps[1] >= 0.095, gaps
    patch_gaps = _gaps(route_requests(emulator, "PATCH", "api-edge")[:3])
    assert len(patch_gaps) == 2 and min(patch_gaps) >= 0.045, patch_gaps
    # Jitter: the same faults a second time give different waits.
    await cluster.ops.flip(cluster.pair, to=BLUE)
    emulator.requests.clear()
    emulator.faults.configure([{"status": 500, "verb": "get", "path": "/api-edge$",
                                "times": 2}])
    await cluster.ops.flip(cluster.pair, to=GREEN)
    again_gaps = _gaps(route_requests(emulator, "GET", "api-edge")[:3])
    assert again_gaps != pytest.approx(gaps, abs=1e-4), (gaps, again_gaps)


async def test_when_patches_keep_failing_the_flip_is_refused_clearly(cluster):
    """Every route patch answered 500: bounded retries, routes untouched, a refusal that says
    why (no exception, no half-flip)."""
    cluster.emulator.faults.add(status=500, verb="patch", path="/ingressroutes/")
    result = await cluster.ops.flip(cluster.pair)
    assert cluster.assert_not_half_flipped() == BLUE
    assert result.refused and not result.changed and result.active == BLUE
    assert any("HTTP 500" in r for r in result.reasons), result.reasons
    patches = [r for r in cluster.emulator.requests.records(method="PATCH")
               if "/ingressroutes/" in r.path]
    assert 2 <= len(patches) <= 6, len(patches)  # bounded retries, not a wall-clock bound


async def test_when_reads_keep_failing_nothing_is_patched_and_the_error_is_clear(cluster):
    """The API answers every read 503: a ClusterError naming the call, and no write at all."""
    cluster.emulator.faults.add(status=503, verb="get")
    with pytest.raises(ClusterError, match="503"):
        await cluster.ops.flip(cluster.pair)
    assert not cluster.emulator.requests.records(method="PATCH")
    assert cluster.assert_not_half_flipped() == BLUE


async def test_a_human_flip_during_ours_is_kept_and_reported(cluster):
    """A person points one route at green while our patch of another is held: that route
    already points where our flip goes, so it is done for it; the flip completes without
    touching the person's route, and the result names it."""
    emulator = cluster.emulator
    rule = emulator.faults.add(delay=0.3, verb="patch", path="/api-live-2$", times=1)
    flip = asyncio.create_task(cluster.ops.flip(cluster.pair))
    async with asyncio.timeout(5):
        while not rule.matched:  # noqa: ASYNC110 - the fault counter has no event to wait on
            await asyncio.sleep(0.01)
    body = copy.deepcopy(cluster.route(EDGE, "api-edge"))
    body["spec"]["routes"][0]["services"][0]["namespace"] = GREEN
    body["metadata"]["annotations"] = {"example.com/by": "a person"}
    emulator.put_object(body)
    result = await flip
    assert result.changed and not result.refused and result.active == GREEN, result.reasons
    assert cluster.assert_not_half_flipped() == GREEN
    assert result.details["outcome"]["already"] == ["IngressRoute edge/api-edge"]
    kept = cluster.route(EDGE, "api-edge")
    assert kept["metadata"]["annotations"] == {"example.com/by": "a person"}
    assert kept["spec"]["routes"][0]["services"][0]["namespace"] == GREEN
