"""The `jobs` driver: the team's test image as a Kubernetes Job in the dark namespace.

For each release under validation (a `DriverTarget`) it makes sure the release's Job
exists (one name per pair, dark namespace and release: a restarted or new leader adopts
the Job already running or finished instead of running the tests twice), follows its
status and posts the outcome: `pending` while it runs, `pass` when it completed, `fail`
with the Job's reason (`BackoffLimitExceeded`, `DeadlineExceeded`, ...), its message and
the last lines of the failed pod's log. An API error is an `error` outcome (the rule
stays unknown) and is retried at the next poll. Stopped before the Job finished (flip,
abort, block, new release...), it deletes the Job with its pods; on shutdown or loss of
leadership it leaves it running for the next leader. Finished Jobs are left for people
to read and deleted by the cluster after `ttl_after_finished`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes_asyncio import client

from gatekeeper import errors, kubeclient, testjobs
from gatekeeper.config import PairConfig, TestJobConfig
from gatekeeper.drivers.base import DriverTarget, Report, StopReason
from gatekeeper.outcomes import Outcome

__all__ = ["TestJobDriver"]

log = structlog.get_logger(__name__)
LOG_BYTES = 65_536
"""At most this much of the failed pod's log is read (its last lines)."""
LINE_CHARS = 300
"""A quoted log line is cut to this many characters."""
ADOPTED_STOPS: tuple[StopReason, ...] = ("shutdown", "not_leader")
"""Stops that leave a running Job alone: the next leader adopts it by name."""


class TestJobDriver:
    """Runs `pairs[].test_job` for every release the dark validates (docs/evidence.md)."""

    name = "jobs"

    def __init__(self, api: client.ApiClient, *, poll_interval: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.poll_interval = poll_interval
        """Seconds between two reads of a running Job."""
        self.clock = clock

    def applies(self, pair: PairConfig) -> bool:
        """The pair configures a test Job."""
        return pair.test_job is not None

    async def run(self, target: DriverTarget, report: Report) -> None:
        """Create or adopt the release's Job and report until it finished."""
        config = self._config(target)
        body = testjobs.manifest(config, pair=target.pair.name, dark=target.dark,
                                 active=target.active, release=target.release)
        name = body["metadata"]["name"]
        if target.dry_run:
            report(Outcome("pending", f"dry-run: would run test Job {name} ({config.image}) "
                           f"in {target.dark}", at=self.clock(), details={"job": name}))
            return
        started = self.clock()
        before_deadline: tuple[str | None, list[str]] = (None, [])
        """The running pod's last lines read just before the deadline (its pods are deleted
        when it passes, and their logs with them)."""
        while True:
            try:
                job, server_now = await self._ensure(body)
            except errors.API_ERRORS as exc:
                reason = kubeclient.describe_error(exc)
                log.warning("test Job unavailable", pair=target.pair.name, job=name,
                            error=reason)
                report(Outcome("error", f"test Job {name}: {reason}", at=self.clock(),
                               details={"job": name}))
                await asyncio.sleep(self.poll_interval)
                continue
            reading = testjobs.read_job(job)
            details: dict[str, Any] = {"job": name, "namespace": target.dark,
                                       "image": config.image, "succeeded": reading.succeeded,
                                       "failed": reading.failed}
            if reading.status == "passed":
                log.info("test Job passed", pair=target.pair.name, job=name)
                report(Outcome("pass", f"test Job {name} passed ({reading.reason})",
                               value=1.0, samples=1, at=self.clock(), details=details))
                return
            if reading.status == "failed":
                report(await self._failure(name, target.dark, reading, config, details,
                                           before_deadline))
                return
            if self._near_deadline(job, server_now, config):
                pod, tail, _ = await self._tail(name, target.dark, config, phase="Running")
                if tail:
                    before_deadline = (pod, tail)
            report(Outcome("pending", f"test Job {name} running for "
                           f"{self.clock() - started:.0f}s (timeout {config.timeout:g}s)",
                           at=self.clock(), details={**details, "active": reading.active}))
            await asyncio.sleep(self.poll_interval)

    async def stop(self, target: DriverTarget, why: StopReason) -> None:
        """Delete the release's Job if it still runs (not on shutdown or leadership loss)."""
        if why in ADOPTED_STOPS or target.dry_run or target.pair.test_job is None:
            return
        name = testjobs.job_name(target.pair.name, target.dark, target.release)
        try:
            job = await kubeclient.read_json(self.batch.read_namespaced_job, name, target.dark)
            if testjobs.read_job(job).status != "running":
                return
            await kubeclient.read_json(self.batch.delete_namespaced_job, name, target.dark,
                                       propagation_policy="Background")
            log.info("test Job deleted before it finished", pair=target.pair.name, job=name,
                     why=why)
        except errors.APINotFoundError:
            return
        except errors.API_ERRORS as exc:
            log.warning("test Job not deleted", pair=target.pair.name, job=name, why=why,
                        error=kubeclient.describe_error(exc))

    # -- inside --------------------------------------------------------------------------

    @staticmethod
    def _config(target: DriverTarget) -> TestJobConfig:
        if target.pair.test_job is None:
            raise ValueError(f"pair {target.pair.name} has no test_job")
        return target.pair.test_job

    async def _ensure(self, body: dict[str, Any]) -> tuple[Any, float | None]:
        """The Job of `body`'s name: read, else created (a concurrent create is read); with
        the API server's clock at the answer."""
        meta = body["metadata"]
        read = self.batch.read_namespaced_job
        try:
            return await kubeclient.read_json_dated(read, meta["name"], meta["namespace"])
        except errors.APINotFoundError:
            pass
        try:
            job = await kubeclient.read_json_dated(self.batch.create_namespaced_job,
                                                   meta["namespace"], body)
        except errors.APIConflictError:  # 409 AlreadyExists: another writer was first
            return await kubeclient.read_json_dated(read, meta["name"], meta["namespace"])
        log.info("test Job created", job=meta["name"], namespace=meta["namespace"],
                 image=body["spec"]["template"]["spec"]["containers"][0]["image"])
        return job

    def _near_deadline(self, job: Any, server_now: float | None,
                       config: TestJobConfig) -> bool:
        """Whether the Job's deadline (its startTime, on the API server's clock, plus the
        timeout) passes before the next poll or so."""
        start = (job.get("status") or {}).get("startTime")
        if not start or server_now is None:
            return False
        try:
            started = testjobs.parse_time(str(start))
        except ValueError:
            return False
        return started + config.timeout - server_now <= 2 * self.poll_interval + 1.0

    async def _tail(self, name: str, namespace: str, config: TestJobConfig, *,
                    phase: str) -> tuple[str | None, list[str], str | None]:
        """(pod, its last log lines, the problem reading them) of the Job's newest pod in
        `phase`."""
        pod: str | None = None
        try:
            pods = await kubeclient.read_json(self.core.list_namespaced_pod, namespace,
                                              label_selector=f"job-name={name}")
            pod = testjobs.newest_pod(pods.get("items") or [], phase)
            if pod is None:
                return None, [], None
            text = await self.core.read_namespaced_pod_log(
                pod, namespace, container=testjobs.CONTAINER,
                tail_lines=config.log_tail_lines, limit_bytes=LOG_BYTES)
        except errors.API_ERRORS as exc:
            return pod, [], kubeclient.describe_error(exc)
        tail = [line[:LINE_CHARS] for line in str(text).splitlines()][-config.log_tail_lines:]
        return pod, tail, None

    async def _failure(self, name: str, namespace: str, reading: testjobs.JobReading,
                       config: TestJobConfig, details: dict[str, Any],
                       before_deadline: tuple[str | None, list[str]]) -> Outcome:
        """The fail outcome, with the last lines of the newest failed pod's log (or, for a
        Job stopped at its deadline, of the running pod's, read just before it)."""
        pod, tail, problem = await self._tail(name, namespace, config, phase="Failed")
        early = False
        if not tail and before_deadline[1]:
            (pod, tail), early, problem = before_deadline, True, None
        reason = testjobs.failure_reason(name, reading, pod=pod, log_tail=tail,
                                         log_error=problem, before_deadline=early)
        log.warning("test Job failed", job=name, namespace=namespace, reason=reading.reason,
                    pod=pod)
        return Outcome("fail", reason, value=0.0, samples=1, at=self.clock(), details={
            **details, "reason": reading.reason, "message": reading.message, "pod": pod,
            "log_tail": tail})
