"""SyntheticApp: one namespace's service, really serving HTTP on its own loopback port.

Gatekeeper's HTTP probes (`/health`, `/api/franchises/lsu-tigers`) need a server that
answers, fails with the profile's error ratio, is as slow as the profile says and can turn
unhealthy. What it serves is counted into the same metric families as the fleet's, at its
own `/metrics`. `SyntheticFleet` (virtual traffic for many namespaces) is re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from telemetry_sandbox.background import BackgroundLoop
from telemetry_sandbox.exposition import (
    CONTENT_TYPE,
    DURATION_HELP,
    DURATION_METRIC,
    REQUESTS_HELP,
    REQUESTS_METRIC,
    CounterSample,
    HistogramState,
    render_counter_family,
    render_histogram_family,
)
from telemetry_sandbox.latency import DEFAULT_BUCKETS, golden_sequence
from telemetry_sandbox.loglines import (
    LogBuffer,
    LogCallback,
    access_line,
    error_line,
    exception_line,
)
from telemetry_sandbox.loopback import LOOPBACK_HOST, LoopbackAddress, require_loopback_host
from telemetry_sandbox.profile import TrafficProfile, weighted_choice
from telemetry_sandbox.synthetic_fleet import SyntheticFleet

__all__ = ["FRANCHISES", "SyntheticApp", "SyntheticFleet"]

FRANCHISES: dict[str, dict[str, Any]] = {
    "lsu-tigers": {
        "id": "lsu-tigers",
        "name": "LSU Tigers",
        "league": "NCAA",
        "city": "Baton Rouge",
    },
    "saints": {
        "id": "saints",
        "name": "New Orleans Saints",
        "league": "NFL",
        "city": "New Orleans",
    },
}

_LOG = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SyntheticApp(LoopbackAddress):
    """An aiohttp service for one namespace with configurable errors, latency and health.

    Use `async with SyntheticApp(...)` inside a running loop, or `with SyntheticApp(...)`
    from sync code (it then runs on its own background loop thread).
    """

    def __init__(
        self,
        namespace: str,
        profile: TrafficProfile | None = None,
        *,
        service: str = "api",
        healthy: bool = True,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        on_log_lines: LogCallback | None = None,
        log_buffer_lines: int = 2000,
        max_latency_s: float = 30.0,
        bounds: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.namespace = namespace
        self.profile = profile or TrafficProfile()
        self.service = service
        self.healthy = healthy
        self.unhealthy_reason = ""
        self.host = require_loopback_host(host)
        self._requested_port = port
        self.on_log_lines = on_log_lines
        self.max_latency_s = max_latency_s
        self.bounds = bounds
        self._log = LogBuffer(log_buffer_lines)
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._histogram = HistogramState(bounds)
        self._error_due = 0.0
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._background: BackgroundLoop | None = None

    # -- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._port is None:
            raise RuntimeError("SyntheticApp is not started")
        return self._port

    # -- async lifecycle --------------------------------------------------------------------

    async def start(self) -> Self:
        """Serve on the current event loop."""
        if self._runner is not None:
            return self
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop serving (bounded by aiohttp's shutdown timeout)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- sync lifecycle (own loop thread) ---------------------------------------------------

    def start_in_thread(self) -> Self:
        """Serve from a dedicated background loop thread (for sync fixtures and scripts)."""
        if self._background is None:
            self._background = BackgroundLoop(f"synthetic-app-{self.namespace}").start()
            try:
                self._background.run(self.start())
            except BaseException:
                self.stop_in_thread()
                raise
        return self

    def stop_in_thread(self) -> None:
        """Stop serving and end the background thread."""
        background, self._background = self._background, None
        if background is not None:
            try:
                background.run(self.stop(), timeout_s=10)
            finally:
                background.stop()

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_in_thread()

    # -- behaviour --------------------------------------------------------------------------

    def set_profile(self, profile: TrafficProfile | None = None, **fields: Any) -> TrafficProfile:
        """Change error ratio, latency... (`fields` override `profile` or the current one)."""
        base = profile or self.profile
        self.profile = base.replace(**fields) if fields else base
        return self.profile

    def set_healthy(self, healthy: bool, reason: str = "franchise-store unreachable") -> None:
        """Flip /health and /health/ready between 200 Healthy and 503 Unhealthy."""
        self.healthy = healthy
        self.unhealthy_reason = "" if healthy else reason

    def logs(self, limit: int | None = None) -> list[str]:
        """Log lines written so far (bounded buffer)."""
        return self._log.lines(limit)

    def served_by_status(self) -> dict[str, int]:
        """API requests served so far, by status code."""
        totals: dict[str, int] = defaultdict(int)
        for (_service, _method, status), count in self._requests.items():
            totals[status] += count
        return dict(totals)

    def render_metrics(self) -> str:
        """The /metrics body."""
        labels = {"namespace": self.namespace, "service": self.service}
        counters = [
            CounterSample({**labels, "method": method, "status": status}, count)
            for (_service, method, status), count in sorted(self._requests.items())
        ]
        return render_counter_family(
            REQUESTS_METRIC, REQUESTS_HELP, counters
        ) + render_histogram_family(
            DURATION_METRIC, DURATION_HELP, [self._histogram.sample(labels)]
        )

    # -- aiohttp ----------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp application (also usable with aiohttp's TestServer)."""
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/health/ready", self._health)
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/franchises", self._api(self._franchises))
        app.router.add_get("/api/franchises/{franchise}", self._api(self._franchise))
        app.router.add_route("*", "/api/{tail:.*}", self._api(self._generic))
        return app

    async def _health(self, _request: web.Request) -> web.Response:
        status = "Healthy" if self.healthy else "Unhealthy"
        checks = [
            {"name": "self", "status": "Healthy", "description": None},
            {
                "name": "franchise-store",
                "status": status,
                "description": self.unhealthy_reason or None,
            },
        ]
        body = {"status": status, "namespace": self.namespace, "checks": checks}
        return web.json_response(body, status=200 if self.healthy else 503)

    async def _live(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "Healthy", "namespace": self.namespace})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.render_metrics().encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def _franchises(self, request: web.Request) -> web.Response:
        items = [self._franchise_body(request, key) for key in FRANCHISES]
        return web.json_response({"items": items, "links": {"self": str(request.url)}})

    async def _franchise(self, request: web.Request) -> web.Response:
        key = request.match_info["franchise"]
        if key not in FRANCHISES:
            return web.json_response({"error": f"unknown franchise {key!r}"}, status=404)
        return web.json_response(self._franchise_body(request, key))

    async def _generic(self, request: web.Request) -> web.Response:
        status = 201 if request.method == "POST" else 200
        return web.json_response(
            {"namespace": self.namespace, "path": request.path, "method": request.method},
            status=status,
        )

    def _franchise_body(self, request: web.Request, key: str) -> dict[str, Any]:
        self_url = f"{request.scheme}://{request.host}/api/franchises/{key}"
        return {**FRANCHISES[key], "namespace": self.namespace, "links": {"self": self_url}}

    def _api(self, handler: Handler) -> Handler:
        """Wrap an API handler: injected errors and latency, counting, logging."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            profile = self.profile
            self._seq += 1
            seq = self._seq
            latency = min(profile.distribution.sample(golden_sequence(seq)), self.max_latency_s)
            self._error_due += profile.error_ratio
            failed = self._error_due >= 1.0 - 1e-9
            if failed:
                self._error_due -= 1.0
            await asyncio.sleep(latency)
            if failed:
                status_text = weighted_choice(profile.error_statuses, golden_sequence(seq * 5))
                response: web.StreamResponse = web.json_response(
                    {"error": "injected failure", "namespace": self.namespace},
                    status=int(status_text),
                )
            else:
                response = await handler(request)
            response.headers["X-Served-By"] = self.namespace
            elapsed = time.perf_counter() - started
            self._record(request, response.status, elapsed, failed, seq)
            return response

        return wrapped

    def _record(
        self, request: web.Request, status: int, elapsed: float, failed: bool, seq: int
    ) -> None:
        self._requests[(self.service, request.method, str(status))] += 1
        self._histogram.observe(elapsed)
        wall = time.time()
        args = (wall, self.service, request.method, request.path)
        if not failed:
            line = access_line(*args, status, elapsed, seq)
        elif golden_sequence(seq * 11) >= self.profile.error_log_share:
            line = access_line(*args, status, elapsed, seq)
        elif seq % 3 == 0:
            line = exception_line(*args, seq)
        else:
            line = error_line(*args, status, elapsed, seq)
        self._log.extend([line])
        if self.on_log_lines is not None:
            try:
                self.on_log_lines(self.namespace, [line])
            except Exception:  # noqa: BLE001 - a broken consumer must not fail requests
                _LOG.exception("on_log_lines callback failed")

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"<SyntheticApp {self.namespace} {where} healthy={self.healthy}>"
