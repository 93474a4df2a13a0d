"""The one executor: a lifecycle `Action` carried out on the cluster.

Whoever decided the action (the control loop's `lifecycle.step`; a person's request through
the API or the CLI, or an alert's rollback from the webhook, decided by `decisions.decide`),
it runs here, so every caller gets the same preconditions,
the same all-or-none switch, the same records and Events, and one `ActionResult`.
"""

from __future__ import annotations

from gatekeeper.actions import capacity, switch, traffic
from gatekeeper.actions.context import Actor
from gatekeeper.actions.result import ActionResult
from gatekeeper.config import PairConfig
from gatekeeper.lifecycle import Action

__all__ = ["execute"]


async def execute(actor: Actor, pair: PairConfig, action: Action) -> ActionResult:
    """Carry out `action` for `pair`: flip or roll back (to `action.namespace`, or where the
    routes and the record say when empty), scale up, scale down (never the active), a
    progressive step (`expose`) or mirroring off (`unmirror`)."""
    namespace = action.namespace or None
    if action.kind == "flip":
        return await switch.flip(actor, pair, to=namespace, force=action.force,
                                 trigger=action.trigger, reason=action.reason)
    if action.kind == "rollback":
        return await switch.rollback(actor, pair, force=action.force, trigger=action.trigger,
                                     reason=action.reason, scale_up_first=action.scale_up_first,
                                     to=namespace)
    if action.kind == "scale_up":
        return await capacity.scale_up(actor, pair, namespace)
    if action.kind == "expose":
        return await traffic.expose(actor, pair, action)
    if action.kind == "unmirror":
        return await traffic.unmirror(actor, pair, action)
    return await capacity.scale_down(actor, pair, namespace, keep=action.keep,
                                     force=action.force)
