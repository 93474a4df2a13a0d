"""Dispatch: run a lifecycle action on the cluster, to completion, under the Lease.

Every action the controller starts (a tick's step, a person's request, an alert's rollback,
a recovery) runs here: shielded from cancellation (a SIGTERM or a client that hung up never
leaves a half-flip), inside the Lease guard, and awaited on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import structlog

from gatekeeper.config import PairConfig
from gatekeeper.drivers import Drivers
from gatekeeper.leadership import Owner
from gatekeeper.lifecycle import Action
from gatekeeper.operations import ActionResult, Operations
from gatekeeper.service.pairviews import ShuttingDown

__all__ = ["Dispatcher", "LeaderView"]

log = structlog.get_logger(__name__)


class LeaderView(Protocol):
    """What the controller needs from leader election: gatekeeper.leadership.Leadership (one
    leader acts on every pair) or gatekeeper.sharding.ShardLeases (each replica acts on the
    pairs of its shards, and evaluates only those; `is_leader` means "holds some shard")."""

    @property
    def identity(self) -> str:
        """This replica's name (recorded with the switches it makes)."""
        ...

    @property
    def is_leader(self) -> bool:
        """True while this replica may act."""
        ...

    @property
    def holder(self) -> str | None:
        """Who holds the Lease as last seen (named in a follower's 503)."""
        ...

    @property
    def sharded(self) -> bool:
        """Each replica evaluates only the pairs it acts on."""
        ...

    @property
    def forwards(self) -> bool:
        """A request acting on a pair another replica acts on is sent there (service.
        forwarding): sharded replicas, and one leader's followers."""
        ...

    def acts_on(self, key: str) -> bool:
        """True while this replica may act on the pair."""
        ...

    def holds(self, key: str) -> bool:
        """True while this replica holds the pair's Lease within its renew deadline, also
        while handing it over (a step already running may still write its state)."""
        ...

    def require_owner(self, key: str) -> None:
        """NotLeaderError (NotOwnerError naming the owner) unless it acts on the pair."""
        ...

    def owner_of(self, key: str) -> Owner | None:
        """The replica acting on the pair as last seen, with its address when known."""
        ...

    def guard(self, key: str) -> AbstractAsyncContextManager[None]:
        """Around an action on the pair: NotLeaderError unless acting on it; the pair's
        Lease is not released while it runs."""
        ...


class Dispatcher:
    """Starts cluster actions, keeps the ones in flight, refuses new ones when closing."""

    def __init__(self, operations: Operations, leadership: LeaderView,
                 drivers: Drivers) -> None:
        self.operations = operations
        self.drivers = drivers
        self.leadership = leadership
        self.dry_run = operations.dry_run
        self.closing = False
        self.inflight: set[asyncio.Task[Any]] = set()

    def refuse_if_closing(self) -> None:
        """ShuttingDown once `closing` is set."""
        if self.closing:
            raise ShuttingDown("gatekeeper is shutting down; no new action starts")

    def holding(self, pair: PairConfig) -> AbstractAsyncContextManager[None]:
        """Around a whole step on the pair (its action *and* the state write after it):
        NotLeaderError unless this replica acts on it, and its Lease is neither handed
        over nor released until the step ends, so a new owner never writes the pair's
        state before the old owner's last write landed (dry-run: nothing to hold)."""
        if self.dry_run:
            return contextlib.nullcontext()
        return self.leadership.guard(pair.name)

    async def shielded(self, pair: PairConfig,
                       factory: Callable[[], Awaitable[ActionResult]]) -> ActionResult:
        """Run a cluster action on the pair to completion even if the caller is cancelled
        (SIGTERM, a client that hung up); shutdown waits for it."""
        self.refuse_if_closing()

        async def run() -> ActionResult:
            if self.dry_run:
                return await factory()
            # NotLeaderError (NotOwnerError) when the pair's Lease was lost meanwhile.
            async with self.leadership.guard(pair.name):
                return await factory()

        task = asyncio.create_task(run(), name="gatekeeper action")
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return await asyncio.shield(task)

    async def execute(self, pair: PairConfig, action: Action) -> ActionResult:
        """One lifecycle action (flip, rollback, scale up or down), whoever decided it,
        through the one executor (`Operations.execute`) inside `shielded`. A flip first
        stops the pair's validation drivers, before traffic moves."""
        ops = self.operations
        if action.kind == "flip" and not ops.dry_run_for(pair):
            await self.drivers.halt(pair.name, "flip")
        return await self.shielded(pair, lambda: ops.execute(pair, action))

    async def close(self, deadline: float) -> list[str]:
        """Start no new action; wait up to `deadline` seconds for actions in flight (a
        switch is never cut in half). Returns the names of unfinished ones."""
        self.closing = True
        pending = [task for task in self.inflight if not task.done()]
        if not pending:
            return []
        log.info("waiting for actions in flight", count=len(pending))
        _, still = await asyncio.wait(pending, timeout=deadline)
        if still:
            log.error("actions still running at shutdown; state is reconciled on restart",
                      count=len(still))
        return [task.get_name() for task in still]
