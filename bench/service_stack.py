"""`gatekeeper serve` as users run it, for the rollback and verdict-API benchmarks.

Two processes on loopback ports, both stopped on exit (and by the kernel if the bench dies):
the emulated Kubernetes API server (`python -m kube_emulator`) seeded with the pairs'
namespaces, Deployments and one IngressRoute per pair, and `gatekeeper serve --config FILE`
with a bearer-token file, leader election on (the default) and a kubeconfig for the emulator.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import workers
from telemetry_sandbox import ManagedProcess, httpjson

ROUTING = "routing"
STATE_NAMESPACE = "gatekeeper"


@dataclass(frozen=True)
class Pair:
    """A pair's names: `name`, its blue (active at start) and green namespaces, its route."""

    name: str
    blue: str
    green: str
    route: str


def pairs(prefix: str, count: int) -> list[Pair]:
    """`count` pairs named `<prefix>-<k>`."""
    return [Pair(f"{prefix}-{k}", f"{prefix}-{k}-blue", f"{prefix}-{k}-green",
                 f"{prefix}-{k}-live") for k in range(count)]


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _deployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": namespace, "labels": {"app": "api"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{
                                  "name": "api", "image": "registry.example.com/api:1.4.0"}]}}},
    }


def _route(pair: Pair) -> dict[str, Any]:
    return {
        "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
        "metadata": {"name": pair.route, "namespace": ROUTING},
        "spec": {"entryPoints": ["web"], "routes": [{
            "match": f"Host(`{pair.name}.example.com`)", "kind": "Rule",
            "services": [{"name": "api-service", "namespace": pair.blue, "port": 8080}]}]},
    }


def seed(all_pairs: list[Pair]) -> list[dict[str, Any]]:
    """Every object the pairs need; blue is live everywhere."""
    objects = [_namespace(ROUTING), _namespace(STATE_NAMESPACE)]
    for pair in all_pairs:
        objects += [_namespace(pair.blue), _namespace(pair.green),
                    _deployment(pair.blue), _deployment(pair.green), _route(pair)]
    return objects


@dataclass(frozen=True)
class Stack:
    """The running processes and how to talk to them."""

    url: str
    emulator_url: str
    token: str
    gatekeeper: ManagedProcess
    emulator: ManagedProcess

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header protected endpoints want."""
        return {"Authorization": f"Bearer {self.token}"}


def _config(all_pairs: list[Pair], *, kubeconfig: Path, token_file: Path, rule_file: Path,
            evaluation: Mapping[str, Any], policy: Mapping[str, Any],
            sources: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **sources,
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
        "evaluation": dict(evaluation),
        "rule_files": [str(rule_file)],
        "pairs": [{"name": p.name, "namespaces": [p.blue, p.green], "selector": "app=api",
                   "routes": [{"name": p.route, "namespace": ROUTING}]} for p in all_pairs],
        "policy": dict(policy),
        "auth": {"token_file": str(token_file)},
        "server": {"host": "127.0.0.1"},
    }


def wait_leading(url: str, *, timeout_s: float) -> None:
    """Until /readyz says the first evaluation is done and this replica holds the Lease."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpjson.get_json(f"{url}/readyz", timeout_s=5)
            if last.get("leader"):
                return
        except (OSError, httpjson.HTTPStatusError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"gatekeeper not ready and leading within {timeout_s}s: {last!r}")


@contextmanager
def running(all_pairs: list[Pair], *, rule_file: Path, evaluation: Mapping[str, Any],
            policy: Mapping[str, Any], sources: Mapping[str, Any] | None = None,
            ready_timeout_s: float = 120.0, profile: Path | None = None,
            request_log_size: int = 2000) -> Iterator[Stack]:
    """Start the emulator, then `gatekeeper serve`; both are stopped when the block ends.

    With `profile`, gatekeeper runs under cProfile and writes its statistics there on exit.
    `request_log_size` is how many requests the emulator keeps for `/_emulator/requests`.
    """
    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        work = Path(scratch)
        (work / "seed.yaml").write_text(yaml.safe_dump_all(seed(all_pairs)))
        token = secrets.token_hex(16)
        token_file = work / "token"
        token_file.write_text(token)
        kubeconfig = work / "kubeconfig"
        emulator = ManagedProcess("kube-emulator", lambda port: [
            sys.executable, "-m", "kube_emulator", "--port", str(port),
            "--objects", str(work / "seed.yaml"), "--kubeconfig-out", str(kubeconfig),
            "--request-log-size", str(request_log_size),
        ], ready_path="/readyz", env=workers.env(), ready_timeout_s=ready_timeout_s)
        with emulator:
            config = _config(all_pairs, kubeconfig=kubeconfig, token_file=token_file,
                             rule_file=rule_file, evaluation=evaluation, policy=policy,
                             sources=sources or {})
            (work / "gatekeeper.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
            gatekeeper = ManagedProcess("gatekeeper", lambda port: [
                sys.executable, *profiler, "-m", "gatekeeper", "serve",
                "--config", str(work / "gatekeeper.yaml"), "--port", str(port),
            ], ready_path="/healthz", env=workers.env(), ready_timeout_s=ready_timeout_s)
            with gatekeeper:
                wait_leading(gatekeeper.url, timeout_s=ready_timeout_s)
                yield Stack(url=gatekeeper.url, emulator_url=emulator.url, token=token,
                            gatekeeper=gatekeeper, emulator=emulator)
