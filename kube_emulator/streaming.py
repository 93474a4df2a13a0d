"""Long-lived HTTP responses: watch event streams and `follow=true` log streams.

Watch streams are newline-delimited JSON `{"type", "object"}` events, as the real server
sends them; a compacted resourceVersion yields a 200 stream with a single ERROR event
carrying a 410 Status (which kubernetes_asyncio turns into ApiException(410)).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import ApiError
from .operations import with_type
from .podlogs import LogQuery
from .resources import PODS, ResourceType

if TYPE_CHECKING:
    from .emulator import Emulator

_POLL = 0.5  # how often an idle stream checks whether its client went away


def _line(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _open_stream(request: web.Request, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type,
                                                       "Cache-Control": "no-cache, private"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def _finish(response: web.StreamResponse) -> None:
    try:
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _timeout(request: web.Request, default: float) -> float:
    raw = request.query.get("timeoutSeconds")
    if raw is None:
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ApiError(400, f"invalid timeoutSeconds: {raw!r}") from None


async def serve_watch(
    request: web.Request, emulator: Emulator, rt: ResourceType, namespace: str | None
) -> web.StreamResponse:
    """Stream events until timeoutSeconds, a dropped watch, or the client leaving."""
    query = request.query
    timeout = _timeout(request, emulator.watch_timeout)
    bookmarks = _flag(request, "allowWatchBookmarks")
    try:
        watcher = emulator.api.watch(
            rt, namespace, resource_version=query.get("resourceVersion"),
            label_selector=query.get("labelSelector"), field_selector=query.get("fieldSelector"),
        )
    except ApiError as exc:
        if exc.code != 410:
            raise
        response = await _open_stream(request, "application/json")
        try:
            await response.write(_line({"type": "ERROR", "object": exc.status()}))
        except ConnectionError:
            pass
        await _finish(response)
        return response

    response = await _open_stream(request, "application/json")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = max(0.05, emulator.bookmark_interval)
    next_bookmark = loop.time() + interval
    try:
        while not emulator.closing:
            now = loop.time()
            if now >= deadline:
                break
            if bookmarks and now >= next_bookmark and not watcher.pending():
                await response.write(_line({"type": "BOOKMARK", "object": {
                    "kind": rt.kind, "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": emulator.store.resource_version}}}))
                next_bookmark = now + interval
            wait = min(deadline - now, _POLL, (next_bookmark - now) if bookmarks else _POLL)
            try:
                item = await watcher.next(max(wait, 0.0))
            except TimeoutError:
                if _client_gone(request):
                    break
                continue
            if item is None:
                break
            if emulator.watch_lag > 0 and not await emulator.pause(emulator.watch_lag):
                break
            await response.write(_line({"type": item["type"],
                                        "object": with_type(rt, item["object"])}))
    except ConnectionError:
        pass
    finally:
        emulator.store.forget(watcher)
    await _finish(response)
    return response


async def serve_log_follow(
    request: web.Request,
    emulator: Emulator,
    namespace: str,
    pod: str,
    container: str,
    query: LogQuery,
) -> web.StreamResponse:
    """Send the selected lines, then new ones as they are appended, until the pod goes."""
    response = await _open_stream(request, "text/plain")
    sent = 0
    lines = emulator.logs.lines(namespace, pod, container, query)
    last_seq = lines[-1].seq if lines else emulator.logs.current_seq()
    try:
        while not emulator.closing:
            if lines:
                last_seq = lines[-1].seq
                body = emulator.logs.render(lines, query.timestamps)
                if query.limit_bytes is not None:
                    body = body[: max(0, query.limit_bytes - sent)]
                await response.write(body)
                sent += len(body)
            if query.limit_bytes is not None and sent >= query.limit_bytes:
                break
            if emulator.store.get(PODS, namespace, pod) is None or _client_gone(request):
                break
            await emulator.logs.wait_for_lines(_POLL)
            lines = emulator.logs.lines(namespace, pod, container, query, after_seq=last_seq)
    except ConnectionError:
        pass
    await _finish(response)
    return response
