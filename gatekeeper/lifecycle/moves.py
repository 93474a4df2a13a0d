"""The Builder every lifecycle function folds its Step into, and the phase changes several
of them share (unblock, start validating, roll back, the cooldown)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from gatekeeper.config import PolicyConfig
from gatekeeper.lifecycle.observation import Observation
from gatekeeper.lifecycle.records import Action, Phase, ReleaseState, Step, Transition, Trigger

BLOCK_ROUTES = "routes"  # a block that clears itself once the routes agree again
BLOCK_READY = "ready_timeout"  # the dark was not Ready within policy.ready_timeout
BLOCK_EVIDENCE = "validation_timeout"  # a Ready dark stayed unknown past validation_timeout
BLOCK_STEP = "progressive"  # a progressive step failed: the dark is back at 0 %


class Builder:
    """Accumulates one Step; keeps the transition bookkeeping out of the lifecycle's rules."""

    def __init__(self, state: ReleaseState, now: float, by: str = "") -> None:
        self.state = state
        self.now = now
        self.by = by
        self.actions: list[Action] = []
        self.transitions: list[Transition] = []

    def set(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)

    def enter(self, phase: Phase, reason: str, trigger: str = "auto", **changes: Any) -> None:
        before = self.state.phase
        self.state = replace(self.state, phase=phase, since=self.now, reason=reason,
                             trigger=trigger, **changes)
        if before != phase:
            self.transitions.append(Transition(self.now, before, phase, trigger, reason,
                                               self.by))

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def build(self, refusal: Iterable[str] = (), note: str = "") -> Step:
        return Step(self.state, tuple(self.actions), tuple(self.transitions), tuple(refusal),
                    note)


def unblock(b: Builder, reason: str) -> None:
    resume = b.state.resume or "idle"
    b.enter(resume, reason, trigger="manual", resume=None, block_cause="", passes=0,
            failures=0)


def start_validating(b: Builder, release: str, reason: str, trigger: str = "auto") -> None:
    b.enter("validating", reason, trigger=trigger, release=release, soak_started=None,
            passes=0, failures=0, flip_approved=False, scale_down_approved=False,
            previous=None, flipped_at=None, scaled_down_at=None, resume=None, block_cause="",
            unknown_since=None, exposure_step=0, exposure_since=None)



def ask_rollback(
    b: Builder, obs: Observation, policy: PolicyConfig, trigger: Trigger, reason: str
) -> list[str]:
    """Ask for a rollback the previous namespace can take; else block (policy `refuse`)."""
    target = b.state.previous
    if target is None:
        return ["no previous namespace to roll back to"]
    if obs.dark == target and obs.dark_ready:
        b.act(Action("rollback", target, trigger=trigger, reason=reason))
        return []
    if policy.rollback_when_scaled_down == "scale_up_then_flip":
        b.act(Action("rollback", target, trigger=trigger, reason=reason, scale_up_first=True))
        return []
    why = (f"{reason}; rollback refused: {target} cannot take traffic "
           f"({obs.dark_problem or 'not ready'}) and policy rollback_when_scaled_down is refuse")
    resume = b.state.resume if b.state.phase == "blocked" else b.state.phase
    b.enter("blocked", why, trigger=trigger, resume=resume, block_cause="rollback")
    return [why]


def reflipped(state: ReleaseState) -> bool:
    """Traffic was sent to the current release after the last rollback. No automatic flip
    happens within the cooldown, so this was a person's deliberate new release (API, CLI,
    kubectl): the cooldown, which stops automatic actions from flapping, does not hide a
    critical alert about it."""
    return (state.flipped_at is not None and state.last_rollback_at is not None
            and state.flipped_at > state.last_rollback_at)


def cooldown_remaining(state: ReleaseState, policy: PolicyConfig, now: float) -> float:
    if state.last_rollback_at is None:
        return 0.0
    return max(0.0, state.last_rollback_at + policy.cooldown - now)


