"""A request, decided: the lifecycle `Action` to execute, a no-op, or a refusal with reasons.
Pure: no I/O, the clock passed in.

Every mutation goes through one decision and one executor (`actions.executor`): the control
loop's own ticks are `lifecycle.step`; every request, a person's or a pipeline's
(`POST .../flip|rollback|scale-down`, `gatekeeper flip|rollback|scale-down`) or an
Alertmanager alert's rollback (the webhook), is `decide` here. The answer is a
`lifecycle.Step`: `actions` holds the one action to execute; `refusal` why it must not run
(409 / exit 1, unless forced); `note` a no-op's answer; `state` what changes without an
action (an alert that blocks the pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gatekeeper.config import PolicyConfig
from gatekeeper.lifecycle import (
    Action,
    Observation,
    ReleaseState,
    Step,
    alert_rollback,
    flip_check,
    scale_down_check,
)

__all__ = ["Origin", "Request", "RequestKind", "decide"]

RequestKind = Literal["flip", "rollback", "scale_down"]
Origin = Literal["service", "pipeline", "alert"]


@dataclass(frozen=True)
class Request:
    """What was asked, by whom (`origin`), with which overrides."""

    kind: RequestKind
    to: str | None = None
    """flip: the namespace to send traffic to (None: the dark one). scale_down: the
    namespace to scale down (None: the dark one)."""
    force: bool = False
    """Skip the checks (verdict, phase, readiness); the action is recorded as forced."""
    reason: str = ""
    keep: int | None = None
    """scale_down: replicas to keep (None: the policy's `scale_down_keep`)."""
    scale_up_first: bool = False
    """rollback: scale a scaled-down target up and wait until Ready before switching (also
    when the policy's `rollback_when_scaled_down` is `scale_up_then_flip`)."""
    origin: Origin = "service"
    """`service`: asked of a running gatekeeper, which keeps the release's phase: checked by
    phase, verdict and approvals (`lifecycle.flip_check`, `lifecycle.scale_down_check`).
    `pipeline`: a command run without the service, where the pipeline's step is the
    approval and no phase is kept: a flip needs the gates' verdict evaluated just now to be
    `safe`; rollback and scale-down rest on the executor's own preconditions (and a
    rollback's target on the record and the routes the action reads).
    `alert`: a critical alert for the new active (rollback only): `lifecycle.alert_rollback`
    (the phase, the cooldown, whether the previous namespace can take traffic)."""


def decide(request: Request, state: ReleaseState, obs: Observation | None,
           policy: PolicyConfig, now: float, *, routed: str | None = None) -> Step:
    """The action `request` asks for, or why not. `state` is the pair's stored release,
    `obs` the latest observation (for a pipeline: the gates' verdict on the flip's target),
    `routed` where the routes send traffic, read just now (a flip naming `to`)."""
    if request.to is not None and request.kind == "flip" and request.to == routed:
        # From the routes read now, not the tick's picture: that may predate an action
        # that just moved them (a webhook's rollback away from `to`).
        return Step(state, note=f"nothing to do: {request.to} is already active")
    if request.kind == "flip":
        return _flip(request, state, obs, policy, now)
    if request.kind == "rollback" and request.origin == "alert":
        return alert_rollback(state, obs or Observation(active=None, dark=None), policy, now,
                              request.reason)
    if request.kind == "rollback":
        scale_first = request.scale_up_first or \
            policy.rollback_when_scaled_down == "scale_up_then_flip"
        # A pipeline keeps no release state: the action reads the record and the routes.
        target = "" if request.origin == "pipeline" else state.previous or ""
        return Step(state, actions=(Action(
            "rollback", target, trigger="manual", reason=request.reason,
            scale_up_first=scale_first, force=request.force),))
    keep = policy.scale_down_keep if request.keep is None else request.keep
    reasons = [] if request.force or request.origin == "pipeline" else \
        scale_down_check(state, obs, policy, now)
    if reasons:
        return Step(state, refusal=tuple(reasons))
    return Step(state, actions=(Action(
        "scale_down", request.to or "", trigger="manual", reason=request.reason or "requested",
        keep=keep, force=request.force),))


def _flip(request: Request, state: ReleaseState, obs: Observation | None,
          policy: PolicyConfig, now: float) -> Step:
    seen = obs.dark if obs is not None else None
    # A pipeline keeps no release state: its target is the one asked for or the one judged.
    target = request.to or (seen if request.origin == "pipeline" else state.dark or seen) or ""
    flip = Step(state, actions=(Action("flip", target, trigger="manual", reason=request.reason,
                                       force=request.force),))
    if request.origin == "pipeline":
        reasons = [] if request.force else _gates(obs)
        return Step(state, refusal=tuple(reasons)) if reasons else flip
    if request.to is not None and obs is not None and obs.active is None \
            and obs.route_problem.startswith("routes disagree"):
        return flip  # split routes: the named target finishes them (`actions.switch`)
    if request.to is None and state.phase in ("flipped", "stable"):
        return Step(state, note=f"nothing to do: already flipped to {state.active} (use "
                                "rollback to go back, or name the namespace with `to`)")
    reasons = [] if request.force else flip_check(state, obs, policy, now)
    return Step(state, refusal=tuple(reasons)) if reasons else flip


def _gates(obs: Observation | None) -> list[str]:
    """A pipeline's flip: the gate rules' verdict on the target, evaluated just now."""
    if obs is None or obs.dark is None:
        return ["gates: not evaluated"]
    if obs.verdict == "safe":
        return []
    return [f"gates: verdict on {obs.dark} is {obs.verdict} (--force flips anyway)",
            *obs.reasons]
