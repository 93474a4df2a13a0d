"""`decisions.decide`: a request (API or pipeline) to the action to execute, a no-op, or a
refusal with reasons. Pure: tables of cases, no cluster."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gatekeeper.config import PolicyConfig
from gatekeeper.decisions import Request, decide
from gatekeeper.lifecycle import Action, Observation, ReleaseState

BLUE, GREEN = "prod-blue", "prod-green"
POLICY = PolicyConfig(observation=100, cooldown=50)
READY = ReleaseState(phase="ready", active=BLUE, dark=GREEN, passes=3)
IDLE = ReleaseState(phase="idle", active=BLUE, dark=GREEN)
FLIPPED = ReleaseState(phase="flipped", active=GREEN, dark=BLUE, previous=BLUE, flipped_at=0.0)
SAFE = Observation(active=BLUE, dark=GREEN, dark_ready=True, dark_replicas=2, verdict="safe",
                   active_health="pass")
UNSAFE = replace(SAFE, verdict="unsafe", reasons=("error-rate: 0.09 > 0.01",))
SPLIT = Observation(active=None, dark=None, route_problem="routes disagree: a -> blue, b -> green")


def flip(to: str | None = None, **kw) -> Action:
    return Action("flip", to or GREEN, trigger="manual", **kw)


@pytest.mark.parametrize(("request_", "state", "obs", "action", "refusal", "note"), [
    # a running gatekeeper: phase, verdict and approvals
    (Request("flip"), READY, SAFE, flip(), "", ""),
    (Request("flip"), READY, UNSAFE, None, "verdict on prod-green is unsafe", ""),
    (Request("flip", force=True), READY, UNSAFE, flip(force=True), "", ""),
    (Request("flip"), IDLE, SAFE, None, "phase idle: no new release", ""),
    (Request("flip"), READY, None, None, "not evaluated yet", ""),
    (Request("flip"), FLIPPED, SAFE, None, "", "nothing to do: already flipped to prod-green"),
    (Request("flip", force=True), FLIPPED, SAFE, None, "", "nothing to do: already flipped"),
    (Request("flip", to=GREEN), READY, SPLIT, flip(GREEN), "", ""),  # a split finished
    (Request("flip", to=BLUE), READY, SPLIT, flip(BLUE), "", ""),
    (Request("flip"), READY, SPLIT, None, "routes: routes disagree", ""),  # which one?
    # a pipeline without the service: the gates' verdict just now, no phase
    (Request("flip", origin="pipeline"), IDLE, SAFE, flip(), "", ""),
    (Request("flip", origin="pipeline"), FLIPPED, replace(SAFE, dark=BLUE), flip(BLUE), "", ""),
    (Request("flip", origin="pipeline", force=True), FLIPPED, None,
     Action("flip", "", trigger="manual", force=True), "", ""),  # the routes' dark
    (Request("flip", origin="pipeline"), IDLE, replace(SAFE, verdict="unknown"), None,
     "gates: verdict on prod-green is unknown (--force flips anyway)", ""),
    (Request("flip", origin="pipeline"), IDLE, None, None, "gates: not evaluated", ""),
    # rollback: to the previous release; scale-up-first by request or policy
    (Request("rollback", reason="5xx"), FLIPPED, SAFE,
     Action("rollback", BLUE, trigger="manual", reason="5xx"), "", ""),
    (Request("rollback", scale_up_first=True, origin="pipeline"), FLIPPED, None,
     Action("rollback", "", trigger="manual", scale_up_first=True), "", ""),
    # an alert's rollback (the webhook): lifecycle.alert_rollback's rules
    (Request("rollback", reason="5xx", origin="alert"), FLIPPED, replace(SAFE, active=GREEN,
                                                                        dark=BLUE),
     Action("rollback", BLUE, trigger="alertmanager", reason="5xx"), "", ""),
    (Request("rollback", origin="alert"), IDLE, SAFE, None, "phase idle: no release", ""),
    (Request("rollback", origin="alert"), replace(FLIPPED, last_rollback_at=5.0), SAFE, None,
     "cooldown: last rollback 5s ago", ""),
    # scale-down: the observation window and go/no-go (service), forced, or a pipeline's step
    (Request("scale_down"), FLIPPED, SAFE, None, "observation window not over", ""),
    (Request("scale_down", force=True, keep=1), FLIPPED, SAFE,
     Action("scale_down", "", trigger="manual", reason="requested", keep=1, force=True), "", ""),
    (Request("scale_down", origin="pipeline"), FLIPPED, None,
     Action("scale_down", "", trigger="manual", reason="requested", keep=0), "", ""),
])
def test_a_request_decides_one_action_a_refusal_or_a_no_op(request_, state, obs, action,
                                                           refusal, note):
    step = decide(request_, state, obs, POLICY, now=10.0)
    assert step.state == state  # these decisions change nothing by themselves
    assert step.actions == ((action,) if action else ()), step
    assert (refusal in "; ".join(step.refusal)) if refusal else not step.refusal, step.refusal
    assert step.note.startswith(note) if note else not step.note, step.note


def test_a_flip_to_where_the_routes_point_now_is_a_no_op_even_forced():
    """`routed` is read just before deciding: it wins over a stale observation."""
    step = decide(Request("flip", to=BLUE, force=True), READY, SAFE, POLICY, 0.0, routed=BLUE)
    assert not step.actions and not step.refusal
    assert step.note == "nothing to do: prod-blue is already active"


def test_the_policy_can_ask_every_rollback_to_scale_up_first():
    policy = PolicyConfig(rollback_when_scaled_down="scale_up_then_flip")
    step = decide(Request("rollback"), FLIPPED, None, policy, 0.0)
    assert step.actions[0].scale_up_first


def test_an_alert_whose_rollback_target_cannot_serve_blocks_the_pair():
    """The one decision an alert's request changes the state with: blocked, saying why."""
    cold = replace(SAFE, active=GREEN, dark=BLUE, dark_ready=False, dark_problem="scaled to 0")
    step = decide(Request("rollback", reason="5xx", origin="alert"), FLIPPED, cold, POLICY, 10.0)
    assert not step.actions and step.state.phase == "blocked"
    assert "scaled to 0" in step.refusal[0] and step.state.resume == "flipped"
