"""Application log lines the synthetic services write: INFO access lines and ERROR/Exception
lines for failed requests, kept in a bounded per-namespace buffer.

Gatekeeper's log check counts error patterns in pod logs; these lines give it something
realistic to count, in proportion to the configured error ratio.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["LogBuffer", "LogCallback", "access_line", "error_line", "exception_line"]

LogCallback = Callable[[str, list[str]], None]
"""`on_log_lines(namespace, lines)`; called from a background thread, keep it quick."""

_EXCEPTIONS = (
    "System.TimeoutException: The operation has timed out calling franchise-store",
    "System.InvalidOperationException: Sequence contains no elements",
    "Npgsql.NpgsqlException: Exception while reading from stream",
)


def _timestamp(wall: float) -> str:
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def access_line(
    wall: float, service: str, method: str, path: str, status: int, latency_s: float, seq: int
) -> str:
    """`<ts> INFO [api] GET /api/... 200 12ms request_id=...`."""
    return (
        f"{_timestamp(wall)} INFO  [{service}] {method} {path} {status} "
        f"{latency_s * 1000:.0f}ms request_id={seq:08x}"
    )


def error_line(
    wall: float, service: str, method: str, path: str, status: int, latency_s: float, seq: int
) -> str:
    """`<ts> ERROR [api] GET /api/... failed with 503 ...`."""
    return (
        f"{_timestamp(wall)} ERROR [{service}] {method} {path} failed with {status} after "
        f"{latency_s * 1000:.0f}ms request_id={seq:08x}"
    )


def exception_line(wall: float, service: str, method: str, path: str, seq: int) -> str:
    """`<ts> Exception in [api] GET /api/...: System.TimeoutException: ...`."""
    detail = _EXCEPTIONS[seq % len(_EXCEPTIONS)]
    return (
        f"{_timestamp(wall)} Exception in [{service}] {method} {path} "
        f"request_id={seq:08x}: {detail}"
    )


class LogBuffer:
    """Bounded, thread-safe line buffer with a monotonically increasing line counter."""

    def __init__(self, max_lines: int = 2000) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._written = 0
        self._lock = threading.Lock()

    def extend(self, lines: list[str]) -> None:
        """Append lines; the oldest fall out once the buffer is full."""
        with self._lock:
            self._lines.extend(lines)
            self._written += len(lines)

    def lines(self, limit: int | None = None) -> list[str]:
        """The buffered lines, oldest first (the last `limit` only, if given)."""
        with self._lock:
            lines = list(self._lines)
        return lines[-limit:] if limit else lines

    @property
    def written(self) -> int:
        """Total lines ever written (including those that fell out)."""
        return self._written

    def clear(self) -> None:
        """Drop buffered lines (the counter keeps counting)."""
        with self._lock:
            self._lines.clear()
