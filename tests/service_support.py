"""Helpers shared by the service tests: a per-test cluster seed, a config file, a client.

Every test uses its own namespace names (the Prometheus is shared by the whole session) and
its own emulated API server, so tests never see each other's pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client

from gatekeeper.config import LoadedConfig, load_config
from gatekeeper.kubeclient import read_json

_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-3f9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = "api-live"
OLD, NEW = "registry.example.com/api:1.4.0", "registry.example.com/api:1.5.0"

ERROR_RATE_RULE = {
    "name": "error-rate",
    "description": "Share of requests answered 5xx.",
    "source": "prometheus",
    "query": (
        '(sum by (namespace) (rate(http_requests_total{namespace=~"${namespaces}", '
        'status=~"5.."}[${window}])) or sum by (namespace) (rate(http_requests_total'
        '{namespace=~"${namespaces}"}[${window}])) * 0) / sum by (namespace) '
        '(rate(http_requests_total{namespace=~"${namespaces}"}[${window}]))'
    ),
    "samples_query": (
        'sum by (namespace) (increase(http_requests_total{namespace=~"${namespaces}"}'
        "[${window}]))"
    ),
    "min_samples": 20,
    "pass": ["< 0.01"],
    "weight": 3,
    "key": True,
}
PODS_READY_RULE = {
    "name": "pods-ready",
    "description": "Every pod Ready.",
    "source": "kubernetes",
    "check": "pods_ready",
    "pass": ["== 1"],
    "weight": 1,
    "key": True,
}


def namespace(name: str) -> dict[str, Any]:
    """A Namespace object."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(ns: str, image: str, replicas: int) -> dict[str, Any]:
    """Deployment `api` running `image`."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": ns, "labels": {"app": "api"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [{"name": "api", "image": image}]}},
        },
    }


def ingressroute(routing: str, active: str) -> dict[str, Any]:
    """The IngressRoute sending all traffic to `active`."""
    return {
        "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
        "metadata": {"name": ROUTE, "namespace": routing},
        "spec": {"entryPoints": ["web"], "routes": [{
            "match": "Host(`api.example.com`)", "kind": "Rule",
            "services": [{"name": "api-service", "namespace": active, "port": 8080}]}]},
    }


def seed(blue: str, green: str, routing: str, *, blue_image: str = OLD,
         green_image: str = OLD, green_replicas: int = 2) -> list[dict[str, Any]]:
    """Blue live on `blue_image`, green dark on `green_image`, the route in `routing`."""
    return [
        namespace(blue), namespace(green), namespace(routing), namespace("gatekeeper"),
        deployment(blue, blue_image, 2), deployment(green, green_image, green_replicas),
        ingressroute(routing, blue),
    ]


def write_config(
    tmp_path: Path,
    pairs: list[tuple[str, str, str, str]],
    *,
    prometheus_url: str | None,
    policy: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    evaluation: dict[str, Any] | None = None,
    **extra: Any,
) -> LoadedConfig:
    """Write rules and configuration; pairs are (name, blue, green, routing namespace)."""
    rule_list = rules if rules is not None else [ERROR_RATE_RULE, PODS_READY_RULE]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": rule_list}))
    config: dict[str, Any] = {
        "evaluation": {"interval": "1s", "window": "5s", "source_timeout": "3s",
                       **(evaluation or {})},
        "rule_files": ["rules.yaml"],
        "pairs": [{"name": name, "namespaces": [blue, green], "selector": "app=api",
                   "routes": [{"name": ROUTE, "namespace": routing}]}
                  for name, blue, green, routing in pairs],
        "policy": {"auto_flip": True, "soak": "2s", "consecutive_passes": 3,
                   "observation": "1h", "rollback_on_gate_failures": 3, "cooldown": "60s",
                   "ready_timeout": "10s", **(policy or {})},
        "leader_election": {"enabled": False},
        **extra,
    }
    if prometheus_url is not None:
        config["prometheus"] = {"url": prometheus_url, "timeout": "3s"}
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def rfc3339(at: float | None = None) -> str:
    """A time as Alertmanager writes `startsAt` (default: now), e.g. for a new alert."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def wait_until(predicate: Callable[[], Any], *, within: float, interval: float = 0.1,
                     what: str = "condition") -> Any:
    """Poll a (sync or async) predicate until truthy; AssertionError after `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(interval)


async def route_target(api: client.ApiClient, routing: str) -> str:
    """Where the IngressRoute sends traffic now."""
    body = await read_json(client.CustomObjectsApi(api).get_namespaced_custom_object,
                           "traefik.io", "v1alpha1", routing, "ingressroutes", ROUTE)
    return str(body["spec"]["routes"][0]["services"][0]["namespace"])


async def replicas(api: client.ApiClient, ns: str) -> int:
    """Desired replicas of Deployment `api`."""
    body = await read_json(client.AppsV1Api(api).read_namespaced_deployment, "api", ns)
    return int(body["spec"]["replicas"])


async def set_image(api: client.ApiClient, ns: str, image: str) -> None:
    """Deploy a new release into `ns` (what a pipeline's kustomize edit does)."""
    body = await read_json(client.AppsV1Api(api).read_namespaced_deployment, "api", ns)
    body["spec"]["template"]["spec"]["containers"][0]["image"] = image
    await read_json(client.AppsV1Api(api).replace_namespaced_deployment, "api", ns, body)


async def get_json(session: aiohttp.ClientSession, url: str,
                   **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """(status, JSON body)."""
    async with session.get(url, **kwargs) as response:
        return response.status, await response.json()


async def post_json(session: aiohttp.ClientSession, url: str, body: Any = None, *,
                    headers: dict[str, str] | None = None, **kwargs: Any
                    ) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a POST with the test token unless headers are given."""
    async with session.post(url, json=body, headers=AUTH if headers is None else headers,
                            **kwargs) as response:
        return response.status, await response.json()


def free_port() -> int:
    """A loopback port nothing listens on (for an unreachable source)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def route_targets(emulator: Any, routes: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Where each IngressRoute `(namespace, name)` sends traffic now, `{"ns/name": target}`,
    read from the emulator's store (its Python API: never faulted, never logged)."""
    pointed = {}
    for namespace, name in routes:
        body = emulator.get_object("traefik.io/v1alpha1", "IngressRoute", name, namespace)
        assert body is not None, f"no IngressRoute {namespace}/{name}"
        pointed[f"{namespace}/{name}"] = body["spec"]["routes"][0]["services"][0]["namespace"]
    return pointed


@contextlib.contextmanager
def emulator_process(kubeconfig: Path, *args: str) -> Iterator[str]:
    """`python -m kube_emulator ARGS` as its own process on a free loopback port; yields its
    URL once it accepts connections and has written `kubeconfig`. Stopped afterwards
    (terminate, then kill), its output pipe closed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kube_emulator", "--port", "0", *args,
         "--kubeconfig-out", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=_ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once it accepts connections
        assert "listening on" in line, line
        deadline = time.monotonic() + 10
        while not kubeconfig.is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield line.split(" on ", 1)[1].strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


async def webhook_receiver(aiohttp_server: Any, tmp_path: Path
                           ) -> tuple[list[dict[str, Any]], Path]:
    """A loopback webhook receiver (pytest-aiohttp's `aiohttp_server`, a stand-in for a chat
    or incident tool): the JSON bodies it received, and a file holding its URL for a
    receiver's `url_file`."""
    from aiohttp import web

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = await aiohttp_server(app)
    url_file = tmp_path / "webhook-url"
    url_file.write_text(str(receiver.make_url("/hook")))
    return received, url_file


class ServedAPI:
    """GET and POST (with the test token) to a `gatekeeper serve` process at `self.url`; each
    call opens its own session, and bodies are read as JSON whatever their content type."""

    url: str

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as response:
            return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, \
                http.post(self.url + path, json=body, headers=AUTH) as response:
            return response.status, await response.json(content_type=None)


def writes(emulator: Any) -> list[str]:
    """Mutating requests the emulated API server answered (`PATCH /apis/...`)."""
    return [f"{r.method} {r.path}" for r in emulator.requests.records()
            if r.method in ("POST", "PUT", "PATCH", "DELETE")]


async def settled_writes(emulator: Any, *, quiet: float = 1.5, within: float = 20) -> int:
    """How many writes the emulator answered, once none came for `quiet` seconds.

    An action's answer can come before its trailing writes (the Event, the state record)
    and the loop's next tick; on a loaded machine those land later. A test that checks
    "nothing changed" counts from here, not from a moment that may fall in between.
    """
    deadline = time.monotonic() + within
    count, since = len(writes(emulator)), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"the emulator's writes did not settle within {within}s")
        await asyncio.sleep(0.1)
        now = len(writes(emulator))
        if now != count:
            count, since = now, time.monotonic()
    return count


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample from a Prometheus exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def uncache_routes(service: Any, emulator: Any) -> Any:
    """Make the service read its routes afresh (a GET per route) from now on: refuse the
    route watches and drop the open ones, then wait until no route stream is current.
    For tests that slow or fault route GETs, which a tick skips while the watch cache
    answers. Returns the refusing fault rule (cleared with the emulator's faults)."""
    rule = emulator.faults.add(status=500, verb="watch", path="ingressroutes", times=10_000)
    emulator.drop_watches()
    streams = service.controller.ticker.cache.streams

    def routes_uncached() -> bool:
        return not any(state.live for target, state in streams.items()
                       if target.resource.plural == "ingressroutes")

    await wait_until(routes_uncached, within=10, what="no route watch current")
    return rule


async def serve_pair_objects(tmp_path: Path, kube_api: client.ApiClient,
                             aiohttp_server: Any) -> tuple[Any, Any]:
    """The service `gatekeeper serve` builds over the BlueGreenPair objects in the emulated
    cluster (no configured pair; judged on pod readiness, no automatic flip) and its test
    server: (Service, TestServer)."""
    import dataclasses

    from gatekeeper import pairobjects
    from gatekeeper.service.app import create_service

    loaded = write_config(tmp_path, [], prometheus_url=None, rules=[PODS_READY_RULE],
                          policy={"auto_flip": False})
    config, _found = await pairobjects.resolve(kube_api, loaded.config)
    service = create_service(dataclasses.replace(loaded, config=config), kube_api,
                             token=TOKEN)
    return service, await aiohttp_server(service.app)
