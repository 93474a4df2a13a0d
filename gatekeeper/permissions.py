"""Every Kubernetes API call gatekeeper makes, as RBAC, and the namespace each call targets.

The ONE list: the Helm chart's Roles are tested against it per namespace (granted == called),
so a new API call without a line here fails that test instead of failing in a cluster with
403, and a grant the code never uses fails it too. Pure data and pure functions.

Each call targets one kind of namespace (`Scope`):
- `own`: gatekeeper's own namespace (the state ConfigMap, the leader Lease);
- `routes`: the namespaces of the pairs' routes (the Traefik objects, Events on them);
- `pairs`: both namespaces of every pair, i.e. the production namespaces (Deployments,
  Pods, their logs, and the ConfigMaps compared by the config-parity rule);
- `tests`: both namespaces of every pair with `test_job` (its test Job, created in the dark
  namespace per release);
- `cluster`: cluster-wide (a ClusterRole): TokenReviews with `auth.token_review: true`;
  the BlueGreenPair objects of every namespace, their status and the Events on them with
  `objects.enabled` (the default; the pairs an app team declares can be in any namespace).

Reading Secrets (config parity) is only granted with `kubernetes.read_secrets: true`: a
`list` of Secrets returns their values, so the default is not to read them at all.
API discovery (`/apis`, used to find the Traefik group) needs no grant: every authenticated
client may read it (the built-in `system:discovery` role).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from gatekeeper import crd
from gatekeeper.config import Config
from gatekeeper.routers.base import TRAEFIK_GROUPS

__all__ = ["LISTABLE_SCOPES", "PERMISSIONS", "SCOPES", "Permission", "Scope", "forbidden_call",
           "granted", "listed_namespaces", "namespace_scopes", "rbac_rules", "required",
           "switches_on"]

Scope = Literal["own", "routes", "pairs", "tests", "cluster"]
SCOPES: tuple[Scope, ...] = ("own", "routes", "pairs", "tests", "cluster")
LISTABLE_SCOPES: tuple[Scope, ...] = ("pairs", "routes", "tests")
"""The kinds a namespace listed in the chart's rbac.pairNamespaces may be granted."""


@dataclass(frozen=True)
class Permission:
    """One resource, the verbs gatekeeper uses on it, in which namespaces, who and why."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope
    used_by: str
    why: str
    switch: str | None = None
    """Configuration key that must be true for the call to be made (None: always made)."""


_ROUTE_VERBS = ("get", "list", "watch", "patch")

PERMISSIONS: tuple[Permission, ...] = (
    *(
        Permission(group, resource, _ROUTE_VERBS, "routes", "routers, watching",
                   "read where traffic goes, flip it with a test-guarded JSON Patch, watch for "
                   "manual edits; get in the other group detects a twin object")
        for group in TRAEFIK_GROUPS
        for resource in ("ingressroutes", "traefikservices")
    ),
    Permission("", "events", ("create",), "routes", "events",
               "an Event on the route for every flip, rollback and scale"),
    Permission("apps", "deployments", ("list", "watch"), "pairs",
               "environments, sources.kubernetes, watching",
               "replica counts, images and readiness of each namespace"),
    Permission("apps", "deployments/scale", ("patch",), "pairs", "environments",
               "scale-up / scale-down through the scale subresource"),
    Permission("", "pods", ("list", "watch"), "pairs",
               "environments, sources.kubernetes, sources.logs, watching",
               "every pod Ready before a flip; restarts; whose logs to read"),
    Permission("", "pods/log", ("get",), "pairs", "sources.logs", "count error lines"),
    Permission("", "configmaps", ("list",), "pairs", "sources.kubernetes",
               "ConfigMap parity between the namespaces (key hashes, never values)"),
    Permission("", "secrets", ("list",), "pairs", "sources.kubernetes",
               "Secret parity between the namespaces (key hashes, never values); a list "
               "returns the values, so it is off unless switched on",
               switch="kubernetes.read_secrets"),
    Permission("batch", "jobs", ("create", "delete", "get"), "tests", "drivers.testjob",
               "the release's test Job in the dark namespace: created, read until it "
               "finished, deleted when validation stops before it finished"),
    Permission("", "configmaps", ("get", "create", "update"), "own", "state",
               "the state ConfigMap (optimistic concurrency)"),
    Permission("coordination.k8s.io", "leases", ("get", "create", "update"), "own",
               "leadership", "leader election: only the Lease holder acts"),
    Permission(crd.GROUP, crd.PLURAL, ("get", "list", "watch"), "cluster",
               "pairobjects, service.pairwatch",
               "the pairs declared as BlueGreenPair objects, in any namespace (watched: a "
               "change applies to its pair within seconds)",
               switch="objects.enabled"),
    Permission(crd.GROUP, f"{crd.PLURAL}/status", ("update",), "cluster", "state, pairobjects",
               "each pair's record in its own object's status (optimistic concurrency); the "
               "Valid condition of an object that does not validate",
               switch="objects.enabled"),
    Permission("", "events", ("create",), "cluster", "events",
               "Events on the BlueGreenPair objects (their namespaces are not known in "
               "advance)", switch="objects.enabled"),
    Permission("coordination.k8s.io", "leases", ("list", "delete"), "own", "sharding",
               "sharded replicas: the ring's member and shard Leases, one list per retry "
               "period; the member Lease of a replica that died, deleted once long expired",
               switch="sharding.enabled"),
    Permission("authentication.k8s.io", "tokenreviews", ("create",), "cluster",
               "service.auth", "who a service-account bearer token belongs to (the approver's "
               "name)", switch="auth.token_review"),
)

Triple = tuple[str, str, str]
"""(apiGroup, resource, verb)."""


def _switched_on(permission: Permission, switches: Iterable[str]) -> bool:
    return permission.switch is None or permission.switch in set(switches)


def required(api_group: str, resource: str, *, switches: Iterable[str] = ()) -> frozenset[str]:
    """Verbs needed on one resource in any namespace (empty when gatekeeper never uses it)."""
    on = set(switches)
    return frozenset(verb for p in PERMISSIONS
                     if p.api_group == api_group and p.resource == resource
                     and _switched_on(p, on) for verb in p.verbs)


def granted(scopes: Iterable[Scope], *, switches: Iterable[str] = ()) -> frozenset[Triple]:
    """Every (apiGroup, resource, verb) a namespace with these scopes needs."""
    wanted, on = set(scopes), set(switches)
    return frozenset((p.api_group, p.resource, verb) for p in PERMISSIONS
                     if p.scope in wanted and _switched_on(p, on) for verb in p.verbs)


def switches_on(config: Config) -> frozenset[str]:
    """The configuration switches of `Permission.switch` that are on in CONFIG."""
    on = {"kubernetes.read_secrets"} if config.kubernetes.read_secrets else set()
    if config.auth.token_review:
        on.add("auth.token_review")
    if config.objects.enabled:
        on.add("objects.enabled")
    if config.sharding.enabled:
        on.add("sharding.enabled")
    return frozenset(on)


def namespace_scopes(config: Config) -> dict[str, frozenset[Scope]]:
    """Which kinds of call gatekeeper makes in which namespace, for one configuration."""
    scopes: dict[str, set[Scope]] = {}
    for namespace in (config.state.namespace, config.leader_election.namespace):
        scopes.setdefault(namespace, set()).add("own")
    for pair in config.pairs:
        for namespace in pair.namespaces:
            scopes.setdefault(namespace, set()).add("pairs")
            if pair.test_job is not None:
                scopes[namespace].add("tests")
        for route in pair.routes:
            scopes.setdefault(route.namespace, set()).add("routes")
    return {namespace: frozenset(kinds) for namespace, kinds in scopes.items()}


def listed_namespaces(entries: Iterable[str | dict[str, Any]]
                      ) -> dict[str, frozenset[Scope]]:
    """The chart's `rbac.pairNamespaces` as namespace -> kinds: a name is a pair's namespace
    ("pairs"); `{namespace, kinds}` grants those kinds (for pairs declared as objects)."""
    scopes: dict[str, set[Scope]] = {}
    for entry in entries:
        if isinstance(entry, str):
            scopes.setdefault(entry, set()).add("pairs")
            continue
        kinds = [kind for kind in LISTABLE_SCOPES if kind in set(entry["kinds"])]
        scopes.setdefault(str(entry["namespace"]), set()).update(kinds)
    return {namespace: frozenset(kinds) for namespace, kinds in scopes.items()}


_FORBIDDEN = re.compile(
    r'cannot (?P<verb>[a-z]+) resource "(?P<resource>[^"]+)"(?: in API group "[^"]*")?'
    r'(?: in the namespace "(?P<namespace>[^"]+)")?')


def forbidden_call(message: str, namespace: str | None = None) -> str:
    """What a 403 refused, for a person: "list pods in namespace shop-green". Read from
    the API server's RBAC message (`... cannot list resource "pods" in API group "" in
    the namespace "shop-green"`), else "a call in namespace NAMESPACE"."""
    found = _FORBIDDEN.search(message)
    where = (found.group("namespace") if found else None) or namespace
    place = f" in namespace {where}" if where else " (cluster-wide)"
    if found is None:
        return f"a call{place}"
    return f"{found.group('verb')} {found.group('resource')}{place}"


def rbac_rules(scopes: Iterable[Scope] = SCOPES, *,
               switches: Iterable[str] = ()) -> list[dict[str, Any]]:
    """RBAC `rules:` entries for a namespace with SCOPES, one per (group, verbs)."""
    verbs_of: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in granted(scopes, switches=switches):
        verbs_of.setdefault((group, resource), set()).add(verb)
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in verbs_of.items():
        grouped.setdefault((group, tuple(sorted(verbs))), []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
        for (group, verbs), resources in sorted(grouped.items())
    ]
