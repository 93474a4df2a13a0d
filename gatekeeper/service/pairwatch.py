"""Follow the BlueGreenPair objects with a watch and serve their pairs as they change.

One cluster-wide watch stream on the resource (`watching.Watcher`: list, watch, resume
from the last resourceVersion, re-list on 410 Gone). After a change, debounced so that a
burst of events is one pass, the cached objects are chosen again (`pairobjects.choose`,
each object parsed once per generation), a new or edited pair gets its routes' Traefik API
group (`routers.discovery`), an invalid object its `Valid=False` condition, and the
controller serves the result (`Controller.serve_pairs`): an added object's pair at once, an
edited or deleted one's as soon as its action in flight ends. No other pair waits and the
service never restarts. The pairs' own status writes come back as events too; they change
no generation, so they cost a comparison each.

A cluster without the CRD is asked again every `CHECK_EVERY` seconds (quietly): once the CRD
is installed, its objects are served. A failing discovery keeps the pairs served as they
were and is tried again after `RETRY` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from kubernetes_asyncio import client

from gatekeeper import crd, errors, events, pairobjects, tasks
from gatekeeper.config import PairConfig
from gatekeeper.kubeclient import read_json
from gatekeeper.routers import discovery
from gatekeeper.service.controller import Controller
from gatekeeper.watching import ALL_NAMESPACES, Resource, Target, Watcher, WatchSettings

__all__ = ["PAIR_OBJECTS", "PairWatch"]

log = structlog.get_logger(__name__)

PAIR_OBJECTS = Target(Resource(crd.KIND, crd.GROUP, crd.VERSION, crd.PLURAL), ALL_NAMESPACES,
                      keep_all=True)
"""The one stream: every BlueGreenPair in every namespace."""
DEBOUNCE = 0.2
"""Seconds to let a burst of events settle before choosing the pairs again."""
RETRY = 5.0
"""Seconds before a pass that failed (discovery unreachable) is tried again."""
CHECK_EVERY = 60.0
"""Seconds between checks whether the CRD was installed, while it is not."""

_Key = tuple[str, str, str, int]
"""An object's namespace, name, uid and generation: what a spec edit or a re-creation
changes, and a status write does not."""


def _key(obj: dict[str, Any]) -> _Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")),
            str(meta.get("uid", "")), int(meta.get("generation") or 0))


def _same_spec(parsed: PairConfig, served: PairConfig) -> bool:
    """Whether SERVED is PARSED with its routes' API groups decided (the same object
    generation, read at start): routes PARSED leaves without a group take SERVED's."""
    if parsed.object_namespace != served.object_namespace or len(parsed.routes) != len(
            served.routes):
        return False
    routes = tuple(mine if "api_group" in mine.model_fields_set
                   else mine.model_copy(update={"api_group": theirs.api_group})
                   for mine, theirs in zip(parsed.routes, served.routes, strict=True))
    return parsed.model_copy(update={"routes": routes}) == served


class PairWatch:
    """Keeps the controller's pairs equal to the configured ones plus the usable objects."""

    def __init__(self, api: client.ApiClient, controller: Controller, *,
                 configured: Sequence[PairConfig], settings: WatchSettings | None = None,
                 debounce: float = DEBOUNCE, retry: float = RETRY,
                 check_every: float = CHECK_EVERY,
                 clock: Callable[[], float] = time.time) -> None:
        """CONFIGURED: the pairs of the configuration file (they come first, and an object
        may not take their names)."""
        self.api = api
        self.controller = controller
        self.configured = tuple(configured)
        self.watcher = Watcher(api, targets=[PAIR_OBJECTS], settings=settings)
        self.watcher.subscribe(self._on_event)
        self.debounce, self.retry, self.check_every = debounce, retry, check_every
        self.clock = clock
        self.recorder = events.EventRecorder(api, clock=clock)
        self.passes = 0
        """Completed passes (tests wait on it)."""
        self._dirty = asyncio.Event()
        self._parsed: dict[_Key, PairConfig | crd.InvalidPairObject] = {}
        self._resolved: dict[_Key, PairConfig] = {}
        """Parsed pairs with their routes' API groups decided, per object generation."""
        self._unroutable: dict[_Key, list[str]] = {}
        """Parsed pairs whose routes' API group is not served (until their spec changes)."""
        self._marked: dict[_Key, tuple[str, ...]] = {}
        """The problems last written to each invalid object's status."""

    async def _on_event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "MODIFIED" and _key(obj) in self._parsed:
            return  # a status write (ours, mostly): the spec of that generation is known
        self._dirty.set()

    async def run(self) -> None:
        """Wait for the CRD, watch its objects and serve their pairs, until cancelled."""
        while not await self._installed():  # noqa: ASYNC110 - polls the API server
            await asyncio.sleep(self.check_every)
        async with tasks.Tasks(name="pair objects", shutdown_timeout=5.0) as group:
            group.start("watch pair objects", self.watcher.run)
            await self.watcher.wait_synced()
            while True:
                await self._dirty.wait()
                await asyncio.sleep(self.debounce)
                self._dirty.clear()
                try:
                    await self.reconcile()
                except errors.API_ERRORS as exc:
                    log.warning("cannot serve the BlueGreenPair objects' changes yet; "
                                "trying again", error=str(exc)[:300])
                    asyncio.get_running_loop().call_later(self.retry, self._dirty.set)

    async def _installed(self) -> bool:
        """Whether the API server serves the resource (a failing check counts as not yet)."""
        try:
            await read_json(client.CustomObjectsApi(self.api).list_cluster_custom_object,
                            crd.GROUP, crd.VERSION, crd.PLURAL, limit=1)
        except errors.APINotFoundError:
            return False
        except errors.API_ERRORS as exc:
            log.warning("cannot list the BlueGreenPair objects; trying again",
                        error=str(exc)[:300])
            return False
        return True

    async def reconcile(self) -> None:
        """One pass: choose the pairs from the cached objects, mark the invalid ones, and
        serve the rest. An API error raises before anything is served (the served pairs
        stay as they were; `run` tries again)."""
        objects = {_key(obj): obj for obj in self.watcher.objects(crd.KIND)}
        found = pairobjects.choose(self.configured, objects.values(), parse=self._parse)
        key_of = {key[:2]: key for key in objects}
        chosen = [(pair, key_of[(pair.object_namespace or "", pair.name)])
                  for pair in found.pairs]
        rejected = list(found.rejected)
        served = {pair.name: pair for pair in self.controller.pairs.pairs()}
        pending = []
        for pair, key in chosen:
            if key in self._resolved or key in self._unroutable:
                continue
            current = served.get(pair.name)
            if current is not None and _same_spec(pair, current):
                self._resolved[key] = current  # served as it is (read at start): no call
            else:
                pending.append((pair, key))
        if pending:
            try:
                groups: frozenset[str] | None = await discovery.served_groups(self.api)
                refused: list[str] = []
            except discovery.RouteGroupError as exc:  # discovery refused (403): say so
                groups, refused = None, exc.problems
            for pair, key in pending:
                try:
                    if groups is None:
                        raise discovery.RouteGroupError(refused)
                    self._resolved[key] = await discovery.resolve_object_pair(
                        self.api, pair, groups)
                except discovery.RouteGroupError as error:
                    self._unroutable[key] = error.problems
        rejected += [pairobjects.Rejected(objects[key], self._unroutable[key])
                     for _pair, key in chosen if key in self._unroutable]
        self.controller.serve_pairs(
            [*self.configured, *(self._resolved[key] for _pair, key in chosen
                                 if key in self._resolved)])
        for gone in set(self._parsed) - set(objects):
            self._parsed.pop(gone, None)
            self._resolved.pop(gone, None)
            self._unroutable.pop(gone, None)
            self._marked.pop(gone, None)
        for one in rejected:
            await self._mark(one)
        self.passes += 1

    def _parse(self, obj: dict[str, Any]) -> PairConfig:
        key = _key(obj)
        parsed = self._parsed.get(key)
        if parsed is None:
            try:
                parsed = crd.parse_object(obj)
            except crd.InvalidPairObject as exc:
                parsed = exc
            self._parsed[key] = parsed
        if isinstance(parsed, crd.InvalidPairObject):
            raise parsed
        return parsed

    async def _mark(self, rejected: pairobjects.Rejected) -> None:
        """Write the object's Valid=False condition once per generation and problems."""
        key = _key(rejected.object)
        problems = tuple(rejected.problems)
        if self._marked.get(key) == problems:
            return
        log.error("BlueGreenPair skipped: its spec is invalid", object=rejected.ref,
                  problems=list(problems))
        await pairobjects.mark_rejected(self.api, rejected, clock=self.clock,
                                        recorder=self.recorder)
        self._marked[key] = problems
