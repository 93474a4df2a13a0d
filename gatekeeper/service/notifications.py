"""Tell people about flips, rollbacks and blocked releases: Slack, Microsoft Teams, JSON.

`Notifier.notify` only enqueues: delivery runs in a background task with its own timeouts
and retries (exponential backoff with jitter), so a slow chat service never delays the
control loop. When the queue is full the oldest notice is dropped and logged.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp
import structlog

from gatekeeper.config import NotificationsConfig

__all__ = ["Notice", "Notifier", "render"]

log = structlog.get_logger(__name__)

Kind = Literal["slack", "teams", "webhook"]
_COLOURS = {"flip": "2EB886", "rollback": "E01E5A", "blocked": "ECB22E"}
_RETRY_STATUSES = {408, 425, 429}


@dataclass(frozen=True)
class Notice:
    """One thing worth telling people."""

    event: Literal["flip", "rollback", "blocked"]
    pair: str
    message: str
    source: str | None = None
    target: str | None = None
    trigger: str = ""
    reason: str = ""
    phase: str = ""
    at: float = 0.0
    dry_run: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def title(self) -> str:
        """`[dry-run] api: rollback prod-green -> prod-blue (alertmanager)`."""
        prefix = "[dry-run] " if self.dry_run else ""
        move = f" {self.source} -> {self.target}" if self.source and self.target else ""
        trigger = f" ({self.trigger})" if self.trigger else ""
        return f"{prefix}{self.pair}: {self.event}{move}{trigger}"


def render(kind: Kind, notice: Notice) -> dict[str, Any]:
    """The JSON body each receiver expects."""
    if kind == "slack":
        return {"text": f"*{notice.title()}*\n{notice.message}"}
    if kind == "teams":
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": notice.title(),
            "themeColor": _COLOURS.get(notice.event, "808080"),
            "title": notice.title(),
            "text": notice.message,
        }
    return {"source": "gatekeeper", **asdict(notice)}


class Notifier:
    """Queues notices and delivers them in the background."""

    def __init__(
        self,
        settings: NotificationsConfig,
        *,
        queue_size: int = 100,
        backoff: float = 0.5,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.targets: list[tuple[Kind, str]] = (
            [("slack", url) for url in settings.slack]
            + [("teams", url) for url in settings.teams]
            + [("webhook", url) for url in settings.webhooks]
        )
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=queue_size)
        self._backoff = backoff
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        """True when at least one receiver is configured."""
        return bool(self.targets)

    def notify(self, notice: Notice) -> None:
        """Enqueue without waiting; never raises."""
        if not self.targets:
            return
        if self._queue.full():
            dropped = self._queue.get_nowait()
            log.warning("notification queue full: dropped the oldest", pair=dropped.pair,
                        notice_event=dropped.event)
        self._queue.put_nowait(notice)

    async def run(self) -> None:
        """Deliver queued notices forever (run as a named task; cancel to stop)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            try:
                while True:
                    notice = await self._queue.get()
                    await asyncio.gather(*(self._deliver(kind, url, notice)
                                           for kind, url in self.targets))
                    self._queue.task_done()
            finally:
                self._session = None

    async def drain(self, deadline: float) -> None:
        """Wait at most `deadline` seconds until queued notices are delivered (shutdown)."""
        if self._queue.empty():
            return
        try:
            await asyncio.wait_for(self._queue.join(), deadline)
        except TimeoutError:
            log.warning("notifications still queued at shutdown", queued=self._queue.qsize())

    async def _deliver(self, kind: Kind, url: str, notice: Notice) -> None:
        body = render(kind, notice)
        attempts = 1 + self.settings.retries
        for attempt in range(1, attempts + 1):
            problem = await self._post(url, body)
            if problem is None:
                self.sent += 1
                log.info("notification sent", receiver=kind, pair=notice.pair,
                         notice_event=notice.event)
                return
            retryable, text = problem
            if not retryable or attempt == attempts:
                self.failed += 1
                log.warning("notification failed", receiver=kind, pair=notice.pair,
                            notice_event=notice.event, problem=text, attempts=attempt)
                return
            delay = self._backoff * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            await self._sleep(delay)

    async def _post(self, url: str, body: dict[str, Any]) -> tuple[bool, str] | None:
        """None on success; else (retryable, problem). URLs are never logged (they are keys)."""
        session = self._session
        if session is None:
            return False, "notifier is not running"
        try:
            async with session.post(url, json=body) as response:
                if response.status < 300:
                    return None
                retryable = response.status >= 500 or response.status in _RETRY_STATUSES
                return retryable, f"HTTP {response.status}"
        except aiohttp.InvalidURL:
            return False, "invalid URL"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The message may quote the URL, which is a credential for chat webhooks.
            return True, type(exc).__name__
