"""Dispatch: run a lifecycle action on the cluster, to completion, under the Lease.

Every action the controller starts (a tick's step, a person's request, an alert's rollback,
a recovery) runs here: shielded from cancellation (a SIGTERM or a client that hung up never
leaves a half-flip), inside the Lease guard, and awaited on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from gatekeeper.config import PairConfig
from gatekeeper.drivers import Drivers
from gatekeeper.lifecycle import Action
from gatekeeper.operations import OperationResult, Operations
from gatekeeper.service.pairviews import LeaderView, ShuttingDown

__all__ = ["Dispatcher"]

log = structlog.get_logger(__name__)


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

    async def shielded(self, factory: Callable[[], Awaitable[OperationResult]]
                       ) -> OperationResult:
        """Run a cluster action to completion even if the caller is cancelled (SIGTERM,
        a client that hung up); shutdown waits for it."""
        self.refuse_if_closing()
        guard = getattr(self.leadership, "leader_guard", None)

        async def run() -> OperationResult:
            if guard is None or self.dry_run:
                return await factory()
            async with guard():  # NotLeaderError when the Lease was lost meanwhile
                return await factory()

        task = asyncio.create_task(run(), name="gatekeeper action")
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return await asyncio.shield(task)

    async def execute(self, pair: PairConfig, action: Action) -> OperationResult:
        """One lifecycle action (flip, rollback, scale up or down) through `shielded`."""
        ops = self.operations
        if action.kind == "flip":
            if not ops.dry_run_for(pair):
                await self.drivers.halt(pair.name, "flip")  # stopped before traffic moves
            return await self.shielded(lambda: ops.flip(
                pair, to=action.namespace, trigger=action.trigger, reason=action.reason))
        if action.kind == "rollback":
            return await self.shielded(lambda: ops.rollback(
                pair, trigger=action.trigger, reason=action.reason,
                scale_up_first=action.scale_up_first, to=action.namespace or None))
        if action.kind == "scale_up":
            return await self.shielded(lambda: ops.scale_up(pair, action.namespace))
        return await self.shielded(lambda: ops.scale_down(pair, action.namespace,
                                                          keep=action.keep))

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
