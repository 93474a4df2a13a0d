"""The control loop: every `evaluation.interval`, for all pairs at once, read, judge, act.

Each tick re-reads the live routes and Deployments (they are the truth, as in Flagger's
scheduler), evaluates every pair in one Evaluator call, caches the verdicts so API reads
cost nothing, steps each pair's lifecycle and, on the leader only, carries out the actions
and persists the state in the ConfigMap. Actions run shielded from cancellation and are
awaited on shutdown, so a SIGTERM never leaves a half-flip. Dry-run decides and reports
but writes nothing to the cluster (not even the state).

This module wires the pieces and runs the loop; each job has its own module:
`ticking` (one tick), `dispatch` (running an action under the Lease), `folding` (an
action's result into the lifecycle), `records` (loading and committing the stored state),
`announcing` (the notifications hook), `requests` (the API's and the webhook's actions),
`livereads` (what is read from the cluster), `pairviews` (the cached views and answers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import structlog
from kubernetes_asyncio import client

from gatekeeper import lifecycle
from gatekeeper.clocks import SteadyClock
from gatekeeper.config import Config, PairConfig, PolicyConfig
from gatekeeper.drivers import Drivers
from gatekeeper.evaluating import Evaluator
from gatekeeper.metrics import Recorder
from gatekeeper.operations import Operations
from gatekeeper.service.announcing import Announcer
from gatekeeper.service.dispatch import Dispatcher, LeaderView
from gatekeeper.service.folding import Folder
from gatekeeper.service.livereads import ObjectCache
from gatekeeper.service.notifications import Notifier
from gatekeeper.service.pairviews import (
    ActionOutcome,
    AlertOutcomeName,
    PairView,
    PairViews,
    ShuttingDown,
)
from gatekeeper.service.records import Records
from gatekeeper.service.requests import Requests
from gatekeeper.service.ticking import Ticker
from gatekeeper.state import StateStore

__all__ = ["ActionOutcome", "Controller", "LeaderView", "PairView", "ShuttingDown"]

log = structlog.get_logger(__name__)

MIN_GAP = 1.0  # seconds between tick starts when woken early (the minimum interval)


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
        cache: ObjectCache | None = None,
    ) -> None:
        """`clock` times the lifecycle (soak, observation, cooldown): by default a
        SteadyClock over `wall`, so a step of the wall clock never shortens a duration.
        `wall` stamps the audit trail and notifications people read.
        `reads` is where the control loop's periodic reads go; actions use
        `operations.api`, so a tick's burst of reads over many pairs never queues ahead of
        an action or the Lease. `drivers` send the dark its validation evidence
        (gatekeeper.drivers), started and stopped here. `cache` (the watcher) answers the
        ticks' Deployment and pod reads while it is current (`livereads`)."""
        self.config = config
        self.evaluator = evaluator
        self.operations = operations
        self.api = reads or operations.api
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
        self.pairs = PairViews(config.pairs)
        self.views = self.pairs.views
        self.dispatcher = Dispatcher(operations, leadership, self.drivers)
        self.announcer = Announcer(config, self.pairs, operations, notifier=notifier,
                                   clock=self.clock, wall=wall)
        self.records = Records(config, self.pairs, self.store, recorder=recorder,
                               announcer=self.announcer, drivers=self.drivers,
                               dry_run_for=operations.dry_run_for, acts_on=self.acts_on,
                               holds=self.holds,
                               closing=lambda: self.dispatcher.closing, clock=self.clock,
                               wall=wall)
        self.folder = Folder(operations, self.pairs, self.dispatcher, self.records,
                             recorder=recorder, clock=self.clock)
        self.ticker = Ticker(config, evaluator, operations, self.pairs, reads=self.api,
                             dispatcher=self.dispatcher, folder=self.folder,
                             records=self.records, recorder=recorder,
                             acts_on=self.acts_on, evaluates=self.evaluates,
                             clock=self.clock, cache=cache)
        self.requests = Requests(config, self.pairs, operations, reads=self.api,
                                 dispatcher=self.dispatcher, folder=self.folder,
                                 records=self.records, announcer=self.announcer,
                                 recorder=recorder, leadership=leadership,
                                 acts_on=self.acts_on, clock=self.clock)
        self.on_pairs: list[Callable[[], None]] = []
        """Called after the set of served pairs changed (the watch streams follow it)."""
        self._desired: dict[str, PairConfig | None] = {}
        """Pair name -> the spec to serve once its action in flight ends (None: remove)."""
        self._settling: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._tick_done = asyncio.Event()
        self.ticks = 0
        self.last_tick_at: float | None = None
        """Monotonic time the last tick finished (health checks)."""

    # -- reads for the API ---------------------------------------------------------------------

    def view(self, name: str) -> PairView:
        """The cached view of a pair; KeyError naming the served pairs otherwise."""
        return self.views[self.pairs.pair(name).name]

    def policy(self, pair: PairConfig) -> PolicyConfig:
        """The pair's effective policy."""
        return self.config.policy_for(pair)

    @property
    def is_leader(self) -> bool:
        """Whether this replica acts (dry-run replicas decide as if they did)."""
        return self.dry_run or self.leadership.is_leader

    def acts_on(self, name: str) -> bool:
        """Whether this replica acts on the pair now (dry-run replicas decide as if);
        a call, read afresh after every await."""
        return self.dry_run or self.leadership.acts_on(name)

    def holds(self, name: str) -> bool:
        """Whether this replica still holds the pair's Lease (also while handing it over):
        a running step may write the pair's state (dry-run: nothing is written anyway)."""
        return self.dry_run or self.leadership.holds(name)

    def evaluates(self, pair: PairConfig) -> bool:
        """Sharded replicas evaluate only their own pairs; one leader's followers evaluate
        every pair (their reads serve the API)."""
        return not self.leadership.sharded or self.acts_on(pair.name)

    @property
    def ready(self) -> bool:
        """At least one tick completed and the service is not shutting down."""
        return self.ticks > 0 and not self.dispatcher.closing

    def wall_time(self, reading: float) -> float:
        """A lifecycle time (steady clock) as wall time: for the audit trail, and to compare
        with times other hosts stamp (an alert's `startsAt`)."""
        return self.records.wall_time(reading)

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

    def report_evidence(self, name: str, problem: str) -> None:
        """The hook for the evidence work: the release's evidence does not come (`problem`,
        '' once it does). Announced once, at the pair's next commit, while validating."""
        self.view(name).evidence_problem = problem

    # -- the set of pairs ----------------------------------------------------------------------

    def serve_pairs(self, pairs: Sequence[PairConfig]) -> None:
        """Serve exactly PAIRS from now on (the BlueGreenPair objects changed), without
        stopping the loop or any other pair. A new pair is served at once; a changed spec
        or a removal waits, under the pair's lock, for the pair's action in flight to end
        (each pair on its own, so nobody else waits), then the next tick judges the new
        spec. A pair equal to the one served is left alone."""
        wanted = {pair.name: pair for pair in pairs}
        served = {pair.name: pair for pair in self.pairs.pairs()}
        added = False
        for name, pair in wanted.items():
            now = served.get(name)
            if now is None and name not in self._desired:
                self._add(pair)
                added = True
            elif now is None or (now is not pair and now != pair):
                self._desire(name, pair)
            elif name in self._desired:
                self._desire(name, now)  # an edit undone before it was applied
        for name in served:
            if name not in wanted:
                self._desire(name, None)
        if added:
            self._pairs_changed()

    @property
    def settling(self) -> list[str]:
        """Pairs whose new spec or removal waits for their action in flight."""
        return sorted(self._settling)

    def _add(self, pair: PairConfig) -> None:
        self.pairs.add(pair)
        self.recorder.record_rules(pair.name, self.evaluator.rule_set.rules)
        log.info("pair served", pair=pair.name)

    def _desire(self, name: str, pair: PairConfig | None) -> None:
        self._desired[name] = pair
        if name not in self._settling:
            self._settling[name] = asyncio.create_task(self._settle(name),
                                                       name=f"settle pair {name}")

    async def _settle(self, name: str) -> None:
        """Apply the pair's latest wanted spec (or removal) once its lock is free."""
        try:
            while name in self._desired:
                lock = self.pairs.locks.get(name)
                if lock is None:  # not served (removed meanwhile): a new pair again
                    pair = self._desired.pop(name)
                    if pair is not None:
                        self._add(pair)
                        self._pairs_changed()
                    continue
                async with lock:
                    if name in self._desired:
                        await self._apply(name, self._desired.pop(name))
        except Exception:
            log.exception("cannot apply the pair's new spec", pair=name)
        finally:
            self._settling.pop(name, None)

    async def _apply(self, name: str, pair: PairConfig | None) -> None:
        """Replace or remove a served pair (its lock held: no action of it runs)."""
        current = self.pairs[name].pair
        if pair is None:
            await self.drivers.halt(name, "shutdown")
            self.pairs.remove(name)
            self.ticker.forget(name)
            self.recorder.forget_pair(name)
            log.info("pair no longer served", pair=name)
        elif pair is current or pair == current:
            return
        else:
            await self.drivers.halt(name, "new_release")
            self.pairs.replace(pair)
            log.info("pair's new spec served", pair=name)
        self._pairs_changed()

    def _pairs_changed(self) -> None:
        self.config = self.config.model_copy(update={"pairs": tuple(self.pairs.pairs())})
        for hook in self.on_pairs:
            hook()
        self.wake()

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every interval, or sooner when woken, until closed; a failing tick is
        logged, never fatal. Ticks start at least `MIN_GAP` seconds apart."""
        while not self.dispatcher.closing:
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
            if gap > 0 and not self.dispatcher.closing:
                await asyncio.sleep(gap)

    async def on_watch_event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        """Watch callback: a route or Deployment changed (a `kubectl patch`, a new release):
        evaluate now rather than at the next interval. Pod churn does not wake the loop."""
        if kind != "Pod" and event_type in ("ADDED", "MODIFIED", "DELETED"):
            self.wake()

    async def tick(self) -> None:
        """One evaluation of every pair, then one lifecycle step per pair (`Ticker.tick`)."""
        await self.ticker.tick()
        self.ticks += 1
        self.last_tick_at = time.monotonic()
        event, self._tick_done = self._tick_done, asyncio.Event()
        event.set()

    # -- requests ------------------------------------------------------------------------------

    async def request(self, name: str, kind: Literal["flip", "rollback", "scale_down"], *,
                      force: bool = False, reason: str = "", to: str | None = None,
                      keep: int | None = None) -> ActionOutcome:
        """A person's flip, rollback or scale-down (API): checked, idempotent, recorded."""
        return await self.requests.request(name, kind, force=force, reason=reason, to=to,
                                           keep=keep)

    async def approve(self, name: str, *, reason: str = "", by: str = "",
                      decision: lifecycle.Decision | None = None, withdraw: bool = False
                      ) -> ActionOutcome:
        """A person's go-ahead or its withdrawal (`Requests.approve`)."""
        return await self.requests.approve(name, reason=reason, by=by, decision=decision,
                                           withdraw=withdraw)

    async def alert(self, name: str, reason: str, received: float
                    ) -> tuple[AlertOutcomeName, ActionOutcome]:
        """A matching Alertmanager alert for the pair's new active: roll back if allowed.

        `received` is the monotonic time the webhook arrived (for the latency metric).
        """
        return await self.requests.alert(name, reason, received)

    # -- shutdown ------------------------------------------------------------------------------

    def stop_acting(self) -> None:
        """Start no new action from now on (called first on shutdown, before requests drain);
        actions already started finish."""
        self.dispatcher.closing = True
        self._wake.set()

    async def close(self, deadline: float = 30.0) -> list[str]:
        """Stop ticking and start no new action, stop the validation drivers; wait up to
        `deadline` seconds for actions in flight (a switch is never cut in half). Returns
        the names of unfinished ones."""
        self.dispatcher.closing = True
        self._wake.set()
        for task in list(self._settling.values()):
            task.cancel()
        await self.drivers.close()
        return await self.dispatcher.close(deadline)
