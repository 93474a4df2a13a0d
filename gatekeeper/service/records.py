"""Each pair's stored lifecycle state: loaded before a step, committed after it.

The one place the controller reads and writes the state store. A commit also records the
phase metric, logs the transitions, calls the notifications hook (`Announcer`) and starts
or stops the pair's validation drivers for the new state (gatekeeper.drivers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, replace
from typing import Any

import structlog

from gatekeeper import lifecycle
from gatekeeper.config import Config, PairConfig
from gatekeeper.drivers import Drivers
from gatekeeper.lifecycle import Observation, ReleaseState, Transition
from gatekeeper.metrics import Recorder
from gatekeeper.operations import CLUSTER_ERRORS
from gatekeeper.service.announcing import Announcer
from gatekeeper.service.pairviews import PairViews
from gatekeeper.state import PairState, StateStore

__all__ = ["Records"]

log = structlog.get_logger(__name__)


@dataclass
class Records:
    """Loads and commits the pairs' lifecycle states, keeping the views in step."""

    config: Config
    views: PairViews
    store: StateStore
    _: KW_ONLY
    recorder: Recorder
    announcer: Announcer
    drivers: Drivers
    dry_run_for: Callable[[PairConfig], bool]
    acts_on: Callable[[str], bool]
    holds: Callable[[str], bool]
    """Still holding the pair's Lease (also while handing it over): its state may be
    written."""
    closing: Callable[[], bool]
    clock: Callable[[], float]
    wall: Callable[[], float]

    def wall_time(self, reading: float) -> float:
        """A lifecycle time (steady clock) as wall time: for the audit trail, and to compare
        with times other hosts stamp (an alert's `startsAt`)."""
        return reading + (self.wall() - self.clock())

    def record_phase(self, pair: PairConfig, state: ReleaseState) -> None:
        """The phase gauge of the pair."""
        self.recorder.record_phase(pair.name, state.phase, state.since, lifecycle.PHASES)

    async def drive(self, pair: PairConfig, state: ReleaseState) -> None:
        """Start or stop the pair's validation drivers for its state (gatekeeper.drivers)."""
        await self.drivers.reconcile(pair, state, self.views[pair.name].observation,
                                     leading=self.acts_on(pair.name), closing=self.closing(),
                                     dry_run=self.dry_run_for(pair))

    async def load(self, pair: PairConfig, observation: Observation) -> ReleaseState:
        """The stored lifecycle state (the view's copy when the store cannot be read). A
        stored record this version cannot read is reported and rebuilt from the routes
        (`lifecycle.rebuilt`); the next write replaces it."""
        view = self.views[pair.name]
        try:
            record = await self.store.load(pair)
        except CLUSTER_ERRORS as exc:
            view.state_error = f"cannot read state: {exc}"
            return view.state
        view.record, view.state_error = record, None
        problem = record.unreadable
        state = record.release
        if problem is not None:
            if view.state_problem != problem:
                log.error("stored state unreadable; rebuilt from the routes", pair=pair.name,
                          error=problem)
                self.recorder.record_state_unreadable(pair.name)
            view.state_problem = problem
            if not (view.state.block_cause == "state"
                    and view.state.active == observation.active):
                view.state = lifecycle.rebuilt(observation, self.clock(), problem)
            view.rebuilt = True  # written by the next commit, whatever the step decides
            return view.state
        view.state_problem = None
        if state is None:
            # Nothing stored (writes failing): carry on from memory.
            keep = view.state.active is not None and self.acts_on(pair.name)
            state = view.state if keep else ReleaseState()
        view.state = state
        return state

    async def publish(self, pair: PairConfig) -> None:
        """Show the dark's last verdict in the pair object's status (object pairs only; no
        write while it is unchanged). A failure is logged: the verdict is in the API and
        the metrics anyway."""
        view = self.views[pair.name]
        verdict = view.verdict
        if not pair.object_namespace or self.dry_run_for(pair):
            return
        if view.forbidden and view.forbidden != view.forbidden_logged:
            log.error("RBAC refuses reads of the pair: its verdict stays unknown",
                      pair=pair.name, forbidden=list(view.forbidden))
        view.forbidden_logged = view.forbidden
        shown: str | None = verdict.verdict if verdict else None
        score = verdict.candidate.score if verdict else None
        reasons = list(verdict.reasons) if verdict else []
        if view.forbidden:  # fail closed in the status too: judged on half its data, or none
            shown, score = "unknown", None
            reasons = [f"RBAC refuses: {what}" for what in view.forbidden]
        try:
            await self.store.publish(pair, verdict=shown, score=score, reasons=reasons,
                                     at=self.wall(), forbidden=list(view.forbidden))
        except CLUSTER_ERRORS as exc:
            log.warning("verdict not shown in the pair object's status", pair=pair.name,
                        error=str(exc))

    async def commit(self, pair: PairConfig, before: ReleaseState, state: ReleaseState,
                     transitions: list[Transition], *, audit: dict[str, Any] | None = None
                     ) -> None:
        """Persist (skipped in dry-run and when only the reason changed, unless an `audit`
        entry must be written), notify, record."""
        view = self.views[pair.name]
        view.state = state
        self.record_phase(pair, state)
        for transition in transitions:
            log.info("phase changed", pair=pair.name, source=transition.source,
                     target=transition.target, trigger=transition.trigger,
                     reason=transition.reason, by=transition.by or None)
        by = (audit or {}).get("by") or next((t.by for t in transitions if t.by), "")
        self.announcer.announce(pair, before, state, by=str(by))
        await self.drive(pair, state)
        if self.dry_run_for(pair):
            return
        stored = view.record is not None and view.record.release is not None
        if not transitions and replace(before, reason="") == replace(state, reason="") \
                and not view.rebuilt and audit is None and stored:
            return  # unchanged and already stored (a first write that failed is retried)
        history = self.config.state.history

        def mutate(record: PairState) -> None:
            record.release = state
            if audit is not None:
                at = self.wall()
                record.transition("approval", at=at, history=history, **audit)
                record.approvals.append({"at": at, **audit})
                del record.approvals[:-history]
                if audit["outcome"] == "changed" and audit["action"] == "approve":
                    record.timestamps["approved"] = at
            for t in transitions:
                record.transition("phase", at=self.wall_time(t.at), history=history,
                                  source=t.source, target=t.target, trigger=t.trigger,
                                  reason=t.reason, by=t.by or None)

        if not self.holds(pair.name):
            # The fence lapsed (renewals failing): another replica may own the pair by now,
            # and its state is its to write. A switch's own journal is already stored, so
            # the next owner recovers from it and from the routes.
            view.state_error = "state not written: this replica no longer acts on the pair"
            log.warning("state not written: no longer acting on the pair", pair=pair.name)
            return
        try:
            view.record = await self.store.update(pair, mutate)
            view.state_error, view.rebuilt = None, False
        except CLUSTER_ERRORS as exc:
            view.state_error = f"state not written: {exc}"
            log.error("state not written", pair=pair.name, error=str(exc))
