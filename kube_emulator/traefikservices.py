"""The part of Traefik's TraefikService CRD schema that gatekeeper writes: weighted and mirroring.

Written from the structural schema in Traefik's `traefik.io_traefikservices.yaml` (v3.x):
what the API server itself rejects with a 422 before Traefik ever sees the object. `spec` is
required; service references need a string `name`; `kind` is `Service` or `TraefikService`;
`port` is an integer or a string; `weight` is an integer >= 0; `percent` and `maxBodySize`
are integers, `mirrorBody` and `passHostHeader` booleans. The schema does not bound `percent`
and does not forbid `weighted` and `mirroring` together: the API server accepts both, and
Traefik itself then refuses a percent outside 0..100 and serves `weighted` when both are set
(`telemetry_sandbox.traefik_follow` does the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .jsonvalues import type_name

Causes = list[tuple[str, str]]

KINDS = ("Service", "TraefikService")
STRATEGIES = ("wrr", "p2c", "hrw", "leasttime", "RoundRobin")

_SERVICE_FIELDS: dict[str, str] = {
    "name": "string", "namespace": "string", "kind": "kind", "port": "int-or-string",
    "scheme": "string", "strategy": "strategy", "passHostHeader": "boolean",
    "nativeLB": "boolean", "nodePortLB": "boolean", "serversTransport": "string",
    "weight": "weight",
}
"""A LoadBalancerSpec's scalar fields and their schema types (nested objects such as
sticky or healthCheck are not checked here)."""

_MIRRORING_FIELDS = {**_SERVICE_FIELDS, "mirrorBody": "boolean", "maxBodySize": "integer"}
_MIRROR_FIELDS = {**_SERVICE_FIELDS, "percent": "integer"}


def _wrong_type(path: str, value: Any, expected: str) -> tuple[str, str]:
    return (path, f'Invalid value: "{type_name(value)}": {path} in body must be of type '
                  f'{expected}: "{type_name(value)}"')


def _check(path: str, value: Any, kind: str) -> Causes:
    """One field against its schema type, with the API server's wording."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "string" and not isinstance(value, str):
        return [_wrong_type(path, value, "string")]
    if kind == "boolean" and not isinstance(value, bool):
        return [_wrong_type(path, value, "boolean")]
    if kind in ("integer", "weight") and not is_int:
        return [_wrong_type(path, value, "integer")]
    if kind == "weight" and value < 0:
        return [(path, f"Invalid value: {value}: {path} in body should be greater than or "
                       "equal to 0")]
    if kind == "int-or-string" and not (is_int or isinstance(value, str)):
        return [(path, f'Invalid value: "{type_name(value)}": {path} in body must be of type '
                       'integer or string')]
    for enum_kind, allowed in (("kind", KINDS), ("strategy", STRATEGIES)):
        if kind == enum_kind and value not in allowed:
            supported = ", ".join(f'"{a}"' for a in allowed)
            return [(path, f'Unsupported value: "{value}": supported values: {supported}')]
    return []


def _service(path: str, value: Any, fields: Mapping[str, str]) -> Causes:
    if not isinstance(value, Mapping):
        return [_wrong_type(path, value, "object")]
    causes: Causes = []
    if "name" not in value:
        causes.append((f"{path}.name", "Required value"))
    for key, kind in fields.items():
        if key in value and value[key] is not None:
            causes += _check(f"{path}.{key}", value[key], kind)
    return causes


def _array(path: str, value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def validate(obj: Mapping[str, Any]) -> Causes:
    """Each field of `spec.weighted` and `spec.mirroring` the CRD schema rejects."""
    spec = obj.get("spec")
    if spec is None:
        return [("spec", "Required value")]
    if not isinstance(spec, Mapping):
        return [_wrong_type("spec", spec, "object")]
    causes: Causes = []
    weighted = spec.get("weighted")
    if weighted is not None:
        if not isinstance(weighted, Mapping):
            causes.append(_wrong_type("spec.weighted", weighted, "object"))
        elif weighted.get("services") is not None:
            services = _array("spec.weighted.services", weighted["services"])
            if services is None:
                causes.append(_wrong_type("spec.weighted.services", weighted["services"],
                                          "array"))
            for i, service in enumerate(services or []):
                causes += _service(f"spec.weighted.services[{i}]", service, _SERVICE_FIELDS)
    mirroring = spec.get("mirroring")
    if mirroring is not None:
        causes += _service("spec.mirroring", mirroring, _MIRRORING_FIELDS)
        raw = mirroring.get("mirrors") if isinstance(mirroring, Mapping) else None
        if raw is not None:
            mirrors = _array("spec.mirroring.mirrors", raw)
            if mirrors is None:
                causes.append(_wrong_type("spec.mirroring.mirrors", raw, "array"))
            for i, mirror in enumerate(mirrors or []):
                causes += _service(f"spec.mirroring.mirrors[{i}]", mirror, _MIRROR_FIELDS)
    return causes
