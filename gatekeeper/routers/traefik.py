"""Calls shared by the Traefik routers: get, guarded JSON Patch, the other API group.

Traefik serves the same CRDs under `traefik.io` (>= 2.10) and `traefik.containo.us`; an
object of the same name in both groups is ambiguous (Traefik >= 2.10 ignores the old one).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper.config import RouteRef
from gatekeeper.routers.base import (
    JSON_PATCH,
    TRAEFIK_GROUPS,
    TRAEFIK_VERSION,
    RouteConflict,
    RouteError,
)

log = structlog.get_logger()

Body = dict[str, Any]
Op = dict[str, Any]


def describe(ref: RouteRef) -> str:
    """`IngressRoute routing/api-live` for messages."""
    return f"{ref.kind} {ref.namespace}/{ref.name}"


def _error(ref: RouteRef, exc: ApiException, doing: str) -> RouteError:
    status = exc.status
    if status in (409, 422):
        return RouteConflict(
            describe(ref),
            f"{doing} refused with HTTP {status}: the route changed since it was read "
            "(someone else edited it); nothing was overwritten",
            status=status,
        )
    if status == 404:
        return RouteError(describe(ref), f"{doing}: not found in {ref.api_group}", status=404)
    return RouteError(describe(ref), f"{doing} failed: HTTP {status} {exc.reason or ''}".strip(),
                      status=status)


async def get(api: client.ApiClient, ref: RouteRef, plural: str) -> Body:
    """The route's raw body; RouteError (with status) when the API refuses."""
    objects = client.CustomObjectsApi(api)
    try:
        body: Body = await objects.get_namespaced_custom_object(
            ref.api_group, TRAEFIK_VERSION, ref.namespace, plural, ref.name
        )
    except ApiException as exc:
        raise _error(ref, exc, "reading") from exc
    return body


async def other_group(api: client.ApiClient, ref: RouteRef, plural: str) -> str | None:
    """The other Traefik API group when it holds an object of the same name, else None."""
    other = next(g for g in TRAEFIK_GROUPS if g != ref.api_group)
    objects = client.CustomObjectsApi(api)
    try:
        await objects.get_namespaced_custom_object(
            other, TRAEFIK_VERSION, ref.namespace, plural, ref.name
        )
    except ApiException as exc:
        if exc.status not in (404, 403):
            log.debug("other traefik group unreadable", route=describe(ref), group=other,
                      status=exc.status)
        return None
    except (aiohttp.ClientError, TimeoutError):
        return None
    return other


async def patch(api: client.ApiClient, ref: RouteRef, plural: str, ops: list[Op]) -> Body:
    """Apply a JSON Patch; its `test` ops make a concurrent edit fail with RouteConflict."""
    objects = client.CustomObjectsApi(api)
    try:
        # The stubs omit `_content_type`, which the generated code accepts; without it a
        # list body would still be sent as JSON Patch, but we say so rather than rely on it.
        body: Body = await objects.patch_namespaced_custom_object(  # type: ignore[call-arg]
            ref.api_group, TRAEFIK_VERSION, ref.namespace, plural, ref.name, ops,
            _content_type=JSON_PATCH,
        )
    except ApiException as exc:
        raise _error(ref, exc, "patching") from exc
    return body


def guard(body: Body) -> list[Op]:
    """The `test` op pinning the resourceVersion that was read."""
    version = str((body.get("metadata") or {}).get("resourceVersion", ""))
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}]


def metadata(body: Body) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """(resourceVersion, uid, labels, annotations) of a raw body."""
    meta = body.get("metadata") or {}
    return (
        str(meta.get("resourceVersion", "")),
        str(meta.get("uid", "")),
        dict(meta.get("labels") or {}),
        dict(meta.get("annotations") or {}),
    )
