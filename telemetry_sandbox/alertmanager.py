"""A real Alertmanager for tests and the demo: one route, short timers, clustering disabled.

Gatekeeper reads firing alerts through the v2 API and receives webhook notifications;
running the real binary checks both the payload shapes and the grouping/resolve timing.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from telemetry_sandbox import httpjson
from telemetry_sandbox.durations import format_duration
from telemetry_sandbox.loopback import LOOPBACK_HOST, require_loopback_url
from telemetry_sandbox.processes import ConfiguredServer, ManagedProcess

__all__ = ["AlertmanagerServer", "make_alert", "rfc3339"]

DEFAULT_ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
WEBHOOK_RECEIVER = "webhook"
NULL_RECEIVER = "null"

Matchers = Mapping[str, str] | Sequence[dict[str, Any]]
"""Either {name: value} equality matchers or v2 API matcher objects."""


def rfc3339(moment: datetime) -> str:
    """Alertmanager wants RFC 3339 timestamps with a zone; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_alert(
    alertname: str,
    namespace: str | None = None,
    *,
    severity: str = "critical",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """Build a v2 API alert (postableAlert) with the labels gatekeeper keys on."""
    all_labels = {"alertname": alertname, "severity": severity}
    if namespace is not None:
        all_labels["namespace"] = namespace
    all_labels.update(labels or {})
    alert: dict[str, Any] = {
        "labels": all_labels,
        "annotations": dict(annotations or {}),
        "startsAt": rfc3339(starts_at or datetime.now(UTC)),
    }
    if ends_at is not None:
        alert["endsAt"] = rfc3339(ends_at)
    if generator_url is not None:
        alert["generatorURL"] = generator_url
    return alert


class AlertmanagerServer(ConfiguredServer):
    """Runs `alertmanager` with a generated config and wraps the bits of the v2 API tests use."""

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        group_wait_s: float = 0.0,
        group_interval_s: float = 1.0,
        repeat_interval_s: float = 2.0,
        resolve_timeout_s: float = 300.0,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        workdir: Path | str | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.binary = binary or os.environ.get("ALERTMANAGER_BIN", DEFAULT_ALERTMANAGER_BIN)
        self.webhook_url = require_loopback_url(webhook_url) if webhook_url else None
        self.group_wait_s = group_wait_s
        self.group_interval_s = group_interval_s
        self.repeat_interval_s = repeat_interval_s
        self.resolve_timeout_s = resolve_timeout_s
        self.extra_args = list(extra_args)
        self.process = ManagedProcess(
            "alertmanager",
            self._command,
            ready_path="/-/ready",
            workdir=workdir,
            ready_timeout_s=ready_timeout_s,
        )
        self.config_path = self.process.workdir / "alertmanager.yml"

    # -- configuration ----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The alertmanager.yml document: one route to the webhook, or to a null receiver."""
        receiver = WEBHOOK_RECEIVER if self.webhook_url else NULL_RECEIVER
        receivers: list[dict[str, Any]] = [{"name": NULL_RECEIVER}]
        if self.webhook_url:
            receivers.append(
                {
                    "name": WEBHOOK_RECEIVER,
                    "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}],
                }
            )
        return {
            "global": {"resolve_timeout": format_duration(self.resolve_timeout_s)},
            "route": {
                "receiver": receiver,
                "group_by": ["alertname", "namespace"],
                "group_wait": format_duration(self.group_wait_s),
                "group_interval": format_duration(self.group_interval_s),
                "repeat_interval": format_duration(self.repeat_interval_s),
            },
            "receivers": receivers,
        }

    def write_config(self) -> Path:
        """Write alertmanager.yml into the work directory."""
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    def set_webhook(self, url: str | None, *, reload: bool = True) -> None:
        """Point the route at a webhook URL (None: null receiver) and reload if running."""
        self.webhook_url = require_loopback_url(url) if url else None
        if reload and self.process.is_running:
            self.reload()

    def reload(self, *, timeout_s: float = 10.0) -> None:
        """Rewrite alertmanager.yml and POST /-/reload (raises when it is rejected)."""
        self.write_config()
        httpjson.request("POST", f"{self.url}/-/reload", timeout_s=timeout_s)

    # -- v2 API -----------------------------------------------------------------------------

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]], *, timeout_s: float = 5.0) -> None:
        """POST /api/v2/alerts; each alert has labels, annotations, startsAt, optional endsAt."""
        httpjson.post_json(
            f"{self.url}/api/v2/alerts", [dict(alert) for alert in alerts], timeout_s=timeout_s
        )

    def resolve_alerts(
        self, alerts: Sequence[Mapping[str, Any]], *, timeout_s: float = 5.0
    ) -> None:
        """Re-post the alerts with endsAt = now, which is how a resolution is expressed."""
        now = rfc3339(datetime.now(UTC))
        self.post_alerts([{**alert, "endsAt": now} for alert in alerts], timeout_s=timeout_s)

    def alerts(
        self,
        matchers: Mapping[str, str] | None = None,
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        timeout_s: float = 5.0,
    ) -> list[dict[str, Any]]:
        """GET /api/v2/alerts, optionally filtered by equality matchers."""
        params: list[tuple[str, str]] = [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
        ]
        params += [
            ("filter", f"{name}={json.dumps(value)}") for name, value in (matchers or {}).items()
        ]
        url = f"{self.url}/api/v2/alerts?{urllib.parse.urlencode(params)}"
        return list(httpjson.get_json(url, timeout_s=timeout_s))

    def silence(
        self,
        matchers: Matchers,
        duration_s: float,
        *,
        comment: str = "telemetry_sandbox",
        created_by: str = "telemetry_sandbox",
        timeout_s: float = 5.0,
    ) -> str:
        """Create a silence through POST /api/v2/silences; returns its id."""
        if isinstance(matchers, Mapping):
            matcher_list = [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in matchers.items()
            ]
        else:
            matcher_list = [dict(matcher) for matcher in matchers]
        now = datetime.now(UTC)
        body = {
            "matchers": matcher_list,
            "startsAt": rfc3339(now),
            "endsAt": rfc3339(now + timedelta(seconds=duration_s)),
            "createdBy": created_by,
            "comment": comment,
        }
        answer = httpjson.post_json(f"{self.url}/api/v2/silences", body, timeout_s=timeout_s)
        return str(answer["silenceID"])

    def expire_silence(self, silence_id: str, *, timeout_s: float = 5.0) -> None:
        """DELETE /api/v2/silence/{id}."""
        httpjson.request("DELETE", f"{self.url}/api/v2/silence/{silence_id}", timeout_s=timeout_s)

    def silences(self, *, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """GET /api/v2/silences (all states)."""
        return list(httpjson.get_json(f"{self.url}/api/v2/silences", timeout_s=timeout_s))

    def __repr__(self) -> str:
        return f"<AlertmanagerServer {self.url} running={self.process.is_running}>"

    def _command(self, port: int) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.process.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK_HOST}:{port}",
            f"--web.external-url=http://{LOOPBACK_HOST}:{port}/",
            "--cluster.listen-address=",
            *self.extra_args,
        ]
