"""StackExporter: the metric names of the users' stack, from one loopback /metrics endpoint.

kube-prometheus-stack scrapes cAdvisor (through the kubelet), kube-state-metrics, Traefik and
the applications; ASP.NET Core 8+ exports OpenTelemetry's HTTP semantic conventions. This
exporter serves synthetic series under exactly those names and labels, computed from elapsed
time, so a real Prometheus scraping it (with `honor_labels`, as kube-prometheus-stack does for
these jobs) answers the shipped rule sets' and dashboards' queries:

* cAdvisor: `container_memory_working_set_bytes`, `container_cpu_usage_seconds_total`,
  `container_cpu_cfs_periods_total`, `container_cpu_cfs_throttled_periods_total`, per
  container, plus the pod-level cgroup series (`container=""`, `image=""`) cAdvisor also
  exports, so a query that forgets to drop them double-counts here as it would for real.
* kube-state-metrics: `kube_pod_info`, `kube_pod_container_status_restarts_total`,
  `kube_pod_container_status_last_terminated_reason{reason="OOMKilled"}`.
* OpenTelemetry HTTP server: `http_server_request_duration_seconds` histogram with
  `http_response_status_code`, `http_request_method`, `http_route`.
* Traefik: `traefik_service_requests_total` and `traefik_service_request_duration_seconds`,
  labelled `service="<namespace>-<service>-<port>@kubernetescrd"`, and `namespace` of the
  Traefik pod itself (the scrape target's namespace), not of the backend.
* An application's database client histogram: `db_client_operation_duration_seconds`.

Nothing here is random: memory jitter follows the golden-ratio sequence, so tests can state
exact expectations. This package must not import `gatekeeper`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from telemetry_sandbox.exposition import (
    CONTENT_TYPE,
    CounterSample,
    HistogramSample,
    format_labels,
    format_value,
    render_counter_family,
    render_histogram_family,
)
from telemetry_sandbox.latency import DEFAULT_BUCKETS, golden_sequence
from telemetry_sandbox.loopback import LOOPBACK_HOST
from telemetry_sandbox.profile import TrafficProfile
from telemetry_sandbox.threaded_http import QuietHandler, ThreadedHTTPService
from telemetry_sandbox.virtual_traffic import VirtualTraffic

__all__ = ["PodResources", "StackExporter", "traefik_service_name"]

Clock = Callable[[], float]
CFS_PERIODS_PER_S = 10.0  # the kernel's default CFS period is 100 ms
OTEL_DURATION_METRIC = "http_server_request_duration_seconds"
TRAEFIK_REQUESTS_METRIC = "traefik_service_requests_total"
TRAEFIK_DURATION_METRIC = "traefik_service_request_duration_seconds"
DB_DURATION_METRIC = "db_client_operation_duration_seconds"


def traefik_service_name(namespace: str, service: str, port: int | str) -> str:
    """How Traefik's Kubernetes CRD provider names a backend: `ns-svc-port@kubernetescrd`."""
    return f"{namespace}-{service}-{port}@kubernetescrd"


@dataclass(frozen=True)
class PodResources:
    """Resource use of every pod of one namespace (all pods alike).

    memory_bytes: working set of each container at the start.
    memory_growth_bytes_per_s: steady growth of each container (a leak); 0 is flat.
    memory_jitter_bytes: amplitude of a deterministic +/- wobble around the line.
    cpu_cores: CPU used by each container, in cores.
    throttled_share: share of CFS periods throttled (needs cpu_limited).
    cpu_limited: containers have a CPU limit, so the CFS counters exist.
    oom_kills: how many times each container is OOMKilled (its restart count too); the
      kills happen `oom_after_s` after set_resources(), so increase() sees them.
    """

    pods: int = 2
    containers: tuple[str, ...] = ("api",)
    memory_bytes: float = 200e6
    memory_growth_bytes_per_s: float = 0.0
    memory_jitter_bytes: float = 0.0
    cpu_cores: float = 0.2
    throttled_share: float = 0.0
    cpu_limited: bool = True
    oom_kills: int = 0
    oom_after_s: float = 3.0

    def __post_init__(self) -> None:
        if self.pods < 1 or not self.containers:
            raise ValueError("PodResources needs at least one pod and one container")
        if not 0.0 <= self.throttled_share <= 1.0:
            raise ValueError(f"throttled_share must be in [0, 1]: {self.throttled_share}")
        if self.memory_bytes <= 0 or self.cpu_cores < 0 or self.oom_kills < 0:
            raise ValueError("memory_bytes > 0, cpu_cores >= 0 and oom_kills >= 0 are required")


@dataclass
class _Resources:
    spec: PodResources
    started: float
    last: float
    cpu_seconds: float = 0.0
    periods: float = 0.0
    throttled: float = 0.0
    scrapes: int = 0

    def advance(self, now: float) -> None:
        elapsed = max(0.0, now - self.last)
        self.last = now
        self.cpu_seconds += self.spec.cpu_cores * elapsed
        if self.spec.cpu_limited:
            self.periods += CFS_PERIODS_PER_S * elapsed
            self.throttled += CFS_PERIODS_PER_S * elapsed * self.spec.throttled_share

    def oom_kills(self, now: float) -> int:
        return self.spec.oom_kills if now - self.started >= self.spec.oom_after_s else 0

    def memory(self, now: float) -> float:
        wobble = (2.0 * golden_sequence(self.scrapes) - 1.0) * self.spec.memory_jitter_bytes
        grown = self.spec.memory_growth_bytes_per_s * (now - self.started)
        return max(1.0, self.spec.memory_bytes + grown + wobble)


@dataclass
class _Traffic:
    traffic: VirtualTraffic
    labels: Mapping[str, str] = field(default_factory=dict)


class StackExporter(ThreadedHTTPService):
    """Synthetic cAdvisor, kube-state-metrics, OpenTelemetry, Traefik and DB-client series."""

    def __init__(
        self,
        *,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        warm_start_s: float = 300.0,
        traefik_namespace: str = "traefik",
        clock: Clock = time.monotonic,
    ) -> None:
        self._init_http(host, port)
        self.warm_start_s = warm_start_s
        self.traefik_namespace = traefik_namespace
        self._clock = clock
        self._lock = threading.RLock()
        self._resources: dict[str, _Resources] = {}
        self._otel: dict[str, _Traffic] = {}
        self._traefik: dict[str, _Traffic] = {}
        self._db: dict[str, _Traffic] = {}

    # -- lifecycle: start(), stop(), address and the context manager from ThreadedHTTPService ----

    def _handler(self) -> type[QuietHandler]:
        return _handler_for(self)

    # -- what to export ---------------------------------------------------------------------

    def set_resources(self, namespace: str, spec: PodResources) -> None:
        """Set a namespace's pods; memory growth is counted from this call."""
        with self._lock:
            now = self._clock()
            current = self._resources.get(namespace)
            if current is None:
                current = _Resources(spec, started=now, last=now - self.warm_start_s)
                self._resources[namespace] = current
            current.advance(now)
            current.spec, current.started = spec, now

    def set_otel_http(self, namespace: str, profile: TrafficProfile) -> None:
        """Serve `profile`'s traffic as OpenTelemetry's `http.server.request.duration`."""
        self._set(self._otel, namespace, profile, {"namespace": namespace})

    def set_traefik(self, service: str, profile: TrafficProfile) -> None:
        """Serve `profile`'s traffic as Traefik's metrics of backend `service`."""
        self._set(self._traefik, service, profile,
                  {"namespace": self.traefik_namespace, "service": service})

    def set_db(self, namespace: str, profile: TrafficProfile) -> None:
        """Serve `profile` (rps = operations/s, services = operation names) as DB-client ops."""
        self._set(self._db, namespace, profile, {"namespace": namespace})

    def remove(self, *names: str) -> None:
        """Forget namespaces and Traefik services: their series vanish (stale in Prometheus)."""
        with self._lock:
            for name in names:
                for store in (self._resources, self._otel, self._traefik, self._db):
                    store.pop(name, None)

    def _set(self, store: dict[str, _Traffic], key: str, profile: TrafficProfile,
             labels: Mapping[str, str]) -> None:
        with self._lock:
            now = self._clock()
            current = store.get(key)
            if current is None:
                traffic = VirtualTraffic(key, profile, now=now - self.warm_start_s)
                traffic.advance(now, time.time(), logs=False)
                store[key] = _Traffic(traffic, dict(labels))
            else:
                current.traffic.set_profile(profile, now, time.time())

    # -- rendering --------------------------------------------------------------------------

    def render_metrics(self) -> str:
        """The /metrics body."""
        with self._lock:
            now = self._clock()
            for state in self._resources.values():
                state.advance(now)
            for store in (self._otel, self._traefik, self._db):
                for entry in store.values():
                    entry.traffic.advance(now, time.time(), logs=False)
            parts = [
                self._render_cadvisor(now),
                self._render_kube_state(now),
                render_histogram_family(
                    OTEL_DURATION_METRIC,
                    "Duration of HTTP server requests (OpenTelemetry semantic conventions).",
                    [s for key in sorted(self._otel) for s in _otel_samples(self._otel[key])]),
                render_counter_family(
                    TRAEFIK_REQUESTS_METRIC, "How many HTTP requests processed on a service.",
                    [s for key in sorted(self._traefik)
                     for s in _traefik_counters(self._traefik[key])]),
                render_histogram_family(
                    TRAEFIK_DURATION_METRIC, "How long it took to process the request on a "
                    "service, partitioned by status code, protocol, and method.",
                    [s for key in sorted(self._traefik)
                     for s in _status_histograms(self._traefik[key], _traefik_labels)]),
                render_histogram_family(
                    DB_DURATION_METRIC, "Duration of database client operations.",
                    [s for key in sorted(self._db) for s in _db_samples(self._db[key])]),
            ]
            for state in self._resources.values():
                state.scrapes += 1
        return "".join(parts)

    def _render_cadvisor(self, now: float) -> str:
        memory, cpu, periods, throttled = [], [], [], []
        for namespace in sorted(self._resources):
            state = self._resources[namespace]
            spec = state.spec
            working_set = state.memory(now)
            for index in range(spec.pods):
                pod = f"api-{index}"
                per_container = [({"container": c, "image": f"registry.local/{c}:1"}, 1.0)
                                 for c in spec.containers]
                # cAdvisor's pod-level cgroup: the sum of the containers, no container/image.
                pod_level = ({"container": "", "image": ""}, float(len(spec.containers)))
                for extra, factor in (*per_container, pod_level):
                    labels = {"namespace": namespace, "pod": pod, **extra}
                    memory.append(f"container_memory_working_set_bytes{format_labels(labels)} "
                                  f"{format_value(round(working_set * factor))}")
                    cpu.append(CounterSample(labels, round(state.cpu_seconds * factor, 6)))
                    if spec.cpu_limited:
                        periods.append(CounterSample(labels, math.floor(state.periods * factor)))
                        throttled.append(
                            CounterSample(labels, math.floor(state.throttled * factor)))
        gauge = ("# HELP container_memory_working_set_bytes Current working set in bytes.\n"
                 "# TYPE container_memory_working_set_bytes gauge\n"
                 + "".join(line + "\n" for line in memory))
        return (
            gauge
            + render_counter_family("container_cpu_usage_seconds_total",
                                    "Cumulative cpu time consumed in seconds.", cpu)
            + render_counter_family("container_cpu_cfs_periods_total",
                                    "Number of elapsed enforcement period intervals.", periods)
            + render_counter_family("container_cpu_cfs_throttled_periods_total",
                                    "Number of throttled period intervals.", throttled)
        )

    def _render_kube_state(self, now: float) -> str:
        info, restarts, reasons = [], [], []
        for namespace in sorted(self._resources):
            state = self._resources[namespace]
            spec, kills = state.spec, state.oom_kills(now)
            for index in range(spec.pods):
                pod = f"api-{index}"
                info.append({"namespace": namespace, "pod": pod, "node": "node-1",
                             "created_by_kind": "ReplicaSet"})
                for container in spec.containers:
                    labels = {"namespace": namespace, "pod": pod, "container": container}
                    restarts.append(CounterSample(labels, kills))
                    if kills:
                        reasons.append({**labels, "reason": "OOMKilled"})

        def gauge(name: str, help_text: str, label_sets: list[dict[str, str]]) -> str:
            lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f"{name}{format_labels(labels)} 1" for labels in label_sets]
            return "\n".join(lines) + "\n"

        return (
            gauge("kube_pod_info", "Information about pod.", info)
            + render_counter_family("kube_pod_container_status_restarts_total",
                                    "The number of container restarts per container.", restarts)
            + gauge("kube_pod_container_status_last_terminated_reason",
                    "Describes the last reason the container was in terminated state.", reasons)
        )


def _status_histograms(
    entry: _Traffic, label_for: Callable[[Mapping[str, str], str, str, str], dict[str, str]]
) -> list[HistogramSample]:
    """One histogram series per (service, method, status), buckets from the profile."""
    traffic = entry.traffic
    cumulative_share = traffic.profile.distribution.cumulative
    mean = traffic.profile.distribution.mean()
    samples = []
    for counter in traffic.counter_samples():
        count = counter.value
        labels = label_for(entry.labels, counter.labels["service"], counter.labels["method"],
                           counter.labels["status"])
        samples.append(HistogramSample(
            labels, DEFAULT_BUCKETS,
            [min(count, math.floor(count * share + 0.5)) for share in cumulative_share],
            round(count * mean, 6), count))
    return samples


def _otel_labels(base: Mapping[str, str], service: str, method: str,
                 status: str) -> dict[str, str]:
    return {**base, "http_request_method": method, "http_response_status_code": status,
            "http_route": f"/api/{service}", "network_protocol_version": "1.1",
            "url_scheme": "http"}


def _traefik_labels(base: Mapping[str, str], service: str, method: str,
                    status: str) -> dict[str, str]:
    return {**base, "code": status, "method": method, "protocol": "http"}


def _otel_samples(entry: _Traffic) -> list[HistogramSample]:
    return _status_histograms(entry, _otel_labels)


def _traefik_counters(entry: _Traffic) -> list[CounterSample]:
    return [CounterSample(_traefik_labels(entry.labels, c.labels["service"], c.labels["method"],
                                          c.labels["status"]), c.value)
            for c in entry.traffic.counter_samples()]


def _db_samples(entry: _Traffic) -> list[HistogramSample]:
    out = []
    for sample in entry.traffic.histogram_samples():
        labels = {**entry.labels, "db_system_name": "postgresql",
                  "db_operation_name": sample.labels["service"]}
        out.append(HistogramSample(labels, sample.bounds, sample.cumulative, sample.sum,
                                   sample.count))
    return out


def _handler_for(exporter: StackExporter) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/metrics":
                self.send_body(404, "text/plain", b"not found\n")
                return
            self.send_body(200, CONTENT_TYPE, exporter.render_metrics().encode())

    return Handler
