"""CustomResourceDefinitions: what the apiextensions server checks, serves and reports.

A CRD written to the emulator defines resources (one per served version) that the
registry then serves like any other: discovery, storage, watches, a status subresource
whose writes ignore everything but `status` (and main-resource writes ignore `status`).
Objects are pruned and validated against the version's structural schema with the real
server's messages (`spec.x: Invalid value: "string": spec.x in body must be of type
integer: "string"`), and lists answer as a Table with the CRD's printer columns for
`kubectl get` (k8s.io/apiextensions-apiserver: pkg/apiserver/validation,
pkg/registry/customresource/tableconvertor; k8s.io/kube-openapi: pkg/validation).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .jsonvalues import type_name
from .resources import ResourceType
from .timefmt import parse_rfc3339

Obj = dict[str, Any]
Causes = list[tuple[str, str]]

_AGE_COLUMN: Mapping[str, Any] = {"name": "Age", "type": "date",
                                  "jsonPath": ".metadata.creationTimestamp"}
_NAME_DESCRIPTION = ("Name must be unique within a namespace. Is required when creating "
                     "resources, although some resources may allow a client to request the "
                     "generation of an appropriate name automatically.")


# ---- the CRD itself ------------------------------------------------------------------------


def validate_definition(crd: Mapping[str, Any]) -> Causes:
    """The checks of apiextensions' CRD validation that a wrong manifest trips first."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes: Causes = []
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not group:
        causes.append(("spec.group", "Required value"))
    if not plural:
        causes.append(("spec.names.plural", "Required value"))
    if not kind:
        causes.append(("spec.names.kind", "Required value"))
    name = (crd.get("metadata") or {}).get("name")
    if group and plural and name != f"{plural}.{group}":
        causes.append(("metadata.name", f'Invalid value: "{name}": must be '
                       'spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", f'Unsupported value: "{spec.get("scope") or ""}": '
                       'supported values: "Cluster", "Namespaced"'))
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(("spec.versions", "Invalid value: null: must have exactly one version "
                       "marked as storage version"))
        return causes
    if sum(1 for v in versions if isinstance(v, Mapping) and v.get("storage")) != 1:
        causes.append(("spec.versions", "Invalid value: must have exactly one version marked "
                       "as storage version"))
    for i, version in enumerate(versions):
        where = f"spec.versions[{i}]"
        if not isinstance(version, Mapping) or not version.get("name"):
            causes.append((f"{where}.name", "Required value"))
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema is None:
            causes.append((f"{where}.schema.openAPIV3Schema", "Required value: schemas are "
                           "required"))
        elif isinstance(schema, Mapping):
            causes += [(f"{where}.schema.openAPIV3Schema{path}", problem)
                       for path, problem in _structural_problems(schema, "")]
    return causes


def _structural_problems(schema: Mapping[str, Any], path: str) -> Causes:
    """Where a schema is not structural: a node without a type (and not int-or-string or
    preserving unknown fields), or a $ref."""
    causes: Causes = []
    if "$ref" in schema:
        causes.append((f"{path}.$ref", "Forbidden: $ref is not allowed"))
    if not schema.get("type") and not (schema.get("x-kubernetes-int-or-string")
                                       or schema.get("x-kubernetes-preserve-unknown-fields")):
        causes.append((f"{path}.type", "Required value: must not be empty for specified "
                       "object fields"))
    for key, child in (schema.get("properties") or {}).items():
        causes += _structural_problems(child, f"{path}.properties[{key}]")
    if isinstance(schema.get("items"), Mapping):
        causes += _structural_problems(schema["items"], f"{path}.items")
    if isinstance(schema.get("additionalProperties"), Mapping):
        causes += _structural_problems(schema["additionalProperties"],
                                       f"{path}.additionalProperties")
    return causes


def defaulted(crd: Obj) -> None:
    """The defaults the server fills in a CRD's spec (singular, listKind, conversion)."""
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
    spec.setdefault("conversion", {"strategy": "None"})


def status_of(crd: Mapping[str, Any], now: str) -> Obj:
    """The status the apiextensions controllers write at once: names accepted, established,
    the storage version recorded."""
    spec = crd.get("spec") or {}
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    previous = (crd.get("status") or {}).get("storedVersions") or []
    conditions = [
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
         "message": "no conflicts found", "lastTransitionTime": now},
        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted", "lastTransitionTime": now},
    ]
    old = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
    for condition in conditions:
        before = old.get(condition["type"])
        if before and before.get("status") == condition["status"]:
            condition["lastTransitionTime"] = before.get("lastTransitionTime", now)
    return {"acceptedNames": dict(spec.get("names") or {}), "conditions": conditions,
            "storedVersions": sorted(set(previous) | set(storage))}


def served_resources(crd: Mapping[str, Any]) -> tuple[ResourceType, ...]:
    """One resource per served version of a (valid) CRD."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    served = []
    for version in versions:
        subresources = version.get("subresources") or {}
        columns = tuple(version.get("additionalPrinterColumns") or ()) or (_AGE_COLUMN,)
        served.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"],
            singular=names.get("singular") or str(names["kind"]).lower(), kind=names["kind"],
            namespaced=spec.get("scope") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            subresources=tuple(s for s in ("status", "scale") if s in subresources),
            custom=True, has_generation=True, storage_version=storage,
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            printer_columns=columns, categories=tuple(names.get("categories") or ()),
        ))
    return tuple(served)


# ---- objects: pruning and schema validation -------------------------------------------------


def prune(schema: Mapping[str, Any] | None, obj: Obj) -> list[str]:
    """Drop fields the schema does not declare (and nulls of non-nullable fields), as the
    server does before validation; returns the dropped paths (for `fieldValidation`)."""
    if not schema:
        return []
    dropped: list[str] = []
    properties = schema.get("properties") or {}
    for key in list(obj):
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if key not in properties:
            if not schema.get("x-kubernetes-preserve-unknown-fields"):
                dropped.append(key)
                del obj[key]
            continue
        _prune_value(properties[key], obj, key, key, dropped)
    return dropped


def _prune_value(schema: Mapping[str, Any], parent: Any, key: Any, path: str,
                 dropped: list[str]) -> None:
    value = parent[key]
    if value is None:
        if not schema.get("nullable") and "default" not in schema and isinstance(parent, dict):
            del parent[key]
        return
    if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for child in list(value):
            where = f"{path}.{child}"
            if properties is not None and child in properties:
                _prune_value(properties[child], value, child, where, dropped)
            elif isinstance(extra, Mapping):
                _prune_value(extra, value, child, where, dropped)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                continue
            elif properties is not None or schema.get("type") == "object":
                dropped.append(where)
                del value[child]
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i in range(len(value)):
            _prune_value(schema["items"], value, i, f"{path}[{i}]", dropped)


def _type_matches(expected: str, value: Any) -> bool:
    actual = type_name(value)
    if expected == "integer":
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    if expected == "number":
        return actual in ("integer", "number")
    return actual == expected


def _render(value: Any) -> str:
    """A value as field errors print it: strings quoted, numbers bare."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def validate_object(schema: Mapping[str, Any] | None, obj: Mapping[str, Any]) -> Causes:
    """Field errors of an object against its version's schema (metadata is checked by the
    generic metadata validation, not here)."""
    if not schema:
        return []
    causes: Causes = []
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    _check_object(schema, body, "", causes, top=True)
    return causes


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_object(schema: Mapping[str, Any], value: Mapping[str, Any], path: str,
                  causes: Causes, *, top: bool = False) -> None:
    properties = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if top and name in ("apiVersion", "kind", "metadata"):
            continue
        if name not in value:
            causes.append((_child(path, name), "Required value"))
    for key, item in value.items():
        where = _child(path, key)
        if key in properties:
            _check(properties[key], item, where, causes)
        elif isinstance(schema.get("additionalProperties"), Mapping):
            _check(schema["additionalProperties"], item, where, causes)
    limits: tuple[tuple[str, str, Callable[[int, int], bool]], ...] = (
        ("minProperties", "should have at least %d properties", lambda n, m: n < m),
        ("maxProperties", "should have at most %d properties", lambda n, m: n > m))
    for keyword, text, fails in limits:
        if keyword in schema and fails(len(value), schema[keyword]):
            causes.append((path, f"Invalid value: {len(value)}: {path} in body "
                           f"{text % schema[keyword]}"))


def _check(schema: Mapping[str, Any], value: Any, path: str, causes: Causes) -> None:
    """One node: type first (nothing else is checked past a wrong type), then its limits."""
    if value is None:
        if schema.get("nullable") or not schema.get("type"):
            return
        causes.append((path, f'Invalid value: "null": {path} in body must be of type '
                       f'{schema["type"]}: "null"'))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (_type_matches("integer", value) or isinstance(value, str)):
            causes.append((path, f'Invalid value: "{type_name(value)}": {path} in body must '
                           f'be of type integer,string: "{type_name(value)}"'))
            return
    elif schema.get("type") and not _type_matches(schema["type"], value):
        causes.append((path, f'Invalid value: "{type_name(value)}": {path} in body must be '
                       f'of type {schema["type"]}: "{type_name(value)}"'))
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        causes.append((path, f"Unsupported value: {_render(value)}: supported values: "
                       f"{allowed}"))
    if isinstance(value, str):
        _check_string(schema, value, path, causes)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(schema, value, path, causes)
    elif isinstance(value, list):
        _check_array(schema, value, path, causes)
    elif isinstance(value, dict) and not (schema.get("x-kubernetes-preserve-unknown-fields")
                                          and not schema.get("properties")):
        _check_object(schema, value, path, causes)
    for option in schema.get("allOf") or ():
        _check(option, value, path, causes)


def _check_string(schema: Mapping[str, Any], value: str, path: str, causes: Causes) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append((path, f"Too long: may not be longer than {schema['maxLength']}"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append((path, f"Invalid value: {_render(value)}: {path} in body should be at "
                       f"least {schema['minLength']} chars long"))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        causes.append((path, f"Invalid value: {_render(value)}: {path} in body should match "
                       f"'{schema['pattern']}'"))


def _check_number(schema: Mapping[str, Any], value: float, path: str,
                  causes: Causes) -> None:
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") is True and value == low):
            word = "greater than" if schema.get("exclusiveMinimum") else \
                "greater than or equal to"
            causes.append((path, f"Invalid value: {_render(value)}: {path} in body should be "
                           f"{word} {_number(low)}"))
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") is True and value == high):
            word = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
            causes.append((path, f"Invalid value: {_render(value)}: {path} in body should be "
                           f"{word} {_number(high)}"))


def _check_array(schema: Mapping[str, Any], value: list[Any], path: str,
                 causes: Causes) -> None:
    if isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _check(schema["items"], item, f"{path}[{i}]", causes)
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append((path, f"Invalid value: {len(value)}: {path} in body should have at "
                       f"least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append((path, f"Too many: {len(value)}: must have at most "
                       f"{schema['maxItems']} items"))


# ---- Table answers (kubectl get) ------------------------------------------------------------


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a meta.k8s.io Table (kubectl get does)."""
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


_JSONPATH_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\['([^']+)'\]")


def _find(obj: Any, path: str) -> tuple[bool, Any]:
    """A simple JSONPath (`.a.b[0]`, as printer columns use) in `obj`: (found, value)."""
    node, pos = obj, 0
    text = path.strip().removeprefix("{").removesuffix("}")
    while pos < len(text):
        step = _JSONPATH_STEP.match(text, pos)
        if step is None:
            return False, None
        key, index, quoted = step.groups()
        if index is not None:
            if not isinstance(node, list) or int(index) >= len(node):
                return False, None
            node = node[int(index)]
        else:
            name = key if key is not None else quoted
            if not isinstance(node, dict) or name not in node:
                return False, None
            node = node[name]
        pos = step.end()
    return True, node


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery's duration.HumanDuration (what the Age column shows)."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    days = hours // 24
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _cell(column: Mapping[str, Any], obj: Mapping[str, Any], now: float) -> Any:
    found, value = _find(obj, str(column.get("jsonPath", "")))
    if not found or value is None:
        return None
    kind = column.get("type")
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        try:
            return human_duration(now - parse_rfc3339(value))
        except ValueError:
            return "<invalid>"
    return None


def _row_object(obj: Mapping[str, Any], include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return dict(obj)
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {}}


def table(rt: ResourceType, objects: Sequence[Mapping[str, Any]], *, resource_version: str,
          now: float, include_object: str = "Metadata", no_headers: bool = False,
          continue_token: str | None = None) -> Obj:
    """The meta.k8s.io/v1 Table of these objects with the CRD's printer columns."""
    columns = [{"name": "Name", "type": "string", "format": "name",
                "description": _NAME_DESCRIPTION, "priority": 0}]
    for column in rt.printer_columns:
        columns.append({
            "name": column["name"], "type": column.get("type", "string"),
            "format": column.get("format", ""),
            "description": column.get("description") or
            f"Custom resource definition column (in JSONPath format): {column.get('jsonPath')}",
            "priority": int(column.get("priority", 0)),
        })
    rows = []
    for obj in objects:
        cells = [(obj.get("metadata") or {}).get("name")]
        cells += [_cell(column, obj, now) for column in rt.printer_columns]
        row: Obj = {"cells": cells}
        attached = _row_object(obj, include_object)
        if attached is not None:
            row["object"] = attached
        rows.append(row)
    meta: Obj = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    doc: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                "columnDefinitions": [] if no_headers else columns, "rows": rows}
    return doc


def utc_now_text(now: float) -> str:
    """RFC 3339 seconds, as conditions' lastTransitionTime."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
