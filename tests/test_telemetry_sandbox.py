"""The telemetry sandbox works for real: Prometheus computes the configured error ratios and
p99 from the synthetic fleet, Alertmanager accepts alerts and calls webhooks, synthetic apps
serve probes, and managed processes pause, resume and stop without leftovers."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import sys
import time

import aiohttp
import pytest
from aiohttp import web

from telemetry_sandbox import (
    LatencyDistribution,
    ManagedProcess,
    ProcessStartError,
    SyntheticApp,
    SyntheticFleet,
    TrafficProfile,
    make_alert,
    run_load,
    values_by_label,
)
from telemetry_sandbox.latency import histogram_quantile

RATIO = (
    'sum by (namespace) (rate(http_requests_total{{status=~"5..",namespace=~"{ns}"}}[10s]))'
    ' / sum by (namespace) (rate(http_requests_total{{namespace=~"{ns}"}}[10s]))'
)
P99 = (
    "histogram_quantile(0.99, sum by (namespace, le) "
    '(rate(http_request_duration_seconds_bucket{{namespace=~"{ns}"}}[10s])))'
)


def _close(value: float, expected: float, rel: float) -> bool:
    return math.isfinite(value) and abs(value - expected) <= rel * expected


# -- Prometheus + fleet ---------------------------------------------------------------------


def test_prometheus_sees_configured_error_ratio_and_p99(prometheus, synthetic_fleet, unique_pair):
    blue, green = unique_pair
    idle = unique_pair.name("idle")
    synthetic_fleet.set_profile(
        green, rps=20000, error_ratio=0.05, latency_p50_s=0.08, latency_p99_s=0.8
    )
    synthetic_fleet.set_profile(
        blue, rps=20000, error_ratio=0.001, latency_p50_s=0.03, latency_p99_s=0.2
    )
    synthetic_fleet.set_profile(idle, rps=0)

    def ratios_ok(result):
        values = values_by_label(result)
        return _close(values.get(green, math.nan), 0.05, 0.02) and _close(
            values.get(blue, math.nan), 0.001, 0.1
        )

    started = time.monotonic()
    ratios = values_by_label(
        prometheus.wait_for(RATIO.format(ns=unique_pair.regex), ratios_ok, timeout_s=15)
    )
    p99 = values_by_label(
        prometheus.wait_for(
            P99.format(ns=unique_pair.regex),
            lambda r: {green, blue} <= set(values_by_label(r)),
            timeout_s=10,
        )
    )
    print(f"ratios stable after {time.monotonic() - started:.1f}s: {ratios} p99={p99}")
    assert _close(p99[green], 0.8, 0.02)  # exact within rounding, not just "in (0.5, 1]"
    assert _close(p99[blue], 0.2, 0.02)
    # rps=0: the counters exist but do not move, so the ratio is 0/0 = NaN.
    assert math.isnan(ratios[idle])


def test_prometheus_reload_adds_scrape_job(prometheus):
    prometheus.add_scrape_target(prometheus.address, job="sandbox-self")
    try:
        config = prometheus.query_config()
        assert "job_name: sandbox-self" in config
    finally:
        prometheus.remove_scrape_job("sandbox-self")
    assert "sandbox-self" not in prometheus.query_config()


def test_paused_prometheus_times_out_and_resume_recovers(prometheus_factory):
    server = prometheus_factory()
    assert server.query("vector(1)")["result"][0]["value"][1] == "1"
    server.pause()
    with pytest.raises(OSError):  # TimeoutError or URLError(timeout)
        server.query("vector(1)", timeout_s=0.5)
    server.resume()
    assert server.query("vector(1)", timeout_s=5)["result"][0]["value"][1] == "1"
    port = server.port
    server.restart()
    assert server.port == port
    assert server.query("vector(2)")["result"][0]["value"][1] == "2"


def test_stop_leaves_no_process_even_when_paused(prometheus_factory):
    server = prometheus_factory()
    pid, port, workdir = server.process.pid, server.port, server.process.workdir
    server.pause()
    server.stop()
    assert not server.process.is_running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket() as sock:  # the port is free again (TIME_WAIT aside, as for Go)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    server.close()
    assert not workdir.exists()


# -- Alertmanager ---------------------------------------------------------------------------


def test_alertmanager_accepts_lists_silences_and_resolves(alertmanager, unique_pair):
    blue, green = unique_pair
    alert = make_alert("SandboxHighErrorRate", green, annotations={"summary": "5xx"})
    alertmanager.post_alerts([alert, make_alert("SandboxHighErrorRate", blue)])
    listed = alertmanager.alerts({"namespace": green})
    assert [a["labels"]["alertname"] for a in listed] == ["SandboxHighErrorRate"]
    assert listed[0]["status"]["state"] == "active"

    silence_id = alertmanager.silence({"namespace": blue}, duration_s=60)
    assert alertmanager.alerts({"namespace": blue})[0]["status"]["state"] == "suppressed"
    alertmanager.expire_silence(silence_id)

    alertmanager.resolve_alerts([alert])
    assert alertmanager.alerts({"namespace": green}) == []


async def test_alertmanager_delivers_webhook(alertmanager_factory, unique_pair):
    _blue, green = unique_pair
    received: asyncio.Queue[dict] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        server = alertmanager_factory()  # starts with the null receiver...
        server.set_webhook(f"http://127.0.0.1:{port}/hook")  # ...then reloads onto ours
        alert = make_alert("SandboxWebhook", green)
        server.post_alerts([alert])
        firing = await asyncio.wait_for(received.get(), timeout=10)
        assert firing["version"] == "4"
        assert firing["status"] == "firing"
        assert firing["groupLabels"] == {"alertname": "SandboxWebhook", "namespace": green}
        assert firing["alerts"][0]["labels"]["namespace"] == green

        server.resolve_alerts([alert])
        while True:  # repeats of "firing" may arrive before the resolution
            payload = await asyncio.wait_for(received.get(), timeout=10)
            if payload["status"] == "resolved":
                break
        assert payload["alerts"][0]["status"] == "resolved"
    finally:
        await runner.cleanup()


# -- Synthetic app and load generator -------------------------------------------------------


async def test_synthetic_app_serves_health_api_errors_and_metrics(unique_pair):
    profile = TrafficProfile(error_ratio=0.25, latency_p50_s=0.002, latency_p99_s=0.01)
    async with (
        SyntheticApp(unique_pair.green, profile) as app,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{app.url}/health") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "Healthy"

        counts = await run_load([f"{app.url}/api/orders"], rps=400, duration_s=10, max_requests=40)
        # Every 4th request fails, deterministically.
        assert sum(counts.values()) == 40
        assert sum(n for status, n in counts.items() if status.startswith("5")) == 10

        app.set_profile(error_ratio=0.0)
        async with http.get(f"{app.url}/api/franchises/lsu-tigers") as response:
            body = await response.json()
            assert response.status == 200
            assert body["links"]["self"] == f"{app.url}/api/franchises/lsu-tigers"
            assert response.headers["X-Served-By"] == unique_pair.green

        app.set_healthy(False)
        async with http.get(f"{app.url}/health") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "Unhealthy"

        async with http.get(f"{app.url}/metrics") as response:
            text = await response.text()
        assert f'http_requests_total{{namespace="{unique_pair.green}",service="api"' in text
        assert "http_request_duration_seconds_bucket{" in text and 'le="+Inf"} 41' in text
        assert any(line.split()[1] == "ERROR" for line in app.logs())


async def test_run_load_is_bounded_and_counts_connection_errors():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    counts = await run_load(
        [f"http://127.0.0.1:{closed_port}/"], rps=50, duration_s=0.4, timeout_s=1
    )
    # Paced at 50/s for 0.4 s: never more than 20 requests, every one refused (how many of
    # the 20 slots a loaded machine gets through is scheduling, not behaviour).
    assert set(counts) == {"connection_error"}
    assert 0 < counts["connection_error"] <= 20


# -- Fast, process-free checks of the building blocks ---------------------------------------


def test_fleet_virtual_counters_follow_the_profile_exactly():
    now = [1000.0]
    fleet = SyntheticFleet(clock=lambda: now[0], wall_clock=lambda: 1.7e9 + now[0])
    fleet.set_profile("x-green", rps=1000, error_ratio=0.001)
    before = fleet.totals_by_status("x-green")
    for _ in range(30):
        now[0] += 0.37
        after = fleet.totals_by_status("x-green")
        assert all(after[k] >= before[k] for k in before)  # counters never go back
    served = {k: after[k] - before[k] for k in after}
    errors = served["500"] + served["503"]
    assert abs(sum(served.values()) - 1000 * 0.37 * 30) <= 1
    assert abs(errors - 0.001 * 1000 * 0.37 * 30) <= 1
    fleet.set_profile("x-green", rps=0)
    frozen = fleet.totals_by_status("x-green")
    now[0] += 10
    assert fleet.totals_by_status("x-green") == frozen
    fleet.remove("x-green")
    assert "x-green" not in fleet.render_metrics()


def test_fleet_logs_are_bounded_and_forwarded():
    now = [0.0]
    forwarded: list[tuple[str, int]] = []
    fleet = SyntheticFleet(
        clock=lambda: now[0],
        log_buffer_lines=100,
        on_log_lines=lambda ns, lines: forwarded.append((ns, len(lines))),
    )
    fleet.set_profile("x-blue", rps=1000, error_ratio=0.05, max_log_lines_per_s=20)
    now[0] += 30
    lines = fleet.logs("x-blue")
    assert len(lines) == 100  # bounded buffer
    assert any(" ERROR " in line for line in lines)
    assert any(" Exception " in line for line in lines)
    assert sum(n for _, n in forwarded) == 30 * (20 + 1)  # 20 error lines/s (cap) + 1 INFO/s


def test_a_fleet_without_log_lines_exports_the_same_metrics():
    """`log_lines=False` (the benchmarks' big fleets) changes what is logged, not the series;
    label values are escaped however often they are rendered."""
    now = [50.0]
    fleets = [SyntheticFleet(clock=lambda: now[0], wall_clock=lambda: 1.7e9 + now[0],
                             log_lines=logs) for logs in (True, False)]
    for fleet in fleets:
        fleet.set_profile('x-"q"\\', rps=400, error_ratio=0.02, max_log_lines_per_s=20)
        fleet.set_profile("x-blue", rps=30, error_ratio=0.0)
    for _ in range(3):
        now[0] += 7.5
        with_logs, without = (fleet.render_metrics() for fleet in fleets)
        assert with_logs == without
    assert 'namespace="x-\\"q\\"\\\\"' in without and 'le="+Inf"' in without
    assert fleets[0].logs("x-blue") and fleets[1].logs("x-blue") == []


@pytest.mark.parametrize(
    ("p50", "p99"), [(0.05, 0.8), (0.03, 0.2), (0.1, 0.3), (0.2, 2.0), (0.01, 4.0)]
)
def test_latency_histogram_quantiles_are_exact(p50, p99):
    dist = LatencyDistribution.from_quantiles(p50, p99)
    cumulative = [1e6 * f for f in dist.cumulative] + [1e6]
    assert histogram_quantile(0.99, dist.bounds, cumulative) == pytest.approx(p99)
    assert histogram_quantile(0.5, dist.bounds, cumulative) == pytest.approx(p50)


def test_managed_process_start_failures_are_bounded_and_explained(tmp_path):
    crashing = ManagedProcess(
        "crasher",
        lambda port: [sys.executable, "-c", "print('boom on', 1); raise SystemExit(3)"],
        ready_timeout_s=5,
    )
    with pytest.raises(ProcessStartError, match="boom on 1"):
        crashing.start()
    crashing.close()

    started = time.monotonic()
    hanging = ManagedProcess(
        "hanger",
        lambda port: [sys.executable, "-c", "import time; time.sleep(60)"],
        ready_timeout_s=0.5,
        stop_grace_s=1,
    )
    with pytest.raises(ProcessStartError, match="not ready"):
        with hanging:
            pass
    assert not hanging.is_running
    # Given up at the ready timeout, not after the child's 60 s sleep (a generous bound: the
    # point is "did not wait for the hang", not how fast).
    assert time.monotonic() - started < 30
