"""Start and stop every pair's drivers as its lifecycle moves (the controller calls this).

One task per (pair, driver) while `plan` says the pair's drivers run. `reconcile` is
called wherever the controller commits a pair's state and on every tick of a replica
that does not lead; `halt` before a flip (the drivers stop before traffic moves);
`close` on shutdown. Calls for one pair are serialised; different pairs never wait for
each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from gatekeeper.config import PairConfig
from gatekeeper.drivers.base import Driver, DriverTarget, Report, StopReason, plan
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.outcomes import Outcome, OutcomeBoard
from gatekeeper.tasks import Backoff

__all__ = ["Drivers"]

log = structlog.get_logger(__name__)

STOP_TIMEOUT = 10.0
"""Seconds a driver's task gets to end after cancellation, and its `stop` to finish."""


@dataclass
class _Running:
    target: DriverTarget
    tasks: dict[str, asyncio.Task[None]]


class Drivers:
    """Every pair's validation drivers; with no drivers configured it does nothing."""

    def __init__(self, drivers: Sequence[Driver] = (), *, board: OutcomeBoard | None = None,
                 stop_timeout: float = STOP_TIMEOUT, backoff: Backoff | None = None) -> None:
        names = [driver.name for driver in drivers]
        if len(set(names)) != len(names):
            raise ValueError(f"driver names must be unique: {names}")
        self.drivers = tuple(drivers)
        self.board = board or OutcomeBoard()
        self.stop_timeout = stop_timeout
        self.backoff = backoff or Backoff(initial=1.0, maximum=30.0)
        self._running: dict[str, _Running] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._boarded: dict[str, tuple[str, str]] = {}
        """pair -> the (dark, release) its board outcomes are about."""
        self.stops: list[tuple[str, str, StopReason]] = []
        """(pair, dark, why) of every stop so far, oldest first (the last 100; API, tests)."""

    def running(self, pair: str) -> DriverTarget | None:
        """What `pair`'s drivers work on now, or None."""
        run = self._running.get(pair)
        return run.target if run is not None else None

    def for_pair(self, pair: PairConfig) -> list[Driver]:
        """The drivers `pair` configures."""
        return [driver for driver in self.drivers if driver.applies(pair)]

    async def reconcile(self, pair: PairConfig, state: ReleaseState,
                        observation: Observation | None, *, leading: bool,
                        closing: bool = False, dry_run: bool = False) -> None:
        """Start, keep or stop `pair`'s drivers for its state and the live observation."""
        if not self.for_pair(pair) and pair.name not in self._running:
            return
        async with self._lock(pair.name):
            wanted = plan(pair, state, observation, leading=leading, closing=closing,
                          dry_run=dry_run)
            current = self._running.get(pair.name)
            if current is not None and (wanted.target is None
                                        or wanted.target.key != current.target.key):
                await self._stop(pair.name, wanted.why or "new_release")
            if wanted.target is not None and pair.name not in self._running:
                self._start(wanted.target)

    async def halt(self, pair: str, why: StopReason) -> None:
        """Stop `pair`'s drivers now (before a flip); the next reconcile may start them."""
        if pair not in self._running:
            return
        async with self._lock(pair):
            if pair in self._running:
                await self._stop(pair, why)

    async def close(self) -> None:
        """Stop every pair's drivers (shutdown), all pairs at once."""
        await asyncio.gather(*(self.halt(pair, "shutdown") for pair in list(self._running)))

    # -- inside --------------------------------------------------------------------------------

    def _lock(self, pair: str) -> asyncio.Lock:
        return self._locks.setdefault(pair, asyncio.Lock())

    def _start(self, target: DriverTarget) -> None:
        name = target.pair.name
        if self._boarded.get(name) != target.key:
            self.board.clear(name)  # an old release's outcomes never count for this one
            self._boarded[name] = target.key
        tasks = {}
        for driver in self.for_pair(target.pair):
            tasks[driver.name] = asyncio.create_task(
                self._drive(driver, target), name=f"driver {driver.name} {name}")
        self._running[name] = _Running(target, tasks)
        log.info("validation drivers started", pair=name, dark=target.dark,
                 release=target.release, drivers=sorted(tasks), dry_run=target.dry_run)

    def _reporter(self, driver: Driver, target: DriverTarget) -> Report:
        name = target.pair.name

        def report(outcome: Outcome) -> None:
            if self._boarded.get(name) == target.key:  # never a stopped run's late word
                self.board.post(name, target.dark, target.release, driver.name, outcome)

        return report

    async def _drive(self, driver: Driver, target: DriverTarget) -> None:
        """Run one driver; a crash is logged, posted as `error` and restarted after a
        backoff; a normal return ends it."""
        report = self._reporter(driver, target)
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await driver.run(target, report)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt = 1 if time.monotonic() - started > self.backoff.maximum else attempt + 1
                delay = self.backoff.delay(attempt)
                log.exception("validation driver crashed; restarting", pair=target.pair.name,
                              driver=driver.name, attempt=attempt, retry_in=round(delay, 1))
                report(Outcome("error", f"the {driver.name} driver crashed: "
                                        f"{type(exc).__name__}: {str(exc)[:200]}",
                               at=time.time()))
                await asyncio.sleep(delay)

    async def _stop(self, pair: str, why: StopReason) -> None:
        run = self._running.pop(pair)
        for task in run.tasks.values():
            task.cancel()
        if run.tasks:
            _, stuck = await asyncio.wait(run.tasks.values(), timeout=self.stop_timeout)
            for task in stuck:
                log.error("validation driver did not stop in time", pair=pair,
                          task=task.get_name())
        drivers = {driver.name: driver for driver in self.drivers}
        await asyncio.gather(*(self._undo(drivers[name], run.target, why)
                               for name in run.tasks))
        self.stops.append((pair, run.target.dark, why))
        del self.stops[:-100]
        log.info("validation drivers stopped", pair=pair, dark=run.target.dark, why=why)

    async def _undo(self, driver: Driver, target: DriverTarget, why: StopReason) -> None:
        try:
            await asyncio.wait_for(driver.stop(target, why), self.stop_timeout)
        except Exception:  # one driver's failed cleanup must not stop the others
            log.exception("validation driver's stop failed", pair=target.pair.name,
                          driver=driver.name, why=why)
