"""Which watch streams the pairs need: a resource kind in a namespace, or cluster-wide.

Pure data and one planning function (`targets_for`); the streams themselves run in
`watching.streams`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from gatekeeper.config import PairConfig, RouteRef

__all__ = ["ALL_NAMESPACES", "DEPLOYMENTS", "PODS", "ROUTE_VERSION", "Resource", "Scope",
           "Target", "route_resource", "targets_for"]

_ROUTE_PLURALS = {"IngressRoute": "ingressroutes", "TraefikService": "traefikservices"}
ROUTE_VERSION = "v1alpha1"
ALL_NAMESPACES = ""
"""A target's namespace when it watches every namespace (no namespace is called "")."""
Scope = Literal["auto", "namespaces", "cluster"]


@dataclass(frozen=True, order=True)
class Resource:
    """A kind of object and where the API serves it."""

    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        """`v1`, `apps/v1`, `traefik.io/v1alpha1`."""
        return f"{self.group}/{self.version}" if self.group else self.version


PODS = Resource("Pod", "", "v1", "pods")
DEPLOYMENTS = Resource("Deployment", "apps", "v1", "deployments")


def route_resource(ref: RouteRef) -> Resource:
    """The custom resource a route reference names, in its configured API group."""
    return Resource(ref.kind, ref.api_group, ROUTE_VERSION, _ROUTE_PLURALS[ref.kind])


@dataclass(frozen=True, order=True)
class Target:
    """One watch stream: all objects of a resource in one namespace, or (namespace
    `ALL_NAMESPACES`) in every namespace, of which those in `kept` are cached."""

    resource: Resource
    namespace: str
    kept: tuple[str, ...] = field(default=(), compare=False)
    """The namespaces whose objects a cluster-wide stream keeps (sorted)."""
    keep_all: bool = field(default=False, compare=False)
    """A cluster-wide stream that keeps every namespace's objects (the BlueGreenPair
    objects, which may be declared anywhere)."""

    @property
    def cluster_wide(self) -> bool:
        """True when the stream lists and watches every namespace."""
        return self.namespace == ALL_NAMESPACES

    def keeps(self, namespace: str) -> bool:
        """Whether an object in `namespace` belongs in the cache."""
        if not self.cluster_wide:
            return namespace == self.namespace
        return self.keep_all or namespace in self.kept

    def __str__(self) -> str:
        group = f".{self.resource.group}" if self.resource.group else ""
        where = "*" if self.cluster_wide else self.namespace
        return f"{self.resource.plural}{group}/{where}"


def targets_for(pairs: Iterable[PairConfig], *, scope: Scope = "namespaces",
                max_streams: int | None = None) -> tuple[Target, ...]:
    """Pods and Deployments of both namespaces of every pair, and every route's kind in its
    namespace; each stream once, however many pairs share it.

    With scope `cluster`, or `auto` and more of those streams than `max_streams`, one
    cluster-wide stream per resource kind instead, keeping the same namespaces.
    """
    found: set[Target] = set()
    for pair in pairs:
        for namespace in pair.namespaces:
            found.add(Target(PODS, namespace))
            found.add(Target(DEPLOYMENTS, namespace))
        for ref in pair.routes:
            found.add(Target(route_resource(ref), ref.namespace))
    crowded = max_streams is not None and len(found) > max_streams
    if scope == "cluster" or (scope == "auto" and crowded):
        kept: dict[Resource, set[str]] = {}
        for target in found:
            kept.setdefault(target.resource, set()).add(target.namespace)
        found = {Target(resource, ALL_NAMESPACES, tuple(sorted(namespaces)))
                 for resource, namespaces in kept.items()}
    return tuple(sorted(found))
