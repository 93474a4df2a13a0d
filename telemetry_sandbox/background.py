"""An asyncio event loop in a daemon thread, so synchronous code can host aiohttp servers.

Sync pytest fixtures (session scope) and the demo's setup code use it to keep async servers
running while the main thread does something else.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")


class BackgroundLoop:
    """Owns one event loop running forever in its own thread until stop()."""

    def __init__(self, name: str = "telemetry-sandbox-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (after start())."""
        if self._loop is None:
            raise RuntimeError("BackgroundLoop is not started")
        return self._loop

    def start(self) -> BackgroundLoop:
        """Start the thread and wait until its loop runs."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("background event loop did not start")
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run a coroutine on the loop and wait for its result (bounded)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel leftover tasks, stop the loop, join the thread, close the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def cancel_pending() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_pending(), loop).result(timeout=timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=timeout_s)
            if not thread.is_alive():
                loop.close()
            self._loop = None
            self._thread = None
