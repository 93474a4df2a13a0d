"""Routes and state fail closed: a flip raced by someone pointing the routes at the same
namespace, split routes finished by a named target, the rollback target recorded on the
routes by the patch that moves them, and a state record that cannot be read or written.

Flips and rollbacks go through `Operations` (what the CLI and the service use) over HTTP
against the emulated API server; a person's edits go through another client, as `kubectl
edit` would (read, change, PUT with the resourceVersion read; again on 409).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper.config import PairConfig, load_config
from gatekeeper.kubeclient import TimeoutApiClient, read_json
from gatekeeper.operations import Operations
from gatekeeper.service.app import create_service
from gatekeeper.switches import ANNOTATION, SwitchRecord
from kube_emulator import Emulator, running
from kube_emulator.kubeconfig import DUMMY_TOKEN
from tests import service_support as support
from tests.fixtures.kube import BLUE, GREEN
from tests.reliability.test_kube_faults import IR, ROUTES, pair_config, three_route_seed

pytestmark = pytest.mark.timeout(120)

ROUNDS = 25
"""Seeded race rounds (the issue's reproduction: 6 of 25 left the routes split)."""


def _client(url: str, timeout: float = 2.0) -> client.ApiClient:
    configuration = client.Configuration(host=url)
    configuration.api_key = {"authorization": DUMMY_TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return TimeoutApiClient(configuration, request_timeout=timeout)


@dataclass
class Cluster:
    """The emulator, gatekeeper's operations, and a person's own client."""

    emulator: Emulator
    ops: Operations
    person: client.ApiClient

    @property
    def pair(self) -> PairConfig:
        return self.ops.config.pairs[0]

    def route(self, namespace: str, name: str) -> dict[str, Any]:
        body = self.emulator.get_object(IR, "IngressRoute", name, namespace)
        assert body is not None
        return body

    def pointed(self) -> dict[str, str]:
        """Where each route sends traffic now (read from the store, never faulted)."""
        return support.route_targets(self.emulator, ROUTES)

    async def kubectl_point(self, namespace: str, name: str, target: str, mark: str) -> None:
        """A person points one route at `target` (kubectl edit: GET, change, PUT)."""
        objects = client.CustomObjectsApi(self.person)
        for _ in range(10):
            body = await read_json(objects.get_namespaced_custom_object, "traefik.io",
                                   "v1alpha1", namespace, "ingressroutes", name)
            body["spec"]["routes"][0]["services"][0]["namespace"] = target
            body["metadata"].setdefault("annotations", {})["example.com/by"] = mark
            try:
                await read_json(objects.replace_namespaced_custom_object, "traefik.io",
                                "v1alpha1", namespace, "ingressroutes", name, body)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise AssertionError(f"the person could not edit {namespace}/{name}")


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """Blue active behind three routes, both namespaces Ready."""
    async with running(three_route_seed(), ready_delay=0.0, request_log_size=100_000,
                       seed=11) as emulator:
        api, person = _client(str(emulator.url)), _client(str(emulator.url))
        try:
            yield Cluster(emulator, Operations(api, pair_config()), person)
        finally:
            await api.close()
            await person.close()


# ---- a flip raced by a same-target edit ------------------------------------------------------


async def test_a_flip_raced_by_people_pointing_routes_the_same_way_never_splits(cluster, capsys):
    """25 seeded rounds: gatekeeper flips the three routes while a person (or Flux, Argo CD)
    points a random subset of them at the same target at a random moment. A route already
    pointing where the flip goes is success for that route: every round ends with all
    routes on the target, the flip reported done, and the person's edits kept."""
    emulator = cluster.emulator
    # Each route patch of gatekeeper's is processed a little later, as on a busy API server,
    # so that the person's edits land between gatekeeper's read and its patch.
    emulator.faults.add(delay=0.08, verb="patch", path="/ingressroutes/")
    rng = random.Random(11)
    outcomes: collections.Counter[str] = collections.Counter()
    splits = raced = 0
    problems: list[Any] = []
    for round_ in range(ROUNDS):
        source = next(iter(set(cluster.pointed().values())))
        target = cluster.pair.other(source)
        chosen = rng.sample(ROUTES, rng.randint(1, len(ROUTES)))
        mark = f"round-{round_}"

        async def person(chosen: list[tuple[str, str]] = chosen, target: str = target,
                         mark: str = mark) -> None:
            for namespace, name in chosen:
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                await cluster.kubectl_point(namespace, name, target, mark)

        editing = asyncio.create_task(person())
        result = await cluster.ops.flip(cluster.pair, to=target, trigger="test")
        await editing
        pointed = cluster.pointed()
        already = result.details.get("outcome", {}).get("already", [])
        raced += bool(already)
        outcomes["switched" if result.changed and not result.refused else
                  "refused" if result.refused else "nothing to do"] += 1
        if set(pointed.values()) != {target} or result.active != target or result.refused:
            problems.append((round_, pointed, result.reasons))
            splits += len(set(pointed.values())) > 1
            for namespace, name in ROUTES:  # repair by hand, so the next round is clean
                await cluster.kubectl_point(namespace, name, target, mark)
        for namespace, name in chosen:  # nothing of the person's edit was overwritten
            body = cluster.route(namespace, name)
            assert body["metadata"]["annotations"]["example.com/by"] == mark
    with capsys.disabled():
        print(f"\n[same-target race] rounds={ROUNDS} splits={splits} "
              f"rounds with a raced route={raced} outcomes={dict(outcomes)}")
    assert splits == 0 and not problems, problems
    assert raced >= 5, "the race must actually happen for the test to prove anything"


async def test_split_routes_are_finished_by_a_flip_naming_the_target(cluster):
    """Two of three routes pointed at green by hand: a plain flip is refused naming every
    route and how to finish; `flip --to green` moves the last route and is done; the
    routes then say where traffic came from, so a rollback finds blue."""
    await cluster.kubectl_point(ROUTES[0][0], ROUTES[0][1], GREEN, "person")
    await cluster.kubectl_point(ROUTES[2][0], ROUTES[2][1], GREEN, "person")
    refused = await cluster.ops.flip(cluster.pair)
    assert refused.refused and not refused.changed
    text = " ".join(refused.reasons)
    for namespace, name in ROUTES:
        assert f"{namespace}/{name}" in text, text
    assert f"--to {GREEN}" in text and f"--to {BLUE}" in text, text
    done = await cluster.ops.flip(cluster.pair, to=GREEN)
    assert done.changed and not done.refused and done.active == GREEN, done.reasons
    assert set(cluster.pointed().values()) == {GREEN}
    assert done.details["outcome"]["switched"] == [f"IngressRoute {ROUTES[1][0]}/{ROUTES[1][1]}"]
    back = await cluster.ops.rollback(cluster.pair)
    assert back.changed and back.active == BLUE, back.reasons
    assert set(cluster.pointed().values()) == {BLUE}


async def test_a_flip_raced_towards_another_namespace_is_refused_naming_the_route(cluster):
    """A person points one route outside the pair during the flip: gatekeeper reverts only
    its own routes, keeps the person's, and the refusal names that route."""
    emulator = cluster.emulator
    emulator.load([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}}])
    rule = emulator.faults.add(delay=0.3, verb="patch", path="/api-live-2$", times=1)
    flip = asyncio.create_task(cluster.ops.flip(cluster.pair))
    async with asyncio.timeout(5):
        while not rule.matched:  # noqa: ASYNC110 - the fault counter has no event to wait on
            await asyncio.sleep(0.01)
    await cluster.kubectl_point(ROUTES[2][0], ROUTES[2][1], "elsewhere", "person")
    result = await flip
    assert result.refused and not result.changed, result.reasons
    pointed = cluster.pointed()
    assert pointed[f"{ROUTES[2][0]}/{ROUTES[2][1]}"] == "elsewhere"
    assert {v for k, v in pointed.items() if "api-edge" not in k} == {BLUE}
    assert any(ROUTES[2][1] in r for r in result.reasons), result.reasons


# ---- the rollback target is recorded by the patch that moves the traffic -------------------


def _fill_state_configmap(emulator: Emulator) -> None:
    """The shared state ConfigMap almost at the API server's 1 MiB limit (other pairs, a
    long audit trail): every further write of gatekeeper's is refused with 422."""
    emulator.load([{"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "gatekeeper-state", "namespace": "gatekeeper"},
                    "data": {"other-pairs": "x" * (1_048_576 - 64)}}])


LARGE_BODY = pytest.mark.filterwarnings(
    "ignore:Sending a large body directly with raw bytes:ResourceWarning")
"""aiohttp warns on every request body over 1 MiB: writes to the full ConfigMap are such."""


@LARGE_BODY
async def test_a_flip_whose_state_write_failed_can_still_be_rolled_back(cluster):
    """The state ConfigMap is full: the flip moves the traffic (its state writes refused).
    A new process (a restart, another pipeline run) does not flip back on a retried plain
    flip, and rolls it back on request: the routes themselves say where traffic came from."""
    _fill_state_configmap(cluster.emulator)
    flipped = await cluster.ops.flip(cluster.pair)
    assert flipped.changed and flipped.active == GREEN, flipped.reasons
    assert any("state not written" in r for r in flipped.reasons), flipped.reasons
    for namespace, name in ROUTES:
        record = SwitchRecord.parse(cluster.route(namespace, name)["metadata"]["annotations"]
                                    [ANNOTATION])
        assert record is not None and (record.kind, record.source, record.target) == \
            ("flip", BLUE, GREEN)
    restarted = Operations(cluster.ops.api, pair_config())
    retried = await restarted.flip(cluster.pair)  # a pipeline's retry must not flip back
    assert not retried.changed and "nothing to do" in retried.reasons[0], retried.reasons
    assert set(cluster.pointed().values()) == {GREEN}
    back = await restarted.rollback(cluster.pair, trigger="alertmanager")
    assert back.changed and not back.refused and back.active == BLUE, back.reasons
    assert set(cluster.pointed().values()) == {BLUE}
    again = await restarted.rollback(cluster.pair)
    assert not again.changed and "already rolled back" in again.reasons[0], again.reasons


# ---- a stored state that cannot be read --------------------------------------------------------

SB, SG, SR = "state-blue", "state-green", "state-routing"
GOOD_LIFECYCLE = {"phase": "flipped", "since": 1.0, "active": SG, "dark": SB, "previous": SB,
                  "flipped_at": 1.0}
CORRUPTIONS = {
    "a JSON list": "[1, 2, 3]",
    "a JSON string": '"flipped"',
    "not JSON": "{'active': 'state-green'",
    "fields of the wrong type": json.dumps({"active": 5, "transitions": "none",
                                            "lifecycle": GOOD_LIFECYCLE}),
    "a lifecycle of the wrong type": json.dumps({"active": SG, "lifecycle": [GOOD_LIFECYCLE]}),
    "lifecycle fields of the wrong type": json.dumps(
        {"active": SG, "lifecycle": {**GOOD_LIFECYCLE, "flipped_at": "yesterday"}}),
    "a phase this version does not know": json.dumps(
        {"active": SG, "lifecycle": {**GOOD_LIFECYCLE, "phase": "canarying"}}),
}


def _green_live_with(record: str) -> list[dict[str, Any]]:
    """Green takes the traffic (moved there by hand: no switch record on the route), blue
    still Ready, and the pair's stored state record is `record`."""
    objects = support.seed(SB, SG, SR, green_image=support.NEW)
    route = next(o for o in objects if o["kind"] == "IngressRoute")
    route["spec"]["routes"][0]["services"][0]["namespace"] = SG
    return [*objects, {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "gatekeeper-state", "namespace": "gatekeeper"},
                       "data": {"api": record}}]


async def _service(tmp_path: Any, kube_api: client.ApiClient, aiohttp_server: Any
                   ) -> tuple[Any, str]:
    loaded = support.write_config(tmp_path, [("api", SB, SG, SR)], prometheus_url=None,
                                  rules=[support.PODS_READY_RULE], policy={"auto_flip": False})
    service = create_service(loaded, kube_api, token=support.TOKEN)
    server = await aiohttp_server(service.app)
    return service, str(server.make_url("")).rstrip("/")


def _alert(namespace: str) -> dict[str, Any]:
    labels = {"alertname": "ApiDown", "namespace": namespace, "severity": "critical"}
    return {"version": "4", "status": "firing", "receiver": "gatekeeper", "groupLabels": {},
            "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://am",
            "groupKey": "{}", "alerts": [{"status": "firing", "labels": labels,
                                          "annotations": {}, "fingerprint": "cafe",
                                          "startsAt": support.rfc3339()}]}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS), ids=lambda c: c.replace(" ", "-"))
async def test_an_unreadable_state_is_reported_rebuilt_from_the_routes_and_an_alert_rolls_back(
        corruption, tmp_path, kube_emulator, kube_api, aiohttp_server):
    """The stored record is corrupt (a bad `kubectl edit`, a newer version's phase): the
    service reports it (error log, metric, /readyz, the pair's `state_problem`), rebuilds
    the state from the routes (green takes traffic, blue can take it back), and a critical
    alert for green rolls back to blue. The corrupt text is kept for a person to read."""
    kube_emulator.load(_green_live_with(CORRUPTIONS[corruption]))
    with structlog.testing.capture_logs() as logs:
        service, url = await _service(tmp_path, kube_api, aiohttp_server)
        try:
            view = service.controller.views["api"]
            await support.wait_until(lambda: service.controller.ticks >= 2, within=10,
                                     what="two evaluations")
            async with aiohttp.ClientSession() as http:
                status, ready = await support.get_json(http, f"{url}/readyz")
                _, pair = await support.get_json(http, f"{url}/api/v1/pairs/api")
                async with http.get(f"{url}/metrics") as response:
                    metrics = await response.text()
                status_alert, answer = await support.post_json(
                    http, f"{url}/api/v1/alertmanager", _alert(SG))
        finally:
            await service.close()
    assert status == 200 and ready["status"] == "degraded", ready
    assert "pair api" in ready["problems"][0], ready
    assert pair["phase"] == "blocked" and pair["state_problem"], pair
    assert support.metric_value(metrics, "gatekeeper_state_unreadable_total", pair="api") == 1
    assert any(e["log_level"] == "error" and "unreadable" in e["event"] for e in logs), logs
    assert status_alert == 200 and answer["outcome"] == "rollback", answer
    assert await support.route_target(kube_api, SR) == SB
    assert view.state.phase == "rolled_back"
    stored = kube_emulator.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper")
    record = json.loads(stored["data"]["api"])
    assert record["lifecycle"]["active"] == SB and record["lifecycle"]["phase"] == "rolled_back", \
        record
    if corruption in ("a JSON list", "a JSON string", "not JSON", "fields of the wrong type"):
        assert record["unreadable_record"]["text"] == CORRUPTIONS[corruption]


async def test_an_unreadable_state_still_allows_a_manual_rollback(
        tmp_path, kube_emulator, kube_api, aiohttp_server):
    """The same for a person's `POST .../rollback` (it answered 500 before): it rolls back
    to the namespace the routes say can take the traffic back."""
    kube_emulator.load(_green_live_with("[]"))
    service, url = await _service(tmp_path, kube_api, aiohttp_server)
    try:
        await support.wait_until(lambda: service.controller.ticks >= 2, within=10,
                                 what="two evaluations")
        async with aiohttp.ClientSession() as http:
            status, body = await support.post_json(http, f"{url}/api/v1/pairs/api/rollback",
                                                   {"reason": "bad release"})
    finally:
        await service.close()
    assert status == 200 and body["changed"] and body["active"] == SB, body
    assert await support.route_target(kube_api, SR) == SB


@LARGE_BODY
async def test_after_a_flip_whose_state_write_failed_a_restarted_service_rolls_back_on_an_alert(
        tmp_path, kube_emulator, kube_api, aiohttp_server):
    """The state ConfigMap is full: a flip through the API moves the traffic but no state
    write lands. After a restart a critical alert for the new active rolls back (it was
    answered "ignored"), and a manual rollback is not refused for want of a record."""
    kube_emulator.load(support.seed(SB, SG, SR, green_image=support.NEW))
    _fill_state_configmap(kube_emulator)
    service, url = await _service(tmp_path, kube_api, aiohttp_server)
    try:
        await support.wait_until(lambda: service.controller.ticks >= 1, within=10,
                                 what="first evaluation")
        async with aiohttp.ClientSession() as http:
            status, body = await support.post_json(http, f"{url}/api/v1/pairs/api/flip",
                                                   {"force": True})
        assert status == 200 and body["changed"], body
        assert any("state not written" in r for r in body["reasons"]), body
    finally:
        await service.close()
    assert await support.route_target(kube_api, SR) == SG
    for restart in ("alert", "manual"):
        service, url = await _service(tmp_path, kube_api, aiohttp_server)
        try:
            await support.wait_until(lambda s=service: s.controller.ticks >= 1, within=10,
                                     what="first evaluation after the restart")
            async with aiohttp.ClientSession() as http:
                if restart == "alert":
                    status, body = await support.post_json(
                        http, f"{url}/api/v1/alertmanager", _alert(SG))
                    assert status == 200 and body["outcome"] == "rollback", body
                else:
                    status, body = await support.post_json(
                        http, f"{url}/api/v1/pairs/api/rollback", {})
                    assert status == 200 and not body["refused"], body
                    assert "already rolled back" in body["reasons"][0], body
        finally:
            await service.close()
        assert await support.route_target(kube_api, SR) == SB


async def test_split_routes_are_finished_through_the_api_by_a_flip_naming_the_target(
        tmp_path, kube_emulator, kube_api, aiohttp_server):
    """The service's pair has two routes, one of them pointed at green by a person: a flip
    without a target answers 409 saying to name one; `{"to": green}` finishes the switch."""
    objects = support.seed(SB, SG, SR, green_image=support.NEW)
    second = copy.deepcopy(next(o for o in objects if o["kind"] == "IngressRoute"))
    second["metadata"]["name"] = "api-live-2"
    second["spec"]["routes"][0]["services"][0]["namespace"] = SG
    kube_emulator.load([*objects, second])
    support.write_config(tmp_path, [("api", SB, SG, SR)], prometheus_url=None,
                         rules=[support.PODS_READY_RULE], policy={"auto_flip": False})
    path = tmp_path / "gatekeeper.yaml"
    document = yaml.safe_load(path.read_text())
    document["pairs"][0]["routes"].append({"name": "api-live-2", "namespace": SR})
    path.write_text(yaml.safe_dump(document))
    service = create_service(load_config(path), kube_api, token=support.TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    try:
        await support.wait_until(lambda: service.controller.ticks >= 1, within=10,
                                 what="first evaluation")
        async with aiohttp.ClientSession() as http:
            flip = f"{url}/api/v1/pairs/api/flip"
            status, body = await support.post_json(http, flip, {})
            assert status == 409 and any("`to`" in r for r in body["reasons"]), body
            assert any("api-live-2" in r for r in body["reasons"]), body
            status, body = await support.post_json(http, flip, {"to": SG})
            assert status == 200 and body["changed"] and body["active"] == SG, body
    finally:
        await service.close()
    assert await support.route_target(kube_api, SR) == SG
    stored = kube_emulator.get_object(IR, "IngressRoute", "api-live-2", SR)
    assert stored["spec"]["routes"][0]["services"][0]["namespace"] == SG


async def test_a_flip_requested_before_the_first_evaluation_can_still_be_rolled_back(
        tmp_path, kube_emulator, kube_api):
    """A flip requested before the service's first tick saw the pair (the control loop not
    started yet): the lifecycle still records where traffic came from, so an alert rolls it
    back (it answered "phase flipped: no release to roll back": a flaky two-replica test)."""
    kube_emulator.load(support.seed(SB, SG, SR, green_image=support.NEW))
    loaded = support.write_config(tmp_path, [("api", SB, SG, SR)], prometheus_url=None,
                                  rules=[support.PODS_READY_RULE], policy={"auto_flip": False})
    service = create_service(loaded, kube_api, token=support.TOKEN)
    controller = service.controller
    try:
        assert controller.ticks == 0
        flipped = await controller.request("api", "flip", force=True)
        assert flipped.changed and controller.views["api"].state.previous == SB, flipped
        outcome, answer = await controller.alert("api", "ApiDown", 0.0)
        assert outcome == "rollback", answer
    finally:
        await service.close()
    assert await support.route_target(kube_api, SR) == SB
