"""LogSource through the emulated API server, with the real kubernetes_asyncio client."""

from __future__ import annotations

import re
import socket
import time

import pytest

from gatekeeper.rules import Rule
from gatekeeper.sources.base import Target
from gatekeeper.sources.logs import MAX_LINE_BYTES, LineCounter, LogSource
from tests.fixtures.kube import BLUE, GREEN, api_client_for
from tests.service_support import wait_until


def _counter(pattern: str = r"(?i)\berror\b", *exclude: str) -> LineCounter:
    return LineCounter(re.compile(pattern), [re.compile(e) for e in exclude])


def test_line_counter_across_chunks():
    """Lines split over chunk boundaries count once; excluded lines do not count."""
    counter = _counter(r"(?i)\berror\b", r"error_count=0")
    for chunk in (b"ok\nERR", b"OR one\nerror_count=0\n", b"fine\nerror two"):
        counter.feed(chunk)
    counter.finish()
    assert (counter.lines, counter.errors) == (5, 2)
    assert counter.first_error == "ERROR one"


def test_line_counter_caps_long_lines():
    """A runaway line is judged on its head and counted once; memory stays bounded."""
    counter = _counter()
    counter.feed(b"x" * (MAX_LINE_BYTES + 10))
    counter.feed(b"y" * MAX_LINE_BYTES + b" error\nerror after\n")
    counter.finish()
    assert (counter.lines, counter.errors) == (2, 1)
    assert counter.first_error == "error after"


@pytest.fixture
async def source(kube_api):
    return LogSource(kube_api)


def _rule(window: str | None = None, **logs) -> Rule:
    return Rule.model_validate(
        {"name": "log-errors", "source": "logs", "logs": logs, "pass": ["<= 10"],
         "window": window}
    )


def _targets(selector: str | None = "app=api") -> list[Target]:
    return [Target(pair="production", namespace=GREEN, other=BLUE, selector=selector),
            Target(pair="production", namespace=BLUE, other=GREEN, selector=selector)]


def _pod(name: str, namespace: str, *containers: str, status: dict | None = None) -> dict:
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "worker"}},
        "spec": {"containers": [{"name": c, "image": f"registry.example.com/{c}:1"}
                                for c in containers]},
    }
    if status is not None:
        pod["status"] = status
    return pod


async def test_counts_error_lines_of_every_pod(kube_bluegreen, source):
    """Matching lines of every selected pod count; excluded ones and other namespaces do not."""
    kube_bluegreen.append_logs_by_selector(GREEN, "app=api", [
        "INFO started",
        "ERROR database timeout after 30s",
        "Unhandled exception in /franchises",
        "error_count=0 all good",
    ])
    kube_bluegreen.append_logs_by_selector(BLUE, "app=api", ["INFO fine"])
    rule = _rule(exclude=[r"error_count=0"])
    result = await source.measure(rule, _targets(), window=300, variables={})
    green = result[GREEN]
    assert green.status == "ok" and green.value == 4  # 2 lines x 2 pods
    assert green.sample_count == 8
    assert green.message.startswith("4 error lines in 2 containers of 2 pods (8 lines scanned)")
    assert "'ERROR database timeout after 30s'" in green.message
    assert green.message.count("first:") == 1
    assert result[BLUE].value == 0 and result[BLUE].sample_count == 2


async def test_since_seconds_follows_the_window(kube_bluegreen, source):
    """Lines older than the window are not read; the rule's own window overrides it."""
    pod = kube_bluegreen.pods(GREEN, "app=api")[0]["metadata"]["name"]
    kube_bluegreen.append_logs(GREEN, pod, ["ERROR old"], timestamp=time.time() - 3600)
    kube_bluegreen.append_logs(GREEN, pod, ["ERROR new"])
    result = await source.measure(_rule(), _targets(), window=300, variables={})
    assert result[GREEN].value == 1
    result = await source.measure(_rule(window="2h"), _targets(), window=300, variables={})
    assert result[GREEN].value == 2
    reads = kube_bluegreen.requests.records(path_contains=f"/pods/{pod}/log")
    assert {"sinceSeconds=300", "sinceSeconds=7200"} <= {
        part for r in reads for part in r.query.split("&") if part.startswith("sinceSeconds")
    }


async def test_reads_every_container_and_skips_unstarted_ones(kube_emulator, source):
    """Each container of a multi-container pod is read; one that never started is skipped."""
    kube_emulator.load([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "work"}}])
    kube_emulator.put_object(_pod("multi", "work", "app", "sidecar"))
    await kube_emulator.wait_for(
        lambda: len((kube_emulator.pods("work")[0].get("status") or {})
                    .get("containerStatuses") or []) == 2)
    kube_emulator.append_logs("work", "multi", ["ERROR in app"], container="app")
    kube_emulator.append_logs("work", "multi", ["ERROR in sidecar", "ok"], container="sidecar")
    waiting = {"phase": "Pending", "containerStatuses": [
        {"name": "app", "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    kube_emulator.put_object(_pod("creating", "work", "app"))
    kube_emulator.put_object(_pod("creating", "work", "app", status=waiting))  # kubelet is slow
    target = [Target(pair="p", namespace="work", other="x", selector="app=worker")]
    result = await source.measure(_rule(), target, window=300, variables={})
    assert result["work"].value == 2
    assert "in 2 containers of 1 pod " in result["work"].message
    only = await source.measure(_rule(container="sidecar"), target, window=300, variables={})
    assert only["work"].value == 1 and only["work"].sample_count == 2


async def test_limit_bytes_bounds_what_is_read(kube_bluegreen, source):
    """At most limit_bytes per container are read, and the message says so."""
    pod = kube_bluegreen.pods(GREEN, "app=api")[0]["metadata"]["name"]
    kube_bluegreen.append_logs(GREEN, pod, [f"ERROR line {i:04d}" for i in range(1000)])
    result = await source.measure(_rule(limit_bytes=1024), _targets(), window=300,
                                  variables={})
    assert 0 < result[GREEN].value <= 1024 / len("ERROR line 0000\n") + 1
    assert "capped at limit_bytes in 1 container" in result[GREEN].message


async def test_long_first_line_is_truncated(kube_bluegreen, source):
    """Only one line is quoted, and shortened."""
    pod = kube_bluegreen.pods(GREEN, "app=api")[0]["metadata"]["name"]
    kube_bluegreen.append_logs(GREEN, pod, ["ERROR " + "x" * 500, "ERROR second"])
    result = await source.measure(_rule(), _targets(), window=300, variables={})
    assert "x" * 200 not in result[GREEN].message
    assert "...'" in result[GREEN].message and "second" not in result[GREEN].message


async def test_no_pods_is_no_data(kube_bluegreen, source):
    """A selector matching nothing is no data, not zero errors."""
    result = await source.measure(_rule(), _targets("app=nothing"), window=300, variables={})
    assert result[GREEN].status == "no_data"
    assert f"no pods matching 'app=nothing' in namespace {GREEN}" in result[GREEN].message


async def test_api_errors_are_errors(kube_bluegreen, source):
    """A failing pod list or log read gives `error` naming what failed."""
    kube_bluegreen.faults.add(status=503, verb="list", path="/pods")
    result = await source.measure(_rule(), _targets(), window=300, variables={})
    assert result[GREEN].status == "error"
    assert "listing pods" in result[GREEN].message and "HTTP 503" in result[GREEN].message
    kube_bluegreen.faults.clear()
    kube_bluegreen.faults.add(status=500, path="/log")
    result = await source.measure(_rule(), _targets(), window=300, variables={})
    assert result[GREEN].status == "error"
    assert "reading pods" in result[GREEN].message and "HTTP 500" in result[GREEN].message


async def test_unreachable_api_server_is_an_error():
    """Nothing listening: every namespace is `error`, quickly (the client's timeout)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = api_client_for(f"http://127.0.0.1:{port}")
    try:
        result = await LogSource(api).measure(_rule(), _targets(), window=300, variables={})
    finally:
        await api.close()
    assert {m.status for m in result.values()} == {"error"}
    assert "cannot reach the API server" in result[GREEN].message


async def test_pods_come_from_the_watch_cache_while_it_is_current(
        kube_bluegreen, kube_api, blue_green_watcher):
    """With the watch cache current, the pods are not listed (only their logs are read), a
    pod added a moment ago is read once the cache has it, and the selector still applies."""
    from functools import partial

    from gatekeeper.watching import PODS

    cached = LogSource(kube_api, pods=partial(blue_green_watcher.listed, PODS))
    kube_bluegreen.append_logs_by_selector(GREEN, "app=api", ["ERROR one"])
    kube_bluegreen.requests.clear()
    result = await cached.measure(_rule(), _targets(), window=300, variables={})
    assert result[GREEN].value == 2 and result[BLUE].value == 0  # 1 line x 2 pods
    assert kube_bluegreen.requests.records(verb="list") == []
    assert len(kube_bluegreen.requests.records(path_contains="/log")) == 4  # 2 pods x 2 ns
    kube_bluegreen.faults.add(status=500, verb="watch", times=100)
    kube_bluegreen.drop_watches()
    await wait_until(lambda: not any(s.live for s in blue_green_watcher.streams.values()),
                     within=10, what="every watch stream down")
    kube_bluegreen.requests.clear()
    result = await cached.measure(_rule(), _targets(), window=300, variables={})
    assert result[GREEN].value == 2  # listed afresh while the stream is down
    assert len(kube_bluegreen.requests.records(verb="list", path_contains="/pods")) >= 2
