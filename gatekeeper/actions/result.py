"""The one result every action returns, and the one failure it raises.

An action (flip, rollback, scale up or down, wait until ready, recover) answers with an
`ActionResult`: what it did, or why it did not. A refusal is a result, not an exception;
only a cluster that could not be read or changed raises, as `ClusterError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog

from gatekeeper.kubeclient import ApiException
from gatekeeper.routers.base import RouteError
from gatekeeper.state import StateError

__all__ = ["CLUSTER_ERRORS", "ActionKind", "ActionResult", "ClusterError", "SwitchKind",
           "cluster_errors", "result"]

log = structlog.get_logger()

ActionKind = Literal["flip", "rollback", "scale_up", "scale_down", "wait_ready", "recover",
                     "expose", "unmirror"]
SwitchKind = Literal["flip", "rollback"]

CLUSTER_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError, RouteError, StateError,
                  OSError)
"""Every way reading or changing the cluster fails (HTTP, connection, timeout, routes, state)."""


class ClusterError(Exception):
    """The cluster could not be read or changed (unreachable, forbidden, object missing)."""


@contextlib.asynccontextmanager
async def cluster_errors(doing: str) -> AsyncIterator[None]:
    """Raise any failure of the block as a `ClusterError` saying what was being done."""
    try:
        yield
    except CLUSTER_ERRORS as exc:
        if isinstance(exc, ApiException):
            detail = f"HTTP {exc.status} {exc.reason or ''}".strip()
        elif isinstance(exc, RouteError | StateError):
            detail = str(exc)
        else:
            detail = f"{type(exc).__name__}: {exc}"
        raise ClusterError(f"{doing}: {detail}") from exc


@dataclass(frozen=True)
class ActionResult:
    """What an action did, or why it did not."""

    action: ActionKind
    changed: bool
    """The cluster was changed (False for no-op / refused / dry-run)."""
    refused: bool
    """A precondition failed (reasons say which)."""
    reasons: tuple[str, ...]
    active: str | None
    """The active namespace afterwards."""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        """Decided as a real run would, and changed nothing."""
        return bool(self.details.get("dry_run"))

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API and `--output json`."""
        return {"action": self.action, "changed": self.changed, "refused": self.refused,
                "reasons": list(self.reasons), "active": self.active, "details": self.details}


def result(action: ActionKind, *, active: str | None, changed: bool = False, refused: bool = False,
           reasons: tuple[str, ...] | list[str] = (), **details: Any) -> ActionResult:
    """Build a result (a dry-run that would act is logged: it is what the operator reads)."""
    if details.get("dry_run") and not refused:
        log.info("dry-run: nothing changed", action=action, reasons=list(reasons),
                 would=details.get("would"))
    return ActionResult(action, changed, refused, tuple(reasons), active, details)
