"""Checks read from Kubernetes objects: readiness, restarts, config parity, new images.

Each check lists what it needs once per namespace and resource kind (raw JSON, see
`kubeclient.read_json`), pods from the watch cache while it is current, and computes a
number per target namespace:

- `pods_ready`: ready pods / pods matching the pair's selector (Succeeded pods, finished
  jobs, and gatekeeper's own test Job pods are left out). No pods is no data, never a
  vacuous 1.
- `restarts`: container restarts within the window (see `restarts_within`), the window
  ending at the API server's time (the list answer's `Date`, or the watch cache's estimate
  of the server's clock: `server_now`), not at gatekeeper's clock.
- `config_parity`: differences between the ConfigMaps and Secrets of the namespace and the
  other one of its pair (see `parity_differences`). Secret values are only ever hashed.
- `images_differ`: 1 when the Deployments' container images differ from the other
  namespace's, else 0 (the dark namespace really runs a new release).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from kubernetes_asyncio import client

from gatekeeper import errors, kubeclient, testjobs
from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule
from gatekeeper.sources.base import PodCache, Target, cached_pods

log = structlog.get_logger()
SHOWN = 5
IGNORED_CONFIGMAPS = frozenset({"kube-root-ca.crt"})
"""Created by Kubernetes in every namespace."""
IGNORED_SECRET_TYPES = ("kubernetes.io/service-account-token", "helm.sh/release.v1")
"""Per-namespace by nature: service-account tokens and Helm's release records."""
# kustomize's configMapGenerator/secretGenerator suffix: '-' and 10 characters of this alphabet.
_KUSTOMIZE_SUFFIX = re.compile(r"-[bcdfghkmt2456789]{10}$")

Json = dict[str, Any]


def _listing(items: Sequence[str], limit: int = SHOWN) -> str:
    if not items:
        return "nothing else"
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _statuses(pod: Json) -> list[Json]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def pod_ready(pod: Json) -> bool:
    """The pod's Ready condition is True (what `kubectl wait --for=condition=Ready` waits for)."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _not_ready_reason(pod: Json) -> str:
    """The most telling reason: a container's waiting/terminated reason, else the phase."""
    for entry in _statuses(pod):
        state = entry.get("state") or {}
        for key in ("waiting", "terminated"):
            reason = (state.get(key) or {}).get("reason")
            if reason:
                return str(reason)
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("reason"):
            return str(condition["reason"])
    return str(status.get("phase") or "Unknown")


def restarts_within(pod: Json, *, window: float, now: float) -> int:
    """Container restarts (init containers included) that happened within the window.

    Kubernetes keeps a restart count and only the last termination, so:
    - in a pod started within the window, every restart happened in it: `restartCount`;
    - in an older pod, a container whose last termination finished within the window
      restarted at least once in it: 1 (a lower bound, the earlier ones have no time);
    - otherwise 0. Restarts before the window never count, however many there were.
    """
    since = now - window
    started = _timestamp((pod.get("status") or {}).get("startTime")) or _timestamp(
        (pod.get("metadata") or {}).get("creationTimestamp"))
    young = started is not None and started >= since
    total = 0
    for entry in _statuses(pod):
        count = int(entry.get("restartCount") or 0)
        if count <= 0:
            continue
        if young:
            total += count
            continue
        finished = _timestamp(((entry.get("lastState") or {}).get("terminated") or {})
                              .get("finishedAt"))
        if finished is not None and finished >= since:
            total += 1
    return total


def _last_reason(pod: Json) -> str:
    for entry in _statuses(pod):
        reason = ((entry.get("lastState") or {}).get("terminated") or {}).get("reason")
        if reason:
            return f"{entry.get('name')}: {reason}"
    return ""


def _digest(value: Any) -> str:
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ConfigObject:
    """A ConfigMap or Secret reduced to what parity compares: type, keys and value hashes."""

    kind: str
    name: str
    type: str
    hashes: Mapping[str, str]


def config_objects(configmaps: Json, secrets: Json) -> dict[str, ConfigObject]:
    """Index the compared objects by `Kind/name`, values replaced by their sha256 at once.

    A kustomize hash suffix (`app-config-7g2h9k5mbt`) is dropped from the name, so the
    generated objects of both namespaces are compared key by key; when two objects in one
    namespace share a base name the full names are kept.
    """
    found: list[ConfigObject] = []
    for item in configmaps.get("items") or []:
        name = item["metadata"]["name"]
        if name in IGNORED_CONFIGMAPS:
            continue
        values = {**(item.get("data") or {}), **(item.get("binaryData") or {})}
        found.append(ConfigObject("ConfigMap", name, "",
                                  {k: _digest(v) for k, v in values.items()}))
    for item in secrets.get("items") or []:
        kind = item.get("type") or "Opaque"
        if kind in IGNORED_SECRET_TYPES:
            continue
        found.append(ConfigObject("Secret", item["metadata"]["name"], kind,
                                  {k: _digest(v) for k, v in (item.get("data") or {}).items()}))
    bases: dict[str, list[ConfigObject]] = {}
    for obj in found:
        base = _KUSTOMIZE_SUFFIX.sub("", obj.name)
        bases.setdefault(f"{obj.kind}/{base}", []).append(obj)
    index: dict[str, ConfigObject] = {}
    for key, objects in bases.items():
        if len(objects) == 1:
            index[key] = objects[0]
        else:
            index.update({f"{o.kind}/{o.name}": o for o in objects})
    return index


def parity_differences(
    mine: Mapping[str, ConfigObject], theirs: Mapping[str, ConfigObject], *, other: str
) -> list[str]:
    """One line per difference (missing object, missing key, differing value or type).

    Lines name objects and keys, never values or hashes.
    """
    problems = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if a is None:
            problems.append(f"{key} only in {other}")
            continue
        if b is None:
            problems.append(f"{key} missing in {other}")
            continue
        if a.type != b.type:
            problems.append(f"{key} type {a.type} vs {b.type} in {other}")
        for field in sorted(set(a.hashes) | set(b.hashes)):
            if field not in b.hashes:
                problems.append(f"{key} key {field} missing in {other}")
            elif field not in a.hashes:
                problems.append(f"{key} key {field} only in {other}")
            elif a.hashes[field] != b.hashes[field]:
                problems.append(f"{key} key {field} differs")
    return problems


def deployment_images(deployments: Json) -> set[str]:
    """Every container image (init containers included) of every Deployment's pod template."""
    images = set()
    for item in deployments.get("items") or []:
        spec = (((item.get("spec") or {}).get("template") or {}).get("spec")) or {}
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if container.get("image"):
                images.add(str(container["image"]))
    return images


class KubernetesSource:
    """Answers `rule.check` per namespace from live Kubernetes objects.

    `pods_ready` and `restarts` read the pods from `pods` (the watch cache) while it can
    answer; `restarts` only while `server_now` (the API server's clock as the cache last
    saw it) is known too, else it lists them for the list answer's Date.
    """

    name = "kubernetes"

    def __init__(
        self, api_client: client.ApiClient, *, read_secrets: bool = False,
        clock: Callable[[], float] = time.time, pods: PodCache | None = None,
        server_now: Callable[[], float | None] | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.read_secrets = read_secrets
        """config_parity compares Secrets too (kubernetes.read_secrets; off: never listed)."""
        self.clock = clock
        self.cached_pods = pods
        self.server_now = server_now

    async def close(self) -> None:
        """Nothing to release: the shared ApiClient belongs to whoever passed it in."""

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """Run the rule's check for every target; the rule's `window` overrides `window`."""
        try:
            if rule.check in ("pods_ready", "restarts"):
                seconds = rule.window if rule.window is not None else window
                results = await asyncio.gather(
                    *(self._pods(rule.check, t, seconds) for t in targets))
                return {t.namespace: m for t, m in zip(targets, results, strict=True)}
            if rule.check == "config_parity":
                return await self._config_parity(targets)
            if rule.check == "images_differ":
                return await self._images_differ(targets)
        except Exception as exc:  # a bug here must not crash the evaluation
            log.exception("kubernetes check crashed", rule=rule.name, check=rule.check)
            return {t.namespace: Measurement.error(f"kubernetes: internal error: {exc!r}")
                    for t in targets}
        return {t.namespace: Measurement.error(f"kubernetes: unknown check {rule.check!r}")
                for t in targets}

    async def _pods(self, check: str, target: Target, window: float) -> Measurement:
        where = (f"pods matching {target.selector!r}" if target.selector else "pods") + \
            f" in namespace {target.namespace}"
        query = f"{check} of {where}" + (f" over {window:g}s" if check == "restarts" else "")
        server_now = None
        if check == "pods_ready":
            items = cached_pods(self.cached_pods, target)
        else:
            server_now = self.server_now() if self.server_now is not None else None
            items = cached_pods(self.cached_pods, target) if server_now is not None else None
        if items is None:
            try:
                listed, server_now = await kubeclient.read_json_dated(
                    self.core.list_namespaced_pod, target.namespace,
                    label_selector=target.selector)
            except errors.API_ERRORS as exc:
                reason = kubeclient.describe_error(exc)
                return Measurement.error(f"kubernetes: listing {where} failed: {reason}",
                                         query=query)
            items = listed.get("items") or []
        pods = [p for p in items if (p.get("status") or {}).get("phase") != "Succeeded"
                and not testjobs.is_test_pod(p)]
        if not pods:
            return Measurement.no_data(f"kubernetes: no {where}", query=query)
        if check == "pods_ready":
            return _readiness(pods, query)
        # The pods' timestamps are the cluster's: "within the window" is reckoned on the API
        # server's clock (its Date header), so a skewed local clock cannot hide restarts.
        now = server_now if server_now is not None else self.clock()
        counts = {p["metadata"]["name"]: restarts_within(p, window=window, now=now) for p in pods}
        total = sum(counts.values())
        named = []
        for name, pod in sorted((p["metadata"]["name"], p) for p in pods):
            if counts[name]:
                reason = _last_reason(pod)
                named.append(f"{name} ({counts[name]}{', ' + reason if reason else ''})")
        message = (f"{total} restart(s) within {window:g}s in {len(named)} of {len(pods)} pods: "
                   f"{_listing(named)}" if total
                   else f"no restarts within {window:g}s in {len(pods)} pods")
        return Measurement.ok(float(total), message=message, query=query,
                              sample_count=float(len(pods)))

    async def _list_each(
        self, namespaces: Iterable[str], call: Callable[..., Awaitable[Any]], what: str,
        **kwargs: Any,
    ) -> tuple[dict[str, Json], dict[str, str]]:
        """One list call per namespace, concurrently: (answers, failure reasons) by namespace."""
        unique = sorted(set(namespaces))
        results = await asyncio.gather(
            *(kubeclient.read_json(call, ns, **kwargs) for ns in unique), return_exceptions=True)
        found: dict[str, Json] = {}
        failed: dict[str, str] = {}
        for ns, result in zip(unique, results, strict=True):
            if isinstance(result, errors.API_ERRORS):
                failed[ns] = (f"listing {what} in namespace {ns} failed: "
                              f"{kubeclient.describe_error(result)}")
            elif isinstance(result, BaseException):
                raise result
            else:
                found[ns] = result
        return found, failed

    async def _config_parity(self, targets: Sequence[Target]) -> dict[str, Measurement]:
        namespaces = {t.namespace for t in targets} | {t.other for t in targets}
        configmaps, cm_failed = await self._list_each(
            namespaces, self.core.list_namespaced_config_map, "ConfigMaps")
        secrets: dict[str, Json] = {ns: {"items": []} for ns in namespaces}
        secret_failed: dict[str, str] = {}
        if self.read_secrets:
            secret_filter = ",".join(f"type!={kind}" for kind in IGNORED_SECRET_TYPES)
            secrets, secret_failed = await self._list_each(
                namespaces, self.core.list_namespaced_secret, "Secrets",
                field_selector=secret_filter)
        compared = "ConfigMaps and Secrets" if self.read_secrets else "ConfigMaps"
        failed = {**secret_failed, **cm_failed}
        indexes = {ns: config_objects(configmaps[ns], secrets[ns])
                   for ns in namespaces if ns not in failed}
        del configmaps, secrets  # drop the listed values as soon as they are hashed
        return _against_other(
            targets, failed,
            lambda t: f"config_parity of {compared} in {t.namespace} against {t.other}",
            lambda t, query: _parity(indexes[t.namespace], indexes[t.other], t, compared, query))

    async def _images_differ(self, targets: Sequence[Target]) -> dict[str, Measurement]:
        namespaces = {t.namespace for t in targets} | {t.other for t in targets}
        listed, failed = await self._list_each(
            namespaces, self.apps.list_namespaced_deployment, "Deployments")
        return _against_other(
            targets, failed, lambda t: f"images_differ of {t.namespace} against {t.other}",
            lambda t, query: _image_difference(deployment_images(listed[t.namespace]),
                                               deployment_images(listed[t.other]), t, query))


def _against_other(targets: Sequence[Target], failed: Mapping[str, str],
                   query_for: Callable[[Target], str],
                   judge: Callable[[Target, str], Measurement]) -> dict[str, Measurement]:
    """Each target compared with its pair's other namespace by `judge(target, query)`; a
    failed listing of either namespace is the target's error (fails closed)."""
    results = {}
    for target in targets:
        query = query_for(target)
        reason = failed.get(target.namespace) or failed.get(target.other)
        results[target.namespace] = (
            Measurement.error(f"kubernetes: {reason}", query=query) if reason is not None
            else judge(target, query))
    return results


def _parity(mine: Mapping[str, ConfigObject], theirs: Mapping[str, ConfigObject],
            target: Target, compared: str, query: str) -> Measurement:
    """config_parity: the differences of a namespace's ConfigMaps (and Secrets) from the other's."""
    if not mine and not theirs:
        return Measurement.no_data(
            f"kubernetes: no {compared} in {target.namespace} or {target.other}", query=query)
    problems = parity_differences(mine, theirs, other=target.other)
    message = (f"{len(problems)} difference(s) from {target.other}: "
               f"{_listing(problems)}" if problems else
               f"{len(mine)} {compared} match {target.other}")
    return Measurement.ok(float(len(problems)), message=message, query=query,
                          sample_count=float(len(set(mine) | set(theirs))))


def _image_difference(mine: set[str], theirs: set[str], target: Target,
                      query: str) -> Measurement:
    """images_differ: 1 when a namespace's Deployment images differ from the other's."""
    empty = [ns for ns, images in ((target.namespace, mine), (target.other, theirs))
             if not images]
    if empty:
        return Measurement.no_data(f"kubernetes: no Deployments in namespace {empty[0]}",
                                   query=query)
    if mine == theirs:
        message = f"same images as {target.other}: {_listing(sorted(mine))}"
    else:
        message = (f"images differ from {target.other}: "
                   f"only {target.namespace} has {_listing(sorted(mine - theirs))}; "
                   f"only {target.other} has {_listing(sorted(theirs - mine))}")
    return Measurement.ok(float(mine != theirs), message=message, query=query,
                          sample_count=float(len(mine)))


def _readiness(pods: Sequence[Json], query: str) -> Measurement:
    not_ready = [f"{p['metadata']['name']} ({_not_ready_reason(p)})"
                 for p in sorted(pods, key=lambda p: p["metadata"]["name"]) if not pod_ready(p)]
    ready = len(pods) - len(not_ready)
    message = f"{ready}/{len(pods)} pods ready"
    if not_ready:
        message += f"; not ready: {_listing(not_ready)}"
    return Measurement.ok(ready / len(pods), message=message, query=query,
                          sample_count=float(len(pods)))
