"""Durable per-pair state, written with optimistic concurrency: in the pair's own
BlueGreenPair object's status, or (pairs of the configuration file) in one ConfigMap.

A pair read from a BlueGreenPair object (`PairConfig.object_namespace`) keeps its record in
that object's `status` (gatekeeper.crd.status_for): no object holds more than one pair's
state, so no write approaches the 1 MiB object limit however many pairs there are. A pair
of the configuration file keeps it in `data[<pair>]` of the state ConfigMap. Every write
carries the resourceVersion it read, so two writers never lose each other's change (409 ->
re-read, re-apply, retry). The live routes stay the truth: `reconcile` corrects the state
from them after a restart, so a crash between a route patch and the state write leaves
nothing inconsistent.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import structlog
from kubernetes_asyncio import client

from gatekeeper import crd, errors, lifecycle
from gatekeeper.config import PairConfig, StateConfig
from gatekeeper.kubeclient import ApiException, read_json
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.routers.base import ActiveState

log = structlog.get_logger()

MANAGED_BY = {"app.kubernetes.io/managed-by": "gatekeeper"}
SWITCH_KINDS = ("flip", "rollback")
LIFECYCLE_KEY = "lifecycle"
"""Where the record keeps the lifecycle's state (`lifecycle.ReleaseState`)."""


class StateError(Exception):
    """The state ConfigMap could not be read or written."""


@dataclass
class PairState:
    """One pair's persisted record: the release state and the audit trail. Times are Unix
    seconds.

    The one copy of phase, previous and the rest of the lifecycle's memory is `release`
    (a `lifecycle.ReleaseState`, stored under `lifecycle`); `phase`, `previous`, `active` and
    `dark` read it. Where traffic goes is the live routes' answer: `active` is only where
    the record last saw it, and every write first follows the routes (`reconcile_state`).
    """

    release: ReleaseState | None = None
    """The lifecycle's state; None when none was stored yet."""
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    """namespace -> `deployment/container` -> image."""
    timestamps: dict[str, float] = field(default_factory=dict)
    """deployed, flipped, rolled_back, scaled_up, scaled_down, approved, ..."""
    approvals: list[dict[str, Any]] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    """Production replica count per Deployment name, restored by the next scale-up."""
    counters: dict[str, int] = field(default_factory=dict)
    last_action: dict[str, Any] | None = None
    """id, kind, from, to, trigger, reason, at, status (started/done/failed/...)."""
    transitions: list[dict[str, Any]] = field(default_factory=list)
    """The last N changes, oldest first."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept so a newer writer's data survives."""
    unreadable: str | None = None
    """Why the stored record could not be read (this state is fresh; not stored itself)."""

    @property
    def phase(self) -> str:
        """The release phase (`idle` before the first observation)."""
        return self.release.phase if self.release else "idle"

    @property
    def previous(self) -> str | None:
        """Where a rollback returns traffic, as the lifecycle knows it (the routes' own
        switch record comes first: `routers.base.ActiveState.last_switch`)."""
        return self.release.previous if self.release else None

    @property
    def active(self) -> str | None:
        """Where the record last saw the traffic (the live routes are the truth)."""
        return self.release.active if self.release else None

    @property
    def dark(self) -> str | None:
        """The other namespace, as last seen."""
        return self.release.dark if self.release else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in the ConfigMap."""
        out: dict[str, Any] = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                               if f.name not in ("extra", "unreadable", "release")}
        if self.release is not None:
            out[LIFECYCLE_KEY] = self.release.to_dict()
        return {**copy.deepcopy(self.extra), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairState:
        """Parse stored JSON; unknown keys go to `extra`. ValueError naming the first field
        of the wrong type (a bad `kubectl edit`): nothing of such a record is trusted.

        A record from before the one-record change kept `active`, `dark`, `previous` and
        `phase` beside the lifecycle's own: they are dropped (the lifecycle's copy, or the
        routes, replace them), never kept as a second copy."""
        known = {f.name for f in fields(cls)} - {"extra", "unreadable", "release"}
        for name, value in data.items():
            if name in known and not _FIELD_TYPES[name](value):
                raise ValueError(f"field {name!r} has the wrong type "
                                 f"({type(value).__name__}: {json.dumps(value)[:80]})")
        release = None
        raw = data.get(LIFECYCLE_KEY)
        if raw is not None:
            if not isinstance(raw, dict):
                raise ValueError(f"field {LIFECYCLE_KEY!r} is a JSON {type(raw).__name__}, "
                                 "not an object")
            try:
                release = ReleaseState.from_dict(raw)
            except TypeError as exc:
                raise ValueError(f"field {LIFECYCLE_KEY!r}: {exc}") from exc
            except ValueError as exc:
                raise ValueError(f"field {LIFECYCLE_KEY!r}: {exc}") from exc
        values = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        extra = {k: copy.deepcopy(v) for k, v in data.items()
                 if k not in known and k != LIFECYCLE_KEY and k not in _LEGACY_KEYS}
        return cls(**values, release=release, extra=extra)

    def transition(self, kind: str, *, at: float, history: int, source: str | None = None,
                   target: str | None = None, **details: Any) -> dict[str, Any]:
        """Append an audit record (`from`, `to`, details) and keep only the last `history`."""
        fields_ = {"from": source, "to": target, **details}
        record = {"at": at, "kind": kind, **{k: v for k, v in fields_.items() if v is not None}}
        self.transitions.append(record)
        del self.transitions[:-history]
        return record

    def count(self, name: str) -> None:
        """Increment a counter (flips, rollbacks, conflicts...)."""
        self.counters[name] = self.counters.get(name, 0) + 1

    def begin(self, kind: str, *, at: float, source: str | None = None,
              target: str | None = None, trigger: str = "manual", reason: str = "",
              action_id: str | None = None, **details: Any) -> str:
        """Record an action as started before acting; a restart then knows it was attempted.

        `details` (e.g. the images and replica counts a switch records once done, and which
        process started it) let a restart finish the bookkeeping of an interrupted action.
        """
        action_id = action_id or uuid.uuid4().hex[:12]
        self.last_action = {**details, "id": action_id, "kind": kind, "from": source,
                            "to": target, "trigger": trigger, "reason": reason, "at": at,
                            "status": "started"}
        return action_id

    def completed(self, action: dict[str, Any], *, at: float, note: str) -> None:
        """A switch recorded as started is known to have reached its target (after a restart):
        the same bookkeeping as when it finishes normally."""
        kind, source, target = action.get("kind"), action.get("from"), action.get("to")
        self.switched(str(kind), source=str(source), target=str(target), at=at)
        if isinstance(action.get("images"), dict):
            self.images.update(copy.deepcopy(action["images"]))
        if isinstance(action.get("replicas"), dict):
            self.replicas.update(action["replicas"])
        self.last_action = {**action, "status": "done", "finished": at, "note": note}

    def finish(self, action_id: str, status: str, *, at: float) -> None:
        """Close the started action (done, failed, conflict, reverted...)."""
        if self.last_action and self.last_action.get("id") == action_id:
            self.last_action = {**self.last_action, "status": status, "finished": at}

    def switched(self, kind: str, *, source: str, target: str, at: float,
                 trigger: str = "manual", reason: str = "") -> None:
        """The routes now point at `target`: the lifecycle's step for a switch (a flip
        remembers `source` for a rollback, a rollback clears it)."""
        switch_kind: Literal["flip", "rollback"] = "flip" if kind == "flip" else "rollback"
        self.release = lifecycle.switched(self.release or ReleaseState(), switch_kind,
                                          source=source, target=target, trigger=trigger,
                                          reason=reason, now=at).state
        self.timestamps["flipped" if kind == "flip" else "rolled_back"] = at
        self.count(kind)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _map_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, dict) and all(
        isinstance(k, str) and check(v) for k, v in value.items())


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_of_maps(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


_FIELD_TYPES: dict[str, Callable[[Any], bool]] = {
    "images": _map_of(_map_of(lambda value: isinstance(value, str))),
    "timestamps": _map_of(_number),
    "approvals": _list_of_maps,
    "replicas": _map_of(_count),
    "counters": _map_of(_count),
    "last_action": lambda value: value is None or isinstance(value, dict),
    "transitions": _list_of_maps,
}
"""What each stored field must hold."""

_LEGACY_KEYS = ("active", "dark", "previous", "phase")
"""Copies of the lifecycle's fields a record kept before it had one copy of them."""

UNREADABLE_KEY = "unreadable_record"
"""Where a rebuilt record keeps the text it replaced (for a person to look at)."""


def reconcile_state(state: PairState, pair: PairConfig, live: ActiveState, *, at: float,
                    history: int, running: str | None = None) -> None:
    """Make `state` agree with the live routes (pure: no I/O).

    A switch left `started` by a crashed instance is completed when the routes show its
    target, else marked interrupted; `running` is the id of this process's own action.
    """
    action = state.last_action
    if action and action.get("status") == "started" and action.get("id") != running:
        kind, source, target = action.get("kind"), action.get("from"), action.get("to")
        if kind in SWITCH_KINDS and live.active == target and source and source != target:
            state.completed(action, at=at,
                            note="completed before a restart; reconciled from routes")
            state.transition("reconciled", at=at, history=history, source=source, target=target,
                             note=f"{kind} {action.get('id')} had patched the routes")
        else:
            state.last_action = {**action, "status": "interrupted", "finished": at}
    if not live.consistent or live.active is None:
        return
    last = live.last_switch
    seen = Observation(active=live.active, dark=pair.other(live.active),
                       switch_kind=last.kind if last else "",
                       switched_from=last.source if last else None,
                       switched_at=last.at if last else None)
    before = state.active
    if state.release is None and state.unreadable is not None:
        # The same rebuild the control loop makes: blocked until a person approves, the
        # other namespace able to take the traffic back.
        state.release = lifecycle.rebuilt(seen, at, state.unreadable)
    step = lifecycle.follow_routes(state.release or ReleaseState(), seen, at)
    if step is None:
        return
    state.release = step.state
    if before is not None:
        state.transition("reconciled", at=at, history=history, source=before,
                         target=live.active, note="routes changed outside gatekeeper"
                         if step.state.trigger == "manual" else step.state.reason)


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


def _parse_record(raw: Any, where: str, name: str, at: float) -> PairState:
    """A stored record; an unreadable one (not JSON, not an object, a field of the wrong
    type) is a fresh state saying why (`unreadable`), keeping the text it replaces for the
    next write: the live routes are the truth it is rebuilt from."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return PairState.from_dict(data)
    except (ValueError, TypeError, RecursionError) as exc:
        problem = f"{where} is not a readable state record: {exc}"
        log.error("state record unreadable; rebuilding it from the routes", pair=name,
                  error=problem)
        text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        return PairState(unreadable=problem,
                         extra={UNREADABLE_KEY: {"error": problem, "at": at,
                                                 "text": str(text)[:4096]}})


class ObjectRecords:
    """Each object pair's record in its own BlueGreenPair's status (the `status`
    subresource, written with the resourceVersion read)."""

    def __init__(self, api: client.ApiClient, *, clock: Callable[[], float] = time.time,
                 retries: int = 8) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.clock = clock
        self.retries = retries

    @staticmethod
    def _where(pair: PairConfig) -> str:
        return f"BlueGreenPair {pair.object_namespace}/{pair.name}"

    async def read(self, pair: PairConfig) -> dict[str, Any] | None:
        """The object (None when it is gone)."""
        try:
            body: dict[str, Any] = await read_json(
                self.objects.get_namespaced_custom_object, crd.GROUP, crd.VERSION,
                pair.object_namespace, crd.PLURAL, pair.name)
        except errors.APINotFoundError:
            return None
        except ApiException as exc:
            raise StateError(f"reading {self._where(pair)}: HTTP {exc.status}") from exc
        return body

    def _parse(self, body: dict[str, Any] | None, pair: PairConfig) -> PairState:
        raw = crd.record_of((body or {}).get("status"))
        if raw is None:
            return PairState()
        if set(raw) == {"record"}:  # not an object
            raw = raw["record"]
        return _parse_record(raw, f"{self._where(pair)} status.record", pair.name,
                             self.clock())

    async def load(self, pair: PairConfig) -> PairState:
        """The pair's record; a fresh one when none was written yet (or the object is gone:
        the next write says so)."""
        return self._parse(await self.read(pair), pair)

    async def update(self, pair: PairConfig, mutate: Callable[[PairState], object]
                     ) -> PairState:
        """Read, mutate, write the status with the resourceVersion read; on 409 start over."""
        for _attempt in range(self.retries):
            body = await self.read(pair)
            if body is None:
                raise StateError(f"{self._where(pair)} is gone: its record cannot be written")
            state = self._parse(body, pair)
            before = state.to_dict()
            mutate(state)
            after = state.to_dict()
            previous = body.get("status") or {}
            generation = (body.get("metadata") or {}).get("generation")
            status = crd.status_for(after, generation=generation, previous=previous,
                                    now=self.clock())
            if after == before and status == previous:
                return state
            body = {**body, "status": status}
            try:
                await read_json(self.objects.replace_namespaced_custom_object_status,
                                crd.GROUP, crd.VERSION, pair.object_namespace, crd.PLURAL,
                                pair.name, body)
            except errors.APIConflictError:
                log.debug("pair object status conflict; retrying", pair=pair.name)
                continue
            except errors.APINotFoundError as exc:
                raise StateError(f"{self._where(pair)} is gone: its record cannot be "
                                 "written") from exc
            except ApiException as exc:
                raise StateError(f"writing {self._where(pair)} status: HTTP {exc.status} "
                                 f"{exc.reason or ''}".strip()) from exc
            return state
        raise StateError(f"{self._where(pair)}: still conflicting after {self.retries} "
                         "attempts")

    async def publish(self, pair: PairConfig, *, verdict: str, score: float | None,
                      reasons: list[str], at: float) -> bool:
        """Show the dark's verdict in the status (summary fields, the Safe condition); no
        write when the verdict, the score in whole points and the reasons are what the
        status shows (a score drifting by tenths would write every tick). Returns whether it
        wrote."""
        for _attempt in range(self.retries):
            body = await self.read(pair)
            if body is None:
                return False
            previous = body.get("status") or {}
            shown = (previous.get("verdict"), previous.get("score"), previous.get("reasons"))
            rounded = None if score is None else float(round(score))
            if shown == (verdict, rounded, reasons[:10]):
                return False
            generation = (body.get("metadata") or {}).get("generation")
            status = crd.with_verdict(previous, verdict=verdict, score=score, reasons=reasons,
                                      generation=generation, at=at)
            try:
                await read_json(self.objects.replace_namespaced_custom_object_status,
                                crd.GROUP, crd.VERSION, pair.object_namespace, crd.PLURAL,
                                pair.name, {**body, "status": status})
            except errors.APIConflictError:
                continue
            except ApiException as exc:
                raise StateError(f"writing {self._where(pair)} status: HTTP "
                                 f"{exc.status}") from exc
            return True
        return False


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

    async def load(self, pair: PairConfig | str) -> PairState:
        """The pair's state; a fresh one when nothing was stored yet."""
        if isinstance(pair, PairConfig) and pair.object_namespace:
            return await self.objects.load(pair)
        body = await self._read()
        return self._parse(body, _name(pair))

    async def load_configmap(self) -> dict[str, PairState]:
        """Every record in the state ConfigMap by pair name (the migration reads them)."""
        body = await self._read()
        names = sorted((body or {}).get("data") or {})
        return {name: self._parse(body, name) for name in names}

    def _parse(self, body: dict[str, Any] | None, name: str) -> PairState:
        """The stored record (see `_parse_record`)."""
        raw = ((body or {}).get("data") or {}).get(name)
        if not raw:
            return PairState()
        return _parse_record(raw, f"ConfigMap {self._where()} key {name!r}", name,
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

    async def publish(self, pair: PairConfig, *, verdict: str, score: float | None,
                      reasons: list[str], at: float) -> bool:
        """An object pair's verdict in its status (`ObjectRecords.publish`); nothing for a
        pair of the configuration file (its verdict is in the API and the metrics)."""
        if not pair.object_namespace:
            return False
        return await self.objects.publish(pair, verdict=verdict, score=score,
                                          reasons=reasons, at=at)

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
