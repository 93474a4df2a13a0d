"""Pod lifecycle simulation: what a kubelet would report for each pod.

A new pod goes Pending -> Running (containers started, not Ready) -> Ready after
`ready_delay` seconds, each step a separate write, so watchers and readiness gates see
the same sequence of states as on a real node. Tests can also flip readiness and bump
restart counts (crash loops) by hand.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any

from .errors import bad_request, not_found
from .jsonvalues import clone
from .operations import ObjectAPI
from .programs import ContainerPrograms, Run
from .resources import PODS
from .store import Event
from .timefmt import rfc3339

Obj = dict[str, Any]
NODE_NAME = "emulator-node"
HOST_IP = "10.0.0.10"


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's Ready condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def container_names(pod: Mapping[str, Any]) -> list[str]:
    """Names of the pod's (regular) containers, in spec order."""
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]


def _set_condition(
    status: Obj, kind: str, value: bool, now: str, reason: str | None = None
) -> None:
    conditions = status.setdefault("conditions", [])
    text = "True" if value else "False"
    for cond in conditions:
        if cond.get("type") == kind:
            if cond.get("status") != text:
                cond["status"] = text
                cond["lastTransitionTime"] = now
            if reason:
                cond["reason"] = reason
            else:
                cond.pop("reason", None)
            return
    cond = {"type": kind, "status": text, "lastProbeTime": None, "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    conditions.append(cond)


def _refresh_ready(pod: Obj, now: str) -> None:
    """Derive the pod conditions from the container statuses."""
    status = pod["status"]
    ready = all(cs.get("ready") for cs in status.get("containerStatuses") or [])
    reason = None if ready else "ContainersNotReady"
    _set_condition(status, "PodReadyToStartContainers", True, now)
    _set_condition(status, "Initialized", True, now)
    _set_condition(status, "Ready", ready, now, reason)
    _set_condition(status, "ContainersReady", ready, now, reason)
    _set_condition(status, "PodScheduled", True, now)


class Kubelet:
    """Drives pod status for every pod in the store (there is one emulated node)."""

    def __init__(
        self,
        api: ObjectAPI,
        *,
        ready_delay: float = 0.0,
        rng: random.Random | None = None,
        on_container_restart: Callable[[str, str, str], None] | None = None,
        programs: ContainerPrograms | None = None,
        on_output: Callable[[str, str, str, tuple[str, ...]], None] | None = None,
    ) -> None:
        self.api = api
        self.programs = programs or ContainerPrograms()
        """What run-to-completion containers do (kube_emulator.programs)."""
        self._on_output = on_output
        self._exits: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self.ready_delay = ready_delay
        self.force_ready = False
        self._rng = rng or random.Random()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._on_container_restart = on_container_restart
        api.store.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.resource.key != PODS.key:
            return
        meta = event.object["metadata"]
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event.type == "DELETED":
            self._cancel(key)
            for exit_key in [k for k in self._exits if k[:2] == key]:
                self._exits.pop(exit_key).cancel()
        elif event.type == "ADDED" and (event.object.get("status") or {}).get("phase") in (
            None, "", "Pending"
        ):
            self._start(*key)

    def _start(self, namespace: str, name: str) -> None:
        ready = self.force_ready or self.ready_delay <= 0
        now = rfc3339(self.api.clock())
        pod_ip = f"10.244.{self._rng.randrange(0, 256)}.{self._rng.randrange(2, 255)}"

        def run(pod: Obj) -> None:
            status = pod.setdefault("status", {})
            status.update(phase="Running", hostIP=HOST_IP, podIP=pod_ip,
                          podIPs=[{"ip": pod_ip}], startTime=now)
            status["containerStatuses"] = [
                {
                    "name": c.get("name"),
                    "image": c.get("image"),
                    "imageID": f"docker-pullable://{c.get('image')}",
                    "containerID": f"containerd://{self._rng.getrandbits(64):016x}",
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                    "lastState": {},
                }
                for c in (pod.get("spec") or {}).get("containers") or []
            ]
            _refresh_ready(pod, now)

        pod = self.api.mutate(PODS, namespace, name, run, subresource="status")
        if not ready:
            self._schedule(namespace, name, self.ready_delay)
        if pod is not None:
            for container in (pod.get("spec") or {}).get("containers") or []:
                self._run(pod, container)

    # ---- run-to-completion containers (Job pods) ----------------------------------------

    def _run(self, pod: Obj, container: Mapping[str, Any]) -> None:
        """Start one scripted run of a container: its log lines now, its exit later."""
        run = self.programs.next_run(pod, container)
        if run is None:
            return
        meta = pod["metadata"]
        namespace, name, target = meta["namespace"], meta["name"], str(container.get("name"))
        if run.logs and self._on_output is not None:
            self._on_output(namespace, name, target, run.logs)
        key = (namespace, name, target)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (synchronous use): the run ends at once
            self._exit(key, run)
            return
        self._exits[key] = loop.call_later(run.seconds, self._exit, key, run)

    def _exit(self, key: tuple[str, str, str], run: Run) -> None:
        """A container's process ended: restart it in place (OnFailure, non-zero exit) or
        record it terminated; when every container has terminated the pod has a phase."""
        self._exits.pop(key, None)
        namespace, name, target = key
        pod = self.api.store.get(PODS, namespace, name)
        if pod is None or (pod.get("status") or {}).get("phase") != "Running":
            return
        restart = run.exit_code != 0 and (pod.get("spec") or {}).get("restartPolicy") == \
            "OnFailure"
        if restart:
            self.restart_container(namespace, name, target, ready=True,
                                   exit_code=run.exit_code)
            restarted = self.api.store.get(PODS, namespace, name)
            container = next((c for c in (pod.get("spec") or {}).get("containers") or []
                              if c.get("name") == target), None)
            if restarted is not None and container is not None:
                self._run(restarted, container)
            return
        now = rfc3339(self.api.clock())

        def terminate(p: Obj) -> None:
            status = p.setdefault("status", {})
            statuses = status.get("containerStatuses") or []
            for cs in statuses:
                if cs.get("name") != target:
                    continue
                started = (cs.get("state") or {}).get("running", {}).get("startedAt", now)
                cs.update(ready=False, started=False, state={"terminated": {
                    "exitCode": run.exit_code,
                    "reason": "Completed" if run.exit_code == 0 else "Error",
                    "startedAt": started, "finishedAt": now,
                    "containerID": cs.get("containerID"),
                }})
            _refresh_ready(p, now)
            ended = [(cs.get("state") or {}).get("terminated") for cs in statuses]
            if ended and all(ended):
                status["phase"] = "Succeeded" if all(
                    e.get("exitCode") == 0 for e in ended if e) else "Failed"
                for cond in status.get("conditions") or []:
                    if cond.get("type") in ("Ready", "ContainersReady"):
                        cond["reason"] = "PodCompleted"

        self.api.mutate(PODS, namespace, name, terminate, subresource="status")

    def _schedule(self, namespace: str, name: str, delay: float) -> None:
        self._cancel((namespace, name))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (synchronous use): become ready at once
            self.set_ready(namespace, name, True)
            return
        self._timers[(namespace, name)] = loop.call_later(delay, self._timer_fired, namespace, name)

    def _timer_fired(self, namespace: str, name: str) -> None:
        self._timers.pop((namespace, name), None)
        pod = self.api.store.get(PODS, namespace, name)
        if pod is not None and (pod.get("status") or {}).get("phase") == "Running":
            self.set_ready(namespace, name, True)

    def _cancel(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def pending_ready(self) -> int:
        """How many pods are still waiting for their ready delay."""
        return len(self._timers)

    def set_ready(
        self, namespace: str, name: str, ready: bool = True, container: str | None = None
    ) -> Obj:
        """Mark one container (or all) Ready / not Ready; cancels a pending ready timer."""
        self._cancel((namespace, name))
        pod = self._pod(namespace, name)
        self._check_container(pod, container)
        now = rfc3339(self.api.clock())

        def change(p: Obj) -> None:
            status = p.setdefault("status", {})
            status.setdefault("phase", "Running")
            for cs in status.get("containerStatuses") or []:
                if (container is None or cs.get("name") == container) \
                        and "terminated" not in (cs.get("state") or {}):
                    cs["ready"] = ready
            _refresh_ready(p, now)

        return self.api.mutate(PODS, namespace, name, change, subresource="status") or pod

    def restart_container(
        self, namespace: str, name: str, container: str | None = None, count: int = 1,
        *, ready: bool | None = None, exit_code: int = 1,
    ) -> Obj:
        """Simulate `count` crashes of a container: restartCount, lastState, fresh logs."""
        pod = self._pod(namespace, name)
        target = self._check_container(pod, container) or (container_names(pod) or [""])[0]
        now = rfc3339(self.api.clock())

        def change(p: Obj) -> None:
            for cs in (p.get("status") or {}).get("containerStatuses") or []:
                if cs.get("name") != target:
                    continue
                cs["restartCount"] = int(cs.get("restartCount", 0)) + count
                cs["lastState"] = {"terminated": {"exitCode": exit_code, "reason": "Error",
                                                  "startedAt": now, "finishedAt": now}}
                cs["state"] = {"running": {"startedAt": now}}
                if ready is not None:
                    cs["ready"] = ready
            _refresh_ready(p, now)

        if self._on_container_restart is not None:
            self._on_container_restart(namespace, name, target)
        return self.api.mutate(PODS, namespace, name, change, subresource="status") or pod

    def close(self) -> None:
        """Cancel pending ready timers (server shutdown)."""
        for timer in (*self._timers.values(), *self._exits.values()):
            timer.cancel()
        self._timers.clear()
        self._exits.clear()

    def _pod(self, namespace: str, name: str) -> Obj:
        pod = self.api.store.get(PODS, namespace, name)
        if pod is None:
            raise not_found("", "pods", name)
        return clone(pod)

    @staticmethod
    def _check_container(pod: Obj, container: str | None) -> str | None:
        if container is not None and container not in container_names(pod):
            raise bad_request(f"container {container} is not valid for pod "
                              f"{pod['metadata']['name']}")
        return container
