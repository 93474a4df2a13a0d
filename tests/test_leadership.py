"""Leader election over HTTP against the emulated API server: one leader, fast hand-over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import structlog
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from gatekeeper import tasks
from gatekeeper.config import LeaderElectionConfig
from gatekeeper.errors import NotLeaderError
from gatekeeper.leadership import Leadership, default_identity
from tests import replica_support

NAMESPACE = replica_support.NAMESPACE
LEASE = "gatekeeper-leader"
# Short periods keep the tests in seconds; bounds below are generous multiples of them.
FAST = LeaderElectionConfig(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)
GENEROUS = 10.0


@pytest.fixture(autouse=True)
def _every_log_level() -> Iterator[None]:
    """The races are asserted on debug events: an in-process CLI run earlier in the session
    (tests/test_cluster_cli.py) leaves an INFO filter configured that would hide them."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(wrapper_class=wrapper)


# The replica fixtures (namespace, group, replica_clients), shared with test_sharding.py.
namespace = replica_support.namespace
group = replica_support.group
replica_clients = replica_support.replica_clients


async def read_lease(api: client.ApiClient) -> client.V1Lease:
    return await client.CoordinationV1Api(api).read_namespaced_lease(LEASE, NAMESPACE)


async def first_leader(candidates: list[Leadership]) -> Leadership:
    """Wait (bounded) until one candidate leads and return it."""
    waits = {asyncio.ensure_future(c.wait_leading()): c for c in candidates}
    try:
        done, _ = await asyncio.wait(waits, timeout=GENEROUS,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in waits:
            future.cancel()
    assert done, "no candidate became the leader"
    return waits[next(iter(done))]


async def until(predicate, what: str) -> None:
    """Poll a condition with a generous bound."""
    for _ in range(int(GENEROUS / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


async def test_only_one_of_two_leads(namespace, kube_api, replica_clients, group) -> None:
    """Two replicas: exactly one leads, the Lease names it, the other refuses to act."""
    a = Leadership(replica_clients[0], FAST.model_copy(update={"identity": "replica-a"}))
    b = Leadership(replica_clients[1], FAST.model_copy(update={"identity": "replica-b"}))
    group.start("a", a.run)
    group.start("b", b.run)
    leader = await first_leader([a, b])
    follower = b if leader is a else a
    for _ in range(10):  # a lease duration of renewals and follower retries
        assert [a.is_leader, b.is_leader].count(True) <= 1
        await asyncio.sleep(FAST.retry_period)
    assert leader.is_leader and not follower.is_leader
    assert follower.holder == leader.identity
    lease = await read_lease(kube_api)
    assert lease.spec.holder_identity == leader.identity
    assert lease.spec.lease_duration_seconds == 1
    leader.require_leader()
    with pytest.raises(NotLeaderError, match=leader.identity):
        follower.require_leader()
    with pytest.raises(NotLeaderError):
        async with follower.leader_guard():
            pytest.fail("a follower must not act")


async def test_dead_leader_is_replaced_after_the_lease_expires(
    namespace, kube_api, replica_clients, group
) -> None:
    """A leader that dies without releasing is replaced once its lease runs out, not before."""
    events: list[str] = []

    def recorder(name: str):
        async def record() -> None:
            events.append(name)
        return record

    a = Leadership(replica_clients[0], FAST.model_copy(update={"identity": "replica-a"}),
                   release_on_cancel=False, on_started_leading=recorder("a started"),
                   on_stopped_leading=recorder("a stopped"))
    b = Leadership(replica_clients[1], FAST.model_copy(update={"identity": "replica-b"}),
                   on_started_leading=recorder("b started"))
    task_a = group.start("a", a.run)
    await asyncio.wait_for(a.wait_leading(), GENEROUS)
    group.start("b", b.run)
    await until(lambda: b.holder == "replica-a", "the follower saw the leader")
    before = await read_lease(kube_api)

    task_a.cancel()  # dies: no release
    await asyncio.sleep(FAST.retry_period * 2)
    assert not b.is_leader, "a live-looking lease must not be taken at once"
    await asyncio.wait_for(b.wait_leading(), GENEROUS)

    after = await read_lease(kube_api)
    assert task_a.cancelled() and not a.is_leader
    assert before.spec.holder_identity == "replica-a"
    assert after.spec.holder_identity == "replica-b"
    assert after.spec.lease_transitions == (before.spec.lease_transitions or 0) + 1
    assert events == ["a started", "a stopped", "b started"]


async def test_graceful_release_hands_over_at_once(
    namespace, kube_api, replica_clients, group
) -> None:
    """A released lease is taken at the follower's next retry, long before it would expire."""
    slow_expiry = LeaderElectionConfig(lease_duration=60.0, renew_deadline=30.0,
                                       retry_period=0.1)
    a = Leadership(replica_clients[0], slow_expiry)
    b = Leadership(replica_clients[1], slow_expiry)
    task_a = group.start("a", a.run)
    await asyncio.wait_for(a.wait_leading(), GENEROUS)
    group.start("b", b.run)
    await until(lambda: b.holder == a.identity, "the follower saw the leader")
    task_a.cancel()
    # Without the release this would take the whole 60 s lease; the bound is far below it.
    await asyncio.wait_for(b.wait_leading(), GENEROUS)
    assert task_a.cancelled() and not a.is_leader
    lease = await read_lease(kube_api)
    assert lease.spec.holder_identity == b.identity


async def test_release_waits_for_guarded_actions(namespace, replica_clients, group) -> None:
    """A graceful shutdown keeps the Lease until the action in flight finished, then
    releases it."""
    a = Leadership(replica_clients[0], FAST)
    b = Leadership(replica_clients[1], FAST)
    task_a = group.start("a", a.run)
    await asyncio.wait_for(a.wait_leading(), GENEROUS)
    group.start("b", b.run)
    finish = asyncio.Event()
    entered = asyncio.Event()
    order: list[str] = []

    async def action() -> None:
        async with a.leader_guard():
            entered.set()
            await finish.wait()
            order.append("action done")

    acting = asyncio.create_task(action())
    await entered.wait()
    task_a.cancel()
    # Longer than the lease: the stopping replica keeps renewing until its action is done.
    await asyncio.sleep(FAST.lease_duration * 1.5)
    assert not b.is_leader, "the lease must stay held while an action is in flight"
    finish.set()
    await acting
    await asyncio.wait_for(b.wait_leading(), GENEROUS)
    order.append("b leads")
    assert order == ["action done", "b leads"]


async def test_simultaneous_candidates_conflict_and_one_wins(
    namespace, kube_emulator, replica_clients, group
) -> None:
    """Five replicas start at once: creations race (409), exactly one leads, none crashes."""
    # Hold every creation a moment so all five are in flight together, however loaded the
    # machine is: the race is then certain, not a matter of scheduling luck.
    kube_emulator.faults.add(delay=0.5, verb="create", path="/leases")
    settings = LeaderElectionConfig(lease_duration=3.0, renew_deadline=2.0, retry_period=0.1)
    candidates = [Leadership(api, settings) for api in replica_clients]
    with capture_logs() as logs:
        running = [group.start(f"c{i}", c.run) for i, c in enumerate(candidates)]
        leader = await first_leader(candidates)
        for _ in range(10):
            assert [c.is_leader for c in candidates].count(True) == 1
            await asyncio.sleep(settings.retry_period)
    assert leader.is_leader
    assert not any(task.done() for task in running)
    conflicts = [e for e in logs if e["event"].startswith("lease conflict")]
    assert conflicts, "the racing creations should have met 409 AlreadyExists"
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_takeover_race_after_expiry_has_one_winner(
    namespace, kube_emulator, replica_clients, group
) -> None:
    """Followers racing for an expired lease write with the same resourceVersion: one wins,
    the others get 409 Conflict and stay followers."""
    # The renew deadline leaves room for the slowed-down writes below.
    settings = LeaderElectionConfig(lease_duration=3.0, renew_deadline=2.5, retry_period=0.1)
    leader = Leadership(replica_clients[0], settings, release_on_cancel=False)
    task = group.start("leader", leader.run)
    await asyncio.wait_for(leader.wait_leading(), GENEROUS)
    followers = [Leadership(api, settings) for api in replica_clients[1:]]
    for i, follower in enumerate(followers):
        group.start(f"f{i}", follower.run)
    await until(lambda: all(f.holder == leader.identity for f in followers),
                "every follower saw the leader")
    # Slow down lease writes so the racing takeovers all read before any write lands (1 s is
    # ten retry periods: enough on a loaded machine).
    kube_emulator.faults.add(delay=1.0, verb="update", path="/leases/")
    with capture_logs() as logs:
        task.cancel()
        winner = await first_leader(followers)
        for _ in range(10):
            assert [f.is_leader for f in followers].count(True) == 1
            await asyncio.sleep(settings.retry_period)
    kube_emulator.faults.clear()
    assert winner.is_leader
    assert any(e["event"].startswith("lease conflict") for e in logs)


async def test_conflict_on_renewal_is_retried(namespace, kube_emulator, replica_clients,
                                              group) -> None:
    """409 answers to a few renewals do not cost the lease when a retry succeeds in time."""
    settings = LeaderElectionConfig(lease_duration=3.0, renew_deadline=2.0, retry_period=0.1)
    stopped = asyncio.Event()

    async def on_stopped() -> None:
        stopped.set()

    a = Leadership(replica_clients[0], settings, on_stopped_leading=on_stopped)
    group.start("a", a.run)
    await asyncio.wait_for(a.wait_leading(), GENEROUS)
    rule = kube_emulator.faults.add(status=409, verb="update", path="/leases/", times=3)
    await until(lambda: rule.injected == 3, "three conflicts were injected")
    await asyncio.sleep(settings.retry_period * 3)
    assert a.is_leader and not stopped.is_set()


async def test_leader_that_cannot_renew_steps_down(namespace, kube_emulator, replica_clients,
                                                   group) -> None:
    """When renewals keep failing, the leader stops acting within its renew deadline,
    before any other replica could take over."""
    stopped = asyncio.Event()

    async def on_stopped() -> None:
        stopped.set()

    a = Leadership(replica_clients[0], FAST, on_stopped_leading=on_stopped)
    group.start("a", a.run)
    await asyncio.wait_for(a.wait_leading(), GENEROUS)
    kube_emulator.faults.add(status=500, path="/leases/")
    await asyncio.wait_for(stopped.wait(), GENEROUS)
    assert not a.is_leader
    with pytest.raises(NotLeaderError):
        a.require_leader()
    kube_emulator.faults.clear()
    await asyncio.wait_for(a.wait_leading(), GENEROUS)  # and it campaigns again


async def test_disabled_election_leads_at_once(kube_api) -> None:
    """With leader election off the replica is the leader without touching the API."""
    started = asyncio.Event()

    async def on_started() -> None:
        started.set()

    solo = Leadership(kube_api, LeaderElectionConfig(enabled=False),
                      on_started_leading=on_started)
    assert solo.is_leader and solo.holder == solo.identity
    solo.require_leader()
    task = tasks.start_task("solo", solo.run)
    await asyncio.wait_for(started.wait(), GENEROUS)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_identity_and_settings(kube_api) -> None:
    """Identity is POD_NAME plus a random suffix; inconsistent periods are refused."""
    first = default_identity({"POD_NAME": "gatekeeper-0"})
    second = default_identity({"POD_NAME": "gatekeeper-0"})
    assert first.startswith("gatekeeper-0-") and first != second
    with pytest.raises(ValueError, match="renew_deadline"):
        Leadership(kube_api, LeaderElectionConfig(lease_duration=5, renew_deadline=5))
