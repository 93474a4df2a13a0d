"""The team's test Job as a gate (issue 14 item 2): the manifest and status reading (pure
tables), the per-pair configuration's errors, the `jobs` driver against the emulated
cluster, and the service end to end: a failing test Job makes the dark unsafe with the
Job's reason and log tail, a passing one lets it be flipped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from gatekeeper import config as settings
from gatekeeper import testjobs
from gatekeeper.config import PairConfig, load_config
from gatekeeper.drivers import DriverTarget, testjob
from gatekeeper.outcomes import Outcome
from gatekeeper.service.app import create_service
from gatekeeper.yamlfiles import ConfigFileError
from tests.service_support import (
    NEW,
    PODS_READY_RULE,
    TOKEN,
    get_json,
    route_target,
    seed,
    set_image,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

TESTS_IMAGE = "registry.example.com/api-tests:2.0"
TEST_JOB_RULE = {"name": "test-job", "source": "validation", "driver": "jobs",
                 "pass": ["== 1"], "weight": 0, "key": True}
TEST_JOB = {"image": TESTS_IMAGE, "command": ["npm", "run", "test:integration"],
            "service": "api-service", "port": 8080, "timeout": "30s", "backoff_limit": 1,
            "ttl_after_finished": "1h", "env": {"ACTIVE": "${other}"}}


# ---- the manifest and what a Job's status says (pure) --------------------------------------

def test_the_manifest_runs_the_image_against_the_dark_service_with_limits():
    config = settings.TestJobConfig.model_validate(TEST_JOB)
    job = testjobs.manifest(config, pair="api", dark="green", active="blue", release="r-1.5")
    spec = job["spec"]
    assert (spec["activeDeadlineSeconds"], spec["backoffLimit"],
            spec["ttlSecondsAfterFinished"]) == (30, 1, 3600)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TARGET_URL"] == "http://api-service.green.svc:8080"
    assert env["ACTIVE"] == "blue" and env["GATEKEEPER_RELEASE"] == "r-1.5"
    assert container["command"] == ["npm", "run", "test:integration"]
    assert job["metadata"]["namespace"] == "green"
    assert testjobs.is_test_pod({"metadata": spec["template"]["metadata"]})
    assert not testjobs.is_test_pod({"metadata": {"labels": {"app": "api"}}})


def test_one_job_name_per_pair_dark_and_release_within_63_characters():
    name = testjobs.job_name("api", "green", "r1")
    assert name == testjobs.job_name("api", "green", "r1")
    assert name != testjobs.job_name("api", "green", "r2")
    assert name != testjobs.job_name("api", "blue", "r1")
    long = testjobs.job_name("a" * 63, "green", "r1")
    assert len(long) <= 63 and long.startswith("a") and "-tests-" in long


def _cond(kind: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


@pytest.mark.parametrize(("status", "expected"), [
    ({}, ("running", "")),
    ({"active": 1}, ("running", "")),
    ({"conditions": [_cond("SuccessCriteriaMet", "CompletionsReached"),
                     _cond("Complete", "CompletionsReached")], "succeeded": 1},
     ("passed", "CompletionsReached")),
    ({"conditions": [_cond("Complete")]}, ("passed", "Complete")),  # before 1.31: no reason
    # FailureTarget already decides (the pods are still being stopped).
    ({"conditions": [_cond("FailureTarget", "DeadlineExceeded")]},
     ("failed", "DeadlineExceeded")),
    ({"conditions": [_cond("FailureTarget", "BackoffLimitExceeded"),
                     _cond("Failed", "BackoffLimitExceeded")], "failed": 2},
     ("failed", "BackoffLimitExceeded")),
    ({"conditions": [{"type": "Failed", "status": "False"}]}, ("running", "")),
    ({"conditions": [_cond("Suspended", "JobSuspended")]}, ("running", "")),
])
def test_reading_a_job_status(status, expected):
    reading = testjobs.read_job({"status": status})
    assert (reading.status, reading.reason) == expected


def test_the_failure_reason_names_the_job_reason_and_the_log_tail():
    reading = testjobs.JobReading("failed", "BackoffLimitExceeded",
                                  "Job has reached the specified backoff limit", failed=2)
    text = testjobs.failure_reason("api-tests-x", reading, pod="api-tests-x-abcde",
                                   log_tail=["1 failing", "AssertionError: 500"])
    assert text == ("test Job api-tests-x failed: BackoffLimitExceeded (Job has reached the "
                    "specified backoff limit) after 2 failed pod(s); last 2 log line(s) of pod "
                    "api-tests-x-abcde: 1 failing | AssertionError: 500")
    deadline = testjobs.failure_reason("j", testjobs.JobReading("failed", "DeadlineExceeded"),
                                       pod=None, log_tail=[])
    assert "DeadlineExceeded" in deadline and "deleted" in deadline


# ---- configuration errors name file, line and key ------------------------------------------

def _config_file(tmp_path: Path, test_job: dict[str, Any], rules: list[dict[str, Any]]) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}))
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"],
        "pairs": [{"name": "api", "namespaces": ["blue", "green"],
                   "routes": [{"name": "live", "namespace": "routing"}],
                   "test_job": test_job}]}, sort_keys=False))
    return path


@pytest.mark.parametrize(("change", "expected"), [
    ({"url_env": "1URL"}, "test_job.url_env"),
    ({"env": {"X": "${nope}"}}, "unknown placeholder ${nope}"),
    ({"env": {"bad-name": "1"}}, "not an environment variable name"),
    ({"timeout": "0s"}, "test_job.timeout"),
    ({"backoff_limit": -1}, "test_job.backoff_limit"),
    ({"port": None}, "test_job.port"),
    ({"image": "has space:1"}, "test_job.image"),
])
def test_a_bad_test_job_is_refused_naming_file_line_and_key(tmp_path, change, expected):
    path = _config_file(tmp_path, {**TEST_JOB, **change}, [TEST_JOB_RULE])
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    text = str(caught.value)
    assert expected in text and f"{path}:" in text and "pair 'api'" in text


def test_a_test_job_no_rule_judges_is_refused(tmp_path):
    """Without a `validation`/`jobs` rule the Job would gate nothing: an error, not a warning."""
    path = _config_file(tmp_path, TEST_JOB, [PODS_READY_RULE])
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    text = str(caught.value)
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1)
                if row.strip().startswith("test_job:"))
    assert f"{path}:{line}: pair 'api' field 'test_job'" in text
    assert "rules/sets/test-job.yaml" in text
    assert load_config(_config_file(tmp_path, TEST_JOB, [TEST_JOB_RULE])).config.pairs[0] \
        .test_job is not None


def test_the_shipped_rule_set_judges_the_jobs_driver():
    from gatekeeper.rules import load_rule_set

    [rule] = load_rule_set([Path("rules/sets/test-job.yaml")]).rules
    assert (rule.source, rule.driver, rule.key, rule.weight) == ("validation", "jobs", True, 0)


# ---- the driver against the emulated cluster ----------------------------------------------

def _target(blue: str, green: str, release: str = "r1", **job: Any) -> DriverTarget:
    pair = PairConfig.model_validate({
        "name": "api", "namespaces": [blue, green],
        "routes": [{"name": "live", "namespace": "routing"}],
        "test_job": {**TEST_JOB, **job}})
    return DriverTarget(pair, green, blue, release)


async def test_the_driver_adopts_its_job_and_deletes_it_when_stopped_unfinished(
        kube_emulator, kube_api, unique_pair):
    """A second run for the same release (a restart, a new leader) creates no second Job; an
    abort deletes the unfinished Job with its pods; shutdown leaves it for the next leader."""
    blue, green = unique_pair.blue, unique_pair.green
    kube_emulator.load(seed(blue, green, unique_pair.name("routing")))
    target = _target(blue, green, image="hangs:1")
    outcomes: list[Outcome] = []
    driver = testjob.TestJobDriver(kube_api, poll_interval=0.05)
    for _ in range(2):
        task = asyncio.create_task(driver.run(target, outcomes.append))
        await wait_until(lambda: outcomes and outcomes[-1].status == "pending", within=5,
                         what="running")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await driver.stop(target, "shutdown")
    batch = client.BatchV1Api(kube_api)
    [job] = (await batch.list_namespaced_job(green)).items
    assert job.metadata.name == testjobs.job_name("api", green, "r1")
    assert len(kube_emulator.pods(green, f"job-name={job.metadata.name}")) == 1
    await driver.stop(target, "abort")
    assert (await batch.list_namespaced_job(green)).items == []
    assert kube_emulator.pods(green, f"job-name={job.metadata.name}") == []


async def test_the_driver_reports_the_deadline_as_the_reason(kube_emulator, kube_api,
                                                             unique_pair):
    blue, green = unique_pair.blue, unique_pair.green
    kube_emulator.load(seed(blue, green, unique_pair.name("routing")))
    kube_emulator.script_image("hangs:1", [{"exitCode": 0, "seconds": 120, "logs": [
        "connecting to the database..."]}])
    outcomes: list[Outcome] = []
    driver = testjob.TestJobDriver(kube_api, poll_interval=0.1)
    await asyncio.wait_for(driver.run(_target(blue, green, image="hangs:1", timeout="1s"),
                                      outcomes.append), 10)
    final = outcomes[-1]
    assert final.status == "fail" and final.value == 0.0
    assert final.details["reason"] == "DeadlineExceeded"
    # The pod and its log are gone with the deadline: the lines were read just before it.
    assert kube_emulator.pods(green, "gatekeeper.io/role=test-job") == []
    assert "DeadlineExceeded" in final.reason and "just before the deadline: connecting " \
        "to the database..." in final.reason


async def test_an_api_refusal_is_an_error_outcome_never_a_pass(kube_emulator, kube_api,
                                                               unique_pair):
    blue, green = unique_pair.blue, unique_pair.green
    kube_emulator.load(seed(blue, green, unique_pair.name("routing")))
    kube_emulator.faults.add(status=403, verb="create", path="/jobs", times=1)
    kube_emulator.script_image(TESTS_IMAGE, [{"exitCode": 0}])
    outcomes: list[Outcome] = []
    driver = testjob.TestJobDriver(kube_api, poll_interval=0.05)
    await asyncio.wait_for(driver.run(_target(blue, green), outcomes.append), 10)
    assert outcomes[0].status == "error" and "403" in outcomes[0].reason
    assert outcomes[-1].status == "pass"


# ---- the service end to end ------------------------------------------------------------------

def _driver(api: client.ApiClient) -> Any:
    return testjob.TestJobDriver(api, poll_interval=0.1)


def _service_config(tmp_path: Path, blue: str, green: str, routing: str) -> Any:
    loaded = write_config(
        tmp_path, [("api", blue, green, routing)], prometheus_url=None,
        rules=[PODS_READY_RULE, TEST_JOB_RULE],
        policy={"auto_flip": True, "soak": "1s", "consecutive_passes": 2})
    pair = loaded.config.pairs[0].model_copy(update={
        "test_job": settings.TestJobConfig.model_validate(TEST_JOB)})
    config = loaded.config.model_copy(update={"pairs": (pair,)})
    return type(loaded)(config=config, rule_set=loaded.rule_set, path=loaded.path)


async def test_a_failing_test_job_makes_the_dark_unsafe_and_the_next_release_reruns_it(
        tmp_path, kube_emulator, kube_api, aiohttp_server, unique_pair):
    """Release 1.5.0's test Job fails twice (backoff_limit 1): the verdict is unsafe with
    BackoffLimitExceeded and the log's last lines, the API shows the outcome, the route stays
    on blue. Release 1.5.1 gets a Job of its own, unknown while it runs; it passes and the
    dark is flipped."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    kube_emulator.load(seed(blue, green, routing))
    kube_emulator.script_image(TESTS_IMAGE, [{"exitCode": 1, "logs": [
        "  checkout", "    1) pays an order", "1 failing",
        "AssertionError: expected 200, got 500"]}])
    service = create_service(_service_config(tmp_path, blue, green, routing), kube_api,
                             token=TOKEN, drivers=[_driver(kube_api)])
    view = service.controller.views["api"]
    server = await aiohttp_server(service.app)  # runs the control loop, as `serve` does
    batch = client.BatchV1Api(kube_api)
    try:
        await wait_until(lambda: view.state.active == blue, within=10, what="first evaluation")
        await set_image(kube_api, green, NEW)

        def verdict_is(name: str) -> bool:
            return view.verdict is not None and view.verdict.verdict == name

        await wait_until(lambda: verdict_is("unsafe"), within=20, what="an unsafe verdict")
        assert view.verdict is not None
        reasons = " / ".join(view.verdict.reasons)
        assert "test-job [key] on " + green in reasons
        assert "BackoffLimitExceeded" in reasons
        assert "AssertionError: expected 200, got 500" in reasons
        assert await route_target(kube_api, routing) == blue
        [job] = (await batch.list_namespaced_job(green)).items
        env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
        assert env["TARGET_URL"] == f"http://api-service.{green}.svc:8080"
        assert kube_emulator.programs.runs_of(TESTS_IMAGE) == 2
        async with aiohttp.ClientSession() as http:
            status, detail = await get_json(http, str(server.make_url("/api/v1/pairs/api")))
        assert status == 200
        [outcome] = detail["validation"]["outcomes"]
        assert (outcome["driver"], outcome["namespace"], outcome["status"]) == (
            "jobs", green, "fail")
        assert outcome["details"]["reason"] == "BackoffLimitExceeded"
        assert outcome["details"]["log_tail"][-1] == "AssertionError: expected 200, got 500"

        kube_emulator.script_image(TESTS_IMAGE, [{"exitCode": 0, "seconds": 2.0,
                                                  "logs": ["12 passing"]}])
        await set_image(kube_api, green, NEW + "-fix")
        await wait_until(lambda: verdict_is("unknown") and any(
            "test-job" in r and "running" in r for r in view.verdict.reasons),  # type: ignore[union-attr]
            within=10, what="unknown while the new release's Job runs")
        await wait_until(lambda: view.state.phase in ("flipped", "stable"), within=30,
                         what="flipped after the new release's tests passed")
        assert await route_target(kube_api, routing) == green
        names = sorted(j.metadata.name for j in (await batch.list_namespaced_job(green)).items)
        assert len(names) == 2 and job.metadata.name in names  # one Job per release
        assert kube_emulator.programs.runs_of(TESTS_IMAGE) == 1  # counted since re-scripted
    finally:
        await server.close()
        await service.close()
