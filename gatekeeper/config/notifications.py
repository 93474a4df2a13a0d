"""Where release events are announced and how they are delivered; webhook URLs are
credentials, read from Secrets and never from the file."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gatekeeper.config.fields import Duration, Section

ReceiverKind = Literal["slack", "teams", "teams_connector", "webhook"]

_URL_IN_CONFIG = (
    "a webhook URL is a credential and is never read from the configuration file (a "
    "ConfigMap anyone with read access sees): put it in a Secret and name it in "
    "notifications.receivers with url_file (the Secret mounted as a file) or url_env (an "
    "environment variable set from the Secret); see docs/notifications.md")


class ReceiverConfig(Section):
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


class NotificationsConfig(Section):
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


