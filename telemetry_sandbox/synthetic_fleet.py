"""SyntheticFleet: one loopback /metrics endpoint standing in for many namespaces' services.

A session-wide Prometheus scrapes a single target, while each test sets the traffic of its
own namespaces ("green serves 5 % errors, blue 0.1 %") without sending a request. The HTTP
server and a log ticker run in daemon threads, so sync pytest fixtures can hold the fleet
for a whole session.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from telemetry_sandbox.exposition import (
    CONTENT_TYPE,
    DURATION_HELP,
    DURATION_METRIC,
    REQUESTS_HELP,
    REQUESTS_METRIC,
    render_counter_family,
    render_histogram_family,
)
from telemetry_sandbox.latency import DEFAULT_BUCKETS
from telemetry_sandbox.loglines import LogBuffer, LogCallback
from telemetry_sandbox.loopback import LOOPBACK_HOST
from telemetry_sandbox.profile import TrafficProfile
from telemetry_sandbox.threaded_http import QuietHandler, ThreadedHTTPService
from telemetry_sandbox.virtual_traffic import VirtualTraffic

__all__ = ["SyntheticFleet"]

Clock = Callable[[], float]
_LOG = logging.getLogger(__name__)


class SyntheticFleet(ThreadedHTTPService):
    """Virtual traffic for many namespaces, exported at `GET /metrics` on one loopback port.

    Also serves `GET /logs/<namespace>?limit=N` (JSON list of lines) and `GET /-/healthy`.
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        warm_start_s: float = 300.0,
        tick_s: float = 0.5,
        log_buffer_lines: int = 2000,
        on_log_lines: LogCallback | None = None,
        bounds: tuple[float, ...] = DEFAULT_BUCKETS,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        log_lines: bool = True,
    ) -> None:
        """`log_lines=False`: no access/error log lines (`logs` stays empty), for a fleet
        whose logs nobody reads (thousands of namespaces: a quarter of a scrape's work)."""
        self._init_http(host, port)
        self.log_lines = log_lines
        self.warm_start_s = warm_start_s
        self.tick_s = tick_s
        self.log_buffer_lines = log_buffer_lines
        self.on_log_lines = on_log_lines
        self.bounds = bounds
        self._clock = clock
        self._wall = wall_clock
        self._traffic: dict[str, VirtualTraffic] = {}
        self._logs: dict[str, LogBuffer] = {}
        self._lock = threading.RLock()
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle: port, address, url and the context manager from ThreadedHTTPService -------

    def _handler(self) -> type[QuietHandler]:
        return _handler_for(self)

    def start(self) -> Self:
        """Bind the port and start the HTTP and log-ticker threads."""
        if self.running:
            return self
        self._stopping.clear()
        super().start()
        self._ticker = threading.Thread(target=self._tick_loop, name="synthetic-fleet-ticker",
                                        daemon=True)
        self._ticker.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the threads (bounded)."""
        self._stopping.set()
        super().stop()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None

    # -- profiles ---------------------------------------------------------------------------

    def set_profile(
        self,
        namespace: str,
        profile: TrafficProfile | None = None,
        *,
        warm_start_s: float | None = None,
        **fields: Any,
    ) -> TrafficProfile:
        """Set (or update) a namespace's traffic; `fields` override the base profile.

        The base is `profile`, else the namespace's current profile, else the defaults.
        A new namespace starts with `warm_start_s` of history already counted, like a
        service that has been up for a while, so rate() is right from the second scrape.
        """
        with self._lock:
            traffic = self._traffic.get(namespace)
            base = profile or (traffic.profile if traffic else TrafficProfile())
            new_profile = base.replace(**fields) if fields else base
            now, wall = self._clock(), self._wall()
            if traffic is None:
                history = self.warm_start_s if warm_start_s is None else warm_start_s
                traffic = VirtualTraffic(
                    namespace, new_profile, now=now - history, bounds=self.bounds
                )
                traffic.advance(now, wall, logs=False)
                self._traffic[namespace] = traffic
                self._logs[namespace] = LogBuffer(self.log_buffer_lines)
                lines: list[str] = []
            else:
                lines = traffic.set_profile(new_profile, now, wall)
        self._publish_logs(namespace, lines)
        return new_profile

    def profile(self, namespace: str) -> TrafficProfile | None:
        """Current profile of a namespace, None if unknown."""
        with self._lock:
            traffic = self._traffic.get(namespace)
            return traffic.profile if traffic else None

    def remove(self, namespace: str) -> None:
        """Forget a namespace: its series vanish from /metrics (Prometheus marks them stale)."""
        with self._lock:
            self._traffic.pop(namespace, None)
            self._logs.pop(namespace, None)

    def namespaces(self) -> list[str]:
        """Namespaces with a profile, sorted."""
        with self._lock:
            return sorted(self._traffic)

    # -- observations -----------------------------------------------------------------------

    def logs(self, namespace: str, limit: int | None = None) -> list[str]:
        """Buffered log lines of a namespace (advances time first)."""
        self.advance()
        with self._lock:
            buffer = self._logs.get(namespace)
        return buffer.lines(limit) if buffer else []

    def totals_by_status(self, namespace: str) -> dict[str, int]:
        """Requests counted so far for a namespace, by status (advances time first)."""
        self.advance()
        with self._lock:
            traffic = self._traffic.get(namespace)
            return traffic.totals_by_status() if traffic else {}

    def advance(self) -> None:
        """Bring every namespace up to now and publish the log lines that produced."""
        now, wall = self._clock(), self._wall()
        produced: list[tuple[str, list[str]]] = []
        with self._lock:
            for namespace, traffic in self._traffic.items():
                lines = traffic.advance(now, wall, logs=self.log_lines)
                if lines:
                    produced.append((namespace, lines))
        for namespace, lines in produced:
            self._publish_logs(namespace, lines)

    def render_metrics(self) -> str:
        """The /metrics body: both families for every namespace."""
        self.advance()
        with self._lock:
            traffic = [self._traffic[name] for name in sorted(self._traffic)]
            counters = [sample for t in traffic for sample in t.counter_samples()]
            histograms = [sample for t in traffic for sample in t.histogram_samples()]
        return render_counter_family(
            REQUESTS_METRIC, REQUESTS_HELP, counters
        ) + render_histogram_family(DURATION_METRIC, DURATION_HELP, histograms)

    # -- internals --------------------------------------------------------------------------

    def _publish_logs(self, namespace: str, lines: list[str]) -> None:
        if not lines:
            return
        with self._lock:
            buffer = self._logs.get(namespace)
        if buffer is not None:
            buffer.extend(lines)
        callback = self.on_log_lines
        if callback is not None:
            try:
                callback(namespace, lines)
            except Exception:  # noqa: BLE001 - a broken consumer must not stop metrics
                _LOG.exception("on_log_lines callback failed")

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.tick_s):
            self.advance()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<SyntheticFleet {where} namespaces={len(self._traffic)}>"


def _handler_for(fleet: SyntheticFleet) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/metrics":
                self.send_body(200, CONTENT_TYPE, fleet.render_metrics().encode())
            elif parts.path.startswith("/logs/"):
                namespace = parts.path.removeprefix("/logs/")
                limit = parse_qs(parts.query).get("limit", [None])[0]
                lines = fleet.logs(namespace, int(limit) if limit else None)
                self.send_body(200, "application/json", json.dumps(lines).encode())
            elif parts.path in ("/-/healthy", "/-/ready"):
                self.send_body(200, "text/plain", b"OK\n")
            else:
                self.send_body(404, "text/plain", b"not found\n")

    return Handler
