"""Container log storage and the `pods/{name}/log` read semantics.

Lines are kept per (namespace, pod, container) with their timestamps, bounded per
container, so `sinceSeconds`, `tailLines`, `limitBytes`, `timestamps` and `previous`
behave like the kubelet's log endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request
from .timefmt import parse_rfc3339, rfc3339_nano

Key = tuple[str, str, str]


@dataclass(frozen=True)
class LogLine:
    """One line as the container wrote it; `seq` orders lines across all containers."""

    seq: int
    timestamp: float
    text: str


@dataclass(frozen=True)
class LogQuery:
    """The query parameters of a log request."""

    container: str | None = None
    previous: bool = False
    since_seconds: int | None = None
    since_time: str | None = None
    tail_lines: int | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    follow: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> LogQuery:
        """Decode query parameters; 400/422 for values the real server rejects."""
        def integer(name: str) -> int | None:
            if name not in query:
                return None
            try:
                return int(query[name])
            except ValueError:
                raise bad_request(f"invalid value for {name}: {query[name]!r}") from None

        def flag(name: str) -> bool:
            return query.get(name, "false").lower() in ("true", "1")

        result = cls(
            container=query.get("container") or None,
            previous=flag("previous"),
            since_seconds=integer("sinceSeconds"),
            since_time=query.get("sinceTime") or None,
            tail_lines=integer("tailLines"),
            limit_bytes=integer("limitBytes"),
            timestamps=flag("timestamps"),
            follow=flag("follow"),
        )
        if result.since_seconds is not None and result.since_time is not None:
            raise ApiError(422, "PodLogOptions is invalid: at most one of sinceTime or "
                                "sinceSeconds may be specified", reason="Invalid")
        for name, value in (("sinceSeconds", result.since_seconds),
                            ("limitBytes", result.limit_bytes)):
            if value is not None and value < 1:
                raise ApiError(422, f"PodLogOptions is invalid: {name}: Invalid value: {value}: "
                                    "must be greater than 0", reason="Invalid")
        if result.tail_lines is not None and result.tail_lines < 0:
            raise ApiError(422, f"PodLogOptions is invalid: tailLines: Invalid value: "
                                f"{result.tail_lines}: must be greater than or equal to 0",
                           reason="Invalid")
        return result


def resolve_container(pod: Mapping[str, Any], container: str | None) -> str:
    """The container a log request means; 400 like the real server when ambiguous."""
    name = pod["metadata"]["name"]
    names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    if container is None:
        if len(names) == 1:
            return names[0]
        raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                          f"[{' '.join(names)}]")
    if container not in names:
        raise bad_request(f"container {container} is not valid for pod {name}")
    return container


class PodLogs:
    """Bounded per-container log buffers, plus the previous instance after a restart."""

    def __init__(
        self, *, max_lines_per_container: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_lines = max(1, max_lines_per_container)
        self.clock = clock
        self._current: dict[Key, deque[LogLine]] = {}
        self._previous: dict[Key, deque[LogLine]] = {}
        self._seq = 0
        self._changed: asyncio.Event | None = None

    def append(
        self,
        namespace: str,
        pod: str,
        container: str,
        lines: Iterable[str],
        *,
        timestamp: float | None = None,
    ) -> int:
        """Append lines (each may carry its own trailing newline); returns how many."""
        buffer = self._current.setdefault((namespace, pod, container), deque(maxlen=self.max_lines))
        ts = self.clock() if timestamp is None else timestamp
        count = 0
        for raw in lines:
            for text in str(raw).splitlines() or [""]:
                self._seq += 1
                buffer.append(LogLine(self._seq, ts, text))
                count += 1
        self.wake()
        return count

    def wake(self) -> None:
        """Wake `follow=true` streams (new lines, or the server shutting down)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def rotate(self, namespace: str, pod: str, container: str) -> None:
        """A container restarted: its logs become the `previous=true` logs."""
        key = (namespace, pod, container)
        self._previous[key] = self._current.pop(key, deque(maxlen=self.max_lines))

    def forget_pod(self, namespace: str, pod: str) -> None:
        """Drop the logs of a deleted pod."""
        for store in (self._current, self._previous):
            for key in [k for k in store if k[:2] == (namespace, pod)]:
                del store[key]

    def current_seq(self) -> int:
        """Sequence number of the last line appended anywhere (0 if none)."""
        return self._seq

    def has_previous(self, namespace: str, pod: str, container: str) -> bool:
        """Whether a previous container instance exists (after a restart)."""
        return (namespace, pod, container) in self._previous

    def lines(
        self,
        namespace: str,
        pod: str,
        container: str,
        query: LogQuery,
        *,
        after_seq: int | None = None,
    ) -> list[LogLine]:
        """The lines selected by sinceSeconds/sinceTime and tailLines (or, when following,
        the lines appended after `after_seq`)."""
        store = self._previous if query.previous else self._current
        selected = [line for line in store.get((namespace, pod, container), ())
                    if after_seq is None or line.seq > after_seq]
        since: float | None = None
        if query.since_seconds is not None:
            since = self.clock() - query.since_seconds
        elif query.since_time is not None:
            try:
                since = parse_rfc3339(query.since_time)
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        if since is not None:
            selected = [line for line in selected if line.timestamp >= since]
        if query.tail_lines is not None and after_seq is None:
            selected = selected[-query.tail_lines:] if query.tail_lines else []
        return selected

    @staticmethod
    def render(lines: Iterable[LogLine], timestamps: bool) -> bytes:
        """The plain-text body: one line per entry, optionally prefixed by RFC3339Nano."""
        out = []
        for line in lines:
            prefix = f"{rfc3339_nano(line.timestamp)} " if timestamps else ""
            out.append(f"{prefix}{line.text}\n")
        return "".join(out).encode()

    def read(self, namespace: str, pod: str, container: str, query: LogQuery) -> bytes:
        """The whole (non-follow) response body, truncated to limitBytes."""
        body = self.render(self.lines(namespace, pod, container, query), query.timestamps)
        if query.limit_bytes is not None:
            body = body[: query.limit_bytes]
        return body

    async def wait_for_lines(self, at_most: float) -> None:
        """Sleep until any new line is appended (or `at_most` seconds); for `follow=true`."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), at_most)
        except TimeoutError:
            pass
