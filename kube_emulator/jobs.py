"""The Job controller and the TTL-after-finished controller of kube-controller-manager.

Follows pkg/controller/job (Kubernetes 1.31+, where the terminal condition waits for the
pods): a Job starts `parallelism` pods (never more than the completions still missing),
counts its pods' phases, replaces a failed pod until `status.failed` exceeds
`backoffLimit` (for `OnFailure`, until the pods' restarts reach it), and ends when
`completions` pods succeeded or `activeDeadlineSeconds` passed since `status.startTime`.
A failing Job gets the interim `FailureTarget` condition, its active pods are deleted,
then `Failed` with the same reason (`BackoffLimitExceeded`, `DeadlineExceeded`) and
message; a succeeding one `SuccessCriteriaMet`, then `Complete` (reason
`CompletionsReached`) and `completionTime`. Once finished, `ttlSecondsAfterFinished`
later the Job is deleted with its pods (the TTL controller).

Left out: indexed completion, pod failure and success policies, suspend/resume beyond not
starting pods, the job-tracking finalizer on pods, and Events. The retry backoff (10 s
doubling on a real cluster) is `retry_delay` seconds, 0 by default so tests stay fast.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

from .controllers import pod_from_template
from .errors import ApiError
from .kubelet import is_ready
from .operations import ObjectAPI
from .resources import JOBS, PODS
from .store import Event
from .timefmt import parse_rfc3339, rfc3339

log = logging.getLogger(__name__)
Obj = dict[str, Any]

BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")


def condition(job: Mapping[str, Any], kind: str) -> Obj | None:
    """The Job's condition of this type when its status is True."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def finished(job: Mapping[str, Any]) -> Obj | None:
    """The terminal condition (Complete or Failed) of a finished Job, else None."""
    return condition(job, "Complete") or condition(job, "Failed")


def _job_of(pod: Mapping[str, Any]) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job" and \
                str(ref.get("apiVersion", "")).startswith("batch/"):
            return str(ref.get("name"))
    return None


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class JobController:
    """Reconciles Jobs into pods and pod phases into Job status; deletes finished Jobs
    after their TTL."""

    def __init__(self, api: ObjectAPI, *, rng: random.Random | None = None,
                 retry_delay: float = 0.0) -> None:
        self.api = api
        self.store = api.store
        self.rng = rng or random.Random()
        self.retry_delay = retry_delay
        """Seconds before a failed pod is replaced (a real cluster: 10 s, doubling)."""
        self._counted: dict[str, tuple[set[str], set[str]]] = {}
        """Per Job uid: uids of its pods counted as succeeded and as failed (counts survive
        the pods' deletion, as the real controller's finalizer tracking makes them)."""
        self._timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self._waited: dict[str, int] = {}
        """Per Job uid: the failure count whose retry delay has been served."""
        self._busy: set[tuple[str, str]] = set()
        self._again: set[tuple[str, str]] = set()
        self.store.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        obj, ns = event.object, event.namespace
        if event.resource.key == JOBS.key:
            name = obj["metadata"]["name"]
            if event.type == "DELETED":
                self._counted.pop(obj["metadata"].get("uid", ""), None)
                self._waited.pop(obj["metadata"].get("uid", ""), None)
                self._cancel(ns, name, ttl=True)
            else:
                self.reconcile(ns, name)
        elif event.resource.key == PODS.key:
            job = _job_of(obj)
            if job is None:
                return
            if event.type == "DELETED" and not _terminal(obj):
                owner = self.store.get(JOBS, ns, job)
                if owner is not None:  # a pod deleted while running counts as failed
                    self._counts(owner)[1].add(obj["metadata"]["uid"])
            self.reconcile(ns, job)

    def _counts(self, job: Mapping[str, Any]) -> tuple[set[str], set[str]]:
        return self._counted.setdefault(job["metadata"]["uid"], (set(), set()))

    # ---- reconcile ---------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> None:
        """Bring one Job forward; re-entrant calls (from the writes it makes) are folded
        into one more pass."""
        key = (namespace, name)
        if key in self._busy:
            self._again.add(key)
            return
        self._busy.add(key)
        try:
            for _ in range(20):
                self._again.discard(key)
                self._sync(namespace, name)
                if key not in self._again:
                    break
        finally:
            self._busy.discard(key)
            self._again.discard(key)

    def _pods(self, job: Mapping[str, Any]) -> list[Obj]:
        uid = job["metadata"]["uid"]
        return [p for p in self.store.iter(PODS, job["metadata"]["namespace"])
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]

    def _sync(self, namespace: str, name: str) -> None:
        job = self.store.get(JOBS, namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        if finished(job) is not None:
            self._schedule_ttl(job)
            return
        spec = job.get("spec") or {}
        if spec.get("suspend"):
            return
        pods = self._pods(job)
        succeeded, failed = self._counts(job)
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":
                succeeded.add(pod["metadata"]["uid"])
            elif phase == "Failed":
                failed.add(pod["metadata"]["uid"])
        active = [p for p in pods
                  if not _terminal(p) and not p["metadata"].get("deletionTimestamp")]
        now = self.api.clock()
        status = job.get("status") or {}
        start = status.get("startTime")
        started = parse_rfc3339(start) if start else now
        backoff_limit = int(spec.get("backoffLimit", 6))
        restarts = sum(int(cs.get("restartCount", 0)) for p in active
                       for cs in (p.get("status") or {}).get("containerStatuses") or [])
        on_failure = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") \
            == "OnFailure"
        deadline = spec.get("activeDeadlineSeconds")
        completions = spec.get("completions")
        failure = None
        if len(failed) > backoff_limit or (on_failure and restarts and restarts >= backoff_limit):
            failure = BACKOFF_LIMIT_EXCEEDED
        elif deadline is not None and now - started >= int(deadline):
            failure = DEADLINE_EXCEEDED
        if failure is not None:
            for pod in active:
                self._delete_pod(namespace, pod["metadata"]["name"])
                failed.add(pod["metadata"]["uid"])
            self._finish(job, "FailureTarget", "Failed", failure, len(succeeded), len(failed))
            return
        done = len(succeeded) >= int(completions) if completions is not None \
            else bool(succeeded)
        if done and not active:
            self._finish(job, "SuccessCriteriaMet", "Complete", COMPLETIONS_REACHED,
                         len(succeeded), len(failed))
            return
        wanted = int(spec.get("parallelism", 1))
        if completions is not None:
            wanted = min(wanted, int(completions) - len(succeeded))
        missing = 0 if done else wanted - len(active)
        if missing > 0:
            if self.retry_delay > 0 and len(failed) > self._waited.get(job["metadata"]["uid"], 0):
                self._later(job, "retry", self.retry_delay, failures=len(failed))
            else:
                for _ in range(missing):
                    self._create_pod(job)
                active = [p for p in self._pods(job) if not _terminal(p)]
        if deadline is not None:
            self._later(job, "deadline", max(started + int(deadline) - now, 0.0))
        self._write_status(job, start or rfc3339(now), active, len(succeeded), len(failed))

    def _write_status(self, job: Obj, start: str, active: list[Obj], succeeded: int,
                      failed: int) -> None:
        ready = sum(is_ready(p) for p in active)

        def change(j: Obj) -> None:
            status = j.setdefault("status", {})
            status["startTime"] = status.get("startTime") or start
            for key, value in (("active", len(active)), ("succeeded", succeeded),
                               ("failed", failed)):
                if value:
                    status[key] = value
                else:  # int32 with omitempty
                    status.pop(key, None)
            status.update(ready=ready, terminating=0, uncountedTerminatedPods={})

        meta = job["metadata"]
        self.api.mutate(JOBS, meta["namespace"], meta["name"], change, subresource="status")

    def _finish(self, job: Obj, interim: str, final: str, why: tuple[str, str],
                succeeded: int, failed: int) -> None:
        """Two status writes, as the real controller makes: the interim condition with the
        counts, then the terminal one (and completionTime for a success)."""
        reason, message = why
        meta = job["metadata"]
        now = rfc3339(self.api.clock())

        def add(kind: str) -> Any:
            def change(j: Obj) -> None:
                status = j.setdefault("status", {})
                status.setdefault("startTime", now)
                for key, value in (("succeeded", succeeded), ("failed", failed)):
                    if value:
                        status[key] = value
                status.pop("active", None)
                status.update(ready=0, terminating=0, uncountedTerminatedPods={})
                conditions = status.setdefault("conditions", [])
                if not any(c.get("type") == kind for c in conditions):
                    conditions.append({"type": kind, "status": "True", "reason": reason,
                                       "message": message, "lastProbeTime": now,
                                       "lastTransitionTime": now})
                if kind == "Complete":
                    status["completionTime"] = now
            return change

        self._cancel(meta["namespace"], meta["name"])
        self.api.mutate(JOBS, meta["namespace"], meta["name"], add(interim), subresource="status")
        self.api.mutate(JOBS, meta["namespace"], meta["name"], add(final), subresource="status")
        current = self.store.get(JOBS, meta["namespace"], meta["name"])
        if current is not None:
            self._schedule_ttl(current)

    def _create_pod(self, job: Obj) -> None:
        meta = job["metadata"]
        body = pod_from_template({**job, "apiVersion": "batch/v1", "kind": "Job"},
                                 (job.get("spec") or {}).get("template") or {}, self.rng)
        try:
            self.api.create(PODS, meta["namespace"], body)
        except ApiError as exc:
            log.warning("cannot create pod for Job %s/%s: %s", meta["namespace"], meta["name"],
                        exc.message)

    def _delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.api.delete(PODS, namespace, name)
        except ApiError as exc:
            if exc.code != 404:
                log.warning("cannot delete pod %s/%s: %s", namespace, name, exc.message)

    # ---- timers: retries, deadlines, TTL -----------------------------------------------

    def _timer(self, job: Mapping[str, Any], what: str) -> bool:
        meta = job["metadata"]
        return (meta["namespace"], meta["name"], what) in self._timers

    def _later(self, job: Mapping[str, Any], what: str, delay: float, *,
               failures: int = 0) -> None:
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"], what)
        if key in self._timers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # synchronous use: no timers
            return
        self._timers[key] = loop.call_later(delay, self._fire, key, meta["uid"], failures)

    def _fire(self, key: tuple[str, str, str], uid: str, failures: int) -> None:
        self._timers.pop(key, None)
        namespace, name, what = key
        job = self.store.get(JOBS, namespace, name)
        if job is None or job["metadata"].get("uid") != uid:
            return
        if what == "ttl":
            try:  # the TTL controller deletes with its dependents
                self.api.delete(JOBS, namespace, name, options={
                    "propagationPolicy": "Foreground",
                    "preconditions": {"uid": uid}})
            except ApiError as exc:
                if exc.code not in (404, 409):
                    log.warning("cannot delete finished Job %s/%s: %s", namespace, name,
                                exc.message)
            return
        if what == "retry":
            self._waited[uid] = failures
        self.reconcile(namespace, name)

    def _schedule_ttl(self, job: Mapping[str, Any]) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        end = finished(job)
        if ttl is None or end is None:
            return
        try:
            ended = parse_rfc3339(str(end.get("lastTransitionTime")))
        except ValueError:
            ended = self.api.clock()
        self._later(job, "ttl", max(ended + int(ttl) - self.api.clock(), 0.0))

    def _cancel(self, namespace: str, name: str, *, ttl: bool = False) -> None:
        for key in [k for k in self._timers if k[:2] == (namespace, name)]:
            if ttl or key[2] != "ttl":
                self._timers.pop(key).cancel()

    def close(self) -> None:
        """Cancel every timer (server shutdown)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
