"""The monitoring half of the demo stack: the alert rule Prometheus evaluates and the
Alertmanager route that calls gatekeeper's webhook with its bearer token.

Act 3 depends on this chain being the real one (rule -> Prometheus -> Alertmanager -> webhook),
so the rule and the receiver are written as a platform team would write them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from telemetry_sandbox.alertmanager import WEBHOOK_RECEIVER, AlertmanagerServer

ALERT_NAME = "HighErrorRatio"
ALERT_THRESHOLD = 0.10
"""Share of 5xx above which a namespace is on fire; act 2's 5 % stays below it on purpose:
the gates, not the pager, are what stop a mildly broken release."""


def write_alert_rules(path: Path, *, threshold: float = ALERT_THRESHOLD) -> Path:
    """Write a Prometheus rule file with one critical, namespace-labelled alert."""
    ratio = (
        'sum by (namespace) (rate(http_requests_total{status=~"5.."}[5s]))'
        " / sum by (namespace) (rate(http_requests_total[5s]))"
    )
    document = {
        "groups": [
            {
                "name": "demo-release-health",
                "interval": "1s",
                "rules": [
                    {
                        "alert": ALERT_NAME,
                        "expr": f"{ratio} > {threshold}",
                        "for": "2s",
                        "labels": {"severity": "critical"},
                        "annotations": {
                            "summary": "{{ $labels.namespace }} answers "
                            "{{ $value | humanizePercentage }} of requests with 5xx",
                        },
                    }
                ],
            }
        ]
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class BearerAlertmanager(AlertmanagerServer):
    """The sandbox Alertmanager, its webhook receiver authenticated with a bearer token file
    (gatekeeper refuses unauthenticated webhook calls, as it should in a cluster)."""

    def __init__(self, webhook_url: str, *, token_file: Path, **kwargs: Any) -> None:
        super().__init__(webhook_url, **kwargs)
        self.token_file = token_file

    def config(self) -> dict[str, Any]:
        """The generated alertmanager.yml, plus `http_config.authorization` on the webhook."""
        document = super().config()
        for receiver in document["receivers"]:
            if receiver["name"] == WEBHOOK_RECEIVER:
                for webhook in receiver["webhook_configs"]:
                    webhook["http_config"] = {
                        "authorization": {
                            "type": "Bearer",
                            "credentials_file": str(self.token_file),
                        }
                    }
                    webhook["max_alerts"] = 0
        return document
