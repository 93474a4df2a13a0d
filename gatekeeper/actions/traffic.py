"""Gatekeeper's own route forms: a progressive step (`expose`) and mirroring off (`unmirror`).

Both go through the all-or-none route changes of `routers.switching` on every route of the
pair (gatekeeper-owned weighted TraefikServices). `expose` with percent 0 puts the dark back
to no users in one patch per route; a step that could not be set is refused, so the
lifecycle blocks. `unmirror` is idempotent: a route without gatekeeper's mirroring is left
as it is. In dry-run neither changes anything.
"""

from __future__ import annotations

from gatekeeper.actions.context import Actor, in_log_context
from gatekeeper.actions.result import ActionResult, cluster_errors, result
from gatekeeper.config import PairConfig
from gatekeeper.lifecycle import Action
from gatekeeper.routers import switching

__all__ = ["expose", "unmirror"]


@in_log_context("expose")
async def expose(actor: Actor, pair: PairConfig, action: Action) -> ActionResult:
    """One progressive step on every route (percent 0: the dark back to none)."""
    live = await actor.live(pair)
    dark = action.namespace
    if not live.consistent or live.active is None or live.active == dark:
        return result("expose", active=live.active, refused=True, reasons=(
            f"the routes do not have {dark} dark: {live.problem or live.active}",))
    if action.percent == 0 and not live.exposed:
        return result("expose", active=live.active, reasons=("no progressive step on the "
                                                             "routes",))
    if actor.dry_run_for(pair):
        return result("expose", active=live.active, dry_run=True,
                      reasons=(f"would send {action.percent} % of the requests to {dark}",))
    async with cluster_errors(f"setting progressive step {action.step} of pair {pair.name}"):
        outcome = await switching.expose_all(actor.api, pair, live, dark=dark,
                                             percent=action.percent, step=action.step)
    verified = outcome.verified
    if not outcome.ok:
        return result("expose", active=live.active, changed=bool(outcome.revert_failures),
                      refused=True, reasons=(f"progressive step not set: {outcome.failed}",
                                             *outcome.revert_failures), routes=outcome.to_dict())
    if verified is not None and verified.exposed != action.percent:
        return result("expose", active=verified.active, changed=True, refused=True, reasons=(
            f"after the step the routes send {verified.exposed} % to {dark}, not "
            f"{action.percent} %",), routes=outcome.to_dict())
    return result("expose", active=live.active, changed=True,
                  reasons=(f"{action.percent} % of the requests to {dark}",),
                  routes=outcome.to_dict())


@in_log_context("unmirror")
async def unmirror(actor: Actor, pair: PairConfig, action: Action) -> ActionResult:
    """Gatekeeper's mirroring off on every route of `pair` that has it."""
    live = await actor.live(pair)
    if not live.mirrored:
        return result("unmirror", active=live.active, reasons=("no route mirrors",))
    if actor.dry_run_for(pair):
        return result("unmirror", active=live.active, dry_run=True,
                      reasons=("would remove the mirroring",))
    async with cluster_errors(f"removing the mirroring of pair {pair.name}"):
        outcome = await switching.unmirror_all(actor.api, pair, live)
    reasons = (outcome.failed,) if outcome.failed else (
        f"mirroring removed ({action.reason or 'not validating'})",)
    return result("unmirror", active=live.active, changed=bool(outcome.changed),
                  reasons=reasons, routes=outcome.to_dict())
