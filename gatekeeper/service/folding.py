"""Folding an action's result back into the pair's lifecycle state, in one place.

Whoever started the action (a tick's step, a person's request, an alert), its result is
folded by `Folder.fold`: a switch or scaling that happened is `lifecycle.completed` (with
its metrics), a refusal of an automatic action is `lifecycle.failed` (it blocks the pair),
and what a dry run would have done becomes a note.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, replace

import structlog

from gatekeeper import lifecycle
from gatekeeper.config import PairConfig
from gatekeeper.errors import NotLeaderError
from gatekeeper.lifecycle import Action, ReleaseState, Transition
from gatekeeper.metrics import Recorder
from gatekeeper.operations import CLUSTER_ERRORS, ActionResult, ClusterError, Operations
from gatekeeper.service.dispatch import Dispatcher
from gatekeeper.service.pairviews import ActionOutcome, PairViews, ShuttingDown
from gatekeeper.service.records import Records

__all__ = ["Folded", "Folder"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Folded:
    """A pair's state after an action's result was folded in."""

    state: ReleaseState
    transitions: tuple[Transition, ...] = ()
    note: str = ""
    """Dry-run: what would have been done."""


@dataclass
class Folder:
    """Carries out lifecycle actions and folds their results into the state."""

    operations: Operations
    views: PairViews
    dispatcher: Dispatcher
    records: Records
    _: KW_ONLY
    recorder: Recorder
    clock: Callable[[], float]

    def fold(self, pair: PairConfig, state: ReleaseState, action: Action,
             result: ActionResult, started: float, *, automatic: bool,
             requested: bool) -> Folded:
        """The state after `action` answered `result` (the one place results are folded).

        `automatic`: gatekeeper decided it (loop, alert), so a refusal blocks the pair; a
        person's refused request only answers 409. `requested`: an API or webhook request,
        whose no-op (nothing changed) leaves the state alone; a tick's own action that finds
        the cluster already as decided completes its step.
        """
        bound = log.bind(pair=pair.name, action=action.kind, namespace=action.namespace,
                         trigger=action.trigger)
        if result.dry_run or (self.operations.dry_run_for(pair) and not result.changed):
            if result.refused:
                if requested:
                    self.recorder.record_refused(pair.name, action.kind)
                return Folded(state, note=f"would try {action.describe()}, refused: "
                                          + "; ".join(result.reasons))
            return Folded(state, note=f"would {action.describe()}: " + "; ".join(result.reasons))
        if result.refused:
            self.recorder.record_refused(pair.name, action.kind)
            bound.warning("action refused", reasons=list(result.reasons))
            if not automatic:
                return Folded(state)
            step = lifecycle.failed(state, action, result.reasons, self.clock())
            return Folded(step.state, step.transitions)
        if requested and not result.changed:
            return Folded(state)
        if action.kind in ("flip", "rollback"):
            if result.changed:
                action = replace(action, namespace=result.active or action.namespace)
            if result.active != action.namespace:
                return Folded(state)  # nothing happened; the next tick sees the routes
            source = result.details.get("from")
            if state.active is None and isinstance(source, str):
                # Requested before the first tick saw the pair: without this the flip
                # would record no `previous`, and an alert could not roll it back.
                state = replace(state, active=source, dark=action.namespace)
            self.recorder.observe_action_latency(action.kind, time.monotonic() - started)
            self.after_switch(pair, action, result)
        step = lifecycle.completed(state, action, self.clock())
        bound.info("action done", reasons=list(result.reasons), changed=result.changed)
        return Folded(step.state, step.transitions)

    async def perform(self, pair: PairConfig, state: ReleaseState, action: Action,
                      started: float) -> Folded:
        """Carry out one of a tick's lifecycle actions and fold its outcome into the state."""
        try:
            result = await self.dispatcher.execute(pair, action)
        except (NotLeaderError, ShuttingDown) as exc:
            log.info("action not started", pair=pair.name, action=action.kind, why=str(exc))
            return Folded(state)
        except (ClusterError, *CLUSTER_ERRORS) as exc:
            # The cluster could not be reached: whatever happened, the next tick re-reads the
            # routes (a completed switch is followed, a half one shows as disagreeing routes
            # and blocks), and a decision that still stands is retried.
            log.error("action failed; retrying on the next tick", pair=pair.name,
                      action=action.kind, namespace=action.namespace, error=str(exc)[:300])
            return Folded(replace(state, reason=f"{action.describe()} failed, retrying: "
                                                f"{type(exc).__name__}: {str(exc)[:200]}"))
        return self.fold(pair, state, action, result, started, automatic=True,
                         requested=False)

    async def conclude(self, pair: PairConfig, state: ReleaseState, action: Action,
                       result: ActionResult, started: float, *, automatic: bool
                       ) -> ActionOutcome:
        """Fold a requested action's result into the lifecycle, persist it, and answer."""
        self.views.bump(pair.name)  # the cluster may have changed under this tick
        folded = self.fold(pair, state, action, result, started, automatic=automatic,
                           requested=True)
        await self.records.commit(pair, state, folded.state, list(folded.transitions))
        return ActionOutcome(action.kind, result.changed, result.refused, result.reasons,
                             folded.state.phase, result.active,
                             result.dry_run or self.operations.dry_run, result.to_dict())

    def after_switch(self, pair: PairConfig, action: Action, result: ActionResult) -> None:
        """Metrics for a flip or rollback that happened."""
        if not result.changed:
            return
        if action.kind == "flip":
            self.recorder.record_flip(pair.name, action.trigger)
        else:
            self.recorder.record_rollback(pair.name, action.trigger)
        self.recorder.forget_namespace_roles(pair.name, pair.namespaces)
        self.recorder.record_active(pair.name, action.namespace, pair.namespaces)
