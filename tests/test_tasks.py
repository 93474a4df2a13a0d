"""Named long-running tasks: crashes are logged by name and restarted; shutdown is bounded."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from gatekeeper import tasks

FAST = tasks.Backoff(initial=0.01, maximum=0.02, jitter=0.0)


async def test_crash_is_logged_with_the_name_and_restarted() -> None:
    """A crashing task is logged with its name and its coroutine made afresh."""
    runs = 0
    third = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        third.set()
        await asyncio.Event().wait()

    with capture_logs() as logs:
        task = tasks.start_task("flaky", flaky, backoff=FAST)
        await asyncio.wait_for(third.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    crashes = [e for e in logs if e["event"] == "task crashed, restarting"]
    assert [e["task"] for e in crashes] == ["flaky", "flaky"]
    assert all(e["log_level"] == "error" and e["exc_info"] for e in crashes)


async def test_crash_without_restart_is_logged_once() -> None:
    """With restart_on_crash=False the task ends after one logged crash."""

    async def broken() -> None:
        raise ValueError("bad")

    with capture_logs() as logs:
        task = tasks.start_task("once", broken, restart_on_crash=False)
        await asyncio.wait_for(task, 5)
    assert [(e["event"], e["task"]) for e in logs] == [("task crashed", "once")]


async def test_group_cancels_all_and_reports_stuck_tasks() -> None:
    """close() cancels every task and names those that ignore cancellation past the deadline."""
    release = asyncio.Event()

    async def polite() -> None:
        await asyncio.Event().wait()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await release.wait()

    group = tasks.Tasks(name="test")
    first = group.start("polite", polite)
    group.start("stubborn", stubborn)
    await asyncio.sleep(0)
    assert group.names == ["polite", "stubborn"]
    with pytest.raises(ValueError, match="already running"):
        group.start("polite", polite)
    with capture_logs() as logs:
        stuck = await group.close(deadline=0.1)
    assert stuck == ["stubborn"]
    assert first.cancelled()
    assert any(e["event"] == "tasks did not stop in time" for e in logs)
    with pytest.raises(RuntimeError, match="closed"):
        group.start("late", polite)
    release.set()
    await asyncio.sleep(0.05)
    assert group.names == []


def test_backoff_is_bounded_and_jittered() -> None:
    """Delays grow exponentially, never exceed the maximum, and jitter only shortens them."""
    backoff = tasks.Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.5)
    for attempt in range(1, 200):
        delay = backoff.delay(attempt)
        cap = min(8.0, 2.0 ** (attempt - 1))
        assert cap * 0.5 <= delay <= cap
    assert tasks.Backoff(initial=1, maximum=8, jitter=0).delay(100_000) == 8.0
    with pytest.raises(ValueError):
        tasks.Backoff(initial=2, maximum=1)
