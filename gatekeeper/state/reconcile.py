"""Making a pair's record agree with the live routes (pure: no I/O): a switch a crashed
instance left `started`, a route change made outside gatekeeper, a record rebuilt."""

from __future__ import annotations

from gatekeeper import lifecycle
from gatekeeper.config import PairConfig
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.routers.base import ActiveState
from gatekeeper.state.record import PairState

SWITCH_KINDS = ("flip", "rollback")


def reconcile_state(state: PairState, pair: PairConfig, live: ActiveState, *, at: float,
                    history: int, running: str | None = None) -> None:
    """Make `state` agree with the live routes (pure: no I/O).

    A switch left `started` by a crashed instance is completed when the routes show its
    target, else marked interrupted; `running` is the id of this process's own action.
    """
    action = state.last_action
    if action and action.get("status") == "started" and action.get("id") != running:
        kind, source, target = action.get("kind"), action.get("from"), action.get("to")
        if kind in SWITCH_KINDS and live.active == target and source and source != target:
            state.completed(action, at=at,
                            note="completed before a restart; reconciled from routes")
            state.transition("reconciled", at=at, history=history, source=source, target=target,
                             note=f"{kind} {action.get('id')} had patched the routes")
        else:
            state.last_action = {**action, "status": "interrupted", "finished": at}
    if not live.consistent or live.active is None:
        return
    last = live.last_switch
    seen = Observation(active=live.active, dark=pair.other(live.active),
                       switch_kind=last.kind if last else "",
                       switched_from=last.source if last else None,
                       switched_at=last.at if last else None)
    before = state.active
    if state.release is None and state.unreadable is not None:
        # The same rebuild the control loop makes: blocked until a person approves, the
        # other namespace able to take the traffic back.
        state.release = lifecycle.rebuilt(seen, at, state.unreadable)
    step = lifecycle.follow_routes(state.release or ReleaseState(), seen, at)
    if step is None:
        return
    state.release = step.state
    if before is not None:
        state.transition("reconciled", at=at, history=history, source=before,
                         target=live.active, note="routes changed outside gatekeeper"
                         if step.state.trigger == "manual" else step.state.reason)


