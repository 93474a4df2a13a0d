"""Traefik API-group discovery through the emulated API server and the real client.

A route without `api_group` gets the group the cluster serves (GET /apis); a configured
group the cluster does not serve, or no Traefik group at all, is a RouteGroupError naming the
group and the key to set, before anything else talks to the routes.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper.config import Config
from gatekeeper.routers import discovery
from gatekeeper.routers.discovery import RouteGroupError
from tests.fixtures.kube import BLUE, GREEN, ROUTE_NAME, ROUTING, bluegreen_seed
from tests.service_support import emulator_process

OLD, NEW = "traefik.containo.us", "traefik.io"


def _config(**route: str) -> Config:
    return Config.model_validate({"pairs": [{
        "name": "production", "namespaces": [BLUE, GREEN],
        "routes": [{"name": ROUTE_NAME, "namespace": ROUTING, **route}]}]})


def _seed_in(group: str) -> list[dict]:
    objects = copy.deepcopy(bluegreen_seed())
    for obj in objects:
        if obj["kind"] == "IngressRoute":
            obj["apiVersion"] = f"{group}/v1alpha1"
    return objects


async def test_discovery_lists_the_served_traefik_groups(kube_emulator, kube_api):
    """Both groups by default; a group whose CRDs are absent is not listed."""
    assert await discovery.served_groups(kube_api) == {NEW, OLD}
    kube_emulator.absent_groups.add(NEW)
    assert await discovery.served_groups(kube_api) == {OLD}


async def test_unset_group_is_discovered_as_the_only_served_one(kube_emulator, kube_api):
    """The design document's cluster (traefik.containo.us only): the route gets that group."""
    kube_emulator.absent_groups.add(NEW)
    kube_emulator.load(_seed_in(OLD))
    resolved = await discovery.resolve_route_groups(kube_api, _config())
    assert resolved.pairs[0].routes[0].api_group == OLD
    kube_emulator.absent_groups.clear()
    kube_emulator.absent_groups.add(OLD)
    resolved = await discovery.resolve_route_groups(kube_api, _config())
    assert resolved.pairs[0].routes[0].api_group == NEW


@pytest.mark.parametrize("group", [OLD, NEW])
async def test_both_served_picks_the_group_holding_the_route(kube_emulator, kube_api, group):
    """During a migration both groups are served: the one holding the object wins."""
    kube_emulator.load(_seed_in(group))
    kube_emulator.requests.clear()
    resolved = await discovery.resolve_route_groups(kube_api, _config())
    assert resolved.pairs[0].routes[0].api_group == group
    assert any(r.path.rstrip("/") == "/apis" for r in kube_emulator.requests.records(method="GET"))


async def test_configured_group_is_kept_and_not_probed(kube_emulator, kube_api):
    """A served, configured group is used as it is; no object is read to decide."""
    kube_emulator.load(_seed_in(OLD))
    kube_emulator.requests.clear()
    resolved = await discovery.resolve_route_groups(kube_api, _config(api_group=OLD))
    assert resolved.pairs[0].routes[0].api_group == OLD
    assert not [r for r in kube_emulator.requests.records() if "ingressroutes" in r.path]


async def test_configured_group_not_served_names_the_group_and_the_key(kube_emulator,
                                                                       kube_api):
    """traefik.containo.us configured on a Traefik v3 cluster: say which key to set to what."""
    kube_emulator.absent_groups.add(OLD)
    with pytest.raises(RouteGroupError) as caught:
        await discovery.resolve_route_groups(kube_api, _config(api_group=OLD))
    message = str(caught.value)
    assert f"API group {OLD}/v1alpha1 is not served by the cluster" in message
    assert f"set pairs[0].routes[0].api_group (pair production) to {NEW}" in message
    assert f"IngressRoute {ROUTING}/{ROUTE_NAME}" in message
    assert "unreachable" not in message


async def test_no_traefik_group_at_all_is_an_error_naming_both_and_the_key(kube_emulator,
                                                                           kube_api):
    """No Traefik CRDs: the route cannot be discovered; the error says what to install/set."""
    kube_emulator.absent_groups.update({OLD, NEW})
    with pytest.raises(RouteGroupError) as caught:
        await discovery.resolve_route_groups(kube_api, _config())
    message = str(caught.value)
    assert f"neither {NEW} nor {OLD}" in message
    assert "install Traefik's CRDs, or set pairs[0].routes[0].api_group" in message


async def test_an_absent_group_answers_404_like_a_real_server(kube_emulator, kube_api):
    """The emulator: paths under an absent group are 404 NotFound, /apis/{group} too."""
    kube_emulator.load(_seed_in(OLD))
    kube_emulator.absent_groups.add(OLD)
    objects = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as caught:
        await objects.get_namespaced_custom_object(OLD, "v1alpha1", ROUTING, "ingressroutes",
                                                   ROUTE_NAME)
    assert caught.value.status == 404
    async with aiohttp.ClientSession() as http, http.get(f"{kube_emulator.url}/apis/{OLD}") as got:
        assert got.status == 404
        assert (await got.json())["reason"] == "NotFound"


async def test_refused_discovery_is_a_configuration_error(kube_emulator, kube_api):
    """GET /apis forbidden: set api_group explicitly (not 'cluster unreachable')."""
    kube_emulator.faults.add(status=403, path="/apis")
    with pytest.raises(RouteGroupError) as caught:
        await discovery.resolve_route_groups(kube_api, _config())
    assert "API discovery (GET /apis) refused: HTTP 403" in str(caught.value)
    assert "pairs[].routes[].api_group" in str(caught.value)


# -- the commands: a missing group stops them with the key to set -----------------------------

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "kube_emulator" / "examples" / "bluegreen.yaml"


@pytest.fixture
def v3_cluster(tmp_path: Path) -> Iterator[Path]:
    """A standalone emulator without traefik.containo.us (a Traefik v3 cluster); its kubeconfig."""
    kubeconfig = tmp_path / "kubeconfig"
    with emulator_process(kubeconfig, "--objects", str(SEED), "--absent-group", OLD):
        yield kubeconfig


def _config_file(folder: Path, kubeconfig: Path, group: str | None) -> Path:
    route = {"name": ROUTE_NAME, "namespace": ROUTING, **({"api_group": group} if group else {})}
    (folder / "rules.yaml").write_text(yaml.safe_dump({"rules": [{
        "name": "pods-ready", "source": "kubernetes", "check": "pods_ready", "pass": [">= 1"]}]}))
    path = folder / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump({
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
        "rule_files": ["rules.yaml"],
        "leader_election": {"enabled": False},
        "pairs": [{"name": "api", "namespaces": [BLUE, GREEN], "routes": [route]}]}))
    return path


def test_status_with_the_design_documents_group_on_a_v3_cluster_names_the_key(
        v3_cluster, tmp_path):
    """`gatekeeper status` with api_group traefik.containo.us, not served: exit 2, the fix."""
    config = _config_file(tmp_path, v3_cluster, OLD)
    done = subprocess.run([sys.executable, "-m", "gatekeeper", "status", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"API group {OLD}/v1alpha1 is not served by the cluster" in done.stderr
    assert f"set pairs[0].routes[0].api_group (pair api) to {NEW}" in done.stderr
    assert "unreachable" not in done.stderr


def test_status_discovers_the_group_when_not_configured(v3_cluster, tmp_path):
    """Without api_group the same cluster works: the route is read from traefik.io."""
    config = _config_file(tmp_path, v3_cluster, None)
    done = subprocess.run([sys.executable, "-m", "gatekeeper", "status", "--config", str(config),
                           "--output", "json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    routes = json.loads(done.stdout)["routes"]
    assert [(r["apiGroup"], r["pointsTo"]) for r in routes] == [(NEW, [BLUE])]


def test_serve_refuses_to_start_on_a_group_the_cluster_lacks(v3_cluster, tmp_path):
    """`gatekeeper serve` stops before listening: exit 2 with the same message."""
    config = _config_file(tmp_path, v3_cluster, OLD)
    done = subprocess.run([sys.executable, "-m", "gatekeeper", "serve", "--config", str(config),
                           "--host", "127.0.0.1", "--port", "0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"set pairs[0].routes[0].api_group (pair api) to {NEW}" in done.stderr
