"""Sharded replicas over HTTP against the emulated API server: the shards split between
replicas, move on join without overlap, and a killed replica's shards are taken over."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from kubernetes_asyncio import client

from gatekeeper import ring
from gatekeeper.config import LeaderElectionConfig, ShardingConfig
from gatekeeper.errors import NotLeaderError, NotOwnerError
from gatekeeper.sharding import ShardLeases, member_address
from tests import replica_support

NAMESPACE = replica_support.NAMESPACE
# Short periods keep the tests in seconds; the renew deadline leaves a loaded machine 15
# retry periods before a replica's fence lapses.
FAST = LeaderElectionConfig(lease_duration=2.0, renew_deadline=1.5, retry_period=0.1)
SHARDS = ShardingConfig(enabled=True, shards=12)
GENEROUS = 15.0


# -- the pure ring ----------------------------------------------------------------------


def test_a_pair_always_lands_in_the_same_shard_and_pairs_spread() -> None:
    keys = [f"pair-{i}" for i in range(3000)]
    assert [ring.shard_of(k, 16) for k in keys] == [ring.shard_of(k, 16) for k in keys]
    sizes = Counter(ring.shard_of(k, 16) for k in keys)
    assert set(sizes) == set(range(16))
    assert max(sizes.values()) < 2 * min(sizes.values())
    # Consistent: one more shard moves about 1/17 of the pairs, not most of them.
    moved = sum(ring.shard_of(k, 16) != ring.shard_of(k, 17) for k in keys)
    assert moved < len(keys) / 17 * 1.5
    with pytest.raises(ValueError, match="at least 1"):
        ring.shard_of("x", 0)


@pytest.mark.parametrize("members", [["a"], ["a", "b"], ["a", "b", "c"], list("abcde")])
def test_assignment_is_balanced_and_the_same_in_any_order(members: list[str]) -> None:
    placed = ring.assign(16, members)
    assert sorted(placed) == list(range(16))
    load = Counter(placed.values())
    assert max(load.values()) <= -(-16 // len(members))
    assert ring.assign(16, list(reversed(members))) == placed
    assert ring.assign(16, []) == {}


def test_a_joining_member_takes_shards_without_reshuffling_the_rest() -> None:
    before = ring.assign(16, ["a", "b", "c"])
    after = ring.assign(16, ["a", "b", "c", "d"])
    moved = [s for s in range(16) if before[s] != after[s]]
    assert Counter(after.values())["d"] == 4
    assert len(moved) <= 6  # the 4 that d takes, and at most 2 evened out between others


def test_member_address() -> None:
    assert member_address("http://gk-0.gk:8080/", {}, 8080) == "http://gk-0.gk:8080"
    assert member_address(None, {"POD_IP": "10.1.2.3"}, 9000) == "http://10.1.2.3:9000"
    assert member_address(None, {"POD_IP": "fd00::1"}, 80) == "http://[fd00::1]:80"
    assert member_address(None, {}, 80) is None


# -- replicas against the emulator ------------------------------------------------------


# The replica fixtures (namespace, group, replica_clients), shared with test_leadership.py.
namespace = replica_support.namespace
group = replica_support.group
replica_clients = replica_support.replica_clients


def replica(api: client.ApiClient, name: str, **kwargs) -> ShardLeases:
    return ShardLeases(api, FAST.model_copy(update={"identity": name}), SHARDS,
                       address=f"http://{name}.test:8080", **kwargs)


class Overlap:
    """Samples every replica's fenced shards all along: no shard is ever held by two."""

    def __init__(self, replicas: list[ShardLeases]) -> None:
        self.replicas = replicas
        self.samples = 0
        self.overlaps: list[tuple[int, list[str]]] = []

    def sample(self) -> None:
        self.samples += 1
        holders: dict[int, list[str]] = {}
        for r in self.replicas:
            for shard in r.held():
                holders.setdefault(shard, []).append(r.identity)
        self.overlaps.extend((s, who) for s, who in holders.items() if len(who) > 1)

    async def until(self, predicate, what: str) -> None:
        for _ in range(int(GENEROUS / 0.01)):
            self.sample()
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting until {what}: "
                             + ", ".join(f"{r.identity}={sorted(r.held())}"
                                         for r in self.replicas))

    async def hold(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.01)):
            self.sample()
            await asyncio.sleep(0.01)


def split(replicas: list[ShardLeases]) -> bool:
    """Every shard held by exactly one replica, as evenly as the ring says."""
    held = [r.held() for r in replicas]
    everything = [s for h in held for s in h]
    fair = -(-SHARDS.shards // len(replicas))
    return sorted(everything) == list(range(SHARDS.shards)) and all(
        0 < len(h) <= fair for h in held)


async def test_two_then_three_replicas_split_the_shards_without_overlap(
        namespace, replica_clients, group) -> None:
    a, b = replica(replica_clients[0], "replica-a"), replica(replica_clients[1], "replica-b")
    watch = Overlap([a, b])
    group.start("a", a.run)
    group.start("b", b.run)
    await watch.until(lambda: split([a, b]), "two replicas split the shards")
    await watch.hold(FAST.lease_duration)  # a lease duration of renewals: no overlap
    await watch.until(lambda: split([a, b]), "still split")
    key = next(f"pair-{i}" for i in range(100) if a.acts_on(f"pair-{i}"))
    assert not b.acts_on(key)
    owner = b.owner_of(key)
    assert owner is not None and owner.identity == "replica-a"
    assert owner.address == "http://replica-a.test:8080"
    with pytest.raises(NotOwnerError, match="replica-a") as refused:
        async with b.guard(key):
            pytest.fail("a replica that does not hold the shard must not act")
    assert isinstance(refused.value, NotLeaderError)  # the handlers of today catch it
    assert refused.value.address == "http://replica-a.test:8080"

    c = replica(replica_clients[2], "replica-c")
    watch.replicas.append(c)
    group.start("c", c.run)
    await watch.until(lambda: split([a, b, c]), "a joining replica got its share")
    await watch.hold(FAST.lease_duration)
    await watch.until(lambda: split([a, b, c]), "still split")
    assert watch.samples > 100 and watch.overlaps == []
    leases = await client.CoordinationV1Api(replica_clients[3]).list_namespaced_lease(
        NAMESPACE, label_selector="gatekeeper.io/ring=gatekeeper-leader")
    holders = {x.metadata.name: x.spec.holder_identity for x in leases.items}
    assert {holders[f"gatekeeper-leader-shard-{s}"] for s in c.held()} == {"replica-c"}


async def test_a_killed_replica_is_taken_over_and_a_draining_one_waits_for_actions(
        namespace, replica_clients, group) -> None:
    a = replica(replica_clients[0], "replica-a", release_on_cancel=False)
    b = replica(replica_clients[1], "replica-b")
    watch = Overlap([a, b])
    task_a = group.start("a", a.run)
    group.start("b", b.run)
    await watch.until(lambda: split([a, b]), "two replicas split the shards")
    lost = a.held()
    task_a.cancel()  # killed: its Leases are left to expire
    await watch.hold(FAST.retry_period * 2)
    assert not (b.held() & lost), "a live-looking shard must not be taken at once"
    await watch.until(lambda: b.held() == frozenset(range(SHARDS.shards)),
                      "the survivor took every shard")
    assert watch.overlaps == []

    # A joining replica gets shards only once the actions in flight on them finished.
    key = next(f"pair-{i}" for i in range(200)
               if ring.assign(SHARDS.shards, ["replica-b", "replica-c"])[
                   ring.shard_of(f"pair-{i}", SHARDS.shards)] == "replica-c")
    finish, entered = asyncio.Event(), asyncio.Event()

    async def action() -> None:
        async with b.guard(key):
            entered.set()
            await finish.wait()

    acting = asyncio.create_task(action())
    await entered.wait()
    c = replica(replica_clients[2], "replica-c")
    watch.replicas.append(c)
    group.start("c", c.run)
    shard = b.shard_of(key)
    await watch.until(lambda: not b.acts_on(key), "b stopped starting actions on the shard")
    await watch.hold(FAST.lease_duration * 1.5)  # longer than the Lease: b keeps renewing
    assert not c.acts_on(key) and shard not in c.held()
    finish.set()
    await acting
    await watch.until(lambda: split([b, c]), "the shard moved once the action finished")
    assert c.acts_on(key) and watch.overlaps == []


async def test_the_member_leases_of_gone_replicas_are_deleted_once_long_expired(
        namespace, replica_clients, group) -> None:
    """`kubectl get leases` does not grow with every pod ever started: the member Lease of a
    killed replica (left to expire) and of one that left (released) are deleted by the
    survivor once expired for two lease durations more; the live one's stays."""
    a = replica(replica_clients[0], "replica-a", release_on_cancel=False)
    b, c = replica(replica_clients[1], "replica-b"), replica(replica_clients[2], "replica-c")
    watch = Overlap([a, b, c])
    tasks = {r.identity: group.start(r.identity, r.run) for r in (a, b, c)}
    await watch.until(lambda: split([a, b, c]), "three replicas split the shards")
    leases = client.CoordinationV1Api(replica_clients[3])

    async def members() -> set[str]:
        listed = await leases.list_namespaced_lease(
            NAMESPACE, label_selector="gatekeeper.io/lease-role=member")
        return {x.metadata.name for x in listed.items}

    assert await members() == {f"gatekeeper-leader-member-replica-{n}" for n in "abc"}
    tasks["replica-a"].cancel()  # killed
    tasks["replica-c"].cancel()  # stopped cleanly: its Leases released
    await watch.hold(FAST.lease_duration)  # expired, not yet long enough to be deleted
    assert b.forgotten == 0
    await watch.until(lambda: b.forgotten == 2, "the survivor deleted both member Leases")
    assert await members() == {"gatekeeper-leader-member-replica-b"}
    assert b.held() == frozenset(range(SHARDS.shards)) and watch.overlaps == []


async def test_replicas_that_count_the_shards_differently_act_on_nothing(
        namespace, replica_clients, group) -> None:
    """A rollout that changes sharding.shards: a pair would be in two shards held by two
    replicas, so both stand down until the other count is gone."""
    a = replica(replica_clients[0], "replica-a")
    watch = Overlap([a])
    group.start("a", a.run)
    await watch.until(lambda: a.held() == frozenset(range(SHARDS.shards)), "a holds all")
    b = ShardLeases(replica_clients[1], FAST.model_copy(update={"identity": "replica-b"}),
                    ShardingConfig(enabled=True, shards=5), release_on_cancel=False)
    task_b = group.start("b", b.run)
    await watch.until(lambda: a.mismatch is not None and b.mismatch is not None
                      and not a.held() and not b.held(), "both stood down")
    await watch.hold(FAST.lease_duration * 1.5)
    assert not a.held() and not b.held() and not a.acts_on("pair-1")
    assert "counts 5 shards" in (a.mismatch or "")
    task_b.cancel()  # the old replica goes away (its member Lease expires)
    await watch.until(lambda: a.held() == frozenset(range(SHARDS.shards)),
                      "a acts again once the other count is gone")


async def test_inconsistent_lease_periods_are_refused_for_sharding(kube_api) -> None:
    """The same rule as leader election: a shard holder must give up its Lease
    (renew_deadline) before another replica may take it (lease_duration)."""
    with pytest.raises(ValueError, match="sharding needs 0 < retry_period < renew_deadline"):
        ShardLeases(kube_api, LeaderElectionConfig(lease_duration=5, renew_deadline=5),
                    SHARDS)
