"""The idempotent high-level actions: flip, rollback, scale up, wait until ready, scale down.

Used by the CLI (pipelines) and by the service. Each action reads the live routes first
(they are the truth), checks its preconditions, does nothing when there is nothing to do,
and otherwise acts, then records a state transition and an Event on the route objects.
Dry-run decides exactly as a real run would, reports what it would do, and changes nothing.
Failures to reach the cluster raise `ClusterError`; refusals are results, not exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper import environments, events, kubeclient, switches
from gatekeeper.config import Config, PairConfig
from gatekeeper.environments import Progress, Readiness
from gatekeeper.kubeclient import ApiException
from gatekeeper.routers import reading, switching
from gatekeeper.routers.base import ActiveState, RouteError, RouteView
from gatekeeper.state import (
    SWITCH_KINDS,
    PairState,
    StateError,
    StateStore,
    reconcile_state,
)

__all__ = [
    "ClusterError",
    "NamespaceStatus",
    "OperationResult",
    "Operations",
    "PairStatus",
]

log = structlog.get_logger()

CLUSTER_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError, RouteError, StateError,
                  OSError)


class ClusterError(Exception):
    """The cluster could not be read or changed (unreachable, forbidden, object missing)."""


@contextlib.asynccontextmanager
async def _cluster_errors(doing: str) -> AsyncIterator[None]:
    try:
        yield
    except CLUSTER_ERRORS as exc:
        if isinstance(exc, ApiException):
            detail = f"HTTP {exc.status} {exc.reason or ''}".strip()
        elif isinstance(exc, RouteError | StateError):
            detail = str(exc)
        else:
            detail = f"{type(exc).__name__}: {exc}"
        raise ClusterError(f"{doing}: {detail}") from exc


@dataclass(frozen=True)
class OperationResult:
    """What an action did, or why it did not."""

    action: str
    """flip | rollback | scale_up | scale_down | wait_ready"""
    changed: bool
    """The cluster was changed (False for no-op / refused / dry-run)."""
    refused: bool
    """A precondition failed (reasons say which)."""
    reasons: tuple[str, ...]
    active: str | None
    """The active namespace afterwards."""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API and `--output json`."""
        return {"action": self.action, "changed": self.changed, "refused": self.refused,
                "reasons": list(self.reasons), "active": self.active, "details": self.details}


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


Method = TypeVar("Method", bound=Callable[..., Awaitable[OperationResult]])


def _in_log_context(action: str) -> Callable[[Method], Method]:
    """Bind pair and action to every log line of the call (routers and environments too)."""
    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        async def bound(self: Operations, pair: PairConfig, *args: Any, **kwargs: Any
                        ) -> OperationResult:
            with structlog.contextvars.bound_contextvars(pair=pair.name, action=action):
                return await method(self, pair, *args, **kwargs)
        return cast(Method, bound)
    return decorate


def _result(action: str, *, active: str | None, changed: bool = False, refused: bool = False,
            reasons: tuple[str, ...] | list[str] = (), **details: Any) -> OperationResult:
    if details.get("dry_run") and not refused:
        log.info("dry-run: nothing changed", action=action, reasons=list(reasons),
                 would=details.get("would"))
    return OperationResult(action, changed, refused, tuple(reasons), active, details)


def _process_start(pid: int) -> str | None:
    """A process's start time (Linux: clock ticks since boot), telling a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_identity(lease: str | None = None) -> dict[str, Any]:
    """Which process starts a switch (recorded with it, so a restart can tell it died), and
    the Lease identity it acts under, if any."""
    found: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(),
                             "since": _process_start(os.getpid())}
    if lease is not None:
        found["lease"] = lease
    return found


def holder_gone(holder: Any) -> bool:
    """True when the process that started a switch is known to be dead: same host, and its
    pid is gone or now belongs to another process. Unknown (another host): False."""
    if not isinstance(holder, dict) or holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid() and holder.get("since") == _process_start(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    since = holder.get("since")
    now = _process_start(pid)
    return since is not None and now is not None and now != since


def _split(pair: PairConfig, live: ActiveState) -> dict[str, list[str]]:
    """Routes per namespace when each route points at exactly one namespace of the pair
    (a flip cut short, or a person's edit): a split a named target can finish. Else {}."""
    groups: dict[str, list[str]] = {}
    for view in live.routes:
        if len(view.namespaces) != 1 or not view.namespaces <= set(pair.namespaces):
            return {}
        groups.setdefault(next(iter(view.namespaces)), []).append(view.ref)
    return groups if len(groups) > 1 else {}


def inconsistent(pair: PairConfig, live: ActiveState) -> list[str]:
    """Why the routes stop an action, naming them, and how to finish."""
    groups = _split(pair, live)
    if not groups:
        return [f"routes inconsistent: {live.problem}; fix the routes named by hand "
                "(kubectl edit), or point them at one namespace of the pair, then retry"]
    where = "; ".join(f"{ns}: {', '.join(refs)}" for ns, refs in sorted(groups.items()))
    a, b = sorted(groups)
    return [f"routes are split between the pair's namespaces ({where}); finish the switch "
            f"by naming the namespace that takes all traffic: `gatekeeper flip --to {b}` "
            f"or `--to {a}` (API: POST .../flip with {{\"to\": \"{b}\"}})"]


def _unchanged(_state: PairState) -> None:
    """A state update that only reconciles with the routes."""


class Operations:
    """High-level actions on one cluster; cheap to create, holds no connection of its own."""

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

    async def _live(self, pair: PairConfig) -> ActiveState:
        async with _cluster_errors(f"reading the routes of pair {pair.name}"):
            return await reading.read_active(self.api, pair)

    async def _readiness(self, pair: PairConfig, namespace: str) -> Readiness:
        async with _cluster_errors(f"reading namespace {namespace}"):
            return await environments.read_readiness(self.api, namespace, pair=pair)

    async def _state(self, pair: PairConfig, live: ActiveState | None
                     ) -> tuple[PairState, str | None]:
        """The stored state corrected in memory from the live routes (no write)."""
        try:
            state = await self.store.load(pair)
        except CLUSTER_ERRORS as exc:
            return PairState(), f"cannot read state: {exc}"
        if live is not None:
            reconcile_state(state, pair, live, at=self.clock(), history=self.config.state.history)
        return state, None

    async def status(self, pair: PairConfig) -> PairStatus:
        """Active/dark per routes, consistency, each namespace's Deployments and pods, state."""
        live = await self._live(pair)
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
        state, state_error = await self._state(pair, live)
        return PairStatus(pair.name, live.active, dark, live.consistent, live.problem,
                          live.routes, tuple(namespaces), state, state_error)

    # -- recording -----------------------------------------------------------------------------

    async def announce(self, pair: PairConfig, *, reason: str, message: str, action: str,
                       warning: bool = False) -> int:
        """An Event on each of the pair's routes for something a person did that moves no
        route (an approval): `kubectl describe ingressroute` shows who. Returns how many
        were written (0 in dry-run); ClusterError when the routes cannot be read."""
        if self.dry_run:
            return 0
        live = await self._live(pair)
        return await self.events.emit(live.routes, reason=reason, message=message,
                                      action=action, warning=warning)


    async def _write(self, pair: PairConfig, live: ActiveState | None,
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

    async def _refuse(self, action: str, pair: PairConfig, live: ActiveState,
                      reasons: list[str], *, reason: str, trigger: str, **details: Any
                      ) -> OperationResult:
        """Report a refusal: a Warning Event and an audit record (not in dry-run)."""
        log.warning("action refused", pair=pair.name, action=action, reasons=reasons)
        if not self.dry_run_for(pair):
            now, history = self.clock(), self.config.state.history

            def mutate(state: PairState) -> None:
                state.transition("refused", at=now, history=history, action=action,
                                 trigger=trigger, reasons=reasons[:5])
                state.count("refused")

            await self._write(pair, live if live.consistent else None, mutate)
            await self.events.emit(live.routes, reason=reason, message="; ".join(reasons),
                                   action=action, warning=True)
        return _result(action, active=live.active, refused=True, reasons=reasons,
                       dry_run=self.dry_run_for(pair), **details)

    async def recover(self, pair: PairConfig) -> OperationResult | None:
        """Bring a pair back to a consistent picture after a restart: finish or undo a switch
        a dead process left between two routes (see `_resume`), else bring the stored state
        in line with the routes (a switch that completed before its process died is recorded
        as done). Returns the resume's result when routes were moved or it was refused."""
        with structlog.contextvars.bound_contextvars(pair=pair.name, action="recover"):
            live = await self._live(pair)
            if not live.consistent or live.active is None:
                return await self._resume(pair, live)
            if not self.dry_run_for(pair):
                await self._write(pair, live, _unchanged)
            return None

    async def _nothing(self, action: str, pair: PairConfig, live: ActiveState,
                       reason: str) -> OperationResult:
        """A no-op answer; the stored state is first brought in line with the routes (a
        switch whose process died after patching is recorded as done)."""
        if not self.dry_run_for(pair):
            await self._write(pair, live, _unchanged)
        return _result(action, active=live.active, reasons=[reason])

    def resume_after(self, pair: PairConfig) -> float:
        """Seconds after which a started switch is presumed abandoned when its process
        cannot be checked (another host): longer than a live switch can take with every
        call timing out and retried."""
        per_call = (kubeclient.ATTEMPTS * self.config.kubernetes.request_timeout
                    + (kubeclient.ATTEMPTS - 1) * kubeclient.MAX_RETRY_AFTER)
        return per_call * (2 * len(pair.routes) + 6)

    async def _resume(self, pair: PairConfig, live: ActiveState) -> OperationResult | None:
        """Finish, or undo, a switch a dead gatekeeper left between two routes.

        Applies when the stored state shows a flip or rollback started and not finished,
        every route points at its source or its target, and the process that started it
        is gone (same host) or the switch is older than `resume_after`. A target that can
        still take traffic gets the remaining routes; otherwise the switched ones go back.
        None when no such switch is found (the routes disagree for another reason).
        """
        if self.dry_run_for(pair):
            return None
        try:
            stored = await self.store.load(pair)
        except CLUSTER_ERRORS:
            return None
        action = dict(stored.last_action or {})
        kind, source, target = action.get("kind"), action.get("from"), action.get("to")
        if kind not in SWITCH_KINDS or action.get("status") not in ("started", "interrupted") \
                or not source or not target or source == target:
            return None
        sides = (frozenset({source}), frozenset({target}))
        if not live.snapshots or any(s.view.namespaces not in sides for s in live.snapshots):
            return None
        age = self.clock() - float(action.get("at") or 0.0)
        bound = self.resume_after(pair)
        holder = action.get("holder")
        leased = self.lease is not None and isinstance(holder, dict) and bool(holder.get("lease"))
        if not leased and not holder_gone(holder) and age < bound:
            return _result(str(kind), active=None, refused=True, reasons=[
                f"routes inconsistent: a {kind} {source} -> {target} started {age:.0f}s ago "
                f"is unfinished ({live.problem}); its process may still be running: it is "
                f"finished or undone by the first run after it is {bound:.0f}s old"])
        readiness = await self._readiness(pair, target)
        goal, away = (target, source) if readiness.ready else (source, target)
        notes = {switches.ANNOTATION: switches.SwitchRecord(
            str(kind), source, target, float(action.get("at") or self.clock()),
            str(action.get("id") or ""), str(action.get("trigger") or "")).to_annotation()
        } if goal == target else None
        moved, failures = [], []
        for snapshot in live.snapshots:
            if snapshot.view.namespaces != frozenset({away}):
                continue
            try:
                await reading.router_for(self.api, snapshot.ref).switch(
                    snapshot, source=away, target=goal, annotations=notes)
                moved.append(snapshot.view.ref)
            except switching.SWITCH_ERRORS as exc:
                failures.append(str(exc))
        after = await self._live(pair)
        finished = after.consistent and after.active == goal
        now, history = self.clock(), self.config.state.history
        verb = "finished" if goal == target else "undone"
        note = f"{verb} after its process died ({', '.join(moved) or 'no route moved'})"

        def mutate(state: PairState) -> None:
            current = state.last_action or {}
            if finished and current.get("id") == action.get("id"):
                if goal == target:
                    state.completed(current, at=now, note=note)
                else:
                    state.finish(str(action.get("id")), "reverted", at=now)
            state.transition("resumed", at=now, history=history, source=away, target=goal,
                             action=action.get("id"), note=note,
                             failed=failures[:3] or None)
            if after.consistent:
                reconcile_state(state, pair, after, at=now, history=history,
                                running=str(action.get("id")))

        warning = await self._write(pair, None, mutate)
        message = f"{kind} {source} -> {target} {note}"
        await self.events.emit(after.routes, reason=events.FLIPPED if kind == "flip"
                               else events.ROLLED_BACK, message=message, action=str(kind),
                               warning=goal != target or not finished)
        log.warning("unfinished switch resumed", pair=pair.name, kind=kind, source=source,
                    target=target, goal=goal, moved=moved, failures=failures)
        reasons = [message, *failures, *([warning] if warning else [])]
        if not finished:
            reasons.append(f"routes still inconsistent: {after.problem}")
        if not readiness.ready:
            reasons.extend(readiness.reasons[:3])
        return _result(str(kind), active=after.active, changed=bool(moved),
                       refused=goal != target or not finished, reasons=reasons,
                       resumed=action.get("id"))

    # -- switching -----------------------------------------------------------------------------

    @_in_log_context("flip")
    async def flip(self, pair: PairConfig, *, to: str | None = None, force: bool = False,
                   trigger: str = "manual", reason: str = "") -> OperationResult:
        """Send traffic to `to` (default: the dark namespace). Already there: no-op.

        ValueError when `to` is not a namespace of the pair.
        """
        if to is not None:
            pair.other(to)
        live = await self._live(pair)
        if not live.consistent or live.active is None:
            resumed = await self._resume(pair, live)
            if resumed is not None:
                return resumed
            if to is not None and _split(pair, live):
                # Each route at one namespace of the pair: a person names where it all goes.
                return await self._switch("flip", pair, live, to, source=pair.other(to),
                                          force=force, trigger=trigger, reason=reason)
            return await self._refuse("flip", pair, live, inconsistent(pair, live),
                                      reason=events.FLIP_REFUSED, trigger=trigger)
        target = to or pair.other(live.active)
        if target == live.active:
            return await self._nothing("flip", pair, live,
                                       f"nothing to do: {target} is already active")
        if to is None:
            repeat = await self._repeated_flip(pair, live, target)
            if repeat is not None:
                return await self._nothing("flip", pair, live, repeat)
        return await self._switch("flip", pair, live, target, force=force, trigger=trigger,
                                  reason=reason)

    async def _repeated_flip(self, pair: PairConfig, live: ActiveState, dark: str) -> str | None:
        """Why a flip "to the dark one" would undo the last switch instead of releasing.

        Run twice, a plain flip would flip back. The dark namespace still running exactly
        the images it ran when traffic left it means there is no new release there: the
        second run is a no-op (and a rolled-back release is not flipped to again).
        """
        # Reconciled: a flip whose process died after patching still counts as done.
        state, error = await self._state(pair, live)
        last = state.last_action or {}
        switch = live.last_switch
        if switch is not None and switch.source == dark and last.get("id") != switch.id:
            # The routes say gatekeeper just moved the traffic away from the dark namespace,
            # and the stored state does not know that switch (its write failed, or it was
            # lost): whether a new release runs there now cannot be told. Flipping would
            # most likely send users back to the release they just left.
            return (f"nothing to do: the routes record that {switch.kind} {switch.id} sent "
                    f"traffic from {dark} to {live.active}, and the stored state does not "
                    f"know it, so a new release in {dark} cannot be told from the old one; "
                    f"use --to {dark} to send traffic there anyway")
        recorded = state.images.get(dark)
        if error or not recorded or last.get("kind") not in ("flip", "rollback") \
                or last.get("to") != live.active or last.get("status") != "done":
            return None
        current = (await self._readiness(pair, dark)).images()
        if current != recorded:
            return None
        return (f"nothing to do: {live.active} took the traffic ({last.get('kind')} "
                f"{last.get('id')}) and {dark} still runs the images it ran then; "
                f"use --to {dark} (or rollback) to send traffic back to them")

    @_in_log_context("rollback")
    async def rollback(self, pair: PairConfig, *, force: bool = False, trigger: str = "manual",
                       reason: str = "", scale_up_first: bool = False,
                       to: str | None = None) -> OperationResult:
        """Flip back to where traffic came from (once: a second call is a no-op): the routes'
        record of the last flip, else the previous active recorded in state, else `to` (the
        service's lifecycle decided it, e.g. from a state rebuilt from the routes).

        A previous namespace that cannot take traffic is refused, unless `scale_up_first`
        (scale it up, wait until Ready, then flip) or `force`.
        """
        if to is not None:
            pair.other(to)
        live = await self._live(pair)
        if not live.consistent or live.active is None:
            resumed = await self._resume(pair, live)
            if resumed is not None:
                return resumed
            return await self._refuse("rollback", pair, live, inconsistent(pair, live),
                                      reason=events.ROLLBACK_REFUSED, trigger=trigger)
        state, state_error = await self._state(pair, live)
        last = state.last_action or {}
        record = live.last_switch  # written by the switch itself: needs no state write
        if record is not None and record.rollback_target is not None:
            target = record.rollback_target
        elif record is not None and record.kind == "rollback":
            return await self._nothing("rollback", pair, live,
                                       f"nothing to do: already rolled back to {live.active}")
        elif state.previous and state.previous != live.active:
            target = state.previous
        elif state.phase == "rolled_back":
            # The record followed the routes (`reconcile_state`): traffic is back where a
            # rollback would send it, e.g. a person rolled back with kubectl.
            return await self._nothing(
                "rollback", pair, live, f"nothing to do: already rolled back to {live.active} "
                f"({state.release.reason if state.release else 'recorded'})")
        elif to is not None and to != live.active:
            target = to
        elif last.get("kind") == "rollback" and last.get("to") == live.active \
                and last.get("status") == "done":
            return await self._nothing("rollback", pair, live,
                                       f"nothing to do: already rolled back to {live.active}")
        else:
            why = state_error or f"no flip to roll back is recorded (active: {live.active})"
            return await self._refuse(
                "rollback", pair, live,
                [f"{why}; use `gatekeeper flip --to NAMESPACE` to choose the namespace"],
                reason=events.ROLLBACK_REFUSED, trigger=trigger)
        details: dict[str, Any] = {}
        if scale_up_first and not force:
            readiness = await self._readiness(pair, target)
            if not readiness.ready:
                prepared = await self._prepare_rollback(pair, target)
                details["scale_up"] = prepared.to_dict()
                if prepared.refused:
                    return await self._refuse(
                        "rollback", pair, live,
                        [f"{target} could not be made ready: {'; '.join(prepared.reasons)}"],
                        reason=events.ROLLBACK_REFUSED, trigger=trigger, **details)
                if self.dry_run_for(pair):
                    return _result("rollback", active=live.active, dry_run=True,
                                   reasons=[f"dry-run: would scale up {target}, wait until "
                                            f"Ready, then roll back {live.active} -> {target}"],
                                   **details)
                live = await self._live(pair)
                if not live.consistent or live.active == target:
                    return _result("rollback", active=live.active, refused=True,
                                   reasons=["routes changed while scaling up: "
                                            f"{live.problem or live.active}"], **details)
        return await self._switch("rollback", pair, live, target, force=force, trigger=trigger,
                                  reason=reason, hint="" if scale_up_first else
                                  " (rollback --scale-up-first scales it up and waits)",
                                  **details)

    async def _prepare_rollback(self, pair: PairConfig, target: str) -> OperationResult:
        """Scale the rollback target up and wait until Ready (policy.ready_timeout)."""
        scaled = await self.scale_up(pair, target)
        if scaled.refused or self.dry_run_for(pair):
            return scaled
        timeout = self.config.policy_for(pair).ready_timeout
        return await self.wait_ready(pair, target, timeout=timeout)

    async def _switch(self, kind: str, pair: PairConfig, live: ActiveState, target: str, *,
                      force: bool, trigger: str, reason: str, hint: str = "",
                      source: str | None = None, **extra: Any) -> OperationResult:
        """Preconditions, then all routes or none, then state and Events. `source` is where
        traffic comes from: `live.active`, or for split routes the other namespace."""
        source = source or live.active
        if source is None:
            raise ValueError("switching needs consistent routes or a source")
        refused_reason = events.FLIP_REFUSED if kind == "flip" else events.ROLLBACK_REFUSED
        bound = log.bind(pair=pair.name, namespace=target, action=kind)
        blocked = switching.refusals(self.api, live)
        if blocked:
            return await self._refuse(kind, pair, live, blocked, reason=refused_reason,
                                      trigger=trigger, **extra)
        if not force:
            capacity = await self._capacity_before_traffic(pair, target)
            if capacity is not None:
                extra.setdefault("scale_up", capacity.to_dict())
                if capacity.refused:
                    reasons = [f"{target} is below its production size and could not be "
                               "brought to it before taking traffic", *capacity.reasons]
                    return await self._refuse(kind, pair, live, reasons, reason=refused_reason,
                                              trigger=trigger, **extra)
        readiness = await self._readiness(pair, target)
        if not readiness.ready and not force:
            reasons = [f"{target} cannot take traffic{hint}", *readiness.reasons]
            return await self._refuse(kind, pair, live, reasons, reason=refused_reason,
                                      trigger=trigger, readiness=readiness.to_dict(), **extra)
        plan = {"from": source, "to": target, "routes": [r.ref for r in live.routes],
                "forced": force and not readiness.ready}
        if self.dry_run_for(pair):
            return _result(kind, active=source, dry_run=True, would=plan,
                           readiness=readiness.to_dict(),
                           reasons=[f"dry-run: would {kind} {source} -> {target}"], **extra)
        serving = await self._readiness(pair, source)
        # What served until now runs at production counts: remember them for scale-ups.
        production = {d.name: d.replicas for d in serving.deployments if d.replicas >= 1}
        now = self.clock()
        history = self.config.state.history
        action: dict[str, str] = {"id": uuid.uuid4().hex[:12]}
        record = switches.SwitchRecord(kind, source, target, now, action["id"], trigger)
        # Recorded before acting, so a restart can finish the bookkeeping of a switch whose
        # process died after patching, and tell whether that process is gone.
        recorded = {"images": {target: readiness.images(), source: serving.images()},
                    "replicas": production, "holder": process_identity(self.lease)}

        def begin(state: PairState) -> None:
            state.begin(kind, at=now, source=source, target=target, trigger=trigger,
                        reason=reason, action_id=action["id"], **recorded)

        warnings = [w for w in [await self._write(pair, live, begin)] if w]
        async with _cluster_errors(f"switching the routes of pair {pair.name}"):
            outcome = await switching.switch_all(self.api, pair, live, target=target,
                                                 source=source, record=record)
        after = outcome.verified.active if outcome.verified else None
        images = readiness.images()
        done = self.clock()

        def finish(state: PairState) -> None:
            if outcome.ok:
                state.switched(kind, source=source, target=target, at=done, trigger=trigger,
                               reason=reason)
                state.images[target] = images
                state.images[source] = serving.images()
                state.replicas.update(production)
                status = "done"
            else:
                status = "conflict" if outcome.conflict else (
                    "failed" if not outcome.revert_failures else "inconsistent")
                state.count("conflicts" if outcome.conflict else "failures")
            if "id" in action:
                state.finish(action["id"], status, at=done)
            state.transition(kind if outcome.ok else f"{kind}_failed", at=done, history=history,
                             source=source, target=target, trigger=trigger,
                             reason=reason or None, forced=force or None,
                             error=outcome.failed, problems=list(outcome.problems) or None)

        # On success `finish` records the switch itself; reconciling first would log our own
        # switch as an outside change. After a failure the re-read routes are the truth.
        verified = outcome.verified if outcome.verified and outcome.verified.consistent \
            and not outcome.ok else None
        warning = await self._write(pair, verified, finish, running=action.get("id"))
        if warning:
            warnings.append(warning)
        details = {"action_id": action.get("id"), "outcome": outcome.to_dict(), **plan,
                   "readiness": readiness.to_dict(), **extra}
        if outcome.ok:
            message = f"{kind} {source} -> {target} (trigger: {trigger}" + \
                (f", reason: {reason}" if reason else "") + (", forced" if plan["forced"] else "") \
                + ")"
            await self.events.emit(live.routes, reason=events.FLIPPED if kind == "flip"
                                   else events.ROLLED_BACK, message=message, action=kind)
            bound.info("switched", source=source, target=target)
            reasons = [f"{kind}: {source} -> {target}",
                       *([outcome.unverified] if outcome.unverified else []), *warnings]
            capacity = await self._restore_capacity(pair, target)
            if capacity is not None:
                details["scale_up"] = capacity.to_dict()
                reasons.extend(capacity.reasons)
            return _result(kind, active=target, changed=True, reasons=reasons, **details)
        problems = [outcome.failed or "", *outcome.problems]
        if outcome.reverted:
            problems.append(f"reverted: {', '.join(outcome.reverted)}")
        if outcome.revert_failures:
            problems.append("REVERT FAILED, routes inconsistent, fix by hand: "
                            + "; ".join(outcome.revert_failures))
        message = f"{kind} {source} -> {target} failed: " + "; ".join(p for p in problems if p)
        await self.events.emit(live.routes, reason=events.FLIP_FAILED if kind == "flip"
                               else events.ROLLBACK_FAILED, message=message, action=kind,
                               warning=True)
        bound.error("switch failed", problems=problems)
        return _result(kind, active=after, changed=outcome.changed, refused=True,
                       reasons=[p for p in problems if p] + warnings,
                       conflict=outcome.conflict, **details)

    async def _capacity_before_traffic(self, pair: PairConfig, target: str
                                       ) -> OperationResult | None:
        """Scale a warm target (every Deployment at >= 1) up to its production size and wait
        until Ready (policy.ready_timeout) before it takes traffic; None when already there.

        A target with a Deployment at 0 is left to the readiness refusal (and to
        `rollback --scale-up-first` / `rollback_when_scaled_down`): starting a cold namespace
        is a decision of its own, not a side effect of a switch.
        """
        current, serving = await asyncio.gather(self._readiness(pair, target),
                                                self._readiness(pair, pair.other(target)))
        if not current.deployments or any(d.replicas < 1 for d in current.deployments):
            return None
        plans = environments.production_replicas(pair, current.deployments,
                                                 active=serving.deployments)
        if all(p.current >= p.target for p in plans):
            return None  # at size: no further reads (each is one more call that can fail)
        scaled = await self.scale_up(pair, target)
        if scaled.refused or scaled.details.get("dry_run"):
            return scaled
        if scaled.details.get("failed"):
            return _result("scale_up", active=scaled.active, refused=True, namespace=target,
                           reasons=scaled.reasons)
        if not scaled.changed:
            return None
        timeout = self.config.policy_for(pair).ready_timeout
        waited = await self.wait_ready(pair, target, timeout=timeout)
        if waited.refused:
            return _result("scale_up", active=waited.active, refused=True, namespace=target,
                           reasons=[*scaled.reasons, *waited.reasons])
        return _result("scale_up", active=waited.active, changed=True, namespace=target,
                       reasons=[*scaled.reasons, *waited.reasons],
                       scaled=scaled.details.get("scaled"))

    async def _restore_capacity(self, pair: PairConfig, namespace: str
                                ) -> OperationResult | None:
        """After a switch, raise the new active to production counts (e.g. after a rollback
        to a namespace kept at 1 replica). Best effort: the switch already happened."""
        try:
            result = await self.scale_up(pair, namespace)
        except ClusterError as exc:
            log.error("cannot restore production replicas", pair=pair.name, namespace=namespace,
                      error=str(exc))
            return _result("scale_up", active=namespace, refused=True,
                           reasons=[f"could not scale {namespace} to production replicas: {exc}"])
        return result if result.changed or result.details.get("failed") else None

    # -- environments --------------------------------------------------------------------------

    def _default_namespace(self, pair: PairConfig, live: ActiveState,
                           namespace: str | None) -> tuple[str | None, str | None]:
        """(namespace, None) or (None, why not): the dark one unless given."""
        if namespace is not None:
            pair.other(namespace)
            return namespace, None
        if not live.consistent or live.active is None:
            return None, (f"cannot tell the dark namespace, routes inconsistent: {live.problem}; "
                          "name the namespace explicitly")
        return pair.other(live.active), None

    @_in_log_context("scale_up")
    async def scale_up(self, pair: PairConfig, namespace: str | None = None) -> OperationResult:
        """Scale a namespace (default: the dark one) up to production replica counts."""
        live = await self._live(pair)
        target, why = self._default_namespace(pair, live, namespace)
        if target is None:
            return await self._refuse("scale_up", pair, live, [str(why)],
                                      reason=events.SCALE_REFUSED, trigger="manual")
        current = await self._readiness(pair, target)
        mirror = live.active if live.active and live.active != target else None
        active = await self._readiness(pair, mirror) if mirror else None
        state, _ = await self._state(pair, None)
        plans = environments.production_replicas(
            pair, current.deployments, active=active.deployments if active else (),
            active_namespace=mirror, remembered=state.replicas)
        if not plans:
            return await self._refuse("scale_up", pair, live, [f"no Deployments in {target}"],
                                      reason=events.SCALE_REFUSED, trigger="manual")
        todo = [p for p in plans if p.current < p.target]
        planned = [{"deployment": p.name, "from": p.current, "to": p.target, "source": p.source}
                   for p in todo]
        counts = {p.name: p.target for p in plans}
        if not todo:
            return _result("scale_up", active=live.active, namespace=target, replicas=counts,
                           reasons=[f"nothing to do: every Deployment in {target} is at "
                                    "production replicas"])
        if self.dry_run_for(pair):
            return _result("scale_up", active=live.active, dry_run=True, namespace=target,
                           would=planned, reasons=[f"dry-run: would scale up {target}: " +
                                                   ", ".join(f"{p.name} {p.current}->{p.target}"
                                                             for p in todo)])
        done, failed = await self._scale(target, [(p.name, p.target) for p in todo])
        now, history = self.clock(), self.config.state.history

        def mutate(state: PairState) -> None:
            for name, replicas in counts.items():
                state.replicas.setdefault(name, replicas)
            state.timestamps["scaled_up"] = now
            state.images[target] = current.images()
            state.transition("scale_up", at=now, history=history, namespace=target,
                             deployments={n: r for n, r in done}, failed=failed or None)

        warning = await self._write(pair, live if live.consistent else None, mutate)
        text = ", ".join(f"{n} -> {r}" for n, r in done)
        if done:
            await self.events.emit(live.routes, reason=events.SCALED_UP,
                                   message=f"scaled up {target}: {text}", action="scale_up")
        reasons = [f"scaled up {target}: {text}" if done else f"nothing scaled in {target}",
                   *(f"failed: {f}" for f in failed), *([warning] if warning else [])]
        return _result("scale_up", active=live.active, changed=bool(done), namespace=target,
                       scaled=planned, failed=failed, reasons=reasons)

    async def _scale(self, namespace: str, changes: list[tuple[str, int]]
                     ) -> tuple[list[tuple[str, int]], list[str]]:
        """Scale each Deployment; one failure does not stop the others."""
        done, failed = [], []
        for name, replicas in changes:
            try:
                await environments.scale(self.api, namespace, name, replicas)
                done.append((name, replicas))
            except CLUSTER_ERRORS as exc:
                detail = f"HTTP {exc.status}" if isinstance(exc, ApiException) else repr(exc)
                log.error("scale failed", namespace=namespace, deployment=name, error=detail)
                failed.append(f"{name}: {detail}")
        return done, failed

    @_in_log_context("wait_ready")
    async def wait_ready(self, pair: PairConfig, namespace: str | None = None, *,
                         timeout: float,  # noqa: ASYNC109 - how long pods may take, part of the API
                         progress: Progress | None = None) -> OperationResult:
        """Wait until a namespace (default: the dark one) can take traffic, or time out."""
        live = await self._live(pair)
        target, why = self._default_namespace(pair, live, namespace)
        if target is None:
            return _result("wait_ready", active=live.active, refused=True, reasons=[str(why)])
        async with _cluster_errors(f"waiting for {target}"):
            readiness = await environments.wait_ready(
                self.api, target, timeout=timeout, pair=pair, progress=progress)
        if readiness.ready:
            return _result("wait_ready", active=live.active, namespace=target,
                           readiness=readiness.to_dict(), reasons=[readiness.summary()])
        return _result("wait_ready", active=live.active, refused=True, namespace=target,
                       readiness=readiness.to_dict(),
                       reasons=[f"{target} not ready after {timeout:g}s", *readiness.reasons])

    @_in_log_context("scale_down")
    async def scale_down(self, pair: PairConfig, namespace: str | None = None, *, keep: int = 0,
                         force: bool = False) -> OperationResult:
        """Scale a namespace (default: the dark, old one) down to `keep` replicas.

        Never the active namespace. Refused while the active one is not fully Ready (the
        old namespace is the rollback path), unless `force`.
        """
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        live = await self._live(pair)
        if not live.consistent or live.active is None:
            return await self._refuse(
                "scale_down", pair, live,
                [f"routes inconsistent, cannot tell which namespace takes traffic: {live.problem}"],
                reason=events.SCALE_REFUSED, trigger="manual")
        target = namespace or pair.other(live.active)
        pair.other(target)
        if target == live.active:
            return await self._refuse(
                "scale_down", pair, live,
                [f"{target} is the active namespace (it takes the traffic): refusing to scale "
                 "it down"], reason=events.SCALE_REFUSED, trigger="manual")
        current = await self._readiness(pair, target)
        todo = [d for d in current.deployments if d.replicas > keep]
        if not todo:
            return _result("scale_down", active=live.active, namespace=target,
                           reasons=[f"nothing to do: every Deployment in {target} has "
                                    f"<= {keep} replicas"])
        active = await self._readiness(pair, live.active)
        if not active.ready and not force:
            return await self._refuse(
                "scale_down", pair, live,
                [f"the active namespace {live.active} is not fully Ready; {target} is the "
                 "rollback path (--force to scale it down anyway)", *active.reasons],
                reason=events.SCALE_REFUSED, trigger="manual")
        planned = [{"deployment": d.name, "from": d.replicas, "to": keep} for d in todo]
        if self.dry_run_for(pair):
            return _result("scale_down", active=live.active, dry_run=True, namespace=target,
                           would=planned, reasons=[f"dry-run: would scale down {target} to "
                                                   f"{keep}: " + ", ".join(d.name for d in todo)])
        done, failed = await self._scale(target, [(d.name, keep) for d in todo])
        now, history = self.clock(), self.config.state.history
        seen = {d.name: d.replicas for d in todo}

        def mutate(state: PairState) -> None:
            for name, replicas in seen.items():
                # Only fills gaps: flips record the serving counts, and an earlier `keep`
                # must not pass for a production count.
                state.replicas.setdefault(name, replicas)
            state.timestamps["scaled_down"] = now
            state.transition("scale_down", at=now, history=history, namespace=target,
                             keep=keep, deployments=[n for n, _ in done], failed=failed or None,
                             forced=(force and not active.ready) or None)

        warning = await self._write(pair, live, mutate)
        if done:
            await self.events.emit(
                live.routes, reason=events.SCALED_DOWN, action="scale_down",
                message=f"scaled down {target} to {keep}: " + ", ".join(n for n, _ in done))
        reasons = [f"scaled down {target} to {keep}: " + ", ".join(n for n, _ in done)
                   if done else f"nothing scaled in {target}",
                   *(f"failed: {f}" for f in failed), *([warning] if warning else [])]
        return _result("scale_down", active=live.active, changed=bool(done), namespace=target,
                       keep=keep, scaled=planned, failed=failed, reasons=reasons)
