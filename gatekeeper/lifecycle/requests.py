"""Requests from people and from Alertmanager: approve, unapprove, an alert's rollback,
and the checks that say why a flip or a scale-down is not safe now."""

from __future__ import annotations

from gatekeeper.config import PolicyConfig
from gatekeeper.lifecycle.moves import (
    Builder,
    ask_rollback,
    cooldown_remaining,
    reflipped,
    start_validating,
    unblock,
)
from gatekeeper.lifecycle.observation import Observation, aged
from gatekeeper.lifecycle.records import Decision, ReleaseState, Step


def approve(state: ReleaseState, now: float, decision: Decision | None = None, *,
            by: str = "") -> Step:
    """A person's go-ahead; idempotent. Without `decision` it means what the phase needs:
    validate and flip (idle, rolled_back), flip (validating, ready), scale down (flipped),
    resume (blocked). With one, it approves only that decision and is refused in a phase
    where it does not apply (a pipeline's go/no-go step never approves a flip, nor
    unblocks a pair, by accident). `by` names the approver on the transitions."""
    b = Builder(state, now, by)
    phase = state.phase
    if decision is not None and phase == "blocked":
        return b.build([f"blocked: {state.reason}; approve without a decision to resume"])
    wants_flip = decision in (None, "flip")
    wants_scale_down = decision in (None, "scale_down")
    if phase in ("idle", "rolled_back") and wants_flip:
        if state.dark is None:
            return b.build(["the pair has not been observed yet"])
        start_validating(b, state.dark_seen or "", "approved: validate the dark namespace",
                          trigger="manual")
        b.set(flip_approved=True)
        return b.build(note="flip approved: validating the dark namespace")
    if phase in ("validating", "ready") and wants_flip:
        if state.flip_approved:
            return b.build(note="the flip was already approved")
        b.set(flip_approved=True)
        return b.build(note=f"flip approved ({phase})")
    if phase == "flipped" and wants_scale_down:
        if state.scale_down_approved:
            return b.build(note="the scale-down was already approved")
        b.set(scale_down_approved=True)
        return b.build(note=f"scale-down of {state.previous} approved (go/no-go)")
    if phase == "blocked":
        unblock(b, "approved: resume")
        return b.build(note=f"unblocked: resumed {b.state.phase}")
    if decision == "scale_down" and phase in ("idle", "rolled_back", "validating", "ready"):
        return b.build([f"phase {phase}: the scale-down go/no-go comes after the flip"])
    if decision == "flip" and phase == "flipped":
        return b.build([f"phase flipped: the flip to {state.active} is done (use rollback)"])
    return b.build([f"nothing to approve in phase {phase}"])


def unapprove(state: ReleaseState, now: float, decision: Decision | None = None, *,
              by: str = "") -> Step:
    """Withdraw an approval not acted on yet (the flip before it happens, the scale-down
    before it happens); idempotent: nothing to withdraw changes nothing. Without
    `decision`, both approvals are withdrawn. Refused for a flip that already happened."""
    b = Builder(state, now, by)
    if decision == "flip" and state.phase in ("flipped", "stable"):
        return b.build([f"phase {state.phase}: the flip to {state.active} is done "
                        "(use rollback)"])
    if decision == "scale_down" and state.phase == "stable":
        return b.build(["phase stable: the scale-down is done"])
    withdrawn = []
    if decision in (None, "flip") and state.flip_approved:
        b.set(flip_approved=False)
        withdrawn.append("flip")
    if decision in (None, "scale_down") and state.scale_down_approved:
        b.set(scale_down_approved=False)
        withdrawn.append("scale-down")
    if not withdrawn:
        return b.build(note=f"nothing approved to withdraw (phase {state.phase})")
    if state.phase == "ready" and "flip" in withdrawn:
        b.set(reason="ready: approval withdrawn")
    return b.build(note=" and ".join(withdrawn) + " approval withdrawn")


def alert_rollback(
    state: ReleaseState, obs: Observation, policy: PolicyConfig, now: float, reason: str
) -> Step:
    """A matching alert fired for the new active: roll back if it can take traffic again."""
    b = Builder(state, now)
    phase = state.resume if state.phase == "blocked" else state.phase
    if phase not in ("flipped", "stable") or state.previous is None:
        return b.build([f"phase {state.phase}: no release to roll back"])
    cooldown_left = cooldown_remaining(state, policy, now)
    if cooldown_left > 0 and not reflipped(state):
        return b.build([f"cooldown: last rollback {policy.cooldown - cooldown_left:.0f}s ago"])
    refusal = ask_rollback(b, obs, policy, "alertmanager", reason)
    return b.build(refusal)


def flip_check(
    state: ReleaseState, obs: Observation | None, policy: PolicyConfig, now: float
) -> list[str]:
    """Why flipping to the dark namespace is not safe now (empty list: safe)."""
    if obs is None:
        return ["not evaluated yet"]
    obs = aged(obs, now)
    if obs.active is None or obs.dark is None:
        return [f"routes: {obs.route_problem or 'cannot be read'}; to finish a split, name the "
                "namespace that takes all traffic (flip with `to`)"]
    reasons: list[str] = []
    if obs.verdict != "safe":
        reasons.append(f"verdict on {obs.dark} is {obs.verdict}")
        reasons.extend(obs.reasons)
    if not obs.dark_ready:
        reasons.append(f"{obs.dark} cannot take traffic: {obs.dark_problem or 'not ready'}")
    phase = state.phase
    if phase == "validating":
        reasons.append(f"validating: {state.reason}")
    elif phase in ("idle", "stable", "rolled_back"):
        reasons.append(f"phase {phase}: no new release in {obs.dark} "
                       "(approve to validate it anyway)")
    elif phase == "flipped":
        reasons.append(f"flipped: {obs.dark} is the previous release (use rollback)")
    elif phase == "blocked":
        reasons.append(f"blocked: {state.reason}")
    elif policy.require_approval and not state.flip_approved:
        reasons.append("awaiting approval (POST .../approve)")
    if not reasons and (left := cooldown_remaining(state, policy, now)) > 0:
        reasons.append(f"cooldown after the last rollback ({left:.0f}s left)")
    return reasons


def scale_down_check(
    state: ReleaseState, obs: Observation | None, policy: PolicyConfig, now: float
) -> list[str]:
    """Why scaling the dark namespace down would be unsafe now (empty list: go ahead)."""
    if state.phase != "flipped":
        return []
    reasons = []
    observed = now - (state.flipped_at if state.flipped_at is not None else now)
    if observed < policy.observation:
        reasons.append(f"observation window not over ({policy.observation - observed:.0f}s "
                       "left): scaling down loses the instant rollback")
    health = obs.active_health if obs is not None else "unknown"
    if health != "pass":
        detail = obs.active_reasons[0] if obs is not None and obs.active_reasons else ""
        reasons.append(f"go/no-go not passed: key gates on the active are {health}"
                       + (f" ({detail})" if detail else ""))
    return reasons
