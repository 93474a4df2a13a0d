"""Sharded leadership: a Lease per shard, each replica acts only on the pairs of its shards.

The design follows kubernetes-controller-sharding (a Lease per member for membership and
failure detection, consistent hashing for the assignment, a drain before an object moves)
with client-go's leader election for each shard's Lease (leadership.LeaseLock):

- every replica keeps a *member* Lease (`<lease_name>-member-<identity>`, annotated with the
  address other replicas forward requests to) and lists all Leases of its ring (one LIST per
  `retry_period`, label `gatekeeper.io/ring`);
- the live members (their Lease renewed within its duration, by our clock) give the desired
  holder of every shard (`ring.assign`), which every replica computes alike;
- a replica takes a shard's Lease (`<lease_name>-shard-<n>`) when it is the desired holder
  and the Lease is free or expired, or when the holder is no longer a live member and the
  Lease expired (a dead replica's shards are taken within about one lease duration);
- a replica that should give a shard up (a new member joined) first stops starting actions
  on it (`acts_on` turns False), waits for the actions in flight (`guard`; renewing the
  Lease meanwhile, however long they take), then empties the Lease; the new holder takes only a
  free or expired Lease, so two replicas never act on one pair;
- a replica acts on a pair only while it holds the pair's shard Lease renewed less than
  `renew_deadline` ago (the fence of today's leader, per shard);
- a member Lease left by a replica that died or left (expired by our clock for
  `FORGET_AFTER` lease durations more) is deleted by a live replica, with the
  resourceVersion it saw as precondition (a replica that came back and renewed it keeps
  it), so the Leases do not pile up with every pod ever started. A replica whose member
  Lease was deleted creates it again at its next round.

Pairs are named by a key (`ring.shard_of`): a configured pair's name today, `namespace/name`
for a pair object; nothing here depends on where the set of pairs comes from.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper import errors, kubeclient, ring
from gatekeeper.config import LeaderElectionConfig, ShardingConfig
from gatekeeper.errors import NotOwnerError
from gatekeeper.kubeclient import ApiException
from gatekeeper.leadership import (
    ADDRESS_ANNOTATION,
    LeaseLock,
    Owner,
    check_timings,
    default_identity,
)

__all__ = ["RING_LABEL", "ROLE_LABEL", "Owner", "ShardLeases", "member_address"]

log = structlog.get_logger(__name__)

RING_LABEL = "gatekeeper.io/ring"
ROLE_LABEL = "gatekeeper.io/lease-role"
SHARDS_ANNOTATION = "gatekeeper.io/shards"
_FAILURES = (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError)
FORGET_AFTER = 2
"""Lease durations a member Lease stays after it expired, before a live replica deletes it."""
FORGET_PER_ROUND = 16
"""At most this many dead members' Leases deleted per round (the rest at the next ones)."""


def member_address(configured: str | None, environ: dict[str, str], port: int) -> str | None:
    """The URL other replicas reach this one at: configured, else http://$POD_IP:port."""
    if configured:
        return configured.rstrip("/")
    pod_ip = environ.get("POD_IP")
    if not pod_ip:
        return None
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"


def _lease_safe(identity: str) -> str:
    """An identity as part of a Lease name (a DNS subdomain)."""
    text = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.")
    return text[:200] or "replica"


@dataclass
class _Shard:
    lock: LeaseLock
    renewed_at: float = -math.inf
    """Monotonic time the last successful write of this shard's Lease started."""
    draining_since: float | None = None
    in_flight: int = 0


class ShardLeases:
    """Campaigns for shard Leases forever and says which pairs this replica may act on."""

    def __init__(self, api: client.ApiClient, election: LeaderElectionConfig,
                 sharding: ShardingConfig, *, address: str | None = None,
                 drain_timeout: float = 10.0, release_on_cancel: bool = True,
                 on_change: Callable[[], None] | None = None) -> None:
        """`release_on_cancel=False` leaves the Leases to expire (tests: a killed replica)."""
        check_timings(election, "sharding")
        self.election = election
        self.count = sharding.shards
        self.identity: str = election.identity or default_identity()
        self.address = address
        self.drain_timeout = drain_timeout
        self.release_on_cancel = release_on_cancel
        self.on_change = on_change
        """Called when the shards held change (the service wakes its control loop)."""
        self._api = client.CoordinationV1Api(api)
        self._seconds = max(1, math.ceil(election.lease_duration))
        self.ring_name = election.lease_name
        labels = {RING_LABEL: self.ring_name}
        self._member = LeaseLock(
            self._api, election.namespace,
            f"{election.lease_name}-member-{_lease_safe(self.identity)}", self.identity,
            self._seconds, labels={**labels, ROLE_LABEL: "member"},
            annotations={SHARDS_ANNOTATION: str(self.count),
                         **({ADDRESS_ANNOTATION: address} if address else {})})
        self._shards = [
            _Shard(LeaseLock(self._api, election.namespace,
                             f"{election.lease_name}-shard-{index}", self.identity,
                             self._seconds, labels={**labels, ROLE_LABEL: "shard"}))
            for index in range(self.count)]
        self._seen: dict[str, LeaseLock] = {}
        """Other members' Leases, observed (their liveness by our clock)."""
        self.forgotten = 0
        """Dead members' Leases this replica deleted (tests and logs)."""
        self._undeletable: set[str] = set()
        """Member Leases a delete was refused for (403: logged once)."""
        self._members: dict[str, str | None] = {}
        """Live members as last listed: identity -> address."""
        self._held: frozenset[int] = frozenset()
        self.mismatch: str | None = None
        """Why this replica acts on nothing: a live member counts the shards differently
        (a pair would be in two shards held by two replicas), e.g. during a rollout that
        changes `sharding.shards`; clears once that member is gone."""
        self._idle = asyncio.Event()
        self._idle.set()
        self.rounds = 0
        """Completed campaign rounds (tests wait on it)."""

    # -- what the rest of gatekeeper asks -------------------------------------------------

    def shard_of(self, key: str) -> int:
        """The shard of a pair key."""
        return ring.shard_of(key, self.count)

    def _holding(self, shard: _Shard) -> bool:
        return (self.mismatch is None and shard.lock.held_record is not None
                and time.monotonic() - shard.renewed_at < self.election.renew_deadline)

    def _fenced(self, shard: _Shard) -> bool:
        return self._holding(shard) and shard.draining_since is None

    def holds(self, key: str) -> bool:
        """True while this replica holds the pair's shard Lease renewed within
        renew_deadline, also while handing it over (a running step may still write)."""
        return self._holding(self._shards[self.shard_of(key)])

    def held(self) -> frozenset[int]:
        """The shards this replica may act on now."""
        return frozenset(i for i, shard in enumerate(self._shards) if self._fenced(shard))

    def acts_on(self, key: str) -> bool:
        """True while this replica holds the pair's shard, renewed within renew_deadline."""
        return self._fenced(self._shards[self.shard_of(key)])

    sharded = True
    """Each replica evaluates and acts on the pairs of its own shards only."""
    forwards = True
    """A request about another replica's pair goes to its owner."""

    @property
    def is_leader(self) -> bool:
        """True while this replica acts on at least one shard."""
        return bool(self.held())

    @property
    def holder(self) -> str | None:
        """Sharded: no single holder (kept for what reads Leadership.holder)."""
        return None

    @property
    def members(self) -> dict[str, str | None]:
        """Live members as last listed (identity -> address), this replica included."""
        return dict(self._members)

    def owner_of(self, key: str) -> Owner | None:
        """The live holder of the pair's shard as last seen (None while it moves)."""
        index = self.shard_of(key)
        shard = self._shards[index]
        if self._fenced(shard):
            return Owner(self.identity, self.address, index)
        holder = shard.lock.holder
        if holder is None or holder == self.identity or holder not in self._members:
            return None
        return Owner(holder, self._members[holder], index)

    def require_owner(self, key: str) -> None:
        """Raise NotOwnerError (naming the owner) unless this replica acts on the pair."""
        if not self.acts_on(key):
            owner = self.owner_of(key)
            raise NotOwnerError(self.identity, owner.identity if owner else None,
                                key=key, address=owner.address if owner else None)

    @asynccontextmanager
    async def guard(self, key: str) -> AsyncIterator[None]:
        """`async with shards.guard(pair):` around an action on the pair: refuses unless
        this replica acts on it, and keeps its shard from being handed over until done."""
        self.require_owner(key)
        shard = self._shards[self.shard_of(key)]
        shard.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            shard.in_flight -= 1
            if not any(s.in_flight for s in self._shards):
                self._idle.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign every retry_period; on cancellation hand every shard back at once."""
        log.info("joining the shard ring", identity=self.identity, shards=self.count,
                 ring=f"{self.election.namespace}/{self.ring_name}", address=self.address)
        try:
            while True:
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self.election.renew_deadline):
                        await self._round(started)
                except _FAILURES as error:
                    log.warning("shard lease round failed", identity=self.identity,
                                error=_describe(error))
                self._publish()
                self.rounds += 1
                left = self.election.retry_period - (time.monotonic() - started)
                await asyncio.sleep(max(0.0, left))
        finally:
            if self.release_on_cancel:
                await self._leave()
            else:
                for shard in self._shards:
                    shard.renewed_at = -math.inf

    async def _round(self, started: float) -> None:
        """Renew our member Lease, list the ring, then take, renew or hand over shards."""
        await self._member.acquire_or_renew()  # our own name: always ours to renew
        listed = await kubeclient.read_json(
            self._api.list_namespaced_lease, self.election.namespace,
            label_selector=f"{RING_LABEL}={self.ring_name}")
        current: dict[int, dict[str, Any]] = {}
        alive: dict[str, str | None] = {self.identity: self.address}
        dead: list[tuple[str, str]] = []
        forget_after = FORGET_AFTER * self._seconds
        mismatch: str | None = None
        prefix = f"{self.ring_name}-shard-"
        for lease in listed.get("items") or []:
            metadata = lease.get("metadata") or {}
            name = str(metadata.get("name") or "")
            role = (metadata.get("labels") or {}).get(ROLE_LABEL)
            if role == "shard" and name.startswith(prefix):
                suffix = name[len(prefix):]
                if suffix.isdigit() and int(suffix) < self.count:
                    current[int(suffix)] = lease
                    self._shards[int(suffix)].lock.observe(lease)
            elif role == "member" and name != self._member.name:
                seen = self._seen.setdefault(name, LeaseLock(
                    self._api, self.election.namespace, name, self.identity, self._seconds))
                seen.observe(lease)
                if seen.expired_for() >= forget_after:
                    dead.append((name, str(metadata.get("resourceVersion") or "")))
                if seen.holder is not None and not seen.available:
                    notes = metadata.get("annotations") or {}
                    alive[seen.holder] = notes.get(ADDRESS_ANNOTATION) or None
                    counted = notes.get(SHARDS_ANNOTATION)
                    if counted is not None and counted != str(self.count):
                        mismatch = (f"member {seen.holder} counts {counted} shards, this "
                                    f"replica {self.count}")
        if mismatch != self.mismatch:
            if mismatch:
                log.error("acting on no pair: the replicas disagree on sharding.shards",
                          identity=self.identity, why=mismatch)
            else:
                log.info("the replicas agree on sharding.shards again",
                         identity=self.identity)
            self.mismatch = mismatch
        self._members = alive
        desired = ring.assign(self.count, alive)
        await asyncio.gather(*(self._step(index, current.get(index), desired.get(index),
                                          started)
                               for index in range(self.count)))
        dead = [(name, version) for name, version in dead if name not in self._undeletable]
        await asyncio.gather(*(self._forget(name, version)
                               for name, version in dead[:FORGET_PER_ROUND]))

    async def _forget(self, name: str, version: str) -> None:
        """Delete a dead member's Lease, only as last listed (a 409: it was renewed or
        replaced meanwhile; a 404: another replica deleted it first)."""
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=version or None))
        try:
            await kubeclient.read_json(self._api.delete_namespaced_lease, name,
                                       self.election.namespace, body=options)
        except (errors.APIConflictError, errors.APINotFoundError):
            return
        except errors.APIForbiddenError as error:
            self._undeletable.add(name)
            log.warning("cannot delete a dead replica's member Lease (RBAC: delete on "
                        "leases); it stays, expired and ignored", lease=name,
                        error=_describe(error))
            return
        self._seen.pop(name, None)
        self.forgotten += 1
        log.info("deleted a dead replica's member Lease", identity=self.identity, lease=name)

    async def _step(self, index: int, lease: dict[str, Any] | None, wanted: str | None,
                    started: float) -> None:
        shard = self._shards[index]
        lock = shard.lock
        mine = wanted == self.identity and self.mismatch is None
        if lock.held_record is not None:
            if not mine and wanted is not None:
                await self._hand_over(index, shard, lease, wanted, started)
                return
            if shard.draining_since is not None:
                log.info("keeping a shard after all", identity=self.identity, shard=index)
                shard.draining_since = None
            if await lock.acquire_or_renew(current=lease):
                shard.renewed_at = started
            return
        if self.mismatch is not None:
            return
        holder = lock.holder
        orphaned = holder is not None and holder not in self._members
        if lease is not None and not (mine or orphaned):
            return
        if lease is None and not mine:
            return
        if await lock.acquire_or_renew(current=lease):
            shard.renewed_at = started
            shard.draining_since = None
            log.info("took a shard", identity=self.identity, shard=index,
                     previous=holder)

    async def _hand_over(self, index: int, shard: _Shard, lease: dict[str, Any] | None,
                         wanted: str, started: float) -> None:
        """Stop acting on the shard, let its actions finish (renewing), then release it."""
        if shard.draining_since is None:
            shard.draining_since = started
            log.info("handing a shard over", identity=self.identity, shard=index, to=wanted)
        if shard.in_flight:
            # Never released under a running action (a flip waiting for readiness may take
            # minutes): the Lease is renewed, no new action starts, the taker waits.
            if await shard.lock.acquire_or_renew(current=lease):
                shard.renewed_at = started
            return
        await shard.lock.release(budget=self.election.renew_deadline)
        shard.draining_since = None

    def _publish(self) -> None:
        held = self.held()
        if held != self._held:
            log.info("shards held", identity=self.identity, shards=sorted(held))
            self._held = held
            if self.on_change is not None:
                self.on_change()

    async def _leave(self) -> None:
        """Stop acting, let actions finish (bounded), release every shard and our member
        Lease so the others rebalance at their next round instead of after expiry."""
        for shard in self._shards:
            if shard.lock.held_record is not None and shard.draining_since is None:
                shard.draining_since = time.monotonic()
        self._publish()
        if not self._idle.is_set():
            # Bounded well inside the lease duration: nobody takes our shards meanwhile.
            wait = min(self.drain_timeout,
                       self.election.lease_duration - 2 * self.election.retry_period)
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("leaving the ring with actions still in flight",
                            identity=self.identity)
        budget = self.election.renew_deadline
        await asyncio.gather(*(shard.lock.release(budget=budget) for shard in self._shards
                               if shard.lock.held_record is not None),
                             self._member.release(budget=budget))
        log.info("left the shard ring", identity=self.identity)


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return repr(error)
