"""The state ConfigMap: format, optimistic concurrency, history, reconciliation from routes."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from gatekeeper.config import PairConfig, StateConfig
from gatekeeper.lifecycle import ReleaseState
from gatekeeper.routers import reading
from gatekeeper.state import PairState, StateStore, reconcile_state
from tests.fixtures.kube import BLUE, GREEN, ROUTE_NAME, ROUTING, load_bluegreen_seed
from tests.test_routers import pair_config

SETTINGS = StateConfig(configmap="gatekeeper-state", namespace="gatekeeper", history=3)


@pytest.fixture
def seeded(kube_emulator: Any) -> Any:
    """The blue/green seed plus the namespace that holds the state."""
    load_bluegreen_seed(kube_emulator)
    kube_emulator.load([{"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": "gatekeeper"}}])
    return kube_emulator


def configmap(emulator: Any) -> dict[str, Any]:
    """The stored state ConfigMap."""
    return emulator.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper")


async def reconcile(store: StateStore, pair: PairConfig) -> PairState:
    """Reconcile the stored state with the routes as they are now (the store reads none)."""
    return await store.reconcile(pair, await reading.read_active(store.api, pair))


def patch_route(emulator: Any, namespace: str) -> None:
    """Point the seed's route at `namespace` behind gatekeeper's back."""
    route = copy.deepcopy(emulator.get_object("traefik.io/v1alpha1", "IngressRoute",
                                              ROUTE_NAME, ROUTING))
    route["spec"]["routes"][0]["services"][0]["namespace"] = namespace
    emulator.put_object(route)


def test_round_trip_keeps_unknown_keys() -> None:
    """A newer writer's keys survive an older reader's write."""
    data = {"lifecycle": {"phase": "validating", "active": BLUE, "dark": GREEN},
            "future_field": {"x": 1}, "counters": {"flip": 2}}
    state = PairState.from_dict(data)
    assert state.phase == "validating" and state.extra == {"future_field": {"x": 1}}
    assert state.to_dict()["future_field"] == {"x": 1}
    assert PairState.from_dict(state.to_dict()) == state


def test_the_lifecycle_fields_are_stored_once() -> None:
    """Phase, active, dark and previous live in the lifecycle's record only: the copies an
    older version kept beside it are dropped on read, never written back."""
    old = {"active": GREEN, "dark": BLUE, "previous": GREEN, "phase": "flipped",
           "lifecycle": {"phase": "rolled_back", "active": BLUE, "dark": GREEN,
                         "previous": None}}
    state = PairState.from_dict(old)
    assert (state.phase, state.active, state.previous) == ("rolled_back", BLUE, None)
    assert set(state.to_dict()) & {"active", "dark", "previous", "phase"} == set()


def test_a_lifecycle_of_the_wrong_type_makes_the_record_unreadable() -> None:
    """Nothing of a record whose lifecycle is corrupt is trusted (it is rebuilt)."""
    with pytest.raises(ValueError, match="lifecycle"):
        PairState.from_dict({"lifecycle": {"phase": "canarying"}})
    with pytest.raises(ValueError, match="lifecycle"):
        PairState.from_dict({"lifecycle": [1]})


def test_transitions_are_bounded() -> None:
    """Only the last N transitions are kept."""
    state = PairState()
    for i in range(5):
        state.transition("flip", at=float(i), history=3, source=BLUE, target=GREEN)
    assert [t["at"] for t in state.transitions] == [2.0, 3.0, 4.0]
    assert state.transitions[0]["from"] == BLUE and state.transitions[0]["to"] == GREEN


async def test_update_creates_then_updates_with_json_per_pair(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """data[<pair>] holds JSON; other pairs' keys are left alone."""
    store = StateStore(kube_api, SETTINGS, clock=lambda: 100.0)
    assert (await store.load("api")).active is None
    await store.update("api", lambda s: setattr(s, "release", ReleaseState(phase="validating")))
    await store.update("web", lambda s: setattr(s, "release", ReleaseState(phase="ready")))
    stored = configmap(seeded)
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gatekeeper"
    assert json.loads(stored["data"]["api"])["lifecycle"]["phase"] == "validating"
    assert set(stored["data"]) == {"api", "web"}
    assert (await store.load("api")).phase == "validating"


async def test_update_retries_on_conflict_without_losing_either_write(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """A write between our read and our write gives 409; we re-read and re-apply."""
    store = StateStore(kube_api, SETTINGS)
    await store.update("api", lambda s: s.count("flip"))
    calls = []

    def mutate(state: PairState) -> None:
        calls.append(dict(state.counters))
        if len(calls) == 1:  # someone else writes in between
            other = copy.deepcopy(configmap(seeded))
            data = json.loads(other["data"]["api"])
            data["counters"]["rollback"] = 1
            other["data"]["api"] = json.dumps(data)
            seeded.put_object(other)
        state.count("flip")

    state = await store.update("api", mutate)
    assert len(calls) == 2
    assert state.counters == {"flip": 2, "rollback": 1}
    puts = seeded.requests.records(method="PUT", path_contains="gatekeeper-state")
    assert [p.status for p in puts] == [409, 200]


async def test_update_skips_the_write_when_nothing_changed(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """No change, no write (no needless resourceVersion churn)."""
    store = StateStore(kube_api, SETTINGS)
    await store.update("api", lambda s: s.count("flip"))
    before = configmap(seeded)["metadata"]["resourceVersion"]
    await store.update("api", lambda s: None)
    assert configmap(seeded)["metadata"]["resourceVersion"] == before


async def test_loads_at_once_share_one_read_but_never_one_from_before_a_write(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """100 pairs loading at once (a tick's steps) cost one GET of the ConfigMap, not 100;
    a load that starts after this process wrote does not join a GET begun before the
    write (it would miss it), even while that GET is still in flight."""
    store = StateStore(kube_api, SETTINGS)
    names = [f"p{i}" for i in range(100)]
    for name in names[:3]:
        await store.update(name, lambda s: s.count("flip"))
    seeded.requests.clear()
    states = await asyncio.gather(*(store.load(name) for name in names))
    assert [s.counters for s in states[:4]] == [{"flip": 1}] * 3 + [{}]
    gets = seeded.requests.records(method="GET", path_contains="gatekeeper-state")
    assert len(gets) == 1

    # A GET answered late: read before the write, its answer arrives after it.
    seeded.faults.add(delay=1.0, verb="get", path="gatekeeper-state", times=1, after=True)
    slow = asyncio.create_task(store.load("p0"))
    await asyncio.sleep(0.2)
    writer = StateStore(kube_api, SETTINGS)  # another instance in this process
    await writer.update("p0", lambda s: s.count("rollback"))
    after = await store.load("p0")
    assert after.counters == {"flip": 1, "rollback": 1}
    assert (await slow).counters == {"flip": 1}


async def test_restart_after_patch_before_state_write_reconciles_to_the_routes(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """A flip recorded as started whose patch landed is completed from the live routes."""
    store = StateStore(kube_api, SETTINGS, clock=lambda: 50.0)
    pair = pair_config()

    def started(state: PairState) -> None:
        state.release = ReleaseState(active=BLUE, dark=GREEN)
        state.begin("flip", at=10.0, source=BLUE, target=GREEN, trigger="auto")

    await store.update(pair, started)
    patch_route(seeded, GREEN)  # the patch landed, then the process died
    state = await reconcile(StateStore(kube_api, SETTINGS, clock=lambda: 60.0), pair)
    assert (state.active, state.dark, state.previous) == (GREEN, BLUE, BLUE)
    assert state.last_action is not None and state.last_action["status"] == "done"
    assert state.timestamps["flipped"] == 60.0 and state.counters["flip"] == 1
    assert state.transitions[-1]["kind"] == "reconciled"
    again = await reconcile(store, pair)
    assert again.counters["flip"] == 1  # reconciling twice changes nothing more


async def test_started_flip_whose_patch_never_landed_is_interrupted(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """The routes still show the source: the action did not happen and is not completed."""
    store = StateStore(kube_api, SETTINGS)
    pair = pair_config()
    await store.update(pair, lambda s: s.begin("flip", at=1.0, source=BLUE, target=GREEN))
    state = await reconcile(store, pair)
    assert state.active == BLUE and state.previous is None
    assert state.last_action is not None and state.last_action["status"] == "interrupted"


async def test_manual_route_change_is_adopted_with_previous(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """A kubectl patch of the route wins; the old active becomes the rollback target."""
    store = StateStore(kube_api, SETTINGS)
    pair = pair_config()
    await reconcile(store, pair)
    patch_route(seeded, GREEN)
    state = await reconcile(store, pair)
    assert (state.active, state.previous) == (GREEN, BLUE)
    assert state.transitions[-1]["note"] == "routes changed outside gatekeeper"
    assert state.phase == "flipped"


async def test_manual_route_change_back_is_a_rollback_with_nothing_to_return_to(
        seeded: Any, kube_api: client.ApiClient) -> None:
    """Flipped to green, then a person points the route back at blue: the record follows
    the lifecycle's rule (rolled back; previous is cleared, not set to green)."""
    store = StateStore(kube_api, SETTINGS)
    pair = pair_config()
    await reconcile(store, pair)
    patch_route(seeded, GREEN)
    await reconcile(store, pair)
    patch_route(seeded, BLUE)
    state = await reconcile(store, pair)
    assert (state.phase, state.active, state.previous) == ("rolled_back", BLUE, None)


async def test_inconsistent_routes_leave_active_alone(seeded: Any,
                                                      kube_api: client.ApiClient) -> None:
    """Routes that disagree are not the truth about anything."""
    pair = pair_config()
    live = await reading.read_active(kube_api, pair)
    state = PairState(release=ReleaseState(active=BLUE, dark=GREEN))
    broken = type(live)(None, live.routes, "routes disagree", live.snapshots)
    reconcile_state(state, pair, broken, at=1.0, history=3)
    assert (state.active, state.dark) == (BLUE, GREEN)
