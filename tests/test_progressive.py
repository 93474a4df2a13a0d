"""Progressive exposure in the lifecycle, as tables of cases: steps held and judged, a
failing step back to 0 % and blocked, then the normal full flip. Pure, explicit clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gatekeeper import lifecycle
from gatekeeper.config import PolicyConfig, ProgressiveConfig
from gatekeeper.lifecycle import Action, Observation, ReleaseState
from tests.test_lifecycle import BLUE, GREEN, NEW, obs

STEPS = (1, 5, 25)
POLICY = PolicyConfig(auto_flip=True, soak=0, consecutive_passes=2, cooldown=0,
                      progressive=ProgressiveConfig(steps=STEPS, hold=30, max_hold=100))


def ready() -> ReleaseState:
    """A pair whose green dark passed validation."""
    return ReleaseState(phase="ready", active=BLUE, dark=GREEN,
                        dark_seen=lifecycle.fingerprint(NEW), passes=2)


def on_routes(state: ReleaseState, **changes: object) -> Observation:
    """What the routes show once the state's step is on them."""
    percent = STEPS[state.exposure_step - 1] if state.exposure_step else 0
    return replace(obs(window=20.0), exposed=percent, exposure_step=state.exposure_step,
                   **changes)


def drive(state: ReleaseState, verdicts: list[str], *, every: float = 10.0
          ) -> tuple[ReleaseState, list[Action]]:
    """Tick every `every` seconds with these verdicts; expose actions complete at once."""
    actions: list[Action] = []
    now = 0.0
    for verdict in verdicts:
        result = lifecycle.step(state, on_routes(state, verdict=verdict,
                                                 reasons=(f"error-rate {verdict}",)),
                                POLICY, now)
        state = result.state
        for action in result.actions:
            actions.append(action)
            if action.kind in ("expose", "flip"):
                state = lifecycle.completed(state, action, now).state
        if state.phase == "flipped":
            break  # the routes now point at green: this table's observations no longer fit
        now += every
    return state, actions


def test_steps_are_held_judged_then_the_full_flip() -> None:
    """Each step is held at least `hold` (and the rule window) with consecutive passes;
    after the last one comes the normal flip."""
    state, actions = drive(ready(), ["safe"] * 16)
    exposes = [(a.percent, a.step) for a in actions if a.kind == "expose"]
    assert exposes == [(1, 1), (5, 2), (25, 3)]
    assert [a.kind for a in actions][-1] == "flip"
    assert state.phase == "flipped" and state.active == GREEN and state.exposure_step == 0


def test_the_current_step_is_in_the_state_and_reason() -> None:
    """While a step is held the state says which one, since when, and why it waits."""
    state, _ = drive(ready(), ["safe"] * 2)
    assert (state.phase, state.exposure_step) == ("ready", 1)
    assert state.exposure_since == 0.0
    assert "progressive step 1/3 (1 % to prod-green)" in state.reason
    assert state.to_dict()["exposure_step"] == 1
    assert ReleaseState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize(("verdict", "dark_ready", "says"), [
    ("unsafe", True, "error-rate unsafe"),
    ("safe", False, "dark not ready"),
])
def test_a_failing_step_goes_back_to_zero_and_blocks(verdict: str, dark_ready: bool,
                                                     says: str) -> None:
    """One patch back to 0 % (a single expose 0 action), blocked with the reasons."""
    state, _ = drive(ready(), ["safe"] * 6)  # on step 2 by now
    assert state.exposure_step == 2
    result = lifecycle.step(state, on_routes(state, verdict=verdict, dark_ready=dark_ready,
                                             reasons=(f"error-rate {verdict}",)), POLICY, 100.0)
    assert [(a.kind, a.percent) for a in result.actions] == [("expose", 0)]
    assert result.state.phase == "blocked" and result.state.block_cause == "progressive"
    assert "progressive step 2/3 (5 % to prod-green) failed" in result.state.reason
    assert says in result.state.reason and "back at 0 %" in result.state.reason
    assert result.state.exposure_step == 0


def test_too_few_samples_by_max_hold_fails_the_step() -> None:
    """Unknown holds the step (no passes); past max_hold it fails like an unsafe step."""
    state, actions = drive(ready(), ["safe"] + ["unknown"] * 12)
    assert state.phase == "blocked"
    assert "still no verdict after max_hold 100s" in state.reason
    assert [(a.percent, a.step) for a in actions if a.kind == "expose"] == [(1, 1), (0, 0)]


def test_split_changed_by_someone_else_blocks() -> None:
    """The routes no longer carry the step (edited or reverted): blocked, no new split."""
    state, _ = drive(ready(), ["safe"] * 2)
    result = lifecycle.step(state, replace(on_routes(state), exposed=0, exposure_step=0),
                            POLICY, 50.0)
    assert result.state.phase == "blocked" and "no longer on the routes" in result.state.reason
    assert result.actions == ()


def test_no_users_to_the_dark_outside_ready() -> None:
    """New images while a step is held: validating again, and the split goes to 0 %."""
    state, _ = drive(ready(), ["safe"] * 2)
    newer = on_routes(state, dark_images=("app:3",))
    result = lifecycle.step(state, newer, POLICY, 50.0)
    assert result.state.phase == "validating" and result.state.exposure_step == 0
    assert [(a.kind, a.percent) for a in result.actions] == [("expose", 0)]


def test_without_progressive_the_flip_is_immediate() -> None:
    """The default policy flips at once, no steps."""
    plain = POLICY.model_copy(update={"progressive": None})
    result = lifecycle.step(ready(), obs(), plain, 0.0)
    assert [a.kind for a in result.actions] == ["flip"]
