"""`gatekeeper check --wait`: progress while waiting, a final summary, and JSON that stays
one document. A real service against the emulated Kubernetes API (judged on pod readiness,
5 s window, 2 s soak, 3 passes); the CLI runs for real in a thread and talks HTTP to it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import pytest

from gatekeeper.cli import main
from gatekeeper.service.app import create_service
from tests.service_support import NEW, PODS_READY_RULE, TOKEN, seed, wait_until, write_config

pytestmark = pytest.mark.timeout(60)

BLUE, GREEN, ROUTING = "progress-blue", "progress-green", "progress-routing"


@pytest.fixture
async def validating(tmp_path, kube_emulator, kube_api, aiohttp_server):
    """A service whose pair has new images in green: validating now, ready within ~10 s."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False})
    service = create_service(loaded, kube_api, token=TOKEN)
    server = await aiohttp_server(service.app)
    view = service.controller.views["api"]
    await wait_until(lambda: view.state.active == BLUE, within=10, what="first tick")
    from tests.service_support import set_image

    await set_image(kube_api, GREEN, NEW)
    await wait_until(lambda: view.state.phase == "validating", within=10, what="validating")
    yield str(server.make_url("")).rstrip("/")
    await service.close()


async def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(argv))

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


async def test_check_wait_prints_progress_on_change_then_a_summary(validating):
    """Lines for the phases and passes seen while validating, none repeated, the SAFE answer,
    and a summary naming the wait."""
    code, out, _err = await run_cli("check", "--url", validating, "--pair", "api",
                                    "--wait", "40s")
    assert code == 0, out
    lines = out.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) >= 2, out
    assert progress[0].split("] ", 1)[1].startswith("phase validating")
    assert "phase ready" in progress[-1] and "verdict safe" in progress[-1]
    assert any("passes" in line for line in progress)
    assert len({p.split("] ", 1)[1] for p in progress}) == len(progress), "a line repeated"
    assert any(line.startswith("SAFE: pair api") for line in lines)
    assert lines[-1].startswith("summary: safe after ") and "change" in lines[-1]


async def test_check_output_json_is_one_document_with_the_progress(validating):
    """stdout parses as one JSON document holding the answer, the progress and the wait;
    the progress lines went to stderr."""
    code, out, err = await run_cli("check", "--url", validating, "--pair", "api", "--wait",
                                   "40s", "--output", "json")
    assert code == 0, (out, err)
    document = json.loads(out)
    assert document["safe"] is True and document["http_status"] == 200
    assert document["progress"][0]["phase"] == "validating"
    assert document["progress"][-1]["phase"] == "ready"
    assert isinstance(document["waited_seconds"], float)
    assert "phase validating" in err


async def test_check_without_wait_answers_at_once_and_quiet_prints_no_progress(validating):
    """No --wait: not safe yet (exit 1) with reasons; --quiet: no progress lines."""
    code, out, _ = await run_cli("check", "--url", validating, "--pair", "api", "--quiet")
    assert code == 1 and out.startswith("NOT SAFE: pair api (phase validating")
    assert not [line for line in out.splitlines() if line.startswith("[")]
