"""A real Prometheus server for tests and the demo: throw-away TSDB, loopback port, 1s scrapes.

Gatekeeper's queries must be exercised against real PromQL semantics (rate windows,
extrapolation, NaN for 0/0, staleness), so the sandbox runs the actual binary instead of
faking the HTTP API.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from telemetry_sandbox import httpjson
from telemetry_sandbox.durations import format_duration
from telemetry_sandbox.loopback import LOOPBACK_HOST, require_loopback_target
from telemetry_sandbox.processes import ConfiguredServer, ManagedProcess

__all__ = ["PrometheusServer", "ScrapeTarget", "values_by_label"]

DEFAULT_PROMETHEUS_BIN = "/usr/bin/prometheus"

Result = list[dict[str, Any]]
"""The `data.result` list of an instant query."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job: static loopback `host:port` targets."""

    job: str
    targets: tuple[str, ...]
    honor_labels: bool = False
    metrics_path: str = "/metrics"
    scrape_interval_s: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        object.__setattr__(self, "targets", tuple(self.targets))
        for target in self.targets:
            require_loopback_target(target)

    def to_config(self) -> dict[str, Any]:
        """The `scrape_configs` entry for prometheus.yml."""
        static: dict[str, Any] = {"targets": list(self.targets)}
        if self.labels:
            static["labels"] = dict(self.labels)
        config: dict[str, Any] = {
            "job_name": self.job,
            "metrics_path": self.metrics_path,
            "honor_labels": self.honor_labels,
            "static_configs": [static],
        }
        if self.scrape_interval_s is not None:
            config["scrape_interval"] = format_duration(self.scrape_interval_s)
            config["scrape_timeout"] = format_duration(self.scrape_interval_s)
        return config


class PrometheusServer(ConfiguredServer):
    """Runs `prometheus` with a generated config; `query()`/`wait_for()` help tests assert."""

    def __init__(
        self,
        targets: Sequence[ScrapeTarget] = (),
        *,
        scrape_interval_s: float = 1.0,
        evaluation_interval_s: float = 1.0,
        rule_files: Sequence[Path | str] = (),
        alertmanagers: Sequence[str] = (),
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        workdir: Path | str | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.binary = binary or os.environ.get("PROMETHEUS_BIN", DEFAULT_PROMETHEUS_BIN)
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s
        self.targets: list[ScrapeTarget] = list(targets)
        self.rule_files = [Path(path).resolve() for path in rule_files]
        self.alertmanagers = [require_loopback_target(target) for target in alertmanagers]
        self.extra_args = list(extra_args)
        self.process = ManagedProcess(
            "prometheus",
            self._command,
            ready_path="/-/ready",
            workdir=workdir,
            ready_timeout_s=ready_timeout_s,
        )
        self.config_path = self.process.workdir / "prometheus.yml"

    # -- configuration ----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The prometheus.yml document as a dict."""
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": format_duration(self.scrape_interval_s),
                "scrape_timeout": format_duration(self.scrape_interval_s),
                "evaluation_interval": format_duration(self.evaluation_interval_s),
            },
            "scrape_configs": [target.to_config() for target in self.targets],
        }
        if self.rule_files:
            config["rule_files"] = [str(path) for path in self.rule_files]
        if self.alertmanagers:
            config["alerting"] = {
                "alertmanagers": [
                    {"api_version": "v2", "static_configs": [{"targets": self.alertmanagers}]}
                ]
            }
        return config

    def write_config(self) -> Path:
        """Write prometheus.yml into the work directory."""
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    def add_scrape_target(
        self,
        targets: str | Sequence[str],
        *,
        job: str,
        honor_labels: bool = False,
        metrics_path: str = "/metrics",
        reload: bool = True,
    ) -> ScrapeTarget:
        """Add a scrape job (replacing one with the same name) and reload if running."""
        target = ScrapeTarget(
            job=job,
            targets=(targets,) if isinstance(targets, str) else tuple(targets),
            honor_labels=honor_labels,
            metrics_path=metrics_path,
        )
        self.targets = [existing for existing in self.targets if existing.job != job]
        self.targets.append(target)
        if reload and self.process.is_running:
            self.reload()
        return target

    def remove_scrape_job(self, job: str, *, reload: bool = True) -> None:
        """Drop a scrape job and reload if running."""
        self.targets = [existing for existing in self.targets if existing.job != job]
        if reload and self.process.is_running:
            self.reload()

    def set_rule_files(self, rule_files: Sequence[Path | str], *, reload: bool = True) -> None:
        """Replace the rule files and reload if running."""
        self.rule_files = [Path(path).resolve() for path in rule_files]
        if reload and self.process.is_running:
            self.reload()

    def reload(self, *, timeout_s: float = 10.0) -> None:
        """Rewrite prometheus.yml and POST /-/reload (raises when Prometheus rejects it)."""
        self.write_config()
        httpjson.request("POST", f"{self.url}/-/reload", timeout_s=timeout_s)

    # -- queries ----------------------------------------------------------------------------

    def query(
        self, promql: str, *, at: float | None = None, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Instant query; returns the `data` object (`resultType`, `result`)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        answer = httpjson.get_json(url, timeout_s=timeout_s)
        if answer.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {answer}")
        return dict(answer["data"])

    def query_result(self, promql: str, *, timeout_s: float = 5.0) -> Result:
        """Instant query; returns just the `result` list."""
        return list(self.query(promql, timeout_s=timeout_s)["result"])

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[Result], bool] | None = None,
        timeout_s: float = 30.0,
        *,
        interval_s: float = 0.25,
    ) -> Result:
        """Poll until the query's result satisfies `predicate` (default: non-empty).

        Tests need this to wait for scrapes to land and rate() windows to fill.
        Raises TimeoutError quoting the last result when the deadline passes.
        """
        check = predicate or (lambda result: bool(result))
        deadline = time.monotonic() + timeout_s
        last: Result | Exception | None = None
        while True:
            try:
                last = self.query_result(promql, timeout_s=min(5.0, timeout_s))
                if check(last):
                    return last
            except (OSError, RuntimeError, ValueError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{promql!r} did not satisfy the predicate within {timeout_s}s; last: {last!r}"
                )
            time.sleep(interval_s)

    def wait_for_scrapes(self, job: str | None = None, *, timeout_s: float = 30.0) -> Result:
        """Wait until every target (of `job`, or of all jobs) has been scraped successfully.

        Prometheus 2.42 applies new targets only every 5 s (discovery throttle), so the first
        sample of a fresh server or a reloaded job arrives about 5-6 s later.
        """
        jobs = [job] if job is not None else [target.job for target in self.targets]
        expected = sum(len(t.targets) for t in self.targets if t.job in jobs)
        selector = "|".join(jobs)
        return self.wait_for(
            f'up{{job=~"{selector}"}} == 1',
            lambda result: len(result) >= expected,
            timeout_s=timeout_s,
        )

    def query_config(self, *, timeout_s: float = 5.0) -> str:
        """The configuration Prometheus is actually running (GET /api/v1/status/config)."""
        answer = httpjson.get_json(f"{self.url}/api/v1/status/config", timeout_s=timeout_s)
        return str(answer["data"]["yaml"])

    def targets_health(self, *, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Active targets from /api/v1/targets (scrapeUrl, health, lastError...)."""
        answer = httpjson.get_json(f"{self.url}/api/v1/targets", timeout_s=timeout_s)
        return list(answer["data"]["activeTargets"])

    def __repr__(self) -> str:
        return f"<PrometheusServer {self.url} running={self.process.is_running}>"

    def _command(self, port: int) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.process.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK_HOST}:{port}",
            f"--web.external-url=http://{LOOPBACK_HOST}:{port}/",
            "--web.enable-lifecycle",
            "--web.enable-remote-write-receiver",
            *self.extra_args,
        ]


def values_by_label(result: Result, label: str = "namespace") -> dict[str, float]:
    """Map an instant vector to {label value: float}; NaN stays NaN (0/0 in PromQL)."""
    return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in result}
