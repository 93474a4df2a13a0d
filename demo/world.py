"""The world outside gatekeeper: what each release does once it runs, who sends it traffic,
and where its log lines go.

A release is an image tag with a behaviour (error ratio, latency, maybe a defect that only
shows under production traffic). Like Traefik, the traffic model reads the live route (the
TraefikService gatekeeper switches, through `telemetry_sandbox.traefik_follow`) and sends
production traffic where its weights say, to the active namespace only unless gatekeeper
splits it: the dark one gets no user traffic, as in the design document. Its evidence comes
from gatekeeper's own synthetic load (the pair's `load`, gatekeeper.drivers.load) and, while
gatekeeper mirrors, from copies of production requests: like Traefik, the model copies the
mirrors' percent of the requests to the dark and discards its answers. Like the kubelet, it
files each log line under a Ready pod. The story only changes images, so every reaction in
the demo is gatekeeper's own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass

from demo.cluster import NAMESPACES, Cluster
from telemetry_sandbox import SyntheticApp, TrafficProfile, run_load
from telemetry_sandbox.background import BackgroundLoop
from telemetry_sandbox.httpjson import HTTPStatusError
from telemetry_sandbox.traefik_follow import Dispatch, MirrorCounter

_LOG = logging.getLogger(__name__)
API_PATHS = ("/api/franchises/lsu-tigers", "/api/franchises", "/api/standings")


@dataclass(frozen=True)
class Release:
    """How one image tag behaves."""

    version: str
    title: str
    error_ratio: float = 0.001
    p50_s: float = 0.06
    p99_s: float = 0.40
    degrades_after_s: float | None = None
    """Seconds of production traffic after which a latent defect shows (None: never)."""
    degraded_error_ratio: float = 0.30
    degraded_p99_s: float = 1.5

    def profile(self, *, degraded: bool) -> TrafficProfile:
        """The app profile this release serves with."""
        if degraded:
            return TrafficProfile(error_ratio=self.degraded_error_ratio,
                                  latency_p50_s=self.p50_s * 3, latency_p99_s=self.degraded_p99_s)
        return TrafficProfile(error_ratio=self.error_ratio, latency_p50_s=self.p50_s,
                              latency_p99_s=self.p99_s)


@dataclass(frozen=True)
class Load:
    """Requests per second of production traffic on the active namespace (the dark one's
    validation load is gatekeeper's: `VALIDATION_RPS` in demo.stack)."""

    active_rps: float = 25.0


class Traffic:
    """Keeps each namespace's app serving its release and sends it the right load."""

    def __init__(
        self,
        cluster: Cluster,
        apps: Mapping[str, SyntheticApp],
        releases: Mapping[str, Release],
        load: Load,
        *,
        deadline: float,
    ) -> None:
        self.cluster = cluster
        self.apps = dict(apps)
        self.releases = dict(releases)
        self.load = load
        self.deadline = deadline
        self.degraded: set[str] = set()
        self.sent: dict[str, int] = defaultdict(int)
        self.mirrored: dict[str, int] = defaultdict(int)
        """Copies of production requests sent per namespace (their answers discarded)."""
        self._plan = Dispatch()
        self._mirrors = MirrorCounter()
        self._active_since: dict[str, tuple[str, float]] = {}
        self._targets: dict[str, float] = {}
        self._stop = threading.Event()
        self._loop = BackgroundLoop("demo-load")
        self._thread = threading.Thread(target=self._follow, name="demo-traffic", daemon=True)

    def start(self) -> Traffic:
        """Start following the cluster and sending load (both stop at the deadline)."""
        self._refresh()
        self._loop.start()
        self._loop.loop.call_soon_threadsafe(lambda: self._loop.loop.create_task(self._send()))
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending load and following the cluster (bounded)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._loop.stop(timeout_s=10)

    def _follow(self) -> None:
        while not self._stop.wait(0.5) and time.time() < self.deadline:
            try:
                self._refresh()
            except (OSError, HTTPStatusError, KeyError, ValueError) as exc:
                _LOG.warning("traffic model could not read the cluster: %s", exc)

    def _refresh(self) -> None:
        plan = self.cluster.dispatch()
        active = max(plan.users, key=lambda ns: plan.users[ns]) if plan.users else ""
        targets: dict[str, float] = {}
        now = time.time()
        for namespace in NAMESPACES:
            view = self.cluster.namespace(namespace)
            release = self.releases.get(view.version)
            if release is None:
                continue
            degraded = False
            if namespace == active:
                since = self._active_since.get(namespace)
                if since is None or since[0] != view.version:
                    since = (view.version, now)
                    self._active_since[namespace] = since
                degrades = release.degrades_after_s
                degraded = degrades is not None and now - since[1] >= degrades
            else:
                self._active_since.pop(namespace, None)
            if degraded:
                self.degraded.add(release.version)
            profile = release.profile(degraded=release.version in self.degraded)
            app = self.apps[namespace]
            if app.profile != profile:
                app.set_profile(profile)
            if view.ready == 0:
                continue
            if plan.users.get(namespace):
                targets[namespace] = self.load.active_rps * plan.users[namespace]
        self._targets = targets
        self._plan = plan

    def _copies(self) -> dict[str, float]:
        """Mirrored copies for the next one-second slice of production requests, counted
        as Traefik counts them (the demo's requests are GETs without a body)."""
        copies: dict[str, float] = defaultdict(float)
        plan = self._plan
        if not plan.mirrors:
            return {}
        for _request in range(round(sum(self._targets.values()))):
            for namespace in self._mirrors.route(plan):
                copies[namespace] += 1.0
        return dict(copies)

    async def _send(self) -> None:
        """One-second slices of bounded load, re-targeted between slices."""
        while not self._stop.is_set() and time.time() < self.deadline:
            targets = dict(self._targets)
            copies = self._copies()
            sends = [(namespace, rps, self.sent) for namespace, rps in targets.items()]
            sends += [(namespace, rps, self.mirrored) for namespace, rps in copies.items()]
            slices = []
            for namespace, rps, _tally in sends:
                urls = [self.apps[namespace].url + path for path in API_PATHS]
                slices.append(run_load(urls, rps, 1.0, timeout_s=3.0))
            if not slices:
                await asyncio.sleep(0.5)
                continue
            started = time.monotonic()
            results = await asyncio.gather(*slices, return_exceptions=True)
            for (namespace, _rps, tally), result in zip(sends, results, strict=True):
                if isinstance(result, BaseException):
                    _LOG.warning("load slice for %s failed: %s", namespace, result)
                else:
                    tally[namespace] += sum(result.values())  # a copy's answer: discarded
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


class PodLogs:
    """Files the apps' log lines under their namespace's Ready pods, round-robin, in batches
    (gatekeeper's log gate reads them back through the pods/log API)."""

    def __init__(self, cluster: Cluster, *, max_lines: int = 20_000) -> None:
        self.cluster = cluster
        self._pending: deque[tuple[str, str]] = deque(maxlen=max_lines)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-pod-logs", daemon=True)

    def __call__(self, namespace: str, lines: list[str]) -> None:
        """The apps' `on_log_lines` callback: queue only, never block a request."""
        self._pending.extend((namespace, line) for line in lines)

    def start(self) -> PodLogs:
        """Start flushing every half second."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Flush once more and stop (bounded)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._flush()
            except (OSError, HTTPStatusError, KeyError, ValueError) as exc:
                _LOG.warning("could not append pod logs: %s", exc)

    def _flush(self) -> None:
        batches: dict[str, list[str]] = defaultdict(list)
        while self._pending:
            namespace, line = self._pending.popleft()
            batches[namespace].append(line)
        for namespace, lines in batches.items():
            pods = self.cluster.ready_pods(namespace)
            if not pods:
                continue
            for index, pod in enumerate(pods):
                share = lines[index :: len(pods)]
                if not share:
                    continue
                try:
                    self.cluster.append_logs(namespace, pod, share)
                except HTTPStatusError as exc:
                    if exc.status != 404:  # 404: the pod was just replaced; its lines go
                        raise
