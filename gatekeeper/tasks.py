"""Long-running asyncio tasks: started by name through one guarded helper, never lost.

A bare `asyncio.create_task` loses a crash until the task is garbage-collected (and loses
the task itself when nothing keeps a reference). Every background loop of gatekeeper
(watches, the lease, the scheduler) starts through `start_task` instead: a crash is
logged with the task's name and, by default, the task restarts after a bounded,
jittered backoff. `Tasks` owns a set of such tasks and stops them all on shutdown,
waiting at most a deadline, so a stuck task cannot hang the process's exit.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import structlog

__all__ = ["Backoff", "CoroFactory", "Tasks", "start_task"]

log = structlog.get_logger()

CoroFactory = Callable[[], Awaitable[None]]
"""Makes a fresh coroutine for each (re)start: a coroutine object can be awaited only once."""

_orphans: set[asyncio.Task[None]] = set()  # strong references for tasks without an owner


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, bounded: how long to wait before retry `attempt`."""

    initial: float = 0.5
    """Seconds before the first retry."""
    maximum: float = 30.0
    """Seconds; no wait is ever longer, however many attempts failed."""
    factor: float = 2.0
    """Growth per failed attempt."""
    jitter: float = 0.5
    """Share of each delay that is randomised (0 = none, 1 = 0..delay), so replicas that
    failed together do not retry in lockstep."""

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.factor < 1:
            raise ValueError("backoff needs 0 <= initial <= maximum and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after `attempt` consecutive failures (1 = the first failure)."""
        exponent = max(attempt - 1, 0)
        # Cap the exponent before computing: factor ** 10_000 would overflow.
        base = min(self.maximum, self.initial * self.factor ** min(exponent, 64))
        return base * (1.0 - self.jitter * random.random())

    def delays(self) -> Iterator[float]:
        """The endless sequence of delays for attempts 1, 2, 3, ..."""
        attempt = 0
        while True:
            attempt += 1
            yield self.delay(attempt)


async def _guarded(
    name: str, factory: CoroFactory, *, restart_on_crash: bool, backoff: Backoff
) -> None:
    """Run the task's coroutine; log every crash by name; restart it if asked to."""
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A task that ran healthily for longer than the longest backoff starts afresh.
            if time.monotonic() - started > backoff.maximum:
                attempt = 0
            attempt += 1
            if not restart_on_crash:
                log.exception("task crashed", task=name)
                return
            delay = backoff.delay(attempt)
            log.exception("task crashed, restarting", task=name, attempt=attempt,
                          restart_in=round(delay, 3))
            await asyncio.sleep(delay)
        else:
            log.debug("task finished", task=name)
            return


def _report_unexpected(task: asyncio.Task[None]) -> None:
    """Last line of defence: `_guarded` only lets cancellation and BaseExceptions out."""
    _orphans.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("task died", task=task.get_name(), error=repr(error), exc_info=error)


def start_task(
    name: str,
    coro_factory: CoroFactory,
    *,
    restart_on_crash: bool = True,
    backoff: Backoff | None = None,
) -> asyncio.Task[None]:
    """Start a named long-running task whose crashes are logged and, by default, restarted.

    `coro_factory` is called again for each restart; a normal return ends the task. The
    task is referenced until it ends, so it is never garbage-collected while running.
    Cancel it (or use `Tasks`) to stop it.
    """
    task = asyncio.create_task(
        _guarded(name, coro_factory, restart_on_crash=restart_on_crash,
                 backoff=backoff or Backoff()),
        name=name,
    )
    _orphans.add(task)
    task.add_done_callback(_report_unexpected)
    return task


class Tasks:
    """Owns named tasks like `asyncio.TaskGroup`, but one crash does not stop the others.

    `close()` cancels every task and waits for them with a deadline; names of tasks that
    did not stop in time are logged and returned, and the process can still exit.
    """

    def __init__(self, *, name: str = "tasks", shutdown_timeout: float = 10.0) -> None:
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def start(
        self,
        name: str,
        coro_factory: CoroFactory,
        *,
        restart_on_crash: bool = True,
        backoff: Backoff | None = None,
    ) -> asyncio.Task[None]:
        """Start a task owned by this group; names are unique among its running tasks."""
        if self._closed:
            raise RuntimeError(f"task group {self.name!r} is closed; cannot start {name!r}")
        running = self._tasks.get(name)
        if running is not None and not running.done():
            raise ValueError(f"task {name!r} is already running in {self.name!r}")
        task = start_task(name, coro_factory, restart_on_crash=restart_on_crash,
                          backoff=backoff)
        self._tasks[name] = task
        return task

    @property
    def names(self) -> list[str]:
        """Names of the tasks still running, sorted."""
        return sorted(name for name, task in self._tasks.items() if not task.done())

    def __contains__(self, name: object) -> bool:
        task = self._tasks.get(name) if isinstance(name, str) else None
        return task is not None and not task.done()

    async def close(self, *, deadline: float | None = None) -> list[str]:
        """Cancel every task and wait up to `deadline` (default `shutdown_timeout`) seconds.

        Returns the names of tasks still running at the deadline (also logged).
        """
        self._closed = True
        if deadline is None:
            deadline = self.shutdown_timeout
        pending = [task for task in self._tasks.values() if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=deadline)
        else:
            still = set()
        stuck = sorted(task.get_name() for task in still)
        if stuck:
            log.error("tasks did not stop in time", group=self.name, tasks=stuck,
                      timeout=deadline)
        return stuck

    async def __aenter__(self) -> Tasks:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
