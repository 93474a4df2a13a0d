"""Requests from outside the loop: a person's flip, rollback, scale-down or approval (the
API) and an Alertmanager alert's rollback (the webhook).

Each is decided by the one pure decision (`decisions.decide`: the action, a refusal with
its reasons, or a no-op that says so), executed by the one executor (`Dispatcher.execute`),
run under the pair's lock on the leader only, and recorded in the pair's history.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import KW_ONLY, dataclass, replace
from typing import Literal

import structlog
from kubernetes_asyncio import client

from gatekeeper import decisions, lifecycle
from gatekeeper.config import Config, PairConfig
from gatekeeper.metrics import Recorder
from gatekeeper.operations import Operations
from gatekeeper.service import livereads
from gatekeeper.service.announcing import Announcer
from gatekeeper.service.dispatch import Dispatcher, LeaderView
from gatekeeper.service.folding import Folder
from gatekeeper.service.pairviews import (
    ActionOutcome,
    AlertOutcomeName,
    PairViews,
    ShuttingDown,
)
from gatekeeper.service.records import Records

__all__ = ["Requests"]

log = structlog.get_logger(__name__)


@dataclass
class Requests:
    """Answers the API's and the webhook's requested actions."""

    config: Config
    views: PairViews
    operations: Operations
    _: KW_ONLY
    reads: client.ApiClient
    dispatcher: Dispatcher
    folder: Folder
    records: Records
    announcer: Announcer
    recorder: Recorder
    leadership: LeaderView
    acts_on: Callable[[str], bool]
    clock: Callable[[], float]

    @property
    def dry_run(self) -> bool:
        """The whole service only decides and reports (`policy.dry_run`, `--dry-run`)."""
        return self.operations.dry_run

    @contextlib.asynccontextmanager
    async def _acting(self, name: str) -> AsyncIterator[PairConfig]:
        pair = self.views.pair(name)  # KeyError naming the served pairs
        if not self.acts_on(pair.name):
            self.leadership.require_owner(pair.name)  # NotLeaderError / NotOwnerError
        if self.dispatcher.closing:
            raise ShuttingDown("gatekeeper is shutting down; no new action starts")
        lock = self.views.locks[pair.name]
        async with lock:
            if not self.views.served(pair):  # its object was edited or deleted meanwhile
                if self.views.locks.get(name) is not lock:
                    raise KeyError(f"pair {name!r} was deleted while the request waited")
                pair = self.views.pair(name)  # its new spec (the same lock guards it)
            async with self.dispatcher.holding(pair):
                yield pair  # decided, acted on and committed under the pair's Lease

    async def request(self, name: str, kind: Literal["flip", "rollback", "scale_down"], *,
                      force: bool = False, reason: str = "", to: str | None = None,
                      keep: int | None = None) -> ActionOutcome:
        """A person's flip, rollback or scale-down (API): decided (`decisions.decide`: the
        action, a no-op or a refusal with reasons), executed by the one executor, recorded."""
        async with self._acting(name) as pair:
            if to is not None:
                pair.other(to)  # ValueError for a namespace outside the pair
            view = self.views[pair.name]
            state = view.state
            observation = view.observation
            routed = (await livereads.routed(self.reads, pair)
                      if kind == "flip" and to is not None else None)
            asked = decisions.Request(kind, to=to if kind == "flip" else None, force=force,
                                      reason=reason, keep=keep)
            step = decisions.decide(asked, state, observation, self.config.policy_for(pair),
                                    self.clock(), routed=routed)
            active = observation.active if observation else state.active
            if step.refusal:
                self.recorder.record_refused(pair.name, kind)
                return ActionOutcome(kind, False, True, step.refusal, state.phase, active,
                                     self.dry_run)
            if not step.actions:
                return ActionOutcome(kind, False, False, (step.note,), state.phase,
                                     routed if routed is not None else active, self.dry_run)
            run = step.actions[0]  # a scale-down of "": the dark as the routes say now
            action = replace(run, namespace=state.dark or "") if kind == "scale_down" else run
            started = time.monotonic()
            result = await self.dispatcher.execute(pair, run)
            return await self.folder.conclude(pair, state, action, result, started,
                                              automatic=False)

    async def approve(self, name: str, *, reason: str = "", by: str = "",
                      decision: lifecycle.Decision | None = None, withdraw: bool = False
                      ) -> ActionOutcome:
        """A person's go-ahead (validate, flip, scale down or unblock, by phase), or with
        `withdraw` its withdrawal (`unapprove`). Every request, also one that changes nothing
        or is refused, leaves an `approval` entry naming `by` in the pair's history and an
        Event on the routes."""
        kind = "unapprove" if withdraw else "approve"
        async with self._acting(name) as pair:
            state = self.views[pair.name].state
            decide = lifecycle.unapprove if withdraw else lifecycle.approve
            step = decide(state, self.clock(), decision, by=by)
            new_state = state if step.refusal else step.state
            outcome = ("refused" if step.refusal else
                       "changed" if new_state != state else "unchanged")
            what = decision.replace("_", "-") if decision else "by phase"
            said = "; ".join(step.refusal) if step.refusal else step.note
            entry = {"action": kind, "by": by or "unknown", "decision": what,
                     "phase": state.phase, "outcome": outcome, "note": said,
                     "reason": reason or None}
            await self.records.commit(pair, state, new_state, list(step.transitions),
                                      audit=entry)
            self.views.bump(pair.name)
            log.info("approval", pair=pair.name, action=kind, by=by, decision=what,
                     phase=state.phase, outcome=outcome, note=said)
            await self.announcer.approval_event(pair, kind, by, outcome, said, state.phase,
                                                reason)
            verb = "unapproved" if withdraw else "approved"
            if step.refusal:
                return ActionOutcome(kind, False, True, step.refusal, state.phase,
                                     state.active, self.dry_run, {"by": by})
            return ActionOutcome(kind, new_state != state, False,
                                 (f"{verb} by {by or 'unknown'} in phase {state.phase}: "
                                  f"{said}; now {new_state.phase} ({new_state.reason})",),
                                 new_state.phase, new_state.active, self.dry_run, {"by": by})

    async def alert(self, name: str, reason: str, received: float
                    ) -> tuple[AlertOutcomeName, ActionOutcome]:
        """A matching Alertmanager alert for the pair's new active: roll back if allowed.

        `received` is the monotonic time the webhook arrived (for the latency metric).
        """
        async with self._acting(name) as pair:
            view = self.views[pair.name]
            state = view.state
            observation = await livereads.rollback_observation(
                self.operations.api, pair, state, view.observation)
            asked = decisions.Request("rollback", reason=reason, origin="alert")
            step = decisions.decide(asked, state, observation, self.config.policy_for(pair),
                                    self.clock())
            if not step.actions:
                if step.state != state:
                    await self.records.commit(pair, state, step.state, list(step.transitions))
                    self.views.bump(pair.name)
                outcome: AlertOutcomeName = "cooldown" if any(
                    r.startswith("cooldown") for r in step.refusal) else (
                    "refused" if step.state.phase == "blocked" else "ignored")
                return outcome, ActionOutcome("rollback", False, outcome == "refused",
                                              step.refusal, step.state.phase, state.active,
                                              self.dry_run)
            action = step.actions[0]  # trigger alertmanager, reason the alert's
            result = await self.dispatcher.execute(pair, action)
            answer = await self.folder.conclude(pair, state, action, result, received,
                                                automatic=True)
            if answer.refused:
                return "refused", answer
            return ("rollback" if answer.changed else "ignored"), answer
