"""Following the live routes when they moved without the state seeing it (first sight, a
switch the state never heard of, a person's kubectl), and rebuilding a lost state from them."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from gatekeeper.lifecycle.moves import Builder
from gatekeeper.lifecycle.observation import Observation, fingerprint
from gatekeeper.lifecycle.records import Action, Phase, ReleaseState, Step, Trigger
from gatekeeper.lifecycle.reported import completed


def follow_routes(state: ReleaseState, obs: Observation, now: float) -> Step | None:
    """The step that follows where the live routes send traffic, when that is not where
    `state` last saw it (first sight, a switch the state never heard of, a person's kubectl):
    the one rule every caller uses (the control loop's `step`, and `state` when an action
    reconciles the record with the routes). None when the routes agree with `state` or
    cannot be read. `obs` needs only the routes' fields (active, dark, the switch record);
    without `dark_images` the dark's images are learned on the next tick."""
    if obs.active is None or obs.dark is None:
        return None
    b = Builder(state, now)
    return b.build() if fold_route_change(b, obs) else None


def fold_route_change(b: Builder, obs: Observation) -> bool:
    """Fold a route change the state has not seen into `b`; False when there is none."""
    if b.state.active is None:
        if not _from_record(b, obs):
            # First sight: the live routes are the truth; the dark's images are not a new
            # release (it may be the previous one kept at N replicas). A person can
            # `approve` to validate.
            b.enter("idle", "watching for new images in the dark namespace", trigger="auto",
                    active=obs.active, dark=obs.dark, dark_seen=_seen(obs))
        return True
    if obs.active != b.state.active:
        if not _from_record(b, obs):
            _moved_outside(b, obs)
        return True
    return False


def _seen(obs: Observation) -> str | None:
    """The dark's image fingerprint, or None (learn it on the next tick) when the
    observation carries no images (a route-only observation)."""
    return fingerprint(obs.dark_images) if obs.dark_images else None


def switched(state: ReleaseState, kind: Literal["flip", "rollback"], *, source: str,
             target: str, trigger: str, reason: str, now: float) -> Step:
    """A flip or rollback from `source` to `target` happened (reported by the action that
    made it, whoever asked): the same phase change as `completed`, also when the state had
    not seen `source` take the traffic yet."""
    if state.active != source:
        state = replace(state, active=source, dark=target)
    action = Action(kind, target, trigger=_trigger(trigger), reason=reason)
    return completed(state, action, now)


def _trigger(text: str) -> Trigger:
    for known in ("auto", "manual", "alertmanager", "gates"):
        if text == known:
            return known
    return "manual"


def _from_record(b: Builder, obs: Observation) -> bool:
    """The routes record that gatekeeper itself moved the traffic to `obs.active` (the
    state never heard of it: its write failed, or it was lost): follow that switch."""
    at = obs.switched_at if obs.switched_at is not None else b.now
    if obs.switch_kind == "flip" and obs.switched_from == obs.dark:
        b.enter("flipped", f"flipped from {obs.dark} at {at:.0f} (recorded on the routes; "
                "the stored state did not have it)", trigger="recorded", active=obs.active,
                dark=obs.dark, dark_seen=_seen(obs), previous=obs.dark,
                flipped_at=at, failures=0, passes=0, scale_down_approved=False,
                scaled_down_at=None, resume=None, block_cause="", waiting_since=None)
        return True
    if obs.switch_kind == "rollback" and obs.switched_from == obs.dark:
        b.enter("rolled_back", f"rolled back from {obs.dark} at {at:.0f} (recorded on the "
                "routes; the stored state did not have it)", trigger="recorded",
                active=obs.active, dark=obs.dark, dark_seen=_seen(obs),
                previous=None, flipped_at=None, last_rollback_at=at, failures=0, passes=0,
                flip_approved=False, resume=None, block_cause="")
        return True
    return False


def rebuilt(obs: Observation, now: float, problem: str) -> ReleaseState:
    """The state to carry on with when the stored one cannot be read: the live routes are
    the truth. The pair is blocked (no automatic flip, scale-down or gate-driven rollback until
    a person approves) but rolls back on an alert while the other namespace can take the
    traffic back: `previous` is the routes' recorded source, else the other namespace."""
    if obs.active is None or obs.dark is None:
        return ReleaseState(phase="blocked", since=now, trigger="state", block_cause="state",
                            reason=f"{problem}; the routes cannot tell the active namespace "
                                   f"either ({obs.route_problem}): fix them, then approve")
    if obs.switch_kind == "rollback" and obs.switched_from == obs.dark:
        resume: Phase = "rolled_back"
        previous, detail = None, f"rolled back from {obs.dark}"
    else:
        resume, previous = "flipped", obs.dark
        detail = (f"flipped from {obs.dark}" if obs.switch_kind == "flip"
                  and obs.switched_from == obs.dark else
                  f"{obs.active} takes the traffic, {obs.dark} can take it back")
    return ReleaseState(
        phase="blocked", since=now, trigger="state", active=obs.active, dark=obs.dark,
        dark_seen=_seen(obs), previous=previous,
        flipped_at=obs.switched_at if resume == "flipped" else None,
        last_rollback_at=obs.switched_at if resume == "rolled_back" else None,
        resume=resume, block_cause="state",
        reason=f"{problem}; rebuilt from the routes ({detail}): a critical alert still "
               "rolls back; approve to resume")


def _moved_outside(b: Builder, obs: Observation) -> None:
    """Traffic moved without us (kubectl, another tool): follow the live routes."""
    state = b.state
    if state.phase in ("flipped", "stable") and obs.active == state.previous:
        b.enter("rolled_back", f"traffic moved back to {obs.active} outside gatekeeper",
                trigger="manual", active=obs.active, dark=obs.dark, dark_seen=None,
                previous=None, flipped_at=None, last_rollback_at=b.now, failures=0,
                resume=None, block_cause="")
        return
    b.enter("flipped", f"traffic moved to {obs.active} outside gatekeeper", trigger="manual",
            active=obs.active, dark=obs.dark, dark_seen=None, previous=obs.dark,
            flipped_at=b.now, failures=0, scale_down_approved=False, scaled_down_at=None,
            resume=None, block_cause="")


