"""Traefik IngressRoute router: the active namespace is where the route's services point.

A switch is one JSON Patch that first tests the resourceVersion and every switched
service's current namespace, so a concurrent edit fails (409/422) instead of being lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gatekeeper.config import RouteRef
from gatekeeper.routers import traefik
from gatekeeper.routers.base import (
    RouteConflict,
    RouteSnapshot,
    RouteView,
)


def _switched(body: dict[str, Any], service: str | None) -> list[tuple[int, int, dict[str, Any]]]:
    """(route index, service index, service) of every Service entry the pair switches."""
    found = []
    for i, route in enumerate(body.get("spec", {}).get("routes", []) or []):
        for j, svc in enumerate(route.get("services", []) or []):
            if service is not None and svc.get("name") != service:
                continue
            if svc.get("kind", "Service") != "Service":
                continue
            found.append((i, j, svc))
    return found


def service_namespaces(body: dict[str, Any], *, service: str | None = None) -> frozenset[str]:
    """Namespaces the route's services point at (a service without one uses the route's)."""
    own = body.get("metadata", {}).get("namespace", "")
    return frozenset(svc.get("namespace") or own for _, _, svc in _switched(body, service))


def view_of(ref: RouteRef, body: dict[str, Any], *, also_in_group: str | None = None) -> RouteView:
    """What an IngressRoute body says."""
    version, uid, labels, annotations = traefik.metadata(body)
    return RouteView(
        kind="IngressRoute",
        namespace=ref.namespace,
        name=ref.name,
        api_group=ref.api_group,
        resource_version=version,
        namespaces=service_namespaces(body, service=ref.service),
        labels=labels,
        annotations=annotations,
        uid=uid,
        also_in_group=also_in_group,
    )


def switch_ops(body: dict[str, Any], *, source: str, target: str,
               service: str | None = None) -> list[dict[str, Any]]:
    """JSON Patch moving every switched service from `source` to `target`, test-guarded."""
    own = body.get("metadata", {}).get("namespace", "")
    ops = traefik.guard(body)
    for i, j, svc in _switched(body, service):
        path = f"/spec/routes/{i}/services/{j}"
        ops.append({"op": "test", "path": f"{path}/name", "value": svc.get("name")})
        if "namespace" in svc:
            ops.append({"op": "test", "path": f"{path}/namespace", "value": svc["namespace"]})
            ops.append({"op": "replace", "path": f"{path}/namespace", "value": target})
        else:
            if own != source:
                raise ValueError(f"service {svc.get('name')!r} points at {own}, not {source}")
            ops.append({"op": "add", "path": f"{path}/namespace", "value": target})
    return ops


class IngressRouteRouter(traefik.TraefikRouter):
    """Reads and switches an IngressRoute by patching its services' namespace."""

    kind: ClassVar[str] = "IngressRoute"
    view_of = staticmethod(view_of)

    flux_reverts: ClassVar[str] = (
        "a direct patch would be reverted at its next reconciliation. Point the IngressRoute "
        "in git at a weighted TraefikService that gatekeeper owns and configure the pair's "
        "route with kind: TraefikService (docs/cluster-control.md)")

    async def switch(self, snapshot: RouteSnapshot, *, source: str, target: str,
                     annotations: Mapping[str, str | None] | None = None) -> RouteSnapshot:
        """One test-guarded JSON Patch (the annotations included); RouteConflict if anything
        moved since the read."""
        self.ensure_patchable(snapshot)
        if snapshot.view.namespaces != frozenset({source}):
            raise RouteConflict(snapshot.view.ref, f"points at {sorted(snapshot.view.namespaces)},"
                                f" not {source}")
        ops = switch_ops(snapshot.body, source=source, target=target,
                         service=snapshot.ref.service)
        ops += traefik.annotation_ops(snapshot.body, annotations)
        return await self.patched(snapshot, ops)
