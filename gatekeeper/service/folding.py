"""Folding an action's result back into the pair's lifecycle state.

A switch that happened is `lifecycle.completed` (with its metrics), a refused one is
`lifecycle.failed` when gatekeeper started it; what a dry run would have done becomes a note.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from gatekeeper import lifecycle
from gatekeeper.config import PairConfig
from gatekeeper.errors import NotLeaderError
from gatekeeper.lifecycle import Action, ReleaseState, Transition
from gatekeeper.metrics import Recorder
from gatekeeper.operations import CLUSTER_ERRORS, ClusterError, OperationResult, Operations
from gatekeeper.service.dispatch import Dispatcher
from gatekeeper.service.pairviews import ActionOutcome, PairViews, ShuttingDown
from gatekeeper.service.records import Records

__all__ = ["Folder"]

log = structlog.get_logger(__name__)


class Folder:
    """Carries out lifecycle actions and folds their results into the state."""

    def __init__(self, operations: Operations, views: PairViews, dispatcher: Dispatcher,
                 records: Records, *, recorder: Recorder, clock: Callable[[], float]) -> None:
        self.operations = operations
        self.views = views
        self.dispatcher = dispatcher
        self.records = records
        self.recorder = recorder
        self.clock = clock

    async def perform(self, pair: PairConfig, state: ReleaseState, action: Action,
                      started: float) -> tuple[ReleaseState, list[Transition], str]:
        """Carry out one lifecycle action and fold its outcome back into the state.

        Returns the new state, its transitions, and (dry-run) what would have been done.
        """
        bound = log.bind(pair=pair.name, action=action.kind, namespace=action.namespace,
                         trigger=action.trigger)
        try:
            result = await self.dispatcher.execute(pair, action)
        except (NotLeaderError, ShuttingDown) as exc:
            bound.info("action not started", why=str(exc))
            return state, [], ""
        except (ClusterError, *CLUSTER_ERRORS) as exc:
            # The cluster could not be reached: whatever happened, the next tick re-reads the
            # routes (a completed switch is followed, a half one shows as disagreeing routes
            # and blocks), and a decision that still stands is retried.
            bound.error("action failed; retrying on the next tick", error=str(exc)[:300])
            return replace(state, reason=f"{action.describe()} failed, retrying: "
                                         f"{type(exc).__name__}: {str(exc)[:200]}"), [], ""
        if result.details.get("dry_run") or (self.operations.dry_run_for(pair)
                                             and not result.changed):
            note = f"would {action.describe()}: " + "; ".join(result.reasons)
            if result.refused:
                note = f"would try {action.describe()}, refused: " + "; ".join(result.reasons)
            return state, [], note
        now = self.clock()
        if result.refused:
            self.recorder.record_refused(pair.name, action.kind)
            bound.warning("action refused", reasons=list(result.reasons))
            step = lifecycle.failed(state, action, result.reasons, now)
            return step.state, list(step.transitions), ""
        if action.kind in ("flip", "rollback"):
            if result.active != action.namespace:
                return state, [], ""  # nothing happened; the next tick sees the routes
            self.recorder.observe_action_latency(action.kind, time.monotonic() - started)
            self.after_switch(pair, state, action, result)
        step = lifecycle.completed(state, action, now)
        bound.info("action done", reasons=list(result.reasons), changed=result.changed)
        return step.state, list(step.transitions), ""

    async def conclude(self, pair: PairConfig, state: ReleaseState, action: Action,
                       result: OperationResult, started: float, *, automatic: bool
                       ) -> ActionOutcome:
        """Fold a requested action's result into the lifecycle and persist it.

        A refused automatic action (Alertmanager) blocks the pair; a person's refused
        request only answers 409.
        """
        self.views.bump(pair.name)  # the cluster may have changed under this tick
        transitions: list[Transition] = []
        new_state = state
        if result.changed and not result.refused:
            if action.kind in ("flip", "rollback"):
                action = replace(action, namespace=result.active or action.namespace)
                source = result.details.get("from")
                if state.active is None and isinstance(source, str):
                    # Requested before the first tick saw the pair: without this the flip
                    # would record no `previous`, and an alert could not roll it back.
                    state = replace(state, active=source, dark=action.namespace)
                self.recorder.observe_action_latency(action.kind, time.monotonic() - started)
                self.after_switch(pair, state, action, result)
            step = lifecycle.completed(state, action, self.clock())
            new_state, transitions = step.state, list(step.transitions)
        elif result.refused:
            self.recorder.record_refused(pair.name, action.kind)
            if automatic and not result.details.get("dry_run"):
                step = lifecycle.failed(state, action, result.reasons, self.clock())
                new_state, transitions = step.state, list(step.transitions)
        await self.records.commit(pair, state, new_state, transitions)
        return ActionOutcome(action.kind, result.changed, result.refused, result.reasons,
                             new_state.phase, result.active,
                             bool(result.details.get("dry_run")) or self.operations.dry_run,
                             result.to_dict())

    def after_switch(self, pair: PairConfig, state: ReleaseState, action: Action,
                     result: OperationResult) -> None:
        """Metrics and a notification for a flip or rollback that happened."""
        if not result.changed:
            return
        if action.kind == "flip":
            self.recorder.record_flip(pair.name, action.trigger)
        else:
            self.recorder.record_rollback(pair.name, action.trigger)
        self.recorder.forget_namespace_roles(pair.name, pair.namespaces)
        self.recorder.record_active(pair.name, action.namespace, pair.namespaces)
