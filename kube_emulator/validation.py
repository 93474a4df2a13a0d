"""Server-side validation the real API server applies and clients tend to get wrong.

Decoding errors (a label value that is not a string, a malformed timestamp) are 400s;
semantic ones (bad name, negative replicas, selector not matching the template) are 422s
listing each field, like the real server. Only checks that catch real bugs are here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import bad_request
from .resources import ResourceType
from .selectors import LabelSelector, SelectorError
from .timefmt import parse_rfc3339
from .traefikservices import validate as validate_traefikservice

Causes = list[tuple[str, str]]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MAX_DATA_BYTES = 1024 * 1024


def _string_map(value: Any, field: str) -> Mapping[str, str]:
    """Go decodes these into map[string]string: anything else is a 400."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                          f"{field} of type map[string]string")
    for key, item in value.items():
        if not isinstance(item, str):
            raise bad_request(f"json: cannot unmarshal {type(item).__name__} into Go struct field "
                              f"{field} of type string (key {key!r})")
    return value


def _int_field(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                          f"{field} of type int32")
    return value


def _time_field(value: Any, field: str) -> None:
    if value is None:
        return
    try:
        parse_rfc3339(value)
    except ValueError as exc:
        raise bad_request(f"{field}: {exc}") from None


def _name_causes(rt: ResourceType, name: str) -> Causes:
    if rt.kind == "Namespace" or rt.kind == "Service":
        pattern, what, limit = (_DNS_LABEL, "RFC 1123 label", 63) if rt.kind == "Namespace" else (
            _DNS_1035, "RFC 1035 label", 63)
    else:
        pattern, what, limit = _DNS_SUBDOMAIN, "RFC 1123 subdomain", 253
    if len(name) > limit or not pattern.match(name):
        return [("metadata.name", f'Invalid value: "{name}": a lowercase {what} must consist of '
                 f"lower case alphanumeric characters or '-' (at most {limit} characters)")]
    return []


def _label_causes(labels: Mapping[str, str]) -> Causes:
    causes: Causes = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        bad_prefix = bool(prefix) and not _DNS_SUBDOMAIN.match(prefix)
        if bad_prefix or len(name) > 63 or not _LABEL_NAME.match(name):
            causes.append(("metadata.labels", f'Invalid value: "{key}": name part must consist of '
                           "alphanumeric characters, '-', '_' or '.' (at most 63 characters)"))
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(("metadata.labels", f'Invalid value: "{value}": a valid label must be an '
                           "empty string or consist of alphanumeric characters, '-', '_' or '.', "
                           "and must start and end with an alphanumeric character (at most 63)"))
    return causes


def validate_metadata(rt: ResourceType, obj: Mapping[str, Any]) -> Causes:
    """Name, label and annotation checks shared by every resource."""
    meta = obj.get("metadata") or {}
    labels = _string_map(meta.get("labels"), "ObjectMeta.metadata.labels")
    _string_map(meta.get("annotations"), "ObjectMeta.metadata.annotations")
    return _name_causes(rt, str(meta.get("name", ""))) + _label_causes(labels)


def _validate_pod_spec(spec: Any, field: str) -> Causes:
    if not isinstance(spec, Mapping):
        return [(field, "Required value")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [(f"{field}.containers", "Required value")]
    causes: Causes = []
    for i, container in enumerate(containers):
        if not isinstance(container, Mapping) or not container.get("name"):
            causes.append((f"{field}.containers[{i}].name", "Required value"))
        elif not container.get("image"):
            causes.append((f"{field}.containers[{i}].image", "Required value"))
    return causes


def _validate_workload(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> Causes:
    spec = obj.get("spec") or {}
    replicas = _int_field(spec.get("replicas"), "spec.replicas")
    causes: Causes = []
    if replicas is not None and replicas < 0:
        causes.append(("spec.replicas",
                       f"Invalid value: {replicas}: must be greater than or equal to 0"))
    selector = spec.get("selector")
    if not isinstance(selector, Mapping) or not selector:
        return [*causes, ("spec.selector", "Required value")]
    try:
        parsed = LabelSelector.from_dict(selector)
    except SelectorError as exc:
        return [*causes, ("spec.selector", f"Invalid value: {exc}")]
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not parsed.requirements:
        causes.append(("spec.selector", "Invalid value: empty selector is invalid for deployment"))
    elif not parsed.matches(labels):
        causes.append(("spec.template.metadata.labels", f"Invalid value: {json.dumps(labels)}: "
                       "`selector` does not match template `labels`"))
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        causes.append(("spec.selector",
                       f"Invalid value: {json.dumps(selector)}: field is immutable"))
    return causes + _validate_pod_spec(template.get("spec"), "spec.template.spec")


_JOB_IMMUTABLE = ("selector", "template", "completionMode", "podFailurePolicy", "completions")


def _validate_job(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> Causes:
    """pkg/apis/batch/validation: counts not negative, a run-to-completion restart policy,
    a selector matching the template, and a spec that is immutable where it says so."""
    spec = obj.get("spec") or {}
    causes: Causes = []
    for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds",
                "ttlSecondsAfterFinished"):
        value = _int_field(spec.get(key), f"spec.{key}")
        if value is not None and value < 0:
            causes.append((f"spec.{key}",
                           f"Invalid value: {value}: must be greater than or equal to 0"))
    template = spec.get("template") or {}
    pod_spec = template.get("spec") if isinstance(template, Mapping) else None
    policy = pod_spec.get("restartPolicy") if isinstance(pod_spec, Mapping) else None
    if policy not in ("OnFailure", "Never"):
        causes.append(("spec.template.spec.restartPolicy",
                       f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'))
    selector = spec.get("selector")
    if not isinstance(selector, Mapping) or not selector:
        causes.append(("spec.selector", "Required value"))
    else:
        try:
            parsed = LabelSelector.from_dict(selector)
        except SelectorError as exc:
            causes.append(("spec.selector", f"Invalid value: {exc}"))
        else:
            labels = (template.get("metadata") or {}).get("labels") or {}
            if not parsed.matches(labels):
                causes.append(("spec.template.metadata.labels",
                               f"Invalid value: {json.dumps(labels)}: `selector` does not match "
                               "template `labels`"))
    if old is not None:
        old_spec = old.get("spec") or {}
        for key in _JOB_IMMUTABLE:
            if spec.get(key) != old_spec.get(key):
                causes.append((f"spec.{key}", "Invalid value: field is immutable"))
    return causes + _validate_pod_spec(pod_spec, "spec.template.spec")


def _validate_data_map(data: Any, field: str, *, base64_values: bool) -> Causes:
    values = _string_map(data, field)
    causes: Causes = []
    total = 0
    for key, value in values.items():
        if not _CONFIG_KEY.match(key):
            causes.append((f"data[{key}]", f'Invalid value: "{key}": a valid config key must '
                           "consist of alphanumeric characters, '-', '_' or '.'"))
        if base64_values:
            try:
                total += len(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                raise bad_request(f"illegal base64 data in {field}[{key}]") from None
        else:
            total += len(value.encode())
    if total > _MAX_DATA_BYTES:
        causes.append(("data", f"Too long: must have at most {_MAX_DATA_BYTES} bytes"))
    return causes


def _validate_lease(obj: Mapping[str, Any]) -> Causes:
    spec = obj.get("spec") or {}
    if spec.get("holderIdentity") is not None and not isinstance(spec["holderIdentity"], str):
        raise bad_request("json: cannot unmarshal into Go struct field "
                          "LeaseSpec.spec.holderIdentity of type string")
    for field in ("acquireTime", "renewTime"):
        _time_field(spec.get(field), f"spec.{field}")
    causes: Causes = []
    duration = _int_field(spec.get("leaseDurationSeconds"), "spec.leaseDurationSeconds")
    if duration is not None and duration <= 0:
        causes.append(("spec.leaseDurationSeconds",
                       f"Invalid value: {duration}: must be greater than 0"))
    transitions = _int_field(spec.get("leaseTransitions"), "spec.leaseTransitions")
    if transitions is not None and transitions < 0:
        causes.append(("spec.leaseTransitions",
                       f"Invalid value: {transitions}: must be greater than or equal to 0"))
    return causes


def _event_fields(obj: Mapping[str, Any], strict: bool) -> tuple[Mapping[str, Any], str, str]:
    if strict:
        return obj.get("regarding") or {}, "regarding", "reportingController"
    return obj.get("involvedObject") or {}, "involvedObject", "reportingComponent"


def _validate_event(obj: Mapping[str, Any], *, strict: bool) -> Causes:
    """Event validation as in the real server: the legacy rules for core/v1 (stricter
    once `eventTime` is set) and the strict ones for events.k8s.io/v1."""
    for field in ("eventTime", "firstTimestamp", "lastTimestamp", "deprecatedFirstTimestamp",
                  "deprecatedLastTimestamp"):
        _time_field(obj.get(field), field)
    namespace = (obj.get("metadata") or {}).get("namespace")
    involved, involved_field, controller_field = _event_fields(obj, strict)
    involved_ns = involved.get("namespace") or ""
    mismatch = (f"{involved_field}.namespace",
                f'Invalid value: "{involved_ns}": does not match event.namespace')
    causes: Causes = []
    if not obj.get("eventTime"):
        if strict:
            causes.append(("eventTime", "Required value"))
        elif involved_ns and involved_ns != namespace:
            causes.append(mismatch)
        elif not involved_ns and namespace not in ("", "default"):
            causes.append(mismatch)
        return causes
    if not involved_ns and namespace not in ("default", "kube-system"):
        causes.append(mismatch)
    limits = {controller_field: None, "reportingInstance": 128, "action": 128, "reason": 128}
    for field, limit in limits.items():
        value = str(obj.get(field) or "")
        if not value:
            causes.append((field, "Required value"))
        elif limit is not None and len(value) > limit:
            causes.append((field, f"Invalid value: can have at most {limit} characters"))
    note_field = "note" if strict else "message"
    if len(str(obj.get(note_field) or "")) > 1024:
        causes.append((note_field, "Invalid value: can have at most 1024 characters"))
    if strict and obj.get("type") not in ("Normal", "Warning"):
        causes.append(("type", f"Invalid value: has invalid value: {obj.get('type')}"))
    return causes


def _validate_ingressroute(obj: Mapping[str, Any]) -> Causes:
    """The part of Traefik's CRD schema that route flips touch."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return [("spec", "Required value")]
    routes = spec.get("routes")
    if not isinstance(routes, list):
        return [("spec.routes", "Required value")]
    causes: Causes = []
    for i, route in enumerate(routes):
        where = f"spec.routes[{i}]"
        if not isinstance(route, Mapping) or not isinstance(route.get("match", ""), str):
            causes.append((where, "Invalid value: must be an object with a string match"))
            continue
        for j, service in enumerate(route.get("services") or []):
            at = f"{where}.services[{j}]"
            if not isinstance(service, Mapping) or not isinstance(service.get("name"), str):
                causes.append((f"{at}.name", "Required value"))
                continue
            port = service.get("port")
            if port is not None and (isinstance(port, bool) or not isinstance(port, int | str)):
                causes.append((f"{at}.port", f"Invalid value: {port!r}: must be int or string"))
            for key in ("namespace", "kind"):
                if key in service and not isinstance(service[key], str):
                    causes.append((f"{at}.{key}",
                                   f"Invalid value: {service[key]!r}: must be string"))
            weight = service.get("weight")
            if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)):
                causes.append((f"{at}.weight", f"Invalid value: {weight!r}: must be integer"))
    return causes


def _mutable_pod_spec(spec: Any) -> Any:
    """A pod spec without the fields a pod update may change (images, deadlines...)."""
    if not isinstance(spec, Mapping):
        return spec
    result = {k: v for k, v in spec.items()
              if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")}
    for key in ("containers", "initContainers"):
        if isinstance(result.get(key), list):
            result[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, Mapping)
                           else c for c in result[key]]
    return result


def _validate_pod_update(obj: Mapping[str, Any], old: Mapping[str, Any]) -> Causes:
    if _mutable_pod_spec(obj.get("spec")) != _mutable_pod_spec(old.get("spec")):
        return [("spec", "Forbidden: pod updates may not change fields other than "
                 "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                 "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing "
                 "tolerations) or `spec.terminationGracePeriodSeconds`")]
    return []


def validate(rt: ResourceType, obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> Causes:
    """All validation for one object (old is the stored version on updates)."""
    causes = validate_metadata(rt, obj)
    if old is not None and rt.kind == "Pod":
        causes += _validate_pod_update(obj, old)
    if rt.kind in ("Deployment", "ReplicaSet"):
        causes += _validate_workload(obj, old)
    elif rt.kind == "Pod":
        causes += _validate_pod_spec(obj.get("spec"), "spec")
    elif rt.kind == "Job":
        causes += _validate_job(obj, old)
    elif rt.kind == "ConfigMap":
        causes += _validate_data_map(obj.get("data"), "ConfigMap.data", base64_values=False)
    elif rt.kind == "Secret":
        causes += _validate_data_map(obj.get("data"), "Secret.data", base64_values=True)
    elif rt.kind == "Lease":
        causes += _validate_lease(obj)
    elif rt.kind == "Event":
        causes += _validate_event(obj, strict=rt.group == "events.k8s.io")
    elif rt.kind == "IngressRoute":
        causes += _validate_ingressroute(obj)
    elif rt.kind == "TraefikService":
        causes += validate_traefikservice(obj)
    return causes
