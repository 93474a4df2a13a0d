"""Fault injection, the request log, the `/_emulator/` admin endpoints, and the
standalone process with a kubeconfig loaded by kubernetes_asyncio."""

from __future__ import annotations

import asyncio
import email.utils
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kube_emulator.__main__ import main
from kube_emulator.audit import RequestLog
from tests.fixtures.kube import BLUE, GREEN, ROUTE_NAME, ROUTING

REPO = Path(__file__).resolve().parents[1]
TRAEFIK = ("traefik.io", "v1alpha1")


async def test_injected_500_and_429_with_counters(kube_bluegreen, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    kube_bluegreen.faults.add(status=500, verb="patch", path="/ingressroutes/")
    kube_bluegreen.faults.add(status=429, verb="get", path="/configmaps", retry_after=3)
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object(
            *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME,
            [{"op": "replace", "path": "/spec/routes/0/services/0/namespace", "value": GREEN}],
            _content_type="application/json-patch+json")
    assert exc.value.status == 500
    route = await custom.get_namespaced_custom_object(*TRAEFIK, ROUTING, "ingressroutes",
                                                      ROUTE_NAME)
    assert route["spec"]["routes"][0]["services"][0]["namespace"] == BLUE  # nothing applied

    with pytest.raises(ApiException) as exc:
        await client.CoreV1Api(kube_api).read_namespaced_config_map("state", BLUE)
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "3"

    counters = kube_bluegreen.faults.counters()
    assert counters["total"] == 2
    assert [r["injected"] for r in counters["rules"]] == [1, 1]
    faulted = [r for r in kube_bluegreen.requests.records() if r.fault]
    assert [(r.verb, r.status) for r in faulted] == [("patch", 500), ("get", 429)]


async def test_share_is_deterministic_for_a_seed(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)

    async def pattern() -> list[int]:
        kube_bluegreen.faults.configure([{"status": 503, "verb": "list", "share": 0.5}], seed=7)
        codes = []
        for _ in range(20):
            try:
                await core.list_namespaced_service(BLUE)
                codes.append(200)
            except ApiException as exc:
                codes.append(exc.status)
        return codes

    first, second = await pattern(), await pattern()
    assert first == second
    assert 0 < first.count(503) < 20


async def test_delay_fault_times_out_client(kube_bluegreen, kube_api):
    kube_bluegreen.faults.add(delay=1.0, verb="get", path="/leases/", times=1)
    coordination = client.CoordinationV1Api(kube_api)
    with pytest.raises(asyncio.TimeoutError):
        await coordination.read_namespaced_lease("x", BLUE, _request_timeout=0.2)
    with pytest.raises(ApiException) as exc:  # `times=1`: the next call is served normally
        await coordination.read_namespaced_lease("x", BLUE)
    assert exc.value.status == 404


async def test_after_fault_commits_write_but_loses_the_answer(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    kube_bluegreen.faults.add(status=504, verb="create", after=True, times=1)
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map(BLUE, {"metadata": {"name": "state"}})
    assert exc.value.status == 504
    assert (await core.read_namespaced_config_map("state", BLUE)).metadata.name == "state"


async def test_request_log_shows_patch_content_types(kube_bluegreen, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    kube_bluegreen.requests.clear()
    body = [{"op": "test", "path": "/spec/routes/0/services/0/namespace", "value": BLUE}]
    await custom.patch_namespaced_custom_object(
        *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME, body,
        _content_type="application/json-patch+json")
    [record] = kube_bluegreen.requests.records(method="PATCH")
    route_path = f"/apis/traefik.io/v1alpha1/namespaces/{ROUTING}/ingressroutes/{ROUTE_NAME}"
    assert record.path == route_path
    assert record.content_type == "application/json-patch+json"
    assert record.verb == "patch" and record.status == 200 and record.body == body


async def test_request_counts_are_not_bounded_by_the_log_size(kube_emulator, kube_api):
    """The log keeps the last `request_log_size` requests; the counts keep every one."""
    core = client.CoreV1Api(kube_api)
    size = 20
    kube_emulator.requests = RequestLog(size)
    for _ in range(size + 50):
        await core.list_namespace()
    await core.read_namespace("default")
    assert len(kube_emulator.requests.records()) == size
    assert kube_emulator.requests.total == size + 51
    assert kube_emulator.requests.by_verb() == {"list": size + 50, "get": 1}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kube_emulator.url}/_emulator/requests",
                            params={"limit": "1"}) as resp:
            body = await resp.json()
        assert body["total"] == size + 51 and body["by_verb"]["get"] == 1
        assert [r["verb"] for r in body["requests"]] == ["get"] and body["matched"] == size
        # limit=0: only the counts (a bench polling them must not get the whole log)
        async with http.get(f"{kube_emulator.url}/_emulator/requests",
                            params={"limit": "0", "verb": "list"}) as resp:
            body = await resp.json()
        assert body["requests"] == [] and body["matched"] == size - 1
        async with http.get(f"{kube_emulator.url}/_emulator/requests",
                            params={"limit": str(size * 2), "verb": "get"}) as resp:
            assert len((await resp.json())["requests"]) == 1
        async with http.delete(f"{kube_emulator.url}/_emulator/requests") as resp:
            assert (await resp.json())["total"] == 0
    assert kube_emulator.requests.total == 0


async def test_clock_offset_moves_timestamps_and_the_date_header(kube_emulator):
    """A skewed API server: its objects' timestamps and its `Date` header agree."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kube_emulator.url}/_emulator/config",
                             json={"clock_offset": -7200}) as resp:
            assert (await resp.json())["clock_offset"] == -7200
        async with http.post(f"{kube_emulator.url}/api/v1/namespaces",
                             json={"metadata": {"name": "skewed"}}) as resp:
            created = (await resp.json())["metadata"]["creationTimestamp"]
            date = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
    assert abs(date - (time.time() - 7200)) < 5
    assert abs(datetime.fromisoformat(created).timestamp() - date) < 2


async def test_admin_http_endpoints(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    pods = [p.metadata.name for p in (await core.list_namespaced_pod(GREEN)).items]
    base = f"{kube_bluegreen.url}/_emulator"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/logs/{GREEN}/{pods[0]}",
                             json={"lines": ["hello", "world"]}) as resp:
            assert resp.status == 200 and (await resp.json())["appended"] == 2
        async with http.post(f"{base}/logs/{GREEN}", params={"labelSelector": "app=api"},
                             json={"container": "api", "lines": ["all"]}) as resp:
            assert sorted((await resp.json())["pods"]) == sorted(pods)
        async with http.post(f"{base}/pods/{GREEN}/{pods[1]}/ready", json={"ready": False}):
            pass
        async with http.post(f"{base}/pods/{GREEN}/{pods[1]}/restart", json={"count": 2}):
            pass
        async with http.post(f"{base}/config", json={"ready_delay": 1.5}) as resp:
            assert (await resp.json())["ready_delay"] == 1.5
        async with http.post(f"{base}/faults", json={"seed": 1, "rules": [
                {"status": 500, "verb": "get", "path": "/secrets"}]}) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/faults", json={"rules": [{"stauts": 500}]}) as resp:
            assert resp.status == 400
        with pytest.raises(ApiException):
            await core.read_namespaced_secret("x", GREEN)
        async with http.get(f"{base}/faults") as resp:
            assert (await resp.json())["total"] == 1
        async with http.delete(f"{base}/faults") as resp:
            assert (await resp.json())["rules"] == []
        async with http.post(f"{base}/watches/expire") as resp:
            assert int((await resp.json())["compactedResourceVersion"]) > 0
        async with http.post(f"{base}/watches/drop") as resp:
            assert (await resp.json())["dropped"] == 0
        async with http.get(f"{base}/requests", params={"verb": "get", "path": "/secrets"}) as resp:
            [record] = (await resp.json())["requests"]
            assert record["status"] == 500 and record["fault"] == 500
        async with http.post(f"{base}/objects", data="apiVersion: v1\nkind: ConfigMap\n"
                             "metadata: {name: seeded, namespace: extra}\n") as resp:
            assert resp.status == 201

    assert await core.read_namespaced_pod_log(pods[0], GREEN) == "hello\nworld\nall\n"
    assert kube_bluegreen.ready_delay == 1.5
    pod = await core.read_namespaced_pod(pods[1], GREEN)
    assert pod.status.container_statuses[0].restart_count == 2
    assert not pod.status.container_statuses[0].ready
    assert (await core.read_namespaced_config_map("seeded", "extra")).metadata.name == "seeded"


async def test_health_and_unknown_paths(kube_emulator):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kube_emulator.url}/readyz") as resp:
            assert resp.status == 200 and await resp.text() == "ok"
        async with http.get(f"{kube_emulator.url}/apis/nope.io/v1/things") as resp:
            body = await resp.json()
            assert resp.status == 404 and body["kind"] == "Status"


async def test_standalone_process_with_kubeconfig(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kube_emulator",
        "--objects", str(REPO / "kube_emulator" / "examples" / "bluegreen.yaml"),
        "--kubeconfig-out", str(kubeconfig), "--ready-delay", "0.2",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line.startswith("kube-emulator listening on http://127.0.0.1:"), line
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig),
                                      client_configuration=configuration)
        assert configuration.host == line.split(" on ", 1)[1].strip()
        async with client.ApiClient(configuration) as api:
            pods = await client.CoreV1Api(api).list_namespaced_pod(GREEN, label_selector="app=api")
            assert len(pods.items) == 2
            route = await client.CustomObjectsApi(api).get_namespaced_custom_object(
                *TRAEFIK, ROUTING, "ingressroutes", ROUTE_NAME)
            assert route["spec"]["routes"][0]["services"][0]["namespace"] == BLUE
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_standalone_refuses_non_loopback(capsys):
    assert main(["--host", "0.0.0.0"]) == 2
    assert "non-loopback" in capsys.readouterr().err
