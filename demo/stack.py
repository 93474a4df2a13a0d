"""Start the whole release loop on loopback, in throw-away directories, and stop all of it.

Order matters: gatekeeper's port is chosen first because Alertmanager's webhook receiver
points at it, and gatekeeper's configuration names Prometheus and Alertmanager. Every
process is a `ManagedProcess` (SIGTERM then SIGKILL, killed with its parent by the kernel),
so nothing outlives the demo, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demo import cluster as cl
from demo.monitoring import BearerAlertmanager, write_alert_rules
from demo.world import Load, PodLogs, Release, Traffic
from gatekeeper import crd
from gatekeeper.config import PairConfig
from telemetry_sandbox import (
    ManagedProcess,
    PrometheusServer,
    ScrapeTarget,
    SyntheticApp,
)

ROOT = Path(__file__).resolve().parent.parent
PAIR = "api"


@dataclass(frozen=True)
class Timing:
    """The production policy shortened for a three-minute demo, through configuration only."""

    interval: str = "1s"
    window: str = "15s"
    soak: str = "15s"
    consecutive_passes: int = 3
    observation: str = "20s"
    ready_delay_s: float = 2.0
    check_wait: str = "20s"
    """How long act 2's pipeline waits for a safe answer before giving up."""
    degrade_after_s: float = 4.0


FAST = Timing(window="10s", soak="10s", observation="12s", check_wait="12s",
              degrade_after_s=3.0)


@dataclass
class Stack:
    """Handles to everything that runs, for the story and the narration."""

    workdir: Path
    cluster: cl.Cluster
    prometheus: PrometheusServer
    alertmanagers: tuple[BearerAlertmanager, ...]
    """An HA pair, unclustered: each notifies the webhook, so gatekeeper sees every alert
    twice and must still roll back once."""
    gatekeeper: ManagedProcess
    emulator: ManagedProcess
    apps: dict[str, SyntheticApp]
    traffic: Traffic
    config_path: Path
    token_file: Path
    timing: Timing
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def alertmanager(self) -> BearerAlertmanager:
        """The Alertmanager gatekeeper's `critical-alerts` gate reads."""
        return self.alertmanagers[0]

    @property
    def gatekeeper_url(self) -> str:
        """Base URL of `gatekeeper serve`."""
        return self.gatekeeper.url

    def urls(self) -> dict[str, str]:
        """What a curious reader can open while the demo runs."""
        return {
            "gatekeeper API": f"{self.gatekeeper.url}/api/v1/pairs/{PAIR}",
            "gatekeeper metrics": f"{self.gatekeeper.url}/metrics",
            "Prometheus UI": f"{self.prometheus.url}/graph",
            **{f"Alertmanager UI ({name})": f"{am.url}/#/alerts"
               for name, am in zip("ab", self.alertmanagers, strict=False)},
            "Kubernetes API (emulated)": self.emulator.url,
        }


def releases(timing: Timing) -> dict[str, Release]:
    """The four image tags of the story and how each behaves."""
    return {
        "1.4.0": Release("1.4.0", "release N (in production)"),
        "1.5.0": Release("1.5.0", "release N+1 (healthy)"),
        "1.6.0": Release("1.6.0", "release N+2 (broken: 5% errors)", error_ratio=0.05),
        "1.7.0": Release("1.7.0", "release N+3 (latent defect under production traffic)",
                         degrades_after_s=timing.degrade_after_s),
    }


DEMO_RATE_MARGIN = 0.02
"""The demo's apps serve 15-25 req/s with no errors and must pass within seconds. With the
shipped settings the sequential comparisons rightly stay pending for minutes (no one can
tell 0.25 % from 0 % errors, or a 3x latency tail, in a few hundred requests), so the demo
asks for 90 % confidence, tolerates 2 pp more 5xx and must catch a 5x latency tail (N+2's
5 % errors still fail the absolute error-rate rule and the 5xx comparison)."""


def demo_rules(directory: Path) -> Path:
    """The shipped rules with the demo's looser count comparisons, written into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in sorted((ROOT / "rules").glob("*.yaml")):
        data = yaml.safe_load(source.read_text())
        for rule in data.get("rules", []) if isinstance(data, dict) else []:
            if isinstance(rule.get("rate"), dict):
                rule["rate"].update(allowed_margin=DEMO_RATE_MARGIN, confidence=0.9)
            if isinstance(rule.get("latency"), dict):
                rule["latency"].update(confidence=0.9, detect=5)
        (directory / source.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return directory


VALIDATION_RPS = 15.0
"""gatekeeper's synthetic load on the dark namespace while it validates (the pair's `load`):
the dark gets no user traffic, so this is where act 1's samples come from."""


MIRROR_PERCENT = 20
"""Percent of production requests gatekeeper has Traefik copy to the dark while it validates
(the pair's `mirroring`; the traffic model sends the copies as Traefik would)."""


def gatekeeper_config(
    *, prometheus: str, alertmanager: str, kubeconfig: Path, token_file: Path, port: int,
    timing: Timing, rules: Path | None = None, apps: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The configuration file `gatekeeper serve` reads: the shipped rules, short windows, and
    synthetic load for the dark. `apps` maps each namespace to the loopback address its app
    listens on, which stands in for the namespace's Service (`service_addresses`)."""
    return {
        "prometheus": {"url": prometheus, "timeout": "3s"},
        "alertmanager": {"url": alertmanager, "timeout": "3s"},
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig),
                       "request_timeout": "5s"},
        "evaluation": {"interval": timing.interval, "window": timing.window,
                       "source_timeout": "3s"},
        "rule_files": [str(rules or ROOT / "rules")],
        # The pair is a BlueGreenPair object in the cluster (pair_object), not listed here.
        "service_addresses": {f"api-service.{namespace}.svc:8080": address
                              for namespace, address in (apps or {}).items()},
        "policy": {
            "auto_flip": True,
            "soak": timing.soak,
            "consecutive_passes": timing.consecutive_passes,
            "observation": timing.observation,
            "auto_scale_down": True,
            "scale_down_keep": 0,
            # The demo shows the Alertmanager path; gate failures alone would also roll
            # back, after this many evaluations.
            "rollback_on_gate_failures": 30,
            "cooldown": "60s",
            "ready_timeout": "60s",
        },
        "webhook": {"matchers": {"severity": "critical"}, "match_namespace": True},
        "auth": {"token_file": str(token_file), "webhook_requires_token": True},
        "state": {"namespace": "gatekeeper"},
        "leader_election": {"namespace": "gatekeeper", "lease_duration": "10s",
                            "renew_deadline": "6s", "retry_period": "1s"},
        "server": {"host": "127.0.0.1", "port": port},
    }


def pair_object() -> dict[str, Any]:
    """The demo's pair as the app team declares it: a BlueGreenPair in its namespace
    (docs/pair-objects.md); gatekeeper reads it at start and keeps its record in its status
    (`kubectl get bgp -A` shows the phase and verdict)."""
    pair = PairConfig.model_validate({
        "name": PAIR,
        "namespaces": list(cl.NAMESPACES),
        "routes": [{"kind": "TraefikService", "name": cl.SERVICE_NAME,
                    "namespace": cl.ROUTE_NAMESPACE}],
        # The demo's production requests are GETs: copying them writes nothing.
        "mirroring": {"percent": MIRROR_PERCENT, "max_body_size": 65536,
                      "acknowledge_shared_writes": True},
        "selector": cl.SELECTOR,
        "replicas": {cl.DEPLOYMENT: 2},
        "load": {
            "url": "http://api-service.${namespace}.svc:8080",
            "rate": VALIDATION_RPS, "ramp": "2s", "concurrency": 16,
            "requests": [
                {"path": "/api/franchises/lsu-tigers", "expect_json": {"id": "lsu-tigers"},
                 "require_fields": ["links.self"], "max_latency": "2s", "weight": 2},
                {"path": "/api/franchises", "require_fields": ["items"],
                 "max_latency": "2s"},
                {"path": "/api/standings", "max_latency": "2s"},
            ],
        },
    })
    return crd.manifest_of(pair, cl.ROUTE_NAMESPACE)


@contextlib.contextmanager
def running(timing: Timing, *, deadline: float, log_dir: Path) -> Iterator[Stack]:
    """Start everything, yield it, and stop all of it on the way out (even on Ctrl-C)."""
    workdir = Path(tempfile.mkdtemp(prefix="gatekeeper-demo-"))
    stoppers: list[Callable[[], None]] = []
    try:
        yield _start(workdir, timing, deadline, stoppers)
    finally:
        # A second Ctrl-C must not cut the teardown short; every stop below is bounded.
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for stop in reversed(stoppers):
                with contextlib.suppress(Exception):
                    stop()
            _keep_logs(workdir, log_dir)
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _start(workdir: Path, timing: Timing, deadline: float,
           stoppers: list[Callable[[], None]]) -> Stack:
    token_file = workdir / "token"
    token_file.write_text(secrets.token_urlsafe(24))
    token_file.chmod(0o600)

    seed = workdir / "cluster.yaml"
    seed.write_text(cl.seed_objects(version="1.4.0", replicas=2) + "---\n"
                    + yaml.safe_dump_all([crd.definition(), pair_object()], sort_keys=False))
    kubeconfig = workdir / "kubeconfig"
    emulator = ManagedProcess(
        "kube-emulator",
        lambda port: [sys.executable, "-m", "kube_emulator", "--objects", str(seed),
                      "--port", str(port), "--ready-delay", str(timing.ready_delay_s),
                      "--kubeconfig-out", str(kubeconfig)],
        ready_path="/version",
        workdir=workdir / "kube-emulator",
    )
    stoppers.append(emulator.stop)
    emulator.start()
    _wait_for_file(kubeconfig, 10.0)
    cluster = cl.Cluster(emulator.url)

    pod_logs = PodLogs(cluster).start()
    stoppers.append(pod_logs.stop)
    apps: dict[str, SyntheticApp] = {}
    for namespace in cl.NAMESPACES:
        app = SyntheticApp(namespace, on_log_lines=pod_logs)
        stoppers.append(app.stop_in_thread)
        apps[namespace] = app.start_in_thread()

    gatekeeper = ManagedProcess(
        "gatekeeper",
        lambda port: [sys.executable, "-m", "gatekeeper", "--log-level", "info",
                      "--log-format", "json", "serve", "--config",
                      str(workdir / "gatekeeper.yaml"), "--port", str(port)],
        ready_path="/readyz",
        workdir=workdir / "gatekeeper",
        ready_timeout_s=40.0,
    )
    webhook = f"{gatekeeper.url}/api/v1/alertmanager"
    alertmanagers = tuple(
        BearerAlertmanager(webhook, token_file=token_file, group_wait_s=0.0,
                           group_interval_s=1.0, repeat_interval_s=3.0,
                           workdir=workdir / f"alertmanager-{name}")
        for name in "ab"
    )
    for alertmanager in alertmanagers:
        stoppers.append(alertmanager.stop)
        alertmanager.start()

    rules = write_alert_rules(workdir / "demo-alerts.yaml")
    prometheus = PrometheusServer(
        [
            ScrapeTarget("api", tuple(app.address for app in apps.values())),
            ScrapeTarget("gatekeeper", (f"127.0.0.1:{gatekeeper.port}",)),
        ],
        rule_files=[rules],
        alertmanagers=[alertmanager.address for alertmanager in alertmanagers],
        workdir=workdir / "prometheus",
    )
    stoppers.append(prometheus.stop)
    prometheus.start()

    config_path = workdir / "gatekeeper.yaml"
    config_path.write_text(yaml.safe_dump(gatekeeper_config(
        prometheus=prometheus.url, alertmanager=alertmanagers[0].url, kubeconfig=kubeconfig,
        token_file=token_file, port=gatekeeper.port, timing=timing,
        rules=demo_rules(workdir / "rules"),
        apps={namespace: app.address for namespace, app in apps.items()}), sort_keys=False))

    traffic = Traffic(cluster, apps, releases(timing), Load(), deadline=deadline).start()
    stoppers.append(traffic.stop)
    stoppers.append(gatekeeper.stop)
    gatekeeper.start()
    return Stack(
        workdir=workdir, cluster=cluster, prometheus=prometheus, alertmanagers=alertmanagers,
        gatekeeper=gatekeeper, emulator=emulator, apps=apps, traffic=traffic,
        config_path=config_path, token_file=token_file, timing=timing, stoppers=stoppers,
    )


def _wait_for_file(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not written within {timeout_s}s")
        time.sleep(0.05)


def _keep_logs(workdir: Path, log_dir: Path) -> None:
    """Copy every process log next to the picture: the first place to look when an act fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for stale in log_dir.glob("*.log"):  # an earlier run's logs would mislead
        with contextlib.suppress(OSError):
            stale.unlink()
    for log in workdir.glob("*/*.log"):
        with contextlib.suppress(OSError):
            shutil.copy(log, log_dir / f"{log.parent.name}.log")
