"""StateStore: reads and writes every pair's record, an object pair's through
`ObjectRecords`, a configured pair's in the state ConfigMap."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes_asyncio import client

from gatekeeper import errors
from gatekeeper.config import PairConfig, StateConfig
from gatekeeper.kubeclient import ApiException, read_json
from gatekeeper.routers.base import ActiveState
from gatekeeper.state.objects import ObjectRecords
from gatekeeper.state.reconcile import reconcile_state
from gatekeeper.state.record import PairState, StateError, parse_record

log = structlog.get_logger()


MANAGED_BY = {"app.kubernetes.io/managed-by": "gatekeeper"}


def _name(pair: PairConfig | str) -> str:
    return pair if isinstance(pair, str) else pair.name


_write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())


def _write_lock(where: str) -> asyncio.Lock:
    """One lock per ConfigMap per event loop: every pair's state lives in one ConfigMap, so
    concurrent writers in this process would only conflict (409) with each other; 20
    simultaneous rollbacks used to exhaust the retries (bench/rollback.py)."""
    locks = _write_locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(where, asyncio.Lock())


@dataclass
class _SharedReads:
    """The ConfigMap GET in flight, which loads that start meanwhile share (one GET and
    one parse of every pair's record instead of one per pair: 1,000 pairs stepping at once
    made 1,000 GETs of a 1,000-record ConfigMap). `epoch` counts this process's writes; a
    GET is only shared while no write ended since it started, so a load never misses a
    write this process made before it."""

    epoch: int = 0
    inflight: tuple[int, asyncio.Task[dict[str, Any] | None]] | None = None


_shared_reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str],
                                                                        _SharedReads]] = (
    weakref.WeakKeyDictionary())


def _clear(shared: _SharedReads, done: asyncio.Task[Any]) -> None:
    """Forget a finished GET (its exception, if any, was passed to its callers)."""
    if shared.inflight is not None and shared.inflight[1] is done:
        shared.inflight = None
    if not done.cancelled():
        done.exception()  # retrieved: no "exception was never retrieved" warning


def _reads_of(host: str, where: str) -> _SharedReads:
    """The shared reads of one ConfigMap on one API server, per event loop."""
    reads = _shared_reads.setdefault(asyncio.get_running_loop(), {})
    return reads.setdefault((host, where), _SharedReads())



class StateStore:
    """Reads and writes each pair's record: an object pair's in its own object's status,
    a configured pair's in the state ConfigMap. One instance per API client."""

    def __init__(self, api: client.ApiClient, settings: StateConfig, *,
                 clock: Callable[[], float] = time.time, retries: int = 8) -> None:
        self.api = api
        self.settings = settings
        self.clock = clock
        self.retries = retries
        self.core = client.CoreV1Api(api)
        self.objects = ObjectRecords(api, clock=clock, retries=retries)

    async def _read(self) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await read_json(
                self.core.read_namespaced_config_map, self.settings.configmap,
                self.settings.namespace)
        except errors.APINotFoundError:
            return None
        except ApiException as exc:
            raise StateError(f"reading ConfigMap {self._where()}: HTTP {exc.status}") from exc
        return body

    def _where(self) -> str:
        return f"{self.settings.namespace}/{self.settings.configmap}"

    def _shared(self) -> _SharedReads:
        return _reads_of(str(getattr(self.api.configuration, "host", "")), self._where())

    async def _read_shared(self) -> dict[str, Any] | None:
        """`_read`, joining a GET already in flight unless this process wrote since it
        began (`_SharedReads`). The body is shared: read it, never change it."""
        shared = self._shared()
        inflight = shared.inflight
        if inflight is None or inflight[0] != shared.epoch or inflight[1].done():
            task = asyncio.create_task(self._read(), name=f"read {self._where()}")
            shared.inflight = inflight = (shared.epoch, task)
            task.add_done_callback(lambda done: _clear(shared, done))
        return await asyncio.shield(inflight[1])

    async def load(self, pair: PairConfig | str) -> PairState:
        """The pair's state; a fresh one when nothing was stored yet."""
        if isinstance(pair, PairConfig) and pair.object_namespace:
            return await self.objects.load(pair)
        body = await self._read_shared()
        return self._parse(body, _name(pair))

    async def load_configmap(self) -> dict[str, PairState]:
        """Every record in the state ConfigMap by pair name (the migration reads them)."""
        body = await self._read()
        names = sorted((body or {}).get("data") or {})
        return {name: self._parse(body, name) for name in names}

    def _parse(self, body: dict[str, Any] | None, name: str) -> PairState:
        """The stored record (see `parse_record`)."""
        raw = ((body or {}).get("data") or {}).get(name)
        if not raw:
            return PairState()
        return parse_record(raw, f"ConfigMap {self._where()} key {name!r}", name,
                             self.clock())

    async def update(self, pair: PairConfig | str,
                     mutate: Callable[[PairState], object]) -> PairState:
        """Read, apply `mutate` in place (may run more than once: keep it pure; its return
        value is ignored), write with the resourceVersion read; on 409 start over. Skips the
        write when nothing changed."""
        if isinstance(pair, PairConfig) and pair.object_namespace:
            async with _write_lock(f"{pair.object_namespace}/{pair.name}"):
                return await self.objects.update(pair, mutate)
        async with _write_lock(self._where()):
            return await self._update(_name(pair), mutate)

    async def publish(self, pair: PairConfig, *, verdict: str | None, score: float | None,
                      reasons: list[str], at: float, forbidden: list[str] | None = None
                      ) -> bool:
        """An object pair's verdict (None: none yet) and the reads RBAC refused in its
        status (`ObjectRecords.publish`); nothing for a pair of the configuration file
        (its verdict is in the API and the metrics)."""
        if not pair.object_namespace:
            return False
        return await self.objects.publish(pair, verdict=verdict, score=score,
                                          reasons=reasons, at=at, forbidden=forbidden)

    async def _update(self, name: str, mutate: Callable[[PairState], object]) -> PairState:
        for _attempt in range(self.retries):
            body = await self._read()
            state = self._parse(body, name)
            before = state.to_dict()
            mutate(state)
            after = state.to_dict()
            if after == before and body is not None:
                return state
            text = json.dumps(after, sort_keys=True, indent=1)
            try:
                if body is None:
                    await read_json(self.core.create_namespaced_config_map,
                                    self.settings.namespace, self._new_body(name, text))
                else:
                    body = copy.deepcopy(body)
                    body["data"] = {**(body.get("data") or {}), name: text}
                    await read_json(self.core.replace_namespaced_config_map,
                                    self.settings.configmap, self.settings.namespace, body)
            except errors.APIConflictError:
                log.debug("state write conflict; retrying", pair=name)
                continue
            except ApiException as exc:
                raise StateError(f"writing ConfigMap {self._where()}: HTTP {exc.status} "
                                 f"{exc.reason or ''}".strip()) from exc
            finally:
                self._shared().epoch += 1  # a GET started before now may miss this write
            return state
        raise StateError(f"ConfigMap {self._where()}: still conflicting after "
                         f"{self.retries} attempts")

    def _new_body(self, name: str, text: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.settings.configmap, "namespace": self.settings.namespace,
                         "labels": dict(MANAGED_BY)},
            "data": {name: text},
        }

    async def reconcile(self, pair: PairConfig, live: ActiveState) -> PairState:
        """Correct the stored state from the live routes (`routers.reading.read_active`).

        The store keeps records and reads no routes itself (the import contract in
        pyproject.toml): the caller reads them, as `Operations` does before every write.
        """
        now = self.clock()
        checked = live

        def mutate(state: PairState) -> None:
            reconcile_state(state, pair, checked, at=now, history=self.settings.history)

        state = await self.update(pair, mutate)
        log.info("state reconciled", pair=pair.name, active=state.active,
                 consistent=live.consistent)
        return state
