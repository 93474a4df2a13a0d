"""What the lifecycle keeps and returns: the phases, a pair's ReleaseState (persisted), the
Actions it asks for, the Transitions of the audit trail and the Step that carries them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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

