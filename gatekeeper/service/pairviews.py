"""The controller's cached picture of every pair, and the answers its requests give.

`PairViews` holds, per pair, the view API reads are served from, the lock an action holds
and the generation counter that tells a tick its reads predate an action. No I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from gatekeeper import notices
from gatekeeper.config import PairConfig
from gatekeeper.environments import Readiness
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.measurements import Verdict
from gatekeeper.state import PairState

__all__ = ["ActionOutcome", "AlertOutcomeName", "PairView", "PairViews", "ShuttingDown"]

AlertOutcomeName = Literal["rollback", "ignored", "cooldown", "refused"]


class ShuttingDown(Exception):
    """The service is stopping: no new action starts."""


@dataclass
class PairView:
    """The cached picture of one pair that API reads are served from."""

    pair: PairConfig
    state: ReleaseState = field(default_factory=ReleaseState)
    observation: Observation | None = None
    verdict: Verdict | None = None
    readiness: dict[str, Readiness | None] = field(default_factory=dict)
    read_errors: dict[str, str] = field(default_factory=dict)
    evaluated_at: float | None = None
    record: PairState | None = None
    would: tuple[str, ...] = ()
    """Dry-run: the actions gatekeeper would have taken on the last tick."""
    state_error: str | None = None
    state_problem: str | None = None
    """Why the last stored record read could not be used (it was rebuilt from the routes)."""
    rebuilt: bool = False
    """`state` was rebuilt from the routes and is not stored yet."""
    announced: notices.Snapshot | None = None
    """What people were last told about (notifications are derived from its changes)."""
    evidence_problem: str = ""
    """Why the evidence for the release does not come (`Controller.report_evidence`)."""


@dataclass(frozen=True)
class ActionOutcome:
    """What a requested action (API, webhook) did, for the HTTP layer to answer with."""

    action: str
    changed: bool
    refused: bool
    reasons: tuple[str, ...]
    phase: str
    active: str | None
    dry_run: bool = False
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the answer."""
        return {"action": self.action, "changed": self.changed, "refused": self.refused,
                "reasons": list(self.reasons), "phase": self.phase, "active": self.active,
                "dry_run": self.dry_run, "result": self.result}


class PairViews:
    """Per pair: its view, its action lock and its generation."""

    def __init__(self, pairs: Iterable[PairConfig]) -> None:
        self.views = {pair.name: PairView(pair) for pair in pairs}
        self.locks = {name: asyncio.Lock() for name in self.views}
        self.generation = dict.fromkeys(self.views, 0)
        """Bumped by every requested action: a tick whose reads predate one is stale."""

    def __getitem__(self, name: str) -> PairView:
        return self.views[name]

    def bump(self, name: str) -> None:
        """An action ran (or the stored state moved): reads taken before now are stale."""
        self.generation[name] += 1
