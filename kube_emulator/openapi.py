"""The OpenAPI v3 discovery kubectl reads before it writes: `/openapi/v3` lists one document
per group version, each naming the PATCH operation of every resource with its
`x-kubernetes-group-version-kind` and the `fieldValidation` query parameter. That is how
kubectl (k8s.io/kubectl pkg/util/openapi, the query-param verifier) learns that the server
validates fields itself, so `kubectl apply` sends `fieldValidation=Strict` instead of
validating on the client. Schemas are only those a CRD declares; built-in kinds get none.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Registry, ResourceType

_PARAMETERS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _gv_doc(registry: Registry, group: str, version: str) -> dict[str, Any]:
    served = [r for r in registry if r.group == group and r.version == version]
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in served:
        paths[_item_path(rt)] = {"patch": {
            "operationId": f"patch{rt.kind}",
            "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version,
                                                "kind": rt.kind},
            "parameters": _PARAMETERS,
            "responses": {"200": {"description": "OK"}},
        }}
        if rt.schema is not None:
            schemas[f"{'.'.join(reversed(rt.group.split('.')))}.{rt.version}.{rt.kind}"] = {
                **rt.schema,
                "x-kubernetes-group-version-kind": [{"group": rt.group, "version": rt.version,
                                                     "kind": rt.kind}],
            }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.30.0"},
            "paths": paths, "components": {"schemas": schemas}}


def _item_path(rt: ResourceType) -> str:
    base = f"/{_gv_path(rt.group, rt.version)}"
    if rt.namespaced:
        return f"{base}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
    return f"{base}/{rt.plural}/{{name}}"


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:128].upper()


def root_doc(registry: Registry) -> dict[str, Any]:
    """`/openapi/v3`: where each group version's document is."""
    versions = {("", r.version) if not r.group else (r.group, r.version) for r in registry}
    paths = {}
    for group, version in sorted(versions):
        path = _gv_path(group, version)
        digest = _hash(_gv_doc(registry, group, version))
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def group_version_doc(registry: Registry, tail: str) -> dict[str, Any] | None:
    """`/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`, None if not served."""
    parts = [p for p in tail.split("/") if p]
    if len(parts) == 2 and parts[0] == "api":
        group, version = "", parts[1]
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    if registry.resource_list_doc(group, version) is None:
        return None
    return _gv_doc(registry, group, version)
