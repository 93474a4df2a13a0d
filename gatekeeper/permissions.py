"""Every Kubernetes API call gatekeeper makes, as RBAC (apiGroup, resource, verbs).

The ONE list: the Helm chart's Role/ClusterRole is tested against it, so a new API call
without a line here fails that test instead of failing in a cluster with 403. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatekeeper.routers.base import TRAEFIK_GROUPS

__all__ = ["PERMISSIONS", "Permission", "rbac_rules", "required"]


@dataclass(frozen=True)
class Permission:
    """One resource and the verbs gatekeeper uses on it, with who needs it and why."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    used_by: str
    why: str


_ROUTE_VERBS = ("get", "list", "watch", "patch")

PERMISSIONS: tuple[Permission, ...] = (
    *(
        Permission(group, resource, _ROUTE_VERBS, "routers, watching",
                   "read where traffic goes, flip it with a test-guarded JSON Patch, watch for "
                   "manual edits; get in the other group detects a twin object")
        for group in TRAEFIK_GROUPS
        for resource in ("ingressroutes", "traefikservices")
    ),
    Permission("apps", "deployments", ("list", "watch"),
               "environments, sources.kubernetes, watching",
               "replica counts, images and readiness of each namespace"),
    Permission("apps", "deployments/scale", ("patch",), "environments",
               "scale-up / scale-down through the scale subresource"),
    Permission("", "pods", ("list", "watch"),
               "environments, sources.kubernetes, sources.logs, watching",
               "every pod Ready before a flip; restarts; whose logs to read"),
    Permission("", "pods/log", ("get",), "sources.logs", "count error lines"),
    Permission("", "configmaps", ("get", "list", "create", "update"),
               "state, sources.kubernetes",
               "the state ConfigMap (optimistic concurrency); ConfigMap parity between "
               "the namespaces"),
    Permission("", "secrets", ("list",), "sources.kubernetes",
               "Secret parity between the namespaces (names and key hashes, never values)"),
    Permission("", "events", ("create",), "events",
               "an Event on the route for every flip, rollback and scale"),
    Permission("coordination.k8s.io", "leases", ("get", "create", "update"), "leadership",
               "leader election: only the Lease holder acts"),
)


def required(api_group: str, resource: str) -> frozenset[str]:
    """Verbs needed on one resource (empty when gatekeeper never touches it)."""
    return frozenset(verb for p in PERMISSIONS
                     if p.api_group == api_group and p.resource == resource for verb in p.verbs)


def rbac_rules() -> list[dict[str, Any]]:
    """RBAC `rules:` entries, one per (group, verbs) with the resources that share them."""
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for permission in PERMISSIONS:
        key = (permission.api_group, tuple(sorted(permission.verbs)))
        grouped.setdefault(key, []).append(permission.resource)
    return [
        {"apiGroups": [group], "resources": sorted(set(resources)), "verbs": list(verbs)}
        for (group, verbs), resources in sorted(grouped.items())
    ]
