"""Weighted TraefikService router, the pattern Flagger uses with Traefik.

The IngressRoute in git references a TraefikService (`kind: TraefikService`) that gatekeeper
owns, so Flux never reverts a flip. Weights live in `spec.weighted.services`; an entry of
weight 0 is dropped, not kept, because Traefik fails the whole route when one child service
has no endpoints (the scaled-down namespace).

Two more forms, both marked by an annotation gatekeeper writes in the same patch, so a
restarted gatekeeper (or a person) can tell them from edits made by someone else:

- **mirroring** (`gatekeeper.io/mirroring`): while the dark validates, `spec.weighted` is
  replaced by Traefik's `spec.mirroring` (users are answered by the active namespace, a
  percent of the requests is copied to the dark, whose answers Traefik discards). The
  annotation keeps the weighted form it replaced; every later patch (removal, flip,
  exposure) puts that form back in the same patch. Traefik serves `weighted` when both are
  set, so mirroring always replaces it.
- **exposure** (`gatekeeper.io/exposure`): a progressive step, e.g. 95/5 between the active
  and the dark. A split that matches its annotation is gatekeeper's own: the route still
  counts as pointing at the active namespace (`RouteView.exposure`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from gatekeeper.config import RouteRef
from gatekeeper.routers import traefik
from gatekeeper.routers.base import (
    RouteConflict,
    RouteSnapshot,
    RouteView,
    at,
)

FULL_WEIGHT = 100
MIRRORING = "gatekeeper.io/mirroring"
"""Annotation on a TraefikService gatekeeper switched to its mirroring form."""
EXPOSURE = "gatekeeper.io/exposure"
"""Annotation on a TraefikService gatekeeper split for a progressive step."""

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


@dataclass(frozen=True)
class Mirroring:
    """What gatekeeper's mirroring form of a TraefikService copies where."""

    active: str
    dark: str
    percent: int
    weighted: dict[str, Any]
    """The `spec.weighted` the mirroring form replaced (restored when it is removed)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form for status output."""
        return {"from": self.active, "to": self.dark, "percent": self.percent}


@dataclass(frozen=True)
class Exposure:
    """A progressive step gatekeeper set: `percent` of the requests to `dark`."""

    active: str
    dark: str
    percent: int
    step: int
    """1-based index of the step in the pair's `progressive.steps`."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form for status output and the annotation."""
        return {"active": self.active, "dark": self.dark, "percent": self.percent,
                "step": self.step}


def _annotation(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(key)
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def mirroring_of(body: dict[str, Any]) -> Mirroring | None:
    """Gatekeeper's mirroring form, or None (no mirroring, or mirroring someone else set:
    without gatekeeper's annotation, or with `weighted` still set, which Traefik serves)."""
    spec = body.get("spec") or {}
    mirroring = spec.get("mirroring")
    note = _annotation(body, MIRRORING)
    if not isinstance(mirroring, dict) or note is None or spec.get("weighted"):
        return None
    own = (body.get("metadata") or {}).get("namespace", "")
    mirrors = [m for m in mirroring.get("mirrors") or [] if isinstance(m, dict)]
    weighted = note.get("weighted")
    if len(mirrors) != 1 or not isinstance(weighted, dict):
        return None
    percent = mirrors[0].get("percent", 0)
    if not isinstance(percent, int) or isinstance(percent, bool):
        return None
    return Mirroring(active=str(mirroring.get("namespace") or own),
                     dark=str(mirrors[0].get("namespace") or own), percent=percent,
                     weighted=weighted)


def exposure_of(body: dict[str, Any], weights: Mapping[str, int]) -> Exposure | None:
    """Gatekeeper's progressive split, when the weights are still the ones it set."""
    note = _annotation(body, EXPOSURE)
    if note is None:
        return None
    try:
        exposure = Exposure(active=str(note["active"]), dark=str(note["dark"]),
                            percent=int(note["percent"]), step=int(note["step"]))
    except (KeyError, TypeError, ValueError):
        return None
    expected = {exposure.active: FULL_WEIGHT - exposure.percent, exposure.dark: exposure.percent}
    if {ns: w for ns, w in weights.items() if w > 0} != expected:
        return None  # someone changed the weights since: not gatekeeper's split any more
    return exposure


def weighted_body(body: dict[str, Any]) -> dict[str, Any]:
    """The body in its weighted form: gatekeeper's mirroring form turned back."""
    mirroring = mirroring_of(body)
    if mirroring is None:
        return body
    out = copy.deepcopy(body)
    spec = {k: v for k, v in out.get("spec", {}).items() if k != "mirroring"}
    spec["weighted"] = copy.deepcopy(mirroring.weighted)
    out["spec"] = spec
    return out


def view_of(ref: RouteRef, body: dict[str, Any], *, also_in_group: str | None = None) -> RouteView:
    """What a TraefikService body says: it points where the weight is (in the mirroring
    form: at the namespace that answers users)."""
    version, uid, labels, annotations = traefik.metadata(body)
    mirroring = mirroring_of(body)
    weights = weights_of(weighted_body(body), service=ref.service)
    if mirroring is not None:
        weights = {mirroring.active: FULL_WEIGHT}
    exposure = exposure_of(body, weights) if mirroring is None else None
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
        mirroring=mirroring.to_dict() if mirroring is not None else None,
        exposure=exposure.to_dict() if exposure is not None else None,
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
    """JSON Patch setting the weights, guarded by resourceVersion and the current entries.
    From gatekeeper's mirroring form the weighted form comes back in the same patch (the
    mirroring annotation goes with it: see `TraefikServiceRouter.set_weights`)."""
    if mirroring_of(body) is not None:
        weighted = weighted_body(body)
        spec = copy.deepcopy(weighted["spec"])
        spec["weighted"]["services"] = weighted_entries(weighted, weights, service=service)
        return [*traefik.guard(body), {"op": "test", "path": "/spec", "value": body["spec"]},
                {"op": "replace", "path": "/spec", "value": spec}]
    path = "/spec/weighted/services"
    return [
        *traefik.guard(body),
        {"op": "test", "path": path, "value": _entries(body)},
        {"op": "replace", "path": path, "value": weighted_entries(body, weights, service=service)},
    ]


def mirroring_spec(body: dict[str, Any], *, dark: str, percent: int, max_body_size: int,
                   mirror_body: bool, service: str | None = None) -> dict[str, Any]:
    """The mirroring form of a weighted body that points at one namespace: its one entry
    answers users, the same Service in `dark` gets `percent` % of the requests copied.
    ValueError when the weighted form holds anything else (it could not be kept)."""
    entries = _entries(body)
    if len(entries) != 1 or not _switched(entries[0], service):
        raise ValueError("mirroring needs a weighted TraefikService with exactly one entry, "
                         f"the pair's Service; it has {len(entries)}")
    if not 0 <= percent <= FULL_WEIGHT:
        raise ValueError(f"mirroring percent must be 0..100, got {percent}")
    main = {k: v for k, v in entries[0].items() if k != "weight"}
    main["kind"] = "Service"
    mirror = {k: main[k] for k in ("name", "port", "scheme") if k in main}
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k != "weighted"}
    spec["mirroring"] = {**main, "mirrorBody": mirror_body, "maxBodySize": max_body_size,
                         "mirrors": [{**mirror, "namespace": dark, "percent": percent}]}
    return spec


class TraefikServiceRouter(traefik.TraefikRouter):
    """Reads and switches a weighted TraefikService gatekeeper owns."""

    kind: ClassVar[str] = "TraefikService"
    view_of = staticmethod(view_of)

    flux_reverts: ClassVar[str] = (
        "it would revert the weights. Keep the TraefikService out of git (gatekeeper owns "
        "it), or annotate it kustomize.toolkit.fluxcd.io/ssa: IfNotPresent")

    def form_refusal(self, snapshot: RouteSnapshot) -> str | None:
        """Only a weighted TraefikService is switched (by its weights)."""
        if not (weighted_body(snapshot.body).get("spec") or {}).get("weighted"):
            return f"{snapshot.view.ref} is not a weighted TraefikService (spec.weighted)"
        return None

    async def set_weights(self, snapshot: RouteSnapshot, weights: Mapping[str, int], *,
                          annotations: Mapping[str, str | None] | None = None
                          ) -> RouteSnapshot:
        """Progressive weights, e.g. {"production-green": 10, "production-blue": 90}.
        Gatekeeper's mirroring and exposure marks are dropped in the same patch unless
        `annotations` sets them again."""
        self.ensure_patchable(snapshot)
        ops = weight_ops(snapshot.body, weights, service=snapshot.ref.service)
        notes: dict[str, str | None] = {MIRRORING: None, EXPOSURE: None}
        notes.update(annotations or {})
        ops += traefik.annotation_ops(snapshot.body, notes)
        return await self.patched(snapshot, ops)

    async def expose(self, snapshot: RouteSnapshot, exposure: Exposure) -> RouteSnapshot:
        """One progressive step: `exposure.percent` % to the dark, the rest to the active,
        marked as gatekeeper's own split; percent 0 drops the dark's entry (and the mark)."""
        if exposure.percent <= 0:
            return await self.set_weights(snapshot, {exposure.active: FULL_WEIGHT,
                                                     exposure.dark: 0})
        weights = {exposure.active: FULL_WEIGHT - exposure.percent,
                   exposure.dark: exposure.percent}
        return await self.set_weights(snapshot, weights, annotations={
            EXPOSURE: json.dumps(exposure.to_dict(), sort_keys=True)})

    async def install_mirroring(self, snapshot: RouteSnapshot, *, dark: str, percent: int,
                                max_body_size: int, mirror_body: bool = True
                                ) -> RouteSnapshot:
        """Switch the weighted form (all weight on the active namespace) to Traefik's
        mirroring form copying `percent` % of the requests to `dark`; idempotent."""
        self.ensure_patchable(snapshot)
        current = mirroring_of(snapshot.body)
        if current is not None and (current.dark, current.percent) == (dark, percent):
            return snapshot
        body = weighted_body(snapshot.body)
        if len(snapshot.view.namespaces) != 1 or dark in snapshot.view.namespaces:
            raise RouteConflict(snapshot.view.ref, "mirroring needs all weight on the active "
                                f"namespace; it points at {sorted(snapshot.view.namespaces)}")
        spec = mirroring_spec(body, dark=dark, percent=percent, max_body_size=max_body_size,
                              mirror_body=mirror_body, service=snapshot.ref.service)
        note = {"weighted": (body.get("spec") or {}).get("weighted"), "dark": dark,
                "percent": percent}
        ops = [*traefik.guard(snapshot.body),
               {"op": "test", "path": "/spec", "value": snapshot.body.get("spec")},
               {"op": "replace", "path": "/spec", "value": spec}]
        ops += traefik.annotation_ops(snapshot.body, {
            MIRRORING: json.dumps(note, sort_keys=True), EXPOSURE: None})
        return await self.patched(snapshot, ops)

    async def remove_mirroring(self, snapshot: RouteSnapshot) -> RouteSnapshot:
        """Back to the weighted form gatekeeper's mirroring replaced; idempotent (a route
        without gatekeeper's mirroring is returned as it is)."""
        current = mirroring_of(snapshot.body)
        if current is None:
            return snapshot
        restored = weighted_body(snapshot.body)
        ops = [*traefik.guard(snapshot.body),
               {"op": "test", "path": "/spec", "value": snapshot.body.get("spec")},
               {"op": "replace", "path": "/spec", "value": restored["spec"]}]
        ops += traefik.annotation_ops(snapshot.body, {MIRRORING: None})
        return await self.patched(snapshot, ops)

    async def switch(self, snapshot: RouteSnapshot, *, source: str, target: str,
                     annotations: Mapping[str, str | None] | None = None) -> RouteSnapshot:
        """All weight to `target` (100/0), and the `source` entry dropped. A route in
        gatekeeper's mirroring form, or split by gatekeeper's progressive step from `source`,
        counts as pointing at `source`: the same patch ends the mirroring or the split."""
        if not at(snapshot, source):
            raise RouteConflict(snapshot.view.ref, f"points at {sorted(snapshot.view.namespaces)},"
                                f" not {source}")
        return await self.set_weights(snapshot, {target: FULL_WEIGHT, source: 0},
                                      annotations=annotations)

