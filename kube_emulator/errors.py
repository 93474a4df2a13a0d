"""Kubernetes `Status` errors, shaped exactly like the real API server's.

Clients branch on `code` and `reason` (409 Conflict means "re-read and retry", 410 Expired
means "re-list"), so every failure leaves the emulator as a proper Status object.
"""

from __future__ import annotations

from typing import Any

_REASON_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A failed request; `status()` renders the body the real server would send."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASON_BY_CODE.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        """The `v1.Status` object for this error."""
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A failure `Status` document (also used inside watch ERROR events)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def success_status(details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `Status` a delete answers with when it does not return the object."""
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"
    }
    if details:
        body["details"] = details
    return body


def _resource_details(group: str, plural: str, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    """404 for a named object, worded like `pods "x" not found`."""
    return ApiError(
        404,
        f'{_qualified(group, plural)} "{name}" not found',
        details=_resource_details(group, plural, name),
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    """409 AlreadyExists for a create whose name is taken."""
    return ApiError(
        409,
        f'{_qualified(group, plural)} "{name}" already exists',
        reason="AlreadyExists",
        details=_resource_details(group, plural, name),
    )


def conflict(group: str, plural: str, name: str, why: str | None = None) -> ApiError:
    """409 Conflict for an optimistic-concurrency failure (stale resourceVersion)."""
    why = why or ("the object has been modified; please apply your changes to the latest "
                  "version and try again")
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": {why}',
        details=_resource_details(group, plural, name),
    )


_CAUSE_REASONS = (
    ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Too long", "FieldValueTooLong"),
    ("Too many", "FieldValueTooMany"),
    ("Forbidden", "FieldValueForbidden"),
    ("Duplicate value", "FieldValueDuplicate"),
)


def _cause_reason(message: str) -> str:
    """The cause's reason as field.ErrorType names it (from the message's wording); a type
    error reads "Invalid value" like any other but is `FieldValueTypeInvalid`."""
    for prefix, reason in _CAUSE_REASONS:
        if message.startswith(prefix):
            return reason
    if " must be of type " in message:
        return "FieldValueTypeInvalid"
    return "FieldValueInvalid"


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid listing each offending field, like server-side validation."""
    qualified_kind = f"{kind}.{group}" if group else kind
    text = ", ".join(f"{field}: {msg}" for field, msg in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    return ApiError(
        422,
        f'{qualified_kind} "{name}" is invalid: {text}',
        details={
            "name": name,
            "kind": kind,
            **({"group": group} if group else {}),
            "causes": [
                {"reason": _cause_reason(msg), "message": msg, "field": field}
                for field, msg in causes
            ],
        },
    )


def bad_request(message: str) -> ApiError:
    """400 BadRequest: the request could not be decoded or is contradictory."""
    return ApiError(400, message)


def expired(message: str) -> ApiError:
    """410 Expired: the requested resourceVersion has been compacted away."""
    return ApiError(410, message, reason="Expired")


def method_not_allowed(method: str) -> ApiError:
    """405 for a verb the resource does not support."""
    return ApiError(
        405, f"the server does not allow this method on the requested resource ({method})"
    )


def unsupported_media_type(content_type: str) -> ApiError:
    """415 for a patch type the resource does not accept."""
    return ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                         f"do not include {content_type!r}")


def resource_not_found() -> ApiError:
    """404 for a URL that names no known resource."""
    return ApiError(404, "the server could not find the requested resource")
