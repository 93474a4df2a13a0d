"""A stepped wall clock never completes a soak or a cooldown: durations are steady time.

The wall clock the service is given (`create_service(clock=...)`) is stepped forward by
two hours in the middle of a soak and of a cooldown, as NTP or an operator's `date -s`
would; the monotonic clock keeps its pace.
"""

from __future__ import annotations

import aiohttp
import pytest

from gatekeeper.clocks import SteadyClock
from gatekeeper.service.app import create_service
from tests.service_support import (
    NEW,
    OLD,
    PODS_READY_RULE,
    TOKEN,
    post_json,
    route_target,
    seed,
    set_image,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

BLUE, GREEN, ROUTING = "ck-blue", "ck-green", "ck-live"
TWO_HOURS = 7200.0


class SteppedWall:
    """The real wall clock plus an offset the test steps."""

    def __init__(self) -> None:
        import time

        self._time = time.time
        self.offset = 0.0

    def __call__(self) -> float:
        return self._time() + self.offset


def test_steady_clock_ignores_wall_steps_and_converts_back():
    """The steady clock advances with the monotonic one only; `to_wall` maps a reading to
    the wall time people read."""
    wall, mono = [1_000_000.0], [50.0]
    clock = SteadyClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert clock() == 1_000_000.0
    wall[0] += TWO_HOURS
    mono[0] += 13.0
    assert clock() == 1_000_013.0
    assert clock.to_wall(clock()) == wall[0]
    wall[0] -= 3 * TWO_HOURS  # a backward step does not move it back either
    mono[0] += 1.0
    assert clock() == 1_000_014.0


@pytest.fixture
def stepped():
    return SteppedWall()


async def test_a_wall_clock_step_does_not_complete_a_soak(tmp_path, kube_emulator, kube_api,
                                                          stepped):
    """A 2 h soak under way; the wall clock jumps 2 h ahead: the release keeps soaking and
    is not flipped (it used to be ready and auto-flipped 13 s later)."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=OLD))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE],
                          policy={"auto_flip": True, "soak": "2h", "consecutive_passes": 1},
                          evaluation={"window": "1s"})
    service = create_service(loaded, kube_api, token=TOKEN, run_loop=False, watch=False,
                             clock=stepped)
    controller, view = service.controller, service.controller.views["api"]
    try:
        await controller.tick()  # first sight
        await set_image(kube_api, GREEN, NEW)
        await controller.tick()  # new images: validating, the soak starts
        await controller.tick()
        assert view.state.phase == "validating" and view.state.soak_started is not None
        stepped.offset = TWO_HOURS + 60
        for _ in range(3):
            await controller.tick()
        assert view.state.phase == "validating", view.state
        assert "soaked" in view.state.reason or "soaking" in view.state.reason, view.state
        assert await route_target(kube_api, ROUTING) == BLUE
        # The audit trail still shows wall time (the stepped clock people see).
        history = view.record.transitions if view.record else []
        assert history and abs(history[-1]["at"] - (stepped() - TWO_HOURS - 60)) < 60
    finally:
        await service.close()


async def test_a_wall_clock_step_does_not_end_a_cooldown(tmp_path, kube_emulator, kube_api,
                                                         aiohttp_server, stepped):
    """Rolled back by an alert, then the wall clock jumps 2 h ahead: on the clock the
    lifecycle decides with, the 60 s cooldown (which holds automatic flips back) has not run
    out, while the wall clock would say it ended long ago. (A person's re-flip lifts the
    cooldown for alerts by design, docs/lifecycle.md, so the alert path cannot show it.)"""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False})
    service = create_service(loaded, kube_api, token=TOKEN, run_loop=False, watch=False,
                             clock=stepped)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    try:
        await service.controller.tick()
        async with aiohttp.ClientSession() as http:
            flip = f"{url}/api/v1/pairs/api/flip"
            assert (await post_json(http, flip, {"force": True}))[0] == 200
            status, body = await post_json(http, f"{url}/api/v1/alertmanager", _alert("one",
                                                                                       stepped))
            assert status == 200 and body["outcome"] == "rollback", body
            assert await route_target(kube_api, ROUTING) == BLUE
        rolled_back_at = service.controller.views["api"].state.last_rollback_at
        assert rolled_back_at is not None
        stepped.offset = TWO_HOURS
        assert stepped() - rolled_back_at > TWO_HOURS - 60  # by the wall clock: long over
        assert service.controller.clock() - rolled_back_at < 60  # by the lifecycle's: not yet
        await service.controller.tick()
        view = service.controller.views["api"]
        assert view.state.phase == "rolled_back"
        assert await route_target(kube_api, ROUTING) == BLUE
    finally:
        await service.close()


async def test_a_backward_wall_clock_step_does_not_make_new_alerts_stale(
        tmp_path, kube_emulator, kube_api, aiohttp_server, stepped):
    """Flipped, then the wall clock steps 2 h back (NTP correcting a fast clock): an alert
    that starts now, by that clock, concerns the new release and rolls it back. (Compared
    with the flip's steady-clock time, it looked 2 h older than the release: stale.)"""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False})
    service = create_service(loaded, kube_api, token=TOKEN, run_loop=False, watch=False,
                             clock=stepped)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    try:
        await service.controller.tick()
        async with aiohttp.ClientSession() as http:
            flip = f"{url}/api/v1/pairs/api/flip"
            assert (await post_json(http, flip, {"force": True}))[0] == 200
            stepped.offset = -TWO_HOURS
            status, body = await post_json(http, f"{url}/api/v1/alertmanager",
                                           _alert("after-step", stepped))
        assert status == 200 and body["outcome"] == "rollback", body
        assert await route_target(kube_api, ROUTING) == BLUE
    finally:
        await service.close()


def _alert(fingerprint: str, wall: SteppedWall, namespace: str = GREEN) -> dict[str, object]:
    from datetime import UTC, datetime

    starts = datetime.fromtimestamp(wall(), UTC).isoformat().replace("+00:00", "Z")
    labels = {"alertname": "ApiDown", "namespace": namespace, "severity": "critical"}
    return {"version": "4", "status": "firing", "receiver": "gatekeeper",
            "alerts": [{"status": "firing", "labels": labels, "startsAt": starts,
                        "fingerprint": fingerprint}]}

