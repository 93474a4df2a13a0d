"""The notifications hook: tell people what changed for a pair, once per change.

Called wherever a pair's lifecycle state is committed (`records.Records.commit`); the
messages themselves are derived by the pure `notices` module, sent by the `Notifier`.
Approvals also leave a Kubernetes Event on the routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

import structlog

from gatekeeper import events, notices
from gatekeeper.config import Config, PairConfig
from gatekeeper.lifecycle import ReleaseState
from gatekeeper.operations import CLUSTER_ERRORS, ClusterError, Operations
from gatekeeper.service.notifications import Notifier
from gatekeeper.service.pairviews import PairViews

__all__ = ["Announcer"]

log = structlog.get_logger(__name__)


@dataclass
class Announcer:
    """Derives each pair's notices from its last announced snapshot and sends them."""

    config: Config
    views: PairViews
    operations: Operations
    _: KW_ONLY
    notifier: Notifier | None
    clock: Callable[[], float]
    wall: Callable[[], float]

    def announce(self, pair: PairConfig, before: ReleaseState, state: ReleaseState, *,
                 by: str = "") -> None:
        """Tell people what changed for the pair since they were last told (one message per
        change: `notices.derive`). Called wherever a lifecycle state is committed."""
        view = self.views[pair.name]

        def seen(of: ReleaseState, previous: notices.Snapshot | None) -> notices.Snapshot:
            return notices.snapshot(
                pair.name, pair.namespaces, of, view.observation,
                self.config.policy_for(pair), self.clock(), previous=previous, at=self.wall(),
                stuck_after=self.config.notifications.evidence_stuck_after, would=view.would,
                evidence_problem=view.evidence_problem,
                approver=by, dry_run=self.operations.dry_run_for(pair))

        previous = view.announced or seen(before, None)
        current = seen(state, previous)
        view.announced = current
        for notice in notices.derive(previous, current):
            log.info("announced", pair=pair.name, notice_event=notice.event,
                     summary=notice.summary)
            if self.notifier is not None:
                self.notifier.notify(notice)

    async def approval_event(self, pair: PairConfig, kind: str, by: str, outcome: str,
                             said: str, phase: str, reason: str) -> None:
        """The Kubernetes Event of an approval (none in dry-run; never fails the request)."""
        if self.operations.dry_run:
            return
        verb = "unapproved" if kind == "unapprove" else "approved"
        message = f"{verb} by {by or 'unknown'} in phase {phase}: {said}"
        if reason:
            message += f" (reason: {reason})"
        try:
            await self.operations.announce(pair, reason=events.UNAPPROVED if kind == "unapprove"
                                           else events.APPROVED, message=message, action=kind,
                                           warning=outcome == "refused")
        except (ClusterError, *CLUSTER_ERRORS) as exc:
            log.warning("approval Event not written", pair=pair.name, error=str(exc)[:200])
