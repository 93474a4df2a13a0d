"""KubernetesSource checks through the emulated API server, with the real client."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from functools import partial

import pytest

from gatekeeper.rules import Rule
from gatekeeper.sources.base import Target
from gatekeeper.sources.kubernetes import (
    KubernetesSource,
    config_objects,
    parity_differences,
    restarts_within,
)
from gatekeeper.watching import PODS
from tests.fixtures.kube import BLUE, GREEN, load_bluegreen_seed
from tests.service_support import wait_until

NOW = 1_800_000_000.0


def _iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat().replace("+00:00", "Z")


def _pod(started_ago: float, *containers: tuple[int, float | None]) -> dict:
    statuses = [
        {"name": f"c{i}", "restartCount": count,
         "lastState": {"terminated": {"finishedAt": _iso(ago), "reason": "OOMKilled"}}
         if ago is not None else {}}
        for i, (count, ago) in enumerate(containers)
    ]
    return {"metadata": {"name": "p", "creationTimestamp": _iso(started_ago)},
            "status": {"startTime": _iso(started_ago), "containerStatuses": statuses}}


def test_restarts_within_window():
    """Young pods count every restart; old pods count 1 per recent termination, else 0."""
    assert restarts_within(_pod(60, (4, 10)), window=300, now=NOW) == 4
    assert restarts_within(_pod(3600, (9, 10), (2, 100)), window=300, now=NOW) == 2
    assert restarts_within(_pod(3600, (9, 1000)), window=300, now=NOW) == 0
    assert restarts_within(_pod(3600, (0, None)), window=300, now=NOW) == 0


def _secret(name: str, **data: str) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"metadata": {"name": name}, "type": "Opaque", "data": encoded}


def test_parity_compares_names_keys_and_hashes():
    """Missing objects and keys and differing values are listed; values never are."""
    blue = config_objects(
        {"items": [{"metadata": {"name": "app-config-7g2h9k5mbt"}, "data": {"A": "1"}},
                   {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "x"}}]},
        {"items": [_secret("db", password="hunter2", user="app"), _secret("blue-only")]},
    )
    green = config_objects(
        {"items": [{"metadata": {"name": "app-config-b4c5d6f7g8"}, "data": {"A": "2", "B": "x"}},
                   {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "y"}}]},
        {"items": [_secret("db", password="s3cret!", user="app")]},
    )
    problems = parity_differences(blue, green, other="green")
    assert problems == [
        "ConfigMap/app-config key A differs",
        "ConfigMap/app-config key B only in green",
        "Secret/blue-only missing in green",
        "Secret/db key password differs",
    ]
    assert not any("hunter2" in p or "s3cret" in p for p in problems)


@pytest.fixture
def source(kube_api):
    return KubernetesSource(kube_api, read_secrets=True)


def _rule(check: str, window: str | None = None) -> Rule:
    return Rule.model_validate(
        {"name": check.replace("_", "-"), "source": "kubernetes", "check": check,
         "pass": ["== 0"], "window": window}
    )


def _targets(selector: str | None = "app=api") -> list[Target]:
    return [Target(pair="production", namespace=GREEN, other=BLUE, selector=selector),
            Target(pair="production", namespace=BLUE, other=GREEN, selector=selector)]


async def test_pods_ready_share_and_names(kube_bluegreen, source):
    """Ready share per namespace; the not-ready pod is named with its reason."""
    pod = sorted(p["metadata"]["name"] for p in kube_bluegreen.pods(GREEN, "app=api"))[0]
    kube_bluegreen.set_pod_ready(GREEN, pod, False)
    result = await source.measure(_rule("pods_ready"), _targets(), window=300, variables={})
    assert result[GREEN].value == 0.5 and result[GREEN].sample_count == 2
    assert result[GREEN].message == f"1/2 pods ready; not ready: {pod} (ContainersNotReady)"
    assert result[BLUE].value == 1.0


async def test_no_pods_is_no_data(kube_bluegreen, source):
    """No pod matches: no data, never a vacuous 100 % ready."""
    result = await source.measure(_rule("pods_ready"), _targets("app=nothing"), window=300,
                                  variables={})
    assert result[GREEN].status == "no_data"
    assert "no pods matching 'app=nothing'" in result[GREEN].message


async def test_restarts_within_the_window(kube_bluegreen, kube_api):
    """Restarts of a fresh pod count; seen an hour later with a 5 min window they do not."""
    pod = sorted(p["metadata"]["name"] for p in kube_bluegreen.pods(GREEN, "app=api"))[0]
    kube_bluegreen.restart_container(GREEN, pod, count=3)
    result = await KubernetesSource(kube_api).measure(
        _rule("restarts"), _targets(), window=300, variables={})
    assert result[GREEN].value == 3 and result[BLUE].value == 0
    assert result[GREEN].message == (
        f"3 restart(s) within 300s in 1 of 2 pods: {pod} (3, api: Error)")
    kube_bluegreen.clock_offset = 3600  # an hour later, by the cluster's clock
    later = KubernetesSource(kube_api)
    result = await later.measure(_rule("restarts"), _targets(), window=300, variables={})
    assert result[GREEN].value == 0
    assert "no restarts within 300s in 2 pods" in result[GREEN].message
    result = await later.measure(_rule("restarts", window="2h"), _targets(), window=300,
                                 variables={})
    assert result[GREEN].value == 3


@pytest.mark.parametrize("cached", [False, True], ids=["listed", "watch-cache"])
@pytest.mark.parametrize("skew", [600, -3600])
async def test_restarts_are_reckoned_on_the_api_servers_clock(kube_emulator, kube_api, skew,
                                                              cached, blue_green_watcher):
    """gatekeeper's clock 10 min ahead of the cluster's, or an hour behind: the restart of
    the last minute still counts in a 5 min window (ahead, it used to read as 0), and the
    restarts of an hour ago still do not (behind, they used to count). With the pods from
    the watch cache (no list), the window ends at the API server's clock as the watch last
    saw it (its Date plus our monotonic time since)."""
    emulator = kube_emulator
    emulator.clock_offset = -3600  # the pods started, and pods[0] restarted, an hour ago
    load_bluegreen_seed(emulator)
    pods = sorted(p["metadata"]["name"] for p in emulator.pods(GREEN, "app=api"))
    emulator.restart_container(GREEN, pods[0], count=4)
    emulator.clock_offset = -60  # pods[1] restarted a minute ago
    emulator.restart_container(GREEN, pods[1], count=10)
    emulator.clock_offset = 0.0
    skewed = KubernetesSource(kube_api, clock=lambda: time.time() + skew)
    if cached:
        watcher = blue_green_watcher
        await wait_until(lambda: sum(
            s["restartCount"] for p in watcher.listed(PODS, GREEN) or []
            for s in p["status"]["containerStatuses"]) == 14, within=10,
            what="the cache to see the restarts")
        skewed = KubernetesSource(kube_api, clock=lambda: time.time() + skew,
                                  pods=partial(watcher.listed, PODS),
                                  server_now=watcher.server_now)
    emulator.requests.clear()
    result = await skewed.measure(_rule("restarts"), _targets(), window=300, variables={})
    assert (emulator.requests.records(verb="list") == []) == cached
    # pods[1] started long before the window: its last termination (1 min ago) counts once
    # (the earlier ones have no time); pods[0]'s restarts an hour ago not at all.
    assert result[GREEN].value == 1, result[GREEN].message
    assert pods[0] not in result[GREEN].message and pods[1] in result[GREEN].message
    assert result[BLUE].value == 0


def _configmap(namespace: str, name: str, data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data}


def _secret_obj(namespace: str, name: str, data: dict, kind: str = "Opaque") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


async def test_config_parity_through_the_api(kube_bluegreen, source):
    """Differences are counted from both sides; secret values never reach the message."""
    value_blue, value_green = "blue-connection-string-42", "green-connection-string-43"
    for ns, ca, extra in ((BLUE, "ca-1", {}), (GREEN, "ca-2", {"NEW_FLAG": "on"})):
        kube_bluegreen.put_object(_configmap(ns, "kube-root-ca.crt", {"ca.crt": ca}))
        kube_bluegreen.put_object(_configmap(ns, "app-config", {"LOG_LEVEL": "info", **extra}))
        kube_bluegreen.put_object(_secret_obj(ns, "sa-token", {"token": ca},
                                              "kubernetes.io/service-account-token"))
        kube_bluegreen.put_object(_secret_obj(ns, "acr-secret", {"password": "same"}))
    kube_bluegreen.put_object(_secret_obj(BLUE, "azure-app-config", {"conn": value_blue}))
    kube_bluegreen.put_object(_secret_obj(GREEN, "azure-app-config", {"conn": value_green}))
    kube_bluegreen.put_object(_secret_obj(BLUE, "azure-identity", {"id": "x"}))
    kube_bluegreen.requests.clear()
    result = await source.measure(_rule("config_parity"), _targets(), window=300,
                                  variables={})
    green = result[GREEN]
    assert green.status == "ok" and green.value == 3
    assert green.message.startswith(f"3 difference(s) from {BLUE}: ")
    assert "ConfigMap/app-config key NEW_FLAG missing in production-blue" in green.message
    assert "Secret/azure-app-config key conn differs" in green.message
    assert "Secret/azure-identity only in production-blue" in green.message
    assert result[BLUE].value == 3
    for measurement in result.values():
        text = measurement.message + measurement.query
        for secret in (value_blue, value_green):
            assert secret not in text
            assert base64.b64encode(secret.encode()).decode() not in text
    lists = kube_bluegreen.requests.records(method="GET", verb="list")
    assert sorted(r.path for r in lists) == sorted(
        f"/api/v1/namespaces/{ns}/{kind}" for ns in (BLUE, GREEN)
        for kind in ("configmaps", "secrets"))


async def test_config_parity_reads_no_secret_unless_switched_on(kube_bluegreen, kube_api):
    """By default (kubernetes.read_secrets off) Secrets are never listed, only ConfigMaps."""
    for ns in (BLUE, GREEN):
        kube_bluegreen.put_object(_configmap(ns, "app-config", {"LOG_LEVEL": "info"}))
    kube_bluegreen.put_object(_secret_obj(BLUE, "azure-identity", {"id": "x"}))
    kube_bluegreen.requests.clear()
    result = await KubernetesSource(kube_api).measure(
        _rule("config_parity"), _targets(), window=300, variables={})
    assert result[GREEN].status == "ok" and result[GREEN].value == 0
    assert result[GREEN].message == f"1 ConfigMaps match {BLUE}"
    assert "ConfigMaps in" in result[GREEN].query
    paths = [r.path for r in kube_bluegreen.requests.records(method="GET")]
    assert paths and not any("/secrets" in path for path in paths)


async def test_config_parity_equal_namespaces(kube_bluegreen, source):
    """Identical config is 0 differences; empty namespaces are no data."""
    for ns in (BLUE, GREEN):
        kube_bluegreen.put_object(_configmap(ns, "app-config", {"LOG_LEVEL": "info"}))
    result = await source.measure(_rule("config_parity"), _targets(), window=300,
                                  variables={})
    assert result[GREEN].value == 0
    assert result[GREEN].message == f"1 ConfigMaps and Secrets match {BLUE}"
    empty = [Target(pair="p", namespace="nowhere-a", other="nowhere-b")]
    result = await source.measure(_rule("config_parity"), empty, window=300, variables={})
    assert result["nowhere-a"].status == "no_data"


async def test_images_differ(kube_bluegreen, source):
    """The seed's green runs 1.5.0 against blue's 1.4.0; the same image gives 0."""
    result = await source.measure(_rule("images_differ"), _targets(), window=300,
                                  variables={})
    assert result[GREEN].value == 1 and result[BLUE].value == 1
    assert result[GREEN].message == (
        f"images differ from {BLUE}: only {GREEN} has registry.example.com/api:1.5.0; "
        f"only {BLUE} has registry.example.com/api:1.4.0")
    deployment = kube_bluegreen.get_object("apps/v1", "Deployment", "api", GREEN)
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "registry.example.com/api:1.4.0")
    del deployment["status"]  # the controller owns it
    kube_bluegreen.put_object(deployment)
    result = await source.measure(_rule("images_differ"), _targets(), window=300,
                                  variables={})
    assert result[GREEN].value == 0
    assert "same images as" in result[GREEN].message
    lonely = [Target(pair="p", namespace=GREEN, other="empty-ns")]
    result = await source.measure(_rule("images_differ"), lonely, window=300, variables={})
    assert result[GREEN].status == "no_data"
    assert "no Deployments in namespace empty-ns" in result[GREEN].message


async def test_api_errors_are_errors(kube_bluegreen, source):
    """A failing list call is `error` for the namespaces that need it, naming what failed."""
    kube_bluegreen.faults.add(status=403, verb="list", path="/secrets")
    result = await source.measure(_rule("config_parity"), _targets(), window=300,
                                  variables={})
    assert result[GREEN].status == "error"
    assert "listing Secrets in namespace" in result[GREEN].message
    assert "HTTP 403" in result[GREEN].message
    kube_bluegreen.faults.add(status=500, verb="list", path="/pods")
    result = await source.measure(_rule("pods_ready"), _targets(), window=300, variables={})
    assert result[GREEN].status == "error" and "HTTP 500" in result[GREEN].message
