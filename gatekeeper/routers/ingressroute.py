"""Traefik IngressRoute router: the active namespace is where the route's services point."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from gatekeeper.config import RouteRef
from gatekeeper.routers.base import TRAEFIK_VERSION, RouteView

PLURAL = "ingressroutes"


def service_namespaces(body: dict[str, Any], *, service: str | None = None) -> frozenset[str]:
    """Namespaces the route's services point at (a service without one uses the route's)."""
    own = body.get("metadata", {}).get("namespace", "")
    found = set()
    for route in body.get("spec", {}).get("routes", []) or []:
        for svc in route.get("services", []) or []:
            if service is not None and svc.get("name") != service:
                continue
            if svc.get("kind", "Service") != "Service":
                continue
            found.add(svc.get("namespace") or own)
    return frozenset(found)


async def read(api: client.ApiClient, ref: RouteRef) -> tuple[RouteView, dict[str, Any]]:
    """Fetch the IngressRoute; return what it says and the raw body (for patches)."""
    objects = client.CustomObjectsApi(api)
    body = await objects.get_namespaced_custom_object(
        ref.api_group, TRAEFIK_VERSION, ref.namespace, PLURAL, ref.name
    )
    metadata = body.get("metadata", {})
    view = RouteView(
        kind="IngressRoute",
        namespace=ref.namespace,
        name=ref.name,
        api_group=ref.api_group,
        resource_version=str(metadata.get("resourceVersion", "")),
        namespaces=service_namespaces(body, service=ref.service),
        labels=dict(metadata.get("labels") or {}),
    )
    return view, body
