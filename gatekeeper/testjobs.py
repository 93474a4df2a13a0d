"""The team's test Job for a release: its manifest, and what its status says (pure, no I/O).

gatekeeper runs the test image once per release in the dark namespace (docs/evidence.md;
`gatekeeper.drivers.testjob` does the calls). Everything here is data in, data out:

- `job_name`: one name per (pair, dark namespace, release), so a restarted or new leader
  finds the Job already running or finished instead of starting the tests again;
- `manifest`: the batch/v1 Job (activeDeadlineSeconds, backoffLimit,
  ttlSecondsAfterFinished, restartPolicy Never so every attempt keeps its own pod and log,
  no API token unless a service account is named, the dark Service's URL in the env);
- `read_job`: running, passed or failed with the Job's reason and message, read from its
  conditions (`Complete`/`SuccessCriteriaMet`, `Failed`/`FailureTarget`), as Kubernetes
  1.31+ and older clusters write them;
- `is_test_pod`: the Job's pods are not the application: readiness, restarts and log
  rules leave them out.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gatekeeper.config import TestJobConfig
from gatekeeper.templating import render

__all__ = ["ROLE_LABEL", "JobReading", "dark_url", "failure_reason", "is_test_pod", "job_name",
           "manifest", "newest_pod", "parse_time", "read_job"]

MANAGED_BY = "app.kubernetes.io/managed-by"
ROLE_LABEL = "gatekeeper.io/role"
"""On the test Job and its pods: `test-job`."""
PAIR_LABEL = "gatekeeper.io/pair"
RELEASE_LABEL = "gatekeeper.io/release"
"""A digest of the release fingerprint (label values are short); the full one is an
annotation of the same name."""
CONTAINER = "tests"
_MAX_NAME = 63  # a Job's name is also the value of its pods' job-name label


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def job_name(pair: str, dark: str, release: str) -> str:
    """`<pair>-tests-<digest of dark and release>`, at most 63 characters."""
    suffix = f"-tests-{_digest(dark, release)}"
    return f"{pair[:_MAX_NAME - len(suffix)].rstrip('-')}{suffix}"


def dark_url(config: TestJobConfig, dark: str) -> str:
    """The dark Service as the test pod reaches it inside the cluster."""
    return f"{config.scheme}://{config.service}.{dark}.svc:{config.port}"


def manifest(config: TestJobConfig, *, pair: str, dark: str, active: str,
             release: str) -> dict[str, Any]:
    """The batch/v1 Job that runs the tests of `release` against the dark namespace."""
    url = dark_url(config, dark)
    variables = {"namespace": dark, "other": active, "pair": pair, "url": url,
                 "release": release}
    labels = {MANAGED_BY: "gatekeeper", ROLE_LABEL: "test-job", PAIR_LABEL: pair,
              RELEASE_LABEL: _digest(release)}
    env = [{"name": config.url_env, "value": url},
           {"name": "GATEKEEPER_PAIR", "value": pair},
           {"name": "GATEKEEPER_NAMESPACE", "value": dark},
           {"name": "GATEKEEPER_RELEASE", "value": release}]
    env += [{"name": k, "value": render(v, variables)} for k, v in sorted(config.env.items())]
    container: dict[str, Any] = {"name": CONTAINER, "image": config.image, "env": env}
    if config.command:
        container["command"] = list(config.command)
    if config.args:
        container["args"] = [render(a, variables) for a in config.args]
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    else:  # the tests call the application, not the Kubernetes API
        pod_spec["automountServiceAccountToken"] = False
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(pair, dark, release),
            "namespace": dark,
            "labels": labels,
            "annotations": {RELEASE_LABEL: release, PAIR_LABEL: pair},
        },
        "spec": {
            "backoffLimit": config.backoff_limit,
            "activeDeadlineSeconds": max(int(config.timeout), 1),
            "ttlSecondsAfterFinished": int(config.ttl_after_finished),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


JobStatus = Literal["running", "passed", "failed"]


@dataclass(frozen=True)
class JobReading:
    """What a test Job's status says."""

    status: JobStatus
    reason: str = ""
    """The Job condition's reason (`BackoffLimitExceeded`, `DeadlineExceeded`, ...)."""
    message: str = ""
    succeeded: int = 0
    failed: int = 0
    active: int = 0


def _true(status: Mapping[str, Any], *kinds: str) -> Mapping[str, Any] | None:
    for kind in kinds:  # in order of preference: the terminal condition first
        for cond in status.get("conditions") or []:
            if cond.get("type") == kind and cond.get("status") == "True":
                return dict(cond)
    return None


def read_job(job: Mapping[str, Any]) -> JobReading:
    """Running, passed or failed, from the Job's conditions (FailureTarget and
    SuccessCriteriaMet already decide: the terminal condition follows them)."""
    status = job.get("status") or {}
    succeeded, failures, active = (int(status.get(key) or 0)
                                   for key in ("succeeded", "failed", "active"))
    failed = _true(status, "Failed", "FailureTarget")
    if failed is not None:
        return JobReading("failed", str(failed.get("reason") or "Failed"),
                          str(failed.get("message") or ""), succeeded, failures, active)
    passed = _true(status, "Complete", "SuccessCriteriaMet")
    if passed is not None:
        return JobReading("passed", str(passed.get("reason") or "Complete"),
                          str(passed.get("message") or ""), succeeded, failures, active)
    return JobReading("running", succeeded=succeeded, failed=failures, active=active)


def is_test_pod(pod: Mapping[str, Any]) -> bool:
    """A pod of gatekeeper's test Job (not the application: rules leave it out)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(ROLE_LABEL) == "test-job" and labels.get(MANAGED_BY) == "gatekeeper")


def newest_pod(pods: Sequence[Mapping[str, Any]], phase: str) -> str | None:
    """The name of the last attempt in `phase` (`Failed`: its log says why), else None."""
    found = [p for p in pods if (p.get("status") or {}).get("phase") == phase]
    if not found:
        return None
    newest = max(found, key=lambda p: (str(p["metadata"].get("creationTimestamp", "")),
                                       str(p["metadata"]["name"])))
    return str(newest["metadata"]["name"])


def parse_time(text: str) -> float:
    """A Kubernetes timestamp (RFC 3339, `Z`) as Unix seconds; ValueError otherwise."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {text!r}")
    return moment.timestamp()


def failure_reason(name: str, reading: JobReading, *, pod: str | None,
                   log_tail: Sequence[str], log_error: str | None = None,
                   before_deadline: bool = False) -> str:
    """One line for the verdict: the Job, its reason and message, and its log's last lines
    (`before_deadline`: read from the running pod just before the deadline stopped it)."""
    text = f"test Job {name} failed: {reading.reason}"
    if reading.message:
        text += f" ({reading.message})"
    text += f" after {reading.failed} failed pod(s)"
    if log_tail:
        when = " just before the deadline" if before_deadline else ""
        text += f"; last {len(log_tail)} log line(s) of pod {pod}{when}: " + " | ".join(log_tail)
    elif log_error:
        text += f"; no log: {log_error}"
    elif pod is None:
        text += "; no failed pod left to read a log from (pods stopped at the deadline are " \
                "deleted)"
    return text
