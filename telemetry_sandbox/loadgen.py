"""A small, bounded HTTP load generator (aiohttp) for driving SyntheticApps in the demo.

It paces requests at a fixed rate over the URLs round-robin and always stops by itself:
after `duration_s`, after `max_requests`, and every request has a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp

from telemetry_sandbox.loopback import require_loopback_url

__all__ = ["run_load"]

TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"


async def run_load(
    urls: Sequence[str],
    rps: float,
    duration_s: float,
    max_requests: int | None = None,
    *,
    timeout_s: float = 5.0,
    concurrency: int = 64,
) -> Counter[str]:
    """Send GET requests at `rps` for `duration_s`; return counts by status.

    Keys are status codes as strings ("200", "503") plus "timeout" and "connection_error".
    Requests still in flight when the duration ends get at most `timeout_s` to finish.
    """
    if not urls:
        raise ValueError("run_load needs at least one URL")
    if rps <= 0 or duration_s <= 0:
        raise ValueError("rps and duration_s must be > 0")
    for url in urls:
        require_loopback_url(url)
    total = int(rps * duration_s)
    if max_requests is not None:
        total = min(total, max_requests)
    counts: Counter[str] = Counter()
    limiter = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(url: str) -> None:
            try:
                async with session.get(url) as response:
                    await response.read()
                    counts[str(response.status)] += 1
            except TimeoutError:
                counts[TIMEOUT] += 1
            except aiohttp.ClientError:
                counts[CONNECTION_ERROR] += 1
            finally:
                limiter.release()

        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        for index in range(total):
            delay = started + index / rps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await limiter.acquire()
            if time.monotonic() - started > duration_s:
                limiter.release()
                break
            tasks.append(asyncio.create_task(one(urls[index % len(urls)])))
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return counts
