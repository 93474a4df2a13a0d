"""The release lifecycle as tables of cases: pure functions, an explicit clock, no I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gatekeeper import lifecycle
from gatekeeper.config import PolicyConfig
from gatekeeper.lifecycle import Action, Observation, ReleaseState

BLUE, GREEN = "prod-blue", "prod-green"
OLD, NEW = ("app:1",), ("app:2",)

POLICY = PolicyConfig(auto_flip=True, soak=10, consecutive_passes=3, observation=100,
                      auto_scale_down=True, rollback_on_gate_failures=2, cooldown=50)


def obs(**changes) -> Observation:
    """A healthy pair: blue active on the old release, green dark on the new one, ready."""
    base = Observation(active=BLUE, dark=GREEN, active_images=OLD, dark_images=NEW,
                       dark_replicas=2, dark_ready=True, verdict="safe", reasons=(),
                       active_health="pass")
    return replace(base, **changes)


def flipped_obs(**changes) -> Observation:
    """After the flip: green active, blue (previous) dark and ready."""
    return obs(active=GREEN, dark=BLUE, active_images=NEW, dark_images=OLD, **changes)


def validating(now: float = 0.0) -> ReleaseState:
    """A pair that has just seen new images in green."""
    seen = ReleaseState(phase="idle", active=BLUE, dark=GREEN,
                        dark_seen=lifecycle.fingerprint(OLD))
    return lifecycle.step(seen, obs(dark_ready=False), POLICY, now).state


def flipped(now: float = 0.0) -> ReleaseState:
    """A pair flipped to green at `now`."""
    state = ReleaseState(phase="ready", active=BLUE, dark=GREEN,
                         dark_seen=lifecycle.fingerprint(NEW), passes=3)
    return lifecycle.completed(state, Action("flip", GREEN, trigger="auto"), now).state


def run(state: ReleaseState, observations, policy: PolicyConfig = POLICY, start: float = 0.0,
        interval: float = 1.0):
    """Feed observations one tick apart; return the final state and every action."""
    actions = []
    now = start
    for observation in observations:
        result = lifecycle.step(state, observation, policy, now)
        state = result.state
        actions.extend(result.actions)
        now += interval
    return state, actions


def test_first_sight_is_idle_and_remembers_the_dark_images():
    """A fresh pair is idle: images already in the dark are not taken for a new release."""
    result = lifecycle.step(ReleaseState(), obs(), POLICY, 5.0)
    assert result.state.phase == "idle"
    assert result.state.active == BLUE and result.state.dark == GREEN
    assert result.state.dark_seen == lifecycle.fingerprint(NEW)
    assert result.actions == ()


def test_new_images_in_the_dark_start_validation_and_scale_up():
    """New images seen in a dark scaled to zero: validating, and a scale-up is asked for."""
    seen = ReleaseState(phase="idle", active=BLUE, dark=GREEN,
                        dark_seen=lifecycle.fingerprint(OLD))
    result = lifecycle.step(seen, obs(dark_replicas=0, dark_ready=False), POLICY, 1.0)
    assert result.state.phase == "validating"
    assert [a.kind for a in result.actions] == ["scale_up"]
    assert result.actions[0].namespace == GREEN
    assert [(t.source, t.target) for t in result.transitions] == [("idle", "validating")]


def test_same_images_as_active_are_not_a_release():
    """The dark redeployed with the active's images stays idle."""
    seen = ReleaseState(phase="idle", active=BLUE, dark=GREEN, dark_seen="something-else")
    result = lifecycle.step(seen, obs(dark_images=OLD), POLICY, 1.0)
    assert result.state.phase == "idle" and result.actions == ()


@pytest.mark.parametrize(
    ("verdicts", "soak", "expected_phase", "flips"),
    [
        (["safe"] * 3, 0, "flipped?", 1),           # 3 passes, no soak: flip on the third
        (["safe"] * 2, 0, "validating", 0),         # one pass short
        (["safe", "unsafe", "safe", "safe"], 0, "validating", 0),  # streak broken
        (["safe", "unknown", "safe", "safe"], 0, "validating", 0),  # unknown breaks it too
        (["safe"] * 5, 10, "validating", 0),        # passes but soak (10s) not over
        (["safe"] * 12, 10, "flipped?", 1),         # passes and soak over
        (["unsafe"] * 20, 0, "validating", 0),      # 5% errors never flips
    ],
)
def test_validation_needs_consecutive_passes_and_soak(verdicts, soak, expected_phase, flips):
    """Ready needs N consecutive safe verdicts AND the soak; auto_flip then asks for a flip."""
    policy = POLICY.model_copy(update={"soak": soak})
    state, actions = run(validating(), [obs(verdict=v) for v in verdicts], policy, start=1.0)
    flip_actions = [a for a in actions if a.kind == "flip"]
    assert len(flip_actions) >= flips
    if flips:
        assert state.phase == "ready"  # the flip happens when the controller reports it
        assert flip_actions[0].namespace == GREEN and flip_actions[0].trigger == "auto"
    else:
        assert state.phase == expected_phase


def test_soak_starts_when_the_dark_is_ready():
    """Time spent waiting for pods does not count as soak."""
    policy = POLICY.model_copy(update={"soak": 3, "consecutive_passes": 1})
    not_ready = [obs(dark_ready=False, dark_problem="0/2 ready")] * 10
    state, actions = run(validating(), not_ready, policy, start=1.0)
    assert state.phase == "validating" and state.soak_started is None
    assert "0/2 ready" in state.reason
    state, actions = run(state, [obs()] * 3, policy, start=20.0)
    assert state.phase == "validating" and not actions
    state, actions = run(state, [obs()], policy, start=23.0)
    assert [a.kind for a in actions] == ["flip"]


@pytest.mark.parametrize(
    ("policy_update", "approved", "flips", "reason_part"),
    [
        ({"auto_flip": False}, False, 0, "auto_flip is off"),
        ({"require_approval": True}, False, 0, "awaiting approval"),
        ({"require_approval": True}, True, 1, ""),
        ({}, False, 1, ""),
    ],
)
def test_ready_flips_only_when_the_policy_allows(policy_update, approved, flips, reason_part):
    """Approval and auto_flip decide whether ready turns into a flip."""
    policy = POLICY.model_copy(update=policy_update)
    state = ReleaseState(phase="ready", active=BLUE, dark=GREEN,
                         dark_seen=lifecycle.fingerprint(NEW), passes=3, flip_approved=approved)
    result = lifecycle.step(state, obs(), policy, 100.0)
    assert len([a for a in result.actions if a.kind == "flip"]) == flips
    assert reason_part in result.state.reason


def test_ready_falls_back_to_validating_when_gates_fail():
    """A failing verdict while ready resets the streak."""
    state = ReleaseState(phase="ready", active=BLUE, dark=GREEN,
                         dark_seen=lifecycle.fingerprint(NEW), passes=3)
    result = lifecycle.step(state, obs(verdict="unsafe", reasons=("error-rate: 0.05",)),
                            POLICY, 1.0)
    assert result.state.phase == "validating" and result.state.passes == 0
    assert "error-rate" in result.state.reason and result.actions == ()


def test_completed_flip_swaps_namespaces_and_remembers_the_rollback_target():
    """After a flip the old active is the previous namespace and the new dark."""
    state = flipped(now=7.0)
    assert state.phase == "flipped"
    assert (state.active, state.dark, state.previous) == (GREEN, BLUE, BLUE)
    assert state.flipped_at == 7.0
    # The next tick learns the dark's (old) images without taking them for a new release.
    result = lifecycle.step(state, flipped_obs(), POLICY, 8.0)
    assert result.state.phase == "flipped" and result.actions == ()
    assert result.state.dark_seen == lifecycle.fingerprint(OLD)


@pytest.mark.parametrize(
    ("healths", "expected"),
    [
        (["fail", "fail"], "rollback"),
        (["fail", "pass", "fail"], None),
        (["fail", "unknown", "fail"], "rollback"),  # unknown neither breaks nor counts
        (["unknown"] * 5, None),
        (["fail"], None),
    ],
)
def test_key_gates_failing_m_times_roll_back(healths, expected):
    """M consecutive key failures on the new active during observation roll back."""
    _state, actions = run(flipped(), [flipped_obs(active_health=h) for h in healths],
                         start=1.0)
    kinds = [a.kind for a in actions]
    if expected is None:
        assert "rollback" not in kinds
    else:
        assert kinds == ["rollback"]
        assert actions[0].namespace == BLUE and actions[0].trigger == "gates"


def test_gate_rollback_without_auto_rollback_blocks():
    """auto_rollback off: failing gates block the pair for a person to decide."""
    policy = POLICY.model_copy(update={"auto_rollback": False})
    state, actions = run(flipped(), [flipped_obs(active_health="fail")] * 2, policy, start=1.0)
    assert state.phase == "blocked" and not actions
    assert "auto_rollback is off" in state.reason


@pytest.mark.parametrize(
    ("policy_update", "dark_ready", "expected_kind", "scale_up_first", "phase"),
    [
        ({}, True, "rollback", False, "flipped"),
        ({"rollback_when_scaled_down": "refuse"}, False, None, False, "blocked"),
        ({"rollback_when_scaled_down": "scale_up_then_flip"}, False, "rollback", True,
         "flipped"),
    ],
)
def test_alert_rollback_respects_the_scaled_down_policy(
    policy_update, dark_ready, expected_kind, scale_up_first, phase
):
    """An alert rolls back at once when the previous can serve; else refuse or scale up first."""
    policy = POLICY.model_copy(update=policy_update)
    observation = flipped_obs(dark_ready=dark_ready, dark_replicas=2 if dark_ready else 0)
    result = lifecycle.alert_rollback(flipped(), observation, policy, 5.0, "HighErrors firing")
    kinds = [a.kind for a in result.actions]
    assert kinds == ([expected_kind] if expected_kind else [])
    if expected_kind:
        assert result.actions[0].scale_up_first is scale_up_first
        assert result.actions[0].trigger == "alertmanager"
        assert result.refusal == ()
    else:
        assert result.refusal and "refuse" in result.refusal[0]
    assert result.state.phase == phase


@pytest.mark.parametrize("phase", ["idle", "validating", "ready", "rolled_back"])
def test_alert_outside_a_release_does_nothing(phase):
    """Without a flip there is nothing to roll back to."""
    state = ReleaseState(phase=phase, active=BLUE, dark=GREEN)
    result = lifecycle.alert_rollback(state, obs(), POLICY, 1.0, "x")
    assert result.actions == () and result.refusal


def test_completed_rollback_enters_rolled_back_and_the_cooldown():
    """After a rollback a new release does not auto-flip before the cooldown is over."""
    state = lifecycle.completed(flipped(), Action("rollback", BLUE, trigger="alertmanager"),
                                10.0).state
    assert state.phase == "rolled_back" and state.active == BLUE and state.dark == GREEN
    assert state.trigger == "alertmanager" and state.last_rollback_at == 10.0
    again = lifecycle.alert_rollback(state, obs(), POLICY, 11.0, "x")
    assert again.actions == ()
    # A fixed release arrives in green; it validates but waits out the cooldown (50s).
    state = lifecycle.step(state, obs(), POLICY, 11.0).state
    state = lifecycle.step(state, obs(dark_images=("app:3",)), POLICY, 12.0).state
    assert state.phase == "validating"
    policy = POLICY.model_copy(update={"soak": 0})
    state, actions = run(state, [obs(dark_images=("app:3",))] * 5, policy, start=13.0)
    assert state.phase == "ready" and not actions and "cooldown" in state.reason
    state, actions = run(state, [obs(dark_images=("app:3",))], policy, start=61.0)
    assert [a.kind for a in actions] == ["flip"]


@pytest.mark.parametrize(
    ("healths", "policy_update", "approved", "scale_down", "reason_part"),
    [
        (["pass"], {}, False, True, ""),
        (["pass"], {"auto_scale_down": False}, False, False, "awaiting approval"),
        (["pass"], {"auto_scale_down": False}, True, True, ""),
        (["unknown"], {}, False, False, "go/no-go not passed"),
    ],
)
def test_go_no_go_after_the_observation_window(
    healths, policy_update, approved, scale_down, reason_part
):
    """At the end of observation the old namespace is scaled down if the go/no-go passes."""
    policy = POLICY.model_copy(update={**policy_update, "scale_down_keep": 1})
    state = replace(flipped(now=0.0), scale_down_approved=approved)
    state, actions = run(state, [flipped_obs(active_health=h) for h in healths], policy,
                         start=150.0)
    kinds = [a.kind for a in actions]
    assert kinds == (["scale_down"] if scale_down else [])
    if scale_down:
        assert actions[0].namespace == BLUE and actions[0].keep == 1
    assert reason_part in state.reason


def test_scale_down_completes_into_stable():
    """The scale-down reported done makes the release stable."""
    state = lifecycle.completed(flipped(), Action("scale_down", BLUE, keep=0), 200.0).state
    assert state.phase == "stable" and state.scaled_down_at == 200.0
    assert state.previous == BLUE  # still the rollback target, after a scale-up


def test_observation_window_keeps_waiting():
    """Before the window is over nothing is scaled down."""
    state, actions = run(flipped(), [flipped_obs()] * 3, start=1.0)
    assert state.phase == "flipped" and not actions and "observing" in state.reason


def test_inconsistent_routes_block_then_resume():
    """Routes that disagree block the pair; when they agree again it resumes."""
    state = validating()
    blocked = lifecycle.step(state, obs(active=None, dark=None, route_problem="disagree"),
                             POLICY, 1.0).state
    assert blocked.phase == "blocked" and "disagree" in blocked.reason
    again = lifecycle.step(blocked, obs(active=None, dark=None), POLICY, 2.0)
    assert again.state.phase == "blocked" and again.transitions == ()
    resumed = lifecycle.step(blocked, obs(), POLICY, 3.0).state
    assert resumed.phase == "validating"


@pytest.mark.parametrize(
    ("phase", "previous", "expected"),
    [("validating", None, "flipped"), ("ready", None, "flipped"), ("idle", None, "flipped"),
     ("flipped", GREEN, "rolled_back"), ("stable", GREEN, "rolled_back")],
)
def test_routes_moved_outside_gatekeeper_are_followed(phase, previous, expected):
    """A kubectl patch of the route is taken as the truth."""
    state = ReleaseState(phase=phase, active=BLUE, dark=GREEN, previous=previous)
    result = lifecycle.step(state, flipped_obs(), POLICY, 4.0)
    assert result.state.phase == expected
    assert result.state.active == GREEN and result.state.trigger == "manual"
    assert result.actions == ()


def test_failed_action_blocks_and_approve_resumes():
    """A refused automatic flip blocks the pair; approving resumes where it was."""
    state = ReleaseState(phase="ready", active=BLUE, dark=GREEN, passes=3)
    blocked = lifecycle.failed(state, Action("flip", GREEN), ["route changed (409)"], 5.0)
    assert blocked.state.phase == "blocked" and "409" in blocked.state.reason
    assert blocked.state.resume == "ready"
    resumed = lifecycle.approve(blocked.state, 6.0)
    assert resumed.state.phase == "ready" and resumed.state.passes == 0


@pytest.mark.parametrize(
    ("phase", "field", "expected_phase"),
    [("idle", "flip_approved", "validating"), ("validating", "flip_approved", "validating"),
     ("ready", "flip_approved", "ready"), ("flipped", "scale_down_approved", "flipped"),
     ("rolled_back", "flip_approved", "validating")],
)
def test_approve_means_what_the_phase_needs(phase, field, expected_phase):
    """Approve: validate in idle, flip when ready, scale down when flipped; idempotent."""
    state = ReleaseState(phase=phase, active=BLUE, dark=GREEN, dark_seen="x")
    once = lifecycle.approve(state, 1.0).state
    twice = lifecycle.approve(once, 2.0).state
    assert once.phase == expected_phase and getattr(once, field) is True
    assert twice.phase == expected_phase and getattr(twice, field) is True


def test_approve_in_stable_is_refused_harmlessly():
    """Nothing to approve once stable."""
    result = lifecycle.approve(ReleaseState(phase="stable", active=BLUE, dark=GREEN), 1.0)
    assert result.refusal and result.state.phase == "stable"


@pytest.mark.parametrize(
    ("state", "observation", "safe", "reason_part"),
    [
        (ReleaseState(phase="ready", passes=3), obs(), True, ""),
        (ReleaseState(phase="ready"), obs(verdict="unsafe", reasons=("error-rate 0.05",)),
         False, "error-rate 0.05"),
        (ReleaseState(phase="ready"), obs(verdict="unknown"), False, "unknown"),
        (ReleaseState(phase="validating", reason="1/3"), obs(), False, "validating"),
        (ReleaseState(phase="ready"), obs(dark_ready=False), False, "cannot take traffic"),
        (ReleaseState(phase="ready"), obs(active=None, dark=None), False, "routes"),
        (ReleaseState(phase="idle"), obs(), False, "no new release"),
        (ReleaseState(phase="flipped"), obs(), False, "rollback"),
    ],
)
def test_flip_check(state, observation, safe, reason_part):
    """Safe only when ready, verdict safe, dark ready and routes consistent."""
    reasons = lifecycle.flip_check(state, observation, POLICY, 1.0)
    assert (not reasons) is safe
    assert any(reason_part in r for r in reasons) or safe


def test_flip_check_waits_for_approval_when_required():
    """require_approval: not safe before the approval, safe after."""
    policy = POLICY.model_copy(update={"require_approval": True})
    state = ReleaseState(phase="ready")
    assert "awaiting approval" in lifecycle.flip_check(state, obs(), policy, 1.0)[-1]
    assert lifecycle.flip_check(replace(state, flip_approved=True), obs(), policy, 1.0) == []


def test_flip_check_before_any_evaluation_is_not_safe():
    """No observation yet: not safe."""
    assert lifecycle.flip_check(ReleaseState(), None, POLICY, 0.0) == ["not evaluated yet"]


def test_scale_down_check_protects_the_observation_window():
    """Scaling the previous down during observation is refused until the window is over."""
    state = flipped(now=0.0)
    assert lifecycle.scale_down_check(state, flipped_obs(), POLICY, 10.0)
    assert lifecycle.scale_down_check(state, flipped_obs(), POLICY, 150.0) == []
    unhealthy = flipped_obs(active_health="fail", active_reasons=("error-rate",))
    assert "error-rate" in lifecycle.scale_down_check(state, unhealthy, POLICY, 150.0)[-1]
    assert lifecycle.scale_down_check(ReleaseState(phase="stable"), None, POLICY, 0.0) == []


def test_state_round_trips_through_a_dict():
    """The persisted form restores the same state; unknown keys are ignored."""
    state = flipped(now=3.0)
    assert ReleaseState.from_dict(state.to_dict()) == state
    assert ReleaseState.from_dict({"phase": "stable", "extra": 1}).phase == "stable"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"phase": "canarying"}, "phase 'canarying' is not one this version knows"),
        ({"phase": "blocked", "resume": "later"}, "resume 'later'"),
        ({"phase": "flipped", "flipped_at": "yesterday"}, "'flipped_at'"),
        ({"phase": "flipped", "previous": 3}, "'previous'"),
        ({"phase": "flipped", "passes": True}, "'passes'"),
        ({"phase": "flipped", "since": None}, "'since'"),
    ],
)
def test_a_stored_state_this_version_cannot_read_is_refused_naming_the_field(data, needle):
    """A newer version's phase or a wrongly typed field is never taken for `idle` (that
    made a critical alert "ignored"): the caller rebuilds the state from the routes."""
    with pytest.raises(ValueError, match=needle):
        ReleaseState.from_dict(data)


def test_a_state_rebuilt_from_the_routes_is_blocked_but_rolls_back_on_an_alert():
    """Unreadable state, green takes traffic, blue Ready: blocked for a person, and a
    critical alert for green rolls back to blue (recorded source or the other namespace)."""
    for extra in ({}, {"switch_kind": "flip", "switched_from": BLUE, "switched_at": 5.0}):
        state = lifecycle.rebuilt(flipped_obs(**extra), 10.0, "record unreadable")
        assert state.phase == "blocked" and state.block_cause == "state"
        assert state.previous == BLUE and "record unreadable" in state.reason
        assert state.flipped_at == extra.get("switched_at")
        alert = lifecycle.alert_rollback(state, flipped_obs(), POLICY, 11.0, "ApiDown")
        assert alert.actions == (Action("rollback", BLUE, trigger="alertmanager",
                                        reason="ApiDown"),)
        assert lifecycle.step(state, flipped_obs(), POLICY, 12.0).actions == ()
        assert lifecycle.approve(state, 13.0).state.phase == "flipped"
    after_rollback = lifecycle.rebuilt(
        flipped_obs(switch_kind="rollback", switched_from=BLUE, switched_at=5.0), 10.0, "x")
    assert after_rollback.previous is None and after_rollback.resume == "rolled_back"
    assert lifecycle.alert_rollback(after_rollback, flipped_obs(), POLICY, 11.0,
                                    "a").actions == ()
    split = lifecycle.rebuilt(obs(active=None, dark=None, route_problem="disagree"), 1.0, "x")
    assert split.phase == "blocked" and "disagree" in split.reason


def test_a_flip_recorded_on_the_routes_is_followed_when_the_state_never_heard_of_it():
    """The flip's state write failed (or the state was lost): the routes' record makes the
    pair `flipped` with the recorded source and time, so an alert can roll it back."""
    recorded = flipped_obs(switch_kind="flip", switched_from=BLUE, switched_at=7.0)
    for before in (ReleaseState(), ReleaseState(phase="ready", active=BLUE, dark=GREEN)):
        state = lifecycle.step(before, recorded, POLICY, 9.0).state
        assert (state.phase, state.previous, state.flipped_at) == ("flipped", BLUE, 7.0)
        assert lifecycle.alert_rollback(state, recorded, POLICY, 10.0, "a").actions
    unrecorded = lifecycle.step(ReleaseState(), flipped_obs(), POLICY, 9.0).state
    assert unrecorded.phase == "idle"  # first sight of a pair nobody flipped


def test_fingerprint_ignores_order_and_duplicates():
    """Same images in any order are the same release."""
    assert lifecycle.fingerprint(["b", "a", "a"]) == lifecycle.fingerprint(["a", "b"])
    assert lifecycle.fingerprint([]) == ""


def test_passes_count_only_once_the_window_holds_just_the_new_release():
    """Safe verdicts while the judged window still reaches back before the dark was ready
    (the previous release's samples in the same namespace) never count towards a flip."""
    policy = POLICY.model_copy(update={"soak": 0})
    state, _ = run(validating(), [obs(window=15.0)] * 15, policy=policy, start=1.0)
    assert state.phase == "validating" and state.passes == 0
    assert "window still holds data" in state.reason
    state, _ = run(state, [obs(window=15.0)] * 3, policy=policy, start=16.0)
    assert state.phase == "ready"


# -- approvals for one decision, and their withdrawal (unapprove) ------------------------------

_RESUME = {"phase": "blocked", "resume": "ready", "block_cause": "flip",
           "reason": "flip failed: 409"}


@pytest.mark.parametrize(
    ("phase", "decision", "refused", "expected_phase", "flip_ok", "scale_ok"),
    [
        ("idle", "flip", False, "validating", True, False),
        ("idle", "scale_down", True, "idle", False, False),
        ("rolled_back", "flip", False, "validating", True, False),
        ("validating", "flip", False, "validating", True, False),
        ("validating", "scale_down", True, "validating", False, False),
        ("ready", "flip", False, "ready", True, False),
        ("ready", "scale_down", True, "ready", False, False),
        ("flipped", "scale_down", False, "flipped", False, True),
        ("flipped", "flip", True, "flipped", False, False),
        ("stable", "scale_down", True, "stable", False, False),
        ("stable", None, True, "stable", False, False),
        ("blocked", "flip", True, "blocked", False, False),
        ("blocked", "scale_down", True, "blocked", False, False),
        ("blocked", None, False, "ready", False, False),
    ],
)
def test_approve_one_decision_only_where_it_applies(phase, decision, refused, expected_phase,
                                                    flip_ok, scale_ok):
    """`--for flip` / `--for scale-down` approve that decision or are refused; a decision
    never unblocks a pair (only a plain approve resumes it)."""
    extra = _RESUME if phase == "blocked" else {}
    state = ReleaseState(**{"phase": phase, "active": BLUE, "dark": GREEN, "dark_seen": "x",
                            "previous": GREEN if phase == "flipped" else None, **extra})
    result = lifecycle.approve(state, 1.0, decision, by="alice")
    assert bool(result.refusal) is refused
    assert result.state.phase == expected_phase
    assert (result.state.flip_approved, result.state.scale_down_approved) == (flip_ok, scale_ok)
    if refused:
        assert result.state == state and result.transitions == ()
    else:
        assert result.note
    assert all(t.by == "alice" for t in result.transitions)


def test_approval_transitions_name_the_approver():
    """A phase change caused by an approval says who: in the record and its JSON form."""
    result = lifecycle.approve(ReleaseState(phase="idle", active=BLUE, dark=GREEN,
                                            dark_seen="x"), 1.0, by="ci:deployer")
    [transition] = result.transitions
    assert (transition.source, transition.target, transition.trigger) == (
        "idle", "validating", "manual")
    assert transition.to_dict()["by"] == "ci:deployer"
    plain = lifecycle.step(validating(), obs(), POLICY, 1.0).transitions
    assert all("by" not in t.to_dict() for t in plain)


def test_approving_twice_changes_nothing_the_second_time():
    state = ReleaseState(phase="ready", active=BLUE, dark=GREEN)
    once = lifecycle.approve(state, 1.0, "flip", by="a")
    twice = lifecycle.approve(once.state, 2.0, "flip", by="b")
    assert once.state != state and twice.state == once.state and not twice.refusal
    assert "already" in twice.note


@pytest.mark.parametrize(
    ("phase", "flip_ok", "scale_ok", "decision", "refused", "after_flip", "after_scale"),
    [
        ("ready", True, False, None, False, False, False),
        ("ready", True, False, "flip", False, False, False),
        ("ready", True, False, "scale_down", False, True, False),
        ("validating", True, False, "flip", False, False, False),
        ("validating", False, False, None, False, False, False),
        ("flipped", False, True, None, False, False, False),
        ("flipped", False, True, "scale_down", False, False, False),
        ("flipped", False, True, "flip", True, False, True),
        ("stable", False, False, "flip", True, False, False),
        ("stable", False, False, "scale_down", True, False, False),
        ("idle", False, False, None, False, False, False),
        ("blocked", True, True, "flip", False, False, True),
    ],
)
def test_unapprove_withdraws_what_was_not_acted_on(phase, flip_ok, scale_ok, decision, refused,
                                                    after_flip, after_scale):
    """Withdraw the flip before it happens, the scale-down before it happens; nothing to
    withdraw changes nothing; a done flip is refused (use rollback)."""
    state = ReleaseState(phase=phase, active=BLUE, dark=GREEN, flip_approved=flip_ok,
                         scale_down_approved=scale_ok)
    result = lifecycle.unapprove(state, 1.0, decision, by="bob")
    assert bool(result.refusal) is refused
    assert result.state.phase == phase and result.transitions == ()
    assert (result.state.flip_approved, result.state.scale_down_approved) == (
        after_flip, after_scale)
    if not refused:
        assert result.note


def test_a_withdrawn_flip_approval_stops_the_flip():
    """require_approval: ready + approved flips on the next tick; withdrawn, it does not."""
    policy = POLICY.model_copy(update={"require_approval": True})
    state = ReleaseState(phase="ready", active=BLUE, dark=GREEN,
                         dark_seen=lifecycle.fingerprint(NEW), passes=3)
    approved = lifecycle.approve(state, 1.0, "flip", by="a").state
    assert [a.kind for a in lifecycle.step(approved, obs(), policy, 2.0).actions] == ["flip"]
    withdrawn = lifecycle.unapprove(approved, 2.0, "flip", by="a").state
    assert lifecycle.step(withdrawn, obs(), policy, 3.0).actions == ()


NO_EVIDENCE = "error-rate: 0 samples in 300s < min_samples 100"


@pytest.mark.parametrize(
    ("timeline", "timeout", "expected_phase"),
    [
        (["unknown"] * 10, 5, "blocked"),                   # unknown 9s > 5s: blocked
        (["unknown"] * 5, 5, "validating"),                 # unknown 4s: still waiting
        (["unknown"] * 4 + ["unsafe"] + ["unknown"] * 4, 5, "validating"),  # known resets it
        (["unknown"] * 3 + ["not_ready"] + ["unknown"] * 4, 5, "validating"),  # so does not Ready
        (["unknown"] * 30, 0, "validating"),                # 0: never blocks
    ],
)
def test_a_ready_dark_without_evidence_is_blocked_after_validation_timeout(
        timeline, timeout, expected_phase):
    """A Ready dark whose verdict stays unknown longer than validation_timeout is blocked with
    the verdict's reason and what to do; a known verdict or a not-Ready dark restarts the
    clock (not Ready is bounded by ready_timeout instead)."""
    policy = POLICY.model_copy(update={"validation_timeout": timeout, "ready_timeout": 1000})
    observations = [obs(dark_ready=False, dark_problem="0/2 ready") if v == "not_ready"
                    else obs(verdict=v, reasons=(NO_EVIDENCE,)) for v in timeline]
    state, actions = run(validating(), observations, policy, start=1.0)
    assert state.phase == expected_phase
    assert not [a for a in actions if a.kind == "flip"]
    if expected_phase == "blocked":
        assert state.block_cause == "validation_timeout" and state.resume == "validating"
        assert f"validation_timeout {timeout}s" in state.reason
        assert NO_EVIDENCE in state.reason and lifecycle.EVIDENCE_HINT in state.reason
        assert state.unknown_since is None


def test_approving_a_pair_blocked_for_evidence_resumes_with_a_fresh_clock():
    """After the block, approval resumes validating; the timeout counts again from there."""
    policy = POLICY.model_copy(update={"validation_timeout": 5})
    unknown = obs(verdict="unknown", reasons=(NO_EVIDENCE,))
    state, _ = run(validating(), [unknown] * 8, policy, start=1.0)
    assert state.phase == "blocked"
    state = lifecycle.approve(state, 20.0).state
    assert state.phase == "validating" and state.unknown_since is None
    state, _ = run(state, [unknown] * 3, policy, start=21.0)
    assert state.phase == "validating"
    state, _ = run(state, [unknown] * 4, policy, start=24.0)
    assert state.phase == "blocked"
