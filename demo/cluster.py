"""The emulated cluster as the demo's pipeline and traffic model see it: the seed objects,
and the few reads and writes a release pipeline makes (Deployment images, the live route).

Everything goes through the emulator's ordinary Kubernetes API (plus its `/_emulator/` admin
endpoints for pod logs), exactly as kubectl would, so gatekeeper's watch sees real events.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import yaml

from telemetry_sandbox import httpjson
from telemetry_sandbox.traefik_follow import Dispatch, dispatch

BLUE = "production-blue"
GREEN = "production-green"
NAMESPACES = (BLUE, GREEN)
ROUTE_NAMESPACE = "routing"
ROUTE_NAME = "api-live"
SERVICE_NAME = "api-weighted"
"""The weighted TraefikService `api-live` routes through: gatekeeper owns it (flips, mirroring)."""
DEPLOYMENT = "api"
SELECTOR = "app=api"
IMAGE = "registry.example.com/api"
_HEADERS = {"Authorization": "Bearer demo"}
_SERVICE_PATH = (
    f"/apis/traefik.io/v1alpha1/namespaces/{ROUTE_NAMESPACE}/traefikservices/{SERVICE_NAME}"
)


def seed_objects(*, version: str, replicas: int) -> str:
    """The starting cluster: blue serves `version` with `replicas` pods, green (the dark
    namespace) runs the same images scaled to 0, and `api-live` sends traffic to blue
    through the weighted TraefikService `api-weighted` (the one gatekeeper switches)."""
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        for name in (*NAMESPACES, ROUTE_NAMESPACE, "gatekeeper")
    ]
    for namespace in NAMESPACES:
        documents.append(_deployment(namespace, version, replicas if namespace == BLUE else 0))
        documents.append({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api-service", "namespace": namespace},
            "spec": {"selector": {"app": "api"},
                     "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
        })
    documents.append({
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": ROUTE_NAME, "namespace": ROUTE_NAMESPACE},
        "spec": {
            "entryPoints": ["websecure"],
            "routes": [{
                "match": "Host(`api.example.com`)",
                "kind": "Rule",
                "services": [{"name": SERVICE_NAME, "namespace": ROUTE_NAMESPACE,
                              "kind": "TraefikService"}],
            }],
        },
    })
    documents.append({
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": {"name": SERVICE_NAME, "namespace": ROUTE_NAMESPACE},
        "spec": {"weighted": {"services": [
            {"name": "api-service", "namespace": BLUE, "port": 8080, "weight": 100}]}},
    })
    return yaml.safe_dump_all(documents, sort_keys=False)


def _deployment(namespace: str, version: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": namespace, "labels": {"app": "api"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{
                    "name": "api",
                    "image": f"{IMAGE}:{version}",
                    "ports": [{"containerPort": 8080}],
                }]},
            },
        },
    }


@dataclass(frozen=True)
class NamespaceView:
    """One namespace's Deployment as the traffic model needs it."""

    version: str
    replicas: int
    ready: int


class Cluster:
    """Blocking client for the emulated API server (every call bounded by a timeout)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str) -> Any:
        _status, body = httpjson.request("GET", self.url + path, headers=_HEADERS, timeout_s=5)
        return yaml.safe_load(body)

    def dispatch(self) -> Dispatch:
        """Where Traefik sends `api-live`'s requests right now (users, mirrored copies)."""
        return dispatch(self._get(_SERVICE_PATH))

    def active(self) -> str:
        """The namespace that answers most of `api-live`'s users right now."""
        users = self.dispatch().users
        return max(users, key=lambda ns: users[ns]) if users else ""

    def namespace(self, namespace: str) -> NamespaceView:
        """Version, desired and ready replicas of the `api` Deployment."""
        deployment = self._get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{DEPLOYMENT}")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        status = deployment.get("status") or {}
        return NamespaceView(
            version=image.rpartition(":")[2],
            replicas=int(deployment["spec"].get("replicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
        )

    def deploy(self, namespace: str, version: str) -> None:
        """What a release pipeline does: set the Deployment's image (kubectl set image)."""
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "api", "image": f"{IMAGE}:{version}"}]}}}}
        httpjson.request(
            "PATCH",
            f"{self.url}/apis/apps/v1/namespaces/{namespace}/deployments/{DEPLOYMENT}",
            payload=patch,
            headers={**_HEADERS, "Content-Type": "application/strategic-merge-patch+json"},
            timeout_s=5,
        )

    def ready_pods(self, namespace: str) -> list[str]:
        """Names of the namespace's Ready `api` pods."""
        query = urllib.parse.urlencode({"labelSelector": SELECTOR})
        pods = self._get(f"/api/v1/namespaces/{namespace}/pods?{query}")
        names = []
        for pod in pods.get("items") or []:
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                names.append(str(pod["metadata"]["name"]))
        return sorted(names)

    def append_logs(self, namespace: str, pod: str, lines: list[str]) -> None:
        """Write container log lines the way the app's stdout would reach the kubelet."""
        httpjson.request(
            "POST",
            f"{self.url}/_emulator/logs/{namespace}/{pod}",
            payload={"lines": lines},
            headers=_HEADERS,
            timeout_s=5,
        )
