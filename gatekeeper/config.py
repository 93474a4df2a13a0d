"""The configuration file: one YAML document validated with pydantic.

Unknown keys and wrong types are errors naming file, line and key. Every setting has a
default a platform team can start from; docs/configuration.md is the reference.

Over 450 lines on purpose: one pydantic model per section, and the checks across sections
(a pair's policy against its routes, its load against the ceilings, the watch streams
against the pairs) need them all in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gatekeeper.durations import parse_duration
from gatekeeper.jsonpaths import path_problem
from gatekeeper.rules import RuleSet, load_rule_set
from gatekeeper.templating import template_variables
from gatekeeper.yamlfiles import ConfigFileError, load_yaml_file, validation_problems

Duration = Annotated[float, BeforeValidator(parse_duration),
                     Field(json_schema_extra={"x-duration": True})]
"""Seconds, written as `30s`, `5m`, `2h` or a number (the schema marks it for gatekeeper.crd)."""
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _dns_label(value: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes name (lower-case DNS label)")
    return value


KubeName = Annotated[str, BeforeValidator(_dns_label), Field(json_schema_extra={
    "pattern": _DNS_LABEL.pattern, "maxLength": 63})]


class _Section(BaseModel):
    # NaN and infinity are no durations, counts or thresholds: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


class PrometheusConfig(_Section):
    """Where Prometheus answers PromQL."""

    url: str
    timeout: Duration = 10.0
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_file: str | None = None
    max_sample_age: Duration = Field(
        300.0, gt=0,
        description="a sample stamped further than this from gatekeeper's clock is no data")


class AlertmanagerConfig(_Section):
    """Where Alertmanager's v2 API answers."""

    url: str
    timeout: Duration = 5.0


class WatchConfig(_Section):
    """How the pairs' Pods, Deployments and routes are watched (docs/configuration.md)."""

    scope: Literal["auto", "namespaces", "cluster"] = "auto"
    """`namespaces`: one stream per resource and namespace (namespace-scoped RBAC is enough);
    `cluster`: one stream per resource kind over all namespaces, kept to the managed ones
    (needs cluster-wide list/watch); `auto`: `namespaces` while those streams fit in
    `max_streams`, else `cluster`."""
    max_streams: int = Field(64, ge=1, le=1000)
    """Watch connections at most: they have a pool of their own, so they never take a
    connection the calls that read and act need."""


class LokiConfig(_Section):
    """Where Loki answers LogQL (`/loki/api/v1/query`), and as which tenant."""

    url: str
    timeout: Duration = 10.0
    tenant: str | None = Field(None, description="sent as X-Scope-OrgID (multi-tenant Loki)")
    bearer_token_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class KubernetesConfig(_Section):
    """How to reach the Kubernetes API: in-cluster, or a kubeconfig (pipelines, laptops)."""

    mode: Literal["auto", "in_cluster", "kubeconfig"] = "auto"
    kubeconfig: str | None = None
    context: str | None = None
    request_timeout: Duration = 10.0
    watch: WatchConfig = Field(default_factory=WatchConfig)
    read_secrets: bool = Field(
        False, description="compare Secrets in the config-parity rule (needs `list secrets` "
        "in the pair namespaces, and a list of Secrets returns their values: off by default)")


class EvaluationConfig(_Section):
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


class RouteRef(_Section):
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


class ProgressiveConfig(_Section):
    """Steps of real traffic to the dark before the full flip (docs/evidence.md)."""

    steps: tuple[int, ...] = Field(
        (1, 5, 25), min_length=1, max_length=20,
        description="percent of the requests sent to the dark at each step, increasing, 1..99")
    hold: Duration = Field(
        300.0, gt=0, description="how long each step is held before it may pass (at least "
        "the longest rule window, so the verdict judges only the step's own traffic)")
    max_hold: Duration = Field(
        1800.0, gt=0, description="a step whose verdict is still unknown (too few samples) "
        "this long fails: the dark goes back to 0 % and the pair is blocked")

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        for value in steps:
            if not 1 <= value <= 99:
                raise ValueError(f"step {value}: each step must be 1..99 percent (100 % is "
                                 "the flip that follows the last step)")
        if list(steps) != sorted(set(steps)):
            raise ValueError(f"steps {list(steps)} must increase strictly")
        return steps

    @model_validator(mode="after")
    def _hold_bound(self) -> ProgressiveConfig:
        if self.max_hold < self.hold:
            raise ValueError(f"max_hold {self.max_hold:g}s is shorter than hold {self.hold:g}s")
        return self


class MirroringConfig(_Section):
    """Copies of production requests to the dark while it validates (docs/evidence.md).

    Mirrored writes reach whatever the dark writes to (the shared database of the design
    document's option 1), so nothing is mirrored unless `acknowledge_shared_writes` is true.
    """

    percent: int = Field(10, ge=1, le=100, description="percent of the requests copied")
    max_body_size: int = Field(
        65536, ge=0, le=64 * 1024 * 1024, description="bytes: a request with a larger body "
        "is not mirrored (Traefik's maxBodySize; its unlimited -1 is refused here)")
    mirror_body: bool = Field(True, description="copy request bodies too (Traefik's mirrorBody)")
    acknowledge_shared_writes: bool = Field(
        False, description="true: you know mirrored POST/PUT/DELETE requests reach the "
        "dark's database (shared with the active), or the route only matches safe methods")

    @model_validator(mode="after")
    def _acknowledged(self) -> MirroringConfig:
        if not self.acknowledge_shared_writes:
            raise ValueError(
                "mirroring copies production requests, writes included, to the dark, which "
                "shares the active's database: set acknowledge_shared_writes: true (after "
                "making the route match only safe methods, docs/evidence.md), or remove "
                "mirroring")
        return self


class PolicyConfig(_Section):
    """What gatekeeper may do on its own (the release lifecycle, docs/lifecycle.md)."""

    auto_flip: bool = False
    soak: Duration = 7200.0
    consecutive_passes: int = Field(3, ge=1)
    require_approval: bool = False
    observation: Duration = 86400.0
    auto_scale_down: bool = False
    scale_down_keep: int = Field(0, ge=0)
    rollback_on_gate_failures: int = Field(3, ge=1, description="M consecutive key failures")
    auto_rollback: bool = True
    rollback_when_scaled_down: Literal["refuse", "scale_up_then_flip"] = "refuse"
    cooldown: Duration = 300.0
    ready_timeout: Duration = 600.0
    validation_timeout: Duration = Field(
        14400.0, ge=0, description="how long a Ready dark may stay without a verdict "
        "(unknown: no traffic, no data, a source down) before the pair is blocked; 0: never")
    dry_run: bool = False
    progressive: ProgressiveConfig | None = Field(
        None, description="progressive exposure before the full flip (only for pairs whose "
        "routes are all TraefikServices); default: none, the flip moves all traffic at once")


def _traefikservices_only(pair: PairConfig, what: str) -> None:
    others = [f"routes[{i}] ({r.kind} {r.namespace}/{r.name})"
              for i, r in enumerate(pair.routes) if r.kind != "TraefikService"]
    if others:
        raise ValueError(f"{what} needs every route to be a gatekeeper-owned weighted "
                         f"TraefikService; not: {', '.join(others)}")


_IN_DARK = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.\$\{namespace\}(\.svc(\.cluster\.local)?)?$")
"""A Service of the dark namespace, as Kubernetes DNS names it: `<service>.${namespace}`,
optionally `.svc` or `.svc.cluster.local`."""
_LOAD_VARIABLES = {"namespace", "pair"}


def _in_dark_namespace(url: str) -> str:
    """`url` if it is an http(s) URL of a Service in the dark namespace; else ValueError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    if not _IN_DARK.match(parts.hostname):
        raise ValueError(
            f"host {parts.hostname!r} of {url!r} is outside the dark namespace: load goes only "
            "to a Service of the dark namespace, written http://<service>.${namespace}.svc"
            "[:port] (gatekeeper fills in the dark namespace; never the active one)")
    return url


def _known_variables(text: str) -> str:
    unknown = template_variables(text) - _LOAD_VARIABLES
    if unknown:
        raise ValueError(f"{text!r} uses unknown variable(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_LOAD_VARIABLES))})")
    return text


class LoadRequest(_Section):
    """One request of a pair's synthetic load, and the checks on its answer (the probe
    model: docs/evidence.md)."""

    name: str = Field("", max_length=63, description="a label (default: METHOD path)")
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    path: str = Field("/", description="relative to `load.url` (starts with /), or an "
                      "absolute URL of a Service in the dark namespace")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_body: Any = Field(None, alias="json", description="a JSON body (instead of `body`)",
                           json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    expect_status: int = Field(200, ge=100, le=599)
    expect_json: dict[str, Any] = Field(default_factory=dict)
    require_fields: tuple[str, ...] = ()
    max_latency: Duration = Field(5.0, gt=0, le=60)
    """Seconds; a slower answer fails the check (the request is cut off there)."""
    weight: float = Field(1.0, gt=0, le=1000)
    """Share of the load this request gets, relative to the others."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        _known_variables(value)
        if value.startswith("/"):
            return value
        if "://" in value:
            return _in_dark_namespace(value)
        raise ValueError(f"path {value!r} must start with '/' (relative to load.url) or be "
                         "an absolute URL of a Service in the dark namespace")

    @field_validator("expect_json")
    @classmethod
    def _expect_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            if (problem := path_problem(path)) is not None:
                raise ValueError(f"expect_json: {problem}")
        return value

    @field_validator("require_fields")
    @classmethod
    def _require_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if (problem := path_problem(path)) is not None:
                raise ValueError(f"require_fields: {problem}")
        return value

    @model_validator(mode="after")
    def _body(self) -> LoadRequest:
        if self.body is not None and self.json_body is not None:
            raise ValueError("give 'body' or 'json', not both")
        if self.method == "HEAD" and (self.expect_json or self.require_fields):
            raise ValueError("a HEAD request has no body to check (expect_json, "
                             "require_fields)")
        return self

    @property
    def label(self) -> str:
        """What metrics and reasons call this request."""
        return self.name or f"{self.method} {self.path}"


class LoadConfig(_Section):
    """Synthetic load and checks gatekeeper sends to the dark while validating (a driver:
    gatekeeper.drivers.load, docs/evidence.md)."""

    url: str = Field(description="base URL of the dark's Service, e.g. "
                     "http://api-service.${namespace}.svc:8080")
    rate: float = Field(gt=0, description="requests per second once the ramp is over")
    ramp: Duration = Field(30.0, ge=0, description="seconds from 0 to `rate`, linearly")
    concurrency: int = Field(16, ge=1, le=4096, description="requests in flight at most")
    window: Duration | None = Field(
        None, gt=0, description="how far back the outcome reaches (default: "
        "evaluation.window)")
    requests: tuple[LoadRequest, ...] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _in_dark_namespace(_known_variables(value))


class LoadLimits(_Section):
    """Ceilings for every pair's synthetic load (a typo must not flood a namespace)."""

    max_rate: float = Field(200.0, gt=0, le=100_000, description="requests/s per pair")
    max_concurrency: int = Field(256, ge=1, le=4096, description="in flight per pair")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TEST_JOB_VARIABLES = ("namespace", "other", "pair", "url", "release")
"""What `${...}` may name in a test Job's env values and args (docs/evidence.md)."""


class TestJobConfig(_Section):
    """The team's test image, run as a Kubernetes Job in the dark namespace once per release
    while it validates; its success is a gate (docs/evidence.md)."""

    image: str = Field(min_length=1, max_length=512, pattern=r"^[^\s$]+$")
    """The test image (pin a tag or digest: the same image tests every release)."""
    command: tuple[str, ...] = ()
    """The container's command (default: the image's entrypoint)."""
    args: tuple[str, ...] = ()
    """The container's arguments; `${namespace}`, `${other}`, `${pair}`, `${url}` and
    `${release}` are filled in."""
    env: dict[str, str] = Field(default_factory=dict)
    """More environment variables; values take the same `${...}` placeholders."""
    service: KubeName
    """The dark namespace's Service the tests call."""
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    url_env: str = Field("TARGET_URL", pattern=_ENV_NAME.pattern)
    """The environment variable holding the dark Service's URL
    (`http://<service>.<dark namespace>.svc:<port>`)."""
    timeout: Duration = Field(600.0, ge=1, le=86400)
    """The Job's activeDeadlineSeconds: past it the Job fails with DeadlineExceeded."""
    backoff_limit: int = Field(0, ge=0, le=10)
    """Retries of a failed test pod before the Job fails (BackoffLimitExceeded)."""
    ttl_after_finished: Duration = Field(3600.0, ge=0, le=604800)
    """ttlSecondsAfterFinished: the cluster deletes the finished Job (and its pods) then."""
    log_tail_lines: int = Field(20, ge=1, le=500)
    """Lines of the failed pod's log quoted in the verdict's reason."""
    service_account: KubeName | None = None
    """The pod's service account; without one no API token is mounted in the test pod."""

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name "
                                 "(letters, digits and _, not starting with a digit)")
        return value

    @model_validator(mode="after")
    def _placeholders(self) -> TestJobConfig:
        for where, text in [*((f"args[{i}]", a) for i, a in enumerate(self.args)),
                            *((f"env.{k}", v) for k, v in self.env.items())]:
            try:
                unknown = template_variables(text) - set(TEST_JOB_VARIABLES)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if unknown:
                raise ValueError(f"{where}: unknown placeholder ${{{sorted(unknown)[0]}}} "
                                 f"(known: {', '.join(TEST_JOB_VARIABLES)})")
        if self.url_env in self.env:
            raise ValueError(f"env.{self.url_env}: gatekeeper sets it to the dark Service's "
                             "URL (url_env): choose another name")
        return self


_SERVICE_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    r"(\.svc(\.cluster\.local)?)?:[0-9]{1,5}$")
_ADDRESS = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):[0-9]{1,5}$")


def _service_addresses(value: dict[str, str]) -> dict[str, str]:
    for name, address in value.items():
        if not _SERVICE_NAME.match(name):
            raise ValueError(f"{name!r} is not a Service name and port such as "
                             "api-service.production-green.svc:8080")
        if not _ADDRESS.match(address):
            raise ValueError(f"{address!r} (for {name}) is not an IP address and port such as "
                             "127.0.0.1:8080")
    return value


ServiceAddresses = Annotated[dict[str, str], AfterValidator(_service_addresses)]


class PairConfig(_Section):
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
            _traefikservices_only(self, "mirroring")
        if self.policy is not None and self.policy.progressive is not None:
            _traefikservices_only(self, "policy.progressive")
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


class WebhookConfig(_Section):
    """Which Alertmanager alerts trigger a rollback of the new active namespace."""

    matchers: dict[str, str] = Field(default_factory=lambda: {"severity": "critical"})
    match_namespace: bool = True
    max_body_bytes: int = Field(1_048_576, ge=1024)
    stale_alert_grace: Duration = 60.0
    """An alert whose `startsAt` is more than this before the current release took traffic
    concerns an earlier release and rolls nothing back (allows for clock skew between
    Prometheus and gatekeeper, and for a flip noticed late)."""


class AuthConfig(_Section):
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


class StateConfig(_Section):
    """The ConfigMap that keeps each pair's lifecycle state and audit trail."""

    configmap: KubeName = "gatekeeper-state"
    namespace: KubeName = "gatekeeper"
    history: int = Field(20, ge=1, le=500)


class PairObjectsConfig(_Section):
    """BlueGreenPair objects: pairs declared as Kubernetes objects (docs/pair-objects.md)."""

    enabled: bool = True
    """Also read pairs from BlueGreenPair objects in every namespace (the CRD from
    `gatekeeper crd` or the chart, and a ClusterRole to list them and write their status);
    each such pair's record is written to its own object's status. Pairs listed under
    `pairs:` keep theirs in the state ConfigMap (`gatekeeper migrate-to-objects` moves
    them). Off: only the configuration's pairs, and no pair-object call at all."""
    resync: Duration = Field(30.0, ge=0)
    """How often `serve` lists the objects again; an object added, deleted or whose spec
    changed (its generation) makes it serve the new set of pairs (0: only at start)."""


class LeaderElectionConfig(_Section):
    """Only the holder of this Lease acts; every replica serves reads."""

    enabled: bool = True
    lease_name: KubeName = "gatekeeper-leader"
    namespace: KubeName = "gatekeeper"
    lease_duration: Duration = 15.0
    renew_deadline: Duration = 10.0
    retry_period: Duration = 2.0
    identity: str | None = None


class ShardingConfig(_Section):
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


ReceiverKind = Literal["slack", "teams", "teams_connector", "webhook"]

_URL_IN_CONFIG = (
    "a webhook URL is a credential and is never read from the configuration file (a "
    "ConfigMap anyone with read access sees): put it in a Secret and name it in "
    "notifications.receivers with url_file (the Secret mounted as a file) or url_env (an "
    "environment variable set from the Secret); see docs/notifications.md")


class ReceiverConfig(_Section):
    """One chat channel or endpoint told about every release event (docs/notifications.md).

    The URL itself is a credential (whoever holds it can post): it is read at start from a
    file or an environment variable, both normally filled from a Kubernetes Secret.
    """

    kind: ReceiverKind
    """`slack` (Block Kit), `teams` (Teams Workflows: an Adaptive Card), `teams_connector`
    (the legacy Office 365 connector's MessageCard, only if asked for), `webhook` (the
    versioned JSON schema of docs/notifications.md)."""
    name: str = Field("", max_length=63, description="a label for logs and metrics "
                      "(default: the kind and position)")
    url_file: str | None = None
    """A file holding the URL (a Secret mounted as a volume)."""
    url_env: str | None = None
    """An environment variable holding the URL (set from a Secret with `secretKeyRef`)."""
    url: str | None = None
    """Refused: present only to name the fix when someone writes a URL here."""

    @field_validator("url")
    @classmethod
    def _refuse_url(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(_URL_IN_CONFIG)
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> ReceiverConfig:
        if (self.url_file is None) == (self.url_env is None):
            raise ValueError("give exactly one of url_file (a mounted Secret) and url_env "
                             "(an environment variable set from a Secret)")
        return self


def _no_plain_urls(value: Any) -> Any:
    """The first version's `slack`/`teams`/`webhooks` lists: empty is fine, a URL is not."""
    if value:
        raise ValueError(_URL_IN_CONFIG)
    return ()


NoPlainUrls = Annotated[tuple[str, ...], BeforeValidator(_no_plain_urls)]


class NotificationsConfig(_Section):
    """Where release events are announced and how they are delivered (docs/notifications.md)."""

    receivers: tuple[ReceiverConfig, ...] = ()
    slack: NoPlainUrls = ()
    """Refused when not empty (URLs are credentials): use `receivers`."""
    teams: NoPlainUrls = ()
    """Refused when not empty (URLs are credentials): use `receivers`."""
    webhooks: NoPlainUrls = ()
    """Refused when not empty (URLs are credentials): use `receivers`."""
    api_url: str | None = Field(None, description="gatekeeper's API as people reach it "
                                "(links in messages: <api_url>/api/v1/pairs/<pair>)")
    dashboard_url: str | None = Field(None, description="the Grafana dashboard (links in "
                                      "messages: <dashboard_url>?var-pair=<pair>)")
    timeout: Duration = Field(5.0, gt=0, le=120)
    """Seconds one delivery attempt may take."""
    retries: int = Field(3, ge=0, le=10)
    """Attempts after the first for a failure worth retrying (timeouts, 408, 429, 5xx)."""
    backoff: Duration = Field(0.5, gt=0, le=60)
    """First wait between attempts in seconds; doubled each time, with jitter, capped 30s."""
    queue_size: int = Field(100, ge=1, le=10_000)
    """Messages waiting per receiver at most; past it, `overflow` decides which is dropped."""
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    evidence_stuck_after: Duration = Field(1800.0, gt=0)
    """A release whose verdict stays unknown this long while validating is announced as
    stuck (its evidence is missing: no traffic, a source down)."""

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationsConfig:
        names = [r.name for r in self.receivers if r.name]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate receiver names: {', '.join(duplicates)}")
        return self


class ServerConfig(_Section):
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


class Config(_Section):
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
                    _traefikservices_only(pair, "policy.progressive")
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


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration with its rules loaded."""

    config: Config
    rule_set: RuleSet
    path: Path


def _pair_label(data: Any) -> Any:
    def label(loc: tuple[str | int, ...]) -> str | None:
        if len(loc) >= 2 and loc[0] == "pairs" and isinstance(loc[1], int):
            try:
                name = data["pairs"][loc[1]].get("name")
            except (KeyError, IndexError, TypeError, AttributeError):
                name = None
            return f"pair '{name}'" if name else f"pair #{loc[1] + 1}"
        return None

    return label


def parse_config(data: Any, path: str | Path, line_map: Any) -> Config:
    """Validate parsed YAML; ConfigFileError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigFileError([f"{path}:1: the configuration must be a YAML mapping"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(validation_problems(exc, line_map, label=_pair_label(data))) from exc


def _load_problems(config: Config, path: Path, line_map: Any) -> list[str]:
    """Pairs whose synthetic load exceeds `load_limits` (file, line and key of each)."""
    limits, problems = config.load_limits, []
    for index, pair in enumerate(config.pairs):
        if pair.load is None:
            continue
        for key, value, limit, ceiling in (
                ("rate", pair.load.rate, "max_rate", limits.max_rate),
                ("concurrency", pair.load.concurrency, "max_concurrency",
                 limits.max_concurrency)):
            if value > ceiling:
                where = ("pairs", index, "load", key)
                problems.append(
                    f"{path}:{line_map.line_of(where)}: pair '{pair.name}': field "
                    f"'pairs[{index}].load.{key}': {value:g} is above the ceiling "
                    f"load_limits.{limit} ({ceiling:g}): lower it, or raise the ceiling "
                    "deliberately")
    return problems


def _namespace_streams(config: Config) -> int:
    """Watch streams at one per resource and namespace (gatekeeper.watching.targets_for)."""
    namespaces = {ns for pair in config.pairs for ns in pair.namespaces}
    routes = {(r.kind, r.api_group, r.namespace) for pair in config.pairs for r in pair.routes}
    return 2 * len(namespaces) + len(routes)


def load_config(path: str | Path) -> LoadedConfig:
    """Load the configuration and the rule files it names (relative to the file's folder)."""
    config_path = Path(path)
    data, line_map = load_yaml_file(config_path)
    config = parse_config(data, config_path, line_map)
    base = config_path.resolve().parent
    rule_paths = [p if Path(p).is_absolute() else base / p for p in config.rule_files]
    rule_set = load_rule_set(rule_paths)
    merged = {**rule_set.variables, **config.variables}
    rule_set = rule_set.model_copy(update={"variables": merged})
    problems = []
    for source in sorted(rule_set.sources()):
        if source in ("prometheus", "alertmanager", "loki") and getattr(config, source) is None:
            users = [r.name for r in rule_set.rules if r.source == source]
            line = line_map.line_of(())
            problems.append(
                f"{config_path}:{line}: field '{source}': rules {', '.join(users)} use source "
                f"'{source}' but the configuration has no '{source}' section with a url"
            )
    problems.extend(_load_problems(config, config_path, line_map))
    judged = {rule.driver for rule in rule_set.rules if rule.source == "validation"}
    for index, pair in enumerate(config.pairs):
        if pair.test_job is not None and "jobs" not in judged:
            line = line_map.line_of(("pairs", index, "test_job"))
            problems.append(
                f"{config_path}:{line}: pair '{pair.name}' field 'test_job': no rule judges the "
                "test Job's outcome, so it would gate nothing: add rules/sets/test-job.yaml "
                "to rule_files (or a rule with source 'validation' and driver 'jobs')")
    streams = _namespace_streams(config)
    watch = config.kubernetes.watch
    if watch.scope == "namespaces" and streams > watch.max_streams:
        line = line_map.line_of(("kubernetes", "watch"))
        problems.append(
            f"{config_path}:{line}: field 'kubernetes.watch': scope 'namespaces' needs "
            f"{streams} watch streams (Pods and Deployments of every pair's namespaces, each "
            f"route kind in its namespace) but max_streams is {watch.max_streams}: use scope "
            "'cluster' or 'auto', or raise max_streams")
    if problems:
        raise ConfigFileError(problems)
    return LoadedConfig(config=config, rule_set=rule_set, path=config_path)
