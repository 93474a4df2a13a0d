"""What every action needs: the cluster, the configuration, and the shared steps.

`Actor` holds the API client, the configuration, the state store and the Event recorder,
and does the steps every action module repeats: read the live routes and a namespace's
readiness, load the stored record reconciled with the routes, write it (best effort), and
report a refusal (a Warning Event and an audit entry) or a no-op. It holds no connection of
its own and is cheap to create.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import structlog
from kubernetes_asyncio import client

from gatekeeper import environments, events
from gatekeeper.actions.result import (
    CLUSTER_ERRORS,
    ActionKind,
    ActionResult,
    cluster_errors,
    result,
)
from gatekeeper.config import Config, PairConfig
from gatekeeper.environments import Readiness
from gatekeeper.routers import reading
from gatekeeper.routers.base import ActiveState
from gatekeeper.state import PairState, StateStore, reconcile_state

__all__ = ["Actor", "in_log_context", "unchanged"]

log = structlog.get_logger()

Step = TypeVar("Step", bound=Callable[..., Awaitable[ActionResult]])


def in_log_context(action: str) -> Callable[[Step], Step]:
    """Bind pair and action to every log line of the call (routers and environments too).
    For functions and methods whose first two arguments are (actor, pair)."""
    def decorate(step: Step) -> Step:
        @functools.wraps(step)
        async def bound(actor: Any, pair: PairConfig, *args: Any, **kwargs: Any
                        ) -> ActionResult:
            with structlog.contextvars.bound_contextvars(pair=pair.name, action=action):
                return await step(actor, pair, *args, **kwargs)
        return cast(Step, bound)
    return decorate


def unchanged(_state: PairState) -> None:
    """A state update that only reconciles with the routes."""


class Actor:
    """The cluster and configuration an action runs against, and its shared steps."""

    def __init__(self, api: client.ApiClient, config: Config, *, dry_run: bool = False,
                 clock: Callable[[], float] = time.time, lease: str | None = None) -> None:
        self.api = api
        self.config = config
        self.dry_run = dry_run
        self.clock = clock
        self.lease = lease
        """The Lease identity this instance acts under (the service's leader election), or
        None (the CLI). Switches record it; a switch another process started under the Lease
        is resumed at once by the holder, since holding the Lease means that one stopped."""
        self.store = StateStore(api, config.state, clock=clock)
        self.events = events.EventRecorder(api, clock=clock)

    def dry_run_for(self, pair: PairConfig) -> bool:
        """Dry-run for this pair: everywhere (`--dry-run`, the global policy) or by the
        pair's own `policy.dry_run`."""
        return self.dry_run or self.config.policy_for(pair).dry_run

    # -- reading -------------------------------------------------------------------------------

    async def live(self, pair: PairConfig) -> ActiveState:
        """The pair's routes as they are now (ClusterError when unreadable)."""
        async with cluster_errors(f"reading the routes of pair {pair.name}"):
            return await reading.read_active(self.api, pair)

    async def readiness(self, pair: PairConfig, namespace: str) -> Readiness:
        """A namespace's Deployments and pods as they are now (ClusterError when unreadable)."""
        async with cluster_errors(f"reading namespace {namespace}"):
            return await environments.read_readiness(self.api, namespace, pair=pair)

    async def state(self, pair: PairConfig, live: ActiveState | None
                    ) -> tuple[PairState, str | None]:
        """The stored state corrected in memory from the live routes (no write), and why
        it could not be read (then an empty record)."""
        try:
            state = await self.store.load(pair)
        except CLUSTER_ERRORS as exc:
            return PairState(), f"cannot read state: {exc}"
        if live is not None:
            reconcile_state(state, pair, live, at=self.clock(), history=self.config.state.history)
        return state, None

    # -- recording -----------------------------------------------------------------------------

    async def write(self, pair: PairConfig, live: ActiveState | None,
                    mutate: Callable[[PairState], None], *, running: str | None = None
                    ) -> str | None:
        """Best-effort state write (never blocks a flip); returns a warning on failure.

        The stored state is first reconciled with `live` (when given), so every write
        also corrects what the routes contradict.
        """
        history = self.config.state.history

        def apply(state: PairState) -> None:
            if live is not None:
                reconcile_state(state, pair, live, at=self.clock(), history=history,
                                running=running)
            mutate(state)

        try:
            await self.store.update(pair, apply)
        except CLUSTER_ERRORS as exc:
            log.error("state not written", pair=pair.name, error=str(exc))
            return f"state not written ({exc}); it is reconciled from the routes on next start"
        return None

    async def refuse(self, action: ActionKind, pair: PairConfig, live: ActiveState,
                     reasons: list[str], *, reason: str, trigger: str, **details: Any
                     ) -> ActionResult:
        """Report a refusal: a Warning Event and an audit record (not in dry-run)."""
        log.warning("action refused", pair=pair.name, action=action, reasons=reasons)
        if not self.dry_run_for(pair):
            now, history = self.clock(), self.config.state.history

            def mutate(state: PairState) -> None:
                state.transition("refused", at=now, history=history, action=action,
                                 trigger=trigger, reasons=reasons[:5])
                state.count("refused")

            await self.write(pair, live if live.consistent else None, mutate)
            await self.events.emit(live.routes, reason=reason, message="; ".join(reasons),
                                   action=action, warning=True, pair=pair)
        return result(action, active=live.active, refused=True, reasons=reasons,
                      dry_run=self.dry_run_for(pair), **details)

    async def nothing(self, action: ActionKind, pair: PairConfig, live: ActiveState,
                      reason: str) -> ActionResult:
        """A no-op answer; the stored state is first brought in line with the routes (a
        switch whose process died after patching is recorded as done)."""
        if not self.dry_run_for(pair):
            await self.write(pair, live, unchanged)
        return result(action, active=live.active, reasons=[reason])

    def default_namespace(self, pair: PairConfig, live: ActiveState,
                          namespace: str | None) -> tuple[str | None, str | None]:
        """(namespace, None) or (None, why not): the dark one unless given."""
        if namespace is not None:
            pair.other(namespace)
            return namespace, None
        if not live.consistent or live.active is None:
            return None, (f"cannot tell the dark namespace, routes inconsistent: {live.problem}; "
                          "name the namespace explicitly")
        return pair.other(live.active), None
