"""The validation drivers' settings: synthetic load and its ceilings, the team's test Job,
mirroring, and where the load reaches a Service from outside the cluster."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from gatekeeper.config.fields import Duration, KubeName, Section
from gatekeeper.jsonpaths import path_problem
from gatekeeper.templating import template_variables


class MirroringConfig(Section):
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


class LoadRequest(Section):
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


class LoadConfig(Section):
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


class LoadLimits(Section):
    """Ceilings for every pair's synthetic load (a typo must not flood a namespace)."""

    max_rate: float = Field(200.0, gt=0, le=100_000, description="requests/s per pair")
    max_concurrency: int = Field(256, ge=1, le=4096, description="in flight per pair")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TEST_JOB_VARIABLES = ("namespace", "other", "pair", "url", "release")
"""What `${...}` may name in a test Job's env values and args (docs/evidence.md)."""


class TestJobConfig(Section):
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


