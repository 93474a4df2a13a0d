"""The router interface and what routers report about the live route objects.

Flagger's `router.go` in small: every router kind reads a route and switches it from one
namespace to another with a guarded patch. Data classes here do no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from gatekeeper.config import RouteRef
from gatekeeper.switches import SwitchRecord

TRAEFIK_VERSION = "v1alpha1"
TRAEFIK_GROUPS = ("traefik.io", "traefik.containo.us")
JSON_PATCH = "application/json-patch+json"
ROUTE_PLURALS = {"IngressRoute": "ingressroutes", "TraefikService": "traefikservices"}
"""The resource (plural) name of each route kind in the Traefik API groups."""

# Flux marks what it applies with these labels; it reverts direct edits at its next sync.
FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/name")
# ...unless told to leave the object alone after creating it.
FLUX_HANDS_OFF = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent",
    "helm.toolkit.fluxcd.io/reconcile": "disabled",
}


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
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    weights: dict[str, int] | None = None
    """TraefikService only: weight per namespace (entries of weight 0 included)."""
    also_in_group: str | None = None
    """The other Traefik API group holds an object of the same name too (ambiguous)."""
    mirroring: dict[str, Any] | None = None
    """TraefikService in gatekeeper's mirroring form: {"from", "to", "percent"}."""
    exposure: dict[str, Any] | None = None
    """TraefikService split by gatekeeper's progressive step: {"active", "dark", "percent",
    "step"}; `namespaces` then holds both, yet users are mostly on `active`."""

    @property
    def ref(self) -> str:
        """`IngressRoute routing/api-live` for messages."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def api_version(self) -> str:
        """`traefik.io/v1alpha1`, for Events' involvedObject."""
        return f"{self.api_group}/{TRAEFIK_VERSION}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form for status output."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "apiGroup": self.api_group,
            "resourceVersion": self.resource_version,
            "pointsTo": sorted(self.namespaces),
        }
        if self.weights is not None:
            out["weights"] = dict(self.weights)
        if self.also_in_group:
            out["alsoInGroup"] = self.also_in_group
        if self.mirroring is not None:
            out["mirroring"] = dict(self.mirroring)
        if self.exposure is not None:
            out["exposure"] = dict(self.exposure)
        return out


@dataclass(frozen=True)
class RouteSnapshot:
    """A route as read: the view and the raw body a guarded patch is computed from."""

    ref: RouteRef
    view: RouteView
    body: dict[str, Any]


@dataclass(frozen=True)
class ActiveState:
    """The pair's active namespace as the routes say; `active` is None when they disagree."""

    active: str | None
    routes: tuple[RouteView, ...]
    problem: str | None = None
    snapshots: tuple[RouteSnapshot, ...] = ()
    last_switch: SwitchRecord | None = None
    """The routes' record of the switch that sent traffic to `active` (see `switches`)."""

    @property
    def exposed(self) -> int:
        """The largest percent of users a progressive step of gatekeeper's sends to the
        dark on some route (0: none)."""
        return max((int(v.exposure.get("percent", 0)) for v in self.routes
                    if v.exposure is not None), default=0)

    @property
    def exposure_step(self) -> int:
        """The progressive step the routes carry (0: none)."""
        return max((int(v.exposure.get("step", 0)) for v in self.routes
                    if v.exposure is not None), default=0)

    @property
    def mirrored(self) -> tuple[RouteView, ...]:
        """Routes in gatekeeper's mirroring form."""
        return tuple(v for v in self.routes if v.mirroring is not None)

    @property
    def consistent(self) -> bool:
        """True when every route points at the same single namespace of the pair."""
        return self.active is not None and self.problem is None


def at(snapshot: RouteSnapshot, namespace: str) -> bool:
    """The route sends users to `namespace` only, or it is gatekeeper's progressive split
    from `namespace` (users mostly still there; a flip or a rollback ends it in one patch)."""
    view = snapshot.view
    if view.namespaces == frozenset({namespace}):
        return True
    return view.exposure is not None and view.exposure.get("active") == namespace


def users_on(view: RouteView) -> frozenset[str]:
    """Where the route's users are, for deciding the active namespace: a split gatekeeper
    owns counts as its active namespace (it is not an inconsistency)."""
    if view.exposure is not None:
        return frozenset({str(view.exposure.get("active"))})
    return view.namespaces


class RouteError(Exception):
    """A route could not be read or switched; `ref` names it."""

    def __init__(self, ref: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{ref}: {message}")
        self.ref = ref
        self.status = status


class RouteConflict(RouteError):
    """The route changed since it was read (HTTP 409/422 on a test-guarded patch)."""


class RouteRefused(RouteError):
    """Gatekeeper must not patch this route (e.g. Flux owns it)."""


class Router(Protocol):
    """One kind of route object. Implementations are stateless besides the API client."""

    kind: ClassVar[str]

    async def read(self, ref: RouteRef) -> RouteSnapshot:
        """Fetch the route and say where it points."""
        ...

    def refusal(self, snapshot: RouteSnapshot) -> str | None:
        """Why gatekeeper must not patch this route, or None."""
        ...

    async def switch(self, snapshot: RouteSnapshot, *, source: str, target: str,
                     annotations: Mapping[str, str | None] | None = None) -> RouteSnapshot:
        """Point the route from `source` to `target`, setting (or, for None, removing) the
        given annotations in the same patch; RouteConflict if it changed meanwhile."""
        ...


def flux_owner(labels: dict[str, str], annotations: dict[str, str]) -> str | None:
    """The Flux object that reverts direct edits of this route, or None."""
    for key, value in FLUX_HANDS_OFF.items():
        if annotations.get(key) == value:
            return None
    for label in FLUX_LABELS:
        if label in labels:
            namespace = labels.get(label.replace("/name", "/namespace"), "")
            kind = "Kustomization" if label.startswith("kustomize") else "HelmRelease"
            return f"{kind} {namespace + '/' if namespace else ''}{labels[label]}"
    return None
