"""Restarts: gatekeeper killed (SIGKILL) at every step of a flip and of a rollback.

The pipeline commands run as subprocesses against the emulated API server (in this test's
process, on a loopback port). A fault rule holds the request of the step to kill at (a held
request answers 503 when released, so it is never applied; `after` holds one that was
applied); once the emulator sees it arrive, the process is killed. Then the command is run
again, as a pipeline retries a failed step: the routes and the state must agree, and the
action must have happened exactly once.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gatekeeper import kubeclient
from gatekeeper.operations import Operations
from kube_emulator import Emulator, FaultRule, running
from tests.fixtures.kube import BLUE, GREEN, api_client_for
from tests.reliability.test_kube_faults import IR, ROUTES, three_route_seed
from tests.service_support import route_targets

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
HOLD = 20.0
"""Seconds a held request waits before answering 503 (the process is dead long before)."""
STATE = ("gatekeeper", "gatekeeper-state")

CONFIG = """\
rule_files: [rules.yaml]
kubernetes:
  mode: kubeconfig
  kubeconfig: {kubeconfig}
  request_timeout: 5s
state:
  namespace: gatekeeper
pairs:
  - name: api
    namespaces: [production-blue, production-green]
    routes:
""" + "".join(f"      - {{{{name: {name}, namespace: {namespace}}}}}\n"
              for namespace, name in ROUTES)

RULES = """\
rules:
  - {name: pods-ready, description: Every pod Ready., source: kubernetes, check: pods_ready,
     pass: ["== 1"], key: true}
"""


@dataclass
class Cluster:
    """The emulator and a configuration file pointing the CLI at it."""

    emulator: Emulator
    config: Path

    def pointed(self) -> dict[str, str]:
        """Where each route sends traffic."""
        return route_targets(self.emulator, ROUTES)

    def state(self) -> dict[str, Any]:
        """The pair's stored state (the ConfigMap as written)."""
        body = self.emulator.get_object("v1", "ConfigMap", STATE[1], STATE[0])
        if body is None:
            return {}
        return dict(json.loads(body["data"]["api"]))

    def moves(self, target: str, *, held: FaultRule | None = None) -> dict[str, int]:
        """Per route: successful PATCHes that set its namespace to `target` (a patch still
        held after being applied, `held`, counts: it is logged once its answer goes out)."""
        found = {name: 0 for _, name in ROUTES}
        if held is not None and held.after and held.path:
            found[held.path.rsplit("/", 1)[-1].rstrip("$")] += 1
        for record in self.emulator.requests.records(method="PATCH"):
            name = record.path.rsplit("/", 1)[-1]
            if name not in found or record.status != 200 or record.fault:
                continue
            values = [op.get("value") for op in record.body or []
                      if op.get("op") in ("add", "replace") and op["path"].endswith("/namespace")]
            if target in values:
                found[name] += 1
        return found


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Three routes on blue, both namespaces Ready; a kubeconfig and a config for the CLI."""
    async with running(three_route_seed(), ready_delay=0.0, request_log_size=20_000) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        config = tmp_path / "gatekeeper.yaml"
        config.write_text(CONFIG.format(kubeconfig=kubeconfig))
        (tmp_path / "rules.yaml").write_text(RULES)  # the gate `gatekeeper flip` evaluates
        yield Cluster(emu, config)


async def cli(cluster: Cluster, *argv: str, kill_on: FaultRule | None = None
              ) -> tuple[int, str]:
    """Run `gatekeeper ARGV --config ...` in a subprocess; with `kill_on`, SIGKILL it as
    soon as the emulator holds the rule's request. Returns (exit code, output)."""
    env = {**os.environ, "GATEKEEPER_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatekeeper", *argv, "--config", str(cluster.config),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    if kill_on is not None:
        async with asyncio.timeout(60):  # a CLI start takes seconds on a loaded machine
            while not kill_on.matched:
                if process.returncode is not None:
                    break
                await asyncio.sleep(0.005)
        assert kill_on.matched, "the process never reached the kill point"
        process.send_signal(signal.SIGKILL)
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


def hold(emulator: Emulator, *, verb: str, path: str, applied: bool = False) -> FaultRule:
    """Hold the next matching request (applied first when `applied`)."""
    if applied:
        return emulator.faults.add(delay=HOLD, after=True, verb=verb, path=path, times=1)
    return emulator.faults.add(delay=HOLD, status=503, verb=verb, path=path, times=1)


# Where to kill, in the order a switch reaches them: (name, verb, path regex, applied).
KILL_POINTS = [
    ("before the state records the action", "create", "/configmaps$", False),
    ("before the first route patch", "patch", f"/ingressroutes/{ROUTES[0][1]}$", False),
    ("between routes 1 and 2", "patch", f"/ingressroutes/{ROUTES[1][1]}$", False),
    ("between routes 2 and 3", "patch", f"/ingressroutes/{ROUTES[2][1]}$", False),
    ("after the last patch, before the state write", "patch",
     f"/ingressroutes/{ROUTES[2][1]}$", True),
]


def assert_agree(cluster: Cluster, expected: str) -> dict[str, Any]:
    """All routes at `expected`, and the stored state says so."""
    pointed = cluster.pointed()
    assert set(pointed.values()) == {expected}, f"routes: {pointed}"
    state = cluster.state()
    release = state.get("lifecycle") or {}
    assert release.get("active") == expected, state
    assert release.get("dark") == (BLUE if expected == GREEN else GREEN), state
    return state


@pytest.mark.parametrize(("point", "verb", "path", "applied"), KILL_POINTS,
                         ids=[p[0].replace(" ", "-") for p in KILL_POINTS])
async def test_a_flip_killed_at_any_step_completes_exactly_once_on_retry(
        cluster, point, verb, path, applied):
    """SIGKILL during `gatekeeper flip`, then the pipeline retries it: every route on green,
    the state agrees (one flip counted, the previous namespace remembered), each route moved
    exactly once, and a third run does nothing."""
    rule = hold(cluster.emulator, verb=verb, path=path, applied=applied)
    code, output = await cli(cluster, "flip", kill_on=rule)
    assert code == -signal.SIGKILL, output
    code, output = await cli(cluster, "flip", "--if-needed", "--output", "json")
    assert code == 0, output
    state = assert_agree(cluster, GREEN)
    assert (state.get("lifecycle") or {}).get("previous") == BLUE, state
    assert state.get("counters", {}).get("flip") == 1, state
    assert cluster.moves(GREEN, held=rule) == {name: 1 for _, name in ROUTES}, point
    code, output = await cli(cluster, "flip", "--if-needed", "--output", "json")
    assert code == 0 and json.loads(output)["changed"] is False, output
    assert_agree(cluster, GREEN)
    assert cluster.moves(BLUE) == {name: 0 for _, name in ROUTES}, "flipped back"


ROLLBACK_KILL_POINTS = [
    ("before the state records the action", "update", "/configmaps/gatekeeper-state$", False),
    *KILL_POINTS[1:],
]


@pytest.mark.parametrize(("point", "verb", "path", "applied"), ROLLBACK_KILL_POINTS,
                         ids=[p[0].replace(" ", "-") for p in ROLLBACK_KILL_POINTS])
async def test_a_rollback_killed_at_any_step_completes_exactly_once_on_retry(
        cluster, point, verb, path, applied):
    """After a flip to green, SIGKILL during `gatekeeper rollback`, then a retry: every
    route back on blue, the state agrees (one rollback), each route moved back once, and a
    third run does nothing."""
    code, output = await cli(cluster, "flip")
    assert code == 0, output
    cluster.emulator.requests.clear()
    rule = hold(cluster.emulator, verb=verb, path=path, applied=applied)
    code, output = await cli(cluster, "rollback", kill_on=rule)
    assert code == -signal.SIGKILL, output
    code, output = await cli(cluster, "rollback", "--output", "json")
    assert code == 0, output
    state = assert_agree(cluster, BLUE)
    assert state.get("counters", {}).get("rollback") == 1, state
    assert cluster.moves(BLUE, held=rule) == {name: 1 for _, name in ROUTES}, point
    code, output = await cli(cluster, "rollback", "--output", "json")
    assert code == 0 and json.loads(output)["changed"] is False, output
    assert_agree(cluster, BLUE)
    assert cluster.moves(GREEN) == {name: 0 for _, name in ROUTES}, "rolled forward again"



# ---- resuming a switch whose process cannot be checked ------------------------------------

async def half_switched(cluster: Cluster, *, holder: dict[str, Any], at: float) -> Operations:
    """The state a flip blue -> green leaves when its process dies after the first route:
    route 1 on green, routes 2 and 3 on blue, the action recorded as started."""
    emulator = cluster.emulator
    api = api_client_for(str(emulator.url))
    ops = Operations(api, load_config_only(cluster.config))
    pair = ops.config.pairs[0]
    await ops.store.update(pair, lambda s: s.begin(
        "flip", at=at, source=BLUE, target=GREEN, trigger="manual", holder=holder,
        images={GREEN: {"api/api": "registry.example.com/api:1.5.0"},
                BLUE: {"api/api": "registry.example.com/api:1.4.0"}}))
    namespace, name = ROUTES[0]
    body = copy.deepcopy(emulator.get_object(IR, "IngressRoute", name, namespace))
    body["spec"]["routes"][0]["services"][0]["namespace"] = GREEN
    emulator.put_object(body)
    return ops


def load_config_only(path: Path) -> Any:
    """The configuration as the cluster commands load it (no rule files)."""
    from gatekeeper.config import parse_config
    from gatekeeper.yamlfiles import load_yaml_file

    data, line_map = load_yaml_file(path)
    return parse_config(data, path, line_map)


async def test_a_switch_from_another_host_is_resumed_only_once_stale(cluster):
    """The process that started the switch runs elsewhere (cannot be checked): a retry is
    refused with a clear reason and changes nothing until the switch is older than any
    live switch can take; then it is finished, once."""
    elsewhere = {"host": "another-runner", "pid": 4242, "since": "1"}
    started = time.time()
    ops = await half_switched(cluster, holder=elsewhere, at=started)
    pair = ops.config.pairs[0]
    try:
        refused = await ops.flip(pair)
        assert refused.refused and not refused.changed
        assert "unfinished" in refused.reasons[0] and "may still be running" in refused.reasons[0]
        assert set(cluster.pointed().values()) == {BLUE, GREEN}
        later = Operations(ops.api, ops.config, clock=lambda: started + ops.resume_after(pair) + 1)
        resumed = await later.flip(pair)
        assert resumed.changed and not resumed.refused, resumed.reasons
        assert "finished after its process died" in resumed.reasons[0]
        state = assert_agree(cluster, GREEN)
        assert state["counters"]["flip"] == 1 and state["lifecycle"]["previous"] == BLUE
        assert state["last_action"]["status"] == "done"
        again = await later.flip(pair)
        assert not again.changed and "nothing to do" in again.reasons[0], again.reasons
        assert cluster.moves(BLUE) == {name: 0 for _, name in ROUTES}
    finally:
        await ops.api.close()
    print(f"\n[resume] another host's switch: refused at once, finished after "
          f"{ops.resume_after(pair):.0f}s (3 routes, request timeout 5 s)")


async def test_an_unfinished_switch_to_a_namespace_that_cannot_serve_is_undone(cluster):
    """Its process is dead and the target lost its Ready pods meanwhile: the switched route
    goes back, the state records the switch as reverted, traffic stays where it was."""
    gone = {"host": socket.gethostname(), "pid": 2**22 + 17, "since": "1"}
    ops = await half_switched(cluster, holder=gone, at=time.time())
    for pod in cluster.emulator.pods(GREEN):
        cluster.emulator.set_pod_ready(GREEN, pod["metadata"]["name"], False)
    try:
        result = await ops.flip(ops.config.pairs[0])
    finally:
        await ops.api.close()
    assert result.refused and result.changed and "undone" in result.reasons[0], result.reasons
    state = assert_agree(cluster, BLUE)
    assert state["last_action"]["status"] == "reverted"
    assert state.get("counters", {}).get("flip") is None


async def test_routes_changed_by_someone_else_are_never_resumed(cluster):
    """A person pointed a route at a third namespace: no resume, a refusal, nothing moved."""
    gone = {"host": socket.gethostname(), "pid": 2**22 + 17, "since": "1"}
    ops = await half_switched(cluster, holder=gone, at=time.time())
    namespace, name = ROUTES[2]
    body = copy.deepcopy(cluster.emulator.get_object(IR, "IngressRoute", name, namespace))
    body["spec"]["routes"][0]["services"][0]["namespace"] = "maintenance"
    cluster.emulator.put_object(body)
    cluster.emulator.requests.clear()
    try:
        result = await ops.flip(ops.config.pairs[0])
    finally:
        await ops.api.close()
    assert result.refused and not result.changed
    assert "inconsistent" in result.reasons[0]
    assert not cluster.emulator.requests.records(method="PATCH")


async def test_a_recovery_cut_short_leaves_the_routes_all_or_none(cluster):
    """A flip's process died after route 1 (routes split). The recovery finishes it with the
    all-or-none switch every flip uses: when one of its patches fails, the route it had
    already moved goes back, so the routes are exactly as it found them (no new split) and
    the switch stays `started`; the next run finishes all three, and the flip counts once."""
    gone = {"host": socket.gethostname(), "pid": 2**22 + 17, "since": "1"}
    ops = await half_switched(cluster, holder=gone, at=time.time())
    pair = ops.config.pairs[0]
    found = cluster.pointed()
    assert sorted(found.values()) == [BLUE, BLUE, GREEN], found
    cluster.emulator.requests.clear()
    last = ROUTES[2][1]
    cluster.emulator.faults.add(status=500, verb="patch", path=f"/ingressroutes/{last}$",
                                times=kubeclient.ATTEMPTS)  # every retry of the patch
    try:
        cut = await ops.recover(pair)
        assert cut is not None and cut.refused and not cut.changed, cut
        assert cluster.pointed() == found, "a failed recovery must leave the routes as found"
        assert cluster.state()["last_action"]["status"] == "started"
        assert any(r.startswith("reverted: ") for r in cut.reasons), cut.reasons
        done = await ops.recover(pair)
    finally:
        await ops.api.close()
    assert done is not None and done.changed and not done.refused, done
    assert "finished after its process died" in done.reasons[0], done.reasons
    state = assert_agree(cluster, GREEN)
    assert state["last_action"]["status"] == "done"
    assert state["counters"]["flip"] == 1 and state["lifecycle"]["previous"] == BLUE
    first, middle = ROUTES[0][1], ROUTES[1][1]
    assert cluster.moves(GREEN) == {first: 0, middle: 2, last: 1}  # moved, put back, moved
    assert cluster.moves(BLUE) == {first: 0, middle: 1, last: 0}
