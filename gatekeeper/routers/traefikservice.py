"""Weighted TraefikService router, the pattern Flagger uses with Traefik.

The IngressRoute in git references a TraefikService (`kind: TraefikService`) that gatekeeper
owns, so Flux never reverts a flip. Weights live in `spec.weighted.services`; an entry of
weight 0 is dropped, not kept, because Traefik fails the whole route when one child service
has no endpoints (the scaled-down namespace).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from kubernetes_asyncio import client

from gatekeeper.config import RouteRef
from gatekeeper.routers import traefik
from gatekeeper.routers.base import (
    RouteConflict,
    RouteRefused,
    RouteSnapshot,
    RouteView,
    flux_owner,
)

PLURAL = "traefikservices"
FULL_WEIGHT = 100

Entry = dict[str, Any]


def _entries(body: dict[str, Any]) -> list[Entry]:
    return list(((body.get("spec") or {}).get("weighted") or {}).get("services") or [])


def _switched(entry: Entry, service: str | None) -> bool:
    if entry.get("kind", "Service") != "Service":
        return False
    return service is None or entry.get("name") == service


def _namespace(entry: Entry, own: str) -> str:
    return str(entry.get("namespace") or own)


def weights_of(body: dict[str, Any], *, service: str | None = None) -> dict[str, int]:
    """Total weight per namespace of the switched entries (a missing weight counts as 1)."""
    own = (body.get("metadata") or {}).get("namespace", "")
    weights: dict[str, int] = {}
    for entry in _entries(body):
        if _switched(entry, service):
            namespace = _namespace(entry, own)
            weights[namespace] = weights.get(namespace, 0) + int(entry.get("weight", 1))
    return weights


def view_of(ref: RouteRef, body: dict[str, Any], *, also_in_group: str | None = None) -> RouteView:
    """What a TraefikService body says: it points where the weight is."""
    version, uid, labels, annotations = traefik.metadata(body)
    weights = weights_of(body, service=ref.service)
    return RouteView(
        kind="TraefikService",
        namespace=ref.namespace,
        name=ref.name,
        api_group=ref.api_group,
        resource_version=version,
        namespaces=frozenset(ns for ns, weight in weights.items() if weight > 0),
        labels=labels,
        annotations=annotations,
        uid=uid,
        weights=weights,
        also_in_group=also_in_group,
    )


def weighted_entries(body: dict[str, Any], weights: Mapping[str, int], *,
                     service: str | None = None) -> list[Entry]:
    """The new `spec.weighted.services`: one entry per service and namespace of weight > 0.

    Entries the pair does not switch are kept as they are; a namespace without an entry yet
    gets a copy of the service's existing entry (same name and port).
    """
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"weights must be >= 0 and not all 0, got {dict(weights)}")
    own = (body.get("metadata") or {}).get("namespace", "")
    kept: list[Entry] = []
    by_name: dict[str, dict[str, Entry]] = {}
    for entry in _entries(body):
        if not _switched(entry, service):
            kept.append(entry)
            continue
        by_name.setdefault(str(entry.get("name")), {}).setdefault(_namespace(entry, own), entry)
    if not by_name:
        raise ValueError("no weighted Service entry to switch")
    out = kept
    for per_namespace in by_name.values():
        template = next(iter(per_namespace.values()))
        for namespace, weight in weights.items():
            if weight <= 0:
                continue
            entry = copy.deepcopy(per_namespace.get(namespace, template))
            entry["namespace"] = namespace
            entry["weight"] = int(weight)
            out.append(entry)
    return out


def weight_ops(body: dict[str, Any], weights: Mapping[str, int], *,
               service: str | None = None) -> list[dict[str, Any]]:
    """JSON Patch setting the weights, guarded by resourceVersion and the current entries."""
    path = "/spec/weighted/services"
    return [
        *traefik.guard(body),
        {"op": "test", "path": path, "value": _entries(body)},
        {"op": "replace", "path": path, "value": weighted_entries(body, weights, service=service)},
    ]


class TraefikServiceRouter:
    """Reads and switches a weighted TraefikService gatekeeper owns."""

    kind: ClassVar[str] = "TraefikService"

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def read(self, ref: RouteRef) -> RouteSnapshot:
        """Fetch the TraefikService (and note a twin in the other Traefik API group)."""
        body = await traefik.get(self.api, ref, PLURAL)
        twin = await traefik.other_group(self.api, ref, PLURAL)
        return RouteSnapshot(ref, view_of(ref, body, also_in_group=twin), body)

    def refusal(self, snapshot: RouteSnapshot) -> str | None:
        """A weighted service still applied by Flux would have its weights reverted."""
        owner = flux_owner(snapshot.view.labels, snapshot.view.annotations)
        if owner is not None:
            return (
                f"{snapshot.view.ref} is managed by Flux ({owner}): it would revert the weights. "
                "Keep the TraefikService out of git (gatekeeper owns it), or annotate it "
                "kustomize.toolkit.fluxcd.io/ssa: IfNotPresent"
            )
        if not (snapshot.body.get("spec") or {}).get("weighted"):
            return f"{snapshot.view.ref} is not a weighted TraefikService (spec.weighted)"
        return None

    async def set_weights(self, snapshot: RouteSnapshot, weights: Mapping[str, int], *,
                          annotations: Mapping[str, str | None] | None = None
                          ) -> RouteSnapshot:
        """Progressive weights, e.g. {"production-green": 10, "production-blue": 90}."""
        reason = self.refusal(snapshot)
        if reason is not None:
            raise RouteRefused(snapshot.view.ref, reason)
        ops = weight_ops(snapshot.body, weights, service=snapshot.ref.service)
        ops += traefik.annotation_ops(snapshot.body, annotations)
        body = await traefik.patch(self.api, snapshot.ref, PLURAL, ops)
        view = view_of(snapshot.ref, body, also_in_group=snapshot.view.also_in_group)
        return RouteSnapshot(snapshot.ref, view, body)

    async def switch(self, snapshot: RouteSnapshot, *, source: str, target: str,
                     annotations: Mapping[str, str | None] | None = None) -> RouteSnapshot:
        """All weight to `target` (100/0), and the `source` entry dropped."""
        if snapshot.view.namespaces != frozenset({source}):
            raise RouteConflict(snapshot.view.ref, f"points at {sorted(snapshot.view.namespaces)},"
                                f" not {source}")
        return await self.set_weights(snapshot, {target: FULL_WEIGHT, source: 0},
                                      annotations=annotations)
