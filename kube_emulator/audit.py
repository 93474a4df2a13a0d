"""A bounded log of recent API requests, so tests can assert which calls a client made
(e.g. "the route flip was a JSON Patch with a test op, not a PUT")."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any


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
    """The last `size` requests, oldest first."""

    def __init__(self, size: int = 2000) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=max(1, size))

    def record(self, record: RequestRecord) -> None:
        """Append one request."""
        self._records.append(record)

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
        """Forget all recorded requests."""
        self._records.clear()

    @staticmethod
    def now() -> float:
        """Timestamp for a record."""
        return time.time()
