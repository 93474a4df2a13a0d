"""Pairs as BlueGreenPair objects, through kubernetes_asyncio over HTTP against the emulator
serving the generated CRD: each pair's record in its own object's status (1,000 of them,
none near the 1 MiB object limit the shared ConfigMap hit), optimistic concurrency on the
status, invalid objects marked with a condition naming the field while the others proceed,
Events on the pair object."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from gatekeeper import crd, events, pairobjects
from gatekeeper.config import Config, StateConfig
from gatekeeper.lifecycle import ReleaseState
from gatekeeper.state import PairState, StateError, StateStore

SETTINGS = StateConfig(configmap="gatekeeper-state", namespace="gatekeeper", history=20)
MIB = 1024 * 1024


def pair_object(name: str, namespace: str = "team", *, blue: str = "blue",
                green: str = "green", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": crd.API_VERSION, "kind": crd.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"namespaces": [f"{name}-{blue}", f"{name}-{green}"],
                     "routes": [{"name": f"{name}-live", "namespace": "routing"}], **spec}}


def config(**extra: Any) -> Config:
    return Config.model_validate({"state": SETTINGS.model_dump(), **extra})


@pytest.fixture
def cluster(kube_emulator: Any) -> Any:
    kube_emulator.load([crd.definition()] + [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        for ns in ("team", "other-team", "gatekeeper")])
    return kube_emulator


def full_history(state: PairState, index: int) -> None:
    """A busy pair's record: every phase change of a long release history (~6 KB)."""
    state.release = ReleaseState(phase="validating", active=f"p{index}-blue",
                                 dark=f"p{index}-green", reason="gates passing")
    for step in range(SETTINGS.history):
        state.transition("phase", at=1_700_000_000.0 + step, history=SETTINGS.history,
                         source="validating", target="ready", trigger="gates",
                         reason=f"release 1.{step}.0 of pair {index}: every gate passed "
                                "with the dark's error rate and p99 within the budget " * 2)
    state.count("flip")


async def test_a_thousand_pairs_each_keep_their_record_in_their_own_status(cluster,
                                                                          kube_api):
    cluster.load([pair_object(f"p{i}") for i in range(1000)])
    resolved, found = await pairobjects.resolve(kube_api, config())
    assert len(resolved.pairs) == 1000 and found.rejected == []
    store = StateStore(kube_api, SETTINGS)
    limit = asyncio.Semaphore(16)

    async def write(pair: Any) -> PairState:
        index = int(pair.name[1:])
        async with limit:
            return await store.update(pair, lambda s: full_history(s, index))

    written = await asyncio.gather(*(write(pair) for pair in resolved.pairs))
    assert all(len(state.transitions) == SETTINGS.history for state in written)
    objects = cluster.list_objects(crd.API_VERSION, crd.KIND)
    sizes = [len(json.dumps(o)) for o in objects]
    assert sum(sizes) > 4 * MIB  # one ConfigMap holding all of them could not exist
    assert max(sizes) < 64 * 1024
    by_name = {o["metadata"]["name"]: o for o in objects}
    for index in (0, 499, 999):
        status = by_name[f"p{index}"]["status"]
        assert status["phase"] == "validating" and status["active"] == f"p{index}-blue"
        assert status["record"]["lifecycle"]["dark"] == f"p{index}-green"
        assert len(status["transitions"]) == SETTINGS.history
        assert f"of pair {index}:" in status["transitions"][0]["reason"]
        assert status["observedGeneration"] == 1
    assert cluster.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper") is None
    again = await store.load(resolved.pairs[7])
    assert again.phase == "validating" and again.counters == {"flip": 1}


async def test_status_writes_retry_on_conflict_and_spec_edits_bump_the_generation(cluster,
                                                                                 kube_api):
    cluster.load(pair_object("api"))
    resolved, _ = await pairobjects.resolve(kube_api, config())
    pair = resolved.pair("api")
    store = StateStore(kube_api, SETTINGS)
    objects = client.CustomObjectsApi(kube_api)
    calls = 0

    def mutate(state: PairState) -> None:
        nonlocal calls
        calls += 1
        state.count("flip")

    async def meddle() -> None:  # another writer changes the object between read and write
        await objects.patch_namespaced_custom_object(
            crd.GROUP, crd.VERSION, "team", crd.PLURAL, "api",
            {"spec": {"selector": f"app=api-{calls}"}},
            _content_type="application/merge-patch+json")

    real = store.objects.read

    async def read_then_meddle(p: Any) -> Any:
        body = await real(p)
        if calls == 0:
            await meddle()
        return body

    store.objects.read = read_then_meddle  # type: ignore[method-assign]
    state = await store.update(pair, mutate)
    assert calls == 2 and state.counters == {"flip": 1}
    stored = cluster.get_object(crd.API_VERSION, crd.KIND, "api", "team")
    assert stored["metadata"]["generation"] == 2
    assert stored["status"]["observedGeneration"] == 2
    assert stored["spec"]["selector"] == "app=api-0"


async def test_a_step_reads_its_pair_object_once_and_a_stale_copy_is_read_again(cluster,
                                                                               kube_api):
    """Load, commit and publish of one step GET the object once (the writes start from the
    object as last read or written); a copy another writer made stale is a 409, read again,
    and neither write is lost."""
    cluster.load(pair_object("api"))
    resolved, _ = await pairobjects.resolve(kube_api, config())
    pair = resolved.pair("api")
    store = StateStore(kube_api, SETTINGS)
    path = f"/bluegreenpairs/{pair.name}"

    def calls(method: str) -> int:
        return len(cluster.requests.records(method=method, path_contains=path))

    cluster.requests.clear()
    await store.load(pair)
    await store.update(pair, lambda s: s.count("flip"))
    assert await store.publish(pair, verdict="safe", score=97.0, reasons=[], at=1.0)
    assert (calls("GET"), calls("PUT")) == (1, 2)

    objects = client.CustomObjectsApi(kube_api)  # someone else writes: our copy is stale
    await objects.patch_namespaced_custom_object(
        crd.GROUP, crd.VERSION, "team", crd.PLURAL, "api", {"spec": {"selector": "app=x"}},
        _content_type="application/merge-patch+json")
    cluster.requests.clear()
    assert await store.publish(pair, verdict="unsafe", score=10.0, reasons=["5xx"], at=2.0)
    assert [r.status for r in cluster.requests.records(method="PUT")] == [409, 200]
    assert calls("GET") == 1
    stored = cluster.get_object(crd.API_VERSION, crd.KIND, "api", "team")
    assert stored["status"]["verdict"] == "unsafe" and stored["spec"]["selector"] == "app=x"
    assert (await store.load(pair)).counters == {"flip": 1}


async def test_invalid_objects_get_a_condition_naming_the_field_and_the_others_proceed(
        cluster, kube_api):
    same = pair_object("same", green="blue")  # the schema allows it, the models do not
    cluster.load([
        pair_object("good"),
        same,
        pair_object("configured", "other-team"),  # a name the configuration already has
        pair_object("twin", "team"),
    ])
    cluster.clock_offset += 5  # a second object of one name, created later: refused
    cluster.load(pair_object("twin", "other-team"))
    configured = {"name": "configured", "namespaces": ["c-blue", "c-green"],
                  "routes": [{"name": "c-live", "namespace": "routing"}]}
    resolved, found = await pairobjects.resolve(kube_api, config(pairs=[configured]))
    assert sorted(p.name for p in resolved.pairs) == ["configured", "good", "twin"]
    assert resolved.pair("twin").object_namespace == "team"
    assert sorted(r.ref for r in found.rejected) == [
        "other-team/configured", "other-team/twin", "team/same"]
    valid = {}
    for namespace, name in (("team", "same"), ("other-team", "configured"),
                            ("other-team", "twin")):
        status = cluster.get_object(crd.API_VERSION, crd.KIND, name, namespace)["status"]
        (valid[name],) = [c for c in status["conditions"] if c["type"] == "Valid"]
    assert valid["same"]["status"] == "False" and valid["same"]["reason"] == "InvalidSpec"
    assert valid["same"]["message"].startswith("spec: Value error, the two namespaces")
    assert valid["configured"]["message"].startswith(
        'metadata.name: Duplicate value: "configured"')
    assert "BlueGreenPair team/twin" in valid["twin"]["message"]
    warnings = [e for e in cluster.list_objects("v1", "Event", "team")
                if e["involvedObject"]["kind"] == crd.KIND]
    assert [(e["involvedObject"]["name"], e["reason"], e["type"]) for e in warnings] == [
        ("same", events.INVALID_SPEC, "Warning")]
    again, _ = await pairobjects.resolve(kube_api, config(pairs=[configured]))
    assert len([e for e in cluster.list_objects("v1", "Event", "team")
                if e["involvedObject"]["kind"] == crd.KIND]) == 1  # not repeated
    good = await StateStore(kube_api, SETTINGS).update(
        again.pair("good"), lambda s: s.count("flip"))
    assert good.counters == {"flip": 1}
    fixed = cluster.get_object(crd.API_VERSION, crd.KIND, "good", "team")["status"]
    assert [c["status"] for c in fixed["conditions"] if c["type"] == "Valid"] == ["True"]


async def test_events_go_on_the_pair_object_too(cluster, kube_api):
    cluster.load(pair_object("api"))
    resolved, _ = await pairobjects.resolve(kube_api, config())
    recorder = events.EventRecorder(kube_api)
    written = await recorder.emit([], reason=events.FLIPPED, message="flip: a -> b",
                                  action="flip", pair=resolved.pair("api"))
    assert written == 1
    (event,) = cluster.list_objects("v1", "Event", "team")
    assert event["involvedObject"] == {"apiVersion": crd.API_VERSION, "kind": crd.KIND,
                                       "name": "api", "namespace": "team"}


async def test_a_cluster_without_the_crd_has_no_pair_objects(kube_emulator, kube_api):
    configured = {"name": "c", "namespaces": ["c-blue", "c-green"],
                  "routes": [{"name": "c-live", "namespace": "routing"}]}
    resolved, found = await pairobjects.resolve(kube_api, config(pairs=[configured]))
    assert [p.name for p in resolved.pairs] == ["c"] and found.installed is False
    off = config(pairs=[configured], objects={"enabled": False})
    assert (await pairobjects.resolve(kube_api, off))[0] is off
    with pytest.raises(ValueError, match="no pairs"):
        config(objects={"enabled": False})


async def test_the_verdict_is_published_only_when_it_changes(cluster, kube_api):
    cluster.load(pair_object("api"))
    resolved, _ = await pairobjects.resolve(kube_api, config())
    pair = resolved.pair("api")
    store = StateStore(kube_api, SETTINGS)
    assert await store.publish(pair, verdict="safe", score=97.4, reasons=["all gates pass"],
                               at=1_700_000_000.0)
    assert not await store.publish(pair, verdict="safe", score=97.2,
                                   reasons=["all gates pass"], at=1_700_000_015.0)
    await store.update(pair, lambda s: s.count("flip"))
    status = cluster.get_object(crd.API_VERSION, crd.KIND, "api", "team")["status"]
    assert (status["verdict"], status["score"]) == ("safe", 97.0)
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Safe"] == ("True", "Safe")
    assert conditions["Ready"][0] == "False" and conditions["Blocked"][0] == "False"
    assert await store.publish(pair, verdict="unsafe", score=40.0, reasons=["p99 up"],
                               at=1_700_000_030.0)
    status = cluster.get_object(crd.API_VERSION, crd.KIND, "api", "team")["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Safe"] == "False"
    cluster.delete_object(crd.API_VERSION, crd.KIND, "api", "team")
    with pytest.raises(StateError, match="is gone"):
        await store.update(pair, lambda s: s.count("flip"))


def _configured(name: str) -> dict[str, Any]:
    return {"name": name, "namespaces": [f"{name}-blue", f"{name}-green"],
            "routes": [{"name": f"{name}-live", "namespace": "routing"}],
            "policy": {"soak": "1h"}}


async def test_migration_moves_configured_pairs_and_their_records_to_objects(
        cluster, kube_api, tmp_path):
    from gatekeeper.cli import main
    from kube_emulator.kubeconfig import write_kubeconfig

    old = config(pairs=[_configured("api"), _configured("web")])
    store = StateStore(kube_api, SETTINGS)
    for index, pair in enumerate(old.pairs):
        await store.update(pair, lambda s, i=index: full_history(s, i))
    await store.update(old.pair("web"), lambda s: setattr(
        s, "release", ReleaseState(phase="blocked", active="web-green", dark="web-blue",
                                   reason="a person must look", block_cause="state")))
    before = {p.name: (await store.load(p)).to_dict() for p in old.pairs}
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(json.dumps({"pairs": [_configured("api"), _configured("web")],
                                "state": SETTINGS.model_dump(), "rule_files": ["rules/"]}))
    kubeconfig = write_kubeconfig(str(cluster.url), tmp_path / "kubeconfig")
    argv = ["migrate-to-objects", "--config", str(path), "--namespace", "team",
            "--kubeconfig", str(kubeconfig)]
    assert await asyncio.to_thread(main, [*argv, "--dry-run"]) == 0
    assert cluster.list_objects(crd.API_VERSION, crd.KIND) == []
    assert await asyncio.to_thread(main, argv) == 0
    moved, found = await pairobjects.resolve(kube_api, config())
    assert sorted(p.name for p in moved.pairs) == ["api", "web"] and not found.rejected
    for pair in moved.pairs:
        assert pair.object_namespace == "team"
        assert pair.model_dump() == old.pair(pair.name).model_dump()
        record = await store.load(pair)
        assert record.to_dict() == before[pair.name]
    web = cluster.get_object(crd.API_VERSION, crd.KIND, "web", "team")["status"]
    assert web["phase"] == "blocked" and len(web["transitions"]) == SETTINGS.history
    assert {c["type"]: c["status"] for c in web["conditions"]}["Blocked"] == "True"
    version = web["record"]
    assert await asyncio.to_thread(main, argv) == 0  # again: nothing changes
    assert cluster.get_object(crd.API_VERSION, crd.KIND, "web", "team")["status"][
        "record"] == version
    other = pair_object("api", "other-team")
    cluster.load(other)
    assert await asyncio.to_thread(main, [*argv[:4], "other-team", *argv[5:]]) == 1


async def test_the_service_gates_an_object_pair_and_writes_its_status(
        tmp_path, cluster, kube_api, aiohttp_server):
    """The control loop on a pair read from an object: its phase and verdict appear in the
    object's status, a flip through the API moves them and leaves an Event on the object;
    an invalid object beside it is marked and skipped."""
    import dataclasses

    import aiohttp

    from gatekeeper.service.app import create_service
    from tests.service_support import (
        NEW,
        PODS_READY_RULE,
        TOKEN,
        post_json,
        seed,
        wait_until,
        write_config,
    )

    BLUE, GREEN, ROUTING = "obj-blue", "obj-green", "obj-routing"

    cluster.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    good = pair_object("api")
    good["spec"] = {"namespaces": [BLUE, GREEN], "selector": "app=api",
                    "routes": [{"name": "api-live", "namespace": ROUTING}]}
    cluster.load([good, pair_object("broken", green="blue")])
    loaded = write_config(tmp_path, [], prometheus_url=None, rules=[PODS_READY_RULE],
                          policy={"auto_flip": False})
    config, found = await pairobjects.resolve(kube_api, loaded.config)
    assert [p.name for p in config.pairs] == ["api"] and [r.ref for r in found.rejected] == [
        "team/broken"]
    service = create_service(dataclasses.replace(loaded, config=config), kube_api,
                             token=TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")

    def status() -> dict[str, Any]:
        return cluster.get_object(crd.API_VERSION, crd.KIND, "api", "team").get("status") or {}

    try:
        await wait_until(lambda: status().get("verdict") == "safe" and status().get("phase"),
                         within=20, what="the verdict in the object's status")
        assert status()["active"] == BLUE and status()["dark"] == GREEN
        async with aiohttp.ClientSession() as http:
            code, body = await post_json(http, f"{url}/api/v1/pairs/api/flip",
                                         {"force": True})
        assert code == 200, body
        await wait_until(lambda: status().get("active") == GREEN, within=20,
                         what="the flip in the object's status")
        assert status()["phase"] == "flipped"
        assert status()["lastAction"]["kind"] == "flip"
        assert any(t.get("kind") == "flip" for t in status()["transitions"])
    finally:
        await service.close()
    flipped = [e for e in cluster.list_objects("v1", "Event", "team")
               if e["involvedObject"]["name"] == "api" and e["reason"] == events.FLIPPED]
    assert len(flipped) == 1
    broken = cluster.get_object(crd.API_VERSION, crd.KIND, "broken", "team")["status"]
    assert [c["status"] for c in broken["conditions"] if c["type"] == "Valid"] == ["False"]
    assert "record" not in broken
    assert cluster.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper") is None


async def test_a_pair_object_in_namespaces_rbac_refuses_says_so_and_stays_unknown(
        tmp_path, cluster, kube_api, aiohttp_server):
    """A pair object whose green namespace gatekeeper may not read (403, the API server's
    RBAC message): Permitted=False names the namespace and the verb, the status verdict is
    unknown and the flip-check refuses (fails closed); once granted, Permitted=True."""
    import aiohttp

    from tests.service_support import NEW, seed, serve_pair_objects, wait_until

    BLUE, GREEN, ROUTING = "rbac-blue", "rbac-green", "rbac-routing"
    cluster.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    obj = pair_object("shop")
    obj["spec"] = {"namespaces": [BLUE, GREEN], "selector": "app=api",
                   "routes": [{"name": "api-live", "namespace": ROUTING}]}
    cluster.load([obj])
    cluster.faults.add(status=403, path=f"/namespaces/{GREEN}/pods", message=(
        'pods is forbidden: User "system:serviceaccount:gatekeeper:gatekeeper" cannot list '
        f'resource "pods" in API group "" in the namespace "{GREEN}"'))
    service, server = await serve_pair_objects(tmp_path, kube_api, aiohttp_server)

    def condition(kind: str) -> dict[str, Any]:
        status = cluster.get_object(crd.API_VERSION, crd.KIND, "shop", "team").get(
            "status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})

    try:
        await wait_until(lambda: condition("Permitted").get("status") == "False", within=20,
                         what="Permitted=False in the object's status")
        permitted = condition("Permitted")
        assert permitted["reason"] == "Forbidden"
        assert f"list pods in namespace {GREEN}" in permitted["message"]
        assert "rbac.pairNamespaces" in permitted["message"]
        status = cluster.get_object(crd.API_VERSION, crd.KIND, "shop", "team")["status"]
        assert status["verdict"] == "unknown" and condition("Safe")["status"] == "Unknown"
        async with aiohttp.ClientSession() as http, http.get(
                server.make_url("/api/v1/pairs/shop/flip-check")) as response:
            assert response.status == 409
        cluster.faults.clear()  # granted
        await wait_until(lambda: condition("Permitted").get("status") == "True", within=20,
                         what="Permitted=True once the reads are allowed")
    finally:
        await service.close()


async def test_serve_picks_up_pair_objects_added_and_deleted_while_it_runs(
        tmp_path, cluster, kube_api):
    """`gatekeeper serve` in-process: a new object's pair is served (the watch), a deleted
    one's is gone, without a restart (the first pair is served all along); SIGTERM still
    stops it (exit 0)."""
    import os
    import signal

    import aiohttp

    from gatekeeper.cli.serve_cmd import serve
    from kube_emulator.kubeconfig import write_kubeconfig
    from tests.service_support import (
        PODS_READY_RULE,
        free_port,
        get_json,
        seed,
        wait_until,
        write_config,
    )

    def declare(name: str) -> None:
        blue, green, routing = f"{name}-blue", f"{name}-green", f"{name}-routing"
        cluster.load(seed(blue, green, routing))
        obj = pair_object(name)
        obj["spec"] = {"namespaces": [blue, green], "selector": "app=api",
                       "routes": [{"name": "api-live", "namespace": routing}]}
        cluster.load(obj)

    declare("first")
    kubeconfig = write_kubeconfig(str(cluster.url), tmp_path / "kubeconfig")
    loaded = write_config(tmp_path, [], prometheus_url=None, rules=[PODS_READY_RULE],
                          kubernetes={"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
                          state={"namespace": "gatekeeper"})
    port = free_port()
    task = asyncio.create_task(serve(loaded, host="127.0.0.1", port=port, dry_run=False,
                                     tokens={}))
    url = f"http://127.0.0.1:{port}/api/v1/pairs"

    async def serving(*names: str) -> bool:
        assert not task.done(), "serve stopped"
        async with aiohttp.ClientSession() as http:
            try:
                _code, body = await get_json(http, url)
            except aiohttp.ClientError:
                return False
        return sorted(p["pair"] for p in body.get("pairs", [])) == list(names)

    try:
        await wait_until(lambda: serving("first"), within=20, interval=0.3,
                         what="the first object's pair")
        declare("second")
        await wait_until(lambda: serving("first", "second"), within=20, interval=0.3,
                         what="the added object's pair")
        cluster.delete_object(crd.API_VERSION, crd.KIND, "first", "team")
        await wait_until(lambda: serving("second"), within=20, interval=0.3,
                         what="the deleted object's pair gone")
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 30) == 0
