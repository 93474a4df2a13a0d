"""A bounded thread pool for the blocking clients we use (requests, for Prometheus).

Nothing blocks the event loop: blocking calls go through `run_blocking`, and at most
`max_workers` of them run at once, so a slow server cannot exhaust threads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class BlockingPool:
    """Runs blocking callables in a bounded pool of named threads."""

    def __init__(self, *, max_workers: int = 8, name: str = "gatekeeper-blocking") -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await `func(*args, **kwargs)` run in the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    def shutdown(self) -> None:
        """Stop accepting work; running calls finish on their own (they have timeouts)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
