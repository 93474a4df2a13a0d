"""A bounded log of recent API requests, so tests can assert which calls a client made
(e.g. "the route flip was a JSON Patch with a test op, not a PUT").

A request is logged when its response headers go out, so a watch appears in the log as
soon as it is established, not when it ends.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass, replace
from typing import Any

_MAX_IN_FLIGHT = 10_000


@dataclass(frozen=True)
class RequestRecord:
    """One answered request."""

    time: float
    method: str
    path: str
    query: str
    content_type: str
    status: int
    verb: str
    fault: int | None = None
    body: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for `GET /_emulator/requests`."""
        return asdict(self)


class RequestLog:
    """The last `size` requests, oldest first, and a count of every request by verb.

    The count is not bounded by `size`: a test that sends thousands of requests can still
    assert how many API calls a client made (`total`, `by_verb`).
    """

    def __init__(self, size: int = 2000) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=max(1, size))
        self._in_flight: OrderedDict[int, RequestRecord] = OrderedDict()
        self._counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """Requests received since the start or the last `clear` (answered or not)."""
        return sum(self._counts.values())

    def by_verb(self) -> dict[str, int]:
        """Requests received since the start or the last `clear`, by Kubernetes verb."""
        return dict(self._counts)

    def record(self, record: RequestRecord) -> None:
        """Append one request."""
        self._counts[record.verb] += 1
        self._records.append(record)

    def begin(self, token: int, record: RequestRecord) -> None:
        """Remember a request until its response starts (`finish`)."""
        self._counts[record.verb] += 1
        self._in_flight[token] = record
        while len(self._in_flight) > _MAX_IN_FLIGHT:
            self._in_flight.popitem(last=False)

    def finish(self, token: int, status: int, fault: int | None = None) -> None:
        """The response for `token` is being sent: log it with its status."""
        pending = self._in_flight.pop(token, None)
        if pending is not None:
            self._records.append(replace(pending, status=status, fault=fault or pending.fault))

    def abandon(self, token: int) -> None:
        """The request ended without a response (client gone)."""
        self._in_flight.pop(token, None)

    def records(
        self,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        verb: str | None = None,
    ) -> list[RequestRecord]:
        """Recorded requests, optionally filtered."""
        return [
            r for r in self._records
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
            and (verb is None or r.verb == verb)
        ]

    def clear(self) -> None:
        """Forget all recorded requests and reset the counts."""
        self._records.clear()
        self._counts.clear()

    @staticmethod
    def now() -> float:
        """Timestamp for a record."""
        return time.time()
