"""Calls shared by the Traefik routers: get, guarded JSON Patch, the other API group.

Traefik serves the same CRDs under `traefik.io` (>= 2.10) and `traefik.containo.us`; an
object of the same name in both groups is ambiguous (Traefik >= 2.10 ignores the old one).

A patch that fails transiently (429, 5xx, timeout) is retried with backoff. Such a failure
may come after the server applied it: the retry then fails its `test` ops (422), so the
route is re-read, and a route that already holds every value the patch sets counts as
patched instead of as a concurrent edit. A timed-out patch may also still be on its way
and land later: before such a patch is declared not applied, the route is fenced (one
annotation written with a resourceVersion test), so the late patch fails its own test.
Patches that exhausted their retries are checked the same way before failing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper import errors, kubeclient
from gatekeeper.config import RouteRef
from gatekeeper.routers.base import (
    JSON_PATCH,
    ROUTE_PLURALS,
    TRAEFIK_GROUPS,
    TRAEFIK_VERSION,
    RouteConflict,
    RouteError,
    RouteRefused,
    RouteSnapshot,
    RouteView,
    flux_owner,
)

log = structlog.get_logger()

Body = dict[str, Any]
Op = dict[str, Any]


class TraefikRouter:
    """What the IngressRoute and TraefikService routers share: the client, and reading
    the object (noting a twin in the other Traefik API group)."""

    kind: ClassVar[str]
    view_of: ClassVar[Callable[..., RouteView]]
    """The kind's `view_of(ref, body, *, also_in_group)`."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @property
    def plural(self) -> str:
        """The kind's resource name (`ingressroutes`, `traefikservices`)."""
        return ROUTE_PLURALS[self.kind]

    async def read(self, ref: RouteRef) -> RouteSnapshot:
        """Fetch the route (and note a twin in the other Traefik API group)."""
        body = await get(self.api, ref, self.plural)
        twin = await other_group(self.api, ref, self.plural)
        return RouteSnapshot(ref, type(self).view_of(ref, body, also_in_group=twin), body)

    flux_reverts: ClassVar[str]
    """What Flux would revert on this kind, and what to do instead (said in the refusal)."""

    def refusal(self, snapshot: RouteSnapshot) -> str | None:
        """Why gatekeeper must not patch this route, or None: Flux applies it (it would
        revert the patch at its next reconciliation), or `form_refusal` says why not."""
        owner = flux_owner(snapshot.view.labels, snapshot.view.annotations)
        if owner is not None:
            return f"{snapshot.view.ref} is managed by Flux ({owner}): {self.flux_reverts}"
        return self.form_refusal(snapshot)

    def form_refusal(self, snapshot: RouteSnapshot) -> str | None:
        """Why the route's form cannot be switched by this kind's patches (None: it can)."""
        return None

    def ensure_patchable(self, snapshot: RouteSnapshot) -> None:
        """RouteRefused when `refusal` names a reason not to patch the route."""
        reason = self.refusal(snapshot)
        if reason is not None:
            raise RouteRefused(snapshot.view.ref, reason)

    async def patched(self, snapshot: RouteSnapshot, ops: list[Op]) -> RouteSnapshot:
        """Apply the test-guarded `ops` (`patch`); the route as the patch left it."""
        body = await patch(self.api, snapshot.ref, self.plural, ops)
        view = type(self).view_of(snapshot.ref, body, also_in_group=snapshot.view.also_in_group)
        return RouteSnapshot(snapshot.ref, view, body)


def describe(ref: RouteRef) -> str:
    """`IngressRoute routing/api-live` for messages."""
    return f"{ref.kind} {ref.namespace}/{ref.name}"


def _changed(exc: ApiException) -> bool:
    """The route changed since it was read: a conflict, or a failed `test` op (422)."""
    return isinstance(errors.api_error(exc), errors.APIConflictError | errors.APIInvalidError)


def _error(ref: RouteRef, exc: ApiException, doing: str) -> RouteError:
    status = exc.status
    if _changed(exc):
        return RouteConflict(
            describe(ref),
            f"{doing} refused with HTTP {status}: the route changed since it was read "
            "(someone else edited it); nothing was overwritten",
            status=status,
        )
    if isinstance(errors.api_error(exc), errors.APINotFoundError):
        return RouteError(describe(ref), f"{doing}: not found in {ref.api_group}", status=status)
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
        expected = errors.APINotFoundError | errors.APIForbiddenError  # absent, or not ours
        if not isinstance(errors.api_error(exc), expected):
            log.debug("other traefik group unreadable", route=describe(ref), group=other,
                      status=exc.status)
        return None
    except (aiohttp.ClientError, TimeoutError):
        return None
    return other


async def _json_patch(objects: client.CustomObjectsApi, ref: RouteRef, plural: str,
                      ops: list[Op]) -> Body:
    """One JSON Patch request (no retry): the route as the API server returns it."""
    body: Body = await objects.patch_namespaced_custom_object(
        ref.api_group, TRAEFIK_VERSION, ref.namespace, plural, ref.name, ops,
        # the stub omits `_content_type`, which the generated client accepts
        _content_type=JSON_PATCH,  # type: ignore[call-arg]
    )
    return body


async def patch(api: client.ApiClient, ref: RouteRef, plural: str, ops: list[Op]) -> Body:
    """Apply a JSON Patch; its `test` ops make a concurrent edit fail with RouteConflict."""
    objects = client.CustomObjectsApi(api)
    attempt = 0
    maybe_applied = False  # an earlier attempt may have been applied
    unanswered = False  # ... and one may still be on its way (timed out, no answer)

    async def landed() -> Body | None:
        current = await (fence(api, ref, plural) if unanswered else get(api, ref, plural))
        if applied(current, ops):
            log.info("route patch had been applied before its failed answer",
                     route=describe(ref), attempt=attempt)
            return current
        return None

    while True:
        attempt += 1
        headers = None
        try:
            return await _json_patch(objects, ref, plural, ops)
        except ApiException as exc:
            last_attempt = attempt >= kubeclient.ATTEMPTS or not kubeclient.transient(exc)
            if maybe_applied and (_changed(exc) or last_attempt):
                current = await landed()
                if current is not None:
                    return current
            if last_attempt:
                raise _error(ref, exc, "patching") from exc
            headers = exc.headers
            failure = f"HTTP {exc.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            unanswered = True
            if attempt >= kubeclient.ATTEMPTS:
                current = await landed()
                if current is not None:
                    return current
                raise
            failure = type(exc).__name__
        maybe_applied = True
        delay = kubeclient.retry_delay(attempt, headers)
        log.warning("route patch failed; retrying", route=describe(ref), failure=failure,
                    attempt=attempt, delay=round(delay, 3))
        await asyncio.sleep(delay)


FENCE = "gatekeeper.io/fence"
"""Annotation a fence writes (a fresh random value each time)."""


async def fence(api: client.ApiClient, ref: RouteRef, plural: str | None = None) -> Body:
    """The route as it is once no earlier patch of ours can still land.

    A patch that timed out may still be processed by the API server later. Writing one
    annotation, guarded by the resourceVersion just read, moves the resourceVersion on, so
    any such patch (tested against an older one) now fails. Returns the route after the
    fence; RouteError when it cannot be fenced.
    """
    plural = plural or ROUTE_PLURALS[ref.kind]
    objects = client.CustomObjectsApi(api)
    last: Exception | None = None
    for attempt in range(1, kubeclient.ATTEMPTS + 1):
        body = await get(api, ref, plural)
        ops = guard(body)
        if not isinstance((body.get("metadata") or {}).get("annotations"), dict):
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
        ops.append({"op": "add", "path": "/metadata/annotations/" + FENCE.replace("/", "~1"),
                    "value": uuid.uuid4().hex[:12]})
        try:
            return await _json_patch(objects, ref, plural, ops)
        except ApiException as exc:
            if not _changed(exc) and not kubeclient.transient(exc):
                raise _error(ref, exc, "fencing") from exc
            last = exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = exc  # the fence may have landed: read again and fence again
        await asyncio.sleep(kubeclient.retry_delay(attempt))
    raise RouteError(describe(ref), f"cannot fence the route after {kubeclient.ATTEMPTS} "
                     f"attempts: {type(last).__name__}: {last}")


def applied(body: Body, ops: list[Op]) -> bool:
    """True when `body` already holds every value the patch's add/replace ops set."""
    missing = object()
    for op in ops:
        if op.get("op") not in ("add", "replace"):
            continue
        found = _pointer(body, str(op["path"]), missing)
        if op.get("value") == {} and isinstance(found, dict):
            continue  # the map an annotation goes into: created, and filled since
        if found != op.get("value"):
            return False
    return True


def _pointer(body: Any, path: str, default: Any) -> Any:
    """The value at a JSON Pointer (RFC 6901), or `default`."""
    node = body
    for raw in path.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return node


def annotation_ops(body: Body, changes: Mapping[str, str | None] | None) -> list[Op]:
    """JSON Patch ops setting each annotation (None: removing it, when present)."""
    if not changes:
        return []
    current = (body.get("metadata") or {}).get("annotations")
    ops: list[Op] = []
    if not isinstance(current, dict):
        current = {}
        if any(value is not None for value in changes.values()):
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in changes.items():
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        if value is not None:
            ops.append({"op": "add", "path": path, "value": value})
        elif key in current:
            ops.append({"op": "remove", "path": path})
    return ops


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
