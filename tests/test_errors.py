"""The error family: every HTTP status the code tells apart maps to one class, here only."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper import errors


@pytest.mark.parametrize(("status", "kind"), [
    (400, errors.APIInvalidError),
    (401, errors.APIForbiddenError),
    (403, errors.APIForbiddenError),
    (404, errors.APINotFoundError),
    (409, errors.APIConflictError),
    (410, errors.APIGoneError),
    (422, errors.APIInvalidError),
    (429, errors.APIUnavailableError),
    (500, errors.APIUnavailableError),
    (503, errors.APIUnavailableError),
    (418, errors.APIError),
    (501, errors.APIError),
])
def test_each_status_maps_to_its_family_member(status, kind):
    """The class says what the caller does next; unknown statuses stay plain APIError."""
    error = errors.from_response(status, "Reason", '{"message": "m"}')
    assert type(error) is kind
    assert isinstance(error, ApiException)  # handlers of any API failure still catch it
    assert (error.status, error.reason, error.body) == (status, "Reason", b'{"message": "m"}')


def test_a_generated_clients_exception_is_classified_keeping_its_body():
    """`api_error` turns the generated client's plain ApiException into its family member."""
    raw = ApiException(status=409, reason="Conflict")
    raw.body = b"the object has been modified"
    error = errors.api_error(raw)
    assert isinstance(error, errors.APIConflictError)
    assert error.body == b"the object has been modified"
    assert errors.api_error(error) is error


def test_statuses_are_not_shared_between_members():
    """One status, one class: the family is a partition."""
    seen: dict[int, type[errors.APIError]] = {}
    for kind in (errors.APIConflictError, errors.APINotFoundError, errors.APIInvalidError,
                 errors.APIForbiddenError, errors.APIGoneError, errors.APIUnavailableError):
        for status in kind.statuses:
            assert status not in seen, (status, kind, seen.get(status))
            seen[status] = kind


@pytest.mark.parametrize(("status", "kind"), [
    (503, errors.SourceUnavailableError),
    (429, errors.SourceUnavailableError),
    (400, errors.SourceAnswerError),
    (404, errors.SourceAnswerError),
])
def test_a_sources_http_error_says_whether_it_may_pass(status, kind):
    """Throttling and server errors are the source being unavailable; 4xx is a bad query."""
    error = errors.source_http_error(status, "body")
    assert type(error) is kind and str(error) == f"HTTP {status}: body"


def test_not_leader_names_the_leader_when_known():
    """The message tells an operator which replica to ask instead."""
    assert "the leader is pod-b" in str(errors.NotLeaderError("pod-a", "pod-b"))
    assert str(errors.NotLeaderError(None, None)).startswith(
        "this replica is not the leader (no leader is known)")
