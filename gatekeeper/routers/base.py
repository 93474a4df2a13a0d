"""What a router reports about the live route objects."""

from __future__ import annotations

from dataclasses import dataclass, field

TRAEFIK_VERSION = "v1alpha1"


@dataclass(frozen=True)
class RouteView:
    """One live route object: where its services point, and its resourceVersion."""

    kind: str
    namespace: str
    name: str
    api_group: str
    resource_version: str
    namespaces: frozenset[str]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """`IngressRoute routing/api-live` for messages."""
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class ActiveState:
    """The pair's active namespace as the routes say; `active` is None when they disagree."""

    active: str | None
    routes: tuple[RouteView, ...]
    problem: str | None = None

    @property
    def consistent(self) -> bool:
        """True when every route points at the same single namespace of the pair."""
        return self.active is not None and self.problem is None
