"""The release lifecycle of one pair, as a pure state machine: no I/O, no clock of its own.

    idle ──new images in dark──> validating ──N passes + soak──> ready ──flip──> flipped
    ready ──(policy.progressive) step 1..n held and judged──> flip;  a step fails: 0 %, blocked
    flipped ──observation over, go/no-go passed──> stable ──new images in dark──> validating
    flipped | stable ──key gates fail M times / Alertmanager──> rolled_back
    any ──a person must act──> blocked

`step` folds one observation of the live cluster into the state and says which actions the
controller should take. Actions change the phase only once they have happened: the controller
reports them back through `completed` (or `failed`), so a dry run or a refused action never
leaves the state claiming a flip that did not happen. Every function returns a `Step`.
docs/lifecycle.md describes the phases for users.

Over 450 lines on purpose: the phases' transitions are one state machine, and its rules
are checked against each other when read side by side (a split would scatter one `step`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from gatekeeper.config import PolicyConfig

__all__ = [
    "PHASES",
    "Action",
    "Decision",
    "Health",
    "Observation",
    "Phase",
    "ReleaseState",
    "Step",
    "Transition",
    "alert_rollback",
    "approve",
    "completed",
    "failed",
    "fingerprint",
    "flip_check",
    "follow_routes",
    "rebuilt",
    "scale_down_check",
    "step",
    "switched",
    "unapprove",
]

Phase = Literal["idle", "validating", "ready", "flipped", "stable", "rolled_back", "blocked"]
PHASES: tuple[Phase, ...] = (
    "idle", "validating", "ready", "flipped", "stable", "rolled_back", "blocked",
)
ActionKind = Literal["scale_up", "flip", "rollback", "scale_down", "expose", "unmirror"]
Trigger = Literal["auto", "manual", "alertmanager", "gates"]
Health = Literal["pass", "fail", "unknown"]
VerdictName = Literal["safe", "unsafe", "unknown"]
Decision = Literal["flip", "scale_down"]
"""What a person approves: the flip (validating, ready) or the scale-down go/no-go (flipped)."""

_BLOCK_ROUTES = "routes"  # a block that clears itself once the routes agree again
_BLOCK_READY = "ready_timeout"  # the dark was not Ready within policy.ready_timeout
_BLOCK_EVIDENCE = "validation_timeout"  # a Ready dark stayed unknown past validation_timeout
_BLOCK_STEP = "progressive"  # a progressive step failed: the dark is back at 0 %
EVIDENCE_HINT = "enable load or mirroring for the dark, or fix the source"
"""What to do when the dark has no evidence (said in the block's reason)."""


def fingerprint(images: Iterable[str]) -> str:
    """A short, order-independent identity of a namespace's images ('' when it has none)."""
    unique = sorted(set(images))
    if not unique:
        return ""
    return hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Observation:
    """What the controller saw on one tick: live routes, live Deployments, the cached verdict.

    `active` is None when the routes disagree or cannot be read (`route_problem` says why).
    `verdict` is the judge's verdict on the dark namespace; `active_health` is the key gates
    on the active namespace (`fail` when one fails, `pass` when all pass, else `unknown`).
    """

    active: str | None
    dark: str | None
    route_problem: str = ""
    active_images: tuple[str, ...] = ()
    dark_images: tuple[str, ...] = ()
    dark_replicas: int | None = 0
    """Desired replicas summed over the dark's Deployments; None when unreadable."""
    dark_ready: bool = False
    dark_problem: str = ""
    dark_short: tuple[str, ...] = ()
    """Deployments of the dark below their production count (configuration, else the
    active's), e.g. `api 1/2`: validating scales them up first, so the release is validated
    at the size that will take traffic."""
    verdict: VerdictName = "unknown"
    reasons: tuple[str, ...] = ()
    active_health: Health = "unknown"
    active_reasons: tuple[str, ...] = ()
    window: float = 0.0
    """How far back the judged data reaches (the longest rule window), in seconds. A pass
    counts only once the dark has been ready that long: until then the window still holds
    the previous release's samples from the same namespace."""
    switch_kind: str = ""
    """The routes' own record of the switch that sent traffic to `active` (`flip` or
    `rollback`, written by the patch that moved them; '' when none): with `switched_from`
    and `switched_at`, what a lost or unreadable state is rebuilt from."""
    switched_from: str | None = None
    switched_at: float | None = None
    verdict_at: float | None = None
    """When the verdict was reached (the lifecycle's clock); None: no bound applies."""
    verdict_max_age: float | None = None
    """Seconds after `verdict_at` the verdict is `unknown` (the evaluation is late)."""
    exposed: int = 0
    """Percent of users gatekeeper's progressive split sends to the dark (0: none)."""
    exposure_step: int = 0
    """The progressive step the routes carry (1-based; 0: none)."""
    mirrored: bool = False
    """Some route is in gatekeeper's mirroring form (copies requests to the dark)."""
    mirroring_wanted: bool = False
    """The pair configures mirroring (it may mirror while it validates a Ready dark)."""


def verdict_staleness(obs: Observation, now: float) -> str | None:
    """Why the observation's verdict is too old to rely on at `now`, or None."""
    if obs.verdict_at is None or obs.verdict_max_age is None:
        return None
    age = now - obs.verdict_at
    if -obs.verdict_max_age <= age <= obs.verdict_max_age:
        return None
    return (f"the verdict is {age:.0f}s old (bound {obs.verdict_max_age:g}s): the evaluation "
            "is late, so it is unknown")


def aged(obs: Observation, now: float) -> Observation:
    """The observation as of `now`: a verdict older than its bound is `unknown`, and so is
    the active namespace's health read from it (a late evaluation neither flips nor rolls
    back)."""
    stale = verdict_staleness(obs, now)
    if stale is None:
        return obs
    return replace(obs, verdict="unknown", reasons=(stale, *obs.reasons),
                   active_health="unknown", active_reasons=(stale, *obs.active_reasons))


@dataclass(frozen=True)
class ReleaseState:
    """Everything the lifecycle remembers about a pair between ticks (persisted by the store).

    Timestamps are Unix seconds from the injected clock; None means "not yet".
    """

    phase: Phase = "idle"
    since: float = 0.0
    reason: str = ""
    trigger: str = ""
    active: str | None = None
    dark: str | None = None
    dark_seen: str | None = None
    """Fingerprint of the dark's images already accounted for; None: learn it on next tick."""
    release: str = ""
    """Fingerprint of the release under way (the dark's, then the new active's after a flip)."""
    soak_started: float | None = None
    passes: int = 0
    failures: int = 0
    flip_approved: bool = False
    scale_down_approved: bool = False
    flipped_at: float | None = None
    previous: str | None = None
    """Where traffic was before the last flip: the rollback target while flipped or stable."""
    scaled_down_at: float | None = None
    last_rollback_at: float | None = None
    resume: Phase | None = None
    """The phase to return to when a block is cleared."""
    block_cause: str = ""
    waiting_since: float | None = None
    """While validating: since when the dark has not been Ready (bounded by ready_timeout)."""
    unknown_since: float | None = None
    """While validating a Ready dark: since when the verdict has been unknown (bounded by
    validation_timeout)."""
    exposure_step: int = 0
    """Ready with `policy.progressive`: the step in place (1-based; 0: none)."""
    exposure_since: float | None = None
    """When that step was set on the routes."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (persisted and shown by the API)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseState:
        """Inverse of `to_dict`; unknown keys are ignored. ValueError naming the field when
        one holds the wrong type or a phase this version does not know (a newer version
        wrote it, or a bad edit): such a state is rebuilt from the routes (`rebuilt`)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("phase", "idle") not in PHASES:
            raise ValueError(f"phase {known.get('phase')!r} is not one this version knows "
                             f"({', '.join(PHASES)})")
        if known.get("resume") not in (*PHASES, None):
            raise ValueError(f"resume {known.get('resume')!r} is not a phase")
        for name, value in known.items():
            if not _STATE_TYPES[name](value):
                raise ValueError(f"field {name!r} has the wrong type ({type(value).__name__})")
        return cls(**known)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _optional_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _optional_time(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_STATE_TYPES: dict[str, Any] = {
    "phase": _text, "since": lambda v: _optional_time(v) and v is not None,
    "reason": _text, "trigger": _text,
    "active": _optional_text, "dark": _optional_text, "dark_seen": _optional_text,
    "release": _text, "soak_started": _optional_time, "passes": _whole, "failures": _whole,
    "flip_approved": lambda v: isinstance(v, bool),
    "scale_down_approved": lambda v: isinstance(v, bool),
    "flipped_at": _optional_time, "previous": _optional_text,
    "scaled_down_at": _optional_time, "last_rollback_at": _optional_time,
    "resume": _optional_text, "block_cause": _text, "waiting_since": _optional_time,
    "unknown_since": _optional_time, "exposure_step": _whole, "exposure_since": _optional_time,
}
"""What each stored ReleaseState field must hold."""


@dataclass(frozen=True)
class Action:
    """Something the controller should do to the cluster."""

    kind: ActionKind
    namespace: str
    trigger: Trigger = "auto"
    reason: str = ""
    keep: int = 0
    scale_up_first: bool = False
    force: bool = False
    """A person overrode the checks (`--force`): no readiness or capacity check, recorded
    as forced."""
    percent: int = 0
    """expose: percent of users to the dark (0: back to none)."""
    step: int = 0
    """expose: the progressive step (1-based; 0 with percent 0)."""

    def describe(self) -> str:
        """`flip to production-green (auto)` for logs, events and the API."""
        preposition = {"flip": "to", "rollback": "to", "scale_up": "", "scale_down": "",
                       "expose": f"{self.percent} % to", "unmirror": "mirroring to"}
        target = f"{preposition[self.kind]} {self.namespace}".strip()
        extra = f", keep {self.keep}" if self.kind == "scale_down" else ""
        if self.kind == "expose" and self.step:
            extra = f", step {self.step}"
        return f"{self.kind.replace('_', '-')} {target} ({self.trigger}{extra})"


@dataclass(frozen=True)
class Transition:
    """One phase change, for the audit trail."""

    at: float
    source: Phase
    target: Phase
    trigger: str
    reason: str
    by: str = ""
    """Who asked for it (an approver's name), '' for gatekeeper's own decisions."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = {"at": self.at, "from": self.source, "to": self.target,
               "trigger": self.trigger, "reason": self.reason}
        return {**out, "by": self.by} if self.by else out


@dataclass(frozen=True)
class Step:
    """The outcome of a lifecycle function: the new state, actions to take, phase changes.

    `refusal` holds the reasons when a request (approve, alert) could not be acted on;
    `note` says what a request did (or why it changed nothing), for the audit trail.
    """

    state: ReleaseState
    actions: tuple[Action, ...] = ()
    transitions: tuple[Transition, ...] = ()
    refusal: tuple[str, ...] = ()
    note: str = ""


class _Builder:
    """Accumulates one Step; keeps the transition bookkeeping out of the rules below."""

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


# -- the tick ----------------------------------------------------------------------------------


def step(state: ReleaseState, obs: Observation, policy: PolicyConfig, now: float) -> Step:
    """Fold one observation into the state; return the actions the policy asks for."""
    obs = aged(obs, now)
    b = _Builder(state, now)
    if obs.active is None or obs.dark is None:
        problem = obs.route_problem or "the routes cannot be read"
        if state.phase != "blocked":
            b.enter("blocked", f"routes: {problem}; no automatic action until resolved",
                    resume=state.phase, block_cause=_BLOCK_ROUTES)
        return b.build()
    dark_print = fingerprint(obs.dark_images)
    if _follow(b, obs):
        return b.build()
    if b.state.dark_seen is None:
        b.set(dark_seen=dark_print)
    if b.state.phase == "blocked" and b.state.block_cause == _BLOCK_ROUTES:
        _unblock(b, "routes agree again")
    if dark_print and obs.active_images and dark_print != b.state.dark_seen:
        b.set(dark_seen=dark_print)
        if set(obs.dark_images) != set(obs.active_images):
            _start_validating(b, dark_print, "new images in the dark namespace")
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


def _unmirror_outside_validation(b: _Builder, obs: Observation) -> None:
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


def _unexpose_outside_ready(b: _Builder, obs: Observation) -> None:
    """Outside `ready` no user goes to the dark: a progressive split still on the routes
    (the release changed, the pair is blocked, an earlier patch failed) goes back to 0 %."""
    if b.state.phase == "ready" or obs.exposed <= 0 or obs.dark is None:
        return
    if any(a.kind in ("expose", "flip", "rollback") for a in b.actions):
        return
    b.act(Action("expose", obs.dark, reason=f"{b.state.phase}: no users to {obs.dark} outside "
                 "a progressive step", percent=0, step=0))


def follow_routes(state: ReleaseState, obs: Observation, now: float) -> Step | None:
    """The step that follows where the live routes send traffic, when that is not where
    `state` last saw it (first sight, a switch the state never heard of, a person's kubectl):
    the one rule every caller uses (the control loop's `step`, and `state` when an action
    reconciles the record with the routes). None when the routes agree with `state` or
    cannot be read. `obs` needs only the routes' fields (active, dark, the switch record);
    without `dark_images` the dark's images are learned on the next tick."""
    if obs.active is None or obs.dark is None:
        return None
    b = _Builder(state, now)
    return b.build() if _follow(b, obs) else None


def _follow(b: _Builder, obs: Observation) -> bool:
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


def _from_record(b: _Builder, obs: Observation) -> bool:
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


def _moved_outside(b: _Builder, obs: Observation) -> None:
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


def _unblock(b: _Builder, reason: str) -> None:
    resume = b.state.resume or "idle"
    b.enter(resume, reason, trigger="manual", resume=None, block_cause="", passes=0,
            failures=0)


def _start_validating(b: _Builder, release: str, reason: str, trigger: str = "auto") -> None:
    b.enter("validating", reason, trigger=trigger, release=release, soak_started=None,
            passes=0, failures=0, flip_approved=False, scale_down_approved=False,
            previous=None, flipped_at=None, scaled_down_at=None, resume=None, block_cause="",
            unknown_since=None, exposure_step=0, exposure_since=None)


def _validate(b: _Builder, obs: Observation, dark: str, policy: PolicyConfig) -> None:
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


def _evidence_timed_out(b: _Builder, obs: Observation, policy: PolicyConfig) -> bool:
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
            resume="validating", block_cause=_BLOCK_EVIDENCE, unknown_since=None, passes=0,
            soak_started=None)
    return True


def _wait_for_dark(b: _Builder, policy: PolicyConfig, why: str) -> None:
    """The dark cannot serve yet: no passes count; past `ready_timeout` the pair is blocked
    (a person fixes the release and approves, or a new release starts over)."""
    since = b.state.waiting_since if b.state.waiting_since is not None else b.now
    b.set(passes=0, soak_started=None, waiting_since=since, unknown_since=None, reason=why)
    if b.now - since >= policy.ready_timeout:
        b.enter("blocked", f"not ready after ready_timeout {policy.ready_timeout:g}s: {why}",
                resume="validating", block_cause=_BLOCK_READY, waiting_since=None)


def _ready(b: _Builder, obs: Observation, dark: str, policy: PolicyConfig) -> None:
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
    cooldown_left = _cooldown_left(b.state, policy, b.now)
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


def _hold_step(b: _Builder, obs: Observation, dark: str, policy: PolicyConfig) -> None:
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


def _fail_step(b: _Builder, dark: str, why: str, exposed: int) -> None:
    """Back to 0 % (one patch, when the dark still has users) and blocked with the reason."""
    if exposed > 0:
        b.act(Action("expose", dark, trigger="gates", percent=0, step=0, reason=why))
    b.enter("blocked", f"{why}; {dark} is back at 0 %: fix the release, then approve to "
                       "validate again", trigger="gates", resume="validating",
            block_cause=_BLOCK_STEP, passes=0, soak_started=None, exposure_step=0,
            exposure_since=None)


def _observe(b: _Builder, obs: Observation, policy: PolicyConfig) -> None:
    """The observation window: key gates on the new active, then the go/no-go decision."""
    state = b.state
    failures = state.failures + 1 if obs.active_health == "fail" else (
        0 if obs.active_health == "pass" else state.failures)
    b.set(failures=failures)
    first = obs.active_reasons[0] if obs.active_reasons else "no reason given"
    if failures >= policy.rollback_on_gate_failures:
        why = f"key gates failed on {state.active} {failures} consecutive evaluations: {first}"
        if policy.auto_rollback:
            _rollback(b, obs, policy, "gates", why)
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


def _rollback(
    b: _Builder, obs: Observation, policy: PolicyConfig, trigger: Trigger, reason: str
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


def _reflipped(state: ReleaseState) -> bool:
    """Traffic was sent to the current release after the last rollback. No automatic flip
    happens within the cooldown, so this was a person's deliberate new release (API, CLI,
    kubectl): the cooldown, which stops automatic actions from flapping, does not hide a
    critical alert about it."""
    return (state.flipped_at is not None and state.last_rollback_at is not None
            and state.flipped_at > state.last_rollback_at)


def _cooldown_left(state: ReleaseState, policy: PolicyConfig, now: float) -> float:
    if state.last_rollback_at is None:
        return 0.0
    return max(0.0, state.last_rollback_at + policy.cooldown - now)


# -- outcomes of actions -------------------------------------------------------------------------


def completed(state: ReleaseState, action: Action, now: float) -> Step:
    """An action happened (ours, or a person's through the API): move the phase."""
    b = _Builder(state, now)
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
    b = _Builder(state, now)
    text = "; ".join(reasons) or "no reason given"
    b.enter("blocked", f"{action.describe()} failed: {text}", trigger=action.trigger,
            resume=state.phase if state.phase != "blocked" else state.resume,
            block_cause=action.kind)
    return b.build()


# -- requests from people and from Alertmanager -------------------------------------------------


def approve(state: ReleaseState, now: float, decision: Decision | None = None, *,
            by: str = "") -> Step:
    """A person's go-ahead; idempotent. Without `decision` it means what the phase needs:
    validate and flip (idle, rolled_back), flip (validating, ready), scale down (flipped),
    resume (blocked). With one, it approves only that decision and is refused in a phase
    where it does not apply (a pipeline's go/no-go step never approves a flip, nor
    unblocks a pair, by accident). `by` names the approver on the transitions."""
    b = _Builder(state, now, by)
    phase = state.phase
    if decision is not None and phase == "blocked":
        return b.build([f"blocked: {state.reason}; approve without a decision to resume"])
    wants_flip = decision in (None, "flip")
    wants_scale_down = decision in (None, "scale_down")
    if phase in ("idle", "rolled_back") and wants_flip:
        if state.dark is None:
            return b.build(["the pair has not been observed yet"])
        _start_validating(b, state.dark_seen or "", "approved: validate the dark namespace",
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
        _unblock(b, "approved: resume")
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
    b = _Builder(state, now, by)
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
    b = _Builder(state, now)
    phase = state.resume if state.phase == "blocked" else state.phase
    if phase not in ("flipped", "stable") or state.previous is None:
        return b.build([f"phase {state.phase}: no release to roll back"])
    cooldown_left = _cooldown_left(state, policy, now)
    if cooldown_left > 0 and not _reflipped(state):
        return b.build([f"cooldown: last rollback {policy.cooldown - cooldown_left:.0f}s ago"])
    refusal = _rollback(b, obs, policy, "alertmanager", reason)
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
    if not reasons and (left := _cooldown_left(state, policy, now)) > 0:
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
