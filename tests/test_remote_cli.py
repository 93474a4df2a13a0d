"""`gatekeeper flip|rollback|scale-down --url`: the mutating commands through a running service.

No kubeconfig and no configuration file: the CLI (run for real, in a thread with its own event
loop) talks HTTP to a service that runs against the emulated Kubernetes API, judged on pod
readiness only. The exit codes are those of the cluster commands.
"""

from __future__ import annotations

import pytest

from tests.service_support import route_target, wait_until
from tests.test_approvals import BLUE, GREEN, ROUTING, TOKENS, cli, served  # noqa: F401

pytestmark = pytest.mark.timeout(60)


async def test_flip_and_rollback_through_the_api(served, kube_api, tmp_path, monkeypatch):  # noqa: F811
    service, url = served
    token = TOKENS["ci-pipeline"]
    code, out = await cli("flip", "--url", url, "--pair", "api", token=token, tmp_path=tmp_path)
    assert code == 1 and "refused: flip" in out, out  # the lifecycle's check: idle, no release
    assert await route_target(kube_api, ROUTING) == BLUE

    code, out = await cli("flip", "--url", url, "--pair", "api", "--force", "--reason", "hotfix",
                          token=token, tmp_path=tmp_path)
    assert code == 0 and f"{BLUE} -> {GREEN}" in out, out
    assert await route_target(kube_api, ROUTING) == GREEN
    view = service.controller.views["api"]
    await wait_until(lambda: view.observation is not None and view.observation.active == GREEN,
                     within=10, what="a tick that sees the flip")

    code, out = await cli("flip", "--url", url, "--pair", "api", "--to", GREEN, token=token,
                          tmp_path=tmp_path)
    assert code == 1 and "nothing to do" in out and "--if-needed" in out, out
    code, out = await cli("flip", "--url", url, "--pair", "api", "--to", GREEN, "--if-needed",
                          token=token, tmp_path=tmp_path)
    assert code == 0 and "nothing to do" in out, out

    monkeypatch.setenv("GATEKEEPER_TOKEN", TOKENS["alice"])
    code, out = await cli("rollback", "--url", url, "--pair", "api", "--reason", "bad")
    assert code == 0 and GREEN in out and BLUE in out, out
    assert await route_target(kube_api, ROUTING) == BLUE


async def test_remote_usage_errors(served, tmp_path, monkeypatch):  # noqa: F811
    _service, url = served
    monkeypatch.delenv("GATEKEEPER_TOKEN", raising=False)
    code, out = await cli("flip", "--url", url, "--pair", "api")
    assert code == 2, out  # no token: 401
    code, out = await cli("flip", "--url", url, token="wrong", tmp_path=tmp_path)
    assert code == 2 and "--pair" in out, out
    code, out = await cli("rollback", "--url", "http://127.0.0.1:9", "--pair", "api",
                          token="x", tmp_path=tmp_path)
    assert code == 3 and "unreachable" in out, out
