"""Read every route of a pair and decide which namespace is active (or that it is unclear)."""

from __future__ import annotations

import asyncio

import structlog
from kubernetes_asyncio import client

from gatekeeper import switches
from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.routers.base import ActiveState, Router, RouteSnapshot, RouteView, users_on
from gatekeeper.routers.ingressroute import IngressRouteRouter
from gatekeeper.routers.traefikservice import TraefikServiceRouter

log = structlog.get_logger()

ROUTERS: dict[str, type[IngressRouteRouter] | type[TraefikServiceRouter]] = {
    IngressRouteRouter.kind: IngressRouteRouter,
    TraefikServiceRouter.kind: TraefikServiceRouter,
}


def router_for(api: client.ApiClient, ref: RouteRef) -> Router:
    """The router for the route's kind (the configuration only allows known kinds)."""
    try:
        return ROUTERS[ref.kind](api)
    except KeyError:
        raise ValueError(f"no router for kind {ref.kind!r}") from None


async def read_snapshot(api: client.ApiClient, ref: RouteRef) -> RouteSnapshot:
    """One route, read by its router; warns when both Traefik API groups hold it."""
    snapshot = await router_for(api, ref).read(ref)
    if snapshot.view.also_in_group:
        log.warning(
            "route exists in both traefik API groups; Traefik >= 2.10 ignores traefik.containo.us",
            route=snapshot.view.ref, configured=ref.api_group, other=snapshot.view.also_in_group,
        )
    return snapshot


async def read_route(api: client.ApiClient, ref: RouteRef) -> RouteView:
    """One route's view, by kind."""
    return (await read_snapshot(api, ref)).view


def decide(pair: PairConfig, snapshots: tuple[RouteSnapshot, ...]) -> ActiveState:
    """All routes must point at one and the same namespace of the pair (a progressive split
    gatekeeper owns counts as its active namespace)."""
    views = tuple(s.view for s in snapshots)
    pointed: set[str] = set().union(*(users_on(view) for view in views))
    everywhere: set[str] = set().union(*(view.namespaces for view in views))
    outside = everywhere - set(pair.namespaces)
    if outside:
        return ActiveState(None, views, f"routes point outside the pair: {sorted(outside)}",
                           snapshots)
    empty = [v.ref for v in views if not v.namespaces]
    if empty:
        return ActiveState(None, views, f"routes point at no namespace: {', '.join(empty)}",
                           snapshots)
    if len(pointed) != 1:
        detail = "; ".join(f"{v.ref} -> {', '.join(sorted(users_on(v)))}" for v in views)
        return ActiveState(None, views, f"routes disagree on the active namespace: {detail}",
                           snapshots)
    active = next(iter(pointed))
    record = switches.latest((v.annotations for v in views), active=active,
                             namespaces=pair.namespaces)
    return ActiveState(active, views, None, snapshots, last_switch=record)


async def read_active(api: client.ApiClient, pair: PairConfig) -> ActiveState:
    """Read the pair's routes concurrently and decide; RouteError when one is unreadable."""
    snapshots = await asyncio.gather(*(read_snapshot(api, ref) for ref in pair.routes))
    return decide(pair, tuple(snapshots))
