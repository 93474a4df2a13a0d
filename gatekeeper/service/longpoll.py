"""Flip-check long-polls (`?wait=`): each one ends at the next evaluation, at its deadline,
or soon after its client disconnects, whichever comes first.

aiohttp does not cancel a handler whose client went away (gatekeeper serve leaves handler
cancellation off, so an action is never cut in half by a client that hung up), and it has no
"client gone" signal for a request without a body. One sweeper task therefore checks every
waiting long-poll's connection each `sweep_interval` seconds and ends those whose client is
gone; a waiter itself wakes only when its answer may have changed. Abandoned long-polls used
to stay until their deadline (4,000 of them held 45 MiB and kept the CPU busy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

__all__ = ["LongPolls", "WaitEnd"]

WaitEnd = Literal["tick", "timeout", "gone"]


class LongPolls:
    """The long-polls waiting for the next evaluation tick."""

    def __init__(self, wait_tick: Callable[[float], Awaitable[bool]], *,
                 sweep_interval: float = 1.0, on_change: Callable[[int], None] | None = None
                 ) -> None:
        self._wait_tick = wait_tick
        """The controller's `wait_tick(timeout) -> True when a tick finished`."""
        self.sweep_interval = sweep_interval
        """Seconds between two checks of the waiters' connections."""
        self._on_change = on_change
        self._waiting: dict[asyncio.Future[WaitEnd], web.BaseRequest] = {}

    @property
    def waiting(self) -> int:
        """Long-polls waiting now."""
        return len(self._waiting)

    async def wait(self, request: web.BaseRequest, timeout: float) -> WaitEnd:  # noqa: ASYNC109
        """Until the next tick (`tick`), `timeout` seconds (`timeout`), or the client of
        `request` disconnected (`gone`)."""
        if _gone(request):
            return "gone"
        future: asyncio.Future[WaitEnd] = asyncio.get_running_loop().create_future()
        self._waiting[future] = request
        self._changed()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return "timeout"
        finally:
            self._waiting.pop(future, None)
            self._changed()

    def ticked(self) -> None:
        """An evaluation finished: every waiter re-reads its answer."""
        self._end(lambda _request: True, "tick")

    def sweep(self) -> int:
        """End the waiters whose client disconnected; how many."""
        return self._end(_gone, "gone")

    async def run(self) -> None:
        """Wake waiters at every tick and sweep abandoned ones, until cancelled."""
        while True:
            if await self._wait_tick(self.sweep_interval):
                self.ticked()
            self.sweep()

    def _end(self, which: Callable[[web.BaseRequest], bool], why: WaitEnd) -> int:
        ended = 0
        for future, request in list(self._waiting.items()):
            if not future.done() and which(request):
                future.set_result(why)
                ended += 1
        return ended

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(len(self._waiting))


def _gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
