"""What people hear about a release: events derived from two snapshots of a pair (pure).

A `Snapshot` is what a person could notice about one pair at one moment (phase, who takes
traffic, the verdict and its reasons, whether an approval or a go/no-go is waiting, what a
dry run would have done). `derive(previous, current)` compares two of them and returns the
`Notice`s worth sending: one per change, never one per evaluation, so a verdict that stays
unsafe for an hour is announced once, and again only once it recovers.

No I/O: the controller builds the snapshots at the one place a pair's lifecycle state is
committed, and `gatekeeper.service.notifications` renders and delivers the notices.
docs/notifications.md lists the events for users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gatekeeper.config import PolicyConfig
from gatekeeper.lifecycle import Observation, Phase, ReleaseState

__all__ = [
    "EVENTS",
    "EventName",
    "Notice",
    "Snapshot",
    "derive",
    "for_action",
    "snapshot",
]

EventName = Literal[
    "validating", "dark_ready", "dark_unsafe", "dark_recovered", "awaiting_approval",
    "ready", "flipped", "rolled_back", "blocked", "unblocked", "evidence_stuck",
    "go_no_go_due", "scaled_down", "would_act", "approved",
]
EVENTS: tuple[EventName, ...] = (
    "validating", "dark_ready", "dark_unsafe", "dark_recovered", "awaiting_approval",
    "ready", "flipped", "rolled_back", "blocked", "unblocked", "evidence_stuck",
    "go_no_go_due", "scaled_down", "would_act", "approved",
)
Severity = Literal["info", "good", "warning", "critical"]
SEVERITY: dict[EventName, Severity] = {
    "validating": "info", "dark_ready": "info", "dark_unsafe": "warning",
    "dark_recovered": "good", "awaiting_approval": "warning", "ready": "good",
    "flipped": "good", "rolled_back": "critical", "blocked": "critical", "unblocked": "good",
    "evidence_stuck": "warning", "go_no_go_due": "warning", "scaled_down": "info",
    "would_act": "info", "approved": "good",
}
TOP_REASONS = 3
"""Reasons a message carries at most (the API has them all)."""


@dataclass(frozen=True)
class Snapshot:
    """What a person could notice about one pair at one moment."""

    pair: str
    namespaces: tuple[str, str]
    phase: Phase
    active: str | None
    dark: str | None
    reason: str = ""
    """Why the pair is in its phase (the lifecycle's reason)."""
    trigger: str = ""
    verdict: str = "unknown"
    reasons: tuple[str, ...] = ()
    """The verdict's reasons on the dark (validating) or the active's key gates (flipped)."""
    judged: str = "unknown"
    """The last verdict that was not `unknown` for this release: a verdict flapping between
    unsafe and unknown is one change, not many."""
    dark_ready: bool = False
    images: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each namespace's images, keyed by namespace (the release each one runs)."""
    awaiting: Literal["", "flip", "scale_down"] = ""
    """An approval a person has to give now."""
    go_no_go_due: bool = False
    scaled_down_at: float | None = None
    unknown_since: float | None = None
    """Since when the verdict has been unknown while validating (None: it is not)."""
    evidence_stuck: str = ""
    """Why the evidence does not come (a verdict unknown for long, or a hook's reason)."""
    would: tuple[str, ...] = ()
    """Dry-run: what gatekeeper would have done on this tick."""
    approver: str = ""
    """Who approved, when this change was a person's approval."""
    approved: tuple[str, ...] = ()
    """The decisions approved now: `flip`, `scale_down`."""
    dry_run: bool = False
    at: float = 0.0
    """Wall-clock seconds (what people read)."""


@dataclass(frozen=True)
class Notice:
    """One message: an event of one pair, with everything a person needs to act on it."""

    event: EventName
    pair: str
    summary: str
    """One line: what happened and why."""
    namespaces: tuple[str, str]
    active: str | None
    dark: str | None
    phase: str
    verdict: str
    reasons: tuple[str, ...] = ()
    images: dict[str, tuple[str, ...]] = field(default_factory=dict)
    trigger: str = ""
    approver: str = ""
    dry_run: bool = False
    at: float = 0.0

    @property
    def severity(self) -> Severity:
        """How urgent: `critical` (rolled back, blocked) to `info`."""
        return SEVERITY[self.event]

    def title(self) -> str:
        """`[dry-run] api: rolled back to api-blue (alertmanager)`."""
        prefix = "[dry-run] " if self.dry_run else ""
        what = _TITLES[self.event]
        target = {"flipped": self.active, "rolled_back": self.active}.get(self.event)
        if target is None and self.event in ("validating", "dark_ready", "dark_unsafe",
                                              "dark_recovered", "ready", "evidence_stuck"):
            target = self.dark
        where = f" {target}" if target else ""
        trigger = f" ({self.trigger})" if self.trigger and self.event in (
            "flipped", "rolled_back", "blocked", "unblocked", "scaled_down") else ""
        return f"{prefix}{self.pair}: {what}{where}{trigger}"


_TITLES: dict[EventName, str] = {
    "validating": "validating the new release in", "dark_ready": "dark ready, validating",
    "dark_unsafe": "gates fail on", "dark_recovered": "gates pass again on",
    "awaiting_approval": "awaiting approval", "ready": "ready to flip to",
    "flipped": "flipped to", "rolled_back": "rolled back to", "blocked": "blocked",
    "unblocked": "unblocked", "evidence_stuck": "evidence stuck on",
    "go_no_go_due": "go/no-go due", "scaled_down": "scaled down the previous release",
    "would_act": "dry-run: would act", "approved": "approved",
}


def snapshot(
    pair: str, namespaces: tuple[str, str], state: ReleaseState, obs: Observation | None,
    policy: PolicyConfig, now: float, *, previous: Snapshot | None, at: float,
    stuck_after: float, would: tuple[str, ...] = (), evidence_problem: str = "",
    approver: str = "", dry_run: bool = False,
) -> Snapshot:
    """The pair as a person sees it: `state` (just committed) over the tick's observation.

    `now` is the lifecycle's clock (durations), `at` the wall clock (stamps).
    `previous` carries how long the verdict has been unknown; `stuck_after` seconds of it
    while validating is stuck evidence, and so is a non-empty `evidence_problem` (the hook
    for the evidence work).
    """
    verdict: str = obs.verdict if obs is not None else "unknown"
    flipped = state.phase in ("flipped", "stable")
    if obs is None:
        reasons: tuple[str, ...] = ()
    else:
        reasons = obs.active_reasons if flipped else obs.reasons
    images: dict[str, tuple[str, ...]] = {}
    if obs is not None:
        if obs.active is not None:
            images[obs.active] = obs.active_images
        if obs.dark is not None:
            images[obs.dark] = obs.dark_images
    validating = state.phase == "validating"
    judged = verdict
    if verdict == "unknown":
        same_release = previous is not None and previous.phase in ("validating", "ready")
        judged = previous.judged if previous is not None and same_release else "unknown"
    unknown_since = None
    if validating and verdict == "unknown":
        earlier = previous.unknown_since if previous is not None else None
        unknown_since = earlier if earlier is not None else now
    stuck = evidence_problem if validating else ""
    if not stuck and unknown_since is not None and now - unknown_since >= stuck_after:
        first = reasons[0] if reasons else "no reason given"
        stuck = f"the verdict has been unknown for {now - unknown_since:.0f}s: {first}"
    awaiting: Literal["", "flip", "scale_down"] = ""
    observed = now - state.flipped_at if state.flipped_at is not None else 0.0
    due = state.phase == "flipped" and observed >= policy.observation
    if state.phase == "ready" and policy.require_approval and not state.flip_approved:
        awaiting = "flip"
    elif due and obs is not None and obs.active_health == "pass" and not (
            policy.auto_scale_down or state.scale_down_approved) and state.failures == 0:
        awaiting = "scale_down"
    return Snapshot(
        pair=pair, namespaces=namespaces, phase=state.phase, active=state.active,
        dark=state.dark, reason=state.reason, trigger=state.trigger, verdict=verdict,
        reasons=tuple(reasons[:TOP_REASONS]), judged=judged,
        dark_ready=bool(obs is not None and obs.dark_ready and obs.dark == state.dark),
        images=images, awaiting=awaiting, go_no_go_due=due,
        scaled_down_at=state.scaled_down_at, unknown_since=unknown_since,
        evidence_stuck=stuck, would=would, approver=approver, dry_run=dry_run, at=at,
        approved=tuple(name for name, yes in (("flip", state.flip_approved),
                                              ("scale_down", state.scale_down_approved))
                       if yes))


def derive(previous: Snapshot, current: Snapshot) -> list[Notice]:
    """The notices for the change from `previous` to `current` (empty: nothing changed that
    a person should hear about). At most one notice per event name."""
    events: list[tuple[EventName, str]] = []
    phase, before = current.phase, previous.phase
    moved = current.active != previous.active
    if phase != before:
        if phase == "flipped" and moved:
            events.append(("flipped", current.reason))
        elif phase == "rolled_back":
            events.append(("rolled_back", current.reason))
        elif phase == "blocked":
            events.append(("blocked", current.reason))
        elif before == "blocked":
            events.append(("unblocked", current.reason))
        elif phase == "validating" and before != "ready":
            events.append(("validating", current.reason))
        elif phase == "ready" and not current.awaiting:
            events.append(("ready", current.reason))
        elif phase == "stable" and current.scaled_down_at != previous.scaled_down_at:
            events.append(("scaled_down", current.reason))
    elif phase == "flipped" and moved:
        events.append(("flipped", current.reason))  # flipped again, by hand
    if current.scaled_down_at is not None and current.scaled_down_at != \
            previous.scaled_down_at and phase != "stable":
        events.append(("scaled_down", f"scaled {current.dark} down"))
    dark_phase = phase in ("validating", "ready")
    if dark_phase and before in ("validating", "ready") and current.dark_ready \
            and not previous.dark_ready:
        events.append(("dark_ready", f"{current.dark} is ready: validating it"))
    if dark_phase and current.judged == "unsafe" and previous.judged != "unsafe":
        events.append(("dark_unsafe", _first(current.reasons, current.reason)))
    if dark_phase and previous.judged == "unsafe" and current.judged == "safe":
        events.append(("dark_recovered", current.reason))
    if current.awaiting and current.awaiting != previous.awaiting:
        what = (f"flip to {current.dark}" if current.awaiting == "flip"
                else f"scale down {current.dark}")
        events.append(("awaiting_approval", f"ready: approve to {what}"))
    if current.go_no_go_due and not previous.go_no_go_due:
        if events and events[-1][0] == "awaiting_approval" and current.awaiting == "scale_down":
            events.pop()  # one message: the go/no-go is due and waits for an approval
        events.append(("go_no_go_due", current.reason))
    if current.evidence_stuck and not previous.evidence_stuck:
        events.append(("evidence_stuck", current.evidence_stuck))
    granted = [name for name in current.approved if name not in previous.approved]
    if granted:
        what = " and ".join(g.replace("_", "-") for g in granted)
        events.append(("approved", f"{what} approved by {current.approver or 'unknown'}"))
    if current.would and current.would != previous.would:
        events.append(("would_act", "; ".join(current.would)))
    seen: set[str] = set()
    notices = []
    for event, summary in events:
        if event in seen:
            continue
        seen.add(event)
        notices.append(_notice(current, event, summary))
    return notices


def for_action(current: Snapshot, event: EventName, summary: str) -> Notice:
    """A notice for an action taken outside the control loop (the CLI's flip, rollback or
    scale-down): the same shape the loop sends."""
    return _notice(current, event, summary)


def _notice(current: Snapshot, event: EventName, summary: str) -> Notice:
    return Notice(
        event=event, pair=current.pair, summary=summary or _TITLES[event],
        namespaces=current.namespaces, active=current.active, dark=current.dark,
        phase=current.phase, verdict=current.verdict, reasons=current.reasons,
        images=dict(current.images), trigger=current.trigger, approver=current.approver,
        dry_run=current.dry_run, at=current.at)


def _first(reasons: tuple[str, ...], fallback: str) -> str:
    return reasons[0] if reasons else fallback

