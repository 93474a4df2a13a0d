"""Deployment -> ReplicaSet -> Pod simulation, readiness delays, rollouts, garbage
collection and pod logs, all observed through kubernetes_asyncio."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fixtures.kube import BLUE, GREEN


def ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def test_seeded_deployment_has_ready_pods_and_status(kube_bluegreen, kube_api):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    deploy = await apps.read_namespaced_deployment("api", BLUE)
    assert (deploy.status.replicas, deploy.status.ready_replicas,
            deploy.status.available_replicas, deploy.status.updated_replicas) == (2, 2, 2, 2)
    assert deploy.status.observed_generation == deploy.metadata.generation == 1
    pods = (await core.list_namespaced_pod(BLUE, label_selector="app=api")).items
    assert len(pods) == 2
    for pod in pods:
        assert pod.metadata.name.startswith("api-")
        assert len(pod.metadata.name.split("-")) == 3
        assert pod.status.phase == "Running" and ready(pod)
        [status] = pod.status.container_statuses
        assert (status.name, status.image, status.ready, status.restart_count) == (
            "api", "registry.example.com/api:1.4.0", True, 0)
        [owner] = pod.metadata.owner_references
        assert owner.kind == "ReplicaSet" and owner.controller
    [rs] = (await apps.list_namespaced_replica_set(BLUE)).items
    assert rs.metadata.owner_references[0].name == "api"
    assert rs.metadata.name == pods[0].metadata.owner_references[0].name


async def test_scale_subresource_creates_pods_that_become_ready_after_delay(
    kube_bluegreen, kube_api
):
    # Long enough that the not-yet-ready checks below run inside the delay on a loaded
    # runner (at 0.3 s the new pods were sometimes Ready before the list came back).
    kube_bluegreen.ready_delay = 4.0
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    scale = await apps.read_namespaced_deployment_scale("api", GREEN)
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (2, 2, "app=api")

    patched = time.monotonic()
    scale = await apps.patch_namespaced_deployment_scale("api", GREEN, {"spec": {"replicas": 4}})
    assert scale.spec.replicas == 4
    pods = (await core.list_namespaced_pod(GREEN)).items
    assert len(pods) == 4
    assert sum(ready(p) for p in pods) == 2
    assert all(p.status.phase == "Running" for p in pods)
    deploy = await apps.read_namespaced_deployment("api", GREEN)
    assert (deploy.status.replicas, deploy.status.ready_replicas) == (4, 2)
    assert deploy.status.unavailable_replicas == 2

    await kube_bluegreen.wait_deployment_ready(GREEN, "api", within=60)
    assert time.monotonic() - patched >= 3.9  # not Ready before the delay
    pods = (await core.list_namespaced_pod(GREEN)).items
    assert all(ready(p) for p in pods)
    deploy = await apps.read_namespaced_deployment("api", GREEN)
    assert deploy.status.ready_replicas == 4 and deploy.status.unavailable_replicas is None

    # The controller has written status since: that Scale is stale, as on a real cluster.
    with pytest.raises(ApiException) as exc:
        await apps.replace_namespaced_deployment_scale("api", GREEN, scale)
    assert exc.value.status == 409
    scale = await apps.read_namespaced_deployment_scale("api", GREEN)
    scale.spec.replicas = 1
    await apps.replace_namespaced_deployment_scale("api", GREEN, scale)
    assert len((await core.list_namespaced_pod(GREEN)).items) == 1
    with pytest.raises(ApiException) as exc:  # the Scale still carries the old version
        await apps.replace_namespaced_deployment_scale("api", GREEN, scale)
    assert exc.value.status == 409


async def test_scale_by_patching_spec_replicas_is_watched(kube_bluegreen, kube_api):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    since = (await core.list_namespaced_pod(BLUE)).metadata.resource_version
    await apps.patch_namespaced_deployment("api", BLUE, {"spec": {"replicas": 3}})
    events = []
    async with watch.Watch() as w:
        async for event in w.stream(core.list_namespaced_pod, BLUE, resource_version=since,
                                    timeout_seconds=2):
            events.append(event)
            if event["type"] == "MODIFIED" and ready(event["object"]):
                break
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    assert events[0]["object"].status.phase == "Pending"
    assert events[1]["object"].status.phase == "Running"


async def test_changing_the_image_rolls_the_pods(kube_bluegreen, kube_api):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    old = {p.metadata.name for p in (await core.list_namespaced_pod(GREEN)).items}
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "api", "image": "registry.example.com/api:1.5.1"}]}}}}
    deploy = await apps.patch_namespaced_deployment("api", GREEN, patch)
    assert deploy.metadata.generation == 2
    pods = (await core.list_namespaced_pod(GREEN)).items
    assert {p.metadata.name for p in pods}.isdisjoint(old)
    assert {p.spec.containers[0].image for p in pods} == {"registry.example.com/api:1.5.1"}
    deploy = await apps.read_namespaced_deployment("api", GREEN)
    assert deploy.status.observed_generation == 2
    assert deploy.status.updated_replicas == deploy.status.ready_replicas == 2
    assert deploy.metadata.annotations["deployment.kubernetes.io/revision"] == "2"


async def test_rollout_keeps_old_pods_until_new_ones_are_ready(kube_bluegreen, kube_api):
    kube_bluegreen.ready_delay = 0.2
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "api", "image": "registry.example.com/api:2.0.0"}]}}}}
    await apps.patch_namespaced_deployment("api", BLUE, patch)
    images = [p.spec.containers[0].image for p in (await core.list_namespaced_pod(BLUE)).items]
    assert sorted(images) == ["registry.example.com/api:1.4.0"] * 2 + [
        "registry.example.com/api:2.0.0"] * 2
    await kube_bluegreen.wait_deployment_ready(BLUE, "api", within=2)
    await kube_bluegreen.wait_for(lambda: len(kube_bluegreen.pods(BLUE)) == 2, within=2)


async def test_deleting_a_pod_replaces_it_and_deleting_the_deployment_collects_all(
    kube_bluegreen, kube_api
):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    victim = (await core.list_namespaced_pod(BLUE)).items[0].metadata.name
    deleted = await core.delete_namespaced_pod(victim, BLUE)
    assert deleted.metadata.name == victim
    names = {p.metadata.name for p in (await core.list_namespaced_pod(BLUE)).items}
    assert len(names) == 2 and victim not in names

    await apps.delete_namespaced_deployment("api", BLUE)
    assert (await core.list_namespaced_pod(BLUE)).items == []
    assert (await apps.list_namespaced_replica_set(BLUE)).items == []
    assert len((await core.list_namespaced_pod(GREEN)).items) == 2


async def test_admin_readiness_and_restarts_show_in_pod_and_deployment(kube_bluegreen, kube_api):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    pod = (await core.list_namespaced_pod(GREEN)).items[0].metadata.name
    kube_bluegreen.set_pod_ready(GREEN, pod, False)
    assert not ready(await core.read_namespaced_pod(pod, GREEN))
    assert (await apps.read_namespaced_deployment("api", GREEN)).status.ready_replicas == 1

    kube_bluegreen.append_logs(GREEN, pod, ["before crash"])
    kube_bluegreen.restart_container(GREEN, pod, count=3)
    status = (await core.read_namespaced_pod(pod, GREEN)).status.container_statuses[0]
    assert status.restart_count == 3
    assert status.last_state.terminated.exit_code == 1
    previous = await core.read_namespaced_pod_log(pod, GREEN, previous=True)
    assert previous == "before crash\n"
    assert await core.read_namespaced_pod_log(pod, GREEN) == ""

    kube_bluegreen.set_pod_ready(GREEN, pod, True)
    assert (await apps.read_namespaced_deployment("api", GREEN)).status.ready_replicas == 2


async def test_pod_logs_since_tail_limit_and_timestamps(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = (await core.list_namespaced_pod(BLUE)).items[0].metadata.name
    now = time.time()
    kube_bluegreen.append_logs(BLUE, pod, ["old 1", "old 2"], timestamp=now - 600)
    kube_bluegreen.append_logs(BLUE, pod, ["GET /health 200", "GET /orders 500"])

    assert await core.read_namespaced_pod_log(pod, BLUE) == (
        "old 1\nold 2\nGET /health 200\nGET /orders 500\n")
    assert await core.read_namespaced_pod_log(pod, BLUE, since_seconds=60) == (
        "GET /health 200\nGET /orders 500\n")
    assert await core.read_namespaced_pod_log(pod, BLUE, tail_lines=1) == "GET /orders 500\n"
    assert await core.read_namespaced_pod_log(pod, BLUE, limit_bytes=8) == "old 1\nol"
    stamped = await core.read_namespaced_pod_log(pod, BLUE, since_seconds=60, timestamps=True)
    first = stamped.splitlines()[0]
    stamp, text = first.split(" ", 1)
    assert text == "GET /health 200" and stamp.endswith("Z") and len(stamp) == 30

    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_pod_log(pod, BLUE, container="nope")
    assert exc.value.status == 400
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_pod_log("missing", BLUE)
    assert exc.value.status == 404


async def test_logs_by_selector_and_bounded_buffer(kube_emulator, kube_api):
    kube_emulator.logs.max_lines = 3
    from tests.fixtures.kube import load_bluegreen_seed

    load_bluegreen_seed(kube_emulator)
    core = client.CoreV1Api(kube_api)
    pods = kube_emulator.append_logs_by_selector(GREEN, "app=api", [f"l{i}" for i in range(5)])
    assert len(pods) == 2
    for pod in pods:
        assert await core.read_namespaced_pod_log(pod, GREEN) == "l2\nl3\nl4\n"


async def test_follow_streams_new_lines(kube_bluegreen, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = (await core.list_namespaced_pod(BLUE)).items[0].metadata.name
    kube_bluegreen.append_logs(BLUE, pod, ["first"])

    async def later():
        await asyncio.sleep(0.1)
        kube_bluegreen.append_logs(BLUE, pod, ["second"])

    task = asyncio.create_task(later())
    response = await core.read_namespaced_pod_log(pod, BLUE, follow=True, _preload_content=False)
    lines = [await response.content.readline(), await response.content.readline()]
    response.close()
    await task
    assert lines == [b"first\n", b"second\n"]
