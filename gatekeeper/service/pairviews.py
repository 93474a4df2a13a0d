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
    forbidden: tuple[str, ...] = ()
    """Reads RBAC refused on the last tick ("list pods in namespace X")."""
    forbidden_logged: tuple[str, ...] = ()
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
    """Per pair: its view, its action lock and its generation; the set of pairs served
    (configured ones first, then BlueGreenPair objects), which `add`, `replace` and
    `remove` change while the service runs."""

    def __init__(self, pairs: Iterable[PairConfig]) -> None:
        self.views = {pair.name: PairView(pair) for pair in pairs}
        self.locks = {name: asyncio.Lock() for name in self.views}
        self.generation = dict.fromkeys(self.views, 0)
        """Bumped by every requested action: a tick whose reads predate one is stale."""

    def __getitem__(self, name: str) -> PairView:
        return self.views[name]

    def pairs(self) -> list[PairConfig]:
        """The pairs served now, in order."""
        return [view.pair for view in self.views.values()]

    def pair(self, name: str) -> PairConfig:
        """The pair served as `name`; KeyError naming the served pairs otherwise."""
        view = self.views.get(name)
        if view is None:
            known = ", ".join(self.views)
            raise KeyError(f"unknown pair {name!r} (configured: {known})")
        return view.pair

    def served(self, pair: PairConfig) -> bool:
        """Whether PAIR (this very spec) is still served: False once its object was
        deleted or its spec replaced (work started on the old spec must not land)."""
        view = self.views.get(pair.name)
        return view is not None and view.pair is pair

    def bump(self, name: str) -> None:
        """An action ran (or the stored state moved): reads taken before now are stale."""
        self.generation[name] += 1

    def add(self, pair: PairConfig) -> None:
        """Serve a new pair (its record is loaded at its first tick)."""
        self.views[pair.name] = PairView(pair)
        self.locks[pair.name] = asyncio.Lock()
        self.generation[pair.name] = 0

    def replace(self, pair: PairConfig) -> None:
        """Serve the pair's new spec (call it holding the pair's lock): the stored state
        stays, the verdict and observation read with the old spec are dropped (unknown
        until the next tick judges the new one) and reads taken before now are stale."""
        view = self.views[pair.name]
        view.pair = pair
        _forget_judgement(view)
        self.bump(pair.name)

    def remove(self, name: str) -> None:
        """Stop serving the pair (call it holding the pair's lock); a flip-check still
        holding its view answers unknown."""
        _forget_judgement(self.views[name])
        del self.views[name]
        del self.locks[name]
        del self.generation[name]


def _forget_judgement(view: PairView) -> None:
    """Drop what the last tick read and judged (it was about another spec)."""
    view.verdict = view.observation = view.evaluated_at = None
    view.readiness, view.read_errors, view.would = {}, {}, ()
