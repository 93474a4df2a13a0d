"""One pair's persisted record (PairState): the lifecycle's state and the audit trail, its
JSON form, and how a stored record is read (an unreadable one is rebuilt, never trusted)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import structlog

from gatekeeper import lifecycle
from gatekeeper.lifecycle import ReleaseState

log = structlog.get_logger()


LIFECYCLE_KEY = "lifecycle"
"""Where the record keeps the lifecycle's state (`lifecycle.ReleaseState`)."""


class StateError(Exception):
    """The state ConfigMap could not be read or written."""


@dataclass
class PairState:
    """One pair's persisted record: the release state and the audit trail. Times are Unix
    seconds.

    The one copy of phase, previous and the rest of the lifecycle's memory is `release`
    (a `lifecycle.ReleaseState`, stored under `lifecycle`); `phase`, `previous`, `active` and
    `dark` read it. Where traffic goes is the live routes' answer: `active` is only where
    the record last saw it, and every write first follows the routes (`reconcile_state`).
    """

    release: ReleaseState | None = None
    """The lifecycle's state; None when none was stored yet."""
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    """namespace -> `deployment/container` -> image."""
    timestamps: dict[str, float] = field(default_factory=dict)
    """deployed, flipped, rolled_back, scaled_up, scaled_down, approved, ..."""
    approvals: list[dict[str, Any]] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    """Production replica count per Deployment name, restored by the next scale-up."""
    counters: dict[str, int] = field(default_factory=dict)
    last_action: dict[str, Any] | None = None
    """id, kind, from, to, trigger, reason, at, status (started/done/failed/...)."""
    transitions: list[dict[str, Any]] = field(default_factory=list)
    """The last N changes, oldest first."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept so a newer writer's data survives."""
    unreadable: str | None = None
    """Why the stored record could not be read (this state is fresh; not stored itself)."""

    @property
    def phase(self) -> str:
        """The release phase (`idle` before the first observation)."""
        return self.release.phase if self.release else "idle"

    @property
    def previous(self) -> str | None:
        """Where a rollback returns traffic, as the lifecycle knows it (the routes' own
        switch record comes first: `routers.base.ActiveState.last_switch`)."""
        return self.release.previous if self.release else None

    @property
    def active(self) -> str | None:
        """Where the record last saw the traffic (the live routes are the truth)."""
        return self.release.active if self.release else None

    @property
    def dark(self) -> str | None:
        """The other namespace, as last seen."""
        return self.release.dark if self.release else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in the ConfigMap."""
        out: dict[str, Any] = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                               if f.name not in ("extra", "unreadable", "release")}
        if self.release is not None:
            out[LIFECYCLE_KEY] = self.release.to_dict()
        return {**copy.deepcopy(self.extra), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairState:
        """Parse stored JSON; unknown keys go to `extra`. ValueError naming the first field
        of the wrong type (a bad `kubectl edit`): nothing of such a record is trusted.

        A record from before the one-record change kept `active`, `dark`, `previous` and
        `phase` beside the lifecycle's own: they are dropped (the lifecycle's copy, or the
        routes, replace them), never kept as a second copy."""
        known = {f.name for f in fields(cls)} - {"extra", "unreadable", "release"}
        for name, value in data.items():
            if name in known and not _FIELD_TYPES[name](value):
                raise ValueError(f"field {name!r} has the wrong type "
                                 f"({type(value).__name__}: {json.dumps(value)[:80]})")
        release = None
        raw = data.get(LIFECYCLE_KEY)
        if raw is not None:
            if not isinstance(raw, dict):
                raise ValueError(f"field {LIFECYCLE_KEY!r} is a JSON {type(raw).__name__}, "
                                 "not an object")
            try:
                release = ReleaseState.from_dict(raw)
            except TypeError as exc:
                raise ValueError(f"field {LIFECYCLE_KEY!r}: {exc}") from exc
            except ValueError as exc:
                raise ValueError(f"field {LIFECYCLE_KEY!r}: {exc}") from exc
        values = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        extra = {k: copy.deepcopy(v) for k, v in data.items()
                 if k not in known and k != LIFECYCLE_KEY and k not in _LEGACY_KEYS}
        return cls(**values, release=release, extra=extra)

    def transition(self, kind: str, *, at: float, history: int, source: str | None = None,
                   target: str | None = None, **details: Any) -> dict[str, Any]:
        """Append an audit record (`from`, `to`, details) and keep only the last `history`."""
        fields_ = {"from": source, "to": target, **details}
        record = {"at": at, "kind": kind, **{k: v for k, v in fields_.items() if v is not None}}
        self.transitions.append(record)
        del self.transitions[:-history]
        return record

    def count(self, name: str) -> None:
        """Increment a counter (flips, rollbacks, conflicts...)."""
        self.counters[name] = self.counters.get(name, 0) + 1

    def begin(self, kind: str, *, at: float, source: str | None = None,
              target: str | None = None, trigger: str = "manual", reason: str = "",
              action_id: str | None = None, **details: Any) -> str:
        """Record an action as started before acting; a restart then knows it was attempted.

        `details` (e.g. the images and replica counts a switch records once done, and which
        process started it) let a restart finish the bookkeeping of an interrupted action.
        """
        action_id = action_id or uuid.uuid4().hex[:12]
        self.last_action = {**details, "id": action_id, "kind": kind, "from": source,
                            "to": target, "trigger": trigger, "reason": reason, "at": at,
                            "status": "started"}
        return action_id

    def completed(self, action: dict[str, Any], *, at: float, note: str) -> None:
        """A switch recorded as started is known to have reached its target (after a restart):
        the same bookkeeping as when it finishes normally."""
        kind, source, target = action.get("kind"), action.get("from"), action.get("to")
        self.switched(str(kind), source=str(source), target=str(target), at=at)
        if isinstance(action.get("images"), dict):
            self.images.update(copy.deepcopy(action["images"]))
        if isinstance(action.get("replicas"), dict):
            self.replicas.update(action["replicas"])
        self.last_action = {**action, "status": "done", "finished": at, "note": note}

    def finish(self, action_id: str, status: str, *, at: float) -> None:
        """Close the started action (done, failed, conflict, reverted...)."""
        if self.last_action and self.last_action.get("id") == action_id:
            self.last_action = {**self.last_action, "status": status, "finished": at}

    def switched(self, kind: str, *, source: str, target: str, at: float,
                 trigger: str = "manual", reason: str = "") -> None:
        """The routes now point at `target`: the lifecycle's step for a switch (a flip
        remembers `source` for a rollback, a rollback clears it)."""
        switch_kind: Literal["flip", "rollback"] = "flip" if kind == "flip" else "rollback"
        self.release = lifecycle.switched(self.release or ReleaseState(), switch_kind,
                                          source=source, target=target, trigger=trigger,
                                          reason=reason, now=at).state
        self.timestamps["flipped" if kind == "flip" else "rolled_back"] = at
        self.count(kind)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _map_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, dict) and all(
        isinstance(k, str) and check(v) for k, v in value.items())


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_of_maps(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


_FIELD_TYPES: dict[str, Callable[[Any], bool]] = {
    "images": _map_of(_map_of(lambda value: isinstance(value, str))),
    "timestamps": _map_of(_number),
    "approvals": _list_of_maps,
    "replicas": _map_of(_count),
    "counters": _map_of(_count),
    "last_action": lambda value: value is None or isinstance(value, dict),
    "transitions": _list_of_maps,
}
"""What each stored field must hold."""

_LEGACY_KEYS = ("active", "dark", "previous", "phase")
"""Copies of the lifecycle's fields a record kept before it had one copy of them."""

UNREADABLE_KEY = "unreadable_record"
"""Where a rebuilt record keeps the text it replaced (for a person to look at)."""


def parse_record(raw: Any, where: str, name: str, at: float) -> PairState:
    """A stored record; an unreadable one (not JSON, not an object, a field of the wrong
    type) is a fresh state saying why (`unreadable`), keeping the text it replaces for the
    next write: the live routes are the truth it is rebuilt from."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return PairState.from_dict(data)
    except (ValueError, TypeError, RecursionError) as exc:
        problem = f"{where} is not a readable state record: {exc}"
        log.error("state record unreadable; rebuilding it from the routes", pair=name,
                  error=problem)
        text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        return PairState(unreadable=problem,
                         extra={UNREADABLE_KEY: {"error": problem, "at": at,
                                                 "text": str(text)[:4096]}})

