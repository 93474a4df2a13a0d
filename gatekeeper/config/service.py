"""How `gatekeeper serve` runs: the webhook, authentication, the state ConfigMap, pair
objects, leader election, sharding and the HTTP server."""

from __future__ import annotations

from pydantic import Field

from gatekeeper.config.fields import Duration, KubeName, Section


class WebhookConfig(Section):
    """Which Alertmanager alerts trigger a rollback of the new active namespace."""

    matchers: dict[str, str] = Field(default_factory=lambda: {"severity": "critical"})
    match_namespace: bool = True
    max_body_bytes: int = Field(1_048_576, ge=1024)
    stale_alert_grace: Duration = 60.0
    """An alert whose `startsAt` is more than this before the current release took traffic
    concerns an earlier release and rolls nothing back (allows for clock skew between
    Prometheus and gatekeeper, and for a flip noticed late)."""


class AuthConfig(Section):
    """Bearer tokens for mutating endpoints and the webhook (never logged), each with the
    name the audit trail records: `tokens_file` holds `name: token` entries; the single
    shared token (`token_file`, else `$token_env`) authenticates as `token_name`."""

    token_file: str | None = None
    token_env: str = "GATEKEEPER_TOKEN"
    token_name: str = Field("api-token", min_length=1, max_length=128,
                            pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]*$")
    tokens_file: str | None = None
    token_review: bool = False
    """Also accept Kubernetes service-account tokens, authenticated by a TokenReview; the
    caller is recorded as system:serviceaccount:NAMESPACE:NAME."""
    token_review_audiences: list[str] = Field(default_factory=list)
    webhook_requires_token: bool = True


class StateConfig(Section):
    """The ConfigMap that keeps each pair's lifecycle state and audit trail."""

    configmap: KubeName = "gatekeeper-state"
    namespace: KubeName = "gatekeeper"
    history: int = Field(20, ge=1, le=500)


class PairObjectsConfig(Section):
    """BlueGreenPair objects: pairs declared as Kubernetes objects (docs/pair-objects.md)."""

    enabled: bool = True
    """Also read pairs from BlueGreenPair objects in every namespace (the CRD from
    `gatekeeper crd` or the chart, and a ClusterRole to list them and write their status);
    each such pair's record is written to its own object's status. Pairs listed under
    `pairs:` keep theirs in the state ConfigMap (`gatekeeper migrate-to-objects` moves
    them). Off: only the configuration's pairs, and no pair-object call at all. `serve`
    watches the objects: one added, edited or deleted changes that pair within seconds."""


class LeaderElectionConfig(Section):
    """Only the holder of this Lease acts; every replica serves reads."""

    enabled: bool = True
    lease_name: KubeName = "gatekeeper-leader"
    namespace: KubeName = "gatekeeper"
    lease_duration: Duration = 15.0
    renew_deadline: Duration = 10.0
    retry_period: Duration = 2.0
    identity: str | None = None


class ShardingConfig(Section):
    """Replicas share the pairs: a Lease per shard, each replica acts on the pairs of the
    shards it holds (docs/configuration.md, "Sharding"). Off: one leader acts on all pairs.

    The Leases live in `leader_election.namespace` with its durations; their names start
    with `leader_election.lease_name`.
    """

    enabled: bool = False
    shards: int = Field(16, ge=1, le=1024)
    """Fixed number of shards; more shards than replicas spreads the pairs evenly."""
    address: str | None = None
    """The URL other replicas forward this replica's requests to; by default
    http://$POD_IP:<server.port> (the chart sets POD_IP from the downward API)."""
    forward_timeout: Duration = Field(30.0, gt=0, le=600)
    """Seconds a forwarded request may take at the owner (a flip waits for readiness)."""



class ServerConfig(Section):
    """Where `gatekeeper serve` listens."""

    # A cluster service listens on the pod address; tests and the demo pass 127.0.0.1.
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    read_timeout: Duration = Field(10.0, gt=0, le=600)
    """Seconds a client has to send a whole request (headers on a new connection, and the
    body) before the connection is closed (408 for a body)."""
    keepalive_timeout: Duration = Field(15.0, gt=0, le=3600)
    """Seconds an idle keep-alive connection stays open between two requests."""
    max_connections: int = Field(1024, ge=8, le=1_000_000)
    """Open connections at most (lowered to fit `ulimit -n`); past it, idle and slow
    connections and long-polls are closed to let new ones in (see docs/configuration.md)."""


