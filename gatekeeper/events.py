"""Kubernetes Events on the route objects, so `kubectl describe ingressroute` tells the story.

Every action (flip, rollback, scale) leaves a core/v1 Event on each route of the pair. An
Event that cannot be written is logged and forgotten: the audit trail must never stop a
rollback.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Literal

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper.kubeclient import ApiException, read_json
from gatekeeper.routers.base import RouteView

log = structlog.get_logger()

COMPONENT = "gatekeeper"
MAX_MESSAGE = 1024

# Reasons, CamelCase like the kubelet's and the controllers'.
FLIPPED = "Flipped"
FLIP_FAILED = "FlipFailed"
FLIP_REFUSED = "FlipRefused"
ROLLED_BACK = "RolledBack"
ROLLBACK_FAILED = "RollbackFailed"
ROLLBACK_REFUSED = "RollbackRefused"
SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
SCALE_REFUSED = "ScaleRefused"
RECONCILED = "Reconciled"
APPROVED = "Approved"
UNAPPROVED = "Unapproved"

EventType = Literal["Normal", "Warning"]


def _timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(target: RouteView, *, reason: str, message: str, event_type: EventType,
               action: str, instance: str, at: float) -> dict[str, Any]:
    """The Event object (pure), involving the route so `kubectl describe` lists it."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    involved = {
        "apiVersion": target.api_version,
        "kind": target.kind,
        "name": target.name,
        "namespace": target.namespace,
    }
    if target.uid:
        involved["uid"] = target.uid
    if target.resource_version:
        involved["resourceVersion"] = target.resource_version
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{target.name}.{uuid.uuid4().hex[:16]}",
            "namespace": target.namespace,
            "labels": {"app.kubernetes.io/managed-by": COMPONENT},
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": event_type,
        "action": action,
        "count": 1,
        "firstTimestamp": _timestamp(at),
        "lastTimestamp": _timestamp(at),
        "eventTime": _micro_timestamp(at),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
    }


class EventRecorder:
    """Writes Events; `emit` never raises for API failures."""

    def __init__(self, api: client.ApiClient, *, instance: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.core = client.CoreV1Api(api)
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self.clock = clock

    async def emit(self, targets: Iterable[RouteView], *, reason: str, message: str,
                   action: str, warning: bool = False) -> int:
        """One Event per route object; returns how many were written."""
        written = 0
        for target in targets:
            body = event_body(target, reason=reason, message=message,
                              event_type="Warning" if warning else "Normal", action=action,
                              instance=self.instance, at=self.clock())
            try:
                await read_json(self.core.create_namespaced_event, target.namespace, body)
                written += 1
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                detail = f"HTTP {exc.status}" if isinstance(exc, ApiException) else repr(exc)
                log.warning("cannot write event", route=target.ref, reason=reason, error=detail)
        return written
