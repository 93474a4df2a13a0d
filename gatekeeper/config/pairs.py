"""A blue/green pair: its namespaces, its routes and the settings of its own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from gatekeeper.config.drivers import LoadConfig, MirroringConfig, TestJobConfig
from gatekeeper.config.fields import KubeName, Section
from gatekeeper.config.policy import PolicyConfig


class RouteRef(Section):
    """One object that decides which namespace of a pair takes traffic."""

    kind: Literal["IngressRoute", "TraefikService"] = "IngressRoute"
    name: KubeName
    namespace: KubeName
    api_group: Literal["traefik.io", "traefik.containo.us"] = Field(
        "traefik.io", description="omitted: discovered at start from the cluster's API "
        "discovery (routers/discovery.py); the default stands only where nothing is discovered")
    service: str | None = Field(
        None, description="only switch route services with this name (default: all)"
    )



def traefikservices_only(pair: PairConfig, what: str) -> None:
    others = [f"routes[{i}] ({r.kind} {r.namespace}/{r.name})"
              for i, r in enumerate(pair.routes) if r.kind != "TraefikService"]
    if others:
        raise ValueError(f"{what} needs every route to be a gatekeeper-owned weighted "
                         f"TraefikService; not: {', '.join(others)}")



class PairConfig(Section):
    """A blue/green pair: two namespaces and the route(s) that pick the active one."""

    name: KubeName
    namespaces: tuple[KubeName, KubeName]
    routes: tuple[RouteRef, ...] = Field(min_length=1)
    selector: str | None = Field(None, description="pod label selector, e.g. app=api-all "
                                 "(pods for logs and rules; it does not pick Deployments)")
    deployments: tuple[KubeName, ...] = Field(
        (), description="the Deployments gatekeeper scales and checks, by name (default: "
        "those `deployment_selector` finds, else every Deployment in the namespace)")
    deployment_selector: str | None = Field(
        None, description="label selector of the Deployments (when `deployments` is empty)")
    variables: dict[str, str] = Field(default_factory=dict)
    replicas: dict[str, int] = Field(
        default_factory=dict, description="production replica counts per Deployment"
    )
    policy: PolicyConfig | None = None
    load: LoadConfig | None = None
    """Synthetic load and checks for the dark while validating (none by default)."""
    test_job: TestJobConfig | None = None
    """The team's test image run as a Job in the dark namespace per release (a gate)."""
    mirroring: MirroringConfig | None = Field(
        None, description="mirror production requests to the dark while it validates "
        "(off by default; TraefikService routes only)")
    _object_namespace: str | None = PrivateAttr(None)

    @property
    def object_namespace(self) -> str | None:
        """The namespace of the BlueGreenPair object this pair was read from (its record is
        in that object's status); None for a pair of the configuration file."""
        return self._object_namespace

    def declared_in(self, namespace: str) -> PairConfig:
        """This pair as read from a BlueGreenPair object in NAMESPACE."""
        pair = self.model_copy()
        pair._object_namespace = namespace
        return pair

    @model_validator(mode="after")
    def _distinct(self) -> PairConfig:
        if self.namespaces[0] == self.namespaces[1]:
            raise ValueError("the two namespaces of a pair must differ")
        if self.mirroring is not None:
            traefikservices_only(self, "mirroring")
        if self.policy is not None and self.policy.progressive is not None:
            traefikservices_only(self, "policy.progressive")
        return self

    def other(self, namespace: str) -> str:
        """The other namespace of the pair; ValueError for a namespace outside it."""
        first, second = self.namespaces
        if namespace == first:
            return second
        if namespace == second:
            return first
        raise ValueError(f"namespace {namespace!r} is not part of pair {self.name!r} "
                         f"({first}, {second})")


