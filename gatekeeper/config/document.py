"""The whole configuration file (Config) and the checks across its sections."""

from __future__ import annotations

from pydantic import Field, model_validator

from gatekeeper.config.drivers import LoadLimits, ServiceAddresses
from gatekeeper.config.fields import Section
from gatekeeper.config.notifications import NotificationsConfig
from gatekeeper.config.pairs import PairConfig, traefikservices_only
from gatekeeper.config.policy import PolicyConfig
from gatekeeper.config.service import (
    AuthConfig,
    LeaderElectionConfig,
    PairObjectsConfig,
    ServerConfig,
    ShardingConfig,
    StateConfig,
    WebhookConfig,
)
from gatekeeper.config.sources import (
    AlertmanagerConfig,
    EvaluationConfig,
    KubernetesConfig,
    LokiConfig,
    PrometheusConfig,
)


class Config(Section):
    """The whole configuration file."""

    prometheus: PrometheusConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    loki: LokiConfig | None = None
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    rule_files: tuple[str, ...] = Field(("rules/",), min_length=1)
    variables: dict[str, str] = Field(default_factory=dict)
    pairs: tuple[PairConfig, ...] = ()
    """Pairs kept in the configuration (small setups); more come from BlueGreenPair objects
    (`objects`)."""
    objects: PairObjectsConfig = Field(default_factory=PairObjectsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
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


