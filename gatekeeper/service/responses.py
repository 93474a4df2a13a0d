"""JSON responses and errors: every answer, including every error, is a JSON object.

`error_middleware` turns aiohttp's own errors (404 for an unknown path, 405, 413) into the
same `{"error": ..., "status": ...}` shape, and an unexpected exception into a logged 500
that never shows internals (the tests make sure no input reaches it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

__all__ = ["JsonError", "error_middleware", "http_error", "json_response", "jsonable"]

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def jsonable(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) with null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def encode(body: dict[str, Any]) -> str:
    """Compact JSON text, NaN and infinities as null."""
    return json.dumps(jsonable(body), separators=(",", ":"))


def json_response(body: dict[str, Any], *, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """A compact JSON answer."""
    return web.Response(text=encode(body), status=status, content_type="application/json",
                        headers=headers)


class JsonError(web.HTTPException):
    """An HTTP error whose body is `{"error": ..., "status": ...}` (any status code)."""

    def __init__(self, status: int, text: str, headers: dict[str, str]) -> None:
        self.status_code = status
        super().__init__(text=text, content_type="application/json", headers=headers)


def http_error(status: int, message: str, *, retry_after: int | None = None,
               **extra: Any) -> web.HTTPException:
    """An aiohttp HTTP exception carrying a JSON body `{"error", "status", ...}`."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="gatekeeper"'
    text = json.dumps(jsonable({"error": message, "status": status, **extra}))
    return JsonError(status, text, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON bodies for aiohttp's own errors; a logged, opaque 500 for bugs."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        message = exc.reason or "error"
        if exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        elif exc.status == 404:
            message = f"no such endpoint: {request.path}"
        elif exc.status == 413:
            message = "request body too large"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        raise _with_headers(http_error(exc.status, message), headers) from None
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        raise http_error(500, "internal error (logged)") from None


def _with_headers(exc: web.HTTPException, headers: dict[str, str]) -> web.HTTPException:
    exc.headers.update(headers)
    return exc
