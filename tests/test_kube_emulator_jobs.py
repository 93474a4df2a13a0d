"""batch/v1 Jobs in the emulator, observed through kubernetes_asyncio as on a real cluster:
defaults and validation, pods that run a scripted image to completion, the Job's
conditions and counters (Complete, BackoffLimitExceeded, DeadlineExceeded), logs of its
pods, retries, ttlSecondsAfterFinished and the Orphan default of a bare delete."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fixtures.kube import GREEN

IMAGE = "registry.example.com/api-tests:1.5.0"


def job_body(name: str = "tests", *, backoff: int = 0, deadline: int | None = None,
             ttl: int | None = None, restart: str = "Never", image: str = IMAGE,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "backoffLimit": backoff,
        "template": {
            "metadata": {"annotations": annotations} if annotations else {},
            "spec": {"restartPolicy": restart,
                     "containers": [{"name": "tests", "image": image}]},
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def conditions(job: Any) -> dict[str, tuple[str, str | None]]:
    return {c.type: (c.status, c.reason) for c in job.status.conditions or []}


async def finished(emu: Any, batch: client.BatchV1Api, name: str, namespace: str = GREEN,
                   within: float = 5.0) -> Any:
    def done() -> bool:
        job = emu.get_object("batch/v1", "Job", name, namespace)
        return job is not None and any(
            c["type"] in ("Complete", "Failed") and c["status"] == "True"
            for c in (job.get("status") or {}).get("conditions") or [])

    await emu.wait_for(done, within=within)
    return await batch.read_namespaced_job(name, namespace)


async def test_a_job_gets_the_defaults_and_generated_selector_of_the_real_server(
        kube_bluegreen, kube_api):
    """Defaults (completions, parallelism, completionMode...) and the uid selector."""
    batch = client.BatchV1Api(kube_api)
    body = job_body()
    del body["spec"]["backoffLimit"]
    job = await batch.create_namespaced_job(GREEN, body)
    spec = job.spec
    assert (spec.completions, spec.parallelism, spec.backoff_limit, spec.completion_mode,
            spec.suspend) == (1, 1, 6, "NonIndexed", False)
    uid = job.metadata.uid
    assert spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    labels = spec.template.metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == "tests" and labels["controller-uid"] == uid
    resources = await client.BatchV1Api(kube_api).get_api_resources()
    assert {r.name for r in resources.resources} == {"jobs", "jobs/status"}


@pytest.mark.parametrize(("change", "field"), [
    ({"restartPolicy": "Always"}, "spec.template.spec.restartPolicy"),
    ({"backoffLimit": -1}, "spec.backoffLimit"),
    ({"activeDeadlineSeconds": -5}, "spec.activeDeadlineSeconds"),
])
async def test_an_invalid_job_is_a_422_naming_the_field(kube_bluegreen, kube_api, change, field):
    """Always is no restart policy for a Job; negative limits are refused."""
    body = job_body()
    if "restartPolicy" in change:
        body["spec"]["template"]["spec"].update(change)
    else:
        body["spec"].update(change)
    with pytest.raises(ApiException) as caught:
        await client.BatchV1Api(kube_api).create_namespaced_job(GREEN, body)
    assert caught.value.status == 422
    assert field in caught.value.body


async def test_the_template_of_a_job_is_immutable(kube_bluegreen, kube_api):
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body())
    with pytest.raises(ApiException) as caught:
        await batch.patch_namespaced_job("tests", GREEN, {"spec": {"template": {"spec": {
            "containers": [{"name": "tests", "image": "other:1"}]}}}})
    assert caught.value.status == 422 and "spec.template" in caught.value.body


async def test_a_passing_image_completes_the_job_with_its_log(kube_bluegreen, kube_api):
    """The scripted image's run writes its log and exits 0: the pod Succeeded, the Job has
    SuccessCriteriaMet and Complete (CompletionsReached) and completionTime."""
    kube_bluegreen.script_image(IMAGE, [{"exitCode": 0, "seconds": 0.05,
                                         "logs": ["12 passing", "ok"]}])
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    created = await batch.create_namespaced_job(GREEN, job_body())
    assert created.status is None or not created.status.conditions
    job = await finished(kube_bluegreen, batch, "tests")
    assert conditions(job) == {"SuccessCriteriaMet": ("True", "CompletionsReached"),
                               "Complete": ("True", "CompletionsReached")}
    assert (job.status.succeeded, job.status.failed, job.status.active) == (1, None, None)
    assert job.status.start_time is not None and job.status.completion_time is not None
    [pod] = (await core.list_namespaced_pod(GREEN, label_selector="job-name=tests")).items
    assert pod.status.phase == "Succeeded"
    assert pod.metadata.owner_references[0].kind == "Job"
    [cs] = pod.status.container_statuses
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    log = await core.read_namespaced_pod_log(pod.metadata.name, GREEN, tail_lines=1)
    assert log == "ok\n"


async def test_a_failing_image_retries_then_fails_with_backoff_limit_exceeded(
        kube_bluegreen, kube_api):
    """backoffLimit 1: two pods fail, then FailureTarget and Failed, BackoffLimitExceeded."""
    kube_bluegreen.script_image(IMAGE, [{"exitCode": 1, "logs": ["1 failing", "boom"]}])
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body(backoff=1))
    job = await finished(kube_bluegreen, batch, "tests")
    assert conditions(job) == {"FailureTarget": ("True", "BackoffLimitExceeded"),
                               "Failed": ("True", "BackoffLimitExceeded")}
    [failed] = [c for c in job.status.conditions if c.type == "Failed"]
    assert failed.message == "Job has reached the specified backoff limit"
    assert job.status.failed == 2 and job.status.succeeded is None
    assert job.status.completion_time is None
    pods = (await core.list_namespaced_pod(GREEN, label_selector="job-name=tests")).items
    assert [p.status.phase for p in pods] == ["Failed", "Failed"]
    assert pods[0].status.container_statuses[0].state.terminated.exit_code == 1
    assert kube_bluegreen.programs.runs_of(IMAGE) == 2


async def test_a_flaky_image_passes_on_its_retry(kube_bluegreen, kube_api):
    kube_bluegreen.script_image(IMAGE, [{"exitCode": 1}, {"exitCode": 0}])
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body(backoff=2))
    job = await finished(kube_bluegreen, batch, "tests")
    assert "Complete" in conditions(job)
    assert (job.status.succeeded, job.status.failed) == (1, 1)


async def test_a_job_past_its_deadline_fails_with_deadline_exceeded(kube_bluegreen, kube_api):
    """A hanging image (no script) is stopped at activeDeadlineSeconds: its pod is deleted."""
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body(deadline=1, image="hangs:1"))
    running = (await core.list_namespaced_pod(GREEN, label_selector="job-name=tests")).items
    assert [p.status.phase for p in running] == ["Running"]
    job = await finished(kube_bluegreen, batch, "tests", within=4.0)
    assert conditions(job)["Failed"] == ("True", "DeadlineExceeded")
    [failed] = [c for c in job.status.conditions if c.type == "Failed"]
    assert failed.message == "Job was active longer than specified deadline"
    assert (await core.list_namespaced_pod(GREEN, label_selector="job-name=tests")).items == []


async def test_annotations_script_a_pod_written_by_hand(kube_bluegreen, kube_api):
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body(annotations={
        "kube-emulator.io/exit-code": "3", "kube-emulator.io/log": "a\nb"}))
    job = await finished(kube_bluegreen, batch, "tests")
    assert conditions(job)["Failed"] == ("True", "BackoffLimitExceeded")


async def test_on_failure_restarts_in_place_until_the_backoff_limit(kube_bluegreen, kube_api):
    kube_bluegreen.script_image(IMAGE, [{"exitCode": 2, "logs": ["try"]}])
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body(backoff=2, restart="OnFailure"))
    job = await finished(kube_bluegreen, batch, "tests")
    assert conditions(job)["Failed"] == ("True", "BackoffLimitExceeded")
    assert (await core.list_namespaced_pod(GREEN, label_selector="job-name=tests")).items == []


async def test_a_finished_job_is_deleted_with_its_pods_after_its_ttl(kube_bluegreen, kube_api):
    kube_bluegreen.script_image(IMAGE, [{"exitCode": 0}])
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body(ttl=0))

    def gone() -> bool:
        return (kube_bluegreen.get_object("batch/v1", "Job", "tests", GREEN) is None
                and not kube_bluegreen.pods(GREEN, "job-name=tests"))

    await kube_bluegreen.wait_for(gone, within=3.0)


async def test_deleting_a_job_without_a_policy_orphans_its_pods(kube_bluegreen, kube_api):
    """batch/v1's default GC policy is Orphan: only Background/Foreground take the pods."""
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body(image="hangs:1"))
    await batch.delete_namespaced_job("tests", GREEN)
    assert len(kube_bluegreen.pods(GREEN, "job-name=tests")) == 1
    await batch.create_namespaced_job(GREEN, job_body("second", image="hangs:1"))
    await batch.delete_namespaced_job("second", GREEN, propagation_policy="Background")
    assert kube_bluegreen.pods(GREEN, "job-name=second") == []


async def test_images_are_scripted_through_the_admin_api(kube_bluegreen, kube_api):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        answer = await http.post(f"{kube_bluegreen.url}/_emulator/images", json={
            "image": IMAGE, "runs": [{"exitCode": 1, "logs": ["red"]}]})
        assert answer.status == 200
        bad = await http.post(f"{kube_bluegreen.url}/_emulator/images", json={
            "image": IMAGE, "runs": [{"exitCode": "x"}]})
        assert bad.status == 400
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(GREEN, job_body())
    job = await finished(kube_bluegreen, batch, "tests")
    assert conditions(job)["Failed"][1] == "BackoffLimitExceeded"
