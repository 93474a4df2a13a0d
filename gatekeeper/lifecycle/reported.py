"""Outcomes of actions, reported back by whoever acted: the phase moves only once an action
has happened (`completed`), or the pair stops for a person (`failed`)."""

from __future__ import annotations

from collections.abc import Iterable

from gatekeeper.lifecycle.moves import Builder
from gatekeeper.lifecycle.records import Action, ReleaseState, Step


def completed(state: ReleaseState, action: Action, now: float) -> Step:
    """An action happened (ours, or a person's through the API): move the phase."""
    b = Builder(state, now)
    if action.kind == "flip":
        old = state.active
        b.enter("flipped", action.reason or f"flipped to {action.namespace}",
                trigger=action.trigger, active=action.namespace, dark=old, previous=old,
                dark_seen=None, flipped_at=now, failures=0, passes=0,
                scale_down_approved=False, scaled_down_at=None, resume=None, block_cause="",
                exposure_step=0, exposure_since=None)
    elif action.kind == "rollback":
        failed_ns = state.active
        b.enter("rolled_back", action.reason or f"rolled back to {action.namespace}",
                trigger=action.trigger, active=action.namespace, dark=failed_ns, previous=None,
                dark_seen=None, flipped_at=None, failures=0, passes=0, last_rollback_at=now,
                flip_approved=False, resume=None, block_cause="", exposure_step=0,
                exposure_since=None)
    elif action.kind == "expose":
        b.set(exposure_step=action.step if action.percent > 0 else 0,
              exposure_since=now if action.percent > 0 else None, passes=0,
              reason=(f"progressive step {action.step}: {action.percent} % to "
                      f"{action.namespace}" if action.percent > 0 else b.state.reason))
    elif action.kind == "scale_down":
        if state.phase == "flipped":
            b.enter("stable", action.reason or f"scaled {action.namespace} down",
                    trigger=action.trigger, scaled_down_at=now)
        else:
            b.set(scaled_down_at=now)
    # scale_up: the next observations show the replicas; nothing to record.
    return b.build()


def failed(state: ReleaseState, action: Action, reasons: Iterable[str], now: float) -> Step:
    """An automatic action was refused or failed: stop and let a person decide."""
    b = Builder(state, now)
    text = "; ".join(reasons) or "no reason given"
    b.enter("blocked", f"{action.describe()} failed: {text}", trigger=action.trigger,
            resume=state.phase if state.phase != "blocked" else state.resume,
            block_cause=action.kind)
    return b.build()


