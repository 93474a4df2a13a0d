"""The whole configuration file (Config) and the checks across its sections."""

from __future__ import annotations

from pydantic import Field, model_validator

from gatekeeper.config import service, sources
from gatekeeper.config.drivers import LoadLimits, ServiceAddresses
from gatekeeper.config.fields import Section
from gatekeeper.config.notifications import NotificationsConfig
from gatekeeper.config.pairs import PairConfig, traefikservices_only
from gatekeeper.config.policy import PolicyConfig


class Config(Section):
    """The whole configuration file."""

    prometheus: sources.PrometheusConfig | None = None
    alertmanager: sources.AlertmanagerConfig | None = None
    loki: sources.LokiConfig | None = None
    kubernetes: sources.KubernetesConfig = Field(default_factory=sources.KubernetesConfig)
    evaluation: sources.EvaluationConfig = Field(default_factory=sources.EvaluationConfig)
    rule_files: tuple[str, ...] = Field(("rules/",), min_length=1)
    variables: dict[str, str] = Field(default_factory=dict)
    pairs: tuple[PairConfig, ...] = ()
    """Pairs kept in the configuration (small setups); more come from BlueGreenPair objects
    (`objects`)."""
    objects: service.PairObjectsConfig = Field(default_factory=service.PairObjectsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    webhook: service.WebhookConfig = Field(default_factory=service.WebhookConfig)
    auth: service.AuthConfig = Field(default_factory=service.AuthConfig)
    state: service.StateConfig = Field(default_factory=service.StateConfig)
    leader_election: service.LeaderElectionConfig = Field(
        default_factory=service.LeaderElectionConfig)
    sharding: service.ShardingConfig = Field(default_factory=service.ShardingConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    server: service.ServerConfig = Field(default_factory=service.ServerConfig)
    load_limits: LoadLimits = Field(default_factory=LoadLimits)
    service_addresses: ServiceAddresses = Field(
        default_factory=dict, description="where the synthetic load reaches a Service when "
        "gatekeeper runs outside the cluster (curl's --resolve): {service.namespace.svc:port: "
        "ip:port}; in the cluster leave it empty (cluster DNS)")

    @model_validator(mode="after")
    def _unique_pairs(self) -> Config:
        if not self.pairs and not self.objects.enabled:
            raise ValueError("no pairs: list them under 'pairs', or leave 'objects.enabled' "
                             "on and declare them as BlueGreenPair objects")
        seen: set[str] = set()
        for pair in self.pairs:
            if pair.name in seen:
                raise ValueError(f"duplicate pair name {pair.name!r}")
            seen.add(pair.name)
            if self.policy_for(pair).progressive is not None:
                try:
                    traefikservices_only(pair, "policy.progressive")
                except ValueError as exc:
                    raise ValueError(f"pair {pair.name!r}: {exc}") from None
        return self

    def pair(self, name: str) -> PairConfig:
        """The pair called `name`; KeyError naming the known pairs otherwise."""
        for pair in self.pairs:
            if pair.name == name:
                return pair
        known = ", ".join(p.name for p in self.pairs)
        raise KeyError(f"unknown pair {name!r} (configured: {known})")

    def policy_for(self, pair: PairConfig) -> PolicyConfig:
        """The pair's own policy, else the global one."""
        return pair.policy or self.policy


