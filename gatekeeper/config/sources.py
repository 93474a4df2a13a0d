"""Where gatekeeper reads from (Prometheus, Alertmanager, Loki, the Kubernetes API and its
watches) and how often and over which window the rules are evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gatekeeper.config.fields import Duration, Section


class PrometheusConfig(Section):
    """Where Prometheus answers PromQL."""

    url: str
    timeout: Duration = 10.0
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_file: str | None = None
    max_sample_age: Duration = Field(
        300.0, gt=0,
        description="a sample stamped further than this from gatekeeper's clock is no data")


class AlertmanagerConfig(Section):
    """Where Alertmanager's v2 API answers."""

    url: str
    timeout: Duration = 5.0


class WatchConfig(Section):
    """How the pairs' Pods, Deployments and routes are watched (docs/configuration.md)."""

    scope: Literal["auto", "namespaces", "cluster"] = "auto"
    """`namespaces`: one stream per resource and namespace (namespace-scoped RBAC is enough);
    `cluster`: one stream per resource kind over all namespaces, kept to the managed ones
    (needs cluster-wide list/watch); `auto`: `namespaces` while those streams fit in
    `max_streams`, else `cluster`."""
    max_streams: int = Field(64, ge=1, le=1000)
    """Watch connections at most: they have a pool of their own, so they never take a
    connection the calls that read and act need."""


class LokiConfig(Section):
    """Where Loki answers LogQL (`/loki/api/v1/query`), and as which tenant."""

    url: str
    timeout: Duration = 10.0
    tenant: str | None = Field(None, description="sent as X-Scope-OrgID (multi-tenant Loki)")
    bearer_token_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class KubernetesConfig(Section):
    """How to reach the Kubernetes API: in-cluster, or a kubeconfig (pipelines, laptops)."""

    mode: Literal["auto", "in_cluster", "kubeconfig"] = "auto"
    kubeconfig: str | None = None
    context: str | None = None
    request_timeout: Duration = 10.0
    watch: WatchConfig = Field(default_factory=WatchConfig)
    read_secrets: bool = Field(
        False, description="compare Secrets in the config-parity rule (needs `list secrets` "
        "in the pair namespaces, and a list of Secrets returns their values: off by default)")


class EvaluationConfig(Section):
    """How often and over which window the rules are evaluated."""

    interval: Duration = 15.0
    window: Duration = 300.0
    source_timeout: Duration = 10.0
    max_concurrency: int = Field(8, ge=1, le=256)
    max_verdict_age: Duration | None = Field(
        None, gt=0, description="a verdict older than this is unknown (default: "
        "3 x interval + source_timeout)")

    @property
    def verdict_max_age(self) -> float:
        """Seconds a verdict stays usable: `max_verdict_age`, or a few intervals."""
        if self.max_verdict_age is not None:
            return self.max_verdict_age
        return 3 * self.interval + self.source_timeout

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("evaluation interval must be at least 1s")
        return value

