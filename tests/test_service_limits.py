"""Floods that must cost little: a webhook storm, abandoned long-polls, slow clients,
oversized numbers in bodies. Each test counts work (API requests, waiters, connections),
never wall-clock time; the timings are in bench/webhook_flood.py and docs/performance.md."""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gatekeeper.service.app import create_service, serving
from gatekeeper.service.connections import connection_limit
from gatekeeper.service.context import SERVICES
from kube_emulator import running
from tests.service_support import (
    AUTH,
    NEW,
    PODS_READY_RULE,
    TOKEN,
    free_port,
    metric_value,
    post_json,
    route_target,
    seed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

PAIRS = (("api", "fl-api-blue", "fl-api-green", "fl-api-live"),
         ("web", "fl-web-blue", "fl-web-green", "fl-web-live"))



def _now() -> str:
    """Alerts that start now: after the flip, so they concern the current release."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")

def storm(namespace: str, count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """`count` distinct critical alerts for one namespace (one per pod, as a per-pod
    alert rule fires when a whole release breaks)."""
    return [{"status": "firing",
             "labels": {"alertname": "PodErrors", "namespace": namespace,
                        "severity": "critical", "pod": f"api-{k}"},
             "annotations": {"summary": "5xx over budget"},
             "startsAt": _now(), "endsAt": "0001-01-01T00:00:00Z",
             "fingerprint": f"{namespace}-{k:06d}"} for k in range(start, start + count)]


def notification(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """A version 4 notification carrying `alerts`."""
    return {"version": "4", "status": "firing", "receiver": "gatekeeper",
            "groupKey": '{}:{alertname="PodErrors"}', "alerts": alerts}


@pytest.fixture
async def two_flipped_pairs(tmp_path, kube_emulator, kube_api, aiohttp_server):
    """Two pairs, both just flipped to green; no control loop or watch, so every API request
    the emulator counts afterwards comes from what the test sends."""
    for _name, blue, green, routing in PAIRS:
        kube_emulator.load(seed(blue, green, routing, green_image=NEW))
    loaded = write_config(tmp_path, list(PAIRS), prometheus_url=None, rules=[PODS_READY_RULE],
                          policy={"auto_flip": False},
                          webhook={"max_body_bytes": 16 * 1024 * 1024})
    service = create_service(loaded, kube_api, token=TOKEN, run_loop=False, watch=False)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    await service.controller.tick()
    async with aiohttp.ClientSession() as http:
        for name, *_ in PAIRS:
            status, body = await post_json(http, f"{url}/api/v1/pairs/{name}/flip",
                                           {"force": True})
            assert status == 200 and body["changed"], body
    yield service, url
    await service.close()


async def test_webhook_storm_costs_requests_per_pair_not_per_alert(
        two_flipped_pairs, kube_emulator, kube_api):
    """5,800 alerts in one notification (5,000 for a pair a person flipped to again after a
    rollback, 800 for a pair rolled back for the first time): the API requests are bounded by
    the pairs concerned, not the alerts, and each pair rolls back once. (The cooldown guards
    against flapping automatic actions, not a release a person chose again: docs/lifecycle.md.)"""
    service, url = two_flipped_pairs
    (_, _, api_green, api_live), (_, web_blue, web_green, web_live) = PAIRS
    hook = f"{url}/api/v1/alertmanager"
    async with aiohttp.ClientSession() as http:
        # Pair `api`: an alert rolls it back, a person flips to the release again.
        status, body = await post_json(http, hook, notification(storm(api_green, 1)))
        assert status == 200 and body["outcome"] == "rollback", body
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip",
                                       {"force": True, "to": api_green})
        assert status == 200 and body["changed"], body
        body_bytes = json.dumps(notification(
            storm(api_green, 5000, start=1) + storm(web_green, 800))).encode()
        kube_emulator.requests.clear()
        started = time.monotonic()
        # A file-like body: aiohttp warns that raw bytes this large block the event loop.
        async with http.post(hook, data=io.BytesIO(body_bytes),
                             headers={**AUTH, "Content-Type": "application/json"}) as response:
            status, answer = response.status, await response.json()
        took = time.monotonic() - started
    requests = kube_emulator.requests.total
    print(f"5,800 alerts answered in {took:.2f}s with {requests} API requests "
          f"({kube_emulator.requests.by_verb()})")
    assert status == 200, answer
    # Two decisions and two rollbacks (each: the target's readiness and production size,
    # routes, the state record): a few dozen per pair at most, where one decision per alert
    # made two requests per alert (11,600 here).
    assert requests <= 40 * len(PAIRS), kube_emulator.requests.by_verb()
    outcomes = {r["pair"]: (r["outcome"], r["alerts"]) for r in answer["results"]}
    assert outcomes == {"api": ("rollback", 5000), "web": ("rollback", 800)}
    assert await route_target(kube_api, api_live) != api_green
    assert await route_target(kube_api, web_live) == web_blue
    assert service.controller.views["web"].state.phase == "rolled_back"


HUGE = "9" * 5000
"""A 5,000-digit integer; `N` in the bodies below stands for it."""


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/pairs/api/scale-down", '{"keep": N}', "keep"),
    ("/api/v1/pairs/api/scale-down", '{"keep": -N, "force": true}', "keep"),
    ("/api/v1/pairs/api/flip", '{"force": true, "to": [1, N]}', "to.1"),
    ("/api/v1/pairs/api/rollback", '{"reason": {"n": N}}', "reason.n"),
    ("/api/v1/pairs/api/approve", "N", "body"),
    ("/api/v1/alertmanager", '{"version": "4", "status": "firing", "alerts": [], '
                             '"truncatedAlerts": N}', "truncatedAlerts"),
    ("/api/v1/alertmanager", '{"version": "4", "status": "firing", "alerts": [{"status": '
                             '"firing", "labels": {"a": N}}]}', "alerts.0.labels.a"),
])
async def test_a_5000_digit_integer_is_a_400_naming_the_field(
        two_flipped_pairs, kube_emulator, path, body, field):
    """Python refuses to convert integers over 4,300 digits (a bare ValueError): that must
    be the client's 400 naming the field, not a 500, and nothing may change."""
    _service, url = two_flipped_pairs
    kube_emulator.requests.clear()
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}{path}", data=body.replace("N", HUGE).encode(),
            headers={**AUTH, "Content-Type": "application/json"}) as response:
        status, answer = response.status, await response.json()
    assert status == 400, answer
    assert answer["error"].startswith(f"{field}: integer of 5000 digits"), answer
    assert kube_emulator.requests.total == 0


async def _metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/metrics") as response:
        return metric_value(await response.text(), name)


async def test_abandoned_long_polls_end_when_their_clients_disconnect(
        tmp_path, kube_emulator, kube_api):
    """200 flip-checks with `?wait=600` whose clients hang up: the waiters, and the tasks
    serving them, are gone within seconds, not after 600 s. No tick runs meanwhile, so only
    the disconnect can end them."""
    name, blue, green, routing = PAIRS[0]
    kube_emulator.load(seed(blue, green, routing, green_image=NEW))
    loaded = write_config(tmp_path, [PAIRS[0]], prometheus_url=None, rules=[PODS_READY_RULE])
    service = create_service(loaded, kube_api, token=TOKEN, run_loop=False, watch=False)
    await service.controller.tick()  # idle: flip-check answers 409, so `wait` holds
    async with serving(service.app, loaded.config.server, host="127.0.0.1", port=0,
                       recorder=service.recorder) as listener:
        port = listener.port
        baseline = len(asyncio.all_tasks())
        clients = []
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /api/v1/pairs/{name}/flip-check?wait=600 HTTP/1.1\r\n"
                         "Host: gatekeeper\r\n\r\n".encode())
            clients.append((reader, writer))
        await wait_until(lambda: service.app[SERVICES].long_polls.waiting == 200, within=30,
                         what="200 long-polls waiting")
        assert await _metric(port, "gatekeeper_long_polls") == 200
        assert len(asyncio.all_tasks()) >= baseline + 200  # one handler task per long-poll
        for _reader, writer in clients:
            writer.close()
        await wait_until(lambda: service.app[SERVICES].long_polls.waiting == 0, within=15,
                         what="every abandoned long-poll ended")
        await wait_until(lambda: len(asyncio.all_tasks()) <= baseline + 5, within=15,
                         what="the handler tasks of the abandoned long-polls ended")
        assert await _metric(port, "gatekeeper_long_polls") == 0
        # A client that stays still gets its answer at the deadline.
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/api/v1/pairs/{name}/flip-check?wait=0.5") as answer:
            assert answer.status == 409 and not (await answer.json())["safe"]
    await service.close()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `within` s."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_slow_clients_are_closed_and_the_webhook_is_answered_under_them(
        tmp_path, kube_emulator, kube_api):
    """40 slow connections against a limit of 20 (a partial request line, or nothing at
    all): the webhook and flip-check are still answered at once, the open connections never
    exceed the limit, and every slow one is closed within the read timeout. A limit full of
    long-polls gives way to the webhook too, and a body that never arrives is a 408."""
    name, blue, green, routing = PAIRS[0]
    kube_emulator.load(seed(blue, green, routing, green_image=NEW))
    loaded = write_config(tmp_path, [PAIRS[0]], prometheus_url=None, rules=[PODS_READY_RULE],
                          server={"read_timeout": "1s", "keepalive_timeout": "2s",
                                  "max_connections": 20})
    service = create_service(loaded, kube_api, token=TOKEN, run_loop=False, watch=False)
    await service.controller.tick()
    hook = notification(storm("elsewhere", 1))  # matches no pair: answered `ignored`
    async with serving(service.app, loaded.config.server, host="127.0.0.1", port=0,
                       recorder=service.recorder) as listener:
        base = f"http://127.0.0.1:{listener.port}"
        slow = []
        for k in range(40):
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            if k % 4:
                writer.write(b"GET /api/v1/pairs/api/flip-check HTTP/1.1\r\nHost: g")
            slow.append((reader, writer))
            await asyncio.sleep(0)
            assert listener.open_connections <= 20
        async with aiohttp.ClientSession() as http:
            status, body = await post_json(http, f"{base}/api/v1/alertmanager", hook)
            assert status == 200 and body["outcome"] == "ignored", body
            async with http.get(f"{base}/api/v1/pairs/{name}/flip-check") as answer:
                assert answer.status == 409
        closed = await asyncio.gather(*(_closed_by_server(r, within=5) for r, _ in slow))
        assert all(closed), f"{closed.count(False)} slow connections still open"
        for _reader, writer in slow:
            writer.close()
        assert listener.closed["evicted"] >= 20 and listener.closed["read_timeout"] >= 1, \
            listener.closed
        assert listener.open_connections <= 20

        # Twenty long-polls fill the limit; the webhook still gets in (one poll gives way).
        polls = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(f"GET /api/v1/pairs/{name}/flip-check?wait=60 HTTP/1.1\r\n"
                         "Host: gatekeeper\r\n\r\n".encode())
            polls.append((reader, writer))
        await wait_until(lambda: service.app[SERVICES].long_polls.waiting == 20, within=10,
                         what="20 long-polls waiting")
        evicted = listener.closed["evicted"]
        async with aiohttp.ClientSession() as http:
            status, body = await post_json(http, f"{base}/api/v1/alertmanager", hook)
            assert status == 200 and body["outcome"] == "ignored", body
        for _reader, writer in polls:
            writer.close()
        assert listener.closed["evicted"] > evicted, listener.closed

        # Headers promise a body that never comes: 408 after the read timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(f"POST /api/v1/alertmanager HTTP/1.1\r\nHost: g\r\nAuthorization: "
                     f"Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100\r\n\r\n{\"version\"".encode())
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        writer.close()
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as answer:
            text = await answer.text()
        for reason in ("evicted", "read_timeout"):
            assert metric_value(text, "gatekeeper_http_connections_closed_total",
                                reason=reason) == listener.closed[reason]
    await service.close()


def test_the_connection_limit_fits_the_descriptor_limit():
    """With `ulimit -n 256`, 1,024 configured connections would exhaust the descriptors
    (the webhook could not even be accepted): the limit leaves room for what is open, one
    accept burst (the listen backlog) and the clients."""
    assert connection_limit(1024, descriptors=256, in_use=30) == 256 - 30 - 100 - 64
    assert connection_limit(100, descriptors=65536, in_use=30) == 100
    assert connection_limit(1024, descriptors=100, in_use=30) == 8
    assert connection_limit(1024) <= 1024  # this process's own limit and descriptors


async def test_serve_under_a_low_descriptor_limit_answers_the_webhook_past_slow_clients(
        tmp_path):
    """`gatekeeper serve` as a process with `ulimit -n 256`, 300 silent connections held
    open (longer than the read timeout would allow is not needed: it is 30 s here): the
    webhook and flip-check still answer, because the connection limit leaves descriptors to
    accept them and the silent connections give way. Before, accept() ran
    out of descriptors and nothing was answered until the slow clients left."""
    name, blue, green, routing = PAIRS[0]
    async with running(seed(blue, green, routing, green_image=NEW), ready_delay=0.0) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        write_config(tmp_path, [PAIRS[0]], prometheus_url=None, rules=[PODS_READY_RULE],
                     kubernetes={"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
                     server={"read_timeout": "30s"})
        port = free_port()

        def low_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatekeeper", "serve", "--config",
            str(tmp_path / "gatekeeper.yaml"), "--host", "127.0.0.1", "--port", str(port),
            env={**os.environ, "GATEKEEPER_TOKEN": TOKEN}, preexec_fn=low_limit,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        slow: list[asyncio.StreamWriter] = []
        try:
            async def ready() -> bool:
                try:
                    async with aiohttp.ClientSession() as http, \
                            http.get(f"{base}/readyz") as answer:
                        return answer.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, within=30, what="gatekeeper serve ready")
            for _ in range(300):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                slow.append(writer)
            await asyncio.sleep(1.0)  # let the server accept what it will
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                status, body = await post_json(http, f"{base}/api/v1/alertmanager",
                                               notification(storm("elsewhere", 1)))
                assert status == 200 and body["outcome"] == "ignored", body
                async with http.get(f"{base}/api/v1/pairs/{name}/flip-check") as answer:
                    assert answer.status == 409
                async with http.get(f"{base}/metrics") as answer:
                    text = await answer.text()
            limit = 256 - 100 - 64  # minus descriptors in use at startup, about 30
            assert metric_value(text, "gatekeeper_http_connections") <= limit
            assert metric_value(text, "gatekeeper_http_connections_closed_total",
                                reason="evicted") > 0
        finally:
            for writer in slow:
                writer.close()
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
