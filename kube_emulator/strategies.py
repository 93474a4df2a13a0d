"""Per-resource write semantics: defaults on create, what an update may change.

Mirrors the real registry strategies where clients depend on them: the main resource
ignores `status` and `/status` ignores everything else, `generation` moves only when
the spec does, and system metadata (uid, creationTimestamp) cannot be overwritten.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Mapping
from typing import Any

from .jsonvalues import clone, json_equal
from .resources import ResourceType
from .timefmt import parse_rfc3339, rfc3339, rfc3339_micro

Obj = dict[str, Any]

_SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds")
_IGNORED_ON_COMPARE = ("resourceVersion", "managedFields")


def new_uid(rng: random.Random) -> str:
    """A UUIDv4 from the emulator's seeded generator (reproducible runs)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _spec_part(rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What `generation` tracks: everything but metadata (and status, when it is a
    subresource; custom resources without one count status changes too)."""
    ignored = {"metadata", "kind", "apiVersion"}
    if rt.has_status_subresource or not rt.custom:
        ignored.add("status")
    return {k: v for k, v in obj.items() if k not in ignored}


def _fold_string_data(obj: Obj) -> None:
    """Secrets: `stringData` is write-only and merged into base64 `data`."""
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, Mapping):
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
    obj.setdefault("status", {})


def _default_service(obj: Obj, rng: random.Random) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec.get("clusterIP") is None:
        spec["clusterIP"] = f"10.96.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"
        spec["clusterIPs"] = [spec["clusterIP"]]
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {"loadBalancer": {}})


def _default_pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            container.setdefault("imagePullPolicy", "IfNotPresent")
    obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})


JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"


def _default_pod_template(spec: Obj) -> None:
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    pod_spec = template.setdefault("spec", {})
    if not isinstance(pod_spec, dict):
        return
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("schedulerName", "default-scheduler")
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    for container in pod_spec.get("containers") or []:
        if isinstance(container, dict):
            container.setdefault("imagePullPolicy", "IfNotPresent")


def _default_job(obj: Obj) -> None:
    """pkg/apis/batch/v1/defaults.go: one completion and one pod at a time, 6 retries."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podFailurePolicy") is None:
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    _default_pod_template(spec)


def _generate_job_selector(obj: Obj) -> None:
    """The registry's generateSelector: unless `manualSelector`, the selector is the Job's
    uid and the template carries it (with the Job's name), new and legacy label keys."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector") is True:
        return
    meta = obj["metadata"]
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    uid, name = meta["uid"], meta.get("name", "")
    labels.update({"controller-uid": uid, JOB_CONTROLLER_UID: uid,
                   "job-name": name, JOB_NAME: name})
    spec["selector"] = {"matchLabels": {JOB_CONTROLLER_UID: uid}}


def prepare_create(rt: ResourceType, obj: Obj, *, now: float, rng: random.Random) -> None:
    """Fill system metadata and the defaults the real server would add."""
    meta = obj.setdefault("metadata", {})
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(key, None)
    if rt.has_status_subresource:
        obj.pop("status", None)  # status is written by controllers via /status, not on create
    meta["uid"] = new_uid(rng)
    meta["creationTimestamp"] = rfc3339(now)
    if rt.has_generation:
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if rt.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    apply_defaults(rt, obj, rng)
    if rt.kind == "Job":
        _generate_job_selector(obj)


_MICRO_TIMES = {"Lease": ("spec.acquireTime", "spec.renewTime"), "Event": ("eventTime",)}
_SECOND_TIMES = {"Event": ("firstTimestamp", "lastTimestamp", "deprecatedFirstTimestamp",
                           "deprecatedLastTimestamp")}


def _normalize_times(rt: ResourceType, obj: Obj) -> None:
    """The server re-renders timestamps: MicroTime with 6 digits and `Z`, Time truncated to
    whole seconds. Unparseable values are left for validation to reject."""
    for fields, render in ((_MICRO_TIMES.get(rt.kind, ()), rfc3339_micro),
                           (_SECOND_TIMES.get(rt.kind, ()), rfc3339)):
        for dotted in fields:
            *parents, leaf = dotted.split(".")
            node: Any = obj
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and isinstance(node.get(leaf), str):
                try:
                    node[leaf] = render(parse_rfc3339(node[leaf]))
                except ValueError:
                    pass


def apply_defaults(rt: ResourceType, obj: Obj, rng: random.Random) -> None:
    """Kind-specific defaults, applied on every write as the real server's decoder does."""
    meta = obj.setdefault("metadata", {})
    _normalize_times(rt, obj)
    if rt.kind == "Namespace":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name")
    elif rt.kind == "Secret":
        obj.setdefault("type", "Opaque")
        _fold_string_data(obj)
    elif rt.kind == "Deployment":
        _default_deployment(obj)
    elif rt.kind == "ReplicaSet":
        obj.setdefault("spec", {}).setdefault("replicas", 1)
        obj.setdefault("status", {"replicas": 0})
    elif rt.kind == "Service":
        _default_service(obj, rng)
    elif rt.kind == "Pod":
        _default_pod(obj)
    elif rt.kind == "Job":
        _default_job(obj)


def prepare_update(
    rt: ResourceType, new: Obj, old: Obj, subresource: str | None, *, rng: random.Random
) -> Obj:
    """Return what will be stored: status/spec split honoured, system metadata kept,
    generation bumped when the spec part changed."""
    if subresource == "status":
        result = clone(old)
        result["status"] = clone(new.get("status"))
        if result["status"] is None:
            result.pop("status")
        result["metadata"]["resourceVersion"] = (new.get("metadata") or {}).get("resourceVersion")
        return result
    result = clone(new)
    meta = result.setdefault("metadata", {})
    for key in _SYSTEM_META:
        if key in old["metadata"]:
            meta[key] = old["metadata"][key]
        else:
            meta.pop(key, None)
    if rt.has_status_subresource:
        if "status" in old:
            result["status"] = clone(old["status"])
        else:
            result.pop("status", None)
    if rt.kind == "Namespace" and "spec" in old:
        result["spec"] = clone(old["spec"])  # spec.finalizers only change via /finalize
    if rt.kind == "Service":
        for key in ("clusterIP", "clusterIPs"):
            if key in old.get("spec", {}) and not result.setdefault("spec", {}).get(key):
                result["spec"][key] = clone(old["spec"][key])
    apply_defaults(rt, result, rng)
    if rt.has_generation and not json_equal(_spec_part(rt, result), _spec_part(rt, old)):
        meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
    return result


def unchanged(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """True when a write would not change anything (no new revision, no event)."""
    def strip(obj: Mapping[str, Any]) -> dict[str, Any]:
        result = dict(obj)
        result["metadata"] = {
            k: v for k, v in (obj.get("metadata") or {}).items() if k not in _IGNORED_ON_COMPARE
        }
        return result

    return json_equal(strip(new), strip(old))
