"""Watch the pairs' Pods, Deployments and route objects; keep the latest of each in memory.

Streams (`scope`): one per (resource, namespace) while they fit in `max_streams`, else one
per resource kind over all namespaces, keeping only the managed namespaces' objects (which
needs cluster-wide list/watch). Streams run on a connection pool of their own (an ApiClient
built from the caller's configuration, at most one connection per stream), so however many
there are, they never hold a connection that reads, flips and rollbacks need: at 25 pairs
with their own namespaces, 101 per-namespace streams took all 100 connections of the shared
pool and every other call timed out.

Each stream works as client-go's reflector does: list, then watch
from the list's resourceVersion with bookmarks; a stream that ends (server timeout, dropped
connection) resumes from the last resourceVersion seen, so nothing in between is missed;
410 Gone (that version was compacted away) means re-list, and the re-list is diffed with
the cache so deletions in the gap still reach the callbacks. Errors reconnect after a
bounded, jittered backoff; a stream silent for longer than `idle_timeout` is presumed dead.

Readers (`listed`) get a namespace's objects of a kind only while the stream that covers
them has listed and is connected now; otherwise None, and the caller asks the API server
(a stream that is failing, forbidden or reconnecting never answers from a stale cache).

Callbacks run in the stream's task, in the order the server sent the events, after the
cache was updated; a failing callback is logged and the stream carries on. Keep them
short: a slow callback delays that stream's later events (and the one-second promise that
a `kubectl patch` of a route is seen at once).

About 500 lines on purpose: one reflector loop (list, watch, resume, re-list), the cache it
keeps current and the retargeting that follows the served pairs (`watch`) are one state
machine (`watching.targets` plans the streams, `watching.types` holds the shared data).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper import errors, kubeclient, tasks
from gatekeeper.config import PairConfig
from gatekeeper.kubeclient import ApiException
from gatekeeper.watching.targets import DEPLOYMENTS, PODS, Resource, Target, targets_for
from gatekeeper.watching.types import (
    EventHandler,
    Obj,
    ObjectKey,
    RawEvent,
    StreamState,
    WatchSettings,
)

__all__ = ["EventHandler", "ObjectKey", "StreamState", "WatchSettings", "Watcher"]

log = structlog.get_logger()

_MAX_LINE = 16 * 1024 * 1024  # no single event is larger (etcd refuses objects over ~1.5 MiB)
_FAILURES = (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError)
class _Gone(Exception):
    """The server no longer has the resourceVersion we asked for: re-list."""


class Watcher:
    """Keeps an up-to-date cache of the pairs' objects and tells callbacks about changes."""

    def __init__(
        self,
        api: client.ApiClient,
        pairs: Sequence[PairConfig] = (),
        *,
        on_event: EventHandler | None = None,
        settings: WatchSettings | None = None,
        targets: Sequence[Target] | None = None,
    ) -> None:
        """Watch what PAIRS need (`targets_for`), or exactly TARGETS when given (the
        BlueGreenPair objects). ValueError when the pairs need more than `max_streams`
        streams with scope `namespaces`."""
        self.settings = settings or WatchSettings()
        self.targets = tuple(sorted(targets)) if targets is not None else self._plan(pairs)
        self.streams: dict[Target, StreamState] = {t: StreamState() for t in self.targets}
        self._api = api
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._handlers: list[EventHandler] = [on_event] if on_event else []
        self._cache: dict[ObjectKey, Obj] = {}
        self._places: dict[tuple[str, str, str], dict[str, Obj]] = {}
        """(group, kind, namespace) -> name -> object: the cache, indexed for `listed`."""
        self._covering: dict[tuple[Resource, str], Target] = {}
        self._everywhere: dict[Resource, Target] = {}
        self._cover()
        self._synced = asyncio.Event()
        self._changed = asyncio.Condition()
        self._retargeted = asyncio.Event()
        """Set by `watch`: `run` starts and stops streams for the new targets."""
        self.last_resource_version: str | None = None
        """The resourceVersion of the latest list, event or bookmark on any stream."""
        self._server_date: tuple[float, float] | None = None
        """(the API server's Date, our monotonic clock then) of the latest list or watch
        answer: the server's clock for readers of the cache (`server_now`)."""
        if not self.targets:
            self._synced.set()

    def _plan(self, pairs: Sequence[PairConfig]) -> tuple[Target, ...]:
        found = targets_for(pairs, scope=self.settings.scope,
                            max_streams=self.settings.max_streams)
        if len(found) > self.settings.max_streams:
            raise ValueError(f"{len(found)} watch streams exceed max_streams "
                             f"{self.settings.max_streams} (scope {self.settings.scope!r})")
        return found

    def _cover(self) -> None:
        """Index which target covers each (resource, namespace)."""
        self._covering.clear()
        self._everywhere.clear()
        for target in self.targets:
            if target.keep_all:
                self._everywhere[target.resource] = target
                continue
            for namespace in target.kept if target.cluster_wide else (target.namespace,):
                self._covering[(target.resource, namespace)] = target

    def _covered_by(self, resource: Resource, namespace: str) -> Target | None:
        return self._covering.get((resource, namespace)) or self._everywhere.get(resource)

    def watch(self, pairs: Sequence[PairConfig]) -> bool:
        """From now on watch what PAIRS need (the set of pairs changed, or this replica's
        shards did): streams no longer needed stop and their objects leave the cache, new
        ones list first (until they have, their namespaces are read from the API server:
        `listed` answers None). Streams kept go on untouched. Returns False, keeping the
        current streams, when the pairs need more than `max_streams` (scope `namespaces`)."""
        try:
            wanted = self._plan(pairs)
        except ValueError as exc:
            log.error("cannot watch the new set of pairs; their reads go to the API server",
                      error=str(exc))
            return False
        current = {_identity(t): t for t in self.targets}
        new = {_identity(t): t for t in wanted}
        if current.keys() == new.keys():
            return True
        for ident, target in current.items():
            if ident not in new:
                del self.streams[target]
        for ident, target in new.items():
            if ident not in current:
                self.streams[target] = StreamState()
        self.targets = wanted
        self._cover()
        if all(state.synced for state in self.streams.values()):
            self._synced.set()
        else:
            self._synced.clear()
        self._retargeted.set()
        return True

    def _drop_uncovered(self) -> None:
        """Forget the cached objects no target covers any more (after `watch`)."""
        kinds = {(t.resource.group, t.resource.kind): t.resource for t in self.targets}
        for key in list(self._cache):
            resource = kinds.get((key.group, key.kind))
            if resource is None or self._covered_by(resource, key.namespace) is None:
                del self._cache[key]
                place = self._places.get((key.group, key.kind, key.namespace))
                if place is not None:
                    place.pop(key.name, None)
                    if not place:
                        del self._places[(key.group, key.kind, key.namespace)]

    # -- reading the cache ------------------------------------------------------------------

    @property
    def changes(self) -> int:
        """All ADDED, MODIFIED and DELETED events applied so far, on every stream."""
        return sum(state.changes for state in self.streams.values())

    @property
    def synced(self) -> bool:
        """True once every stream has listed its objects at least once."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Return once the cache holds every watched object (callers bound it with a timeout)."""
        await self._synced.wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked after every change and bookmark."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    def get(self, kind: str, namespace: str, name: str, *, group: str | None = None) -> Obj | None:
        """The latest object of that kind, namespace and name, or None when absent.

        `group` is needed only when both Traefik API groups hold a route of that name.
        """
        if group is not None:
            return self._cache.get(ObjectKey(group, kind, namespace, name))
        found = [obj for key, obj in self._cache.items()
                 if (key.kind, key.namespace, key.name) == (kind, namespace, name)]
        if len(found) > 1:
            raise LookupError(f"{kind} {namespace}/{name} exists in several API groups; "
                              "pass group=")
        return found[0] if found else None

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list[Obj]:
        """The cached objects, optionally of one kind and/or namespace, in key order."""
        return [obj for key, obj in sorted(self._cache.items(), key=lambda item: item[0])
                if (kind is None or key.kind == kind)
                and (namespace is None or key.namespace == namespace)]

    def listed(self, resource: Resource, namespace: str) -> list[Obj] | None:
        """The namespace's objects of `resource`, as a list of them would answer now; None
        when no stream covers them or the one that does is not listed and connected.
        The objects are the cache's own: read them, never change them."""
        place = self._current(resource, namespace)
        return None if place is None else [place[name] for name in sorted(place)]

    def named(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        """One object of `resource`, as a GET of it would answer now; None when it is absent
        or when the stream covering it is not listed and connected (then GET it). The
        object is the cache's own: read it, never change it."""
        place = self._current(resource, namespace)
        return None if place is None else place.get(name)

    def _current(self, resource: Resource, namespace: str) -> dict[str, Obj] | None:
        """Name -> object of the namespace's `resource` while the stream covering them is
        listed and connected; else None."""
        target = self._covered_by(resource, namespace)
        state = self.streams.get(target) if target is not None else None
        if state is None or not (state.synced and state.live):
            return None
        return self._places.get((resource.group, resource.kind, namespace)) or {}

    def server_now(self) -> float | None:
        """The API server's clock now, as Unix seconds: its `Date` on the latest list or
        watch answer plus our monotonic time since (so a step of our own wall clock does not
        move it; the header has whole seconds, like a fresh list's). None before any answer.
        """
        if self._server_date is None:
            return None
        date, at = self._server_date
        return date + (time.monotonic() - at)

    def _dated(self, date: float | None) -> None:
        """Note the server's Date (Unix seconds) of an answer that just arrived."""
        if date is not None:
            self._server_date = (date, time.monotonic())

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Add a callback; returns a function that removes it again."""
        self._handlers.append(handler)
        return functools.partial(self._unsubscribe, handler)

    def _unsubscribe(self, handler: EventHandler) -> None:
        if handler in self._handlers:
            self._handlers.remove(handler)

    # -- the streams ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run one stream per target until cancelled, on a connection pool of their own
        (started and stopped as `watch` changes the targets); each stream's crash is logged
        and it restarts (its own loop already retries API and network errors)."""
        streams = kubeclient.own_pool(
            self._api, connections=max(1, len(self.targets), self.settings.max_streams))
        self._core = client.CoreV1Api(streams)
        self._apps = client.AppsV1Api(streams)
        self._custom = client.CustomObjectsApi(streams)
        running: dict[tuple[Target, tuple[str, ...]], asyncio.Task[None]] = {}
        try:
            async with tasks.Tasks(name="watching", shutdown_timeout=5.0) as group:
                while True:
                    self._retargeted.clear()
                    wanted = {_identity(t): t for t in self.targets}
                    stopped = [running.pop(ident) for ident in list(running)
                               if ident not in wanted]
                    for task in stopped:
                        task.cancel()
                    if stopped:
                        await asyncio.wait(stopped)
                    self._drop_uncovered()
                    for ident, target in wanted.items():
                        if ident not in running:
                            running[ident] = group.start(
                                f"watch {target}", functools.partial(
                                    self._watch_forever, target, self.streams[target]),
                                backoff=self.settings.backoff)
                    log.info("watching", streams=len(self.targets), stopped=len(stopped),
                             cluster_wide=sum(1 for t in self.targets if t.cluster_wide))
                    await self._retargeted.wait()
        finally:
            await streams.close()

    async def _watch_forever(self, target: Target, state: StreamState) -> None:
        """List, then watch and resume; re-list on 410; back off on errors."""
        try:
            await self._watch_loop(target, state)
        finally:  # crashed, cancelled or no longer wanted: its part of the cache is stale
            state.live = False

    async def _watch_loop(self, target: Target, state: StreamState) -> None:
        failures = 0
        bound = structlog.get_logger().bind(stream=str(target))
        while True:
            received = True
            try:
                if state.resource_version is None or not state.synced:
                    await self._relist(target, state)
                    failures = 0
                received = await self._stream(target, state)
                state.live = False  # ended: stale until the next watch is open
            except _Gone:
                state.live = False
                state.gone += 1
                bound.info("watch resourceVersion expired (410 Gone); re-listing",
                           resource_version=state.resource_version)
                state.resource_version = None
                failures += 1
                if failures == 1:
                    continue  # the usual case: re-list at once
            except _FAILURES as error:
                state.live = False
                state.failures += 1
                failures += 1
                bound.warning("watch failed; reconnecting", error=_describe(error),
                              attempt=failures)
            else:
                if received:
                    failures = 0
                    continue  # a normal end (server timeout, dropped): resume at once
                failures += 1  # ended without a byte: do not reconnect in a hot loop
            await asyncio.sleep(self.settings.backoff.delay(failures))

    def _call(self, target: Target) -> tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]:
        """The generated list method for the target and its positional arguments."""
        resource = target.resource
        if target.cluster_wide:
            if resource == PODS:
                return self._core.list_pod_for_all_namespaces, ()
            if resource == DEPLOYMENTS:
                return self._apps.list_deployment_for_all_namespaces, ()
            return self._custom.list_cluster_custom_object, (
                resource.group, resource.version, resource.plural)
        if resource == PODS:
            return self._core.list_namespaced_pod, (target.namespace,)
        if resource == DEPLOYMENTS:
            return self._apps.list_namespaced_deployment, (target.namespace,)
        return self._custom.list_namespaced_custom_object, (
            resource.group, resource.version, target.namespace, resource.plural)

    async def _relist(self, target: Target, state: StreamState) -> None:
        """List every object (page by page), then diff with the cache and tell callbacks."""
        call, args = self._call(target)
        items: list[Obj] = []
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"_continue": token} if token else {}
            # A 410 here (continue token expired) is an ordinary failure: list again.
            page, date = await kubeclient.read_json_dated(
                call, *args, limit=self.settings.page_size,
                _request_timeout=self.settings.list_timeout, **extra)
            self._dated(date)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or None
            if token is None:
                break
        resource = target.resource
        listed: dict[ObjectKey, Obj] = {}
        for item in items:
            key = self._key(resource, item)
            if not target.keeps(key.namespace):
                continue  # a cluster-wide list: another namespace's object
            item.setdefault("kind", resource.kind)  # list items come without kind/apiVersion
            item.setdefault("apiVersion", resource.api_version)
            listed[key] = item
        previous = {key: obj for key, obj in self._cache.items()
                    if (key.group, key.kind) == (resource.group, resource.kind)
                    and target.keeps(key.namespace)}
        state.resource_version = str(metadata.get("resourceVersion") or "") or None
        state.lists += 1
        for key, obj in previous.items():
            if key not in listed:
                await self._apply(target, state, "DELETED", obj, note=False)
        for key, obj in listed.items():
            old = previous.get(key)
            if old is None:
                await self._apply(target, state, "ADDED", obj, note=False)
            elif _rv(old) != _rv(obj):
                await self._apply(target, state, "MODIFIED", obj, note=False)
        self._note(state.resource_version)
        state.live = True
        if not state.synced:
            state.synced = True
            if all(s.synced for s in self.streams.values()):
                self._synced.set()
        async with self._changed:
            self._changed.notify_all()

    async def _stream(self, target: Target, state: StreamState) -> bool:
        """Watch from the last resourceVersion until the server ends the stream.

        Returns whether anything arrived (an immediate end is paced like a failure).
        """
        call, args = self._call(target)
        settings = self.settings
        timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout,
                                        sock_connect=settings.connect_timeout,
                                        sock_read=settings.idle_timeout)
        server_timeout = int(settings.server_timeout * (1.0 + random.random()))
        state.connections += 1
        response = await call(
            *args, watch=True, resource_version=state.resource_version,
            allow_watch_bookmarks=True, timeout_seconds=max(server_timeout, 1),
            _preload_content=False, _request_timeout=timeout)
        received = False
        async with response:
            if not errors.succeeded(response.status):
                error = errors.from_response(response.status, response.reason,
                                             await response.read(), response.headers)
                if isinstance(error, errors.APIGoneError):
                    raise _Gone() from error
                raise error
            state.live = True
            self._dated(kubeclient.http_date(response.headers.get("Date")))
            buffer = bytearray()
            async for chunk in response.content.iter_any():
                received = True
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        await self._handle_line(target, state, line)
                if len(buffer) > _MAX_LINE:
                    raise ValueError(f"watch event over {_MAX_LINE} bytes")
            if buffer.strip():
                await self._handle_line(target, state, bytes(buffer))
        return received

    async def _handle_line(self, target: Target, state: StreamState, line: bytes) -> None:
        """Apply one watch event: a change, a bookmark, or an ERROR Status."""
        event: RawEvent = json.loads(line)
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            error = errors.from_response(code if isinstance(code, int) else 0,
                                         f"{obj.get('reason')}: {obj.get('message')}")
            if isinstance(error, errors.APIGoneError):
                raise _Gone() from error
            raise error
        if kind == "BOOKMARK":
            rv = _rv(obj)
            if rv:
                state.resource_version = rv
                state.bookmarks += 1
                self._note(rv)
                async with self._changed:
                    self._changed.notify_all()
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {kind!r}")
        if not target.keeps(self._key(target.resource, obj).namespace):
            rv = _rv(obj)  # a cluster-wide stream: not ours, but the stream moved on
            if rv:
                state.resource_version = rv
                self._note(rv)
            return
        await self._apply(target, state, kind, obj)

    async def _apply(
        self, target: Target, state: StreamState, event_type: str, obj: Obj, *, note: bool = True
    ) -> None:
        """Update the cache and the resourceVersion, then run the callbacks."""
        resource = target.resource
        key = self._key(resource, obj)
        place = self._places.setdefault((key.group, key.kind, key.namespace), {})
        if event_type == "DELETED":
            self._cache.pop(key, None)
            place.pop(key.name, None)
        else:
            self._cache[key] = obj
            place[key.name] = obj
        state.changes += 1
        if note:
            rv = _rv(obj)
            if rv:
                state.resource_version = rv
                self._note(rv)
            async with self._changed:
                self._changed.notify_all()
        for handler in list(self._handlers):
            try:
                await handler(resource.kind, event_type, obj)
            except Exception:
                log.exception("watch callback failed", kind=resource.kind, event_type=event_type,
                              namespace=key.namespace, name=key.name)

    def _note(self, rv: str | None) -> None:
        if rv:
            self.last_resource_version = rv

    @staticmethod
    def _key(resource: Resource, obj: Mapping[str, Any]) -> ObjectKey:
        metadata = obj.get("metadata") or {}
        return ObjectKey(resource.group, resource.kind, str(metadata.get("namespace") or ""),
                         str(metadata.get("name") or ""))


def _identity(target: Target) -> tuple[Target, tuple[str, ...]]:
    """A stream's identity: a cluster-wide stream keeping other namespaces is another one
    (it must list again to fill them)."""
    return target, target.kept


def _rv(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion") or None


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return repr(error)

