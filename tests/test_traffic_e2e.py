"""Mirroring and progressive exposure end to end: `gatekeeper serve` against the emulated
API server (which validates TraefikServices like Traefik's CRD) and a real Prometheus.

Short timings come from configuration only (interval 1 s, window 5 s, soak 2 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gatekeeper.config import LoadedConfig, load_config
from gatekeeper.routers.traefikservice import EXPOSURE, MIRRORING
from gatekeeper.service.app import Service, create_service
from tests.service_support import (
    NEW,
    OLD,
    TOKEN,
    deployment,
    get_json,
    namespace,
    set_image,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

TS = "api-weighted"
HEALTHY = {"rps": 50.0, "error_ratio": 0.001}
FAILING = {"rps": 50.0, "error_ratio": 0.3}
MIRRORING_CONFIG = {"percent": 20, "max_body_size": 4096, "acknowledge_shared_writes": True}


def traefikservice(routing: str, active: str) -> dict[str, Any]:
    """The gatekeeper-owned weighted TraefikService, all on `active`."""
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
            "metadata": {"name": TS, "namespace": routing},
            "spec": {"weighted": {"services": [
                {"name": "api-service", "namespace": active, "port": 8080, "weight": 100}]}}}


def seed(blue: str, green: str, routing: str) -> list[dict[str, Any]]:
    """Blue live behind the TraefikService, green dark on the same release."""
    return [namespace(blue), namespace(green), namespace(routing), namespace("gatekeeper"),
            deployment(blue, OLD, 2), deployment(green, OLD, 2),
            traefikservice(routing, blue)]


def config(tmp_path: Path, prometheus_url: str, blue: str, green: str, routing: str, *,
           policy: dict[str, Any] | None = None, mirroring: bool = True) -> LoadedConfig:
    """One pair routed by the TraefikService, mirroring configured unless told not."""
    write_config(tmp_path, [("api", blue, green, routing)], prometheus_url=prometheus_url)
    path = tmp_path / "gatekeeper.yaml"
    data = yaml.safe_load(path.read_text())
    data["policy"].update(policy or {})
    data["pairs"][0]["routes"] = [{"kind": "TraefikService", "name": TS, "namespace": routing}]
    if mirroring:
        data["pairs"][0]["mirroring"] = MIRRORING_CONFIG
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def stored(emulator: Any, routing: str) -> dict[str, Any]:
    """The TraefikService as the API server holds it."""
    return emulator.get_object("traefik.io/v1alpha1", "TraefikService", TS, routing)


def mirroring_on(emulator: Any, routing: str) -> bool:
    """The TraefikService is in gatekeeper's mirroring form."""
    body = stored(emulator, routing)
    return "mirroring" in body["spec"] and MIRRORING in body["metadata"].get("annotations", {})


def weights(emulator: Any, routing: str) -> dict[str, int]:
    """Weight per namespace (empty in the mirroring form)."""
    services = (stored(emulator, routing)["spec"].get("weighted") or {}).get("services") or []
    return {s["namespace"]: s["weight"] for s in services}


def ts_patches(emulator: Any) -> list[Any]:
    """The PATCH requests to the TraefikService, oldest first."""
    return emulator.requests.records(method="PATCH", path_contains=f"/traefikservices/{TS}")


servers: dict[int, Any] = {}
"""The test server of each started service (closing it stops the service's controller)."""


async def crash(emulator: Any, service: Service) -> None:
    """Stop `service` while every TraefikService patch fails: its cleanup never lands, so
    the routes are left as a crash leaves them."""
    rule = emulator.faults.add(status=500, verb="patch", path=f"/traefikservices/{TS}")
    await servers.pop(id(service)).close()
    emulator.faults.clear()
    assert rule.matched >= 1


@pytest.fixture
async def start(aiohttp_server: Any, kube_api: Any) -> Any:
    """Start services for a loaded configuration; closed after the test (unless closed)."""
    started: list[Service] = []

    async def run(loaded: LoadedConfig) -> tuple[Service, str]:
        service = create_service(loaded, kube_api, token=TOKEN)
        server = await aiohttp_server(service.app)
        servers[id(service)] = server
        started.append(service)
        return service, str(server.make_url("")).rstrip("/")

    yield run
    for service in started:
        await service.close()


async def _validating_with_mirroring(kube_emulator: Any, kube_api: Any, synthetic_fleet: Any,
                                     names: tuple[str, str, str], loaded: LoadedConfig,
                                     start: Any) -> tuple[Service, str]:
    blue, green, routing = names
    kube_emulator.load(seed(blue, green, routing))
    synthetic_fleet.set_profile(blue, **HEALTHY)
    synthetic_fleet.set_profile(green, **HEALTHY)
    service, url = await start(loaded)
    await wait_until(lambda: service.controller.views["api"].state.active == blue,
                     within=10, what="first evaluation")
    await set_image(kube_api, green, NEW)
    await wait_until(lambda: mirroring_on(kube_emulator, routing), within=25,
                     what="mirroring installed")
    assert service.controller.views["api"].state.phase in ("validating", "ready")
    return service, url


async def test_mirroring_installed_while_validating_and_removed_before_the_flip(
        tmp_path: Path, kube_emulator: Any, kube_api: Any, prometheus: Any,
        synthetic_fleet: Any, unique_pair: Any, start: Any) -> None:
    """A Ready dark under validation gets 20 % of the requests copied (maxBodySize set);
    before the flip moves traffic the weighted form is back, then the flip patch."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    loaded = config(tmp_path, prometheus.url, blue, green, routing)
    service, url = await _validating_with_mirroring(
        kube_emulator, kube_api, synthetic_fleet, (blue, green, routing), loaded, start)
    mirroring = stored(kube_emulator, routing)["spec"]["mirroring"]
    assert mirroring["namespace"] == blue and mirroring["maxBodySize"] == 4096
    assert mirroring["mirrors"][0]["namespace"] == green
    assert mirroring["mirrors"][0]["percent"] == 20
    async with aiohttp.ClientSession() as http:
        async def shown() -> bool:
            _, body = await get_json(http, f"{url}/api/v1/pairs/api")
            return bool(body["traffic"]["mirroring"])
        await wait_until(shown, within=5, what="mirroring shown by the API")
    installed = len(ts_patches(kube_emulator))
    await wait_until(lambda: service.controller.views["api"].state.phase == "flipped",
                     within=40, what="automatic flip")
    assert weights(kube_emulator, routing) == {green: 100}
    assert not mirroring_on(kube_emulator, routing)
    after = [r.body for r in ts_patches(kube_emulator)[installed:]]
    assert len(after) == 2, after  # the removal, then the flip
    removal = next(op for op in after[0] if op["op"] == "replace")
    assert removal["value"]["weighted"]["services"][0]["namespace"] == blue
    assert ("api", green, "flip") in service.controller.drivers.stops


async def test_mirroring_removed_on_abort(
        tmp_path: Path, kube_emulator: Any, kube_api: Any, prometheus: Any,
        synthetic_fleet: Any, unique_pair: Any, start: Any) -> None:
    """The release is withdrawn (the dark runs the active's images again): mirroring off."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    loaded = config(tmp_path, prometheus.url, blue, green, routing,
                    policy={"auto_flip": False})
    service, _ = await _validating_with_mirroring(
        kube_emulator, kube_api, synthetic_fleet, (blue, green, routing), loaded, start)
    await set_image(kube_api, green, OLD)
    await wait_until(lambda: service.controller.views["api"].state.phase == "idle",
                     within=25, what="validation aborted")
    await wait_until(lambda: not mirroring_on(kube_emulator, routing), within=25,
                     what="mirroring removed on abort")
    assert weights(kube_emulator, routing) == {blue: 100}
    # The stop is recorded after its cleanup patch lands: wait for the record, not the patch.
    # The rollout may stop the drivers first (not Ready); either way none runs now.
    await wait_until(lambda: bool(service.controller.drivers.stops), within=10,
                     what="the drivers' stop recorded")
    assert service.controller.drivers.stops[-1][2] in ("abort", "not_ready")
    assert service.controller.drivers.running("api") is None


async def test_mirroring_left_by_a_crash_is_removed_after_the_restart(
        tmp_path: Path, kube_emulator: Any, kube_api: Any, prometheus: Any,
        synthetic_fleet: Any, unique_pair: Any, start: Any) -> None:
    """Gatekeeper dies while mirroring (its cleanup never lands), the release is withdrawn
    meanwhile; the restarted gatekeeper removes the mirroring it finds."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    loaded = config(tmp_path, prometheus.url, blue, green, routing,
                    policy={"auto_flip": False})
    first, _ = await _validating_with_mirroring(
        kube_emulator, kube_api, synthetic_fleet, (blue, green, routing), loaded, start)
    await crash(kube_emulator, first)
    assert mirroring_on(kube_emulator, routing)
    await set_image(kube_api, green, OLD)
    second, _ = await start(loaded)
    await wait_until(lambda: not mirroring_on(kube_emulator, routing), within=25,
                     what="mirroring removed after the restart")
    assert weights(kube_emulator, routing) == {blue: 100}
    assert second.controller.views["api"].state.active == blue


async def test_a_restart_in_the_middle_keeps_mirroring_and_removes_it_before_the_flip(
        tmp_path: Path, kube_emulator: Any, kube_api: Any, prometheus: Any,
        synthetic_fleet: Any, unique_pair: Any, start: Any) -> None:
    """Crash while validating; the restarted gatekeeper adopts the mirroring (no second
    install) and the flip still comes only after its removal."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    held = config(tmp_path, prometheus.url, blue, green, routing,
                  policy={"auto_flip": False})
    first, _ = await _validating_with_mirroring(
        kube_emulator, kube_api, synthetic_fleet, (blue, green, routing), held, start)
    await crash(kube_emulator, first)
    assert mirroring_on(kube_emulator, routing)
    before = len(ts_patches(kube_emulator))
    (tmp_path / "again").mkdir()
    flipping = config(tmp_path / "again", prometheus.url, blue, green, routing)
    second, _ = await start(flipping)
    await wait_until(lambda: second.controller.views["api"].state.phase == "flipped",
                     within=40, what="flip after the restart")
    assert weights(kube_emulator, routing) == {green: 100}
    assert not mirroring_on(kube_emulator, routing)
    after = ts_patches(kube_emulator)[before:]
    assert len(after) == 2  # removal before the flip, no reinstall
    assert ("api", green, "flip") in second.controller.drivers.stops


async def test_a_failing_progressive_step_returns_the_dark_to_zero_in_one_patch(
        tmp_path: Path, kube_emulator: Any, kube_api: Any, prometheus: Any,
        synthetic_fleet: Any, unique_pair: Any, start: Any) -> None:
    """Step 1 (10 %) is set and shown; the dark starts failing under it: one patch puts
    all users back on blue, and the pair is blocked with the reason."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    kube_emulator.load(seed(blue, green, routing))
    synthetic_fleet.set_profile(blue, **HEALTHY)
    synthetic_fleet.set_profile(green, **HEALTHY)
    loaded = config(tmp_path, prometheus.url, blue, green, routing, mirroring=False, policy={
        "progressive": {"steps": [10, 50], "hold": "20s", "max_hold": "40s"}})
    service, url = await start(loaded)
    await wait_until(lambda: service.controller.views["api"].state.active == blue,
                     within=10, what="first evaluation")
    await set_image(kube_api, green, NEW)
    await wait_until(lambda: weights(kube_emulator, routing) == {blue: 90, green: 10},
                     within=40, what="progressive step 1")
    annotations = stored(kube_emulator, routing)["metadata"]["annotations"]
    assert '"step": 1' in annotations[EXPOSURE]
    async with aiohttp.ClientSession() as http:
        # The expose action's own reason ("progressive step 1: 10 % to ...") stands
        # until the next tick holds the step and says "progressive step 1/2 ...".
        async def shown() -> bool:
            _, body = await get_json(http, f"{url}/api/v1/pairs/api")
            return bool(body["traffic"]["percent"] == 10
                        and "progressive step 1/2" in body["lifecycle"]["reason"])
        await wait_until(shown, within=20, what="step shown by the API")
        status, body = await get_json(http, f"{url}/api/v1/pairs/api")
        assert status == 200 and body["phase"] == "ready" and body["active"] == blue
        assert body["traffic"] == {**body["traffic"], "step": 1, "steps": [10, 50],
                                   "percent": 10}
        assert "progressive step 1/2" in body["lifecycle"]["reason"]
    patches = len(ts_patches(kube_emulator))
    synthetic_fleet.set_profile(green, **FAILING)
    await wait_until(lambda: service.controller.views["api"].state.phase == "blocked",
                     within=40, what="failed step blocks")
    state = service.controller.views["api"].state
    assert "progressive step 1/2 (10 % to" in state.reason and "error-rate" in state.reason
    assert weights(kube_emulator, routing) == {blue: 100}
    assert EXPOSURE not in stored(kube_emulator, routing)["metadata"]["annotations"]
    assert len(ts_patches(kube_emulator)) == patches + 1


async def test_passing_progressive_steps_then_the_normal_full_flip(
        tmp_path: Path, kube_emulator: Any, kube_api: Any, prometheus: Any,
        synthetic_fleet: Any, unique_pair: Any, start: Any) -> None:
    """10 % then 50 %, each held and judged on the healthy dark, then all of it: the split
    never counts as inconsistent routes (no block), and the flip is the usual one."""
    blue, green, routing = unique_pair.blue, unique_pair.green, unique_pair.name("routing")
    kube_emulator.load(seed(blue, green, routing))
    synthetic_fleet.set_profile(blue, **HEALTHY)
    synthetic_fleet.set_profile(green, **HEALTHY)
    loaded = config(tmp_path, prometheus.url, blue, green, routing, mirroring=False, policy={
        "consecutive_passes": 2,
        "progressive": {"steps": [10, 50], "hold": "2s", "max_hold": "40s"}})
    service, _ = await start(loaded)
    await wait_until(lambda: service.controller.views["api"].state.active == blue,
                     within=10, what="first evaluation")
    await set_image(kube_api, green, NEW)
    await wait_until(lambda: service.controller.views["api"].state.phase == "flipped",
                     within=60, what="flip after the steps")
    assert weights(kube_emulator, routing) == {green: 100}
    assert EXPOSURE not in stored(kube_emulator, routing)["metadata"]["annotations"]
    splits = []
    for record in ts_patches(kube_emulator):
        for op in record.body or []:
            if op.get("op") == "replace" and op["path"] == "/spec/weighted/services":
                splits.append({s["namespace"]: s["weight"] for s in op["value"]})
    assert splits == [{blue: 90, green: 10}, {blue: 50, green: 50}, {green: 100}]
    record = service.controller.views["api"].record
    phases = [t.get("to") for t in (record.transitions if record else [])
              if t.get("kind") == "phase"]
    assert "blocked" not in phases and phases[-1] == "flipped"
