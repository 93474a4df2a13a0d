"""The pipeline commands end to end against the standalone emulator started from YAML."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.cli import main
from tests.service_support import emulator_process

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "kube_emulator" / "examples" / "bluegreen.yaml"
BLUE, GREEN = "production-blue", "production-green"

CONFIG = """\
rule_files: [rules.yaml]
kubernetes:
  mode: kubeconfig
  kubeconfig: {kubeconfig}
state:
  namespace: gatekeeper
pairs:
  - name: api
    namespaces: [production-blue, production-green]
    routes:
      - name: api-live
        namespace: routing
"""
RULES = """\
rules:
  - name: pods-ready
    description: Every pod Ready.
    source: kubernetes
    check: pods_ready
    pass: ["== 1"]
    key: true
"""
"""The gate `gatekeeper flip` evaluates (as `gatekeeper evaluate` would)."""


def write_config(folder: Path, kubeconfig: Path, *, extra: str = "") -> Path:
    """A gatekeeper configuration naming `kubeconfig`."""
    (folder / "rules.yaml").write_text(RULES)
    path = folder / "gatekeeper.yaml"
    path.write_text(CONFIG.format(kubeconfig=kubeconfig) + extra)
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    """A standalone emulator (pods Ready 1s after they start); yields the config file."""
    extra = tmp_path / "gatekeeper-namespace.yaml"
    extra.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gatekeeper\n")
    kubeconfig = tmp_path / "kubeconfig"
    with emulator_process(kubeconfig, "--objects", str(SEED), "--objects", str(extra),
                          "--ready-delay", "1.0"):
        yield write_config(tmp_path, kubeconfig)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`gatekeeper ARGV...` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def status(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, Any]:
    """`gatekeeper status --output json`, parsed."""
    code, out, _ = run(capsys, "status", "--config", str(config), "--output", "json")
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    return data


def replicas(data: dict[str, Any], namespace: str) -> int:
    """The seed Deployment's replicas in a namespace, from status JSON."""
    ns = next(n for n in data["namespaces"] if n["namespace"] == namespace)
    return int(ns["deployments"][0]["replicas"])


def test_release_end_to_end(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """scale-up, wait-ready, flip, scale-down --keep 1: each idempotent, refusals exit 1."""
    cfg = ("--config", str(cluster))
    assert run(capsys, "dark", *cfg) == (0, f"{GREEN}\n", "")

    code, out, _ = run(capsys, "scale-down", *cfg)  # the previous release's pipeline 3
    assert code == 0 and f"scaled down {GREEN} to 0" in out

    code, out, _ = run(capsys, "scale-up", "--dry-run", *cfg)
    assert code == 0 and "dry-run: would scale up" in out
    assert replicas(status(capsys, cluster), GREEN) == 0

    code, out, _ = run(capsys, "scale-up", *cfg)
    assert code == 0 and f"scaled up {GREEN}: api -> 2" in out

    code, out, err = run(capsys, "flip", *cfg)  # pods take 1s to turn Ready
    assert code == 1 and "refused: flip" in err and f"{GREEN} cannot take traffic" in err

    code, out, _ = run(capsys, "wait-ready", "--timeout", "10s", *cfg)
    assert code == 0
    progress = out.strip().splitlines()
    assert len(progress) >= 2 and progress[-1].endswith(f"2/2 pods Ready in {GREEN}")

    code, out, _ = run(capsys, "flip", "--reason", "release 1.5.0", *cfg)
    assert (code, out) == (0, f"flip: {BLUE} -> {GREEN}\n")
    code, out, err = run(capsys, "flip", *cfg)  # nothing moved: a pipeline must not pass
    assert code == 1 and out.startswith("nothing to do") and "--if-needed" in err
    code, out, _ = run(capsys, "flip", "--if-needed", *cfg)
    assert code == 0 and out.startswith("nothing to do")

    code, out, _ = run(capsys, "scale-down", "--keep", "1", *cfg)
    assert code == 0 and f"scaled down {BLUE} to 1: api" in out
    code, out, _ = run(capsys, "scale-down", "--keep", "1", *cfg)
    assert code == 0 and out.startswith("nothing to do")
    code, out, _ = run(capsys, "flip", "--if-needed", *cfg)  # a re-run must not flip back
    assert code == 0 and out.startswith("nothing to do")

    code, out, err = run(capsys, "scale-down", "--namespace", GREEN, *cfg)
    assert code == 1 and "active namespace" in err

    data = status(capsys, cluster)
    assert (data["active"], data["dark"]) == (GREEN, BLUE)
    assert (replicas(data, GREEN), replicas(data, BLUE)) == (2, 1)
    assert data["state"]["last_action"]["kind"] == "flip"
    assert [t["kind"] for t in data["state"]["transitions"]] == \
        ["scale_down", "scale_up", "refused", "flip", "scale_down", "refused"]

    code, out, _ = run(capsys, "rollback", "--dry-run", "--output", "json", *cfg)
    assert code == 0 and json.loads(out)["details"]["would"]["to"] == BLUE
    assert run(capsys, "dark", *cfg)[1] == f"{BLUE}\n"


def test_text_status(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The human status names the route, both namespaces and their images."""
    code, out, _ = run(capsys, "status", "--config", str(cluster))
    assert code == 0
    assert out.startswith(f"pair api: active {BLUE}, dark {GREEN}")
    assert "IngressRoute routing/api-live [traefik.io] -> production-blue" in out
    assert "api=registry.example.com/api:1.5.0" in out


def test_unreachable_cluster_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens at the kubeconfig's server: exit 3 with a message, no traceback."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    config = write_config(tmp_path, kubeconfig)
    code, _, err = run(capsys, "flip", "--config", str(config))
    # the first call lists the BlueGreenPair objects (the pair could be one of them)
    assert code == 3 and err.startswith("error: reading the BlueGreenPair objects: cannot "
                                        "reach the API server")


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown pair, ambiguous pair, missing file, missing kubeconfig: exit 2. (With
    `objects.enabled` the pair could be a BlueGreenPair object: the pair is then picked
    after reading them, and an unconfigurable client is the first error.)"""
    pairs = """\
  - name: web
    namespaces: [web-blue, web-green]
    routes:
      - name: web-live
        namespace: routing
"""
    config = write_config(tmp_path, tmp_path / "missing-kubeconfig",
                          extra=pairs + "objects:\n  enabled: false\n")
    code, _, err = run(capsys, "flip", "--config", str(config), "--pair", "nope")
    assert code == 2 and "unknown pair 'nope'" in err
    code, _, err = run(capsys, "dark", "--config", str(config))
    assert code == 2 and "choose one with --pair" in err
    config = write_config(tmp_path, tmp_path / "missing-kubeconfig", extra=pairs)
    code, _, err = run(capsys, "flip", "--config", str(config), "--pair", "nope")
    assert code == 2 and "cannot configure the Kubernetes client" in err
    code, _, err = run(capsys, "status", "--config", str(tmp_path / "absent.yaml"))
    assert code == 2
    code, _, err = run(capsys, "status", "--config", str(config), "--pair", "api")
    assert code == 2 and "cannot configure the Kubernetes client" in err
    with pytest.raises(SystemExit) as exited:
        main(["wait-ready", "--config", str(config), "--timeout", "soon"])
    assert exited.value.code == 2


def test_flip_refuses_an_unsafe_verdict_and_force_is_recorded(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`gatekeeper flip` evaluates the gates like `POST .../flip` does: a dark whose key
    rule fails is refused (exit 1, the reasons), traffic stays, and the refusal is in the
    pair's history like the API's; `--force` flips and the history says it was forced."""
    cfg = ("--config", str(cluster))
    (cluster.parent / "rules.yaml").write_text(RULES.replace('"== 1"', '">= 2"'))
    assert run(capsys, "scale-up", *cfg)[0] == 0
    assert run(capsys, "wait-ready", "--timeout", "10s", *cfg)[0] == 0

    code, out, err = run(capsys, "flip", *cfg)
    assert code == 1 and "refused: flip" in err, (out, err)
    assert f"gates: verdict on {GREEN} is unsafe" in err and "pods-ready" in err, err
    data = status(capsys, cluster)
    assert data["active"] == BLUE
    refused = data["state"]["transitions"][-1]
    assert (refused["kind"], refused["action"]) == ("refused", "flip"), refused
    assert any("is unsafe" in r for r in refused["reasons"]), refused

    code, out, err = run(capsys, "flip", "--force", "--reason", "hotfix", *cfg)
    assert (code, out) == (0, f"flip: {BLUE} -> {GREEN}\n"), err
    data = status(capsys, cluster)
    assert data["active"] == GREEN
    last = data["state"]["transitions"][-1]
    assert (last["kind"], last.get("forced"), last.get("reason")) == ("flip", True, "hotfix")


class ThreadedReceiver:
    """A loopback webhook receiver on its own thread and event loop (the CLI runs its own
    `asyncio.run`): records each JSON body; `/hang` never answers."""

    def __init__(self) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.bodies: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def hook(request: web.Request) -> web.Response:
            if request.path == "/hang":
                await self.release.wait()
                return web.Response(status=204)
            self.bodies.append(await request.json())
            return web.Response(status=204)

        async def serve() -> None:
            self.release = asyncio.Event()
            app = web.Application()
            app.router.add_post("/{name}", hook)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        started.wait(10)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        import asyncio

        self.loop.call_soon_threadsafe(self.release.set)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_cli_actions_notify(cluster: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's flip, rollback and scale-down send the service's events (trigger `cli`,
    valid against the shipped schema) before exiting; a hung receiver delays only the
    exit (bounded), and a no-op sends nothing."""
    import jsonschema_rs

    from gatekeeper.service.notifications import schema

    receiver = ThreadedReceiver()
    try:
        monkeypatch.setenv("GK_TEST_HOOK", receiver.url("hook"))
        monkeypatch.setenv("GK_TEST_HANG", receiver.url("hang"))
        config = write_config(cluster.parent, cluster.parent / "kubeconfig", extra=(
            "notifications:\n  timeout: 1s\n  retries: 0\n  receivers:\n"
            "    - {kind: webhook, url_env: GK_TEST_HOOK}\n"
            "    - {kind: webhook, name: hung, url_env: GK_TEST_HANG}\n"))
        cfg = ("--config", str(config))
        assert run(capsys, "scale-up", *cfg)[0] == 0
        assert run(capsys, "wait-ready", "--timeout", "10s", *cfg)[0] == 0
        assert run(capsys, "flip", *cfg)[0] == 0
        run(capsys, "flip", *cfg)  # nothing to do (or refused): no message either way
        assert run(capsys, "rollback", *cfg)[0] == 0
        assert run(capsys, "scale-down", *cfg)[0] == 0
        events = [(b["event"], b["active"], b["trigger"]) for b in receiver.bodies]
        assert events == [("flipped", GREEN, "cli"), ("rolled_back", BLUE, "cli"),
                          ("scaled_down", BLUE, "cli")], events
        validator = jsonschema_rs.validator_for(schema())
        for body in receiver.bodies:
            validator.validate(body)
        assert receiver.bodies[0]["images"][GREEN]
    finally:
        receiver.close()


def test_serve_logs_decisions_at_info_as_json_only(cluster: Path) -> None:
    """`gatekeeper serve --log-format json` with no --log-level: info lines (its start and
    its shutdown) and nothing but JSON on stderr (no plain-text "listening" line)."""
    import os
    import signal

    import yaml

    from tests.service_support import PODS_READY_RULE

    folder = cluster.parent
    (folder / "rules.yaml").write_text(yaml.safe_dump({"rules": [PODS_READY_RULE]}))
    config = write_config(folder, folder / "kubeconfig", extra=(
        "leader_election: {enabled: false}\n"
        "evaluation: {interval: 1s}\nauth: {token_env: GK_TEST_NO_TOKEN}\n"))
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "--log-format", "json", "serve", "--config",
         str(config), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "GATEKEEPER_LOG_FORMAT": "json"})
    lines: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if '"gatekeeper serving"' in line:
                break
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
        lines.extend(rest.splitlines())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    records = [json.loads(line) for line in lines if line.strip()]  # fails on plain text
    events = {(r["event"], r["level"]) for r in records}
    assert ("gatekeeper serving", "info") in events, events
    assert ("stopping: finishing actions in flight", "info") in events, events


def test_a_pipelines_rollback_follows_the_policy_like_the_apis(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One decision for the API and the CLI: with `rollback_when_scaled_down:
    scale_up_then_flip`, `gatekeeper rollback` to a namespace scaled down to 0 scales it up,
    waits until Ready and rolls back, as `POST .../rollback` does (before, the CLI refused
    unless `--scale-up-first`)."""
    cluster.write_text(cluster.read_text() + "policy:\n  rollback_when_scaled_down: "
                       "scale_up_then_flip\n  ready_timeout: 20s\n")
    cfg = ("--config", str(cluster))
    assert run(capsys, "scale-up", *cfg)[0] == 0
    assert run(capsys, "wait-ready", "--timeout", "10s", *cfg)[0] == 0
    assert run(capsys, "flip", *cfg)[:2] == (0, f"flip: {BLUE} -> {GREEN}\n")
    code, out, err = run(capsys, "scale-down", *cfg)
    assert code == 0 and f"scaled down {BLUE} to 0" in out, (out, err)

    code, out, err = run(capsys, "rollback", "--reason", "5xx", *cfg)
    assert code == 0 and f"rollback: {GREEN} -> {BLUE}" in out, (out, err)
    data = status(capsys, cluster)
    assert data["active"] == BLUE and replicas(data, BLUE) == 2
