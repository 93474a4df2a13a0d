"""The aiohttp application: Kubernetes REST routes, discovery, health, and middlewares
for Status errors, fault injection and the request log."""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import hdrs, web

from . import admin, customresources, openapi, paths, resources
from .audit import RequestRecord
from .emulator import Emulator
from .errors import ApiError, bad_request, method_not_allowed, resource_not_found, success_status
from .keys import EMULATOR
from .patching import APPLY_PATCH
from .paths import Target
from .podlogs import LogQuery, resolve_container
from .resources import PODS
from .streaming import serve_log_follow, serve_watch

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_RECORDED_BODY = 64 * 1024
FAULT_HEADER = "X-Kube-Emulator-Fault"


def json_response(body: Any, status: int = 200) -> web.Response:
    """Compact JSON, `application/json` like the real server."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def error_response(error: ApiError) -> web.Response:
    """A Status body with the error's code and headers (e.g. Retry-After)."""
    response = json_response(error.status(), error.code)
    response.headers.update(error.headers)
    return response


def _target(request: web.Request) -> Target | None:
    try:
        return paths.parse(request.path, request.app[EMULATOR].api.registry)
    except ApiError:
        return None


def _verb(request: web.Request) -> str:
    target = _target(request)
    if target is None:
        return request.method.lower()
    return paths.verb(request.method, target, request.query)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a Kubernetes Status document."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_response(resource_not_found())
        if exc.status == 405:
            return error_response(method_not_allowed(request.method))
        return error_response(ApiError(exc.status, exc.reason))
    except Exception as exc:  # an emulator bug must still answer like a server would
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(ApiError(500, f"Internal error occurred: {exc!r}"))


async def _recorded_body(request: web.Request) -> Any:
    if request.method not in ("POST", "PUT", "PATCH") or not request.can_read_body:
        return None
    raw = await request.read()
    if len(raw) > _MAX_RECORDED_BODY:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@web.middleware
async def faults_and_audit_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Inject configured faults and log the request (admin calls are exempt)."""
    if request.path.startswith("/_emulator"):
        return await handler(request)
    emulator = request.app[EMULATOR]
    verb = _verb(request)
    token = id(request)
    emulator.requests.begin(token, RequestRecord(
        time=emulator.requests.now(),
        method=request.method,
        path=request.path,
        query=request.query_string,
        content_type=request.headers.get("Content-Type", ""),
        status=0,
        verb=verb,
        body=await _recorded_body(request),
    ))
    try:
        fault = emulator.faults.pick(request.method, verb, request.path)
        if fault is not None and fault.delay and not await emulator.pause(fault.delay):
            return error_response(ApiError(503, "the server is shutting down"))
        if fault is not None and fault.status:
            return _faulted(fault.error(), fault.status)
        response = await handler(request)
        if response.prepared:
            return response
        late = emulator.faults.pick(request.method, verb, request.path, after=True)
        if late is not None:
            if late.delay and not await emulator.pause(late.delay):
                return error_response(ApiError(503, "the server is shutting down"))
            if late.status:
                return _faulted(late.error(), late.status)
        return response
    except BaseException:
        emulator.requests.abandon(token)
        raise


def _faulted(error: ApiError, code: int) -> web.Response:
    response = error_response(error)
    response.headers[FAULT_HEADER] = str(code)
    return response


async def _log_response(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the status is final once headers go out. The `Date` header is
    the server's clock (a skewed API server's Date is skewed too)."""
    emulator = request.app[EMULATOR]
    response.headers[hdrs.DATE] = email.utils.formatdate(emulator.clock(), usegmt=True)
    if request.path.startswith("/_emulator"):
        return
    fault = response.headers.get(FAULT_HEADER)
    emulator.requests.finish(id(request), response.status,
                                          int(fault) if fault else None)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise bad_request("the request body is empty")
    try:
        if request.content_type == APPLY_PATCH:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the request body could not be decoded: {exc}") from None


async def _delete_options(request: web.Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                decoded = json.loads(raw)
            except ValueError:
                raise bad_request("the DeleteOptions body could not be decoded") from None
            if isinstance(decoded, dict):
                options.update(decoded)
    if "propagationPolicy" in request.query:
        options["propagationPolicy"] = request.query["propagationPolicy"]
    return options


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise bad_request(f"unsupported dryRun value {value!r} (only 'All')")
    return bool(values)


def _int_query(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"invalid {name}: {raw!r}") from None


async def _pod_log(request: web.Request, emulator: Emulator, target: Target) -> web.StreamResponse:
    if request.method != "GET":
        raise method_not_allowed(request.method)
    assert target.name is not None and target.namespace is not None
    pod = emulator.api.get(PODS, target.namespace, target.name)
    query = LogQuery.from_query(request.query)
    container = resolve_container(pod, query.container)
    if query.previous and not emulator.logs.has_previous(target.namespace, target.name, container):
        raise bad_request(f'previous terminated container "{container}" in pod '
                          f'"{target.name}" not found')
    if query.follow:
        return await serve_log_follow(request, emulator, target.namespace, target.name,
                                      container, query)
    body = emulator.logs.read(target.namespace, target.name, container, query)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def _scale(request: web.Request, emulator: Emulator, target: Target) -> web.Response:
    api, rt = emulator.api, target.resource
    assert rt is not None and target.name is not None
    if request.method == "GET":
        return json_response(api.get_scale(rt, target.namespace, target.name))
    if request.method == "PUT":
        body = await _body(request)
        return json_response(api.replace_scale(rt, target.namespace, target.name, body,
                                               dry_run=_dry_run(request)))
    if request.method == "PATCH":
        body = await _body(request)
        return json_response(api.patch_scale(rt, target.namespace, target.name, body,
                                             request.content_type, dry_run=_dry_run(request)))
    raise method_not_allowed(request.method)


def _deleted_response(rt: resources.ResourceType, obj: dict[str, Any]) -> web.Response:
    """Pods and custom resources answer with the object; other built-ins with a Status."""
    if rt.kind == "Pod" or rt.custom or obj["metadata"].get("deletionTimestamp"):
        return json_response(obj)
    details: dict[str, Any] = {"name": obj["metadata"]["name"], "kind": rt.plural,
                               "uid": obj["metadata"].get("uid")}
    if rt.group:
        details["group"] = rt.group
    return json_response(success_status(details))


def _as_table(request: web.Request, rt: resources.ResourceType) -> bool:
    """A Table is served for resources a CRD defines (their printer columns); built-in ones
    answer plain JSON, which kubectl prints with its own columns."""
    return bool(rt.storage_version) and customresources.wants_table(
        request.headers.get(hdrs.ACCEPT, ""))


def _table(request: web.Request, emulator: Emulator, rt: resources.ResourceType,
           objects: list[dict[str, Any]], source: dict[str, Any]) -> dict[str, Any]:
    meta = source.get("metadata") or {}
    return customresources.table(
        rt, objects, resource_version=str(meta.get("resourceVersion", "")),
        now=emulator.clock(), include_object=request.query.get("includeObject", "Metadata"),
        no_headers=False, continue_token=meta.get("continue"))


async def _collection(request: web.Request, emulator: Emulator, target: Target
                      ) -> web.StreamResponse:
    api, rt, ns = emulator.api, target.resource, target.namespace
    assert rt is not None
    cluster_wide_view = rt.namespaced and ns is None
    if request.method == "GET":
        if paths.is_watch(request.query):
            return await serve_watch(request, emulator, rt, ns)
        listing = api.list(
            rt, ns, label_selector=request.query.get("labelSelector"),
            field_selector=request.query.get("fieldSelector"),
            limit=_int_query(request, "limit"), continue_token=request.query.get("continue"),
        )
        if _as_table(request, rt):
            return json_response(_table(request, emulator, rt, listing["items"], listing))
        return json_response(listing)
    if request.method == "POST" and not cluster_wide_view:
        created = api.create(rt, ns, await _body(request), dry_run=_dry_run(request),
                             field_validation=request.query.get("fieldValidation"))
        return json_response(created, 201)
    if request.method == "DELETE" and not cluster_wide_view:
        return json_response(api.delete_collection(
            rt, ns, label_selector=request.query.get("labelSelector"),
            field_selector=request.query.get("fieldSelector"),
            options=await _delete_options(request), dry_run=_dry_run(request),
        ))
    raise method_not_allowed(request.method)


async def _item(request: web.Request, emulator: Emulator, target: Target) -> web.StreamResponse:
    api, rt, ns, name, sub = (emulator.api, target.resource, target.namespace, target.name,
                              target.subresource)
    assert rt is not None and name is not None
    validation = request.query.get("fieldValidation")
    if request.method == "GET":
        obj = api.get(rt, ns, name)
        if sub is None and _as_table(request, rt):
            return json_response(_table(request, emulator, rt, [obj], obj))
        return json_response(obj)
    if request.method == "PUT":
        return json_response(api.replace(rt, ns, name, await _body(request), subresource=sub,
                                         dry_run=_dry_run(request), field_validation=validation))
    if request.method == "PATCH":
        obj, created = api.patch(rt, ns, name, await _body(request), request.content_type,
                                 subresource=sub, dry_run=_dry_run(request),
                                 field_manager=request.query.get("fieldManager"),
                                 field_validation=validation)
        return json_response(obj, 201 if created else 200)
    if request.method == "DELETE" and sub is None:
        deleted = api.delete(rt, ns, name, options=await _delete_options(request),
                             dry_run=_dry_run(request))
        return _deleted_response(rt, deleted)
    raise method_not_allowed(request.method)


async def kube_api(request: web.Request) -> web.StreamResponse:
    """Everything under /api and /apis."""
    emulator = request.app[EMULATOR]
    parts = [p for p in request.path.split("/") if p]
    if parts == ["api"]:
        host = request.host or "127.0.0.1"
        return json_response(resources.api_versions_doc(host))
    if parts == ["apis"]:
        absent = frozenset(emulator.absent_groups)
        return json_response(emulator.api.registry.api_group_list_doc(absent))
    if len(parts) >= 2 and parts[0] == "apis" and parts[1] in emulator.absent_groups:
        raise resource_not_found()  # as for any group the server does not serve
    if len(parts) == 2 and parts[0] == "apis":
        doc = emulator.api.registry.api_group_doc(parts[1])
        if doc is None:
            raise resource_not_found()
        return json_response(doc)
    if parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]:
        if request.method != "POST":
            raise method_not_allowed(request.method)
        return json_response(emulator.tokens.review(await _body(request)), 201)
    target = paths.parse(request.path, emulator.api.registry)
    if target.is_discovery:
        if request.method != "GET":
            raise method_not_allowed(request.method)
        return json_response(emulator.api.registry.resource_list_doc(target.group, target.version))
    if target.subresource == "log":
        return await _pod_log(request, emulator, target)
    if target.subresource == "scale":
        return await _scale(request, emulator, target)
    if target.name is None:
        return await _collection(request, emulator, target)
    return await _item(request, emulator, target)


async def health(_request: web.Request) -> web.Response:
    """`/healthz`, `/readyz`, `/livez`."""
    return web.Response(text="ok")


async def version(_request: web.Request) -> web.Response:
    """`/version`."""
    return json_response(resources.version_doc())


async def openapi_v3(request: web.Request) -> web.Response:
    """`/openapi/v3` and one group version's document under it (kubectl reads them)."""
    registry = request.app[EMULATOR].api.registry
    tail = request.match_info.get("tail", "")
    if not tail.strip("/"):
        return json_response(openapi.root_doc(registry))
    doc = openapi.group_version_doc(registry, tail)
    if doc is None:
        raise resource_not_found()
    return json_response(doc)


def create_app(emulator: Emulator) -> web.Application:
    """The aiohttp application serving `emulator`."""
    app = web.Application(
        middlewares=[faults_and_audit_middleware, errors_middleware],
        client_max_size=16 * 1024 * 1024,
    )
    app[EMULATOR] = emulator
    app.on_response_prepare.append(_log_response)
    for path in ("/healthz", "/readyz", "/livez"):
        app.router.add_get(path, health)
    app.router.add_get("/version", version)
    app.router.add_get("/version/", version)
    app.router.add_get("/openapi/v3", openapi_v3)
    app.router.add_get("/openapi/v3/{tail:.*}", openapi_v3)
    app.router.add_route("*", "/api", kube_api)
    app.router.add_route("*", "/api/{tail:.*}", kube_api)
    app.router.add_route("*", "/apis", kube_api)
    app.router.add_route("*", "/apis/{tail:.*}", kube_api)
    admin.add_routes(app)
    return app
