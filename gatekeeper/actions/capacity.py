"""Capacity: scale a namespace up to production size or down, wait until it is Ready, and
make sure no switch sends traffic to a namespace below its production size.

Production size per Deployment comes from `pairs[].replicas`, else the active namespace's
counts, else the counts remembered in the pair's record (`environments.production_replicas`).
"""

from __future__ import annotations

import asyncio

import structlog

from gatekeeper import environments, events
from gatekeeper.actions.context import Actor, in_log_context
from gatekeeper.actions.result import (
    CLUSTER_ERRORS,
    ActionResult,
    ClusterError,
    cluster_errors,
    result,
)
from gatekeeper.config import PairConfig
from gatekeeper.environments import Progress
from gatekeeper.kubeclient import ApiException
from gatekeeper.state import PairState

__all__ = ["before_traffic", "prepare_rollback", "restore", "scale_down", "scale_up",
           "wait_ready"]

log = structlog.get_logger()


@in_log_context("scale_up")
async def scale_up(actor: Actor, pair: PairConfig, namespace: str | None = None
                   ) -> ActionResult:
    """Scale a namespace (default: the dark one) up to production replica counts."""
    live = await actor.live(pair)
    target, why = actor.default_namespace(pair, live, namespace)
    if target is None:
        return await actor.refuse("scale_up", pair, live, [str(why)],
                                  reason=events.SCALE_REFUSED, trigger="manual")
    current = await actor.readiness(pair, target)
    mirror = live.active if live.active and live.active != target else None
    active = await actor.readiness(pair, mirror) if mirror else None
    state, _ = await actor.state(pair, None)
    plans = environments.production_replicas(
        pair, current.deployments, active=active.deployments if active else (),
        active_namespace=mirror, remembered=state.replicas)
    if not plans:
        return await actor.refuse("scale_up", pair, live, [f"no Deployments in {target}"],
                                  reason=events.SCALE_REFUSED, trigger="manual")
    todo = [p for p in plans if p.current < p.target]
    planned = [{"deployment": p.name, "from": p.current, "to": p.target, "source": p.source}
               for p in todo]
    counts = {p.name: p.target for p in plans}
    if not todo:
        return result("scale_up", active=live.active, namespace=target, replicas=counts,
                      reasons=[f"nothing to do: every Deployment in {target} is at "
                               "production replicas"])
    if actor.dry_run_for(pair):
        return result("scale_up", active=live.active, dry_run=True, namespace=target,
                      would=planned, reasons=[f"dry-run: would scale up {target}: " +
                                              ", ".join(f"{p.name} {p.current}->{p.target}"
                                                        for p in todo)])
    done, failed = await _scale(actor, target, [(p.name, p.target) for p in todo])
    now, history = actor.clock(), actor.config.state.history

    def mutate(state: PairState) -> None:
        for name, replicas in counts.items():
            state.replicas.setdefault(name, replicas)
        state.timestamps["scaled_up"] = now
        state.images[target] = current.images()
        state.transition("scale_up", at=now, history=history, namespace=target,
                         deployments={n: r for n, r in done}, failed=failed or None)

    warning = await actor.write(pair, live if live.consistent else None, mutate)
    text = ", ".join(f"{n} -> {r}" for n, r in done)
    if done:
        await actor.events.emit(live.routes, reason=events.SCALED_UP,
                                message=f"scaled up {target}: {text}", action="scale_up",
                                pair=pair)
    reasons = [f"scaled up {target}: {text}" if done else f"nothing scaled in {target}",
               *(f"failed: {f}" for f in failed), *([warning] if warning else [])]
    return result("scale_up", active=live.active, changed=bool(done), namespace=target,
                  scaled=planned, failed=failed, reasons=reasons)


async def _scale(actor: Actor, namespace: str, changes: list[tuple[str, int]]
                 ) -> tuple[list[tuple[str, int]], list[str]]:
    """Scale each Deployment; one failure does not stop the others."""
    done, failed = [], []
    for name, replicas in changes:
        try:
            await environments.scale(actor.api, namespace, name, replicas)
            done.append((name, replicas))
        except CLUSTER_ERRORS as exc:
            detail = f"HTTP {exc.status}" if isinstance(exc, ApiException) else repr(exc)
            log.error("scale failed", namespace=namespace, deployment=name, error=detail)
            failed.append(f"{name}: {detail}")
    return done, failed


@in_log_context("wait_ready")
async def wait_ready(actor: Actor, pair: PairConfig, namespace: str | None = None, *,
                     timeout: float,  # noqa: ASYNC109 - how long pods may take, part of the API
                     progress: Progress | None = None) -> ActionResult:
    """Wait until a namespace (default: the dark one) can take traffic, or time out."""
    live = await actor.live(pair)
    target, why = actor.default_namespace(pair, live, namespace)
    if target is None:
        return result("wait_ready", active=live.active, refused=True, reasons=[str(why)])
    async with cluster_errors(f"waiting for {target}"):
        readiness = await environments.wait_ready(
            actor.api, target, timeout=timeout, pair=pair, progress=progress)
    if readiness.ready:
        return result("wait_ready", active=live.active, namespace=target,
                      readiness=readiness.to_dict(), reasons=[readiness.summary()])
    return result("wait_ready", active=live.active, refused=True, namespace=target,
                  readiness=readiness.to_dict(),
                  reasons=[f"{target} not ready after {timeout:g}s", *readiness.reasons])


@in_log_context("scale_down")
async def scale_down(actor: Actor, pair: PairConfig, namespace: str | None = None, *,
                     keep: int = 0, force: bool = False) -> ActionResult:
    """Scale a namespace (default: the dark, old one) down to `keep` replicas.

    Never the active namespace. Refused while the active one is not fully Ready (the
    old namespace is the rollback path), unless `force`.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    live = await actor.live(pair)
    if not live.consistent or live.active is None:
        return await actor.refuse(
            "scale_down", pair, live,
            [f"routes inconsistent, cannot tell which namespace takes traffic: {live.problem}"],
            reason=events.SCALE_REFUSED, trigger="manual")
    target = namespace or pair.other(live.active)
    pair.other(target)
    if target == live.active:
        return await actor.refuse(
            "scale_down", pair, live,
            [f"{target} is the active namespace (it takes the traffic): refusing to scale "
             "it down"], reason=events.SCALE_REFUSED, trigger="manual")
    current = await actor.readiness(pair, target)
    todo = [d for d in current.deployments if d.replicas > keep]
    if not todo:
        return result("scale_down", active=live.active, namespace=target,
                      reasons=[f"nothing to do: every Deployment in {target} has "
                               f"<= {keep} replicas"])
    active = await actor.readiness(pair, live.active)
    if not active.ready and not force:
        return await actor.refuse(
            "scale_down", pair, live,
            [f"the active namespace {live.active} is not fully Ready; {target} is the "
             "rollback path (--force to scale it down anyway)", *active.reasons],
            reason=events.SCALE_REFUSED, trigger="manual")
    planned = [{"deployment": d.name, "from": d.replicas, "to": keep} for d in todo]
    if actor.dry_run_for(pair):
        return result("scale_down", active=live.active, dry_run=True, namespace=target,
                      would=planned, reasons=[f"dry-run: would scale down {target} to "
                                              f"{keep}: " + ", ".join(d.name for d in todo)])
    done, failed = await _scale(actor, target, [(d.name, keep) for d in todo])
    now, history = actor.clock(), actor.config.state.history
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

    warning = await actor.write(pair, live, mutate)
    if done:
        await actor.events.emit(
            live.routes, reason=events.SCALED_DOWN, action="scale_down", pair=pair,
            message=f"scaled down {target} to {keep}: " + ", ".join(n for n, _ in done))
    reasons = [f"scaled down {target} to {keep}: " + ", ".join(n for n, _ in done)
               if done else f"nothing scaled in {target}",
               *(f"failed: {f}" for f in failed), *([warning] if warning else [])]
    return result("scale_down", active=live.active, changed=bool(done), namespace=target,
                  keep=keep, scaled=planned, failed=failed, reasons=reasons)


async def before_traffic(actor: Actor, pair: PairConfig, target: str) -> ActionResult | None:
    """Scale a warm target (every Deployment at >= 1) up to its production size and wait
    until Ready (policy.ready_timeout) before it takes traffic; None when already there.

    A target with a Deployment at 0 is left to the readiness refusal (and to
    `rollback --scale-up-first` / `rollback_when_scaled_down`): starting a cold namespace
    is a decision of its own, not a side effect of a switch.
    """
    current, serving = await asyncio.gather(actor.readiness(pair, target),
                                            actor.readiness(pair, pair.other(target)))
    if not current.deployments or any(d.replicas < 1 for d in current.deployments):
        return None
    plans = environments.production_replicas(pair, current.deployments,
                                             active=serving.deployments)
    if all(p.current >= p.target for p in plans):
        return None  # at size: no further reads (each is one more call that can fail)
    scaled = await scale_up(actor, pair, target)
    if scaled.refused or scaled.dry_run:
        return scaled
    if scaled.details.get("failed"):
        return result("scale_up", active=scaled.active, refused=True, namespace=target,
                      reasons=scaled.reasons)
    if not scaled.changed:
        return None
    timeout = actor.config.policy_for(pair).ready_timeout
    waited = await wait_ready(actor, pair, target, timeout=timeout)
    if waited.refused:
        return result("scale_up", active=waited.active, refused=True, namespace=target,
                      reasons=[*scaled.reasons, *waited.reasons])
    return result("scale_up", active=waited.active, changed=True, namespace=target,
                  reasons=[*scaled.reasons, *waited.reasons],
                  scaled=scaled.details.get("scaled"))


async def restore(actor: Actor, pair: PairConfig, namespace: str) -> ActionResult | None:
    """After a switch, raise the new active to production counts (e.g. after a rollback
    to a namespace kept at 1 replica). Best effort: the switch already happened."""
    try:
        scaled = await scale_up(actor, pair, namespace)
    except ClusterError as exc:
        log.error("cannot restore production replicas", pair=pair.name, namespace=namespace,
                  error=str(exc))
        return result("scale_up", active=namespace, refused=True,
                      reasons=[f"could not scale {namespace} to production replicas: {exc}"])
    return scaled if scaled.changed or scaled.details.get("failed") else None


async def prepare_rollback(actor: Actor, pair: PairConfig, target: str) -> ActionResult:
    """Scale the rollback target up and wait until Ready (policy.ready_timeout)."""
    scaled = await scale_up(actor, pair, target)
    if scaled.refused or actor.dry_run_for(pair):
        return scaled
    timeout = actor.config.policy_for(pair).ready_timeout
    return await wait_ready(actor, pair, target, timeout=timeout)
