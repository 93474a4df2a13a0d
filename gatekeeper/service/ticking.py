"""One tick of the control loop: read every pair, judge them all at once, step each pair.

Reads the live routes and Deployments (the truth), evaluates every pair in one Evaluator
call, publishes the verdicts to the pairs' views (so API reads cost nothing), then steps
each pair's lifecycle: on the leader it acts (through `Folder.perform`) and persists,
elsewhere it only shows the leader's stored state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from kubernetes_asyncio import client

from gatekeeper import lifecycle
from gatekeeper.config import Config, PairConfig
from gatekeeper.errors import NotLeaderError
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.lifecycle import Observation
from gatekeeper.measurements import Verdict
from gatekeeper.metrics import Recorder
from gatekeeper.operations import CLUSTER_ERRORS, ActionResult, ClusterError, Operations
from gatekeeper.service import livereads
from gatekeeper.service.dispatch import Dispatcher
from gatekeeper.service.folding import Folder
from gatekeeper.service.observing import LiveRead, observe
from gatekeeper.service.pairviews import PairViews, ShuttingDown
from gatekeeper.service.records import Records
from gatekeeper.state import PairState

__all__ = ["PAIR_READS", "Ticker"]

log = structlog.get_logger(__name__)

PAIR_READS = 16
"""Pairs whose routes and Deployments a tick reads at once (each pair is 3-5 requests)."""


class Ticker:
    """Runs ticks over every configured pair."""

    def __init__(self, config: Config, evaluator: Evaluator, operations: Operations,
                 views: PairViews, *, reads: client.ApiClient, dispatcher: Dispatcher,
                 folder: Folder, records: Records, recorder: Recorder,
                 acts_on: Callable[[str], bool], evaluates: Callable[[PairConfig], bool],
                 clock: Callable[[], float],
                 cache: livereads.ObjectCache | None = None) -> None:
        self.config = config
        self.evaluator = evaluator
        self.judged_window = max(
            [evaluator.window, *(r.window for r in evaluator.rule_set.rules
                                 if r.window is not None and r.source == "prometheus")])
        """The longest Prometheus window a verdict reads: passes count only past it."""
        self.operations = operations
        self.views = views
        self.reads = reads
        self.dispatcher = dispatcher
        self.folder = folder
        self.records = records
        self.recorder = recorder
        self.acts_on = acts_on
        self.evaluates = evaluates
        self.clock = clock
        self.interval = config.evaluation.interval
        self.cache = cache
        self.routes = livereads.RouteMemory()
        """What fresh route reads learned (twins, when), for the cached reads."""
        self._reading = asyncio.Semaphore(PAIR_READS)
        self._steps: set[asyncio.Task[None]] = set()
        self._shown: set[str] = set()
        """Pairs this replica evaluated (sharded: the ones whose series it exports)."""

    async def tick(self) -> None:
        """One evaluation of every pair, then one lifecycle step per pair."""
        started = time.monotonic()
        served = self.views.pairs()  # the set may change during the tick (pair objects)
        pairs = [pair for pair in served if self.evaluates(pair)]
        drivers = self.dispatcher.drivers
        for pair in served:
            if self.evaluates(pair):
                self._shown.add(pair.name)
                continue
            # Its shard moved to another replica: the evidence and the metrics are its.
            if drivers.running(pair.name) is not None:
                await drivers.halt(pair.name, "not_leader")
            if pair.name in self._shown:
                self._shown.discard(pair.name)
                self.recorder.forget_pair(pair.name)
        generations = dict(self.views.generation)
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
        pairs, reads = _still_served(self.views, pairs, reads)
        for pair, live in zip(pairs, reads, strict=True):
            view = self.views[pair.name]
            verdict = verdicts.get(pair.name)
            observation = observe(pair, live, verdict, window=self.judged_window,
                                  verdict_at=now,
                                  verdict_max_age=self.config.evaluation.verdict_max_age)
            observations[pair.name] = observation
            if self.views.generation[pair.name] != generations[pair.name]:
                # An action (a webhook's rollback, a person's flip) ran while these reads
                # were in flight: they may show the routes before it. Publishing them would
                # undo the action in the view a person's request is checked against ("X is
                # already active" right after a rollback away from X); `_advance` skips the
                # step, and the next tick reads afresh.
                continue
            view.readiness = dict(live.readiness or {})
            view.read_errors = dict(live.errors or {})
            view.forbidden = live.forbidden
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
        cached = {pair.name for pair, live in zip(pairs, reads, strict=True)
                  if live.routes_cached}
        steps = [asyncio.create_task(self._advance(pair, observations[pair.name],
                                                   generations[pair.name],
                                                   routes_cached=pair.name in cached),
                                     name=f"advance {pair.name}") for pair in pairs]
        for task in steps:
            self._steps.add(task)
            task.add_done_callback(self._steps.discard)
        # A long action (rollback after a scale-up) must not hold up the other pairs' next
        # tick: its task carries on, and its pair is skipped while its lock is held.
        done: set[asyncio.Task[None]] = set()
        if steps:  # a sharded replica holding no shard has no pair to step
            done, _ = await asyncio.wait(steps, timeout=max(self.interval, 1.0))
        for task in done:
            if task.exception() is not None:
                log.error("lifecycle step failed", error=repr(task.exception()),
                          task=task.get_name())

    def forget(self, name: str) -> None:
        """The pair is no longer served (its object was deleted)."""
        self._shown.discard(name)

    async def read(self, pair: PairConfig) -> LiveRead:
        """Live routes and both namespaces' Deployments (`livereads.read_pair`, from the
        watch cache while it is current; the routes only while they say what the pair's
        record expects, so a route change is always confirmed by a fresh read)."""
        state = self.views[pair.name].state
        expected = livereads.Expected(state.active, state.exposure_step) \
            if state.active is not None else None
        return await livereads.read_pair(self.reads, pair, self.cache, memory=self.routes,
                                         expected=expected)

    async def _read_bounded(self, pair: PairConfig) -> LiveRead:
        """`read`, at most PAIR_READS pairs at a time: the request timeout then measures the
        API server, not the client's own queue (1,000 pairs queued 5,000 reads at once)."""
        async with self._reading:
            return await self.read(pair)

    def _soak_started(self, pair: PairConfig, dark: str) -> float | None:
        """When the dark became ready for the release being validated (persisted with the
        pair's state, so a restart judges the same span): the start of the counts that
        sequential comparisons judge, as wall time (Prometheus's clock). None outside
        validation."""
        state = self.views[pair.name].state
        if state.phase in ("validating", "ready") and state.dark == dark and (
                state.soak_started is not None):
            return self.records.wall_time(state.soak_started)
        return None

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

    async def _advance(self, pair: PairConfig, observation: Observation,
                       generation: int, *, routes_cached: bool = False) -> None:
        """Step the lifecycle; on the leader act and persist, elsewhere show the leader's.

        Skipped when a requested action ran since this tick's reads (they are stale: the
        routes may have moved), or while one is running; the next tick reads afresh. Also
        skipped when the routes came from the watch cache and the stored record, read now,
        expects something else of them (another process moved them and the cache has not
        seen it yet): the next tick reads them afresh.
        """
        if not self.views.served(pair):
            return  # deleted, or its spec replaced, since this tick read it
        lock = self.views.locks[pair.name]
        if lock.locked():
            log.info("pair busy with an action; skipping this tick", pair=pair.name)
            return
        async with lock:
            if not self.views.served(pair) or self.views.generation[pair.name] != generation:
                log.debug("reads predate an action or a new spec; skipping this tick",
                          pair=pair.name)
                return
            view = self.views[pair.name]
            records = self.records
            if not self.acts_on(pair.name) or self.dispatcher.closing:
                await records.load(pair, observation)
                records.record_phase(pair, view.state)
                await records.drive(pair, view.state)
                return
            # Load, step, act and commit under the pair's Lease: it is not handed over
            # between the action and the state write after it.
            async with self.dispatcher.holding(pair):
                await self._act(pair, observation, routes_cached=routes_cached)

    async def _act(self, pair: PairConfig, observation: Observation, *,
                   routes_cached: bool) -> None:
        """The acting replica's step: load the state, step the lifecycle, perform the
        actions, commit (inside `_step`'s lock and the pair's Lease guard)."""
        view = self.views[pair.name]
        records = self.records
        dry = self.operations.dry_run_for(pair)
        before = await records.load(pair, observation) if not dry \
            or view.record is None \
            else view.state
        if routes_cached and livereads.Expected(before.active, before.exposure_step) \
                != livereads.Expected(observation.active, observation.exposure_step):
            log.info("cached routes disagree with the stored state; reading them afresh on "
                     "the next tick", pair=pair.name, stored=before.active,
                     routes=observation.active)
            self.routes.forget(pair)
            return
        if not dry and _needs_recovery(view.record, observation):
            if await self._recover(pair):
                return  # routes moved: the next tick reads them afresh
            before = await records.load(pair, observation)
        step = lifecycle.step(before, observation, self.config.policy_for(pair),
                              self.clock())
        state, transitions = step.state, list(step.transitions)
        would = []
        for action in step.actions:
            folded = await self.folder.perform(pair, state, action, time.monotonic())
            state = folded.state
            transitions.extend(folded.transitions)
            if folded.note:
                would.append(folded.note)
        if would and tuple(would) != view.would:
            log.warning("dry-run: would act", pair=pair.name, would=would)
        view.would = tuple(would)
        if not self.records.holds(pair.name):
            return  # the fence lapsed meanwhile: the next owner owns the state
        await records.commit(pair, before, state, transitions)
        await records.publish(pair)

    async def _recover(self, pair: PairConfig) -> bool:
        """Finish or undo a switch a dead leader left between two routes, and bring the stored
        state in line with the routes (Operations.recover); True when routes moved."""
        ops = self.operations

        async def run() -> ActionResult:
            return await ops.recover(pair) or ActionResult("recover", False, False, (), None)

        try:
            result = await self.dispatcher.shielded(pair, run)
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
            self.views.bump(pair.name)
        return result.changed


def _still_served(views: PairViews, pairs: list[PairConfig], reads: list[LiveRead]
                  ) -> tuple[list[PairConfig], list[LiveRead]]:
    """The pairs (and their reads) still served as they were when the tick read them: a
    pair deleted meanwhile is gone, one whose spec changed is judged at the next tick."""
    kept = [(pair, live) for pair, live in zip(pairs, reads, strict=True)
            if views.served(pair)]
    return [pair for pair, _ in kept], [live for _, live in kept]


def _needs_recovery(record: PairState | None, observation: Observation) -> bool:
    """Routes split, or a switch left `started`. (A route change the record has not seen
    is followed by the lifecycle's own step: `lifecycle.follow_routes`.)"""
    if observation.active is None:
        return True
    if record is None:
        return False
    return (record.last_action or {}).get("status") == "started"
