"""Where Traefik sends a TraefikService's requests: a stand-in for Traefik's dispatch, so the
demo's traffic model sends users and mirrored copies where real Traefik would.

Follows Traefik v3's provider and mirroring code (pkg/provider/kubernetes/crd,
pkg/server/service/loadbalancer/mirror): `weighted` wins when both `weighted` and
`mirroring` are set; a weighted entry without a weight counts 1; in the mirroring form the
main service answers every request and each mirror gets a copy of `percent` % of them,
counted exactly (a mirror takes request n while its copies * 100 < n * percent), its answer
discarded; a percent outside 0..100 makes Traefik refuse the whole service; with
`mirrorBody` (default true) a request whose body is larger than `maxBodySize` (default -1:
unlimited) is not mirrored. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dispatch", "MirrorCounter", "dispatch"]


@dataclass(frozen=True)
class Dispatch:
    """What a TraefikService does with its requests."""

    users: dict[str, float] = field(default_factory=dict)
    """Namespace -> share of the requests it answers (sums to 1, or empty)."""
    mirrors: dict[str, int] = field(default_factory=dict)
    """Namespace -> percent of the requests copied to it (answers discarded)."""
    mirror_body: bool = True
    max_body_size: int = -1
    problem: str = ""
    """Why Traefik would refuse the service (then nobody is answered)."""

    def mirrored(self, body_size: int = 0) -> bool:
        """A request with a body of `body_size` bytes is copied to the mirrors."""
        if not self.mirrors:
            return False
        return not (self.mirror_body and 0 <= self.max_body_size < body_size)


def _namespace(entry: Mapping[str, Any], own: str) -> str:
    return str(entry.get("namespace") or own)


def dispatch(body: Mapping[str, Any]) -> Dispatch:
    """Traefik's reading of one TraefikService object."""
    spec = body.get("spec") or {}
    own = str((body.get("metadata") or {}).get("namespace") or "")
    weighted = spec.get("weighted")
    if weighted:
        weights: dict[str, float] = {}
        for entry in weighted.get("services") or []:
            weight = entry.get("weight", 1)
            namespace = _namespace(entry, own)
            weights[namespace] = weights.get(namespace, 0.0) + float(weight)
        total = sum(weights.values())
        if total <= 0:
            return Dispatch(problem="no weighted service has a weight above 0")
        return Dispatch(users={ns: w / total for ns, w in weights.items() if w > 0})
    mirroring = spec.get("mirroring")
    if mirroring:
        mirrors: dict[str, int] = {}
        for mirror in mirroring.get("mirrors") or []:
            percent = int(mirror.get("percent", 0))
            if not 0 <= percent <= 100:
                return Dispatch(problem="percent must be between 0 and 100")
            mirrors[_namespace(mirror, own)] = percent
        return Dispatch(users={_namespace(mirroring, own): 1.0}, mirrors=mirrors,
                        mirror_body=bool(mirroring.get("mirrorBody", True)),
                        max_body_size=int(mirroring.get("maxBodySize", -1)))
    return Dispatch(problem="unspecified service type")


class MirrorCounter:
    """Traefik's exact per-mirror counting: request n goes to a mirror while its copies so
    far times 100 are below n times its percent (counted even when the body is too large
    to copy)."""

    def __init__(self) -> None:
        self.total = 0
        self.copies: dict[str, int] = {}

    def route(self, plan: Dispatch, *, body_size: int = 0) -> list[str]:
        """The mirrors one more request is copied to."""
        self.total += 1
        chosen = []
        for namespace, percent in plan.mirrors.items():
            count = self.copies.get(namespace, 0)
            if count * 100 < self.total * percent:
                self.copies[namespace] = count + 1
                chosen.append(namespace)
        # Traefik picks (and counts) the mirrors before it reads the body: a body over
        # maxBodySize uses up the turn without a copy.
        return chosen if plan.mirrored(body_size) else []
