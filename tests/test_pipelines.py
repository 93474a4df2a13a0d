"""docs/pipelines.md runs: every step of its pipelines that calls `gatekeeper` is extracted
from the documented YAML and run by bash, in order, against the emulated Kubernetes API and
a running gatekeeper (judged on pod readiness), with only GATEKEEPER_URL, GATEKEEPER_TOKEN
and GATEKEEPER_CONFIG set. A step without `gatekeeper` (the user's own GitOps deploy) is
played by the test: new images in the dark namespace. Variables pass between steps the way
each CI system passes them (`##vso[task.setvariable]` on Azure, `$GITHUB_ENV` on GitHub).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.service.app import create_service
from kube_emulator.kubeconfig import write_kubeconfig
from tests.service_support import (
    NEW,
    PODS_READY_RULE,
    replicas,
    route_target,
    seed,
    set_image,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(150)

DOC = Path(__file__).resolve().parent.parent / "docs" / "pipelines.md"
BLUE, GREEN, ROUTING = "pipe-blue", "pipe-green", "pipe-routing"
TOKEN_NAME, TOKEN = "azure-pipelines", "tok-pipelines-40c1"
_SETVARIABLE = re.compile(r"^##vso\[task\.setvariable variable=(\w+)\](.*)$", re.M)


def pipelines() -> dict[str, dict[str, Any]]:
    """The YAML blocks of docs/pipelines.md marked `# pipeline: NAME`, parsed."""
    blocks = re.findall(r"```yaml\n(# pipeline: ([^\n]+)\n.*?)```", DOC.read_text(), re.S)
    return {name.strip(): yaml.safe_load(text) for text, name in blocks}


def steps(node: Any) -> list[str]:
    """Every step's shell script, in document order (Azure `script`, GitHub `run`)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key in ("script", "run"):
            if isinstance(node.get(key), str):
                found.append(node[key])
        for value in node.values():
            if isinstance(value, dict | list):
                found.extend(steps(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(steps(item))
    return found


def test_the_document_has_the_three_azure_pipelines_and_the_github_workflow():
    found = pipelines()
    assert set(found) == {"azure deploy", "azure flip", "azure scale-down", "github"}
    commands = {"dark", "wait-ready", "check", "approve", "status"}
    used = {m for name in found for s in steps(found[name])
            for m in re.findall(r"gatekeeper ([a-z-]+)", s)}
    assert commands <= used
    assert "--wait" in "".join(steps(found["azure deploy"]))
    assert "ManualValidation@0" in DOC.read_text()


@pytest.fixture
async def cluster(tmp_path, kube_emulator, kube_api, aiohttp_server):
    """A running gatekeeper (auto flip after approval, 2 s observation, the go/no-go a
    person's) and a configuration file whose kubeconfig reaches the same emulator."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_replicas=0))
    kubeconfig = write_kubeconfig(str(kube_emulator.url), tmp_path / "kubeconfig")
    loaded = write_config(
        tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
        rules=[PODS_READY_RULE],
        policy={"auto_flip": True, "require_approval": True, "observation": "2s",
                "auto_scale_down": False, "scale_down_keep": 0},
        kubernetes={"mode": "kubeconfig", "kubeconfig": str(kubeconfig)})
    service = create_service(loaded, kube_api, token=None, tokens={TOKEN_NAME: TOKEN})
    server = await aiohttp_server(service.app)
    view = service.controller.views["api"]
    await wait_until(lambda: view.state.active == BLUE, within=10, what="first tick")
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HOME": str(tmp_path), "GATEKEEPER_URL": str(server.make_url("")).rstrip("/"),
           "GATEKEEPER_TOKEN": TOKEN, "GATEKEEPER_CONFIG": str(tmp_path / "gatekeeper.yaml"),
           "GITHUB_SHA": "0123abc", "BUILD_BUILDID": "4711"}
    yield service, env, tmp_path
    await service.close()


async def run_steps(scripts: list[str], env: dict[str, str], kube_api: Any, folder: Path
                    ) -> list[str]:
    """Run each step with bash -e (as both CI systems do); the GitOps step is the test's.
    Returns each step's output; fails on the first step that exits non-zero."""
    outputs = []
    github_env = folder / "github_env"
    for script in scripts:
        if "gatekeeper" not in script:
            await set_image(kube_api, env["DARK"], NEW)  # the user's own deploy step
            outputs.append("(deployed by the test)")
            continue
        github_env.write_text("")
        process = await asyncio.create_subprocess_exec(
            "bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script,
            env={**env, "GITHUB_ENV": str(github_env)}, cwd=folder,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        text = out.decode()
        assert process.returncode == 0, f"step failed ({process.returncode}):\n{script}\n{text}"
        env.update(dict(_SETVARIABLE.findall(text)))
        for line in github_env.read_text().splitlines():
            name, _, value = line.partition("=")
            env[name] = value
        outputs.append(text)
    return outputs


async def _release(pipeline_steps: list[list[str]], cluster, kube_api) -> list[list[str]]:
    service, env, folder = cluster
    view = service.controller.views["api"]
    deploy, flip, scale_down = pipeline_steps
    outputs = [await run_steps(deploy, env, kube_api, folder)]
    assert env["DARK"] == GREEN
    # Safe and not flipped: still validating, or already soaked and ready (2 s soak) when
    # the step took longer on a loaded machine; the flip needs the approval either way.
    assert "SAFE: pair api" in outputs[0][-1], outputs[0][-1]
    assert re.search(r"phase (validating|ready)\b", outputs[0][-1]), outputs[0][-1]
    assert await replicas(kube_api, GREEN) == 2  # gatekeeper scaled the dark up itself
    outputs.append(await run_steps(flip, env, kube_api, folder))
    assert await route_target(kube_api, ROUTING) == GREEN
    assert f"approved by {TOKEN_NAME}" in outputs[1][-1]
    outputs.append(await run_steps(scale_down, env, kube_api, folder))
    await wait_until(lambda: view.state.phase == "stable", within=20, what="scale-down")
    assert await replicas(kube_api, BLUE) == 0
    record = view.record
    assert record is not None
    assert [(a["decision"], a["by"], a["outcome"]) for a in record.approvals] == [
        ("flip", TOKEN_NAME, "changed"), ("scale-down", TOKEN_NAME, "changed")]
    return outputs


async def test_the_azure_devops_pipelines_release_through_gatekeeper(cluster, kube_api):
    """Deploy, flip and scale-down as documented: green validated, approved, flipped by
    gatekeeper, the go/no-go approved, blue scaled down; both approvals name the token."""
    found = pipelines()
    await _release([steps(found["azure deploy"]), steps(found["azure flip"]),
                    steps(found["azure scale-down"])], cluster, kube_api)


async def test_the_github_actions_workflow_releases_through_gatekeeper(cluster, kube_api):
    """The same release through the GitHub workflow's three jobs."""
    workflow = pipelines()["github"]
    jobs = workflow["jobs"]
    await _release([steps(jobs["deploy"]), steps(jobs["flip"]), steps(jobs["go-no-go"])],
                   cluster, kube_api)
