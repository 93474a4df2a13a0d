"""Sharded replicas as `gatekeeper serve` wires them, against the emulated cluster over HTTP:
the pairs split between two, then three replicas; each evaluates only its own; a flip and an
Alertmanager notification sent to a replica that does not own the pair reach the owner; a
killed replica's pairs are taken over; no pair is ever acted on by two replicas."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from gatekeeper.kubeclient import read_json
from gatekeeper.ring import assign as ring_assign
from gatekeeper.service.app import Service, create_service
from gatekeeper.service.forwarding import SERVED_BY
from tests.fixtures.kube import api_client_for
from tests.service_support import (
    NEW,
    OLD,
    PODS_READY_RULE,
    TOKEN,
    deployment,
    get_json,
    ingressroute,
    namespace,
    post_json,
    rfc3339,
    route_target,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

PAIRS = [(f"app{k}", f"app{k}-blue", f"app{k}-green", f"app{k}-routing") for k in range(8)]
# A renew deadline of seconds: a loaded CI machine must not drop a fence by being slow.
ELECTION = {"enabled": True, "lease_duration": "4s", "renew_deadline": "3s",
            "retry_period": "0.3s"}
GENEROUS = 30.0


def cluster() -> list[dict[str, Any]]:
    objects = [namespace("gatekeeper")]
    for _name, blue, green, routing in PAIRS:
        objects += [namespace(blue), namespace(green), namespace(routing),
                    deployment(blue, OLD, 2), deployment(green, NEW, 2),
                    ingressroute(routing, blue)]
    return objects


class Ring:
    """The replicas of one test, each with its own client and HTTP server."""

    def __init__(self, tmp_path, kube_emulator, aiohttp_server) -> None:
        kube_emulator.load(cluster())
        self.loaded = write_config(tmp_path, PAIRS, prometheus_url=None,
                                   rules=[PODS_READY_RULE], policy={"auto_flip": False},
                                   leader_election=ELECTION,
                                   sharding={"enabled": True, "shards": 8})
        self.emulator_url = str(kube_emulator.url)
        self.start_server = aiohttp_server
        self.services: list[Service] = []
        self.servers: list[Any] = []
        self.urls: list[str] = []
        self.clients: list[client.ApiClient] = []
        self.overlaps: list[tuple[str, list[str]]] = []

    async def add(self, name: str, *, watch: bool = False) -> Service:
        from tests.service_support import free_port

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = self.loaded.config.model_copy(update={
            "sharding": self.loaded.config.sharding.model_copy(update={"address": url}),
            "leader_election": self.loaded.config.leader_election.model_copy(
                update={"identity": name})})
        api = api_client_for(self.emulator_url)
        self.clients.append(api)
        service = create_service(replace(self.loaded, config=config), api, token=TOKEN,
                                 watch=watch)
        self.servers.append(await self.start_server(service.app, port=port))
        self.services.append(service)
        self.urls.append(url)
        return service

    def live(self) -> list[Service]:
        return [s for s, server in zip(self.services, self.servers, strict=True)
                if server.runner.server is not None]

    def sample(self) -> None:
        """Record any pair two live replicas would act on at this instant."""
        for pair, *_ in PAIRS:
            acting = [s.controller.leadership.identity for s in self.live()
                      if s.controller.acts_on(pair)]
            if len(acting) > 1:
                self.overlaps.append((pair, acting))

    def split(self) -> bool:
        """Every pair has exactly one live owner, and every live replica owns some."""
        live = self.live()
        owners = [[s for s in live if s.controller.acts_on(p)] for p, *_ in PAIRS]
        return all(len(o) == 1 for o in owners) and all(
            any(s.controller.acts_on(p) for p, *_ in PAIRS) for s in live)

    async def until(self, predicate, what: str) -> None:
        for _ in range(int(GENEROUS / 0.02)):
            self.sample()
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting until {what}")

    async def settle(self) -> None:
        """Split, and every owner evaluated each of its pairs since."""
        await self.until(self.split, "the replicas split the pairs")
        for service in self.live():
            ticks = service.controller.ticks
            await self.until(lambda s=service, t=ticks: s.controller.ticks >= t + 2,
                             "two more ticks")

    async def close(self) -> None:
        for server in self.servers:
            await server.close()
        for service in self.services:
            await service.close()
        for api in self.clients:
            await api.close()


@pytest.fixture
async def ring(tmp_path, kube_emulator, aiohttp_server):
    made = Ring(tmp_path, kube_emulator, aiohttp_server)
    yield made
    await made.close()


def owner(ring: Ring, pair: str) -> int:
    return next(i for i, s in enumerate(ring.services) if s.controller.acts_on(pair))


async def stored(kube_api, pair: str) -> dict[str, Any]:
    body = await read_json(client.CoreV1Api(kube_api).read_namespaced_config_map,
                           "gatekeeper-state", "gatekeeper")
    return json.loads(body["data"][pair])


async def test_replicas_split_the_pairs_and_forward_to_the_owner(ring, kube_api) -> None:
    await ring.add("replica-a")
    await ring.add("replica-b")
    await ring.settle()

    # Each replica evaluates its own pairs only (one Evaluator call over them).
    for service in ring.services:
        before = {p: v.evaluated_at for p, v in service.controller.views.items()}
        ticks = service.controller.ticks
        await ring.until(lambda s=service, t=ticks: s.controller.ticks >= t + 2, "ticks")
        refreshed = {p for p, v in service.controller.views.items()
                     if v.evaluated_at != before[p]}
        mine = {p for p, *_ in PAIRS if service.controller.acts_on(p)}
        assert refreshed and refreshed <= mine

    c = await ring.add("replica-c")
    await ring.settle()
    assert any(c.controller.acts_on(p) for p, *_ in PAIRS)
    # A replica exports the series of its own pairs only (a moved pair's are dropped).
    async with aiohttp.ClientSession() as http:
        for url, service in zip(ring.urls, ring.services, strict=True):
            async with http.get(f"{url}/metrics") as response:
                text = await response.text()
            shown = set(re.findall(r'^gatekeeper_phase\{pair="([^"]+)"', text, re.M))
            assert shown == {p for p, *_ in PAIRS if service.controller.acts_on(p)}

    # A flip POSTed to a replica that does not own the pair is done by the owner.
    name, blue, green, routing = PAIRS[0]
    acting = owner(ring, name)
    other = (acting + 1) % 3
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ring.urls[other]}/api/v1/pairs/{name}/flip",
                             json={"force": True},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            body = await response.json()
            assert response.status == 200 and body["changed"] is True, body
            assert response.headers[SERVED_BY] == f"replica-{'abc'[acting]}"
        assert await route_target(kube_api, routing) == green
        record = await stored(kube_api, name)
        assert record["last_action"]["holder"]["lease"] == f"replica-{'abc'[acting]}"

        # /readyz says which shards each replica acts on: all of them, each once.
        async def every_shard_once() -> bool:
            held = [(await get_json(http, f"{url}/readyz"))[1]["shards"] for url in ring.urls]
            return sorted(s for shards in held for s in shards) == list(range(8))

        await ring.until(every_shard_once, "/readyz lists every shard once")
        # Any replica answers reads: the pair through its owner, the list from all.
        status, detail = await get_json(http, f"{ring.urls[other]}/api/v1/pairs/{name}")
        assert status == 200 and detail["leader"] is True and detail["active"] == green
        status, listed = await get_json(http, f"{ring.urls[other]}/api/v1/pairs")
        assert status == 200 and [p["pair"] for p in listed["pairs"]] == [
            p for p, *_ in PAIRS]
        assert all(p["phase"] is not None for p in listed["pairs"])

        # Alertmanager's webhook reaching a non-owner rolls the owner's pair back.
        alert = {"version": "4", "status": "firing", "alerts": [{
            "status": "firing", "fingerprint": "f1", "startsAt": rfc3339(),
            "labels": {"severity": "critical", "namespace": green, "pair": name}}]}
        await ring.until(lambda: ring.services[acting].controller.views[name].state.phase
                         == "flipped", "the owner recorded the flip")
        status, body = await post_json(http, f"{ring.urls[other]}/api/v1/alertmanager", alert)
        assert status == 200 and body["outcome"] == "rollback", body
        assert [r["pair"] for r in body["results"]] == [name]
    assert await route_target(kube_api, routing) == blue
    assert (await stored(kube_api, name))["last_action"]["holder"]["lease"] == \
        f"replica-{'abc'[acting]}"
    assert ring.overlaps == []


async def test_a_killed_replicas_pairs_are_taken_over(ring, kube_api) -> None:
    """A flip POSTed to the survivor right after the owner died waits for the takeover."""
    a = await ring.add("replica-a")
    await ring.add("replica-b")
    await ring.settle()
    name, _blue, green, routing = next(p for p in PAIRS if a.controller.acts_on(p[0]))
    a.controller.leadership.release_on_cancel = False  # dies: its Leases are left to expire
    await ring.servers[0].close()
    assert not ring.services[1].controller.acts_on(name)
    # At once, while the dead replica still looks like the owner: the survivor cannot reach
    # it, waits for the shard to move (to itself), and does the flip: no 503.
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, f"{ring.urls[1]}/api/v1/pairs/{name}/flip",
                                       {"force": True})
    assert status == 200 and body["changed"] is True, body
    await ring.until(lambda: all(ring.services[1].controller.acts_on(p) for p, *_ in PAIRS),
                     "the survivor took every pair")
    assert await route_target(kube_api, routing) == green
    assert ring.overlaps == []


async def test_a_shard_moves_only_after_the_state_write_that_ends_an_action(
        ring, kube_emulator, kube_api) -> None:
    """The state write after a flip runs under the pair's shard guard: a replica that joins
    while the old owner's write is slow gets the pair only once that write has landed (the
    shard was once released as soon as the action returned, and the old owner's write of
    the pair landed after the new owner had started acting on it)."""
    a = await ring.add("replica-a")
    await ring.settle()
    moving = {shard for shard, member in ring_assign(8, ["replica-a", "replica-b"]).items()
              if member == "replica-b"}
    name, _blue, green, routing = next(
        p for p in PAIRS if a.controller.leadership.shard_of(p[0]) in moving)
    kube_emulator.faults.add(delay=1.0, verb="put", path="configmaps/gatekeeper-state")
    async with aiohttp.ClientSession() as http:
        flip = asyncio.create_task(post_json(http, f"{ring.urls[0]}/api/v1/pairs/{name}/flip",
                                             {"force": True}))
        await ring.until(lambda: a.controller.dispatcher.inflight, "the flip runs")
        b = await ring.add("replica-b")
        await ring.until(lambda: b.controller.acts_on(name), "replica-b took the pair")
        record = await stored(kube_api, name)
        status, body = await flip
    assert status == 200 and body["changed"] is True, body
    assert await route_target(kube_api, routing) == green
    # The old owner's last write (the flip's phase transition) came first.
    assert any(t.get("kind") == "phase" and t.get("to") == "flipped"
               for t in record["transitions"]), record["transitions"]
    assert ring.overlaps == []


async def test_each_replica_watches_only_the_namespaces_of_its_own_pairs(ring) -> None:
    """The watch streams follow the shards: each replica streams the Pods, Deployments and
    routes of the pairs it owns, and when a third replica joins and takes shards, the
    streams of the pairs that moved stop on the old owner and start on the new one."""

    def own(service: Service) -> set[str]:
        return {ns for name, *spaces in PAIRS if service.controller.acts_on(name)
                for ns in spaces}

    def watching_own(service: Service) -> bool:
        watcher = service.controller.ticker.cache
        return {t.namespace for t in watcher.targets} == own(service) and all(
            s.live for s in watcher.streams.values())

    def settled() -> bool:
        return ring.split() and all(watching_own(s) for s in ring.live())

    for name in ("replica-a", "replica-b"):
        await ring.add(name, watch=True)
    await ring.until(settled, "each replica watches its own pairs")
    before = {s.controller.leadership.identity: own(s) for s in ring.live()}
    await ring.add("replica-c", watch=True)
    await ring.until(settled, "the streams followed the rebalancing")
    after = {s.controller.leadership.identity: own(s) for s in ring.live()}
    assert after["replica-c"] and all(after[n] <= before[n] for n in before)
    assert any(after[n] < before[n] for n in before)  # some pairs moved to replica-c
    assert ring.overlaps == []
