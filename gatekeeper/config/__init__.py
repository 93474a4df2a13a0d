"""The configuration file: one YAML document validated with pydantic.

Unknown keys and wrong types are errors naming file, line and key. Every setting has a
default a platform team can start from; docs/configuration.md is the reference.

One module per group of sections: `fields` (the shared field types and the sections' base),
`sources` (Prometheus, Alertmanager, Loki, Kubernetes, evaluation), `policy`, `drivers`
(load, test Job, mirroring), `pairs`, `service` (webhook, auth, state, pair objects, leader
election, sharding, server), `notifications`, `document` (the whole file and the checks
across its sections) and `loading` (`load_config`: the file, its rules, the checks that
need both).
"""

from gatekeeper.config.document import Config
from gatekeeper.config.drivers import (
    TEST_JOB_VARIABLES,
    LoadConfig,
    LoadLimits,
    LoadRequest,
    MirroringConfig,
    ServiceAddresses,
    TestJobConfig,
)
from gatekeeper.config.fields import Duration, KubeName
from gatekeeper.config.loading import LoadedConfig, load_config, parse_config
from gatekeeper.config.notifications import (
    NoPlainUrls,
    NotificationsConfig,
    ReceiverConfig,
    ReceiverKind,
)
from gatekeeper.config.pairs import PairConfig, RouteRef
from gatekeeper.config.policy import PolicyConfig, ProgressiveConfig
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
    WatchConfig,
)

__all__ = [
    "TEST_JOB_VARIABLES",
    "AlertmanagerConfig",
    "AuthConfig",
    "Config",
    "Duration",
    "EvaluationConfig",
    "KubeName",
    "KubernetesConfig",
    "LeaderElectionConfig",
    "LoadConfig",
    "LoadLimits",
    "LoadRequest",
    "LoadedConfig",
    "LokiConfig",
    "MirroringConfig",
    "NoPlainUrls",
    "NotificationsConfig",
    "PairConfig",
    "PairObjectsConfig",
    "PolicyConfig",
    "ProgressiveConfig",
    "PrometheusConfig",
    "ReceiverConfig",
    "ReceiverKind",
    "RouteRef",
    "ServerConfig",
    "ServiceAddresses",
    "ShardingConfig",
    "StateConfig",
    "TestJobConfig",
    "WatchConfig",
    "WebhookConfig",
    "load_config",
    "parse_config",
]
