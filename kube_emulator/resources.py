"""The resource registry and the discovery documents built from it.

One table drives URL parsing, discovery, storage keys and per-resource semantics, so a
client that discovers a resource (e.g. the Traefik CRDs) can also use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
EMULATED_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-kube-emulator"}

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (group/version/plural) and how the server treats it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    custom: bool = False
    has_generation: bool = False
    extra_fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """`apiVersion` of objects of this resource."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Storage key; distinct per group so both Traefik groups hold separate objects."""
        return f"{self.group}/{self.version}/{self.plural}"

    @property
    def list_kind(self) -> str:
        """`kind` of the list document."""
        return f"{self.kind}List"

    @property
    def field_selectors(self) -> tuple[str, ...]:
        """Field labels the real server accepts in `fieldSelector` for this resource."""
        return _COMMON_FIELDS + self.extra_fields

    @property
    def has_status_subresource(self) -> bool:
        """Whether writes to the main resource ignore `status` (and /status ignores spec)."""
        return "status" in self.subresources


def _crd(group: str, plural: str, singular: str, kind: str) -> ResourceType:
    return ResourceType(
        group, "v1alpha1", plural, singular, kind, custom=True, has_generation=True
    )


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "", "v1", "namespaces", "namespace", "Namespace", namespaced=False,
        short_names=("ns",), subresources=("status",), extra_fields=("status.phase",),
    ),
    ResourceType(
        "", "v1", "pods", "pod", "Pod", short_names=("po",), subresources=("log", "status"),
        extra_fields=(
            "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName",
        ),
    ),
    ResourceType("", "v1", "services", "service", "Service", short_names=("svc",),
                 subresources=("status",)),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "secrets", "secret", "Secret", extra_fields=("type",)),
    ResourceType(
        "", "v1", "events", "event", "Event", short_names=("ev",),
        extra_fields=(
            "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
            "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
            "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
        ),
    ),
    ResourceType(
        "apps", "v1", "deployments", "deployment", "Deployment", short_names=("deploy",),
        subresources=("scale", "status"), has_generation=True,
    ),
    ResourceType(
        "apps", "v1", "replicasets", "replicaset", "ReplicaSet", short_names=("rs",),
        subresources=("scale", "status"), has_generation=True,
    ),
    ResourceType(
        "batch", "v1", "jobs", "job", "Job", subresources=("status",), has_generation=True,
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease"),
    ResourceType("events.k8s.io", "v1", "events", "event", "Event", short_names=("ev",),
                 extra_fields=("reason", "type")),
    _crd("traefik.io", "ingressroutes", "ingressroute", "IngressRoute"),
    _crd("traefik.io", "traefikservices", "traefikservice", "TraefikService"),
    _crd("traefik.io", "middlewares", "middleware", "Middleware"),
    _crd("traefik.containo.us", "ingressroutes", "ingressroute", "IngressRoute"),
    _crd("traefik.containo.us", "traefikservices", "traefikservice", "TraefikService"),
    _crd("traefik.containo.us", "middlewares", "middleware", "Middleware"),
)

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    """The resource served at `/api[s]/{group}/{version}/.../{plural}`, if any."""
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    """The resource storing objects of this apiVersion/kind (for manifests)."""
    return _BY_KIND.get((api_version, kind))


def lookup(group: str, version: str, plural: str) -> ResourceType:
    """Like `by_path` but raising KeyError; for the emulator's own code."""
    rt = by_path(group, version, plural)
    if rt is None:
        raise KeyError(f"unknown resource {group}/{version}/{plural}")
    return rt


NAMESPACES = lookup("", "v1", "namespaces")
PODS = lookup("", "v1", "pods")
DEPLOYMENTS = lookup("apps", "v1", "deployments")
REPLICASETS = lookup("apps", "v1", "replicasets")
JOBS = lookup("batch", "v1", "jobs")


def group_versions() -> dict[str, list[str]]:
    """Served API groups (excluding core) and their versions, in registry order."""
    groups: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in groups.setdefault(r.group, []):
            groups[r.group].append(r.version)
    return groups


def version_doc() -> dict[str, Any]:
    """`/version` answer."""
    return {
        **EMULATED_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions_doc(server_address: str) -> dict[str, Any]:
    """`/api` answer (APIVersions for the legacy core group)."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_doc(group: str, versions: Iterable[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list_doc(absent: frozenset[str] = frozenset()) -> dict[str, Any]:
    """`/apis` answer (APIGroupList), without the groups in ABSENT (CRDs not installed)."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, vs) for g, vs in group_versions().items() if g not in absent],
    }


def api_group_doc(group: str) -> dict[str, Any] | None:
    """`/apis/{group}` answer, or None for an unknown group."""
    versions = group_versions().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _subresource_entry(r: ResourceType, sub: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{r.plural}/{sub}",
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": ["get", "patch", "update"],
    }
    if sub == "log":
        entry["verbs"] = ["get"]
    elif sub == "scale":
        entry.update(group="autoscaling", version="v1", kind="Scale")
    return entry


def resource_list_doc(group: str, version: str) -> dict[str, Any] | None:
    """`/api/v1` or `/apis/{group}/{version}` answer (APIResourceList), or None."""
    served = [r for r in RESOURCES if r.group == group and r.version == version]
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for r in served:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(ALL_VERBS),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        resources.append(entry)
        resources.extend(_subresource_entry(r, sub) for sub in r.subresources)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
