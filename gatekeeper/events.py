"""Kubernetes Events on the route objects and the pair's own BlueGreenPair object, so
`kubectl describe ingressroute` (and `kubectl describe bgp`) tells the story.

Every action (flip, rollback, scale) leaves a core/v1 Event on each route of the pair, and
on the pair's BlueGreenPair object when it was read from one. An Event that cannot be
written is logged and forgotten: the audit trail must never stop a rollback.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper import crd
from gatekeeper.config import PairConfig
from gatekeeper.kubeclient import ApiException, read_json

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

INVALID_SPEC = "InvalidSpec"

EventType = Literal["Normal", "Warning"]


class Involved(Protocol):
    """What an Event is about (a route, or a pair object)."""

    @property
    def api_version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def uid(self) -> str: ...
    @property
    def resource_version(self) -> str: ...
    @property
    def ref(self) -> str: ...


@dataclass(frozen=True)
class PairObject:
    """A BlueGreenPair object as an Event's involvedObject."""

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    api_version: str = crd.API_VERSION
    kind: str = crd.KIND

    @property
    def ref(self) -> str:
        """`BlueGreenPair team/api`, for logs."""
        return f"{self.kind} {self.namespace}/{self.name}"


def with_pair(pair: PairConfig | None, targets: Iterable[Involved]) -> list[Involved]:
    """TARGETS plus the pair's BlueGreenPair object when it was read from one."""
    out = list(targets)
    if pair is not None and pair.object_namespace:
        out.append(PairObject(pair.object_namespace, pair.name))
    return out


def _timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(target: Involved, *, reason: str, message: str, event_type: EventType,
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

    async def emit(self, targets: Iterable[Involved], *, reason: str, message: str,
                   action: str, warning: bool = False, pair: PairConfig | None = None) -> int:
        """One Event per route object (and on PAIR's BlueGreenPair object when it was read
        from one); returns how many were written."""
        written = 0
        for target in with_pair(pair, targets):
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
