"""The all-or-none switch: flip to the dark namespace, roll back to the previous one.

Each reads the live routes first (they are the truth), checks its preconditions (routes
that may be patched, capacity before traffic, a Ready target), does nothing when there is
nothing to do, and otherwise records the switch as started, moves every route or none
(`routers.switching.switch_all`), records the outcome and an Event on the routes. Routes a
dead process left split are handed to `recovery` first.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from gatekeeper import events, switches
from gatekeeper.actions import capacity, recovery
from gatekeeper.actions.context import Actor, in_log_context
from gatekeeper.actions.result import ActionResult, SwitchKind, cluster_errors, result
from gatekeeper.config import PairConfig
from gatekeeper.routers import switching
from gatekeeper.routers.base import ActiveState
from gatekeeper.state import PairState

__all__ = ["flip", "inconsistent", "rollback", "split"]

log = structlog.get_logger()


def split(pair: PairConfig, live: ActiveState) -> dict[str, list[str]]:
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
    groups = split(pair, live)
    if not groups:
        return [f"routes inconsistent: {live.problem}; fix the routes named by hand "
                "(kubectl edit), or point them at one namespace of the pair, then retry"]
    where = "; ".join(f"{ns}: {', '.join(refs)}" for ns, refs in sorted(groups.items()))
    a, b = sorted(groups)
    return [f"routes are split between the pair's namespaces ({where}); finish the switch "
            f"by naming the namespace that takes all traffic: `gatekeeper flip --to {b}` "
            f"or `--to {a}` (API: POST .../flip with {{\"to\": \"{b}\"}})"]


@in_log_context("flip")
async def flip(actor: Actor, pair: PairConfig, *, to: str | None = None, force: bool = False,
               trigger: str = "manual", reason: str = "") -> ActionResult:
    """Send traffic to `to` (default: the dark namespace). Already there: no-op.

    ValueError when `to` is not a namespace of the pair.
    """
    if to is not None:
        pair.other(to)
    live = await actor.live(pair)
    if not live.consistent or live.active is None:
        return await _disagreeing("flip", actor, pair, live, trigger=trigger, to=to,
                                  force=force, reason=reason)
    target = to or pair.other(live.active)
    if target == live.active:
        return await actor.nothing("flip", pair, live,
                                   f"nothing to do: {target} is already active")
    if to is None:
        repeat = await _repeated_flip(actor, pair, live, target)
        if repeat is not None:
            return await actor.nothing("flip", pair, live, repeat)
    return await _switch(actor, "flip", pair, live, target, force=force, trigger=trigger,
                         reason=reason)


async def _disagreeing(kind: SwitchKind, actor: Actor, pair: PairConfig, live: ActiveState, *,
                       trigger: str, to: str | None = None, force: bool = False,
                       reason: str = "") -> ActionResult:
    """Routes that disagree: a switch a dead process left half done is finished or undone
    (`recovery.resume`); a split a flip names the target of is finished; else refused,
    naming the routes and how to finish."""
    resumed = await recovery.resume(actor, pair, live)
    if resumed is not None:
        return resumed
    if kind == "flip" and to is not None and split(pair, live):
        # Each route at one namespace of the pair: a person names where it all goes.
        return await _switch(actor, "flip", pair, live, to, source=pair.other(to),
                             force=force, trigger=trigger, reason=reason)
    return await actor.refuse(kind, pair, live, inconsistent(pair, live), trigger=trigger,
                              reason=events.FLIP_REFUSED if kind == "flip"
                              else events.ROLLBACK_REFUSED)


async def _repeated_flip(actor: Actor, pair: PairConfig, live: ActiveState, dark: str
                         ) -> str | None:
    """Why a flip "to the dark one" would undo the last switch instead of releasing.

    Run twice, a plain flip would flip back. The dark namespace still running exactly
    the images it ran when traffic left it means there is no new release there: the
    second run is a no-op (and a rolled-back release is not flipped to again).
    """
    # Reconciled: a flip whose process died after patching still counts as done.
    state, error = await actor.state(pair, live)
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
    current = (await actor.readiness(pair, dark)).images()
    if current != recorded:
        return None
    return (f"nothing to do: {live.active} took the traffic ({last.get('kind')} "
            f"{last.get('id')}) and {dark} still runs the images it ran then; "
            f"use --to {dark} (or rollback) to send traffic back to them")


@in_log_context("rollback")
async def rollback(actor: Actor, pair: PairConfig, *, force: bool = False,
                   trigger: str = "manual", reason: str = "", scale_up_first: bool = False,
                   to: str | None = None) -> ActionResult:
    """Flip back to where traffic came from (once: a second call is a no-op): the routes'
    record of the last flip, else the previous active recorded in state, else `to` (the
    service's lifecycle decided it, e.g. from a state rebuilt from the routes).

    A previous namespace that cannot take traffic is refused, unless `scale_up_first`
    (scale it up, wait until Ready, then flip) or `force`.
    """
    if to is not None:
        pair.other(to)
    live = await actor.live(pair)
    if not live.consistent or live.active is None:
        return await _disagreeing("rollback", actor, pair, live, trigger=trigger)
    state, state_error = await actor.state(pair, live)
    last = state.last_action or {}
    record = live.last_switch  # written by the switch itself: needs no state write
    if record is not None and record.rollback_target is not None:
        target = record.rollback_target
    elif record is not None and record.kind == "rollback":
        return await actor.nothing("rollback", pair, live,
                                   f"nothing to do: already rolled back to {live.active}")
    elif state.previous and state.previous != live.active:
        target = state.previous
    elif state.phase == "rolled_back":
        # The record followed the routes (`reconcile_state`): traffic is back where a
        # rollback would send it, e.g. a person rolled back with kubectl.
        return await actor.nothing(
            "rollback", pair, live, f"nothing to do: already rolled back to {live.active} "
            f"({state.release.reason if state.release else 'recorded'})")
    elif to is not None and to != live.active:
        target = to
    elif last.get("kind") == "rollback" and last.get("to") == live.active \
            and last.get("status") == "done":
        return await actor.nothing("rollback", pair, live,
                                   f"nothing to do: already rolled back to {live.active}")
    else:
        why = state_error or f"no flip to roll back is recorded (active: {live.active})"
        return await actor.refuse(
            "rollback", pair, live,
            [f"{why}; use `gatekeeper flip --to NAMESPACE` to choose the namespace"],
            reason=events.ROLLBACK_REFUSED, trigger=trigger)
    details: dict[str, Any] = {}
    if scale_up_first and not force:
        readiness = await actor.readiness(pair, target)
        if not readiness.ready:
            prepared = await capacity.prepare_rollback(actor, pair, target)
            details["scale_up"] = prepared.to_dict()
            if prepared.refused:
                return await actor.refuse(
                    "rollback", pair, live,
                    [f"{target} could not be made ready: {'; '.join(prepared.reasons)}"],
                    reason=events.ROLLBACK_REFUSED, trigger=trigger, **details)
            if actor.dry_run_for(pair):
                return result("rollback", active=live.active, dry_run=True,
                              reasons=[f"dry-run: would scale up {target}, wait until "
                                       f"Ready, then roll back {live.active} -> {target}"],
                              **details)
            live = await actor.live(pair)
            if not live.consistent or live.active == target:
                return result("rollback", active=live.active, refused=True,
                              reasons=["routes changed while scaling up: "
                                       f"{live.problem or live.active}"], **details)
    return await _switch(actor, "rollback", pair, live, target, force=force, trigger=trigger,
                         reason=reason, hint="" if scale_up_first else
                         " (rollback --scale-up-first scales it up and waits)", **details)


async def _switch(actor: Actor, kind: SwitchKind, pair: PairConfig, live: ActiveState,
                  target: str, *, force: bool, trigger: str, reason: str, hint: str = "",
                  source: str | None = None, **extra: Any) -> ActionResult:
    """Preconditions, then all routes or none, then state and Events. `source` is where
    traffic comes from: `live.active`, or for split routes the other namespace."""
    source = source or live.active
    if source is None:
        raise ValueError("switching needs consistent routes or a source")
    refused_reason = events.FLIP_REFUSED if kind == "flip" else events.ROLLBACK_REFUSED
    bound = log.bind(pair=pair.name, namespace=target, action=kind)
    blocked = switching.refusals(actor.api, live)
    if blocked:
        return await actor.refuse(kind, pair, live, blocked, reason=refused_reason,
                                  trigger=trigger, **extra)
    if not force:
        prepared = await capacity.before_traffic(actor, pair, target)
        if prepared is not None:
            extra.setdefault("scale_up", prepared.to_dict())
            if prepared.refused:
                reasons = [f"{target} is below its production size and could not be "
                           "brought to it before taking traffic", *prepared.reasons]
                return await actor.refuse(kind, pair, live, reasons, reason=refused_reason,
                                          trigger=trigger, **extra)
    readiness = await actor.readiness(pair, target)
    if not readiness.ready and not force:
        reasons = [f"{target} cannot take traffic{hint}", *readiness.reasons]
        return await actor.refuse(kind, pair, live, reasons, reason=refused_reason,
                                  trigger=trigger, readiness=readiness.to_dict(), **extra)
    plan = {"from": source, "to": target, "routes": [r.ref for r in live.routes],
            "forced": force and not readiness.ready}
    if actor.dry_run_for(pair):
        return result(kind, active=source, dry_run=True, would=plan,
                      readiness=readiness.to_dict(),
                      reasons=[f"dry-run: would {kind} {source} -> {target}"], **extra)
    serving = await actor.readiness(pair, source)
    # What served until now runs at production counts: remember them for scale-ups.
    production = {d.name: d.replicas for d in serving.deployments if d.replicas >= 1}
    now = actor.clock()
    history = actor.config.state.history
    action_id = uuid.uuid4().hex[:12]
    record = switches.SwitchRecord(kind, source, target, now, action_id, trigger)
    # Recorded before acting, so a restart can finish the bookkeeping of a switch whose
    # process died after patching, and tell whether that process is gone.
    recorded = {"images": {target: readiness.images(), source: serving.images()},
                "replicas": production, "holder": recovery.process_identity(actor.lease)}

    def begin(state: PairState) -> None:
        state.begin(kind, at=now, source=source, target=target, trigger=trigger,
                    reason=reason, action_id=action_id, **recorded)

    warnings = [w for w in [await actor.write(pair, live, begin)] if w]
    async with cluster_errors(f"switching the routes of pair {pair.name}"):
        outcome = await switching.switch_all(actor.api, pair, live, target=target,
                                             source=source, record=record)
    after = outcome.verified.active if outcome.verified else None
    images = readiness.images()
    done = actor.clock()

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
        state.finish(action_id, status, at=done)
        state.transition(kind if outcome.ok else f"{kind}_failed", at=done, history=history,
                         source=source, target=target, trigger=trigger,
                         reason=reason or None, forced=force or None,
                         error=outcome.failed, problems=list(outcome.problems) or None)

    # On success `finish` records the switch itself; reconciling first would log our own
    # switch as an outside change. After a failure the re-read routes are the truth.
    verified = outcome.verified if outcome.verified and outcome.verified.consistent \
        and not outcome.ok else None
    warning = await actor.write(pair, verified, finish, running=action_id)
    if warning:
        warnings.append(warning)
    details = {"action_id": action_id, "outcome": outcome.to_dict(), **plan,
               "readiness": readiness.to_dict(), **extra}
    if outcome.ok:
        message = f"{kind} {source} -> {target} (trigger: {trigger}" + \
            (f", reason: {reason}" if reason else "") + (", forced" if plan["forced"] else "") \
            + ")"
        await actor.events.emit(live.routes, reason=events.FLIPPED if kind == "flip"
                                else events.ROLLED_BACK, message=message, action=kind,
                                pair=pair)
        bound.info("switched", source=source, target=target)
        reasons = [f"{kind}: {source} -> {target}",
                   *([outcome.unverified] if outcome.unverified else []), *warnings]
        restored = await capacity.restore(actor, pair, target)
        if restored is not None:
            details["scale_up"] = restored.to_dict()
            reasons.extend(restored.reasons)
        return result(kind, active=target, changed=True, reasons=reasons, **details)
    problems = [outcome.failed or "", *outcome.problems]
    if outcome.reverted:
        problems.append(f"reverted: {', '.join(outcome.reverted)}")
    if outcome.revert_failures:
        problems.append("REVERT FAILED, routes inconsistent, fix by hand: "
                        + "; ".join(outcome.revert_failures))
    message = f"{kind} {source} -> {target} failed: " + "; ".join(p for p in problems if p)
    await actor.events.emit(live.routes, reason=events.FLIP_FAILED if kind == "flip"
                            else events.ROLLBACK_FAILED, message=message, action=kind,
                            warning=True, pair=pair)
    bound.error("switch failed", problems=problems)
    return result(kind, active=after, changed=outcome.changed, refused=True,
                  reasons=[p for p in problems if p] + warnings,
                  conflict=outcome.conflict, **details)
