"""The two namespaces as environments: their Deployments, readiness, and scaling.

Traefik drops a whole route whose service has no ready endpoints (404 for every user), so a
namespace may take traffic only when every Deployment has replicas >= 1 and every pod is
Ready. Scaling goes through the `deployments/scale` subresource, like `kubectl scale`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from kubernetes_asyncio import client

from gatekeeper import testjobs
from gatekeeper.config import PairConfig
from gatekeeper.errors import API_ERRORS
from gatekeeper.kubeclient import ApiException, read_json

log = structlog.get_logger()

MERGE_PATCH = "application/merge-patch+json"
MAX_LISTED = 5


@dataclass(frozen=True)
class DeploymentView:
    """One Deployment as read: desired and ready replicas, images, pod selector."""

    namespace: str
    name: str
    replicas: int
    ready_replicas: int
    images: dict[str, str] = field(default_factory=dict)
    """Container name -> image of the pod template."""
    selector: dict[str, Any] = field(default_factory=dict)
    pods_ready: int = 0
    """Ready, non-terminating pods matching the selector (counted from the pods)."""
    warning: str = ""
    """Why gatekeeper's scaling of this Deployment will not last ('' when nothing is known)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form for status output."""
        return {"name": self.name, "replicas": self.replicas, "ready": self.pods_ready,
                "images": dict(self.images), **({"warning": self.warning} if self.warning
                                                 else {})}


@dataclass(frozen=True)
class Readiness:
    """Whether a namespace can take traffic now, and if not, why."""

    namespace: str
    deployments: tuple[DeploymentView, ...]
    pods_total: int
    pods_ready: int
    reasons: tuple[str, ...]

    @property
    def ready(self) -> bool:
        """Every Deployment has replicas >= 1 and every pod is Ready."""
        return not self.reasons

    def summary(self) -> str:
        """`3/4 pods Ready in production-green; api-all: 1/2` for progress lines."""
        waiting = [f"{d.name} {d.pods_ready}/{d.replicas}" for d in self.deployments
                   if d.pods_ready < d.replicas or d.replicas < 1]
        text = f"{self.pods_ready}/{self.pods_total} pods Ready in {self.namespace}"
        return text + (f" (waiting: {', '.join(waiting)})" if waiting else "")

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that do not stop traffic but undo gatekeeper's work (Flux owning replicas)."""
        return tuple(d.warning for d in self.deployments if d.warning)

    def images(self) -> dict[str, str]:
        """`deployment/container` -> image, for the state's record of what runs where."""
        return {f"{d.name}/{c}": image for d in self.deployments for c, image in d.images.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON form for results and status."""
        return {
            "namespace": self.namespace,
            "ready": self.ready,
            "pods_total": self.pods_total,
            "pods_ready": self.pods_ready,
            "deployments": [d.to_dict() for d in self.deployments],
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
        }


class Progress(Protocol):
    """Called by `wait_ready` whenever the readiness summary changes."""

    def __call__(self, readiness: Readiness) -> None:
        """Report progress (print a line, log, update a status)."""
        ...


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; empty matches none."""
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _counted(pod: Mapping[str, Any]) -> bool:
    """Pods that should serve: not terminating, not finished, not gatekeeper's test Job."""
    if (pod.get("metadata") or {}).get("deletionTimestamp") or testjobs.is_test_pod(pod):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _why_not_ready(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    for entry in status.get("containerStatuses") or []:
        waiting = (entry.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("reason"):
            return str(condition["reason"])
    return str(status.get("phase") or "not Ready")


FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/name")
FLUX_MANAGERS = ("kustomize-controller", "helm-controller")
_warned: set[tuple[str, str]] = set()


def flux_warning(meta: Mapping[str, Any]) -> str:
    """A Deployment Flux applies whose manifest sets `replicas` (Flux's field manager owns
    spec.replicas): Flux puts its count back at every reconcile, undoing gatekeeper's scaling."""
    labels = meta.get("labels") or {}
    label = next((key for key in FLUX_LABELS if key in labels), None)
    if label is None:
        return ""
    for entry in meta.get("managedFields") or []:
        fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        if entry.get("manager") in FLUX_MANAGERS and "f:replicas" in fields:
            return (f"Deployment {meta.get('name')} is managed by Flux ({label}="
                    f"{labels[label]}) and its manifest sets replicas (owned by "
                    f"{entry['manager']}): Flux will undo gatekeeper's scaling at its next "
                    "reconcile; drop replicas from the overlay or let an HPA own them "
                    "(docs/install.md, Flux)")
    return ""


def _deployment(body: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> DeploymentView:
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = spec.get("selector") or {}
    ready = sum(1 for p in pods if pod_ready(p)
                and matches(selector, (p.get("metadata") or {}).get("labels") or {}))
    return DeploymentView(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        replicas=int(1 if spec.get("replicas") is None else spec["replicas"]),
        ready_replicas=int((body.get("status") or {}).get("readyReplicas") or 0),
        images={str(c.get("name")): str(c.get("image")) for c in containers},
        selector=dict(selector),
        pods_ready=ready,
        warning=_logged_once(meta, flux_warning(meta)),
    )


def _logged_once(meta: Mapping[str, Any], warning: str) -> str:
    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
    if warning and key not in _warned:
        _warned.add(key)
        log.warning("scaling will be undone by Flux", namespace=key[0], deployment=key[1],
                    reason=warning)
    return warning


def _selector_kwargs(selector: str | None) -> dict[str, str]:
    return {"label_selector": selector} if selector else {}


async def list_deployments(api: client.ApiClient, namespace: str, *, selector: str | None = None,
                           pair: PairConfig | None = None) -> list[DeploymentView]:
    """The namespace's Deployments (see `read_readiness` for which), by name."""
    readiness = await read_readiness(api, namespace, selector=selector, pair=pair)
    return list(readiness.deployments)


def _scope_problems(pair: PairConfig | None, namespace: str,
                    views: Sequence[DeploymentView]) -> list[str]:
    """Named Deployments that are missing, and `replicas` entries that match none."""
    if pair is None:
        return []
    found = {v.name for v in views}
    problems = [f"Deployment {name} (pairs.{pair.name}.deployments) not found in {namespace}"
                for name in pair.deployments if name not in found]
    problems += [f"replicas entry {name!r} (pairs.{pair.name}.replicas) matches no Deployment "
                 f"gatekeeper manages in {namespace}" for name in sorted(pair.replicas)
                 if name not in found]
    return problems


def selectors(pair: PairConfig | None, selector: str | None) -> tuple[str | None, str | None]:
    """The label selectors (Deployments, pods) a readiness read lists with: a pair's own
    `deployment_selector` and every pod, or without a pair `selector` for both."""
    return (selector, selector) if pair is None else (pair.deployment_selector, None)


async def read_readiness(api: client.ApiClient, namespace: str, *, selector: str | None = None,
                         pair: PairConfig | None = None) -> Readiness:
    """Can `namespace` take traffic? Reads its Deployments and pods once.

    With `pair`, the Deployments are the pair's own: named in `deployments`, else found by
    `deployment_selector`, else every Deployment of the namespace; each counts the pods its
    own selector matches (the pair's pod `selector`, for logs and rules, picks nothing here).
    A named Deployment that is missing or a `replicas` entry matching none is a reason.
    Without `pair`, `selector` filters Deployments and pods (the older, narrower form).
    """
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    deployment_selector, pod_selector = selectors(pair, selector)
    deployments, pods = await asyncio.gather(
        read_json(apps.list_namespaced_deployment, namespace,
                  **_selector_kwargs(deployment_selector)),
        read_json(core.list_namespaced_pod, namespace, **_selector_kwargs(pod_selector)),
    )
    return readiness_of(namespace, deployments.get("items") or [], pods.get("items") or [],
                        pair=pair, deployment_selector=deployment_selector)


def readiness_of(namespace: str, deployments: Sequence[Mapping[str, Any]],
                 pods: Sequence[Mapping[str, Any]], *, pair: PairConfig | None = None,
                 deployment_selector: str | None = None) -> Readiness:
    """`read_readiness`'s answer from Deployments and pods already listed (by the API
    server or from the watch cache) with the label `selectors`. No I/O."""
    serving = [p for p in pods if _counted(p)]
    items = list(deployments)
    if pair is not None and pair.deployments:
        items = [d for d in items if (d.get("metadata") or {}).get("name") in pair.deployments]
    views = tuple(sorted((_deployment(d, serving) for d in items), key=lambda d: d.name))
    if pair is not None:
        serving = [p for p in serving if any(
            matches(v.selector, (p.get("metadata") or {}).get("labels") or {}) for v in views)]
    reasons: list[str] = _scope_problems(pair, namespace, views)
    where = f"{namespace}" + (f" (selector {deployment_selector})" if deployment_selector else "")
    if not views and not (pair is not None and pair.deployments):
        reasons.append(f"no Deployments in {where}")
    for view in views:
        if view.replicas < 1:
            reasons.append(f"Deployment {view.name} is scaled to 0")
        elif view.pods_ready < view.replicas:
            reasons.append(f"Deployment {view.name}: {view.pods_ready}/{view.replicas} pods Ready")
    unready = [p for p in serving if not pod_ready(p)]
    for pod in unready[:MAX_LISTED]:
        reasons.append(f"pod {pod['metadata']['name']} not Ready ({_why_not_ready(pod)})")
    if len(unready) > MAX_LISTED:
        reasons.append(f"... and {len(unready) - MAX_LISTED} more pods not Ready")
    return Readiness(namespace, views, len(serving), len(serving) - len(unready), tuple(reasons))


async def scale(api: client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    """Set a Deployment's replicas through the scale subresource (RBAC: deployments/scale)."""
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    apps = client.AppsV1Api(api)
    await read_json(apps.patch_namespaced_deployment_scale, name, namespace,
                    {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH)
    log.info("deployment scaled", namespace=namespace, deployment=name, replicas=replicas)


@dataclass(frozen=True)
class ReplicaPlan:
    """Production replica count of one Deployment and where the number came from."""

    name: str
    current: int
    target: int
    source: str


def production_replicas(
    pair: PairConfig,
    deployments: Sequence[DeploymentView],
    *,
    active: Sequence[DeploymentView] = (),
    active_namespace: str | None = None,
    remembered: Mapping[str, int] | None = None,
) -> list[ReplicaPlan]:
    """Counts for a scale-up: configuration, else the active's, else remembered, else 1."""
    mirrored = {d.name: d.replicas for d in active if d.replicas >= 1}
    remembered = remembered or {}
    plans = []
    for view in deployments:
        if view.name in pair.replicas:
            target, source = pair.replicas[view.name], "configuration"
        elif view.name in mirrored:
            target, source = mirrored[view.name], f"mirrors {active_namespace or 'active'}"
        elif remembered.get(view.name, 0) >= 1:
            target, source = remembered[view.name], "remembered"
        else:
            target, source = max(view.replicas, 1), "default"
        plans.append(ReplicaPlan(view.name, view.replicas, target, source))
    return plans


async def wait_ready(
    api: client.ApiClient,
    namespace: str,
    *,
    timeout: float,  # noqa: ASYNC109 - a deadline for the pods, reported with the last reading
    selector: str | None = None,
    pair: PairConfig | None = None,
    progress: Progress | None = None,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> Readiness:
    """Poll readiness until ready or `timeout` seconds; returns the last reading.

    Polls quickly at first (pods often turn Ready within a second), backing off to
    `interval`. API errors while waiting are reported through the readiness reasons and
    retried: a rolling restart of the API server must not fail a ten-minute wait.
    """
    deadline = clock() + timeout
    last_summary = None
    pause = 0.05
    while True:
        try:
            readiness = await read_readiness(api, namespace, selector=selector, pair=pair)
        except API_ERRORS as exc:
            detail = f"HTTP {exc.status}" if isinstance(exc, ApiException) else repr(exc)
            readiness = Readiness(namespace, (), 0, 0, (f"cannot read {namespace}: {detail}",))
        summary = readiness.summary() if not readiness.reasons else \
            f"{readiness.summary()}: {readiness.reasons[0]}"
        if progress is not None and summary != last_summary:
            progress(readiness)
        last_summary = summary
        if readiness.ready or clock() >= deadline:
            return readiness
        await asyncio.sleep(max(0.0, min(pause, deadline - clock())))
        pause = min(interval, pause * 1.5)
