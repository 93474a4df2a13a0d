"""The service under floods and hostile input: Alertmanager webhook floods, malformed and
oversized bodies, missing or wrong tokens, secrets, and a schemathesis run against the
service's own OpenAPI document.

The service is the real aiohttp application (`create_service`) on a loopback port, over the
emulated Kubernetes API; floods come from another thread's event loop, as another process's
requests would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import hmac
import inspect
import io
import json
import logging
import os
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest import mock

import aiohttp
import pytest
import structlog
from aiohttp import web

from gatekeeper import kubeclient
from gatekeeper.cli import serve_cmd
from gatekeeper.service import app as app_module
from gatekeeper.service import auth as auth_module
from gatekeeper.service.app import create_service
from tests.service_support import (
    AUTH,
    NEW,
    PODS_READY_RULE,
    TOKEN,
    get_json,
    metric_value,
    post_json,
    rfc3339,
    route_target,
    seed,
    settled_writes,
    uncache_routes,
    wait_until,
    write_config,
    writes,
)

pytestmark = pytest.mark.timeout(180)

BLUE, GREEN, ROUTING = "abuse-blue", "abuse-green", "abuse-routing"
_MUTATING = ["approve", "unapprove", "flip", "rollback", "scale-down"]
FLOOD = 1000
LIMIT = 1_048_576
"""The documented default `webhook.max_body_bytes` (docs/configuration.md)."""


def payload(namespace: str = GREEN, *, status: str = "firing", starts: str | None = None,
            fingerprint: str = "a1b2c3") -> dict[str, Any]:
    """An Alertmanager version 4 notification with one alert (starting now by default)."""
    labels = {"alertname": "ApiDown", "namespace": namespace, "severity": "critical"}
    return {
        "version": "4", "groupKey": '{}:{alertname="ApiDown"}', "truncatedAlerts": 0,
        "status": status, "receiver": "gatekeeper", "groupLabels": {"alertname": "ApiDown"},
        "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": status, "labels": labels, "annotations": {"summary": "down"},
                    "startsAt": starts or rfc3339(), "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom/graph", "fingerprint": fingerprint}],
    }


@pytest.fixture
async def flipped(tmp_path, kube_emulator, kube_api, aiohttp_server) -> AsyncIterator[Any]:
    """A service (token auth, default body limit, 10 min cooldown) whose pair was just flipped
    to green, blue still Ready: the state in which a critical alert rolls back."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE],
                          policy={"auto_flip": False, "cooldown": "10m"})
    assert loaded.config.webhook.max_body_bytes == LIMIT
    service = create_service(loaded, kube_api, token=TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    view = service.controller.views["api"]
    await wait_until(lambda: view.state.active == BLUE, within=10, what="first evaluation")
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip", {"force": True})
    assert status == 200 and body["changed"], body
    yield service, url
    await service.close()


def flood(url: str, bodies: list[bytes], *, headers: dict[str, str] | None = None,
          concurrency: int = 50) -> tuple[list[int], float]:
    """POST every body from a thread with its own event loop; (statuses, seconds)."""
    sent = {**(AUTH if headers is None else headers), "Content-Type": "application/json"}

    async def run() -> list[int]:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def send(body: bytes) -> int:
                async with http.post(url, data=body, headers=sent) as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(*(send(b) for b in bodies)))

    started = time.monotonic()
    statuses = asyncio.run(run())
    return statuses, time.monotonic() - started


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        return await response.text()


def route_writes(emulator: Any) -> int:
    return sum(1 for w in writes(emulator) if "/ingressroutes/" in w)


TRACE_FRAMES = 3
_NOT_GATEKEEPER = (
    # The emulated API server's bounded request log and the test's own client thread
    # live in this process too; they are not the service's memory.
    tracemalloc.Filter(False, "*/kube_emulator/*", all_frames=True),
    tracemalloc.Filter(False, __file__, all_frames=True),
    tracemalloc.Filter(False, tracemalloc.__file__),
)


def resident_memory() -> int:
    """The process's resident set size in bytes (after a collection)."""
    gc.collect()
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def every_log_event() -> Iterator[list[Any]]:
    """`capture_logs`, at every level: an earlier in-process CLI run may have configured a
    level filter (INFO) that would hide debug events from the capture."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)


def traced_memory() -> int:
    """Bytes the service holds (tracemalloc, after a collection), test machinery excluded."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(_NOT_GATEKEEPER)
    return sum(stat.size for stat in snapshot.statistics("filename"))


# ---- floods ---------------------------------------------------------------------------------

async def test_thousand_identical_webhooks_roll_back_once_in_bounded_memory(
        flipped, kube_emulator, kube_api):
    """1,000 copies of one critical alert (at-least-once delivery, HA Alertmanagers): every
    request answered 200, exactly one rollback, and a second flood of 1,000 more allocates
    (almost) nothing that stays: the memory is bounded."""
    service, url = flipped
    hook = f"{url}/api/v1/alertmanager"
    body = json.dumps(payload()).encode()
    before = route_writes(kube_emulator)
    tracemalloc.start(TRACE_FRAMES)
    try:
        statuses, took = await asyncio.to_thread(flood, hook, [body] * FLOOD)
        first = traced_memory()
        again, took_again = await asyncio.to_thread(flood, hook, [body] * FLOOD)
        second = traced_memory()
    finally:
        tracemalloc.stop()
    assert statuses == [200] * FLOOD and again == [200] * FLOOD
    assert route_writes(kube_emulator) - before == 1, "exactly one route patch (the rollback)"
    assert await route_target(kube_api, ROUTING) == BLUE
    text = await metrics_text(url)
    assert metric_value(text, "gatekeeper_rollbacks_total", pair="api",
                        trigger="alertmanager") == 1
    assert metric_value(text, "gatekeeper_webhook_requests_total", outcome="rollback") == 1
    growth = second - first
    print(f"\n[identical flood] 2 x {FLOOD} webhooks in {took:.2f}s + {took_again:.2f}s, "
          f"all 200; 1 rollback, 1 route patch; memory retained by the second flood "
          f"{growth / 1024:.0f} KiB")
    assert growth < 1_000_000, f"the second flood kept {growth} bytes"
    assert service.controller.views["api"].state.phase == "rolled_back"


async def test_thousand_flapping_webhooks_roll_back_once_per_release(
        flipped, kube_emulator, kube_api):
    """1,000 notifications of an alert flapping firing/resolved (each firing a new instance):
    one rollback. The release is flipped again by hand; 1,000 more flapping notifications
    within the cooldown roll back once more (a person flipped to the release again after
    the rollback, so the cooldown does not hide a critical alert about it: docs/lifecycle.md);
    every other notification acts on nothing. Every request is answered; the resident
    memory stays bounded."""
    _service, url = flipped
    hook = f"{url}/api/v1/alertmanager"
    rng = random.Random(4)

    def flapping(count: int, offset: int) -> list[bytes]:
        base = time.time()  # after the flip: these alerts concern the new release
        bodies = []
        for i in range(count):
            status = "firing" if i % 2 == 0 else "resolved"
            second = offset + i // 2  # each firing is a new instance (a new startsAt)
            starts = rfc3339(base + second)
            bodies.append(json.dumps(payload(status=status, starts=starts,
                                             fingerprint=f"fp{rng.randrange(3)}")).encode())
        return bodies

    statuses, took = await asyncio.to_thread(flood, hook, flapping(FLOOD, 0))
    first = resident_memory()
    assert await route_target(kube_api, ROUTING) == BLUE
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip",
                                       {"force": True, "to": GREEN})
    assert status == 200 and body["changed"], body
    writes_before = route_writes(kube_emulator)
    again, took_again = await asyncio.to_thread(flood, hook, flapping(FLOOD, 500))
    second = resident_memory()
    assert sorted(set(statuses)) == [200] and sorted(set(again)) == [200]
    assert len(statuses) == len(again) == FLOOD
    assert route_writes(kube_emulator) - writes_before == 1, \
        "one rollback of the re-flipped release, then nothing more"
    assert await route_target(kube_api, ROUTING) == BLUE
    text = await metrics_text(url)
    assert metric_value(text, "gatekeeper_rollbacks_total", pair="api",
                        trigger="alertmanager") == 2
    assert metric_value(text, "gatekeeper_webhook_requests_total", outcome="rollback") == 2
    held = sum(metric_value(text, "gatekeeper_webhook_requests_total", outcome=outcome)
               for outcome in ("cooldown", "ignored", "duplicate"))
    assert held == 2 * FLOOD - 2, "every other notification acted on nothing"
    growth = second - first
    print(f"\n[flapping flood] 2 x {FLOOD} firing/resolved webhooks in {took:.2f}s + "
          f"{took_again:.2f}s, all 200; 1 rollback each; {held:.0f} acted on nothing; "
          f"resident memory grew {growth / 2**20:.1f} MiB during the second flood")
    assert growth < 16 * 2**20, f"the second flood grew the process by {growth} bytes"


async def test_a_tick_whose_route_read_straddles_a_rollback_does_not_undo_it_for_a_flip(
        flipped, kube_emulator, kube_api):
    """The interleaving behind the flapping flood's rare failure, forced with delays: a tick
    reads the route (green), its answer is held back while a webhook rolls back to blue,
    then the tick publishes what it read. A person's forced flip to green right after must
    be a real flip (it moves the route back to green), not "nothing to do: green is
    already active" from that tick's picture of the routes before the rollback."""
    service, url = flipped
    view = service.controller.views["api"]
    await wait_until(lambda: view.observation is not None and view.observation.active == GREEN,
                     within=10, what="a tick seeing the flip")
    # The ticks GET the routes (a cache answering them would not straddle anything).
    await uncache_routes(service, kube_emulator)
    route = "/apis/traefik.io/.*/ingressroutes/"
    # The next read of the route is answered 2 s after it was read.
    held = kube_emulator.faults.add(delay=2.0, verb="get", after=True, times=1, path=route)
    await wait_until(lambda: held.injected == 1, within=10, what="a tick reading the route")
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/alertmanager", payload())
        assert status == 200 and body["outcome"] == "rollback", body
        assert await route_target(kube_api, ROUTING) == BLUE
        # The tick after the held one reads slowly too: the flip below comes while the
        # held tick's picture is the latest one.
        slow = kube_emulator.faults.add(delay=3.0, verb="get", after=True, times=1,
                                        path=route)
        await wait_until(lambda: slow.injected == 1, within=10, what="the next tick")
        status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip",
                                       {"force": True, "to": GREEN})
    assert status == 200 and body["changed"], body
    assert await route_target(kube_api, ROUTING) == GREEN


async def test_a_rollback_the_api_keeps_refusing_blocks_the_pair_with_the_reason(
        flipped, kube_emulator, kube_api):
    """Every route patch answered 500: the webhook's rollback cannot converge. The routes
    stay whole, the webhook is answered (outcome `refused`), and the pair is `blocked`
    with the reason, waiting for a person; a new alert retries the rollback (the safe
    direction) with the same bounded number of tries, and the pair stays blocked."""
    service, url = flipped
    kube_emulator.faults.add(status=500, verb="patch", path="/ingressroutes/")
    before = len(kube_emulator.requests.records(method="PATCH"))
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{url}/api/v1/alertmanager", payload())
        assert status == 200 and body["outcome"] == "refused", body
        patches = len(kube_emulator.requests.records(method="PATCH")) - before
        status, again = await post_json(http, f"{url}/api/v1/alertmanager",
                                        payload(fingerprint="other"))
        assert status == 200 and again["outcome"] == "refused", again
        retried = len(kube_emulator.requests.records(method="PATCH")) - before - patches
        status, detail = await get_json(http, f"{url}/api/v1/pairs/api")
    assert await route_target(kube_api, ROUTING) == GREEN
    view = service.controller.views["api"]
    assert view.state.phase == "blocked" and detail["phase"] == "blocked"
    assert "HTTP 500" in view.state.reason, view.state.reason
    assert patches <= kubeclient.ATTEMPTS and retried <= kubeclient.ATTEMPTS
    print(f"\n[cannot converge] {patches} patch tries answered 500 -> blocked "
          f"({view.state.reason[:100]}); a second alert: {retried} more tries, still blocked")


# ---- malformed bodies -----------------------------------------------------------------------

_WRONG: list[Any] = [None, 1, 1.5, True, [], {}, "x", [1], {"a": 1}]
_LITERALS = {("version",): {"4"}, ("status",): {"firing", "resolved"},
             ("alerts", 0, "status"): {"firing", "resolved"}}
_STR_FIELDS = [("groupKey",), ("receiver",), ("externalURL",),
               ("alerts", 0, "labels", "namespace"), ("alerts", 0, "startsAt"),
               ("alerts", 0, "fingerprint")]
_LABEL_FIELDS = [("groupLabels",), ("commonLabels",), ("commonAnnotations",),
                 ("alerts", 0, "labels"), ("alerts", 0, "annotations")]


def _invalid(path: tuple[Any, ...], value: Any) -> bool:
    """Whether `value` is wrong for the payload field at `path` (version 4 schema)."""
    if path in _LITERALS:
        return not (isinstance(value, str) and value in _LITERALS[path])
    if path in _STR_FIELDS:
        return not isinstance(value, str)
    if path in _LABEL_FIELDS:
        return not isinstance(value, dict) or any(not isinstance(v, str)
                                                  for v in value.values())
    if path == ("truncatedAlerts",):
        return value is None or isinstance(value, list | dict) or value in (1.5, "x")
    if path == ("alerts",):
        return not isinstance(value, list) or any(not isinstance(v, dict) for v in value)
    return True  # ("alerts", 0): an alert needs status and labels


def _wrongly_typed() -> list[tuple[str, bytes]]:
    """Each known field of a valid payload replaced by each value wrong for it."""
    paths = [*_LITERALS, *_STR_FIELDS, *_LABEL_FIELDS, ("truncatedAlerts",), ("alerts",),
             ("alerts", 0)]
    cases = []
    for path in paths:
        for value in _WRONG:
            if not _invalid(path, value):
                continue
            body = payload()
            node: Any = body
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
            cases.append((f"{'.'.join(map(str, path))}={value!r}", json.dumps(body).encode()))
    return cases


def _malformed() -> list[tuple[str, bytes]]:
    valid = json.dumps(payload()).encode()
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(valid) - 1), 20))
    cases: list[tuple[str, bytes]] = [
        ("empty", b""), ("spaces", b"   "), ("open brace", b"{"), ("garbage", b"{oops"),
        ("null", b"null"), ("list", b"[]"), ("number", b"42"), ("string", b'"firing"'),
        ("not utf-8", b"\xff\xfe\xfd" + valid), ("latin-1", b"{\"version\": \"\xe9\"}"),
        ("nan", valid.replace(b'"truncatedAlerts": 0', b'"truncatedAlerts": NaN')),
        ("no alerts", json.dumps({"version": "4", "status": "firing"}).encode()),
        ("version 3", json.dumps({**payload(), "version": "3"}).encode()),
        ("deep list", b"[" * 100_000 + b"]" * 100_000),
        ("deep field", valid[:-1] + b', "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
        ("huge label", json.dumps(payload() | {"commonLabels": {"a": "x" * 70_000}}).encode()),
    ]
    cases += [(f"truncated at {cut}", valid[:cut]) for cut in cuts]
    return cases + _wrongly_typed()


async def test_malformed_truncated_huge_and_wrongly_typed_webhooks_are_4xx(
        flipped, kube_emulator, kube_api):
    """Every malformed, truncated, oversized or wrongly typed body gets a 4xx with a JSON
    error (400, or 413 over the 1 MiB limit, with or without Content-Length), and no
    rollback follows."""
    _service, url = flipped
    hook = f"{url}/api/v1/alertmanager"
    before = route_writes(kube_emulator)
    cases = _malformed()
    answered: Counter[int] = Counter()
    async with aiohttp.ClientSession() as http:
        for name, body in cases:
            async with http.post(hook, data=body, headers={
                    **AUTH, "Content-Type": "application/json"}) as response:
                detail = await response.json()
                assert response.status == 400, (name, response.status, detail)
                assert detail["error"], name
                answered[response.status] += 1
        huge = json.dumps(payload() | {"commonAnnotations": {"d": "x" * LIMIT}}).encode()
        # A file-like body: aiohttp warns that raw bytes this large block the event loop.
        async with http.post(hook, data=io.BytesIO(huge), headers=AUTH) as response:
            assert response.status == 413, response.status
            answered[413] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(LIMIT // 65_536 + 2):
                yield b" " * 65_536

        async with http.post(hook, data=chunks(), headers=AUTH) as response:
            assert response.status == 413, response.status  # chunked: no Content-Length
            answered[413] += 1
    assert route_writes(kube_emulator) == before
    assert await route_target(kube_api, ROUTING) == GREEN
    print(f"\n[bad webhook bodies] {sum(answered.values())} requests "
          f"({len(_wrongly_typed())} wrongly typed, 20 truncated): {dict(answered)}; "
          "0 rollbacks")


_ACTION_BODIES: list[tuple[str, bytes]] = [
    ("not json", b"{force"), ("truncated", b'{"force": tr'), ("list", b"[]"),
    ("number", b"1"), ("null", b"null"), ("deep", b"[" * 8000 + b"]" * 8000),
    ("deep field", b'{"reason": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("not utf-8", b'{"reason": "\xff"}'), ("force as text", b'{"force": "yes"}'),
    ("force as number", b'{"force": 1}'), ("reason as list", b'{"reason": ["a"]}'),
    ("reason too long", json.dumps({"reason": "r" * 2000}).encode()),
    ("unknown field", b'{"forse": true}'), ("to as number", b'{"to": 5}'),
    ("keep negative", b'{"keep": -1}'), ("keep as text", b'{"keep": "1"}'),
    ("keep huge", b'{"keep": 10000000000000000000000}'),
]


async def test_malformed_action_bodies_are_400_and_oversized_413(flipped, kube_emulator):
    """Every mutating endpoint: malformed, deeply nested or wrongly typed bodies are 400,
    bodies over 16 KiB 413, with the right token, and nothing changes."""
    _service, url = flipped
    before = await settled_writes(kube_emulator)
    answered: Counter[int] = Counter()
    async with aiohttp.ClientSession() as http:
        for action in _MUTATING:
            target = f"{url}/api/v1/pairs/api/{action}"
            for name, body in _ACTION_BODIES:
                if name.startswith("keep") and action != "scale-down":
                    continue  # `keep` is an unknown field elsewhere: 400 either way
                async with http.post(target, data=body, headers={
                        **AUTH, "Content-Type": "application/json"}) as response:
                    detail = await response.json()
                    assert response.status == 400, (action, name, response.status, detail)
                    answered[400] += 1
            async with http.post(target, data=b" " * 20_000, headers=AUTH) as response:
                assert response.status == 413
                answered[413] += 1
    assert len(writes(kube_emulator)) == before
    print(f"\n[bad action bodies] {sum(answered.values())} requests on {len(_MUTATING)} "
          f"endpoints: {dict(answered)}; 0 cluster writes")


# ---- authentication -------------------------------------------------------------------------

_BAD_HEADERS: list[dict[str, str]] = [
    {}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Token {TOKEN}"}, {"Authorization": TOKEN},
    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN[:-1]}{chr(ord(TOKEN[-1]) ^ 1)}"},
    {"Authorization": f"Bearer {TOKEN.upper()}"}, {"X-Token": TOKEN},
    {"Authorization": "Bearer " + "x" * 4096},
]


async def test_every_mutating_endpoint_and_the_webhook_refuse_bad_tokens_and_never_log_them(
        flipped, kube_emulator, kube_api, caplog):
    """Missing, malformed or wrong tokens: 401 with `WWW-Authenticate` on every mutating
    endpoint and the webhook, nothing changes. Every check goes through
    `hmac.compare_digest`. The token never appears in a log event (structlog or stdlib),
    a response, or /metrics."""
    _service, url = flipped
    source = inspect.getsource(auth_module.TokenAuth.identify)
    assert "hmac.compare_digest(" in source and "== self._token" not in source
    before = await settled_writes(kube_emulator)
    targets = [f"{url}/api/v1/pairs/api/{a}" for a in _MUTATING] + [f"{url}/api/v1/alertmanager"]
    refused = 0
    seen_text: list[str] = []
    caplog.set_level(logging.DEBUG)
    with every_log_event() as logs, \
            mock.patch.object(auth_module.hmac, "compare_digest",
                              wraps=hmac.compare_digest) as compared:
        async with aiohttp.ClientSession() as http:
            for target in targets:
                body = payload() if target.endswith("alertmanager") else {"force": True}
                for headers in _BAD_HEADERS:
                    async with http.post(target, json=body, headers=headers) as response:
                        text = await response.text()
                        seen_text.append(text)
                        assert response.status == 401, (target, headers, response.status)
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                        refused += 1
                    async with http.post(target + "?token=" + TOKEN, json=body) as response:
                        assert response.status == 401
                        refused += 1
            assert len(writes(kube_emulator)) == before, "a refused request changed the cluster"
            wrong_compared = compared.call_count
            # The right token works (and is compared the same way).
            status, answer = await post_json(http, f"{url}/api/v1/pairs/api/approve", {})
            seen_text.append(json.dumps(answer))
            assert status in (200, 409)
            status, answer = await post_json(http, f"{url}/api/v1/alertmanager", payload())
            seen_text.append(json.dumps(answer))
            assert status == 200 and answer["outcome"] == "rollback", answer
            for path in ("/metrics", "/api/v1/pairs", "/api/v1/pairs/api",
                         "/api/v1/pairs/api/flip-check", "/api/v1/openapi.json"):
                async with http.get(url + path) as response:
                    seen_text.append(await response.text())
        assert compared.call_count == wrong_compared + 2
    # Headers with a scheme other than Bearer, or no token, are refused before comparing.
    assert wrong_compared >= len(targets) * 6, wrong_compared
    # aiohttp's access log (on in the test server) records the request line, where the
    # `?token=` requests put the token themselves; `gatekeeper serve` runs without it.
    assert "serving(" in inspect.getsource(serve_cmd)
    runner = app_module.make_runner(web.Application())
    assert runner._kwargs["access_log"] is None, "gatekeeper serve would log request lines"
    records = [r for r in caplog.records if r.name != "aiohttp.access"]
    logged = repr(logs) + "\n".join(r.getMessage() + repr(r.args) for r in records)
    assert TOKEN not in logged, "the token was logged"
    assert TOKEN.upper() not in logged and TOKEN[:-1] not in logged
    assert not [t for t in seen_text if TOKEN in t], "the token was echoed"
    print(f"\n[auth] {refused} requests with missing/wrong tokens on {len(targets)} endpoints: "
          f"all 401, 0 cluster writes; {compared.call_count} constant-time comparisons; "
          f"{len(logs)} log events and {len(seen_text)} responses without the token")


async def test_secret_values_never_reach_logs_metrics_or_the_api(
        tmp_path, kube_emulator, kube_api, aiohttp_server):
    """The config-parity rule finds the differing Secret key, yet neither the values nor
    their hashes (nor base64) appear in any log event, /metrics, or API response."""
    values = {BLUE: "hunter2-blue-s3cr3t-4f1c", GREEN: "hunter2-green-s3cr3t-9e7a"}
    objects = seed(BLUE, GREEN, ROUTING, green_image=NEW)
    for ns, value in values.items():
        objects.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "db", "namespace": ns},
                        "data": {"password": base64.b64encode(value.encode()).decode()}})
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "settings", "namespace": ns},
                        "data": {"dsn": f"postgres://app:{value}@db"}})
    kube_emulator.load(objects)
    parity = {"name": "config-parity", "source": "kubernetes", "check": "config_parity",
              "pass": ["== 0"], "key": True}
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE, parity], policy={"auto_flip": False},
                          kubernetes={"read_secrets": True})  # Secrets are compared only then
    secrets = set()
    for value in values.values():
        for text in (value, f"postgres://app:{value}@db"):
            raw = text.encode()
            secrets |= {text, base64.b64encode(raw).decode(), hashlib.sha256(raw).hexdigest()}
    with every_log_event() as logs:
        service = create_service(loaded, kube_api, token=TOKEN)
        server = await aiohttp_server(service.app)
        url = str(server.make_url("")).rstrip("/")
        view = service.controller.views["api"]
        try:
            await wait_until(lambda: service.controller.ticks >= 3, within=20, what="3 ticks")
            answers = []
            async with aiohttp.ClientSession() as http:
                for path in ("/metrics", "/api/v1/pairs", "/api/v1/pairs/api",
                             "/api/v1/pairs/api/flip-check"):
                    async with http.get(url + path) as response:
                        answers.append(await response.text())
                _status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip", {})
                answers.append(json.dumps(body))
        finally:
            await service.close()
    verdict = view.verdict
    assert verdict is not None
    result = next(r for r in verdict.candidate.results if r.rule == "config-parity")
    # Two differences: Secret db key password, ConfigMap settings key dsn.
    assert result.status == "fail" and result.value == 2.0, result
    everything = repr(logs) + "".join(answers) + repr(verdict.to_dict())
    leaked = [s for s in secrets if s in everything]
    assert not leaked, f"secret material leaked: {leaked}"
    print(f"\n[secrets] parity found Secret db/password and ConfigMap settings/dsn differing; "
          f"{len(logs)} log events, {len(answers)} responses: no value, base64 or hash")


# ---- the OpenAPI contract -------------------------------------------------------------------

EXAMPLES = 25


def _fuzz(base_url: str, document: dict[str, Any]) -> tuple[list[str], dict[str, Counter[int]]]:
    """schemathesis over every operation: failures, and the statuses seen per operation."""
    import schemathesis
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.generation import GenerationMode

    document = json.loads(json.dumps(document))
    for path in document["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "pair":
                    parameter["schema"] = {"type": "string", "enum": ["api", "nope"]}
    schema = schemathesis.openapi.from_dict(document)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, negative_data_rejection]
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = {}
    counter = iter(range(10**9))
    for result in schema.get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault(f"{operation.method.upper()} {operation.path}", Counter())
        for mode in GenerationMode:  # valid requests, then invalid ones
            _fuzz_operation(operation.as_strategy(generation_mode=mode), base_url, checks,
                            seen, failures, counter)
    return failures, statuses


def _fuzz_operation(strategy: Any, base_url: str, checks: list[Any], seen: Counter[int],
                    failures: list[str], counter: Any) -> None:
    """EXAMPLES generated requests to one operation, each validated by every check."""
    import hypothesis

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                         derandomize=True, suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        # Every third POST goes without the token, to exercise the 401 path.
        headers = dict(AUTH) if case.method == "POST" and next(counter) % 3 else {}
        if isinstance((case.query or {}).get("wait"), int | float):
            case.query["wait"] = min(float(case.query["wait"]), 0.05)
        try:
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            seen[response.status_code] += 1
            case.validate_response(response, checks=checks)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(f"{case.method} {case.formatted_path}: "
                            f"{type(exc).__name__}: {str(exc)[:300]}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        pass  # no invalid request exists for an operation without inputs (GET /healthz)


async def test_schemathesis_finds_no_5xx_and_no_undocumented_status(
        tmp_path, kube_emulator, kube_api, aiohttp_server):
    """schemathesis against /api/v1/openapi.json (the live service on a loopback port):
    no 5xx on any endpoint, every status and content type as documented, negative data
    rejected."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False, "cooldown": 0},
                          webhook={"max_body_bytes": 65_536})
    service = create_service(loaded, kube_api, token=TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    try:
        await wait_until(lambda: service.controller.ticks > 0, within=10, what="first tick")
        async with aiohttp.ClientSession() as http:
            status, document = await get_json(http, f"{url}/api/v1/openapi.json")
        assert status == 200
        failures, statuses = await asyncio.to_thread(_fuzz, url, document)
    finally:
        await service.close()
    total = sum(sum(c.values()) for c in statuses.values())
    summary = {op: dict(sorted(c.items())) for op, c in sorted(statuses.items())}
    print(f"\n[schemathesis] {len(statuses)} operations, {total} requests: {summary}")
    assert not failures, "\n".join(failures[:10])
    assert len(statuses) >= 11 and all(not any(s >= 500 for s in c) for c in statuses.values())
    posts = [c for op, c in statuses.items() if op.startswith("POST")]
    assert all(401 in c and 400 in c for c in posts), summary
