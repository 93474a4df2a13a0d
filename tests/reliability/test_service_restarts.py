"""`gatekeeper serve` killed and restarted, two replicas, and watches cut mid-release.

The service runs as a subprocess (`python -m gatekeeper serve`) against the emulated API
server in this test's process; kill points are requests the emulator holds (see
test_restarts.py). After a restart the routes, the stored state and the lifecycle must
agree, and the action must have happened exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from kube_emulator import Emulator, FaultRule, running
from tests.fixtures.kube import BLUE, GREEN
from tests.reliability.test_kube_faults import IR, ROUTES, three_route_seed
from tests.service_support import (
    PODS_READY_RULE,
    TOKEN,
    ServedAPI,
    free_port,
    rfc3339,
    route_targets,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
HOLD = 30.0
LEASE = {"enabled": True, "lease_name": "gatekeeper-leader", "namespace": "gatekeeper",
         "lease_duration": "3s", "renew_deadline": "2s", "retry_period": "0.5s"}


@dataclass
class Replica(ServedAPI):
    """One `gatekeeper serve` process."""

    name: str
    url: str
    process: asyncio.subprocess.Process
    output: list[str] = field(default_factory=list)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)


@dataclass
class Cluster:
    emulator: Emulator
    config: Path
    replicas: list[Replica] = field(default_factory=list)

    def pointed(self) -> dict[str, str]:
        return route_targets(self.emulator, ROUTES)

    def state(self) -> dict[str, Any]:
        body = self.emulator.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper")
        return dict(json.loads(body["data"]["api"])) if body else {}

    def switches(self) -> int:
        """Successful route PATCHes so far (each route moved counts one)."""
        return sum(1 for r in self.emulator.requests.records(method="PATCH")
                   if "/ingressroutes/" in r.path and r.status == 200)

    async def start(self, name: str) -> Replica:
        """Start a replica and wait until it answers /readyz."""
        port = free_port()
        env = {**os.environ, "GATEKEEPER_TOKEN": TOKEN, "POD_NAME": name,
               "GATEKEEPER_LOG_FORMAT": "json"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatekeeper", "serve", "--config", str(self.config),
            "--host", "127.0.0.1", "--port", str(port), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        replica = Replica(name, f"http://127.0.0.1:{port}", process)
        self.replicas.append(replica)

        async def ready() -> bool:
            try:
                status, _ = await replica.get("/readyz")
            except aiohttp.ClientError:
                return False
            return status == 200

        await wait_until(ready, within=30, interval=0.1, what=f"{name} ready")
        return replica


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Three routes on blue, green holding a new release; a service configuration."""
    objects = three_route_seed()
    for item in objects:
        if item["kind"] == "Deployment" and item["metadata"]["namespace"] == GREEN:
            container = item["spec"]["template"]["spec"]["containers"][0]
            container["image"] = "registry.example.com/api:1.5.0"
    async with running(objects, ready_delay=0.0, request_log_size=50_000,
                       bookmark_interval=0.2) as emulator:
        kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": [PODS_READY_RULE]}))
        config = {
            "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig),
                           "request_timeout": "5s"},
            "evaluation": {"interval": "1s", "window": "10s", "source_timeout": "3s"},
            "rule_files": ["rules.yaml"],
            "pairs": [{"name": "api", "namespaces": [BLUE, GREEN], "selector": "app=api",
                       "routes": [{"name": n, "namespace": ns} for ns, n in ROUTES]}],
            "policy": {"auto_flip": False, "observation": "1h", "cooldown": "0s",
                       "ready_timeout": "10s"},
            "state": {"namespace": "gatekeeper"},
            "leader_election": LEASE,
        }
        path = tmp_path / "gatekeeper.yaml"
        path.write_text(yaml.safe_dump(config))
        state = Cluster(emulator, path)
        try:
            yield state
        finally:
            for replica in state.replicas:
                replica.kill()
                with contextlib.suppress(ProcessLookupError):
                    await replica.process.wait()


async def leader(replica: Replica) -> bool:
    """Whether the replica says it holds the Lease."""
    try:
        status, body = await replica.get("/readyz")
    except aiohttp.ClientError:
        return False
    return status == 200 and bool(body.get("leader"))


async def agreed(cluster: Cluster, replica: Replica, expected: str) -> bool:
    """Routes, stored state, lifecycle and the API all say `expected` is active."""
    if set(cluster.pointed().values()) != {expected}:
        return False
    state = cluster.state()
    lifecycle = state.get("lifecycle") or {}
    if lifecycle.get("active") != expected:
        return False
    if (state.get("last_action") or {}).get("status") == "started":
        return False
    try:
        status, body = await replica.get("/api/v1/pairs/api")
    except aiohttp.ClientError:
        return False
    return status == 200 and body.get("active") == expected


def hold(emulator: Emulator, *, verb: str, path: str, applied: bool) -> FaultRule:
    if applied:
        return emulator.faults.add(delay=HOLD, after=True, verb=verb, path=path, times=1)
    return emulator.faults.add(delay=HOLD, status=503, verb=verb, path=path, times=1)


KILL_POINTS = [
    ("before the first route patch", f"/ingressroutes/{ROUTES[0][1]}$", False),
    ("between routes 1 and 2", f"/ingressroutes/{ROUTES[1][1]}$", False),
    ("after the last patch, before the state write", f"/ingressroutes/{ROUTES[2][1]}$", True),
]


async def kill_during(cluster: Cluster, replica: Replica, rule: FaultRule, path: str,
                      body: dict[str, Any]) -> None:
    """POST `path` to the replica and SIGKILL it once the emulator holds `rule`'s request."""
    request = asyncio.create_task(replica.post(path, body))
    async with asyncio.timeout(30):
        while not rule.matched:  # noqa: ASYNC110 - the fault counter has no event to wait on
            await asyncio.sleep(0.005)
    replica.kill()
    await replica.process.wait()
    with contextlib.suppress(aiohttp.ClientError):
        await request


@pytest.mark.parametrize(("point", "path", "applied"), KILL_POINTS,
                         ids=[p[0].replace(" ", "-") for p in KILL_POINTS])
async def test_the_service_killed_during_a_flip_recovers_exactly_once(cluster, point, path,
                                                                      applied):
    """SIGKILL while a requested flip patches the routes; a new replica takes the Lease
    and converges: every route, the stored state and the lifecycle agree on one namespace,
    and no route moved twice. A person's retry of the flip then completes it once."""
    first = await cluster.start("gatekeeper-a")
    await wait_until(lambda: leader(first), within=15, what="a leader")
    rule = hold(cluster.emulator, verb="patch", path=path, applied=applied)
    await kill_during(cluster, first, rule, "/api/v1/pairs/api/flip", {"force": True})
    killed_at = time.monotonic()
    second = await cluster.start("gatekeeper-b")
    await wait_until(lambda: leader(second), within=15, what="the new leader")
    took_over = time.monotonic() - killed_at
    expected = GREEN if applied else None

    async def converged() -> bool:
        pointed = set(cluster.pointed().values())
        if len(pointed) != 1:
            return False
        return await agreed(cluster, second, next(iter(pointed)))

    try:
        await wait_until(converged, within=20, what=f"routes and state agree ({point})")
    except AssertionError:
        state = cluster.state()
        _, api = await second.get("/api/v1/pairs/api")
        raise AssertionError(
            f"{point}: routes {cluster.pointed()}; state active {state.get('active')}, "
            f"last action {state.get('last_action')}; lifecycle "
            f"{(state.get('lifecycle') or {}).get('active')} "
            f"{(state.get('lifecycle') or {}).get('phase')}; API {api.get('active')} "
            f"{api.get('phase')} {api.get('reason')}") from None
    active = next(iter(cluster.pointed().values()))
    if expected is not None:
        assert active == expected
    if active == BLUE:  # the flip did not survive the kill: a person retries it
        status, body = await second.post("/api/v1/pairs/api/flip", {"force": True})
        assert status == 200 and body["changed"], body
        await wait_until(lambda: agreed(cluster, second, GREEN), within=10, what="the retry")
    held = 1 if applied else 0  # the held, applied patch is logged once answered
    assert cluster.switches() + held == len(ROUTES), "a route moved more than once"
    state = cluster.state()
    assert state["counters"].get("flip") == 1, state["counters"]
    print(f"\n[service killed: {point}] new leader after {took_over:.1f}s; "
          f"converged on {active}; {len(ROUTES)} route moves in all")


def webhook_payload(namespace: str) -> dict[str, Any]:
    labels = {"alertname": "ApiDown", "namespace": namespace, "severity": "critical"}
    return {"version": "4", "status": "firing", "receiver": "gatekeeper", "groupLabels": {},
            "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://am",
            "groupKey": "{}", "alerts": [{"status": "firing", "labels": labels,
                                          "annotations": {}, "fingerprint": "dead",
                                          "startsAt": rfc3339()}]}


@pytest.mark.parametrize(("point", "path", "applied"), KILL_POINTS,
                         ids=[p[0].replace(" ", "-") for p in KILL_POINTS])
async def test_the_service_killed_during_a_webhook_rollback_recovers_exactly_once(
        cluster, point, path, applied):
    """After a flip, Alertmanager's webhook starts a rollback and the leader is killed
    mid-way: the next leader completes the rollback (its target is Ready), or, killed
    before any route moved, Alertmanager's repeated notification does; once."""
    first = await cluster.start("gatekeeper-a")
    await wait_until(lambda: leader(first), within=15, what="a leader")
    status, body = await first.post("/api/v1/pairs/api/flip", {"force": True})
    assert status == 200 and body["changed"], body
    moves_before = cluster.switches()
    rule = hold(cluster.emulator, verb="patch", path=path, applied=applied)
    await kill_during(cluster, first, rule, "/api/v1/alertmanager", webhook_payload(GREEN))
    second = await cluster.start("gatekeeper-b")
    await wait_until(lambda: leader(second), within=15, what="the new leader")
    if set(cluster.pointed().values()) == {GREEN}:  # no route moved before the kill
        await wait_until(lambda: agreed(cluster, second, GREEN), within=20, what="agreed")
        status, body = await second.post("/api/v1/alertmanager", webhook_payload(GREEN))
        assert status == 200 and body["outcome"] == "rollback", body
    try:
        await wait_until(lambda: agreed(cluster, second, BLUE), within=20,
                         what=f"the rollback completed ({point})")
    except AssertionError:
        state = cluster.state()
        raise AssertionError(f"{point}: routes {cluster.pointed()}; state {state.get('active')}"
                             f" {state.get('last_action')}; lifecycle "
                             f"{state.get('lifecycle')}") from None
    held = 1 if applied else 0
    assert cluster.switches() + held - moves_before == len(ROUTES), "a route moved twice"
    assert cluster.state()["counters"].get("rollback") == 1
    print(f"\n[service killed during a webhook rollback: {point}] rolled back once")


async def test_of_two_replicas_only_the_holder_acts_and_the_other_takes_over_once(cluster):
    """Two replicas: the follower refuses actions (503) while serving reads; the leader
    flips; killed, its Lease is taken by the other within the lease duration, which does
    not flip again."""
    first = await cluster.start("gatekeeper-a")
    second = await cluster.start("gatekeeper-b")
    await wait_until(lambda: leader(first), within=15, what="a leader")
    assert not await leader(second)
    status, body = await second.post("/api/v1/pairs/api/flip", {"force": True})
    assert status == 503 and "leader" in body["error"], body
    status, body = await second.get("/api/v1/pairs/api")
    assert status == 200 and body["active"] == BLUE
    assert cluster.switches() == 0
    status, body = await first.post("/api/v1/pairs/api/flip", {"force": True})
    assert status == 200 and body["changed"], body
    assert cluster.switches() == len(ROUTES)
    first.kill()
    await first.process.wait()
    killed = time.monotonic()
    await wait_until(lambda: leader(second), within=15, interval=0.05, what="the takeover")
    took_over = time.monotonic() - killed
    lease = 3.0
    assert took_over <= lease + 2.0, f"takeover after {took_over:.1f}s (lease {lease:g}s)"
    ticks_before = (await second.get("/api/v1/pairs/api"))[1]
    await asyncio.sleep(4.0)  # several ticks as the leader
    assert await agreed(cluster, second, GREEN)
    assert cluster.switches() == len(ROUTES), "the new leader repeated the flip"
    assert cluster.state()["counters"].get("flip") == 1
    status, body = await second.post("/api/v1/pairs/api/flip", {})
    assert status in (200, 409) and body["changed"] is False, body
    print(f"\n[two replicas] follower refused 1 action; leader flipped; killed; takeover "
          f"after {took_over:.1f}s (lease {lease:g}s); 0 repeated actions "
          f"(phase {ticks_before.get('phase')})")


async def test_watches_dropped_and_expired_mid_release_keep_the_state_right(cluster):
    """While a release is flipped and then rolled back by hand (a person patches all three
    routes), every watch is dropped and expired (410) again and again: the service follows
    each change, its state agrees with the routes, and it takes no action of its own."""
    emulator = cluster.emulator
    first = await cluster.start("gatekeeper-a")
    await wait_until(lambda: leader(first), within=15, what="a leader")
    await wait_until(lambda: emulator.open_watches > 0, within=10, what="watches open")
    stop = asyncio.Event()
    disruptions = 0

    async def disrupt() -> None:
        nonlocal disruptions
        while not stop.is_set():
            await asyncio.sleep(0.3)
            if disruptions % 2:
                emulator.expire_watches(drop=True)  # reconnecting from an old version: 410
            else:
                emulator.drop_watches()
            disruptions += 1

    task = asyncio.create_task(disrupt())
    try:
        status, body = await first.post("/api/v1/pairs/api/flip", {"force": True})
        assert status == 200 and body["changed"], body
        await wait_until(lambda: agreed(cluster, first, GREEN), within=15, what="flipped")
        moves = cluster.switches()
        for namespace, name in ROUTES:  # a person rolls back with kubectl
            route = emulator.get_object(IR, "IngressRoute", name, namespace)
            route["spec"]["routes"][0]["services"][0]["namespace"] = BLUE
            emulator.put_object(route)
        await wait_until(lambda: agreed(cluster, first, BLUE), within=15,
                         what="the manual rollback followed")
        await asyncio.sleep(2.0)
        assert await agreed(cluster, first, BLUE)
        assert cluster.switches() == moves, "gatekeeper acted against the person's change"
    finally:
        stop.set()
        await task
    watches = len(emulator.requests.records(verb="watch"))
    relists = len(emulator.requests.records(verb="list"))
    print(f"\n[watches] {disruptions} disruptions (drops, and expiries answered 410 Gone), "
          f"{watches} watch requests, {relists} lists (re-lists after 410 included); state "
          "followed the flip and the manual rollback; 0 actions of its own")
    assert disruptions >= 5 and watches >= 5
