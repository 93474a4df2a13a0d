"""The resource registry and the discovery documents built from it.

One table drives URL parsing, discovery, storage keys and per-resource semantics, so a
client that discovers a resource (e.g. the Traefik CRDs) can also use it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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
    storage_version: str = ""
    """For a resource defined by a CustomResourceDefinition: the version objects are stored
    under (every served version shares them); empty for the built-in table."""
    schema: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """The CRD's `openAPIV3Schema` for this version (None: no schema, anything goes)."""
    printer_columns: tuple[Mapping[str, Any], ...] = field(default=(), compare=False,
                                                           repr=False)
    """The CRD's `additionalPrinterColumns` for this version (Table answers)."""
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """`apiVersion` of objects of this resource."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Storage key; distinct per group so both Traefik groups hold separate objects."""
        return f"{self.group}/{self.storage_version or self.version}/{self.plural}"

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
    ResourceType(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition",
        "CustomResourceDefinition", namespaced=False, short_names=("crd", "crds"),
        subresources=("status",), has_generation=True,
    ),
)

def lookup(group: str, version: str, plural: str) -> ResourceType:
    """A built-in resource by its path, raising KeyError; for the emulator's own code."""
    for r in RESOURCES:
        if (r.group, r.version, r.plural) == (group, version, plural):
            return r
    raise KeyError(f"unknown resource {group}/{version}/{plural}")


NAMESPACES = lookup("", "v1", "namespaces")
PODS = lookup("", "v1", "pods")
DEPLOYMENTS = lookup("apps", "v1", "deployments")
REPLICASETS = lookup("apps", "v1", "replicasets")
JOBS = lookup("batch", "v1", "jobs")
CRDS = lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")


class Registry:
    """The resources one server serves: the built-in table plus those its
    CustomResourceDefinitions define (added and removed as CRDs are written)."""

    def __init__(self) -> None:
        self._custom: dict[str, tuple[ResourceType, ...]] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        self.resources: tuple[ResourceType, ...] = RESOURCES + tuple(
            r for defined in self._custom.values() for r in defined)
        self._by_path = {(r.group, r.version, r.plural): r for r in self.resources}
        self._by_kind = {(r.api_version, r.kind): r for r in self.resources}

    def define(self, crd_name: str, served: tuple[ResourceType, ...]) -> None:
        """Serve the versions a CRD called `crd_name` defines (replacing its previous ones)."""
        self._custom[crd_name] = served
        self._rebuild()

    def forget(self, crd_name: str) -> tuple[ResourceType, ...]:
        """Stop serving what the CRD defined; returns those resources."""
        gone = self._custom.pop(crd_name, ())
        self._rebuild()
        return gone

    def defined_by(self, crd_name: str) -> tuple[ResourceType, ...]:
        """The resources a CRD defines now (empty when none)."""
        return self._custom.get(crd_name, ())

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self.resources)

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        """The resource served at `/api[s]/{group}/{version}/.../{plural}`, if any."""
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """The resource storing objects of this apiVersion/kind (for manifests)."""
        return self._by_kind.get((api_version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        """Served API groups (excluding core) and their versions, in registry order."""
        groups: dict[str, list[str]] = {}
        for r in self.resources:
            if r.group and r.version not in groups.setdefault(r.group, []):
                groups[r.group].append(r.version)
        return groups

    def api_group_list_doc(self, absent: frozenset[str] = frozenset()) -> dict[str, Any]:
        """`/apis` answer (APIGroupList), without the groups in ABSENT (CRDs not installed)."""
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_group_doc(g, vs) for g, vs in self.group_versions().items()
                       if g not in absent],
        }

    def api_group_doc(self, group: str) -> dict[str, Any] | None:
        """`/apis/{group}` answer, or None for an unknown group."""
        versions = self.group_versions().get(group)
        if not versions:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}

    def resource_list_doc(self, group: str, version: str) -> dict[str, Any] | None:
        """`/api/v1` or `/apis/{group}/{version}` answer (APIResourceList), or None."""
        served = [r for r in self.resources if r.group == group and r.version == version]
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
            if r.categories:
                entry["categories"] = list(r.categories)
            if r.storage_version:
                entry["storageVersionHash"] = _version_hash(r)
            resources.append(entry)
            resources.extend(_subresource_entry(r, sub) for sub in r.subresources)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }


def _version_hash(r: ResourceType) -> str:
    """A stable short hash of group, storage version and kind (the real server reports one)."""
    digest = hashlib.sha256(f"{r.group}/{r.storage_version}/{r.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


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
