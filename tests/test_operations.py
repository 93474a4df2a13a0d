"""Operations over HTTP against the emulator: preconditions, idempotence, state and Events."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubernetes_asyncio import client

from gatekeeper.config import Config
from gatekeeper.kubeclient import read_json
from gatekeeper.operations import Operations
from gatekeeper.routers import reading
from gatekeeper.state import StateStore
from tests.fixtures.kube import BLUE, DEPLOYMENT, GREEN, ROUTE_NAME, ROUTING, load_bluegreen_seed


def make_config(**pair: Any) -> Config:
    """One pair over the seed, state in namespace `gatekeeper`."""
    return Config.model_validate({
        "pairs": [{"name": "api", "namespaces": [BLUE, GREEN],
                   "routes": [{"name": ROUTE_NAME, "namespace": ROUTING}], **pair}],
        "state": {"configmap": "gatekeeper-state", "namespace": "gatekeeper"},
        "policy": {"ready_timeout": "5s"},
    })


@pytest.fixture
def seeded(kube_emulator: Any) -> Any:
    """Blue active, both namespaces Ready with 2 replicas, a namespace for the state."""
    load_bluegreen_seed(kube_emulator)
    kube_emulator.load([{"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": "gatekeeper"}}])
    return kube_emulator


@pytest.fixture
def config() -> Config:
    """The default configuration for the seed."""
    return make_config()


@pytest.fixture
def ops(kube_api: client.ApiClient, config: Config) -> Operations:
    """Operations on the emulator."""
    return Operations(kube_api, config)


def pointed(emulator: Any) -> str:
    """Where the seed's route sends traffic now."""
    route = emulator.get_object("traefik.io/v1alpha1", "IngressRoute", ROUTE_NAME, ROUTING)
    return route["spec"]["routes"][0]["services"][0]["namespace"]


def replicas(emulator: Any, namespace: str) -> int:
    """spec.replicas of the seed's Deployment."""
    return emulator.get_object("apps/v1", "Deployment", DEPLOYMENT, namespace)["spec"]["replicas"]


async def route_events(api: client.ApiClient) -> list[tuple[str, str, str]]:
    """(reason, type, message) of the Events on the route, as `kubectl describe` finds them."""
    listed = await read_json(client.CoreV1Api(api).list_namespaced_event, ROUTING,
                             field_selector=f"involvedObject.name={ROUTE_NAME},"
                                            "involvedObject.kind=IngressRoute")
    return [(e["reason"], e["type"], e["message"]) for e in listed["items"]]


def unready(emulator: Any, namespace: str) -> None:
    """Every pod of the namespace fails its readiness probe."""
    for pod in emulator.pods(namespace):
        emulator.set_pod_ready(namespace, pod["metadata"]["name"], False)


async def test_flip_to_namespace_without_ready_pods_is_refused(
        seeded: Any, ops: Operations, kube_api: client.ApiClient) -> None:
    """Traefik would 404 everyone: refused, route untouched, a Warning Event says why."""
    unready(seeded, GREEN)
    result = await ops.flip(ops.config.pairs[0])
    assert result.refused and not result.changed and result.active == BLUE
    assert any("not Ready" in r for r in result.reasons)
    assert pointed(seeded) == BLUE
    assert not seeded.requests.records(method="PATCH", path_contains=ROUTE_NAME)
    assert [(r, t) for r, t, _ in await route_events(kube_api)] == [("FlipRefused", "Warning")]
    state = await ops.store.load("api")
    assert state.transitions[-1]["kind"] == "refused" and state.counters["refused"] == 1


async def test_flip_to_namespace_scaled_to_zero_is_refused_even_if_no_pod_is_unready(
        seeded: Any, ops: Operations) -> None:
    """replicas >= 1 is part of the precondition (no pods is not 'all pods Ready')."""
    pair = ops.config.pairs[0]
    await ops.scale_down(pair, GREEN)
    await seeded.wait_for(lambda: not seeded.pods(GREEN), within=5)
    result = await ops.flip(pair)
    assert result.refused and any("scaled to 0" in r for r in result.reasons)


async def test_force_skips_readiness_but_still_flips_safely(seeded: Any, ops: Operations) -> None:
    """--force overrides the readiness precondition only."""
    unready(seeded, GREEN)
    result = await ops.flip(ops.config.pairs[0], force=True, reason="hotfix")
    assert result.changed and result.details["forced"] and pointed(seeded) == GREEN


async def test_flip_records_state_and_event_and_is_idempotent(
        seeded: Any, ops: Operations, kube_api: client.ApiClient) -> None:
    """A flip writes state and an Event; running it again is a no-op, not a flip back."""
    pair = ops.config.pairs[0]
    result = await ops.flip(pair, trigger="pipeline", reason="release 1.5.0")
    assert result.changed and not result.refused and result.active == GREEN
    assert pointed(seeded) == GREEN
    state = await ops.store.load(pair)
    assert (state.active, state.dark, state.previous) == (GREEN, BLUE, BLUE)
    assert state.last_action is not None
    assert state.last_action["status"] == "done" and state.last_action["trigger"] == "pipeline"
    assert state.images[GREEN] == {"api/api": "registry.example.com/api:1.5.0"}
    assert state.replicas == {"api": 2}
    assert state.transitions[-1]["kind"] == "flip"
    events = await route_events(kube_api)
    assert events[0][0] == "Flipped" and "release 1.5.0" in events[0][2]

    again = await ops.flip(pair)
    assert not again.changed and not again.refused and "nothing to do" in again.reasons[0]
    assert pointed(seeded) == GREEN
    explicit = await ops.flip(pair, to=GREEN)
    assert not explicit.changed and "already active" in explicit.reasons[0]
    with pytest.raises(ValueError):
        await ops.flip(pair, to="production-red")


async def test_new_images_in_the_dark_namespace_make_the_next_flip_proceed(
        seeded: Any, ops: Operations) -> None:
    """The idempotence guard keys on the dark namespace's images: a new release flips."""
    pair = ops.config.pairs[0]
    await ops.flip(pair)
    blue = copy.deepcopy(seeded.get_object("apps/v1", "Deployment", DEPLOYMENT, BLUE))
    blue["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/api:1.6.0"
    seeded.put_object(blue)
    await seeded.wait_deployment_ready(BLUE, DEPLOYMENT, within=5)
    result = await ops.flip(pair)
    assert result.changed and pointed(seeded) == BLUE


async def test_concurrent_edit_during_a_flip_is_reported_not_overwritten(
        seeded: Any, ops: Operations, kube_api: client.ApiClient) -> None:
    """A human edits the route while our patch is on its way: conflict, their edit stays."""
    rule = seeded.faults.add(delay=0.3, verb="patch", path=f"/ingressroutes/{ROUTE_NAME}$",
                             times=1)
    flip = asyncio.create_task(ops.flip(ops.config.pairs[0]))
    async with asyncio.timeout(5):
        # The fault counter has no event to wait on (Emulator.wait_for wakes on writes only).
        while not rule.matched:  # noqa: ASYNC110 - the patch arrived and is held by the delay
            await asyncio.sleep(0.01)
    human = copy.deepcopy(seeded.get_object("traefik.io/v1alpha1", "IngressRoute",
                                            ROUTE_NAME, ROUTING))
    human["metadata"].setdefault("annotations", {})["note"] = "manual change"
    seeded.put_object(human)
    result = await flip
    assert result.refused and not result.changed and result.details["conflict"]
    assert any("changed since it was read" in r for r in result.reasons)
    stored = seeded.get_object("traefik.io/v1alpha1", "IngressRoute", ROUTE_NAME, ROUTING)
    assert stored["metadata"]["annotations"] == {"note": "manual change"}
    assert pointed(seeded) == BLUE
    assert [r for r, _, _ in await route_events(kube_api)] == ["FlipFailed"]
    state = await ops.store.load("api")
    assert state.counters["conflicts"] == 1 and state.last_action is not None
    assert state.last_action["status"] == "conflict" and state.active == BLUE


async def test_rollback_returns_to_the_previous_namespace_once(
        seeded: Any, ops: Operations, kube_api: client.ApiClient) -> None:
    """Rollback goes back to what the last flip left; a second rollback is a no-op."""
    pair = ops.config.pairs[0]
    refused = await ops.rollback(pair)
    assert refused.refused and "no flip to roll back" in refused.reasons[0]
    await ops.flip(pair)
    result = await ops.rollback(pair, trigger="alert", reason="5xx")
    assert result.changed and result.active == BLUE and pointed(seeded) == BLUE
    again = await ops.rollback(pair)
    assert not again.changed and not again.refused and "already rolled back" in again.reasons[0]
    # The rolled-back release is not flipped to again by a plain flip.
    repeat = await ops.flip(pair)
    assert not repeat.changed and pointed(seeded) == BLUE
    reasons = [r for r, _, _ in await route_events(kube_api)]
    assert "RolledBack" in reasons and "Flipped" in reasons


async def test_rollback_to_a_scaled_down_namespace(seeded: Any, ops: Operations) -> None:
    """Refused when the previous namespace cannot serve; scale_up_first makes it serve."""
    pair = ops.config.pairs[0]
    await ops.flip(pair)
    down = await ops.scale_down(pair, keep=0)
    assert down.changed and replicas(seeded, BLUE) == 0
    refused = await ops.rollback(pair)
    assert refused.refused and pointed(seeded) == GREEN
    assert any("--scale-up-first" in r for r in refused.reasons)
    seeded.ready_delay = 0.2
    result = await ops.rollback(pair, scale_up_first=True)
    assert result.changed and pointed(seeded) == BLUE
    assert replicas(seeded, BLUE) == 2  # the remembered production count
    assert result.details["scale_up"]["refused"] is False


async def test_rollback_to_a_kept_namespace_waits_for_its_production_size(
        seeded: Any, ops: Operations) -> None:
    """keep=1: the target is scaled to production and Ready before it takes the traffic."""
    pair = ops.config.pairs[0]
    await ops.flip(pair)
    await ops.scale_down(pair, keep=1)
    await seeded.wait_for(lambda: len(seeded.pods(BLUE)) == 1, within=5)
    seeded.ready_delay = 0.3
    result = await ops.rollback(pair)
    assert result.changed and pointed(seeded) == BLUE
    assert replicas(seeded, BLUE) == 2 and "scale_up" in result.details
    # The readiness read just before the routes were patched: both pods Ready.
    assert result.details["readiness"]["pods_ready"] == 2


async def test_no_flip_or_rollback_to_a_namespace_that_cannot_reach_production_size(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """Pods that do not turn Ready within ready_timeout: refused, traffic stays where it is."""
    ops = Operations(kube_api, make_config(policy={"ready_timeout": "1s"}))
    pair = ops.config.pairs[0]
    await ops.flip(pair)
    await ops.scale_down(pair, keep=1)
    await seeded.wait_for(lambda: len(seeded.pods(BLUE)) == 1, within=5)
    seeded.ready_delay = 60  # the second pod will not be Ready within the 1 s ready_timeout
    result = await ops.rollback(pair)
    assert result.refused and not result.changed, result.reasons
    assert pointed(seeded) == GREEN
    assert "below its production size" in result.reasons[0]
    assert any("not ready after 1s" in r for r in result.reasons)
    assert replicas(seeded, BLUE) == 2  # scaled, so a retry finds it warming up
    again = await ops.flip(pair, to=BLUE)  # at size now, still not Ready: refused as well
    assert again.refused and pointed(seeded) == GREEN
    assert "Deployment api: 1/2 pods Ready" in again.reasons


async def test_flip_to_a_kept_namespace_scales_it_to_production_first(
        seeded: Any, ops: Operations) -> None:
    """A person's flip --to a dark kept at 1 replica: scaled to 2 and Ready, then switched."""
    pair = ops.config.pairs[0]
    await ops.flip(pair)
    await ops.scale_down(pair, keep=1)
    await seeded.wait_for(lambda: len(seeded.pods(BLUE)) == 1, within=5)
    seeded.ready_delay = 0.3
    result = await ops.flip(pair, to=BLUE)
    assert result.changed and pointed(seeded) == BLUE
    assert result.details["readiness"]["pods_ready"] == 2


async def test_dry_run_decides_but_changes_nothing(seeded: Any, kube_api: client.ApiClient,
                                                   config: Config) -> None:
    """Dry-run reports the plan; no patch, no state, no Event, no scale."""
    dry = Operations(kube_api, config, dry_run=True)
    pair = config.pairs[0]
    flip = await dry.flip(pair)
    assert not flip.changed and not flip.refused and flip.reasons[0].startswith("dry-run")
    assert flip.details["would"]["to"] == GREEN
    down = await dry.scale_down(pair, GREEN)
    assert not down.changed and down.details["would"]
    unready(seeded, GREEN)
    assert (await dry.flip(pair)).refused  # dry-run refuses what a real run would
    assert pointed(seeded) == BLUE and replicas(seeded, GREEN) == 2
    assert seeded.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper") is None
    assert not await route_events(kube_api)
    writes = [r for r in seeded.requests.records() if r.method in ("PATCH", "PUT", "POST")]
    assert writes == []


async def test_scale_down_never_touches_the_active_namespace(seeded: Any,
                                                             ops: Operations) -> None:
    """The namespace taking traffic is never scaled down, with or without force."""
    pair = ops.config.pairs[0]
    result = await ops.scale_down(pair, BLUE, force=True)
    assert result.refused and "active namespace" in result.reasons[0]
    assert replicas(seeded, BLUE) == 2


async def test_scale_down_keeps_n_and_is_idempotent(seeded: Any, ops: Operations) -> None:
    """--keep 1 leaves one replica; a second run has nothing to do."""
    pair = ops.config.pairs[0]
    first = await ops.scale_down(pair, keep=1)
    assert first.changed and replicas(seeded, GREEN) == 1
    second = await ops.scale_down(pair, keep=1)
    assert not second.changed and not second.refused and "nothing to do" in second.reasons[0]
    assert (await ops.store.load(pair)).replicas == {"api": 2}


async def test_scale_down_refused_while_the_active_is_not_ready(seeded: Any,
                                                                ops: Operations) -> None:
    """The old namespace is the rollback path while the active one is unhealthy."""
    pair = ops.config.pairs[0]
    unready(seeded, BLUE)
    refused = await ops.scale_down(pair)
    assert refused.refused and replicas(seeded, GREEN) == 2
    forced = await ops.scale_down(pair, force=True)
    assert forced.changed and replicas(seeded, GREEN) == 0


async def test_scale_up_counts_from_configuration_and_mirror(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """Configured counts win; otherwise the active namespace's counts are mirrored."""
    mirrored = Operations(kube_api, make_config())
    pair = mirrored.config.pairs[0]
    await mirrored.scale_down(pair)
    assert (await mirrored.scale_up(pair)).details["scaled"][0]["source"] == f"mirrors {BLUE}"
    assert replicas(seeded, GREEN) == 2
    assert "nothing to do" in (await mirrored.scale_up(pair)).reasons[0]
    configured = Operations(kube_api, make_config(replicas={"api": 3}))
    result = await configured.scale_up(configured.config.pairs[0])
    assert result.changed and replicas(seeded, GREEN) == 3
    assert result.details["scaled"][0]["source"] == "configuration"


async def test_wait_ready_reports_progress_and_times_out(seeded: Any, ops: Operations) -> None:
    """Progress on every change; not ready within the timeout is a refusal with reasons."""
    pair = ops.config.pairs[0]
    await ops.scale_down(pair)
    seeded.ready_delay = 0.4
    await ops.scale_up(pair)
    short = await ops.wait_ready(pair, timeout=0.05)
    assert short.refused and "not ready after" in short.reasons[0]
    seen: list[str] = []
    result = await ops.wait_ready(pair, timeout=5, progress=lambda r: seen.append(r.summary()))
    assert not result.refused and result.details["readiness"]["ready"]
    assert seen[-1] == f"2/2 pods Ready in {GREEN}" and len(seen) >= 2


async def test_restart_after_patch_before_state_write(seeded: Any, ops: Operations) -> None:
    """A crashed flip (state 'started', route already patched) is completed from the route."""
    pair = ops.config.pairs[0]
    await ops.store.update(pair, lambda s: s.begin("flip", at=1.0, source=BLUE, target=GREEN))
    route = copy.deepcopy(seeded.get_object("traefik.io/v1alpha1", "IngressRoute",
                                            ROUTE_NAME, ROUTING))
    route["spec"]["routes"][0]["services"][0]["namespace"] = GREEN
    seeded.put_object(route)
    restarted = Operations(ops.api, ops.config)
    live = await reading.read_active(ops.api, pair)
    state = await StateStore(ops.api, ops.config.state).reconcile(pair, live)
    assert (state.active, state.previous) == (GREEN, BLUE)
    status = await restarted.status(pair)
    assert status.active == GREEN and status.state is not None
    assert status.state.last_action is not None and status.state.last_action["status"] == "done"
    assert "nothing to do" in (await restarted.flip(pair, to=GREEN)).reasons[0]
    rolled = await restarted.rollback(pair)
    assert rolled.changed and pointed(seeded) == BLUE


async def test_event_failures_are_not_fatal(seeded: Any, ops: Operations) -> None:
    """RBAC without events/create must not stop a flip."""
    seeded.faults.add(status=403, verb="create", path="/events$")
    result = await ops.flip(ops.config.pairs[0])
    assert result.changed and pointed(seeded) == GREEN


async def test_status_reports_routes_namespaces_and_state(seeded: Any, ops: Operations) -> None:
    """Status: active/dark from routes, each namespace's Deployments, pods and images."""
    status = await ops.status(ops.config.pairs[0])
    data = status.to_dict()
    assert (data["active"], data["dark"], data["consistent"]) == (BLUE, GREEN, True)
    green = next(n for n in data["namespaces"] if n["namespace"] == GREEN)
    assert green["role"] == "dark" and green["ready"] and green["pods_ready"] == 2
    assert green["images"] == {"api/api": "registry.example.com/api:1.5.0"}
    assert data["routes"][0]["pointsTo"] == [BLUE]


def worker(namespace: str, replicas: int) -> dict[str, Any]:
    """A second Deployment `worker` whose pods the pair's pod selector (app=api) misses."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "worker", "namespace": namespace, "labels": {"app": "worker"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "worker"}},
                 "template": {"metadata": {"labels": {"app": "worker"}},
                              "spec": {"containers": [{"name": "w", "image": "w:1"}]}}},
    }


async def test_the_pod_selector_does_not_hide_a_deployment_at_zero(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """The log selector app=api misses `worker`; at 0 in the dark it still blocks the flip."""
    seeded.load([worker(BLUE, 1), worker(GREEN, 0)])
    ops = Operations(kube_api, make_config(selector="app=api"))
    result = await ops.flip(ops.config.pairs[0])
    assert result.refused and pointed(seeded) == BLUE
    assert "Deployment worker is scaled to 0" in result.reasons


async def test_named_deployments_missing_or_unmatched_replicas_are_named(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """`deployments: [api, worker]` without a worker, and `replicas: {apii: 3}` (a typo):
    errors naming each, never a silently Ready namespace."""
    ops = Operations(kube_api, make_config(deployments=[DEPLOYMENT, "worker"],
                                           replicas={"apii": 3}))
    pair = ops.config.pairs[0]
    status = await ops.status(pair)
    green = next(n for n in status.namespaces if n.namespace == GREEN)
    assert green.readiness is not None and not green.readiness.ready
    assert f"Deployment worker (pairs.api.deployments) not found in {GREEN}" \
        in green.readiness.reasons
    assert any("replicas entry 'apii'" in r for r in green.readiness.reasons)
    result = await ops.flip(pair)
    assert result.refused and pointed(seeded) == BLUE


async def test_named_deployments_are_the_ones_checked(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """`deployments: [api]`: an unrelated Deployment at 0 in the namespace is not ours."""
    seeded.load([worker(GREEN, 0)])
    ops = Operations(kube_api, make_config(deployments=[DEPLOYMENT]))
    result = await ops.flip(ops.config.pairs[0])
    assert result.changed and pointed(seeded) == GREEN


def flux_managed(emulator: Any, namespace: str, *, owns_replicas: bool) -> None:
    """Make the seed's Deployment look applied by Flux's kustomize-controller (its labels and
    its server-side-apply field ownership, as the API server records them)."""
    body = copy.deepcopy(emulator.get_object("apps/v1", "Deployment", DEPLOYMENT, namespace))
    body["metadata"].setdefault("labels", {}).update({
        "kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace":
        "flux-system"})
    spec: dict[str, Any] = {"f:template": {}}
    if owns_replicas:
        spec["f:replicas"] = {}
    body["metadata"]["managedFields"] = [{
        "manager": "kustomize-controller", "operation": "Apply", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": spec}}]
    emulator.put_object(body)


async def test_flux_owning_replicas_of_the_dark_is_a_warning_in_status(
        seeded: Any, ops: Operations) -> None:
    """Flux applies the dark's Deployment with replicas in the overlay: it would undo every
    scale; status says so (and why), but the namespace still serves."""
    flux_managed(seeded, GREEN, owns_replicas=True)
    flux_managed(seeded, BLUE, owns_replicas=False)  # a replicas-free overlay: fine
    status = await ops.status(ops.config.pairs[0])
    by_ns = {n.namespace: n.to_dict() for n in status.namespaces}
    green = by_ns[GREEN]
    assert green["ready"] is True
    assert len(green["warnings"]) == 1 and "Flux will undo" in green["warnings"][0]
    assert "kustomize-controller" in green["warnings"][0]
    assert by_ns[BLUE]["warnings"] == []
