"""The actions on one cluster, for every caller: flip, rollback, scale up or down, wait
until ready, recover after a crash; and the live status of a pair.

`Operations` is the one object the CLI, the HTTP API, the webhook and the control loop act
through (the service's calls go through `actions.executor` to it). The actions themselves live
in `gatekeeper.actions`, one module each: `switch` (all routes or none), `capacity`
(production size before traffic, scaling, waiting), `recovery` (a switch a dead process left
half done, finished or undone through the same all-or-none switch). Every action answers with
an `ActionResult`; refusals are results, only an unreachable cluster raises `ClusterError`.
Dry-run decides exactly as a real run would, reports what it would do, and changes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gatekeeper import environments
from gatekeeper.actions import capacity, executor, recovery, switch
from gatekeeper.actions.context import Actor
from gatekeeper.actions.recovery import holder_gone, process_identity
from gatekeeper.actions.result import CLUSTER_ERRORS, ActionResult, ClusterError
from gatekeeper.actions.switch import inconsistent
from gatekeeper.config import PairConfig
from gatekeeper.environments import Progress, Readiness
from gatekeeper.lifecycle import Action
from gatekeeper.routers.base import RouteView
from gatekeeper.state import PairState

__all__ = [
    "CLUSTER_ERRORS",
    "ActionResult",
    "ClusterError",
    "NamespaceStatus",
    "Operations",
    "PairStatus",
    "holder_gone",
    "inconsistent",
    "process_identity",
]

@dataclass(frozen=True)
class NamespaceStatus:
    """One namespace of the pair: its role and readiness (None when unreadable)."""

    namespace: str
    role: str
    """active | dark | unknown"""
    readiness: Readiness | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for status output."""
        out: dict[str, Any] = {"namespace": self.namespace, "role": self.role}
        if self.readiness is not None:
            out.update(self.readiness.to_dict())
            out["images"] = self.readiness.images()
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class PairStatus:
    """Everything a pipeline or a person needs to know about a pair, read live."""

    pair: str
    active: str | None
    dark: str | None
    consistent: bool
    problem: str | None
    routes: tuple[RouteView, ...]
    namespaces: tuple[NamespaceStatus, ...]
    state: PairState | None
    state_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API and `gatekeeper status --output json`."""
        return {
            "pair": self.pair,
            "active": self.active,
            "dark": self.dark,
            "consistent": self.consistent,
            "problem": self.problem,
            "routes": [r.to_dict() for r in self.routes],
            "namespaces": [n.to_dict() for n in self.namespaces],
            "state": self.state.to_dict() if self.state else None,
            "state_error": self.state_error,
        }


class Operations(Actor):
    """The actions on one cluster (see the module docstring); cheap to create, holds no
    connection of its own."""

    async def status(self, pair: PairConfig) -> PairStatus:
        """Active/dark per routes, consistency, each namespace's Deployments and pods, state."""
        live = await self.live(pair)
        dark = pair.other(live.active) if live.active else None

        async def one(namespace: str) -> NamespaceStatus:
            role = "active" if namespace == live.active else "dark" if namespace == dark \
                else "unknown"
            try:
                readiness = await environments.read_readiness(self.api, namespace, pair=pair)
            except CLUSTER_ERRORS as exc:
                return NamespaceStatus(namespace, role, None, f"{type(exc).__name__}: {exc}")
            return NamespaceStatus(namespace, role, readiness)

        namespaces = await asyncio.gather(*(one(ns) for ns in pair.namespaces))
        state, state_error = await self.state(pair, live)
        return PairStatus(pair.name, live.active, dark, live.consistent, live.problem,
                          live.routes, tuple(namespaces), state, state_error)

    async def announce(self, pair: PairConfig, *, reason: str, message: str, action: str,
                       warning: bool = False) -> int:
        """An Event on each of the pair's routes for something a person did that moves no
        route (an approval): `kubectl describe ingressroute` shows who. Returns how many
        were written (0 in dry-run); ClusterError when the routes cannot be read."""
        if self.dry_run:
            return 0
        live = await self.live(pair)
        return await self.events.emit(live.routes, reason=reason, message=message,
                                      action=action, warning=warning, pair=pair)

    async def execute(self, pair: PairConfig, action: Action) -> ActionResult:
        """Carry out a decided lifecycle `Action` (`actions.executor`): the way the control
        loop, the API, the webhook and the CLI act."""
        return await executor.execute(self, pair, action)

    async def recover(self, pair: PairConfig) -> ActionResult | None:
        """Finish or undo a switch a dead process left half done (`recovery.recover`)."""
        return await recovery.recover(self, pair)

    def resume_after(self, pair: PairConfig) -> float:
        """Seconds after which a started switch of another host is presumed abandoned."""
        return recovery.resume_after(self, pair)

    async def flip(self, pair: PairConfig, *, to: str | None = None, force: bool = False,
                   trigger: str = "manual", reason: str = "") -> ActionResult:
        """Send traffic to `to` (default: the dark namespace); `switch.flip`."""
        return await switch.flip(self, pair, to=to, force=force, trigger=trigger,
                                 reason=reason)

    async def rollback(self, pair: PairConfig, *, force: bool = False, trigger: str = "manual",
                       reason: str = "", scale_up_first: bool = False,
                       to: str | None = None) -> ActionResult:
        """Send traffic back where it came from (once); `switch.rollback`."""
        return await switch.rollback(self, pair, force=force, trigger=trigger, reason=reason,
                                     scale_up_first=scale_up_first, to=to)

    async def scale_up(self, pair: PairConfig, namespace: str | None = None) -> ActionResult:
        """Scale a namespace (default: the dark one) to production size; `capacity.scale_up`."""
        return await capacity.scale_up(self, pair, namespace)

    async def wait_ready(self, pair: PairConfig, namespace: str | None = None, *,
                         timeout: float,  # noqa: ASYNC109 - how long pods may take, part of the API
                         progress: Progress | None = None) -> ActionResult:
        """Wait until a namespace can take traffic, or time out; `capacity.wait_ready`."""
        return await capacity.wait_ready(self, pair, namespace, timeout=timeout,
                                         progress=progress)

    async def scale_down(self, pair: PairConfig, namespace: str | None = None, *, keep: int = 0,
                         force: bool = False) -> ActionResult:
        """Scale a namespace (never the active one) down; `capacity.scale_down`."""
        return await capacity.scale_down(self, pair, namespace, keep=keep, force=force)
