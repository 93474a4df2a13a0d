"""Tiny blocking JSON-over-HTTP client (urllib) for talking to the sandbox's own processes.

Blocking on purpose: sync pytest fixtures and helpers use it; every call has a timeout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from telemetry_sandbox.loopback import require_loopback_url

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""urllib opener that ignores HTTP(S)_PROXY: sandbox traffic never leaves loopback."""


class HTTPStatusError(RuntimeError):
    """A non-2xx answer, carrying the status and (truncated) body for the error message."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def request(
    method: str,
    url: str,
    *,
    payload: Any = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, bytes]:
    """Send one request; return (status, body) for 2xx, raise HTTPStatusError otherwise."""
    require_loopback_url(url)
    all_headers = dict(headers or {})
    if payload is not None:
        data = json.dumps(payload).encode()
        all_headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with OPENER.open(req, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise HTTPStatusError(method, url, exc.code, body) from None


def get_json(url: str, *, timeout_s: float = 5.0) -> Any:
    """GET and decode a JSON document."""
    _status, body = request("GET", url, timeout_s=timeout_s)
    return json.loads(body) if body else None


def post_json(url: str, payload: Any, *, timeout_s: float = 5.0) -> Any:
    """POST a JSON document and decode the (possibly empty) JSON answer."""
    _status, body = request("POST", url, payload=payload, timeout_s=timeout_s)
    return json.loads(body) if body.strip() else None
