"""The emulator object: storage, controllers, logs, faults and request log in one place,
with a Python API mirroring the `/_emulator/` admin endpoints for in-process tests."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .audit import RequestLog
from .authentication import ServiceAccountTokens
from .controllers import WorkloadControllers
from .errors import bad_request
from .faults import FaultInjector
from .jobs import JobController
from .kubeconfig import kubeconfig as build_kubeconfig
from .kubeconfig import write_kubeconfig as write_kubeconfig_file
from .kubelet import Kubelet, container_names
from .loader import Manifests, load_objects
from .operations import ObjectAPI
from .podlogs import PodLogs
from .programs import ContainerPrograms, Run
from .resources import PODS, ResourceType
from .store import Event, ObjectStore

Obj = dict[str, Any]
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Emulator:
    """An emulated Kubernetes API server's state and behaviour (HTTP lives in `app`)."""

    def __init__(
        self,
        *,
        ready_delay: float = 0.0,
        ready_on_load: bool = True,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 1800.0,
        history_size: int = 10_000,
        log_lines_per_container: int = 100_000,
        request_log_size: int = 2000,
        seed: int = 0,
        system_namespaces: bool = True,
        clock_offset: float = 0.0,
        job_retry_delay: float = 0.0,
        watch_lag: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.watch_lag = watch_lag
        """Seconds each watch event is held before it is sent: a real API server's watch
        cache trails its writes (a client that reads its own writes from a watch sees
        them late). 0: at once."""
        self.clock_offset = clock_offset
        """Seconds the server's clock is ahead of this machine's (negative: behind): object
        timestamps, log timestamps and the `Date` header all follow it, as on a real API
        server whose node clock is skewed."""
        self.store = ObjectStore(history_size=history_size)
        self.api = ObjectAPI(self.store, rng=self.rng, clock=self.clock)
        self.logs = PodLogs(max_lines_per_container=log_lines_per_container, clock=self.clock)
        self.programs = ContainerPrograms()
        """What each image does when a Job's pod runs it (`script_image`)."""
        self.kubelet = Kubelet(self.api, ready_delay=ready_delay, rng=self.rng,
                               on_container_restart=self.logs.rotate, programs=self.programs,
                               on_output=self._container_output)
        self.controllers = WorkloadControllers(self.api, rng=self.rng)
        self.jobs = JobController(self.api, rng=self.rng, retry_delay=job_retry_delay)
        self.store.add_listener(self._on_event)
        self.faults = FaultInjector(seed)
        self.requests = RequestLog(request_log_size)
        self.tokens = ServiceAccountTokens()
        """Service-account tokens a TokenReview authenticates (`tokens.issue`)."""
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.ready_on_load = ready_on_load
        self.absent_groups: set[str] = set()
        """API groups served as if their CRDs were not installed (e.g. `traefik.containo.us`
        on a Traefik v3 cluster): left out of `/apis`, and 404 for every path under them."""
        self.url: str | None = None
        self.closing = False
        self._changed: asyncio.Event | None = None
        self._closed: asyncio.Event | None = None
        self.store.on_watches_changed = self._notify
        if system_namespaces:  # every real cluster has them; `default` is the implicit one
            for name in SYSTEM_NAMESPACES:
                self.api.ensure_namespace(name)

    def clock(self) -> float:
        """The server's time: this machine's plus `clock_offset`."""
        return time.time() + self.clock_offset

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _container_output(self, namespace: str, pod: str, container: str,
                          lines: tuple[str, ...]) -> None:
        self.logs.append(namespace, pod, container, lines)

    def _on_event(self, event: Event) -> None:
        self._notify()
        if event.type == "DELETED" and event.resource.key == PODS.key:
            meta = event.object["metadata"]
            self.logs.forget_pod(meta["namespace"], meta["name"])

    # ---- configuration -----------------------------------------------------------------

    @property
    def ready_delay(self) -> float:
        """Seconds a new pod stays Running-but-not-Ready (0 = Ready at once)."""
        return self.kubelet.ready_delay

    @ready_delay.setter
    def ready_delay(self, value: float) -> None:
        if value < 0:
            raise ValueError("ready_delay must not be negative")
        self.kubelet.ready_delay = float(value)

    # ---- objects -----------------------------------------------------------------------

    def _resource(self, api_version: str, kind: str) -> ResourceType:
        rt = self.api.registry.by_kind(api_version, kind)
        if rt is None:
            raise KeyError(f"no resource for apiVersion={api_version} kind={kind}")
        return rt

    def load(self, source: Manifests, *, ready: bool | None = None) -> list[Obj]:
        """Load manifests; pods of loaded Deployments are Ready at once unless `ready`
        (default: the `ready_on_load` setting) is False."""
        self.kubelet.force_ready = self.ready_on_load if ready is None else ready
        try:
            return load_objects(self.api, source)
        finally:
            self.kubelet.force_ready = False

    def get_object(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        """A copy of one stored object, or None."""
        rt = self._resource(api_version, kind)
        obj = self.store.get(rt, namespace if rt.namespaced else None, name)
        return obj

    def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> list[Obj]:
        """Copies of stored objects (all namespaces when `namespace` is None)."""
        rt = self._resource(api_version, kind)
        items: list[Obj] = self.api.list(rt, namespace, label_selector=label_selector)["items"]
        return items

    def put_object(self, obj: Mapping[str, Any]) -> Obj:
        """Create or overwrite an object (bypassing resourceVersion checks)."""
        return self.api.put(obj)

    def delete_object(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Obj:
        """Delete an object (dependents are garbage-collected)."""
        rt = self._resource(api_version, kind)
        return self.api.delete(rt, namespace if rt.namespaced else None, name)

    def pods(self, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        """Pods, optionally filtered by namespace and label selector."""
        items: list[Obj] = self.api.list(PODS, namespace, label_selector=label_selector)["items"]
        return items

    # ---- pods: logs, readiness, restarts ------------------------------------------------

    def append_logs(
        self,
        namespace: str,
        pod: str,
        lines: Iterable[str],
        *,
        container: str | None = None,
        timestamp: float | None = None,
    ) -> int:
        """Append lines to a container's log (default: the pod's first container)."""
        obj = self.api.get(PODS, namespace, pod)
        names = container_names(obj)
        target = container or (names[0] if names else "")
        if target not in names:
            raise bad_request(f"container {target} is not valid for pod {pod}")
        return self.logs.append(namespace, pod, target, lines, timestamp=timestamp)

    def append_logs_by_selector(
        self,
        namespace: str,
        label_selector: str,
        lines: Iterable[str],
        *,
        container: str | None = None,
        timestamp: float | None = None,
    ) -> list[str]:
        """Append the same lines to every matching pod; returns the pod names."""
        batch = list(lines)
        names = []
        for pod in self.pods(namespace, label_selector):
            name = pod["metadata"]["name"]
            if container is None or container in container_names(pod):
                self.append_logs(namespace, name, batch, container=container, timestamp=timestamp)
                names.append(name)
        return names

    def script_image(self, image: str, runs: Iterable[Run | Mapping[str, Any]]) -> None:
        """What IMAGE does each time a run-to-completion pod (a Job's) starts it: the next
        run's log lines, then its exit code after its seconds; the last run repeats.
        A run is a `Run` or `{"exitCode": 1, "seconds": 0.2, "logs": [...]}`."""
        self.programs.script(image, [r if isinstance(r, Run) else Run.from_dict(r)
                                     for r in runs])

    def set_pod_ready(
        self, namespace: str, pod: str, ready: bool = True, *, container: str | None = None
    ) -> Obj:
        """Force a pod's (or one container's) readiness; Deployment status follows."""
        return self.kubelet.set_ready(namespace, pod, ready, container)

    def restart_container(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None = None,
        count: int = 1,
        ready: bool | None = None,
    ) -> Obj:
        """Simulate container crashes: bump restartCount; old logs become `previous`."""
        return self.kubelet.restart_container(namespace, pod, container, count, ready=ready)

    # ---- watches -----------------------------------------------------------------------

    @property
    def open_watches(self) -> int:
        """Number of open watch connections (tests wait for a client to be watching)."""
        return self.store.open_watches

    def drop_watches(self) -> int:
        """Close every open watch connection; returns how many there were."""
        return self.store.drop_watches()

    def expire_watches(self, *, drop: bool = False) -> str:
        """Compact history: watches from any earlier resourceVersion now get 410 Gone.
        With `drop`, open watches are closed too, so clients hit the 410 right away."""
        compacted = self.store.expire_history()
        if drop:
            self.store.drop_watches()
        return compacted

    # ---- connection --------------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default") -> Obj:
        """A kubeconfig document for this emulator (needs `url`, i.e. a running server)."""
        if self.url is None:
            raise RuntimeError("the emulator is not serving HTTP yet")
        return build_kubeconfig(self.url, namespace=namespace)

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig usable with `kubernetes_asyncio.config.load_kube_config`."""
        if self.url is None:
            raise RuntimeError("the emulator is not serving HTTP yet")
        return write_kubeconfig_file(self.url, path, namespace=namespace)

    # ---- waiting -----------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], *, within: float = 5.0) -> None:
        """Wait until `predicate()` holds, re-checking after every write and every watch
        opened or closed (no polling); TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            while not predicate():
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

    async def wait_deployment_ready(
        self, namespace: str, name: str, *, within: float = 5.0
    ) -> Obj:
        """Wait until all desired pods of a Deployment are Ready; returns the Deployment."""
        def ready() -> bool:
            deploy = self.get_object("apps/v1", "Deployment", name, namespace)
            if deploy is None:
                return False
            desired = deploy["spec"].get("replicas", 1)
            status = deploy.get("status") or {}
            return (status.get("observedGeneration", 0) >= deploy["metadata"]["generation"]
                    and all(status.get(k, 0) == desired
                            for k in ("replicas", "updatedReplicas", "readyReplicas")))

        await self.wait_for(ready, within=within)
        deploy = self.get_object("apps/v1", "Deployment", name, namespace)
        assert deploy is not None
        return deploy

    async def pause(self, seconds: float) -> bool:
        """Sleep for an injected delay; returns False if cut short by shutdown."""
        if self._closed is None:
            self._closed = asyncio.Event()
        if self.closing:
            return False
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        """Stop timers, end open watches and injected delays (server shutdown)."""
        self.closing = True
        if self._closed is not None:
            self._closed.set()
        self.kubelet.close()
        self.jobs.close()
        self.store.drop_watches()
        self.logs.wake()
