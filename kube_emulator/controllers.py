"""Deployment, ReplicaSet and garbage-collector simulation.

Like kube-controller-manager: a Deployment owns one ReplicaSet per pod template (named
`<deploy>-<pod-template-hash>`), each ReplicaSet owns its pods, statuses are derived from
the pods, and deleting an owner deletes its dependents. Rolling updates surge: the new
ReplicaSet is scaled up at once and the old ones go to zero when all new pods are Ready
(`Recreate` deletes the old pods first). Everything reacts to store events synchronously,
so a scale request has created its pods by the time the response is sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Mapping
from typing import Any

from .errors import ApiError
from .jsonvalues import clone
from .kubelet import NODE_NAME, is_ready
from .operations import NAME_ALPHABET, ObjectAPI, random_suffix
from .resources import DEPLOYMENTS, NAMESPACES, PODS, REPLICASETS, ResourceType
from .store import Event
from .timefmt import rfc3339

log = logging.getLogger(__name__)
Obj = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"


def pod_template_hash(template: Mapping[str, Any]) -> str:
    """A stable 10-character hash of the pod template, like `pod-template-hash`."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(NAME_ALPHABET[b % len(NAME_ALPHABET)] for b in digest[:10])


def owner_reference(owner: Mapping[str, Any]) -> Obj:
    """A controller ownerReference pointing at `owner`."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_from_template(owner: Mapping[str, Any], template: Mapping[str, Any],
                      rng: random.Random) -> Obj:
    """The Pod a controller (ReplicaSet, Job) creates from `owner`'s pod template: a
    generated name in the owner's namespace, the template's labels and annotations, a
    controller ownerReference to `owner`, and the emulator's one node."""
    template = clone(template)
    tmeta = template.get("metadata") or {}
    meta = owner["metadata"]
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{random_suffix(rng)}",
            "namespace": meta["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {**(template.get("spec") or {}), "nodeName": NODE_NAME},
    }
    if tmeta.get("annotations"):
        body["metadata"]["annotations"] = dict(tmeta["annotations"])
    return body


def controller_of(obj: Mapping[str, Any], kind: str) -> str | None:
    """Name of the controlling owner of the given kind, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def _non_zero(values: Mapping[str, int]) -> Obj:
    """Go's `omitempty`: zero counters are absent from real status documents."""
    return {k: v for k, v in values.items() if v}


def _set_condition(conditions: list[Obj], kind: str, ok: bool, reason: str, message: str,
                   now: str) -> None:
    status = "True" if ok else "False"
    for cond in conditions:
        if cond.get("type") == kind:
            if (cond.get("status"), cond.get("reason")) != (status, reason):
                cond.update(status=status, reason=reason, message=message,
                            lastUpdateTime=now, lastTransitionTime=now)
            return
    conditions.append({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastUpdateTime": now, "lastTransitionTime": now})


def _max_unavailable(deploy: Mapping[str, Any], desired: int) -> int:
    strategy = (deploy.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return int(desired * int(value[:-1]) / 100)
    return int(value)


class WorkloadControllers:
    """Reconciles Deployments -> ReplicaSets -> Pods and collects orphaned dependents."""

    def __init__(self, api: ObjectAPI, *, rng: random.Random | None = None) -> None:
        self.api = api
        self.store = api.store
        self.rng = rng or random.Random()
        self.store.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        obj, ns = event.object, event.namespace
        name = obj["metadata"]["name"]
        if event.type == "DELETED":
            self._collect_garbage(event)
        if event.resource.key == DEPLOYMENTS.key and event.type != "DELETED":
            self.reconcile_deployment(ns, name)
        elif event.resource.key == REPLICASETS.key:
            if event.type != "DELETED":
                self.reconcile_replicaset(ns, name)
            owner = controller_of(obj, "Deployment")
            if owner:
                self.reconcile_deployment(ns, owner)
        elif event.resource.key == PODS.key:
            owner = controller_of(obj, "ReplicaSet")
            if owner:
                self.reconcile_replicaset(ns, owner)

    # ---- deployments -------------------------------------------------------------------

    def reconcile_deployment(self, namespace: str, name: str) -> None:
        """Make the ReplicaSets match the Deployment, then refresh its status."""
        deploy = self.store.peek(DEPLOYMENTS, namespace, name)
        if deploy is None or deploy["metadata"].get("deletionTimestamp"):
            return
        spec = deploy.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        uid = deploy["metadata"]["uid"]
        template_hash = pod_template_hash(spec.get("template") or {})
        owned = [rs for rs in self.store.iter(REPLICASETS, namespace) if _owned_by(rs, uid)]
        new_rs = next((rs for rs in owned if rs["metadata"].get("labels", {}).get(
            "pod-template-hash") == template_hash), None)
        old = [rs for rs in owned if rs is not new_rs]
        if new_rs is None:
            new_rs = self._create_replicaset(deploy, template_hash, owned)
            if new_rs is None:
                return
        old_pods = [p for rs in old for p in self._pods_of(rs)]
        new_pods = self._pods_of(new_rs)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        new_target = 0 if recreate and old_pods else desired
        all_new_ready = sum(is_ready(p) for p in new_pods) >= desired and len(new_pods) >= desired
        for rs in old:
            current = int(rs["spec"].get("replicas", 0))
            target = 0 if (recreate or all_new_ready) else current
            self._scale_replicaset(rs, target)
        self._scale_replicaset(new_rs, new_target)
        revision = new_rs["metadata"].get("annotations", {}).get(REVISION)
        if revision and deploy["metadata"].get("annotations", {}).get(REVISION) != revision:
            self.api.mutate(DEPLOYMENTS, namespace, name, lambda d: d["metadata"].setdefault(
                "annotations", {}).__setitem__(REVISION, revision))
        self._update_deployment_status(namespace, name)

    def _create_replicaset(self, deploy: Obj, template_hash: str, owned: list[Obj]) -> Obj | None:
        meta, spec = deploy["metadata"], deploy.get("spec") or {}
        template = clone(spec.get("template") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels["pod-template-hash"] = template_hash
        selector = clone(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
        revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, 0)) for rs in owned]
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{template_hash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    REVISION: str(max(revisions, default=0) + 1),
                    "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                },
                "ownerReferences": [owner_reference(deploy)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        try:
            return self.api.create(REPLICASETS, meta["namespace"], body)
        except ApiError as exc:
            log.warning("cannot create ReplicaSet for %s/%s: %s", meta["namespace"],
                        meta["name"], exc.message)
            return None

    def _scale_replicaset(self, rs: Obj, replicas: int) -> None:
        if int(rs["spec"].get("replicas", 0)) == replicas:
            return
        meta = rs["metadata"]
        self.api.mutate(REPLICASETS, meta["namespace"], meta["name"],
                        lambda r: r["spec"].__setitem__("replicas", replicas))

    def _update_deployment_status(self, namespace: str, name: str) -> None:
        deploy = self.store.peek(DEPLOYMENTS, namespace, name)
        if deploy is None:
            return
        uid, spec = deploy["metadata"]["uid"], deploy.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        template_hash = pod_template_hash(spec.get("template") or {})
        sets = [rs for rs in self.store.iter(REPLICASETS, namespace) if _owned_by(rs, uid)]
        pods = [p for rs in sets for p in self._pods_of(rs)]
        new_rs = next((rs for rs in sets if rs["metadata"]["labels"].get("pod-template-hash")
                       == template_hash), None)
        updated = len(self._pods_of(new_rs)) if new_rs else 0
        ready = sum(is_ready(p) for p in pods)
        wanted = sum(int(rs["spec"].get("replicas", 0)) for rs in sets)
        now = rfc3339(self.api.clock())
        complete = updated == desired and ready >= desired and len(pods) == desired
        rs_name = new_rs["metadata"]["name"] if new_rs else name

        def change(d: Obj) -> None:
            old = d.get("status") or {}
            conditions = clone(old.get("conditions") or [])
            available = ready >= desired - _max_unavailable(d, desired)
            _set_condition(
                conditions, "Available", available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability." if available
                else "Deployment does not have minimum availability.", now)
            _set_condition(conditions, "Progressing", True,
                           "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                           f'ReplicaSet "{rs_name}" has successfully progressed.' if complete
                           else f'ReplicaSet "{rs_name}" is progressing.', now)
            d["status"] = {
                "observedGeneration": d["metadata"].get("generation", 1),
                **_non_zero({
                    "replicas": len(pods),
                    "updatedReplicas": updated,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "unavailableReplicas": max(wanted - ready, desired - ready, 0),
                }),
                "conditions": conditions,
            }

        self.api.mutate(DEPLOYMENTS, namespace, name, change, subresource="status")

    # ---- replicasets -------------------------------------------------------------------

    def _pods_of(self, rs: Mapping[str, Any]) -> list[Obj]:
        uid = rs["metadata"]["uid"]
        return [p for p in self.store.iter(PODS, rs["metadata"]["namespace"])
                if _owned_by(p, uid) and not p["metadata"].get("deletionTimestamp")]

    def reconcile_replicaset(self, namespace: str, name: str) -> None:
        """Create or delete pods until the ReplicaSet has spec.replicas, then its status."""
        rs = self.store.peek(REPLICASETS, namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        desired = int(rs["spec"].get("replicas", 1))
        pods = self._pods_of(rs)
        for _ in range(desired - len(pods)):
            self._create_pod(rs)
        if len(pods) > desired:
            # Like the real controller: drop not-ready pods first, then the newest ones.
            pods.sort(key=lambda p: (is_ready(p), p["metadata"]["creationTimestamp"],
                                     p["metadata"]["name"]), reverse=True)
            for pod in pods[desired:]:
                self._delete(PODS, namespace, pod["metadata"]["name"])
        pods = self._pods_of(rs)
        ready = sum(is_ready(p) for p in pods)

        def change(r: Obj) -> None:
            r["status"] = {
                "replicas": len(pods),
                **_non_zero({"fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                             "availableReplicas": ready}),
                "observedGeneration": r["metadata"].get("generation", 1),
            }

        self.api.mutate(REPLICASETS, namespace, name, change, subresource="status")

    def _create_pod(self, rs: Obj) -> None:
        meta = rs["metadata"]
        body = pod_from_template(rs, rs["spec"].get("template") or {}, self.rng)
        try:
            self.api.create(PODS, meta["namespace"], body)
        except ApiError as exc:
            log.warning("cannot create pod for ReplicaSet %s/%s: %s", meta["namespace"],
                        meta["name"], exc.message)

    # ---- garbage collection ------------------------------------------------------------

    def _collect_garbage(self, event: Event) -> None:
        meta = event.object["metadata"]
        if event.resource.key == NAMESPACES.key:
            for rt in self.api.registry:
                if rt.namespaced:
                    for obj in list(self.store.iter(rt, meta["name"])):
                        self._delete(rt, meta["name"], obj["metadata"]["name"])
            return
        uid = meta.get("uid")
        namespace = meta.get("namespace")
        if not uid or not namespace:
            return
        for rt in self.api.registry:
            if not rt.namespaced:
                continue
            for obj in list(self.store.iter(rt, namespace)):
                if _owned_by(obj, uid):
                    self._delete(rt, namespace, obj["metadata"]["name"])

    def _delete(self, rt: ResourceType, namespace: str, name: str) -> None:
        try:
            self.api.delete(rt, namespace, name)
        except ApiError as exc:
            if exc.code != 404:
                log.warning("cannot delete %s %s/%s: %s", rt.plural, namespace, name, exc.message)
