"""Deliver release notices: Slack (Block Kit), Teams (Workflows: an Adaptive Card; the legacy
connector's MessageCard only if asked for), and a versioned generic JSON webhook.

`Notifier.notify` only enqueues, so a receiver that hangs or fails never delays or blocks an
action. Each receiver has its own bounded queue and worker (a hung Teams does not hold up
Slack); a full queue drops the oldest or the newest message, counted. Each delivery is
retried a bounded number of times with exponential backoff and jitter (tenacity), each
attempt bounded by `notifications.timeout`.

Receiver URLs are credentials: read from a file or an environment variable (a Secret), kept
out of `repr`, logs, API answers and metrics; a failure is logged by receiver name and
exception type only (an aiohttp message can quote the URL).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from gatekeeper.config import NotificationsConfig, ReceiverConfig, ReceiverKind
from gatekeeper.metrics import Recorder
from gatekeeper.notices import Notice

__all__ = [
    "SCHEMA_VERSION",
    "Notifier",
    "Receiver",
    "ReceiverError",
    "load_receivers",
    "render",
    "schema",
]

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
"""`version` of the generic webhook body (gatekeeper/notification.schema.json)."""
SCHEMA_FILE = "notification.schema.json"
MAX_BACKOFF = 30.0
_RETRY_STATUSES = {408, 425, 429}
_COLOURS = {"info": "808080", "good": "2EB886", "warning": "ECB22E", "critical": "E01E5A"}


class ReceiverError(Exception):
    """A receiver's URL cannot be read (missing file, unset variable): names which and how."""


@dataclass(frozen=True)
class Receiver:
    """A configured receiver with its URL read from the Secret (never shown)."""

    kind: ReceiverKind
    name: str
    url: str = field(repr=False)


def load_receivers(settings: NotificationsConfig,
                   environ: Mapping[str, str] | None = None) -> list[Receiver]:
    """Read every receiver's URL from its file or environment variable.

    ReceiverError naming the receiver, the file or variable and the fix; the URL itself is
    never part of the message.
    """
    env = os.environ if environ is None else environ
    receivers = []
    for index, item in enumerate(settings.receivers):
        name = item.name or f"{item.kind}-{index + 1}"
        where = f"notifications.receivers[{index}] ({name})"
        url = _read_url(item, where, env)
        if not url.startswith(("https://", "http://")):
            raise ReceiverError(f"{where}: the URL read from {_origin(item)} does not start "
                                "with https:// (is it the right Secret key?)")
        receivers.append(Receiver(item.kind, name, url))
    return receivers


def _origin(item: ReceiverConfig) -> str:
    return f"file {item.url_file}" if item.url_file else f"environment variable {item.url_env}"


def _read_url(item: ReceiverConfig, where: str, env: Mapping[str, str]) -> str:
    if item.url_file is not None:
        try:
            with open(item.url_file, encoding="utf-8") as handle:
                text = handle.read().strip()
        except OSError as exc:
            raise ReceiverError(f"{where}: cannot read url_file {item.url_file}: "
                                f"{exc.strerror or type(exc).__name__} (mount the Secret "
                                "holding the webhook URL there)") from None
    else:
        text = env.get(item.url_env or "", "").strip()
    if not text:
        raise ReceiverError(f"{where}: {_origin(item)} is empty or unset (set it from the "
                            "Secret holding the webhook URL)")
    return text


def schema() -> dict[str, Any]:
    """The JSON schema of the generic webhook body (shipped with the package)."""
    text = resources.files("gatekeeper").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


# -- rendering -----------------------------------------------------------------------------------


def links(notice: Notice, settings: NotificationsConfig) -> dict[str, str]:
    """`api` and `dashboard` links for the pair, from the configured base URLs."""
    found = {}
    if settings.api_url:
        found["api"] = f"{settings.api_url.rstrip('/')}/api/v1/pairs/{quote(notice.pair)}"
    if settings.dashboard_url:
        joiner = "&" if "?" in settings.dashboard_url else "?"
        found["dashboard"] = (f"{settings.dashboard_url}{joiner}"
                              f"{urlencode({'var-pair': notice.pair})}")
    return found


def _release(notice: Notice) -> str:
    """`api-green: app:1.4 · api-blue: app:1.3`."""
    parts = [f"{ns}: {', '.join(notice.images.get(ns, ())) or 'no images'}"
             for ns in notice.namespaces if ns in notice.images]
    return " · ".join(parts) or "unknown"


def _facts(notice: Notice) -> list[tuple[str, str]]:
    facts = [("Pair", notice.pair),
             ("Active", notice.active or "unknown (routes disagree or unreadable)"),
             ("Dark", notice.dark or "unknown"), ("Phase", notice.phase),
             ("Verdict", notice.verdict), ("Release", _release(notice))]
    if notice.trigger:
        facts.append(("Trigger", notice.trigger))
    if notice.approver:
        facts.append(("Approved by", notice.approver))
    return facts


def render(kind: ReceiverKind, notice: Notice,
           settings: NotificationsConfig | None = None) -> dict[str, Any]:
    """The JSON body each receiver expects."""
    settings = settings or NotificationsConfig()
    found = links(notice, settings)
    if kind == "slack":
        return _slack(notice, found)
    if kind == "teams":
        return _teams_workflows(notice, found)
    if kind == "teams_connector":
        return _message_card(notice, found)
    return generic(notice, found)


def generic(notice: Notice, found: dict[str, str]) -> dict[str, Any]:
    """The versioned body of docs/notifications.md (gatekeeper/notification.schema.json)."""
    return {
        "version": SCHEMA_VERSION, "source": "gatekeeper", "event": notice.event,
        "severity": notice.severity, "title": notice.title(), "summary": notice.summary,
        "pair": notice.pair, "namespaces": list(notice.namespaces), "active": notice.active,
        "dark": notice.dark, "phase": notice.phase, "verdict": notice.verdict,
        "reasons": list(notice.reasons),
        "images": {ns: list(images) for ns, images in notice.images.items()},
        "trigger": notice.trigger or None, "approver": notice.approver or None,
        "dry_run": notice.dry_run, "at": notice.at, "links": found,
    }


def _slack(notice: Notice, found: dict[str, str]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": notice.title()[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": notice.summary[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{value}"[:2000]}
                                       for name, value in _facts(notice)[:10]]},
    ]
    if notice.reasons:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": reason[:3000]} for reason in notice.reasons[:10]]})
    if found:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": label.capitalize()},
             "url": url} for label, url in found.items()]})
    text = f"{notice.title()}: {notice.summary}"
    return {"text": text[:3000], "blocks": blocks}


def _teams_workflows(notice: Notice, found: dict[str, str]) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": notice.title(), "weight": "Bolder", "size": "Medium",
         "wrap": True, "style": "heading", "color": _card_colour(notice)},
        {"type": "TextBlock", "text": notice.summary, "wrap": True},
        {"type": "FactSet", "facts": [{"title": name, "value": value}
                                      for name, value in _facts(notice)]},
    ]
    body.extend({"type": "TextBlock", "text": f"- {reason}", "wrap": True, "isSubtle": True}
                for reason in notice.reasons)
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard", "version": "1.4", "body": body,
        "msteams": {"width": "Full"},
    }
    if found:
        card["actions"] = [{"type": "Action.OpenUrl", "title": label.capitalize(), "url": url}
                           for label, url in found.items()]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
         "content": card}]}


def _card_colour(notice: Notice) -> str:
    return {"info": "Default", "good": "Good", "warning": "Warning",
            "critical": "Attention"}[notice.severity]


def _message_card(notice: Notice, found: dict[str, str]) -> dict[str, Any]:
    card: dict[str, Any] = {
        "@type": "MessageCard", "@context": "https://schema.org/extensions",
        "summary": notice.title(), "themeColor": _COLOURS[notice.severity],
        "title": notice.title(), "text": notice.summary,
        "sections": [{"facts": [{"name": name, "value": value}
                                for name, value in _facts(notice)]}],
    }
    if found:
        card["potentialAction"] = [
            {"@type": "OpenUri", "name": label.capitalize(),
             "targets": [{"os": "default", "uri": url}]} for label, url in found.items()]
    return card


# -- delivery ------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A failed attempt worth another (timeout, connection, 408/425/429, 5xx)."""


class _Final(Exception):
    """A failed attempt not worth another (4xx, a bad URL)."""


class Notifier:
    """Queues notices per receiver and delivers them in the background."""

    def __init__(
        self,
        settings: NotificationsConfig,
        receivers: list[Receiver] | None = None,
        *,
        recorder: Recorder | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`receivers` come from `load_receivers` (the Secret); `sleep` waits between
        attempts (tenacity's)."""
        self.settings = settings
        self.receivers = list(receivers or [])
        self.recorder = recorder
        self._sleep = sleep
        self._queues: dict[str, asyncio.Queue[Notice]] = {
            r.name: asyncio.Queue(maxsize=settings.queue_size) for r in self.receivers}
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        """True when at least one receiver is configured."""
        return bool(self.receivers)

    def __repr__(self) -> str:
        names = ", ".join(f"{r.name} ({r.kind})" for r in self.receivers)
        return f"Notifier({names})"

    def notify(self, notice: Notice) -> None:
        """Enqueue for every receiver without waiting; never raises."""
        for receiver in self.receivers:
            queue = self._queues[receiver.name]
            if queue.full():
                if self.settings.overflow == "drop_newest":
                    self._drop(receiver, notice, "newest")
                    continue
                oldest = queue.get_nowait()
                queue.task_done()
                self._drop(receiver, oldest, "oldest")
            queue.put_nowait(notice)

    def _drop(self, receiver: Receiver, notice: Notice, which: str) -> None:
        self.dropped += 1
        if self.recorder is not None:
            self.recorder.record_notification(receiver.name, receiver.kind, "dropped")
        log.warning(f"notification queue full: dropped the {which}", receiver=receiver.name,
                    pair=notice.pair, notice_event=notice.event)

    async def run(self) -> None:
        """Deliver queued notices forever (run as a named task; cancel to stop)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            try:
                await asyncio.gather(*(self._work(r) for r in self.receivers))
            finally:
                self._session = None

    async def _work(self, receiver: Receiver) -> None:
        queue = self._queues[receiver.name]
        while True:
            notice = await queue.get()
            try:
                await self._deliver(receiver, notice)
            except Exception:  # one bad message must not stop the worker
                log.exception("notification not delivered", receiver=receiver.name,
                              pair=notice.pair, notice_event=notice.event)
            finally:
                queue.task_done()

    def queued(self) -> int:
        """Messages waiting over all receivers."""
        return sum(q.qsize() for q in self._queues.values())

    async def drain(self, deadline: float) -> None:
        """Wait at most `deadline` seconds until queued notices are delivered (shutdown,
        the CLI's exit)."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(q.join() for q in self._queues.values())), deadline)
        except TimeoutError:
            log.warning("notifications still queued at exit", queued=self.queued())

    async def _deliver(self, receiver: Receiver, notice: Notice) -> None:
        body = render(receiver.kind, notice, self.settings)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.settings.retries),
            wait=wait_exponential_jitter(multiplier=self.settings.backoff, max=MAX_BACKOFF),
            retry=retry_if_exception_type(_Retryable), sleep=self._sleep, reraise=True)
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    await self._post(receiver.url, body)
        except (_Retryable, _Final) as exc:
            self.failed += 1
            if self.recorder is not None:
                self.recorder.record_notification(receiver.name, receiver.kind, "failed")
            log.warning("notification failed", receiver=receiver.name, kind=receiver.kind,
                        pair=notice.pair, notice_event=notice.event, problem=str(exc),
                        attempts=attempts)
            return
        self.sent += 1
        if self.recorder is not None:
            self.recorder.record_notification(receiver.name, receiver.kind, "sent")
        log.info("notification sent", receiver=receiver.name, kind=receiver.kind,
                 pair=notice.pair, notice_event=notice.event, attempts=attempts)

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        """One attempt; `_Retryable` or `_Final` naming the problem without the URL."""
        session = self._session
        if session is None:
            raise _Final("notifier is not running")
        try:
            async with session.post(url, json=body) as response:
                if response.status < 300:
                    return
                problem = f"HTTP {response.status}"
                if response.status >= 500 or response.status in _RETRY_STATUSES:
                    raise _Retryable(problem)
                raise _Final(problem)
        except aiohttp.InvalidURL:
            raise _Final("invalid URL") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The exception's message may quote the URL, a credential: its type only.
            raise _Retryable(type(exc).__name__) from None
