"""The tick: `step` folds one observation into a pair's state and says which actions the
policy asks for (validating, ready and its progressive steps, the observation window)."""

from __future__ import annotations

from gatekeeper.config import PolicyConfig
from gatekeeper.lifecycle.following import fold_route_change
from gatekeeper.lifecycle.moves import (
    BLOCK_EVIDENCE,
    BLOCK_READY,
    BLOCK_ROUTES,
    BLOCK_STEP,
    Builder,
    ask_rollback,
    cooldown_remaining,
    start_validating,
    unblock,
)
from gatekeeper.lifecycle.observation import Observation, aged, fingerprint
from gatekeeper.lifecycle.records import Action, ReleaseState, Step

EVIDENCE_HINT = "enable load or mirroring for the dark, or fix the source"
"""What to do when the dark has no evidence (said in the block's reason)."""


def step(state: ReleaseState, obs: Observation, policy: PolicyConfig, now: float) -> Step:
    """Fold one observation into the state; return the actions the policy asks for."""
    obs = aged(obs, now)
    b = Builder(state, now)
    if obs.active is None or obs.dark is None:
        problem = obs.route_problem or "the routes cannot be read"
        if state.phase != "blocked":
            b.enter("blocked", f"routes: {problem}; no automatic action until resolved",
                    resume=state.phase, block_cause=BLOCK_ROUTES)
        return b.build()
    dark_print = fingerprint(obs.dark_images)
    if fold_route_change(b, obs):
        return b.build()
    if b.state.dark_seen is None:
        b.set(dark_seen=dark_print)
    if b.state.phase == "blocked" and b.state.block_cause == BLOCK_ROUTES:
        unblock(b, "routes agree again")
    if dark_print and obs.active_images and dark_print != b.state.dark_seen:
        b.set(dark_seen=dark_print)
        if set(obs.dark_images) != set(obs.active_images):
            start_validating(b, dark_print, "new images in the dark namespace")
        elif b.state.phase in ("validating", "ready"):
            b.enter("idle", "the dark namespace runs the active namespace's images")
    phase = b.state.phase
    if phase == "validating":
        _validate(b, obs, obs.dark, policy)
    if b.state.phase == "ready":
        _ready(b, obs, obs.dark, policy)
    elif phase == "flipped":
        _observe(b, obs, policy)
    _unexpose_outside_ready(b, obs)
    _unmirror_outside_validation(b, obs)
    return b.build()


def _unmirror_outside_validation(b: Builder, obs: Observation) -> None:
    """Mirroring belongs to a Ready dark under validation of a pair that configures it; any
    other time it is removed (after a crash or restart nothing else would: the validation
    drivers that installed it are not running)."""
    validating = b.state.phase in ("validating", "ready") and b.state.exposure_step == 0
    if not obs.mirrored or obs.dark is None or (validating and obs.dark_ready
                                                and obs.mirroring_wanted):
        return
    if any(a.kind in ("flip", "rollback", "expose", "unmirror") for a in b.actions):
        return  # a switch or step puts the weighted form back in its own patch
    b.act(Action("unmirror", obs.dark, reason=f"{b.state.phase}: mirroring to {obs.dark} "
                 "only while it validates"))


def _unexpose_outside_ready(b: Builder, obs: Observation) -> None:
    """Outside `ready` no user goes to the dark: a progressive split still on the routes
    (the release changed, the pair is blocked, an earlier patch failed) goes back to 0 %."""
    if b.state.phase == "ready" or obs.exposed <= 0 or obs.dark is None:
        return
    if any(a.kind in ("expose", "flip", "rollback") for a in b.actions):
        return
    b.act(Action("expose", obs.dark, reason=f"{b.state.phase}: no users to {obs.dark} outside "
                 "a progressive step", percent=0, step=0))


def _validate(b: Builder, obs: Observation, dark: str, policy: PolicyConfig) -> None:
    """Count consecutive safe verdicts once the dark can serve at production size; soak
    while it stays ready. A dark not Ready within `ready_timeout` blocks the pair."""
    if obs.dark_replicas == 0 or obs.dark_short:
        b.act(Action("scale_up", dark, reason="validate the new release at production size"))
        short = f" ({', '.join(obs.dark_short)})" if obs.dark_short else ""
        _wait_for_dark(b, policy, f"scaling up {dark} to production size{short}")
        return
    if not obs.dark_ready:
        _wait_for_dark(b, policy, f"waiting for {dark} to be ready: "
                                  f"{obs.dark_problem or 'pods not ready'}")
        return
    if b.state.waiting_since is not None:
        b.set(waiting_since=None)
    if _evidence_timed_out(b, obs, policy):
        return
    soak_started = b.state.soak_started if b.state.soak_started is not None else b.now
    soaked = b.now - soak_started
    if soaked < obs.window:
        if obs.verdict != "safe":
            first = obs.reasons[0] if obs.reasons else "no reason given"
            why = f"gates {obs.verdict}: {first}"
        else:
            why = (f"soaking: the {obs.window:.0f}s window still holds data from before "
                   f"{dark} was ready ({soaked:.0f}s ago)")
        b.set(soak_started=soak_started, passes=0, reason=why)
        return
    passes = b.state.passes + 1 if obs.verdict == "safe" else 0
    b.set(soak_started=soak_started, passes=passes)
    if passes >= policy.consecutive_passes and soaked >= policy.soak:
        b.enter("ready", f"gates passed {passes} consecutive evaluations and soaked "
                         f"{soaked:.0f}s")
        return
    if obs.verdict != "safe":
        first = obs.reasons[0] if obs.reasons else "no reason given"
        b.set(reason=f"gates {obs.verdict}: {first}")
    else:
        b.set(reason=f"{passes}/{policy.consecutive_passes} consecutive passes, soaked "
                     f"{soaked:.0f}s of {policy.soak:.0f}s")


def _evidence_timed_out(b: Builder, obs: Observation, policy: PolicyConfig) -> bool:
    """A Ready dark whose verdict stays unknown (too little evidence: no traffic, no data, a
    source down) past `validation_timeout` blocks the pair with the verdict's first reason and
    what to do; True when it did. The clock restarts whenever the verdict is known."""
    if obs.verdict != "unknown":
        if b.state.unknown_since is not None:
            b.set(unknown_since=None)
        return False
    since = b.state.unknown_since if b.state.unknown_since is not None else b.now
    if b.state.unknown_since is None:
        b.set(unknown_since=since)
    timeout = policy.validation_timeout
    if timeout <= 0 or b.now - since < timeout:
        return False
    first = obs.reasons[0] if obs.reasons else "no reason given"
    b.enter("blocked", f"no verdict after validation_timeout {timeout:g}s: {first}; "
                       f"{EVIDENCE_HINT}",
            resume="validating", block_cause=BLOCK_EVIDENCE, unknown_since=None, passes=0,
            soak_started=None)
    return True


def _wait_for_dark(b: Builder, policy: PolicyConfig, why: str) -> None:
    """The dark cannot serve yet: no passes count; past `ready_timeout` the pair is blocked
    (a person fixes the release and approves, or a new release starts over)."""
    since = b.state.waiting_since if b.state.waiting_since is not None else b.now
    b.set(passes=0, soak_started=None, waiting_since=since, unknown_since=None, reason=why)
    if b.now - since >= policy.ready_timeout:
        b.enter("blocked", f"not ready after ready_timeout {policy.ready_timeout:g}s: {why}",
                resume="validating", block_cause=BLOCK_READY, waiting_since=None)


def _ready(b: Builder, obs: Observation, dark: str, policy: PolicyConfig) -> None:
    """Flip when the policy allows (through the progressive steps when configured); fall
    back to validating when the gates stop passing."""
    if policy.progressive is not None and b.state.exposure_step > 0:
        _hold_step(b, obs, dark, policy)
        return
    if not obs.dark_ready or obs.verdict != "safe":
        why = obs.reasons[0] if obs.reasons else (obs.dark_problem or "dark not ready")
        b.enter("validating", f"gates no longer pass: {why}", passes=0)
        return
    if policy.require_approval and not b.state.flip_approved:
        b.set(reason="ready: awaiting approval (POST .../approve)")
        return
    if not policy.auto_flip:
        b.set(reason="ready: waiting for a flip (auto_flip is off)")
        return
    cooldown_left = cooldown_remaining(b.state, policy, b.now)
    if cooldown_left > 0:
        b.set(reason=f"ready: cooldown after the last rollback ({cooldown_left:.0f}s left)")
        return
    if policy.progressive is not None:
        steps = policy.progressive.steps
        b.act(Action("expose", dark, trigger="auto", percent=steps[0], step=1,
                     reason=f"gates passed {b.state.passes} consecutive evaluations: "
                            f"progressive step 1/{len(steps)}"))
        return
    b.act(Action("flip", dark, trigger="auto",
                 reason=f"gates passed {b.state.passes} consecutive evaluations"))


def _hold_step(b: Builder, obs: Observation, dark: str, policy: PolicyConfig) -> None:
    """A progressive step is on the routes: hold it, judge the dark on its share of real
    traffic, then the next step or the full flip. A failing step (unsafe, dark not ready,
    too few samples by `max_hold`, the split changed by someone else) puts the dark back
    to 0 % in one patch and blocks the release with the reasons."""
    assert policy.progressive is not None
    steps = policy.progressive.steps
    index = b.state.exposure_step
    percent = steps[min(index, len(steps)) - 1]
    where = f"progressive step {index}/{len(steps)} ({percent} % to {dark})"
    if (obs.exposure_step, obs.exposed) != (index, percent):
        _fail_step(b, dark, f"{where} is no longer on the routes (they carry "
                            f"{obs.exposed} %, step {obs.exposure_step})", obs.exposed)
        return
    held = b.now - (b.state.exposure_since if b.state.exposure_since is not None else b.now)
    first = obs.reasons[0] if obs.reasons else "no reason given"
    if not obs.dark_ready:
        _fail_step(b, dark, f"{where} failed: {obs.dark_problem or 'dark not ready'}", percent)
        return
    if obs.verdict == "unsafe":
        _fail_step(b, dark, f"{where} failed: {'; '.join(obs.reasons) or first}", percent)
        return
    need = max(policy.progressive.hold, obs.window)
    if obs.verdict == "unknown":
        if held >= policy.progressive.max_hold:
            _fail_step(b, dark, f"{where}: still no verdict after max_hold "
                                f"{policy.progressive.max_hold:g}s: {first}", percent)
            return
        b.set(passes=0, reason=f"{where}: verdict unknown ({first}), held {held:.0f}s")
        return
    # Passes count only once the judged window lies within the step.
    passes = b.state.passes + 1 if held >= obs.window else 0
    b.set(passes=passes)
    if held < need or passes < policy.consecutive_passes:
        b.set(reason=f"{where}: held {held:.0f}s of {need:.0f}s, {passes}/"
                     f"{policy.consecutive_passes} consecutive passes")
        return
    if index < len(steps):
        b.act(Action("expose", dark, trigger="auto", percent=steps[index], step=index + 1,
                     reason=f"{where} passed: progressive step {index + 1}/{len(steps)}"))
        return
    b.act(Action("flip", dark, trigger="auto",
                 reason=f"progressive steps {', '.join(f'{p} %' for p in steps)} passed"))


def _fail_step(b: Builder, dark: str, why: str, exposed: int) -> None:
    """Back to 0 % (one patch, when the dark still has users) and blocked with the reason."""
    if exposed > 0:
        b.act(Action("expose", dark, trigger="gates", percent=0, step=0, reason=why))
    b.enter("blocked", f"{why}; {dark} is back at 0 %: fix the release, then approve to "
                       "validate again", trigger="gates", resume="validating",
            block_cause=BLOCK_STEP, passes=0, soak_started=None, exposure_step=0,
            exposure_since=None)


def _observe(b: Builder, obs: Observation, policy: PolicyConfig) -> None:
    """The observation window: key gates on the new active, then the go/no-go decision."""
    state = b.state
    failures = state.failures + 1 if obs.active_health == "fail" else (
        0 if obs.active_health == "pass" else state.failures)
    b.set(failures=failures)
    first = obs.active_reasons[0] if obs.active_reasons else "no reason given"
    if failures >= policy.rollback_on_gate_failures:
        why = f"key gates failed on {state.active} {failures} consecutive evaluations: {first}"
        if policy.auto_rollback:
            ask_rollback(b, obs, policy, "gates", why)
        else:
            b.enter("blocked", f"{why}; auto_rollback is off: roll back or approve",
                    trigger="gates", resume="flipped", block_cause="gates")
        return
    observed = b.now - (state.flipped_at if state.flipped_at is not None else b.now)
    if observed < policy.observation:
        note = f" ({failures} consecutive key failures)" if failures else ""
        b.set(reason=f"observing {state.active}: {observed:.0f}s of "
                     f"{policy.observation:.0f}s{note}")
        return
    if obs.active_health != "pass" or failures:
        b.set(reason=f"go/no-go not passed ({obs.active_health}): {first}")
        return
    if not (policy.auto_scale_down or state.scale_down_approved):
        b.set(reason=f"go/no-go passed: awaiting approval to scale down {state.previous}")
        return
    if state.previous is not None:
        b.act(Action("scale_down", state.previous, trigger="auto",
                     reason="go/no-go passed after the observation window",
                     keep=policy.scale_down_keep))


