"""What the controller reads from the cluster about one pair: routes and Deployments.

Deployments and pods come from the watch cache (`watching.Watcher.listed`: one list+watch
per resource and namespace, not a list per pair per tick) while the streams that cover them
are listed and connected; otherwise, and without a cache, they are listed afresh. The
routes are always read afresh (a GET per route): which namespace takes traffic is the one
fact a decision must never take from a copy, and the GET is as cheap as a cache hit's
bookkeeping. Actions verify readiness with reads of their own before moving traffic.

A failed read becomes a problem in the answer, never an exception: the lifecycle fails
closed on it (no active namespace, a dark that cannot take traffic).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Protocol

from kubernetes_asyncio import client

from gatekeeper import environments, labels, watching
from gatekeeper.config import PairConfig
from gatekeeper.environments import Readiness
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.operations import CLUSTER_ERRORS
from gatekeeper.routers import reading
from gatekeeper.service.observing import LiveRead

__all__ = ["ObjectCache", "cached_readiness", "read_pair", "rollback_observation", "routed"]


class ObjectCache(Protocol):
    """The watch cache as the reads use it (`watching.Watcher`)."""

    def listed(self, resource: watching.Resource, namespace: str
               ) -> list[dict[str, Any]] | None:
        """A namespace's objects of a kind while current, else None."""
        ...


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


async def read_pair(api: client.ApiClient, pair: PairConfig,
                    cache: ObjectCache | None = None) -> LiveRead:
    """Live routes and both namespaces' Deployments (from `cache` while it is current);
    failures become problems."""
    try:
        active_state = await reading.read_active(api, pair)
    except CLUSTER_ERRORS as exc:
        problem = f"cannot read the routes: {type(exc).__name__}: {exc}"
        return LiveRead(active=None, problem=problem[:300])
    readiness: dict[str, Readiness | None] = {}
    errors: dict[str, str] = {}

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
            errors[namespace] = f"{type(exc).__name__}: {exc}"[:300]

    await asyncio.gather(*(one(namespace) for namespace in pair.namespaces))
    return LiveRead(active=active_state.active if active_state.consistent else None,
                    problem=active_state.problem or "", readiness=readiness, errors=errors,
                    last_switch=active_state.last_switch, exposed=active_state.exposed,
                    exposure_step=active_state.exposure_step,
                    mirrored=bool(active_state.mirrored))


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
