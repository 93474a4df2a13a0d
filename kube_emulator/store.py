"""In-memory object storage: a global resourceVersion, bounded history and watch fan-out.

Like etcd behind the real server, every write gets the next revision, watches replay
from history after a given revision, and a revision older than what history retains is
answered with 410 Expired. Stored dicts are never mutated in place (writes replace
them), so events can share them with watchers safely.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import already_exists, bad_request, conflict, expired, not_found
from .jsonvalues import clone
from .resources import ResourceType

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Matcher = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Event:
    """A committed change; `previous` is the state before a MODIFIED (for selector moves)."""

    type: str
    resource: ResourceType
    object: Obj
    previous: Obj | None
    rv: int

    @property
    def namespace(self) -> str:
        """Namespace of the changed object ('' for cluster-scoped)."""
        return str(self.object.get("metadata", {}).get("namespace", ""))


def _ns_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Watcher:
    """One open watch: a queue of `{"type", "object"}` events, closed with a None."""

    def __init__(
        self, resource: ResourceType, namespace: str | None, matcher: Matcher, limit: int
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.matcher = matcher
        self.closed = False
        self._limit = limit
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def offer(self, event: Event) -> None:
        """Queue the event if it concerns this watch, translating selector moves."""
        if self.closed or event.resource.key != self.resource.key:
            return
        if self.namespace and event.namespace != self.namespace:
            return
        now_matches = self.matcher(event.object)
        kind = event.type
        if kind == "MODIFIED":
            before = event.previous is not None and self.matcher(event.previous)
            if not (now_matches or before):
                return
            kind = "MODIFIED" if now_matches and before else ("ADDED" if now_matches else "DELETED")
        elif not now_matches:
            return
        self.push({"type": kind, "object": event.object})

    def push(self, item: dict[str, Any]) -> None:
        """Enqueue; a consumer too slow to keep up is disconnected, as the real server does."""
        if self.closed:
            return
        if self._queue.qsize() >= self._limit:
            log.warning("watch queue overflow; closing watch on %s", self.resource.key)
            self.close()
            return
        self._queue.put_nowait(item)

    def pending(self) -> bool:
        """Whether events are waiting (bookmarks are only safe when nothing is)."""
        return not self._queue.empty()

    async def next(self, at_most: float) -> dict[str, Any] | None:
        """Next event; None once closed; TimeoutError if nothing came within `at_most` s."""
        if self.closed and self._queue.empty():
            return None
        if not self._queue.empty():
            # wait_for(get(), 0) raises TimeoutError even with an item queued; a stream whose
            # bookmark fell due while events were pending would then never send again.
            return self._queue.get_nowait()
        return await asyncio.wait_for(self._queue.get(), at_most)

    def close(self) -> None:
        """End the watch; the HTTP stream finishes after draining queued events."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)


class ObjectStore:
    """All objects by resource, namespace and name, with revisions, history and watches."""

    def __init__(self, *, history_size: int = 10_000, watch_queue_limit: int = 10_000) -> None:
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {}
        """resource key -> namespace ('' if cluster-scoped) -> name -> object: a namespaced
        read touches only its namespace, as etcd's key prefixes do for the real server."""
        self._sorted: dict[tuple[str, str], list[str]] = {}
        """(resource key, namespace) -> its names in order; dropped when one is added or
        removed, so a list of a namespace that did not change sorts nothing."""
        self._rv = 1
        self._compacted = 0
        self._history: deque[Event] = deque(maxlen=max(1, history_size))
        self._watchers: set[Watcher] = set()
        self._watch_queue_limit = watch_queue_limit
        self._listeners: list[Callable[[Event], None]] = []
        self._pending: deque[Event] = deque()
        self._dispatching = False
        self.on_watches_changed: Callable[[], None] | None = None

    @property
    def resource_version(self) -> str:
        """The current (latest committed) revision, as lists report it."""
        return str(self._rv)

    @property
    def open_watches(self) -> int:
        """How many watches are currently open."""
        return len(self._watchers)

    def _watches_changed(self) -> None:
        if self.on_watches_changed is not None:
            self.on_watches_changed()

    @property
    def compacted_revision(self) -> int:
        """Watches from a revision below this one are answered with 410."""
        return self._compacted

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """A copy of the object, or None."""
        obj = self.peek(rt, namespace, name)
        return clone(obj) if obj is not None else None

    def peek(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """The stored object itself, or None: read-only, do not mutate (see `iter`)."""
        return self._objects.get(rt.key, {}).get(namespace or "", {}).get(name)

    def list(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        """Copies of all objects of a resource (optionally one namespace), sorted by key."""
        return [clone(o) for o in self.iter(rt, namespace)]

    def iter(self, rt: ResourceType, namespace: str | None = None) -> Iterator[Obj]:
        """Read-only view of stored objects, sorted by namespace/name; do not mutate."""
        namespaces = self._objects.get(rt.key, {})
        if namespace is not None:
            chosen = [namespace] if namespace in namespaces else []
        else:
            chosen = sorted(namespaces)
        for ns in chosen:
            bucket = namespaces.get(ns)
            if not bucket:
                continue
            names = self._sorted.get((rt.key, ns))
            if names is None:
                names = self._sorted[(rt.key, ns)] = sorted(bucket)
            for name in names:
                obj = bucket.get(name)
                if obj is not None:  # removed while a caller iterates: skip it
                    yield obj

    def create(self, rt: ResourceType, obj: Obj) -> Obj:
        """Store a new object (AlreadyExists if taken); returns the stored copy."""
        namespace, name = _ns_name(obj)
        if self.peek(rt, namespace, name) is not None:
            raise already_exists(rt.group, rt.plural, name)
        return self._commit("ADDED", rt, clone(obj), None)

    def update(self, rt: ResourceType, obj: Obj, *, expected_rv: str | None = None) -> Obj:
        """Replace an existing object; 409 when `expected_rv` is not the current revision."""
        namespace, name = _ns_name(obj)
        current = self.peek(rt, namespace, name)
        if current is None:
            raise not_found(rt.group, rt.plural, name)
        if expected_rv is not None and expected_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.group, rt.plural, name)
        return self._commit("MODIFIED", rt, clone(obj), current)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        expected_rv: str | None = None,
        expected_uid: str | None = None,
    ) -> Obj:
        """Remove an object; the DELETED event carries the deletion revision."""
        current = self.peek(rt, namespace, name)
        if current is None:
            raise not_found(rt.group, rt.plural, name)
        meta = current["metadata"]
        if expected_uid is not None and expected_uid != meta.get("uid"):
            raise conflict(rt.group, rt.plural, name, f"Precondition failed: UID in precondition: "
                           f"{expected_uid}, UID in object meta: {meta.get('uid')}")
        if expected_rv is not None and expected_rv != meta.get("resourceVersion"):
            raise conflict(rt.group, rt.plural, name, f"Precondition failed: ResourceVersion in "
                           f"precondition: {expected_rv}, ResourceVersion in object meta: "
                           f"{meta.get('resourceVersion')}")
        return self._commit("DELETED", rt, clone(current), current)

    def _commit(self, kind: str, rt: ResourceType, obj: Obj, previous: Obj | None) -> Obj:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        namespace, name = _ns_name(obj)
        namespaces = self._objects.setdefault(rt.key, {})
        bucket = namespaces.setdefault(namespace, {})
        if kind == "DELETED":
            bucket.pop(name, None)
            self._sorted.pop((rt.key, namespace), None)
            if not bucket:
                del namespaces[namespace]
        else:
            if name not in bucket:
                self._sorted.pop((rt.key, namespace), None)
            bucket[name] = obj
        event = Event(kind, rt, obj, previous if kind == "MODIFIED" else None, self._rv)
        if len(self._history) == self._history.maxlen:
            self._compacted = max(self._compacted, self._history[0].rv)
        self._history.append(event)
        for watcher in list(self._watchers):
            watcher.offer(event)
            if watcher.closed:
                self._watchers.discard(watcher)
        self._dispatch(event)
        return clone(obj)

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        resource_version: str | None,
        matcher: Matcher,
    ) -> Watcher:
        """Open a watch: synthetic ADDED for current state when no revision is given,
        otherwise replay history after it (410 Expired if it was compacted away)."""
        watcher = Watcher(rt, namespace, matcher, self._watch_queue_limit)
        if resource_version in (None, "", "0"):
            for obj in self.iter(rt, namespace):
                if matcher(obj):
                    watcher.push({"type": "ADDED", "object": obj})
        else:
            try:
                since = int(str(resource_version))
            except ValueError:
                raise bad_request(f"invalid resource version: {resource_version!r}") from None
            if since < self._compacted:
                raise expired(f"too old resource version: {since} ({self._compacted})")
            for event in self._history:
                if event.rv > since:
                    watcher.offer(event)
        self._watchers.add(watcher)
        self._watches_changed()
        return watcher

    def forget(self, watcher: Watcher) -> None:
        """Detach a finished watch."""
        watcher.close()
        if watcher in self._watchers:
            self._watchers.discard(watcher)
            self._watches_changed()

    def drop_watches(self) -> int:
        """Close every open watch (clients must re-watch); returns how many were open."""
        watchers, self._watchers = list(self._watchers), set()
        for watcher in watchers:
            watcher.close()
        self._watches_changed()
        return len(watchers)

    def expire_history(self) -> str:
        """Compact all history: any watch from a revision seen so far now gets 410."""
        self._rv += 1
        self._compacted = self._rv
        self._history.clear()
        return str(self._rv)

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` for every committed event (controllers); never re-entrantly."""
        self._listeners.append(listener)

    def _dispatch(self, event: Event) -> None:
        self._pending.append(event)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                current = self._pending.popleft()
                for listener in self._listeners:
                    try:
                        listener(current)
                    except Exception:
                        log.exception("listener failed on %s event", current.type)
        finally:
            self._dispatching = False
