"""Crash recovery: finish, or undo, a switch a dead process left between two routes.

A switch is recorded as `started` (with the process that runs it) before any route moves,
so after a crash the routes may point partly at its source and partly at its target. The
recovery moves the rest with the same all-or-none switch every flip uses
(`routers.switching.switch_all`: guarded patches, a failure reverts what this run moved,
the routes re-read to verify): it ends with every route at one namespace, or with the
routes as it found them and the switch still `started`, so the next run tries again.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import structlog

from gatekeeper import events, kubeclient, switches
from gatekeeper.actions.context import Actor, unchanged
from gatekeeper.actions.result import (
    CLUSTER_ERRORS,
    ActionResult,
    SwitchKind,
    cluster_errors,
    result,
)
from gatekeeper.config import PairConfig
from gatekeeper.routers import switching
from gatekeeper.routers.base import ActiveState
from gatekeeper.state import SWITCH_KINDS, PairState, reconcile_state

__all__ = ["holder_gone", "process_identity", "recover", "resume", "resume_after"]

log = structlog.get_logger()


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


def resume_after(actor: Actor, pair: PairConfig) -> float:
    """Seconds after which a started switch is presumed abandoned when its process cannot
    be checked (another host): longer than a live switch can take with every call timing
    out and retried."""
    per_call = (kubeclient.ATTEMPTS * actor.config.kubernetes.request_timeout
                + (kubeclient.ATTEMPTS - 1) * kubeclient.MAX_RETRY_AFTER)
    return per_call * (2 * len(pair.routes) + 6)


async def recover(actor: Actor, pair: PairConfig) -> ActionResult | None:
    """Bring a pair back to a consistent picture after a restart: finish or undo a switch
    a dead process left between two routes (`resume`), else bring the stored state in line
    with the routes (a switch that completed before its process died is recorded as done).
    Returns the resume's result when routes were moved or it was refused."""
    with structlog.contextvars.bound_contextvars(pair=pair.name, action="recover"):
        live = await actor.live(pair)
        if not live.consistent or live.active is None:
            return await resume(actor, pair, live)
        if not actor.dry_run_for(pair):
            await actor.write(pair, live, unchanged)
        return None


async def resume(actor: Actor, pair: PairConfig, live: ActiveState) -> ActionResult | None:
    """Finish, or undo, a switch a dead gatekeeper left between two routes.

    Applies when the stored state shows a flip or rollback started and not finished,
    every route points at its source or its target, and the process that started it
    is gone (same host) or the switch is older than `resume_after`. A target that can
    still take traffic gets the remaining routes; otherwise the switched ones go back.
    Either way all of them move or none (`switching.switch_all`). None when no such
    switch is found (the routes disagree for another reason).
    """
    if actor.dry_run_for(pair):
        return None
    try:
        stored = await actor.store.load(pair)
    except CLUSTER_ERRORS:
        return None
    action = dict(stored.last_action or {})
    kind, source, target = action.get("kind"), action.get("from"), action.get("to")
    if kind not in SWITCH_KINDS or action.get("status") not in ("started", "interrupted") \
            or not isinstance(source, str) or not isinstance(target, str) or not source \
            or not target or source == target:
        return None
    switched: SwitchKind = "flip" if kind == "flip" else "rollback"
    sides = (frozenset({source}), frozenset({target}))
    if not live.snapshots or any(s.view.namespaces not in sides for s in live.snapshots):
        return None
    age = actor.clock() - float(action.get("at") or 0.0)
    bound = resume_after(actor, pair)
    holder = action.get("holder")
    leased = actor.lease is not None and isinstance(holder, dict) and bool(holder.get("lease"))
    if not leased and not holder_gone(holder) and age < bound:
        return result(switched, active=None, refused=True, reasons=[
            f"routes inconsistent: a {kind} {source} -> {target} started {age:.0f}s ago "
            f"is unfinished ({live.problem}); its process may still be running: it is "
            f"finished or undone by the first run after it is {bound:.0f}s old"])
    readiness = await actor.readiness(pair, target)
    goal, away = (target, source) if readiness.ready else (source, target)
    record = switches.SwitchRecord(
        switched, source, target, float(action.get("at") or actor.clock()),
        str(action.get("id") or ""), str(action.get("trigger") or "")) \
        if goal == target else None
    async with cluster_errors(f"resuming the switch of pair {pair.name}"):
        outcome = await switching.switch_all(actor.api, pair, live, target=goal, source=away,
                                             record=record)
        after = outcome.verified if outcome.verified is not None else await actor.live(pair)
    moved = list(outcome.switched) if outcome.ok else []
    failures = [p for p in (outcome.failed, *outcome.problems) if p]
    if outcome.reverted:
        failures.append(f"reverted: {', '.join(outcome.reverted)}")
    if outcome.revert_failures:
        failures.append("REVERT FAILED, fix by hand: " + "; ".join(outcome.revert_failures))
    finished = after.consistent and after.active == goal
    now, history = actor.clock(), actor.config.state.history
    verb = "finished" if goal == target else "undone"
    note = f"{verb} after its process died ({', '.join(moved) or 'no route moved'})"
    if not finished:
        note = (f"not {verb}: the routes are left as they were found, the switch is retried "
                "on the next run")

    def mutate(state: PairState) -> None:
        current = state.last_action or {}
        if finished and current.get("id") == action.get("id"):
            if goal == target:
                state.completed(current, at=now, note=note)
            else:
                state.finish(str(action.get("id")), "reverted", at=now)
        state.transition("resumed", at=now, history=history, source=away, target=goal,
                         action=action.get("id"), note=note, failed=failures[:3] or None)
        if after.consistent:
            reconcile_state(state, pair, after, at=now, history=history,
                            running=str(action.get("id")))

    warning = await actor.write(pair, None, mutate)
    message = f"{kind} {source} -> {target} {note}"
    await actor.events.emit(after.routes, reason=events.FLIPPED if kind == "flip"
                            else events.ROLLED_BACK, message=message, action=switched,
                            warning=goal != target or not finished, pair=pair)
    log.warning("unfinished switch resumed", pair=pair.name, kind=kind, source=source,
                target=target, goal=goal, moved=moved, failures=failures, finished=finished)
    reasons = [message, *failures, *([warning] if warning else [])]
    if not finished:
        reasons.append(f"routes still inconsistent: {after.problem}")
    if not readiness.ready:
        reasons.extend(readiness.reasons[:3])
    return result(switched, active=after.active, changed=outcome.changed,
                  refused=goal != target or not finished, reasons=reasons,
                  resumed=action.get("id"), outcome=outcome.to_dict())
