"""The failures gatekeeper tells apart, named by what the caller does next (kopf's errors, small).

Kubernetes API errors are subclasses of kubernetes_asyncio's `ApiException`, so a handler for
any API failure still catches them; code that must tell them apart catches a family member
(or classifies a generated method's `ApiException` with `api_error`) instead of comparing
HTTP status numbers. The numbers live here only.

Sources raise `SourceError` subclasses inside themselves; what leaves a source is always a
`Measurement` (an error measurement for these), never an exception.
"""

from __future__ import annotations

from typing import ClassVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from multidict import CIMultiDictProxy

__all__ = [
    "API_ERRORS",
    "APIConflictError",
    "APIError",
    "APIForbiddenError",
    "APIGoneError",
    "APIInvalidError",
    "APINotFoundError",
    "APIUnavailableError",
    "NotLeaderError",
    "NotOwnerError",
    "SourceAnswerError",
    "SourceError",
    "SourceUnavailableError",
    "api_error",
    "from_response",
    "source_http_error",
    "succeeded",
]

API_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError, ValueError)
"""What a failed Kubernetes API call raises: HTTP errors, no connection, no answer, bad JSON."""


class APIError(ApiException):
    """The Kubernetes API answered a call with an error status (`status`, `reason`, `body`)."""

    statuses: ClassVar[frozenset[int]] = frozenset()
    """The HTTP statuses this family member stands for."""


class APIConflictError(APIError):
    """409: someone else wrote first (a resourceVersion or name clash): re-read, then retry."""

    statuses = frozenset({409})


class APINotFoundError(APIError):
    """404: the object (or its namespace, or the resource type) does not exist."""

    statuses = frozenset({404})


class APIInvalidError(APIError):
    """400 or 422: the request was refused as invalid; a JSON Patch whose `test` op failed
    (the object changed since it was read) answers 422 too."""

    statuses = frozenset({400, 422})


class APIForbiddenError(APIError):
    """401 or 403: gatekeeper's credentials or RBAC do not allow the call."""

    statuses = frozenset({401, 403})


class APIGoneError(APIError):
    """410: a watch's resourceVersion is too old: list again, then watch from the list."""

    statuses = frozenset({410})


class APIUnavailableError(APIError):
    """429 or 500/502/503/504: throttled or failing server side; worth retrying."""

    statuses = frozenset({429, 500, 502, 503, 504})


_FAMILY: tuple[type[APIError], ...] = (
    APIConflictError, APINotFoundError, APIInvalidError, APIForbiddenError, APIGoneError,
    APIUnavailableError,
)
_BY_STATUS = {status: kind for kind in _FAMILY for status in kind.statuses}


def succeeded(status: int) -> bool:
    """A 2xx answer (the only kind a call's caller reads a body from)."""
    return 200 <= status < 300


def from_response(status: int, reason: str | None = None, body: bytes | str | None = None,
                  headers: CIMultiDictProxy[str] | None = None) -> APIError:
    """The family member for an error answer read by hand (raw JSON reads, watches, logs).

    `body` is kept as bytes, as the generated client keeps it.
    """
    error = _BY_STATUS.get(status, APIError)(status=status, reason=reason)
    error.body = body.encode() if isinstance(body, str) else body
    error.headers = headers
    return error


def api_error(exc: ApiException) -> APIError:
    """`exc` as a family member (itself when it already is one), keeping body and headers."""
    if isinstance(exc, APIError):
        return exc
    return from_response(exc.status, exc.reason, exc.body, exc.headers)


class NotLeaderError(RuntimeError):
    """An action was attempted by a replica that does not hold the Lease; only the leader acts."""

    def __init__(self, identity: str | None, holder: str | None) -> None:
        self.identity = identity
        self.holder = holder
        who = f"the leader is {holder}" if holder else "no leader is known"
        super().__init__(f"{identity or 'this replica'} is not the leader ({who}); "
                         "only the leader acts")


class NotOwnerError(NotLeaderError):
    """Sharded replicas: this replica does not hold the shard of the pair acted on. `holder`
    and `address` name the owner as last seen (None while the shard moves), so the API can
    forward the request there."""

    def __init__(self, identity: str | None, holder: str | None, *, key: str,
                 address: str | None = None) -> None:
        RuntimeError.__init__(
            self, f"{identity or 'this replica'} does not own pair {key!r} "
                  f"({f'its owner is {holder}' if holder else 'its shard is moving'})")
        self.identity = identity
        self.holder = holder
        self.key = key
        self.address = address


class SourceError(Exception):
    """A source could not measure: its rules become error measurements (unknown, never safe)."""


class SourceUnavailableError(SourceError):
    """The source is unreachable, timed out, or failing server side (HTTP 429 or 5xx)."""


class SourceAnswerError(SourceError):
    """The source answered, but refused the query (HTTP 4xx) or said something unreadable."""


def source_http_error(status: int, detail: str = "") -> SourceError:
    """The family member for a source's HTTP error answer (`HTTP 503: detail`)."""
    kind = SourceUnavailableError if status == 429 or status >= 500 else SourceAnswerError
    return kind(f"HTTP {status}" + (f": {detail}" if detail else ""))
