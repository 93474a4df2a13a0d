"""The control loop: every `evaluation.interval`, for all pairs at once, read, judge, act.

Each tick re-reads the live routes and Deployments (they are the truth, as in Flagger's
scheduler), evaluates every pair in one Evaluator call, caches the verdicts so API reads
cost nothing, steps each pair's lifecycle and, on the leader only, carries out the actions
and persists the state in the ConfigMap. Actions run shielded from cancellation and are
awaited on shutdown, so a SIGTERM never leaves a half-flip. Dry-run decides and reports
but writes nothing to the cluster (not even the state).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import structlog
from kubernetes_asyncio import client

from gatekeeper import environments, events, lifecycle, notices
from gatekeeper.clocks import SteadyClock
from gatekeeper.config import Config, PairConfig, PolicyConfig
from gatekeeper.drivers import Drivers
from gatekeeper.environments import Readiness
from gatekeeper.errors import NotLeaderError
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.lifecycle import Action, Observation, ReleaseState, Step, Transition
from gatekeeper.measurements import Verdict
from gatekeeper.metrics import Recorder
from gatekeeper.operations import CLUSTER_ERRORS, ClusterError, OperationResult, Operations
from gatekeeper.routers import reading
from gatekeeper.service.notifications import Notifier
from gatekeeper.service.observing import LiveRead, observe
from gatekeeper.state import PairState, StateStore

__all__ = ["ActionOutcome", "Controller", "LeaderView", "PairView", "ShuttingDown"]

log = structlog.get_logger(__name__)

MIN_GAP = 1.0  # seconds between tick starts when woken early (the minimum interval)
PAIR_READS = 16
"""Pairs whose routes and Deployments a tick reads at once (each pair is 3-5 requests)."""
AlertOutcomeName = Literal["rollback", "ignored", "cooldown", "refused"]


class LeaderView(Protocol):
    """What the controller needs from leader election (gatekeeper.leadership.Leadership)."""

    @property
    def is_leader(self) -> bool:
        """True while this replica may act."""
        ...


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


class Controller:
    """Runs the lifecycle of every configured pair."""

    def __init__(
        self,
        config: Config,
        evaluator: Evaluator,
        operations: Operations,
        *,
        recorder: Recorder,
        leadership: LeaderView,
        notifier: Notifier | None = None,
        store: StateStore | None = None,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
        reads: client.ApiClient | None = None,
        drivers: Drivers | None = None,
    ) -> None:
        """`clock` times the lifecycle (soak, observation, cooldown): by default a
        SteadyClock over `wall`, so a step of the wall clock never shortens a duration.
        `wall` stamps the audit trail and notifications people read. `drivers` send the
        dark its validation evidence (gatekeeper.drivers), started and stopped here."""
        self.config = config
        self.evaluator = evaluator
        self.judged_window = max(
            [evaluator.window, *(r.window for r in evaluator.rule_set.rules
                                 if r.window is not None and r.source == "prometheus")])
        """The longest Prometheus window a verdict reads: passes count only past it."""
        self.operations = operations
        self.api = reads or operations.api
        """Where the control loop's periodic reads go; actions use `operations.api`, so a
        tick's burst of reads over many pairs never queues ahead of an action or the Lease."""
        self.store = store or operations.store
        self.recorder = recorder
        for pair in config.pairs:
            recorder.record_rules(pair.name, evaluator.rule_set.rules)
        self.leadership = leadership
        self.notifier = notifier
        self.drivers = drivers or Drivers()
        self.wall = wall
        self.clock: Callable[[], float] = clock or SteadyClock(wall=wall)
        self.dry_run = operations.dry_run
        self.interval = config.evaluation.interval
        self.views = {pair.name: PairView(pair) for pair in config.pairs}
        self._locks = {pair.name: asyncio.Lock() for pair in config.pairs}
        self._generation = dict.fromkeys(self.views, 0)
        """Bumped by every requested action: a tick whose reads predate one is stale."""
        self._inflight: set[asyncio.Task[Any]] = set()
        self._reading = asyncio.Semaphore(PAIR_READS)
        self._steps: set[asyncio.Task[None]] = set()
        self._closing = False
        self._wake = asyncio.Event()
        self._tick_done = asyncio.Event()
        self.ticks = 0
        self.last_tick_at: float | None = None
        """Monotonic time the last tick finished (health checks)."""

    # -- reads for the API ---------------------------------------------------------------------

    def view(self, name: str) -> PairView:
        """The cached view of a pair; KeyError naming the configured pairs otherwise."""
        pair = self.config.pair(name)
        return self.views[pair.name]

    def policy(self, pair: PairConfig) -> PolicyConfig:
        """The pair's effective policy."""
        return self.config.policy_for(pair)

    @property
    def is_leader(self) -> bool:
        """Whether this replica acts (dry-run replicas decide as if they did)."""
        return self.dry_run or self.leadership.is_leader

    def leading_now(self) -> bool:
        """`is_leader` read again after an await (a call, so no earlier check narrows it)."""
        return self.is_leader

    @property
    def ready(self) -> bool:
        """At least one tick completed and the service is not shutting down."""
        return self.ticks > 0 and not self._closing

    async def wait_tick(self, timeout: float) -> bool:  # noqa: ASYNC109 - long-poll budget
        """Wait for the next tick to finish (long-polls); False when `timeout` passed."""
        event = self._tick_done
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def wake(self) -> None:
        """Run the next tick now (a watched route or Deployment changed)."""
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every interval, or sooner when woken, until closed; a failing tick is
        logged, never fatal. Ticks start at least `MIN_GAP` seconds apart."""
        while not self._closing:
            started = time.monotonic()
            self._wake.clear()  # a change seen during this tick wakes the next one
            try:
                await self.tick()
            except Exception:
                log.exception("evaluation tick failed")
            left = self.interval - (time.monotonic() - started)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, left))
            except TimeoutError:
                continue
            gap = MIN_GAP - (time.monotonic() - started)
            if gap > 0 and not self._closing:
                await asyncio.sleep(gap)

    async def on_watch_event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        """Watch callback: a route or Deployment changed (a `kubectl patch`, a new release):
        evaluate now rather than at the next interval. Pod churn does not wake the loop."""
        if kind != "Pod" and event_type in ("ADDED", "MODIFIED", "DELETED"):
            self.wake()

    async def tick(self) -> None:
        """One evaluation of every pair, then one lifecycle step per pair."""
        started = time.monotonic()
        pairs = list(self.config.pairs)
        generations = dict(self._generation)
        reads = await asyncio.gather(*(self._read_bounded(pair) for pair in pairs))
        assignments = [
            Assignment(pair, pair.other(live.active), live.active,
                       since=self._soak_started(pair, pair.other(live.active)))
            for pair, live in zip(pairs, reads, strict=True) if live.active is not None
        ]
        verdicts = await self.evaluator.evaluate(assignments) if assignments else {}
        self.recorder.observe_evaluation(time.monotonic() - started)
        self._record_sources(verdicts)
        now = self.clock()
        observations = {}
        for pair, live in zip(pairs, reads, strict=True):
            view = self.views[pair.name]
            verdict = verdicts.get(pair.name)
            observation = observe(pair, live, verdict, window=self.judged_window,
                                  verdict_at=now,
                                  verdict_max_age=self.config.evaluation.verdict_max_age)
            observations[pair.name] = observation
            if self._generation[pair.name] != generations[pair.name]:
                # An action (a webhook's rollback, a person's flip) ran while these reads
                # were in flight: they may show the routes before it. Publishing them would
                # undo the action in the view a person's request is checked against ("X is
                # already active" right after a rollback away from X); `_advance` skips the
                # step, and the next tick reads afresh.
                continue
            view.readiness = dict(live.readiness or {})
            view.read_errors = dict(live.errors or {})
            view.verdict, view.observation, view.evaluated_at = verdict, observation, now
            if verdict is not None:
                self.recorder.record_verdict(verdict)
            else:
                self.recorder.last_evaluation.labels(pair.name).set(now)
            self.recorder.record_active(pair.name, live.active, pair.namespaces)
            for namespace, readiness in view.readiness.items():
                if readiness is not None:
                    self.recorder.record_replicas(
                        pair.name, namespace, sum(d.replicas for d in readiness.deployments))
        steps = [asyncio.create_task(self._advance(pair, observations[pair.name],
                                                   generations[pair.name]),
                                     name=f"advance {pair.name}") for pair in pairs]
        for task in steps:
            self._steps.add(task)
            task.add_done_callback(self._steps.discard)
        # A long action (rollback after a scale-up) must not hold up the other pairs' next
        # tick: its task carries on, and its pair is skipped while its lock is held.
        done, _ = await asyncio.wait(steps, timeout=max(self.interval, 1.0))
        for task in done:
            if task.exception() is not None:
                log.error("lifecycle step failed", error=repr(task.exception()),
                          task=task.get_name())
        self.ticks += 1
        self.last_tick_at = time.monotonic()
        event, self._tick_done = self._tick_done, asyncio.Event()
        event.set()

    async def _read_bounded(self, pair: PairConfig) -> LiveRead:
        """`_read`, at most PAIR_READS pairs at a time: the request timeout then measures the
        API server, not the client's own queue (1,000 pairs queued 5,000 reads at once)."""
        async with self._reading:
            return await self._read(pair)

    def _soak_started(self, pair: PairConfig, dark: str) -> float | None:
        """When the dark became ready for the release being validated (persisted with the
        pair's state, so a restart judges the same span): the start of the counts that
        sequential comparisons judge, as wall time (Prometheus's clock). None outside
        validation."""
        state = self.views[pair.name].state
        if state.phase in ("validating", "ready") and state.dark == dark and (
                state.soak_started is not None):
            return self.wall_time(state.soak_started)
        return None

    async def _read(self, pair: PairConfig) -> LiveRead:
        """Live routes and both namespaces' Deployments; failures become problems."""
        try:
            active_state = await reading.read_active(self.api, pair)
        except CLUSTER_ERRORS as exc:
            problem = f"cannot read the routes: {type(exc).__name__}: {exc}"
            return LiveRead(active=None, problem=problem[:300])
        readiness: dict[str, Readiness | None] = {}
        errors: dict[str, str] = {}

        async def one(namespace: str) -> None:
            try:
                readiness[namespace] = await environments.read_readiness(
                    self.api, namespace, pair=pair)
            except CLUSTER_ERRORS as exc:
                readiness[namespace] = None
                errors[namespace] = f"{type(exc).__name__}: {exc}"[:300]

        await asyncio.gather(*(one(namespace) for namespace in pair.namespaces))
        return LiveRead(active=active_state.active if active_state.consistent else None,
                        problem=active_state.problem or "", readiness=readiness, errors=errors,
                        last_switch=active_state.last_switch)

    def _record_sources(self, verdicts: dict[str, Verdict]) -> None:
        """Per source: up when none of its rules errored, and how many did."""
        source_of = {rule.name: rule.source for rule in self.evaluator.rule_set.rules}
        errored: set[str] = set()
        for verdict in verdicts.values():
            for score in (verdict.candidate, verdict.baseline):
                errored.update(r.rule for r in score.results if r.status == "error")
        if not verdicts:
            return
        for source in sorted(set(source_of.values())):
            failed = sum(1 for rule in errored if source_of.get(rule) == source)
            self.recorder.record_source(source, up=failed == 0, errors=failed)

    # -- one pair ------------------------------------------------------------------------------

    async def _advance(self, pair: PairConfig, observation: Observation,
                       generation: int) -> None:
        """Step the lifecycle; on the leader act and persist, elsewhere show the leader's.

        Skipped when a requested action ran since this tick's reads (they are stale: the
        routes may have moved), or while one is running; the next tick reads afresh.
        """
        lock = self._locks[pair.name]
        if lock.locked():
            log.info("pair busy with an action; skipping this tick", pair=pair.name)
            return
        async with lock:
            if self._generation[pair.name] != generation:
                log.debug("reads predate an action; skipping this tick", pair=pair.name)
                return
            view = self.views[pair.name]
            bound = log.bind(pair=pair.name)
            if not self.is_leader or self._closing:
                await self._load(pair, observation)
                self._record_phase(pair, view.state)
                await self._drive(pair, view.state)
                return
            dry = self.operations.dry_run_for(pair)
            before = await self._load(pair, observation) if not dry \
                or view.record is None \
                else view.state
            if not dry and _needs_recovery(view.record, observation):
                if await self._recover(pair):
                    return  # routes moved: the next tick reads them afresh
                before = await self._load(pair, observation)
            step = lifecycle.step(before, observation, self.policy(pair), self.clock())
            state, transitions = step.state, list(step.transitions)
            would = []
            for action in step.actions:
                state, more, note = await self._perform(pair, state, action, time.monotonic())
                transitions.extend(more)
                if note:
                    would.append(note)
            if would and tuple(would) != view.would:
                bound.warning("dry-run: would act", would=would)
            view.would = tuple(would)
            if not self.leading_now():
                return  # lost the Lease meanwhile: the new leader owns the state
            await self._commit(pair, before, state, transitions)

    async def _recover(self, pair: PairConfig) -> bool:
        """Finish or undo a switch a dead leader left between two routes, and bring the stored
        state in line with the routes (Operations.recover); True when routes moved."""
        ops = self.operations

        async def run() -> OperationResult:
            return await ops.recover(pair) or OperationResult("recover", False, False, (), None)

        try:
            result = await self._shielded(run)
        except (NotLeaderError, ShuttingDown):
            return False
        except (ClusterError, *CLUSTER_ERRORS) as exc:
            log.warning("cannot recover the pair's state; retrying on the next tick",
                        pair=pair.name, error=str(exc)[:300])
            return False
        if result.reasons:
            log.warning("recovered after a restart", pair=pair.name, changed=result.changed,
                        refused=result.refused, reasons=list(result.reasons))
        if result.changed:
            self._generation[pair.name] += 1
        return result.changed

    async def _load(self, pair: PairConfig, observation: Observation) -> ReleaseState:
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
            keep = view.state.active is not None and self.is_leader
            state = view.state if keep else ReleaseState()
        view.state = state
        return state

    async def _commit(self, pair: PairConfig, before: ReleaseState, state: ReleaseState,
                      transitions: list[Transition], *, audit: dict[str, Any] | None = None
                      ) -> None:
        """Persist (skipped in dry-run and when only the reason changed, unless an `audit`
        entry must be written), notify, record."""
        view = self.views[pair.name]
        view.state = state
        self._record_phase(pair, state)
        for transition in transitions:
            log.info("phase changed", pair=pair.name, source=transition.source,
                     target=transition.target, trigger=transition.trigger,
                     reason=transition.reason, by=transition.by or None)
        by = (audit or {}).get("by") or next((t.by for t in transitions if t.by), "")
        self._announce(pair, before, state, by=str(by))
        await self._drive(pair, state)
        if self.operations.dry_run_for(pair):
            return
        if not transitions and replace(before, reason="") == replace(state, reason="") \
                and not view.rebuilt and audit is None:
            return
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

        try:
            view.record = await self.store.update(pair, mutate)
            view.state_error, view.rebuilt = None, False
        except CLUSTER_ERRORS as exc:
            view.state_error = f"state not written: {exc}"
            log.error("state not written", pair=pair.name, error=str(exc))

    async def _drive(self, pair: PairConfig, state: ReleaseState) -> None:
        """Start or stop the pair's validation drivers for its state (gatekeeper.drivers)."""
        await self.drivers.reconcile(pair, state, self.views[pair.name].observation,
                                     leading=self.leading_now(), closing=self._closing,
                                     dry_run=self.operations.dry_run_for(pair))

    def wall_time(self, reading: float) -> float:
        """A lifecycle time (steady clock) as wall time: for the audit trail, and to compare
        with times other hosts stamp (an alert's `startsAt`)."""
        return reading + (self.wall() - self.clock())

    def _record_phase(self, pair: PairConfig, state: ReleaseState) -> None:
        self.recorder.record_phase(pair.name, state.phase, state.since, lifecycle.PHASES)

    # -- acting --------------------------------------------------------------------------------

    async def _shielded(self, factory: Callable[[], Awaitable[OperationResult]]
                        ) -> OperationResult:
        """Run a cluster action to completion even if the caller is cancelled (SIGTERM,
        a client that hung up); shutdown waits for it."""
        if self._closing:
            raise ShuttingDown("gatekeeper is shutting down; no new action starts")
        guard = getattr(self.leadership, "leader_guard", None)

        async def run() -> OperationResult:
            if guard is None or self.dry_run:
                return await factory()
            async with guard():  # NotLeaderError when the Lease was lost meanwhile
                return await factory()

        task = asyncio.create_task(run(), name="gatekeeper action")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _execute(self, pair: PairConfig, action: Action) -> OperationResult:
        ops = self.operations
        if action.kind == "flip":
            if not ops.dry_run_for(pair):
                await self.drivers.halt(pair.name, "flip")  # stopped before traffic moves
            return await self._shielded(lambda: ops.flip(
                pair, to=action.namespace, trigger=action.trigger, reason=action.reason))
        if action.kind == "rollback":
            return await self._shielded(lambda: ops.rollback(
                pair, trigger=action.trigger, reason=action.reason,
                scale_up_first=action.scale_up_first, to=action.namespace or None))
        if action.kind == "scale_up":
            return await self._shielded(lambda: ops.scale_up(pair, action.namespace))
        return await self._shielded(lambda: ops.scale_down(pair, action.namespace,
                                                           keep=action.keep))

    async def _perform(self, pair: PairConfig, state: ReleaseState, action: Action,
                       started: float) -> tuple[ReleaseState, list[Transition], str]:
        """Carry out one lifecycle action and fold its outcome back into the state.

        Returns the new state, its transitions, and (dry-run) what would have been done.
        """
        bound = log.bind(pair=pair.name, action=action.kind, namespace=action.namespace,
                         trigger=action.trigger)
        try:
            result = await self._execute(pair, action)
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
            self._after_switch(pair, state, action, result)
        step = lifecycle.completed(state, action, now)
        bound.info("action done", reasons=list(result.reasons), changed=result.changed)
        return step.state, list(step.transitions), ""

    def _after_switch(self, pair: PairConfig, state: ReleaseState, action: Action,
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

    def _announce(self, pair: PairConfig, before: ReleaseState, state: ReleaseState, *,
                  by: str = "") -> None:
        """Tell people what changed for the pair since they were last told (one message per
        change: `notices.derive`). Called wherever a lifecycle state is committed."""
        view = self.views[pair.name]

        def seen(of: ReleaseState, previous: notices.Snapshot | None) -> notices.Snapshot:
            return notices.snapshot(
                pair.name, pair.namespaces, of, view.observation, self.policy(pair),
                self.clock(), previous=previous, at=self.wall(),
                stuck_after=self.config.notifications.evidence_stuck_after, would=view.would,
                evidence_problem=view.evidence_problem,
                approver=by, dry_run=self.operations.dry_run_for(pair))

        previous = view.announced or seen(before, None)
        current = seen(state, previous)
        view.announced = current
        for notice in notices.derive(previous, current):
            log.info("announced", pair=pair.name, notice_event=notice.event,
                     summary=notice.summary)
            if self.notifier is not None:
                self.notifier.notify(notice)

    def report_evidence(self, name: str, problem: str) -> None:
        """The hook for the evidence work: the release's evidence does not come (`problem`,
        '' once it does). Announced once, at the pair's next commit, while validating."""
        self.view(name).evidence_problem = problem

    # -- requests ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _acting(self, name: str) -> AsyncIterator[PairConfig]:
        pair = self.config.pair(name)
        if not self.is_leader:
            holder = getattr(self.leadership, "holder", None)
            raise NotLeaderError(None, holder)
        if self._closing:
            raise ShuttingDown("gatekeeper is shutting down; no new action starts")
        async with self._locks[pair.name]:
            yield pair

    async def request(self, name: str, kind: Literal["flip", "rollback", "scale_down"], *,
                      force: bool = False, reason: str = "", to: str | None = None,
                      keep: int | None = None) -> ActionOutcome:
        """A person's flip, rollback or scale-down (API): checked, idempotent, recorded."""
        async with self._acting(name) as pair:
            view = self.views[pair.name]
            state = view.state
            policy = self.policy(pair)
            now = self.clock()
            routed = await self._routed(pair) if kind == "flip" and to is not None else None
            refusal = self._refusal(pair, kind, state, to=to, force=force, now=now,
                                    routed=routed)
            if refusal is not None:
                return refusal
            ops = self.operations
            started = time.monotonic()
            if kind == "flip":
                target = to or state.dark or (view.observation.dark if view.observation
                                              else None)
                action = Action("flip", target or "", trigger="manual", reason=reason)
                if not ops.dry_run_for(pair):
                    await self.drivers.halt(pair.name, "flip")
                result = await self._shielded(lambda: ops.flip(
                    pair, to=target, force=force, trigger="manual", reason=reason))
            elif kind == "rollback":
                action = Action("rollback", state.previous or "", trigger="manual",
                                reason=reason)
                scale_first = policy.rollback_when_scaled_down == "scale_up_then_flip"
                result = await self._shielded(lambda: ops.rollback(
                    pair, force=force, trigger="manual", reason=reason,
                    scale_up_first=scale_first, to=state.previous))
            else:
                count = policy.scale_down_keep if keep is None else keep
                action = Action("scale_down", state.dark or "", trigger="manual",
                                reason=reason or "requested", keep=count)
                result = await self._shielded(lambda: ops.scale_down(
                    pair, None, keep=count, force=force))
            return await self._conclude(pair, state, action, result, started, automatic=False)

    async def _routed(self, pair: PairConfig) -> str | None:
        """The namespace the routes send traffic to now (None: split or unreadable)."""
        try:
            return (await reading.read_active(self.api, pair)).active
        except CLUSTER_ERRORS:
            return None

    def _refusal(self, pair: PairConfig, kind: str, state: ReleaseState, *, to: str | None,
                 force: bool, now: float, routed: str | None = None) -> ActionOutcome | None:
        """The lifecycle's objections (409 unless forced), and idempotent no-ops. `routed`:
        where the routes send traffic, read just now (for a flip naming `to`)."""
        view = self.views[pair.name]
        observation = view.observation
        active = observation.active if observation else state.active
        if to is not None:
            pair.other(to)  # ValueError for a namespace outside the pair
        policy = self.policy(pair)
        if kind == "flip":
            if to is not None and observation is not None and observation.active is None \
                    and observation.route_problem.startswith("routes disagree"):
                return None  # split routes: the named target finishes them (Operations.flip)
            if to is not None and to == routed:
                # From the routes read now, not the tick's picture: that may predate an
                # action that just moved them (a webhook's rollback away from `to`).
                return ActionOutcome("flip", False, False, (f"nothing to do: {to} is already "
                                                            "active",), state.phase, routed,
                                     self.dry_run)
            if to is None and state.phase in ("flipped", "stable"):
                return ActionOutcome("flip", False, False, (
                    f"nothing to do: already flipped to {state.active} (use rollback to go "
                    "back, or name the namespace with `to`)",), state.phase, active,
                    self.dry_run)
            reasons = [] if force else lifecycle.flip_check(state, observation, policy, now)
        elif kind == "scale_down":
            reasons = [] if force else lifecycle.scale_down_check(state, observation, policy,
                                                                  now)
        else:
            reasons = []
        if reasons:
            self.recorder.record_refused(pair.name, kind)
            return ActionOutcome(kind, False, True, tuple(reasons), state.phase, active,
                                 self.dry_run)
        return None

    async def _conclude(self, pair: PairConfig, state: ReleaseState, action: Action,
                        result: OperationResult, started: float, *, automatic: bool
                        ) -> ActionOutcome:
        """Fold a requested action's result into the lifecycle and persist it.

        A refused automatic action (Alertmanager) blocks the pair; a person's refused
        request only answers 409.
        """
        self._generation[pair.name] += 1  # the cluster may have changed under this tick
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
                self._after_switch(pair, state, action, result)
            step = lifecycle.completed(state, action, self.clock())
            new_state, transitions = step.state, list(step.transitions)
        elif result.refused:
            self.recorder.record_refused(pair.name, action.kind)
            if automatic and not result.details.get("dry_run"):
                step = lifecycle.failed(state, action, result.reasons, self.clock())
                new_state, transitions = step.state, list(step.transitions)
        await self._commit(pair, state, new_state, transitions)
        return ActionOutcome(action.kind, result.changed, result.refused, result.reasons,
                             new_state.phase, result.active,
                             bool(result.details.get("dry_run")) or self.dry_run,
                             result.to_dict())

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
            await self._commit(pair, state, new_state, list(step.transitions), audit=entry)
            self._generation[pair.name] += 1
            log.info("approval", pair=pair.name, action=kind, by=by, decision=what,
                     phase=state.phase, outcome=outcome, note=said)
            await self._announce_approval(pair, kind, by, outcome, said, state.phase, reason)
            verb = "unapproved" if withdraw else "approved"
            if step.refusal:
                return ActionOutcome(kind, False, True, step.refusal, state.phase,
                                     state.active, self.dry_run, {"by": by})
            return ActionOutcome(kind, new_state != state, False,
                                 (f"{verb} by {by or 'unknown'} in phase {state.phase}: "
                                  f"{said}; now {new_state.phase} ({new_state.reason})",),
                                 new_state.phase, new_state.active, self.dry_run, {"by": by})

    async def _announce_approval(self, pair: PairConfig, kind: str, by: str, outcome: str,
                                 said: str, phase: str, reason: str) -> None:
        """The Kubernetes Event of an approval (none in dry-run; never fails the request)."""
        if self.dry_run:
            return
        verb = "unapproved" if kind == "unapprove" else "approved"
        message = f"{verb} by {by or 'unknown'} in phase {phase}: {said}"
        if reason:
            message += f" (reason: {reason})"
        try:
            await self.operations.announce(pair, reason=events.UNAPPROVED if kind == "unapprove"
                                           else events.APPROVED, message=message, action=kind,
                                           warning=outcome == "refused")
        except (ClusterError, *CLUSTER_ERRORS) as exc:
            log.warning("approval Event not written", pair=pair.name, error=str(exc)[:200])

    async def alert(self, name: str, reason: str, received: float
                    ) -> tuple[AlertOutcomeName, ActionOutcome]:
        """A matching Alertmanager alert for the pair's new active: roll back if allowed.

        `received` is the monotonic time the webhook arrived (for the latency metric).
        """
        async with self._acting(name) as pair:
            view = self.views[pair.name]
            state = view.state
            observation = await self._rollback_view(pair, state, view.observation)
            step: Step = lifecycle.alert_rollback(state, observation, self.policy(pair),
                                                  self.clock(), reason)
            if not step.actions:
                if step.state != state:
                    await self._commit(pair, state, step.state, list(step.transitions))
                    self._generation[pair.name] += 1
                outcome: AlertOutcomeName = "cooldown" if any(
                    r.startswith("cooldown") for r in step.refusal) else (
                    "refused" if step.state.phase == "blocked" else "ignored")
                return outcome, ActionOutcome("rollback", False, outcome == "refused",
                                              step.refusal, step.state.phase, state.active,
                                              self.dry_run)
            action = step.actions[0]
            result = await self._shielded(lambda: self.operations.rollback(
                pair, trigger="alertmanager", reason=reason,
                scale_up_first=action.scale_up_first, to=action.namespace or None))
            answer = await self._conclude(pair, state, action, result, received,
                                          automatic=True)
            if answer.refused:
                return "refused", answer
            return ("rollback" if answer.changed else "ignored"), answer

    async def _rollback_view(self, pair: PairConfig, state: ReleaseState,
                             cached: Observation | None) -> Observation:
        """The cached observation, with the rollback target's readiness read live now.

        The cache may predate a flip made moments ago; whether the previous namespace can
        take traffic is worth one read (a few milliseconds) before deciding.
        """
        base = cached or Observation(active=None, dark=None)
        target = state.previous
        if target is None:
            return base
        try:
            readiness = await environments.read_readiness(self.operations.api, target,
                                                          pair=pair)
        except CLUSTER_ERRORS as exc:
            return replace(base, active=state.active, dark=target, dark_ready=False,
                           dark_problem=f"cannot read {target}: {type(exc).__name__}")
        return replace(base, active=state.active, dark=target, dark_ready=readiness.ready,
                       dark_replicas=sum(d.replicas for d in readiness.deployments),
                       dark_problem="; ".join(readiness.reasons[:3]))

    # -- shutdown ------------------------------------------------------------------------------

    def stop_acting(self) -> None:
        """Start no new action from now on (called first on shutdown, before requests drain);
        actions already started finish."""
        self._closing = True
        self._wake.set()

    async def close(self, deadline: float = 30.0) -> list[str]:
        """Stop ticking and start no new action, stop the validation drivers; wait up to
        `deadline` seconds for actions in flight (a switch is never cut in half). Returns
        the names of unfinished ones."""
        self._closing = True
        self._wake.set()
        await self.drivers.close()
        pending = [task for task in self._inflight if not task.done()]
        if not pending:
            return []
        log.info("waiting for actions in flight", count=len(pending))
        _, still = await asyncio.wait(pending, timeout=deadline)
        if still:
            log.error("actions still running at shutdown; state is reconciled on restart",
                      count=len(still))
        return [task.get_name() for task in still]


def _needs_recovery(record: PairState | None, observation: Observation) -> bool:
    """Routes split, or a switch left `started`. (A route change the record has not seen
    is followed by the lifecycle's own step: `lifecycle.follow_routes`.)"""
    if observation.active is None:
        return True
    if record is None:
        return False
    return (record.last_action or {}).get("status") == "started"
