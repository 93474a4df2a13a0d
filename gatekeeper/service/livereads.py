"""What the controller reads from the cluster about one pair: routes and Deployments.

Deployments and pods come from the watch cache (`watching.Watcher.listed`: one list+watch
per resource and namespace, not a list per pair per tick) while the streams that cover them
are listed and connected; otherwise, and without a cache, they are listed afresh.

The routes come from the same cache under the same rule, and one more: a cached answer is
only taken when it says what the pair's record expects (`Expected`: the active namespace
and the progressive step). A route change, whoever made it (a person's kubectl, this
process's own flip whose watch event has not arrived yet, another replica), is therefore
always confirmed by a fresh GET before the lifecycle acts on it or a verdict is judged on
it. The first read of a pair, and one every `ROUTE_RESYNC` seconds, are fresh too: they
notice a twin of the route in the other Traefik API group (a GET the cache cannot answer).
Guarded patches, the checks right before an action, and actions' own readiness checks
always read afresh (`actions`, `routed`, `rollback_observation`).

A failed read becomes a problem in the answer, never an exception: the lifecycle fails
closed on it (no active namespace, a dark that cannot take traffic).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from kubernetes_asyncio import client

from gatekeeper import environments, labels, permissions, watching
from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.environments import Readiness
from gatekeeper.kubeclient import ApiException
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.operations import CLUSTER_ERRORS
from gatekeeper.routers import reading
from gatekeeper.routers.base import ActiveState, RouteSnapshot
from gatekeeper.service.observing import LiveRead

__all__ = ["ROUTE_RESYNC", "Expected", "ObjectCache", "RouteMemory", "cached_readiness",
           "cached_routes", "read_pair", "rollback_observation", "routed"]

ROUTE_RESYNC = 300.0
"""Seconds (give or take a quarter) between fresh reads of a pair's routes while the cache
could answer them."""


class ObjectCache(Protocol):
    """The watch cache as the reads use it (`watching.Watcher`)."""

    def listed(self, resource: watching.Resource, namespace: str
               ) -> list[dict[str, Any]] | None:
        """A namespace's objects of a kind while current, else None."""
        ...

    def named(self, resource: watching.Resource, namespace: str, name: str
              ) -> dict[str, Any] | None:
        """One object while current, else None (absent too)."""
        ...


class Expected(NamedTuple):
    """What the pair's record says the routes carry: a cached read saying otherwise is
    confirmed by a fresh one."""

    active: str | None
    exposure_step: int = 0


@dataclass
class RouteMemory:
    """What the fresh route reads learned, for the cached ones that follow."""

    twins: dict[tuple[str, str, str, str], str | None] = field(default_factory=dict)
    """(kind, group, namespace, name) -> the other Traefik API group holding the same name."""
    due_at: dict[str, float] = field(default_factory=dict)
    """Pair -> when its routes are to be read afresh again (`clock`): ROUTE_RESYNC after
    the last fresh read, give or take a quarter, so the pairs read at start do not all come
    due in the same tick."""
    clock: Callable[[], float] = time.monotonic

    def due(self, pair: PairConfig) -> bool:
        """The pair's routes must be read afresh: never read, or their resync is due."""
        due_at = self.due_at.get(pair.name)
        return due_at is None or self.clock() >= due_at

    def forget(self, pair: PairConfig) -> None:
        """Read the pair's routes afresh next time."""
        self.due_at.pop(pair.name, None)

    def learn(self, pair: PairConfig, state: ActiveState) -> None:
        """Note a fresh read's twins and time."""
        for snapshot in state.snapshots:
            self.twins[_route_key(snapshot.ref)] = snapshot.view.also_in_group
        self.due_at[pair.name] = self.clock() + ROUTE_RESYNC * random.uniform(0.75, 1.25)


def _route_key(ref: RouteRef) -> tuple[str, str, str, str]:
    return ref.kind, ref.api_group, ref.namespace, ref.name


def cached_routes(cache: ObjectCache, pair: PairConfig, memory: RouteMemory
                  ) -> ActiveState | None:
    """The pair's routes decided from the cache as `reading.read_active` decides them from
    GETs; None when the cache cannot answer for every route (not current, absent) or a
    fresh read is due."""
    if memory.due(pair):
        return None
    snapshots = []
    for ref in pair.routes:
        body = cache.named(watching.route_resource(ref), ref.namespace, ref.name)
        key = _route_key(ref)
        if body is None or key not in memory.twins:
            return None
        view = reading.ROUTERS[ref.kind].view_of(ref, body, also_in_group=memory.twins[key])
        snapshots.append(RouteSnapshot(ref, view, body))
    return reading.decide(pair, tuple(snapshots))


def cached_readiness(cache: ObjectCache, pair: PairConfig, namespace: str
                     ) -> Readiness | None:
    """The namespace's readiness from the cache, as `environments.read_readiness` reads it
    from the API server; None when the cache cannot answer (not current, or a
    `deployment_selector` this side cannot parse)."""
    deployments = cache.listed(watching.DEPLOYMENTS, namespace)
    pods = cache.listed(watching.PODS, namespace)
    if deployments is None or pods is None:
        return None
    deployment_selector, _ = environments.selectors(pair, None)
    try:
        match = labels.matcher(deployment_selector)
    except ValueError:
        return None
    chosen = [d for d in deployments
              if match((d.get("metadata") or {}).get("labels") or {})]
    return environments.readiness_of(namespace, chosen, pods, pair=pair,
                                     deployment_selector=deployment_selector)


async def read_routes(api: client.ApiClient, pair: PairConfig, cache: ObjectCache | None,
                      memory: RouteMemory | None, expected: Expected | None
                      ) -> tuple[ActiveState, bool]:
    """The pair's routes and whether they came from the cache: from it while it is current
    and says what `expected` says (no expectation: never), else read afresh (CLUSTER_ERRORS
    when they cannot be)."""
    if cache is not None and memory is not None and expected is not None:
        cached = cached_routes(cache, pair, memory)
        if cached is not None and cached.consistent and \
                Expected(cached.active, cached.exposure_step) == expected:
            return cached, True
    state = await reading.read_active(api, pair)
    if memory is not None:
        memory.learn(pair, state)
    return state, False


async def read_pair(api: client.ApiClient, pair: PairConfig,
                    cache: ObjectCache | None = None, *, memory: RouteMemory | None = None,
                    expected: Expected | None = None) -> LiveRead:
    """The routes and both namespaces' Deployments (from `cache` while it is current, the
    routes only while they also say what `expected` says); failures become problems."""
    try:
        active_state, cached = await read_routes(api, pair, cache, memory, expected)
    except CLUSTER_ERRORS as exc:
        problem = f"cannot read the routes: {type(exc).__name__}: {exc}"
        return LiveRead(active=None, problem=problem[:300],
                        forbidden=refused(exc, pair.routes[0].namespace))
    readiness: dict[str, Readiness | None] = {}
    problems: dict[str, str] = {}
    forbidden: list[str] = []

    async def one(namespace: str) -> None:
        cached = cached_readiness(cache, pair, namespace) if cache is not None else None
        if cached is not None:
            readiness[namespace] = cached
            return
        try:
            readiness[namespace] = await environments.read_readiness(
                api, namespace, pair=pair)
        except CLUSTER_ERRORS as exc:
            readiness[namespace] = None
            problems[namespace] = f"{type(exc).__name__}: {exc}"[:300]
            forbidden.extend(refused(exc, namespace))

    await asyncio.gather(*(one(namespace) for namespace in pair.namespaces))
    return LiveRead(active=active_state.active if active_state.consistent else None,
                    problem=active_state.problem or "", readiness=readiness, errors=problems,
                    forbidden=tuple(sorted(forbidden)),
                    last_switch=active_state.last_switch, exposed=active_state.exposed,
                    exposure_step=active_state.exposure_step,
                    mirrored=bool(active_state.mirrored), routes_cached=cached)


def refused(exc: BaseException, namespace: str) -> tuple[str, ...]:
    """What RBAC refused, when `exc` is a 403 ("list pods in namespace X"); else ()."""
    if not isinstance(exc, ApiException) or exc.status != 403:
        return ()
    message = ""
    try:
        body = json.loads(exc.body or b"{}")
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except ValueError:
        pass
    return (permissions.forbidden_call(message, namespace),)


async def routed(api: client.ApiClient, pair: PairConfig) -> str | None:
    """The namespace the routes send traffic to now (None: split or unreadable)."""
    try:
        return (await reading.read_active(api, pair)).active
    except CLUSTER_ERRORS:
        return None


async def rollback_observation(api: client.ApiClient, pair: PairConfig, state: ReleaseState,
                               cached: Observation | None) -> Observation:
    """The cached observation, with the rollback target's readiness read live now.

    The cache may predate a flip made moments ago; whether the previous namespace can
    take traffic is worth one read (a few milliseconds) before deciding.
    """
    base = cached or Observation(active=None, dark=None)
    target = state.previous
    if target is None:
        return base
    try:
        readiness = await environments.read_readiness(api, target, pair=pair)
    except CLUSTER_ERRORS as exc:
        return replace(base, active=state.active, dark=target, dark_ready=False,
                       dark_problem=f"cannot read {target}: {type(exc).__name__}")
    return replace(base, active=state.active, dark=target, dark_ready=readiness.ready,
                   dark_replicas=sum(d.replicas for d in readiness.deployments),
                   dark_problem="; ".join(readiness.reasons[:3]))
