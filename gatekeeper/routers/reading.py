"""Read every route of a pair and decide which namespace is active (or that it is unclear)."""

from __future__ import annotations

from kubernetes_asyncio import client

from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.routers import ingressroute
from gatekeeper.routers.base import ActiveState, RouteView


async def read_route(api: client.ApiClient, ref: RouteRef) -> RouteView:
    """One route's view, by kind."""
    if ref.kind == "IngressRoute":
        view, _ = await ingressroute.read(api, ref)
        return view
    raise NotImplementedError(f"router kind {ref.kind} is not available yet")


async def read_active(api: client.ApiClient, pair: PairConfig) -> ActiveState:
    """All routes must point at one and the same namespace of the pair."""
    views = tuple([await read_route(api, ref) for ref in pair.routes])
    pointed = set().union(*(view.namespaces for view in views))
    outside = pointed - set(pair.namespaces)
    if outside:
        return ActiveState(None, views, f"routes point outside the pair: {sorted(outside)}")
    if len(pointed) != 1:
        detail = "; ".join(f"{v.ref} -> {sorted(v.namespaces) or 'nothing'}" for v in views)
        return ActiveState(None, views, f"routes disagree on the active namespace: {detail}")
    return ActiveState(next(iter(pointed)), views)
