"""Map a Kubernetes REST URL to what it addresses, and a request to its API verb.

Parsing by hand (instead of many router patterns) keeps the ambiguous shapes, e.g.
`/api/v1/namespaces/{name}` vs `/api/v1/namespaces/{ns}/{plural}`, in one readable place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import resource_not_found
from .resources import Registry, ResourceType

BUILT_IN = Registry()
"""The built-in resources only (for parsing recorded paths outside a server)."""


@dataclass(frozen=True)
class Target:
    """What a URL addresses: discovery, a collection, an object or a subresource."""

    group: str
    version: str
    resource: ResourceType | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def is_discovery(self) -> bool:
        """True for `/api/v1` and `/apis/{group}/{version}` themselves."""
        return self.resource is None


def parse(path: str, registry: Registry | None = None) -> Target:
    """Parse `/api/v1/...` or `/apis/{group}/{version}/...` against the resources REGISTRY
    serves (default: the built-in ones); 404 ApiError if unknown."""
    served = registry or BUILT_IN
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise resource_not_found()
    if not rest:
        if served.resource_list_doc(group, version) is None:
            raise resource_not_found()
        return Target(group, version)
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = served.by_path(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = served.by_path(group, version, rest[0])
    if rt is None or len(rest) > 3:
        raise resource_not_found()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rt.subresources:
        raise resource_not_found()
    if rt.namespaced and namespace is None and name is not None:
        raise resource_not_found()
    return Target(group, version, rt, namespace, name, sub)


def is_watch(query: Mapping[str, str]) -> bool:
    """`watch=true` or `watch=1`, as clients send it."""
    return query.get("watch", "").lower() in ("true", "1")


def verb(method: str, target: Target, query: Mapping[str, str]) -> str:
    """The Kubernetes verb (get, list, watch, create, update, patch, delete, ...)."""
    method = method.upper()
    if target.is_discovery:
        return "get"
    if target.name is None:
        if method == "GET":
            return "watch" if is_watch(query) else "list"
        return {"POST": "create", "DELETE": "deletecollection"}.get(method, method.lower())
    return {
        "GET": "get",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
        "POST": "create",
    }.get(method, method.lower())
