"""What the watch streams share with their readers: the raw event and handler types, an
object's place in the cache, a stream's counters (`StreamState`) and the streams' timeouts
and pacing (`WatchSettings`). Plain data; `watching.streams` runs the streams."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypedDict

from gatekeeper import tasks
from gatekeeper.watching.targets import Scope

__all__ = ["EventHandler", "Obj", "ObjectKey", "RawEvent", "StreamState", "WatchSettings"]

Obj = dict[str, Any]


class RawEvent(TypedDict):
    """One line of a watch stream, as the API server sends it."""

    type: str
    object: Obj


class EventHandler(Protocol):
    """Told about every change: `kind` is e.g. "IngressRoute", `event_type` ADDED,
    MODIFIED or DELETED, `obj` the raw object (its apiVersion tells the API group)."""

    def __call__(self, kind: str, event_type: str, obj: Obj) -> Awaitable[None]: ...


class ObjectKey(NamedTuple):
    """Where an object lives in the cache."""

    group: str
    kind: str
    namespace: str
    name: str


@dataclass
class StreamState:
    """What one stream has done; read by tests, status pages and metrics."""

    resource_version: str | None = None
    """The last resourceVersion seen (list, event or bookmark): where a reconnect resumes."""
    synced: bool = False
    """True once the first list is in the cache."""
    lists: int = 0
    """Successful lists: 1, plus one per re-list after 410 Gone."""
    connections: int = 0
    """Watch requests opened."""
    failures: int = 0
    """Errors (HTTP, network, timeouts) that led to a reconnect after backoff."""
    gone: int = 0
    """410 Gone answers: the resourceVersion had been compacted, so we re-listed."""
    bookmarks: int = 0
    """BOOKMARK events: the resourceVersion advanced without a change."""
    changes: int = 0
    """ADDED, MODIFIED and DELETED events applied to the cache (re-list diffs included)."""
    live: bool = False
    """Listed and connected now: its part of the cache is current (`Watcher.listed`)."""


@dataclass(frozen=True)
class WatchSettings:
    """Timeouts and retry pacing of the watch streams."""

    server_timeout: float = 300.0
    """Seconds asked of the server (`timeoutSeconds`) per watch request, stretched by up to
    2x at random like client-go does, so replicas do not reconnect in step."""
    idle_timeout: float = 90.0
    """Seconds without a byte (event or bookmark) before the connection is presumed dead
    and reopened from the last resourceVersion (the real server bookmarks about every
    minute)."""
    connect_timeout: float = 10.0
    """Seconds to open a connection."""
    list_timeout: float = 60.0
    """Seconds for each list request (one page)."""
    page_size: int = 500
    """Objects per list page."""
    backoff: tasks.Backoff = field(
        default_factory=lambda: tasks.Backoff(initial=0.2, maximum=10.0, jitter=0.5))
    """Wait between failed attempts: exponential, jittered, at most `maximum` seconds."""
    scope: Scope = "auto"
    """`namespaces`, `cluster` or `auto` (see `targets_for`; `kubernetes.watch.scope`)."""
    max_streams: int = 64
    """Streams (each one connection of the watcher's own pool) before `auto` goes
    cluster-wide; with scope `namespaces`, more is refused (`kubernetes.watch.max_streams`)."""
