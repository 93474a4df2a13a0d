"""Leader election with a coordination.k8s.io/v1 Lease: only the holder acts.

Every replica serves reads; actions (flip, rollback, scale) call `require_leader()` or run
inside `leader_guard()`. The algorithm is client-go's (`tools/leaderelection`): a holder
renews `renewTime` every `retry_period`; a candidate takes the Lease over once it has seen
the same record unchanged for `leaseDurationSeconds` by its *own* clock (so clock skew
between nodes does not matter), or at once when the holder is empty (released). Every
write carries the resourceVersion it read, so of two candidates only one wins; the other
gets 409 Conflict and stays a follower.

Why not `kubernetes_asyncio.leaderelection` (checked in version 36): its `run()` elects
once and returns for good after the first lost renewal (no re-election); it never releases
the Lease on shutdown (the other replica waits a whole lease duration); a network error or
a non-JSON error body raises out of the loop and kills it; it writes local wall-clock time
with a `Z` suffix (wrong renewTime on any host not in UTC); it keeps believing it leads
until its renew deadline even after reading another holder; and it insists on periods of
at least one second. This module is the same loop, small, with those fixed.

Over 450 lines on purpose: one election loop whose renew, release and guard paths share the
Lease record they read and must be checked together.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper import errors, kubeclient
from gatekeeper.config import LeaderElectionConfig
from gatekeeper.errors import NotLeaderError
from gatekeeper.kubeclient import ApiException

__all__ = ["ADDRESS_ANNOTATION", "Leadership", "LeadershipCallback", "LeaseLock", "Owner",
           "check_timings", "default_identity"]

log = structlog.get_logger()

_JITTER = 0.2  # followers retry after retry_period * (1..1.2), so they do not race in lockstep
_FAILURES = (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError)
ADDRESS_ANNOTATION = "gatekeeper.io/address"
"""On the Lease a replica holds: the URL other replicas forward its requests to."""


@dataclass(frozen=True)
class Owner:
    """Who acts on a pair as last seen, and where to forward its requests (sharding: the
    holder of its shard; one leader: the leader; `address` None when it announced none)."""

    identity: str
    address: str | None
    shard: int = 0


class LeadershipCallback(Protocol):
    """Called when this replica starts or stops leading; keep it short (start a task)."""

    def __call__(self) -> Awaitable[None]: ...


def default_identity(environ: Mapping[str, str] | None = None) -> str:
    """`$POD_NAME` (else the host name) plus a random suffix: a restart is a new candidate."""
    env = os.environ if environ is None else environ
    base = env.get("POD_NAME") or socket.gethostname() or "gatekeeper"
    return f"{base}-{secrets.token_hex(3)}"


def check_timings(settings: LeaderElectionConfig, what: str) -> None:
    """ValueError unless 0 < retry_period < renew_deadline < lease_duration: a holder must
    give up (renew_deadline) before its Lease can be taken over (lease_duration)."""
    if not 0 < settings.retry_period < settings.renew_deadline < settings.lease_duration:
        raise ValueError(
            f"{what} needs 0 < retry_period < renew_deadline < lease_duration "
            f"(got {settings.retry_period}, {settings.renew_deadline}, "
            f"{settings.lease_duration})")


def _micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

_RECORD = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime",
           "leaseTransitions")


class LeaseLock:
    """One coordination.k8s.io/v1 Lease as client-go's resourcelock sees it.

    `acquire_or_renew` is client-go's tryAcquireOrRenew: it reads the Lease, takes it when it
    is free (empty holder) or when the same record stayed unchanged for
    `leaseDurationSeconds` by *our* clock, renews it when it is ours, and writes with the
    resourceVersion it read (409: someone else wrote first, we do not hold it). The timing
    of who may act is the caller's (Leadership, sharding.ShardLeases); this class only
    keeps the record. `labels` and `annotations` go onto the Lease when it is created or
    taken (a shard's ring, a replica's address).
    """

    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str,
                 identity: str, lease_seconds: int, *,
                 labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.identity, self.lease_seconds = identity, lease_seconds
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.holder: str | None = None
        """The holder as last read or written (None: free or never read)."""
        self.held_record: dict[str, Any] | None = None
        """The Lease as we last wrote it while holding it (None when not ours)."""
        self.notes: dict[str, str] = {}
        """The annotations of the Lease as last read or written (the holder's address)."""
        self._observed: tuple[Any, ...] | None = None  # the last lease record seen
        self._observed_at = 0.0  # monotonic time it was first seen
        self._expires_in = 0.0

    @property
    def available(self) -> bool:
        """The Lease as last read could be taken now: free, or expired by our clock."""
        if self.holder is None:
            return True
        return time.monotonic() >= self._observed_at + self._expires_in

    def expired_for(self) -> float:
        """Seconds since the Lease as last read expired by our clock (negative while it
        is live; a released one expires a second after it was emptied)."""
        return time.monotonic() - (self._observed_at + self._expires_in)

    def observe(self, lease: Mapping[str, Any]) -> None:
        """Note the Lease as read (by us or by a list): who holds it, and since when its
        record is unchanged, by our clock."""
        spec = lease.get("spec") or {}
        record = tuple(spec.get(key) for key in _RECORD)
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        self.holder = spec.get("holderIdentity") or None
        self.notes = dict((lease.get("metadata") or {}).get("annotations") or {})
        self._expires_in = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if self.holder != self.identity:
            self.held_record = None

    async def acquire_or_renew(self, *, take: bool = True,
                               current: dict[str, Any] | None = None) -> bool:
        """True when we hold the Lease after this call. With `take=False` a Lease that is
        not ours already is only read. `current`: the Lease as just listed (no GET)."""
        now = _micro_time(datetime.now(UTC))
        if current is None:
            try:
                current = await kubeclient.read_json(self.api.read_namespaced_lease,
                                                     self.name, self.namespace)
            except errors.APINotFoundError:
                if not take:
                    self.holder = None
                    return False
                return await self._create(now)
        lease = current
        self.observe(lease)
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        holder = self.holder
        if holder != self.identity:
            if not take or (holder is not None and not self.available):
                return False  # held by a live holder, or not ours to take
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.lease_seconds,
                    renewTime=now)
        metadata = dict(lease.get("metadata") or {})
        if self.labels:
            metadata["labels"] = {**(metadata.get("labels") or {}), **self.labels}
        if self.annotations:
            metadata["annotations"] = {**(metadata.get("annotations") or {}),
                                       **self.annotations}
        body = {**lease, "metadata": metadata, "spec": spec}
        try:
            written = await kubeclient.read_json(
                self.api.replace_namespaced_lease, self.name, self.namespace, body)
        except errors.APIConflictError:
            log.info("lease conflict: another replica wrote it first", identity=self.identity,
                     lease=self.name, status=409)
            return False
        self._remember(written)
        return True

    async def _create(self, now: str) -> bool:
        """No Lease yet: create it as its holder; 409 means another replica was faster."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": self.identity,
                     "leaseDurationSeconds": self.lease_seconds,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
        }
        try:
            created = await kubeclient.read_json(
                self.api.create_namespaced_lease, self.namespace, body)
        except errors.APIConflictError:
            log.info("lease conflict: another replica created it first",
                     identity=self.identity, lease=self.name, status=409)
            return False
        self._remember(created)
        return True

    def _remember(self, lease: dict[str, Any]) -> None:
        """Record the Lease as we wrote it: our own write is an observation too."""
        spec = lease.get("spec") or {}
        self.held_record = lease
        self.holder = self.identity
        self.notes = dict((lease.get("metadata") or {}).get("annotations") or {})
        self._observed = tuple(spec.get(key) for key in _RECORD)
        self._observed_at = time.monotonic()
        self._expires_in = float(self.lease_seconds)

    async def release(self, *, budget: float) -> bool:
        """Empty the holder (leaseDurationSeconds 1) so another replica takes the Lease at
        its next retry instead of after a whole lease duration. The caller stopped acting
        under it first. False when it could not be written (it then expires on its own);
        a 409 means it was no longer ours."""
        if self.held_record is None:
            return False
        body = copy.deepcopy(self.held_record)
        now = _micro_time(datetime.now(UTC))
        body["spec"].update(holderIdentity="", leaseDurationSeconds=1, acquireTime=now,
                            renewTime=now)
        try:
            async with asyncio.timeout(budget):
                await kubeclient.read_json(self.api.replace_namespaced_lease, self.name,
                                           self.namespace, body)
        except _FAILURES as error:
            log.warning("could not release the lease; it expires on its own",
                        identity=self.identity, lease=self.name, error=_describe(error))
            return False
        finally:
            self.held_record = None
        self.holder = None
        log.info("released the lease", identity=self.identity, lease=self.name)
        return True


class Leadership:
    """Campaigns for the Lease forever and says whether this replica may act now.

    `is_leader` is True only while the last successful renewal is younger than
    `renew_deadline`, even if the loop is stuck on a hung request, so a replica never
    acts on a lease that another one may already have taken over. With leader election
    disabled the replica is the leader at once.

    `release_on_cancel` (client-go's ReleaseOnCancel) empties the Lease when `run()` is
    cancelled, after guarded actions finished (at most `drain_timeout` seconds).
    """

    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaderElectionConfig,
        *,
        on_started_leading: LeadershipCallback | None = None,
        on_stopped_leading: LeadershipCallback | None = None,
        release_on_cancel: bool = True,
        drain_timeout: float = 10.0,
        address: str | None = None,
    ) -> None:
        """`address`: the URL followers forward requests to while this replica leads
        (written on the Lease; "" when none, so a previous leader's is not kept)."""
        if settings.enabled:
            check_timings(settings, "leader election")
        self.settings = settings
        self.identity: str = settings.identity or default_identity()
        self.release_on_cancel = release_on_cancel
        self.drain_timeout = drain_timeout
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._api = client.CoordinationV1Api(api)
        self._lease_seconds = max(1, math.ceil(settings.lease_duration))
        self._leading = not settings.enabled
        self._leading_event = asyncio.Event()
        if self._leading:
            self._leading_event.set()
        self._renewed_at = -math.inf  # monotonic time the last successful renewal started
        self._holder: str | None = self.identity if self._leading else None
        self.address = address
        self._lock = LeaseLock(self._api, settings.namespace, settings.lease_name,
                               self.identity, self._lease_seconds,
                               annotations={ADDRESS_ANNOTATION: address or ""})
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what the rest of gatekeeper asks -------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this replica holds a Lease renewed less than `renew_deadline` ago."""
        if not self.settings.enabled:
            return True
        age = time.monotonic() - self._renewed_at
        return self._leading and age < self.settings.renew_deadline

    @property
    def holder(self) -> str | None:
        """The identity holding the Lease as last seen (None when free or unknown)."""
        return self.identity if self.is_leader else self._holder

    def require_leader(self) -> None:
        """Raise `NotLeaderError` unless this replica may act now; call before every action."""
        if not self.is_leader:
            raise NotLeaderError(self.identity, self.holder)

    @asynccontextmanager
    async def leader_guard(self) -> AsyncIterator[None]:
        """`async with leadership.leader_guard():` around an action.

        Refuses to start unless leading, and counts the action as in flight so a graceful
        shutdown releases the Lease only after it finished (bounded by `drain_timeout`).
        Leadership can still be lost midway (renewals failing): an action with several
        writes calls `require_leader()` again before each one.
        """
        self.require_leader()
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    # -- the per-pair questions sharded replicas answer differently (sharding.ShardLeases) --

    sharded = False
    """One leader acts on every pair (every replica evaluates every pair)."""

    @property
    def forwards(self) -> bool:
        """With leader election on, a follower sends requests that act on to the leader."""
        return bool(self.settings.enabled)

    def acts_on(self, key: str) -> bool:
        """Whether this replica may act on the pair now: the leader acts on all."""
        return self.is_leader

    def owner_of(self, key: str) -> Owner | None:
        """The replica acting on the pair: the leader as last seen, with the address its
        Lease announces."""
        holder = self.holder
        if not holder:
            return None
        if holder == self.identity:
            return Owner(holder, self.address)
        address = self._lock.notes.get(ADDRESS_ANNOTATION) if self._lock.holder == holder \
            else None
        return Owner(holder, address or None)

    def holds(self, key: str) -> bool:
        """Whether the pair's state may still be written: while leading."""
        return self.is_leader

    def require_owner(self, key: str) -> None:
        """`require_leader` (NotLeaderError)."""
        self.require_leader()

    def guard(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """`leader_guard` for an action on the pair."""
        return self.leader_guard()

    async def wait_leading(self) -> None:
        """Return once this replica leads (at once when it already does)."""
        await self._leading_event.wait()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign and renew forever; on cancellation stop leading and release the Lease."""
        if not self.settings.enabled:
            await self._notify(self._on_started, "on_started_leading")
            try:
                await asyncio.Event().wait()
            finally:
                await self._notify(self._on_stopped, "on_stopped_leading")
            return
        log.info("campaigning for leadership", identity=self.identity,
                 lease=f"{self.settings.namespace}/{self.settings.lease_name}")
        try:
            while True:
                await self._tick()
                delay = self.settings.retry_period
                if not self._leading:
                    delay *= 1.0 + _JITTER * random.random()
                await asyncio.sleep(delay)
        finally:
            if self._leading:
                await self._stop_leading("shutting down")
                if self.release_on_cancel:
                    await self._release()

    async def _tick(self) -> None:
        """One attempt to acquire or renew, bounded by what is left of the renew deadline."""
        started = time.monotonic()
        budget = self.settings.renew_deadline
        if self._leading:
            budget = max(self.settings.renew_deadline - (started - self._renewed_at),
                         self.settings.retry_period)
        try:
            async with asyncio.timeout(budget):
                acquired = await self._try_acquire_or_renew()
        except _FAILURES as error:
            acquired = False
            log.warning("lease request failed", identity=self.identity,
                        error=_describe(error))
        if acquired:
            self._renewed_at = started
            if not self._leading:
                await self._start_leading()
            return
        if not self._leading:
            return
        if self._holder not in (None, self.identity):
            await self._stop_leading(f"the lease was taken by {self._holder}")
        elif time.monotonic() - self._renewed_at >= self.settings.renew_deadline:
            await self._stop_leading("could not renew the lease within the renew deadline")

    async def _try_acquire_or_renew(self) -> bool:
        """True when we hold the Lease after this call (LeaseLock.acquire_or_renew)."""
        acquired = await self._lock.acquire_or_renew()
        self._holder = self._lock.holder
        return acquired

    async def _start_leading(self) -> None:
        self._leading = True
        self._leading_event.set()
        log.info("started leading", identity=self.identity)
        await self._notify(self._on_started, "on_started_leading")

    async def _stop_leading(self, reason: str) -> None:
        self._leading = False
        self._leading_event.clear()
        if self._in_flight:
            log.warning("stopped leading with actions in flight", identity=self.identity,
                        actions=self._in_flight)
        log.info("stopped leading", identity=self.identity, reason=reason)
        await self._notify(self._on_stopped, "on_stopped_leading")

    async def _notify(self, callback: LeadershipCallback | None, what: str) -> None:
        """Run a callback; its crash is logged, never lost, and never stops the election."""
        if callback is None:
            return
        try:
            await callback()
        except Exception:
            log.exception("leadership callback failed", callback=what, identity=self.identity)

    async def _release(self) -> None:
        """Empty the holder so the other replica takes over at its next retry, not after a
        whole lease duration.

        Actions still in flight (inside `leader_guard`) finish first, for at most
        `drain_timeout` seconds, and the Lease is renewed meanwhile so that nobody else acts
        at the same time.
        A 409 means the Lease is no longer ours to release.
        """
        if self._lock.held_record is None:
            return
        deadline = time.monotonic() + self.drain_timeout
        while self._in_flight and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(self.settings.retry_period):
                    await self._idle.wait()
            except TimeoutError:
                try:
                    async with asyncio.timeout(self.settings.retry_period):
                        await self._try_acquire_or_renew()
                except _FAILURES as error:
                    log.warning("lease renewal failed while actions finish",
                                identity=self.identity, error=_describe(error))
        if self._in_flight:
            log.warning("releasing the lease with actions still in flight",
                        identity=self.identity, actions=self._in_flight)
        if self._lock.held_record is None or self._holder != self.identity:
            return
        await self._lock.release(budget=self.settings.renew_deadline)
        self._holder = None


def _describe(error: BaseException) -> str:
    """Short text for a log line: status and reason for API errors, else the repr."""
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return repr(error)
