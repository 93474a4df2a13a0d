"""The CLI's flip, rollback and scale-down tell people too: the same notices the service
sends, delivered before the command exits (a bounded wait: a hung receiver delays the exit
by at most `notifications.timeout` x attempts, capped at `MAX_WAIT`, never the action).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from gatekeeper import notices
from gatekeeper.config import Config, PairConfig
from gatekeeper.lifecycle import Phase
from gatekeeper.operations import ActionResult, PairStatus
from gatekeeper.service.notifications import Notifier, ReceiverError, load_receivers

__all__ = ["MAX_WAIT", "announce"]

MAX_WAIT = 15.0
"""Seconds the command waits at exit for its messages at most."""
_EVENTS: dict[str, notices.EventName] = {
    "flip": "flipped", "rollback": "rolled_back", "scale_down": "scaled_down"}
_PHASES: dict[str, Phase] = {
    "flip": "flipped", "rollback": "rolled_back", "scale_down": "stable"}


def notice_for(pair: PairConfig, result: ActionResult, status: PairStatus | None, *,
               at: float) -> notices.Notice | None:
    """The notice for a CLI action that changed the cluster (None when it did not)."""
    event = _EVENTS.get(result.action)
    if event is None or not result.changed:
        return None
    active = result.active or (status.active if status is not None else None)
    dark = pair.other(active) if active in pair.namespaces else None
    images: dict[str, tuple[str, ...]] = {}
    for ns in status.namespaces if status is not None else ():
        if ns.readiness is not None:
            images[ns.namespace] = tuple(sorted({image for dep in ns.readiness.deployments
                                                 for image in dep.images.values()}))
    current = notices.Snapshot(
        pair=pair.name, namespaces=pair.namespaces, phase=_PHASES[result.action],
        active=active, dark=dark, trigger="cli", images=images, at=at)
    summary = "; ".join(result.reasons) or f"{result.action.replace('_', '-')} (cli)"
    return notices.for_action(current, event, summary)


async def announce(config: Config, pair: PairConfig, result: ActionResult,
                   status: PairStatus | None) -> None:
    """Send the action's notice to every configured receiver; wait for delivery, bounded.
    A receiver that cannot be read is reported on stderr and skipped (the action stands)."""
    notice = notice_for(pair, result, status, at=time.time())
    settings = config.notifications
    if notice is None or not settings.receivers:
        return
    try:
        receivers = load_receivers(settings)
    except ReceiverError as exc:
        print(f"warning: not notified: {exc}", file=sys.stderr)
        return
    notifier = Notifier(settings, receivers)
    task = asyncio.create_task(notifier.run(), name="notifications")
    try:
        notifier.notify(notice)
        await notifier.drain(min(MAX_WAIT, settings.timeout * (1 + settings.retries) + 1))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
