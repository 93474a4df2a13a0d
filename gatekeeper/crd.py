"""The BlueGreenPair custom resource: its names, and its CRD generated from the pair models.

One pair, one namespaced object: `spec` is what a pair in the configuration file holds
(`config.PairConfig` without `name`, which is the object's name), `status` is the pair's one
record (docs/pair-objects.md). The CRD's OpenAPI schema is generated here from the same
pydantic models that validate the configuration (one source of truth); the chart ships the
result in helm/gatekeeper/crds/ (`gatekeeper crd`, `make sync-chart`), and
tests/test_crd.py checks the committed file equals what this module generates.

The group is `bluegreen.dev`: nothing like OPA Gatekeeper's `*.gatekeeper.sh`. Pure: no I/O.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from gatekeeper.config import PairConfig

GROUP = "bluegreen.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BlueGreenPair"
PLURAL = "bluegreenpairs"
SINGULAR = "bluegreenpair"
SHORT_NAMES = ("bgp",)
CATEGORIES = ("bluegreen",)
CRD_NAME = f"{PLURAL}.{GROUP}"
FIELD_MANAGER = "gatekeeper"

_DURATION_NOTE = "a duration: 30s, 5m, 2h, 1h30m, or whole seconds"

PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Active", "type": "string", "jsonPath": ".status.active",
     "description": "the namespace the routes sent traffic to when last seen"},
    {"name": "Dark", "type": "string", "jsonPath": ".status.dark",
     "description": "the other namespace: the next release"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "the release phase (docs/lifecycle.md)"},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict",
     "description": "safe, unsafe or unknown: the dark's last verdict"},
    {"name": "Score", "type": "number", "jsonPath": ".status.score",
     "description": "the dark's last score (0-100)"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)

_CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string",
                 "description": "Ready, Safe, Blocked, Valid or Permitted"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "description": "one CamelCase word"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "minimum": 0},
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The pair's one record, written by gatekeeper with optimistic "
                   "concurrency (docs/pair-objects.md).",
    "properties": {
        "observedGeneration": {"type": "integer", "minimum": 0,
                               "description": "the spec generation this status is about"},
        "phase": {"type": "string", "description": "the release phase"},
        "active": {"type": "string", "description": "where the routes sent traffic when last "
                   "seen (the live routes are the truth)"},
        "dark": {"type": "string", "description": "the other namespace"},
        "verdict": {"type": "string", "enum": ["safe", "unsafe", "unknown"]},
        "score": {"type": "number"},
        "reasons": {"type": "array", "items": {"type": "string"},
                    "description": "why the verdict is what it is"},
        "evaluatedAt": {"type": "string", "format": "date-time"},
        "conditions": {"type": "array", "items": _CONDITION_SCHEMA,
                       "x-kubernetes-list-type": "map",
                       "x-kubernetes-list-map-keys": ["type"]},
        "lastAction": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                       "description": "the in-flight (or last) action's journal entry: id, "
                       "kind, from, to, trigger, status"},
        "transitions": {"type": "array", "description": "the last N transitions, oldest "
                        "first", "items": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}},
        "record": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                   "description": "the whole stored record (lifecycle state, images, "
                   "timestamps, approvals, counters): what gatekeeper reads back"},
    },
}


class SchemaError(ValueError):
    """A pydantic schema construct with no structural OpenAPI form (fix the generator)."""


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One JSON-schema node from pydantic as a structural OpenAPI v3 schema node."""
    if "$ref" in node:
        target = defs[str(node["$ref"]).rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, where)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"{where}: anyOf with {len(options)} non-null options")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        one = _structural({**options[0], **rest}, defs, where)
        if len(options) < len(node["anyOf"]):
            one["nullable"] = True
        return one
    description = node.get("description")
    out: dict[str, Any] = {}
    if node.get("x-duration"):
        out["x-kubernetes-int-or-string"] = True
        out["description"] = f"{description} ({_DURATION_NOTE})" if description \
            else _DURATION_NOTE.capitalize()
        return out
    if description:
        out["description"] = description
    if "type" in node:
        out["type"] = node["type"]
    if node.get("x-kubernetes-preserve-unknown-fields") or node.get("additionalProperties") is True:
        out["x-kubernetes-preserve-unknown-fields"] = True  # free-form JSON: kept, not pruned
    if "const" in node:
        out["enum"] = [node["const"]]
    for key in ("enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "minItems",
                "maxItems", "required"):
        if key in node:
            out[key] = copy.deepcopy(node[key])
    for key, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if key in node:  # JSON Schema 2020-12 numbers -> OpenAPI 3.0 booleans
            out[flag], out[key] = node[key], True
    if "prefixItems" in node:
        items = [_structural(i, defs, f"{where}[]") for i in node["prefixItems"]]
        if any(i != items[0] for i in items):
            raise SchemaError(f"{where}: a tuple of different item types")
        out.update(type="array", items=items[0], minItems=len(items), maxItems=len(items))
    elif isinstance(node.get("items"), Mapping):
        out["items"] = _structural(node["items"], defs, f"{where}[]")
    if "properties" in node:
        out["properties"] = {name: _structural(child, defs, f"{where}.{name}")
                             for name, child in node["properties"].items()}
    elif isinstance(node.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs,
                                                  f"{where}.*")
    if "type" not in out and not out.get("x-kubernetes-int-or-string") \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"{where}: no type")
    return out


def spec_schema() -> dict[str, Any]:
    """`spec`'s schema: `PairConfig` without `name` (the object's own name)."""
    generated = PairConfig.model_json_schema(mode="validation")
    defs = generated.get("$defs", {})
    schema = _structural(generated, defs, "spec")
    schema["properties"].pop("name")
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    schema["description"] = ("A blue/green pair: what a pair in gatekeeper's configuration "
                             "holds, without `name` (the object's name). Defaults are "
                             "gatekeeper's (docs/configuration.md): an omitted `policy` "
                             "follows the global one.")
    return schema


def definition() -> dict[str, Any]:
    """The CustomResourceDefinition manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME,
                     "labels": {"app.kubernetes.io/name": "gatekeeper",
                                "app.kubernetes.io/component": "crd"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": SINGULAR, "kind": KIND,
                      "listKind": f"{KIND}List", "shortNames": list(SHORT_NAMES),
                      "categories": list(CATEGORIES)},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "One blue/green pair gatekeeper gates: two namespaces "
                                   "and the routes that pick the active one.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": copy.deepcopy(STATUS_SCHEMA),
                    },
                }},
            }],
        },
    }


def _json_value(value: Any, schema: Mapping[str, Any]) -> Any:
    """Durations (the schema's int-or-string nodes) as it takes them: whole seconds as
    integers, others as `0.5s`; other numbers (a rate, a weight, a JSON body) as they are."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return {k: _json_value(v, properties.get(k) or (extra if isinstance(extra, Mapping)
                                                         else {}))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v, schema.get("items") or {}) for v in value]
    if isinstance(value, float) and schema.get("x-kubernetes-int-or-string"):
        return int(value) if value.is_integer() else f"{value:g}s"
    if isinstance(value, float) and value.is_integer() and schema.get("type") == "integer":
        return int(value)
    return value


def spec_of(pair: PairConfig) -> dict[str, Any]:
    """The object `spec` of a configured pair (what it sets; defaults left out)."""
    dumped = pair.model_dump(mode="json", exclude={"name"}, exclude_defaults=True,
                             by_alias=True)
    dumped["namespaces"] = list(pair.namespaces)
    dumped["routes"] = [route.model_dump(mode="json", exclude_defaults=True)
                        | {"name": route.name, "namespace": route.namespace}
                        for route in pair.routes]
    value: dict[str, Any] = _json_value(dumped, spec_schema())
    return value


def manifest_of(pair: PairConfig, namespace: str) -> dict[str, Any]:
    """A BlueGreenPair object for a configured pair, in NAMESPACE."""
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": pair.name, "namespace": namespace},
            "spec": spec_of(pair)}


class InvalidPairObject(ValueError):
    """A BlueGreenPair object gatekeeper cannot use: each problem names its field
    (`spec.routes[0].name: ...`)."""

    def __init__(self, namespace: str, name: str, problems: list[str]) -> None:
        super().__init__(f"BlueGreenPair {namespace}/{name}: {'; '.join(problems)}")
        self.namespace = namespace
        self.name = name
        self.problems = problems


def _field_path(loc: tuple[str | int, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_object(obj: Mapping[str, Any]) -> PairConfig:
    """The pair a BlueGreenPair object declares; InvalidPairObject naming every field the
    pair models refuse (the CRD's schema checks types; the models check the rest, e.g. two
    different namespaces or a name that is no DNS label)."""
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidPairObject(namespace, name, ["spec: Required value"])
    if "name" in spec:
        raise InvalidPairObject(namespace, name, [
            "spec.name: Forbidden: the pair's name is the object's metadata.name"])
    try:
        return PairConfig.model_validate({**spec, "name": name}).declared_in(namespace)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            where = "metadata.name" if loc == ("name",) else _field_path(loc)
            problems.append(f"{where}: {error['msg']}")
        raise InvalidPairObject(namespace, name, problems) from None


# ---- status: the pair's record -------------------------------------------------------------

_SPLIT_OUT = {"transitions": "transitions", "last_action": "lastAction"}
"""Record fields kept beside `record` in the status (readable with kubectl), not inside it."""


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("-", "_").split("_")
                   if part) or "Unknown"


def _time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: str, reason: str, message: str, generation: int | None,
               previous: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """A metav1.Condition; its lastTransitionTime moves only when its status does."""
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or []}.get(kind)
    since = before.get("lastTransitionTime") if before and before.get("status") == status \
        else _time(now)
    condition = {"type": kind, "status": status, "reason": reason,
                 "message": message[:1024], "lastTransitionTime": since}
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def record_of(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The stored record (`state.PairState.to_dict` form) in an object's status; None when
    none was written yet. A record that is not a JSON object is returned as found, for the
    reader to report."""
    if not status or "record" not in status:
        return None
    record = status["record"]
    if not isinstance(record, dict):
        return {"record": record}
    merged = dict(record)
    for key, field in _SPLIT_OUT.items():
        if field in status:
            merged[key] = status[field]
    return merged


def status_for(record: Mapping[str, Any], *, generation: int | None,
               previous: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """The status holding RECORD: summary fields and conditions for people and kubectl, the
    record itself for gatekeeper. The published verdict (`verdict`, `score`, `reasons`, the
    Safe condition) is kept from PREVIOUS: it is written by `with_verdict`."""
    previous = previous or {}
    raw = record.get("lifecycle")
    release: dict[str, Any] = raw if isinstance(raw, dict) else {}
    phase = str(release.get("phase") or "idle")
    reason = str(release.get("reason") or "")
    status: dict[str, Any] = {}
    if generation is not None:
        status["observedGeneration"] = generation
    status["phase"] = phase
    for key in ("active", "dark"):
        if release.get(key):
            status[key] = release[key]
    for key in ("verdict", "score", "reasons", "evaluatedAt"):
        if key in previous:
            status[key] = previous[key]
    blocked = phase == "blocked"
    conditions = [
        _condition("Valid", "True", "SpecAccepted", "the spec is a valid pair", generation,
                   previous, now),
        _condition("Ready", "True" if phase == "ready" else "False", _camel(phase),
                   reason or f"phase {phase}", generation, previous, now),
        _condition("Blocked", "True" if blocked else "False",
                   _camel(str(release.get("block_cause") or "blocked")) if blocked
                   else "NotBlocked", reason if blocked else "", generation, previous, now),
    ]
    safe = next((c for c in previous.get("conditions") or [] if c.get("type") == "Safe"), None)
    conditions.append(dict(safe) if safe else _condition(
        "Safe", "Unknown", "NotEvaluated", "no verdict published yet", generation, None, now))
    conditions.extend(dict(c) for c in previous.get("conditions") or []
                      if c.get("type") == "Permitted")  # written by `permitted_condition`
    status["conditions"] = conditions
    for key, field in _SPLIT_OUT.items():
        if record.get(key) is not None:
            status[field] = copy.deepcopy(record[key])
    status["record"] = {k: copy.deepcopy(v) for k, v in record.items() if k not in _SPLIT_OUT}
    return status


def with_verdict(previous: Mapping[str, Any] | None, *, verdict: str, score: float | None,
                 reasons: list[str], generation: int | None, at: float) -> dict[str, Any]:
    """PREVIOUS with the dark's verdict published (summary fields and the Safe condition)."""
    status = copy.deepcopy(dict(previous or {}))
    status["verdict"] = verdict
    if score is None:
        status.pop("score", None)
    else:
        status["score"] = float(round(score))
    status["reasons"] = reasons[:10]
    status["evaluatedAt"] = _time(at)
    value = {"safe": "True", "unsafe": "False"}.get(verdict, "Unknown")
    safe = _condition("Safe", value, _camel(verdict), "; ".join(reasons[:3]) or verdict,
                      generation, previous, at)
    status["conditions"] = [c for c in status.get("conditions") or []
                            if c.get("type") != "Safe"] + [safe]
    return status


GRANT_HINT = "grant it with the chart's rbac.pairNamespaces or rbac.scope: cluster"


def permitted_condition(forbidden: list[str], *, generation: int | None,
                        previous: Mapping[str, Any] | None, now: float
                        ) -> dict[str, Any] | None:
    """The Permitted condition to write, or None when the status already says it (or
    nothing was ever refused: no condition is added to every object). FORBIDDEN: what RBAC
    refused, e.g. "list pods in namespace shop-green"."""
    shown = next((c for c in (previous or {}).get("conditions") or []
                  if c.get("type") == "Permitted"), None)
    if forbidden:
        message = ("gatekeeper may not " + "; ".join(forbidden[:5]) + f" (403): {GRANT_HINT}; "
                   "until then its verdict stays unknown")
        condition = _condition("Permitted", "False", "Forbidden", message, generation,
                               previous, now)
    elif shown is None:
        return None
    else:
        condition = _condition("Permitted", "True", "Granted",
                               "every read of the pair is allowed", generation, previous, now)
    if shown is not None and (shown.get("status"), shown.get("message")) == (
            condition["status"], condition["message"]):
        return None
    return condition


def invalid_status(problems: list[str], *, generation: int | None,
                   previous: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """PREVIOUS with the Valid condition False naming each field: gatekeeper skips the
    object until its spec is fixed (the record, if any, is kept)."""
    status = copy.deepcopy(dict(previous or {}))
    valid = _condition("Valid", "False", "InvalidSpec", "; ".join(problems), generation,
                       previous, now)
    status["conditions"] = [c for c in status.get("conditions") or []
                            if c.get("type") != "Valid"] + [valid]
    if generation is not None:
        status["observedGeneration"] = generation
    return status


HEADER = ("# Generated from gatekeeper/config/ by `gatekeeper crd` (make sync-chart): do not\n"
          "# edit; tests/test_crd.py checks this file equals what the models generate.\n")


def manifest_text() -> str:
    """The CRD as the YAML file committed in helm/gatekeeper/crds/."""
    return HEADER + yaml.safe_dump(definition(), sort_keys=False, width=100)
