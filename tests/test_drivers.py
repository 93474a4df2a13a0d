"""Validation drivers (gatekeeper.drivers): when a pair's drivers run, how the runner starts,
restarts and stops them, and the controller doing so against the emulated cluster."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from gatekeeper.config import PairConfig
from gatekeeper.drivers import Drivers, DriverTarget, Report, StopReason, plan
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.outcomes import Outcome
from gatekeeper.service.app import create_service
from gatekeeper.tasks import Backoff
from tests.service_support import (
    AUTH,
    ERROR_RATE_RULE,
    NEW,
    OLD,
    PODS_READY_RULE,
    TOKEN,
    post_json,
    route_target,
    seed,
    set_image,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

PAIR = PairConfig.model_validate({"name": "api", "namespaces": ["blue", "green"],
                                  "routes": [{"name": "live", "namespace": "routing"}]})
SEEN = Observation(active="blue", dark="green", dark_ready=True)
VALIDATING = ReleaseState(phase="validating", active="blue", dark="green", release="r1")


@pytest.mark.parametrize(("state", "observation", "leading", "closing", "why"), [
    (VALIDATING, SEEN, True, False, None),
    (ReleaseState(phase="ready", active="blue", dark="green", release="r1"), SEEN, True,
     False, None),
    (VALIDATING, Observation(active="blue", dark="green", dark_ready=False), True, False,
     "not_ready"),
    (VALIDATING, SEEN, False, False, "not_leader"),
    (VALIDATING, SEEN, True, True, "shutdown"),
    (ReleaseState(phase="flipped", active="green", dark="blue"), SEEN, True, False, "flip"),
    (ReleaseState(phase="stable", active="green", dark="blue"), SEEN, True, False, "flip"),
    (ReleaseState(phase="blocked", active="blue", dark="green"), SEEN, True, False,
     "blocked"),
    (ReleaseState(phase="idle", active="blue", dark="green"), SEEN, True, False, "abort"),
    (ReleaseState(phase="rolled_back", active="blue", dark="green"), SEEN, True, False,
     "abort"),
    # The routes must name the dark as dark: never drive the namespace taking traffic.
    (VALIDATING, Observation(active="green", dark="blue", dark_ready=True), True, False,
     "routes"),
    (VALIDATING, Observation(active=None, dark=None, route_problem="split"), True, False,
     "routes"),
    (VALIDATING, None, True, False, "routes"),
])
def test_drivers_run_only_for_a_ready_dark_being_validated_on_the_leader(
        state, observation, leading, closing, why):
    wanted = plan(PAIR, state, observation, leading=leading, closing=closing)
    assert wanted.why == why
    if why is None:
        assert wanted.target is not None
        assert (wanted.target.dark, wanted.target.active) == ("green", "blue")
        assert wanted.target.variables == {"namespace": "green", "other": "blue",
                                           "pair": "api"}
    else:
        assert wanted.target is None


@dataclass
class Recording:
    """A real driver that posts a pass per beat and records its calls (what a plug-in does,
    with no I/O of its own). `crash` makes its first runs raise."""

    name: str = "recording"
    crash: int = 0
    starts: list[DriverTarget] = field(default_factory=list)
    stops: list[tuple[str, StopReason, str | None]] = field(default_factory=list)
    where: Any = None
    """Called at stop: what the world looked like then (the test reads the route)."""

    def applies(self, pair: PairConfig) -> bool:
        return True

    async def run(self, target: DriverTarget, report: Report) -> None:
        self.starts.append(target)
        if self.crash:
            self.crash -= 1
            raise RuntimeError("boom")
        beats = 0
        while True:
            beats += 1
            report(Outcome("pass", f"{beats} beats on {target.dark}", value=1.0,
                           samples=beats))
            await asyncio.sleep(0.05)

    async def stop(self, target: DriverTarget, why: StopReason) -> None:
        seen = await self.where() if self.where is not None else None
        self.stops.append((target.dark, why, seen))


async def test_the_runner_restarts_a_crash_clears_an_old_release_and_stops_by_reason():
    driver = Recording(crash=1)
    drivers = Drivers([driver], backoff=Backoff(initial=0.05, maximum=0.1, jitter=0))
    await drivers.reconcile(PAIR, VALIDATING, SEEN, leading=True)
    assert drivers.running("api") is not None and drivers.running("api").release == "r1"
    await wait_until(lambda: drivers.board.get("api", "recording", "green") is not None
                     and drivers.board.get("api", "recording").outcome.status == "pass",
                     within=5, what="a pass after the restart")
    assert len(driver.starts) == 2  # crashed once (posted as error), restarted
    # The same release again: nothing restarts.
    await drivers.reconcile(PAIR, VALIDATING, SEEN, leading=True)
    assert len(driver.starts) == 2
    # A new release: stopped, the board forgets r1's outcomes, started again.
    await drivers.reconcile(PAIR, ReleaseState(phase="validating", active="blue",
                                               dark="green", release="r2"), SEEN,
                            leading=True)
    assert driver.stops == [("green", "new_release", None)]
    assert drivers.running("api").release == "r2"
    posted = drivers.board.get("api", "recording")
    assert posted is None or posted.release == "r2"
    await drivers.halt("api", "flip")
    assert drivers.running("api") is None and driver.stops[-1] == ("green", "flip", None)
    await drivers.reconcile(PAIR, ReleaseState(phase="blocked", active="blue", dark="green",
                                               release="r2"), SEEN, leading=True)
    assert len(driver.stops) == 2  # already stopped: no second stop
    await drivers.close()


async def test_a_pair_without_drivers_costs_nothing():
    class NotHere(Recording):
        def applies(self, pair: PairConfig) -> bool:
            return False

    driver = NotHere()
    drivers = Drivers([driver])
    await drivers.reconcile(PAIR, VALIDATING, SEEN, leading=True)
    assert drivers.running("api") is None and driver.starts == []


def _names(unique_pair) -> tuple[str, str, str]:
    return unique_pair.blue, unique_pair.green, unique_pair.name("routing")


async def test_the_controller_drives_the_dark_while_validating_and_stops_before_the_flip(
        tmp_path, kube_emulator, kube_api, aiohttp_server, unique_pair):
    """A new release in the dark: the drivers start once it is Ready, target only the dark,
    and stop before the flip moves traffic (the route still points at blue at stop)."""
    blue, green, routing = _names(unique_pair)
    kube_emulator.load(seed(blue, green, routing))
    driver = Recording(where=lambda: route_target(kube_api, routing))
    loaded = write_config(tmp_path, [("api", blue, green, routing)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False})
    service = create_service(loaded, kube_api, token=TOKEN, drivers=[driver])
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    drivers = service.controller.drivers
    try:
        await wait_until(lambda: service.controller.views["api"].state.active == blue,
                         within=10, what="first evaluation")
        assert drivers.running("api") is None  # idle: nothing to validate
        await set_image(kube_api, green, NEW)
        await wait_until(lambda: drivers.running("api") is not None, within=10,
                         what="drivers started")
        assert service.controller.views["api"].state.phase in ("validating", "ready")
        target = driver.starts[0]
        assert (target.dark, target.active) == (green, blue)
        await wait_until(lambda: drivers.board.get("api", "recording", green), within=5,
                         what="an outcome")
        async with aiohttp.ClientSession() as http:
            status, body = await post_json(http, f"{url}/api/v1/pairs/api/flip",
                                           {"force": True}, headers=AUTH)
        assert status == 200 and body["changed"], body
        assert driver.stops == [(green, "flip", blue)]  # stopped before traffic moved
        assert await route_target(kube_api, routing) == green
        await asyncio.sleep(1.5)  # a tick or more: flipped, so nothing starts again
        assert drivers.running("api") is None and len(driver.starts) == 1
    finally:
        await server.close()
        await service.close()


async def test_only_the_lease_holder_drives_and_shutdown_stops_it(
        tmp_path, kube_emulator, kube_api, aiohttp_server, unique_pair):
    blue, green, routing = _names(unique_pair)
    kube_emulator.load(seed(blue, green, routing))
    loaded = write_config(tmp_path, [("api", blue, green, routing)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False},
                          leader_election={"enabled": True, "lease_duration": "4s",
                                           "renew_deadline": "3s", "retry_period": "0.5s"})
    recorders = [Recording(), Recording()]
    services, servers = [], []
    for recorder in recorders:
        service = create_service(loaded, kube_api, token=TOKEN, drivers=[recorder])
        servers.append(await aiohttp_server(service.app))
        services.append(service)
    try:
        await wait_until(lambda: any(s.controller.is_leader for s in services), within=10,
                         what="a leader")
        leader = next(i for i, s in enumerate(services) if s.controller.is_leader)
        await wait_until(lambda: services[leader].controller.views["api"].state.active
                         == blue, within=10, what="first evaluation")
        await set_image(kube_api, green, NEW)
        await wait_until(lambda: recorders[leader].starts, within=10, what="leader drives")
        await wait_until(lambda: services[1 - leader].controller.views["api"].state.phase
                         == "validating", within=10, what="follower sees validating")
        await asyncio.sleep(1.5)
        assert recorders[1 - leader].starts == []
        await servers[leader].close()  # SIGTERM: the drivers stop with the service
        assert recorders[leader].stops == [(green, "shutdown", None)]
    finally:
        for server in servers:
            await server.close()
        for service in services:
            await service.close()


async def test_the_drivers_stop_when_validation_is_abandoned_or_the_pair_is_blocked(
        tmp_path, kube_emulator, kube_api, aiohttp_server, prometheus, unique_pair):
    """The dark goes back to the active's images (abort); a new release then stays unknown
    (no series in Prometheus) past validation_timeout and is blocked: each stops the
    drivers."""
    blue, green, routing = _names(unique_pair)
    kube_emulator.load(seed(blue, green, routing))
    driver = Recording()
    loaded = write_config(tmp_path, [("api", blue, green, routing)],
                          prometheus_url=prometheus.url,
                          rules=[ERROR_RATE_RULE, PODS_READY_RULE],
                          policy={"auto_flip": False, "validation_timeout": "3s"})
    service = create_service(loaded, kube_api, token=TOKEN, drivers=[driver])
    server = await aiohttp_server(service.app)
    view, drivers = service.controller.views["api"], service.controller.drivers
    try:
        await wait_until(lambda: view.state.active == blue, within=10, what="first tick")
        await set_image(kube_api, green, NEW)
        await wait_until(lambda: drivers.running("api") is not None, within=10,
                         what="drivers started")
        await set_image(kube_api, green, OLD)  # the pipeline put the dark back
        await wait_until(lambda: drivers.running("api") is None, within=10,
                         what="drivers stopped")
        assert view.state.phase == "idle" and driver.stops == [(green, "abort", None)]
        await set_image(kube_api, green, "registry.example.com/api:1.6.0")
        await wait_until(lambda: len(driver.starts) == 2, within=10, what="started again")
        await wait_until(lambda: view.state.phase == "blocked", within=20, what="blocked")
        await wait_until(lambda: drivers.running("api") is None, within=5,
                         what="drivers stopped at the block")
        assert driver.stops[-1] == (green, "blocked", None)
        assert view.state.block_cause == "validation_timeout"
    finally:
        await server.close()
        await service.close()
