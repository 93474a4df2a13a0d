"""`gatekeeper evaluate` end to end: real Prometheus and Alertmanager, the emulated cluster
started standalone from YAML, the route read through kubernetes_asyncio, every shipped rule."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_support import emulator_process
from tests.test_evaluate_prometheus import wait_for_ratio

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster(tmp_path, unique_pair):
    """The example blue/green cluster with this test's namespace names, as a process."""
    blue, green = unique_pair
    seed = (ROOT / "kube_emulator" / "examples" / "bluegreen.yaml").read_text()
    objects = tmp_path / "cluster.yaml"
    objects.write_text(seed.replace("production-blue", blue).replace("production-green", green))
    kubeconfig = tmp_path / "kubeconfig"
    with emulator_process(kubeconfig, "--objects", str(objects)):
        yield kubeconfig


def write_config(tmp_path, prometheus, alertmanager, kubeconfig, blue, green):
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(f"""
prometheus: {{url: "{prometheus.url}", timeout: 5s}}
alertmanager: {{url: "{alertmanager.url}"}}
kubernetes: {{mode: kubeconfig, kubeconfig: "{kubeconfig}"}}
evaluation: {{window: 10s}}
rule_files: ["{ROOT}/rules"]
pairs:
  - name: api
    namespaces: [{blue}, {green}]
    selector: app=api
    routes: [{{name: api-live, namespace: routing}}]
""")
    return path


def gatekeeper(*args):
    return subprocess.run([sys.executable, "-m", "gatekeeper", *args], capture_output=True,
                          text=True, timeout=120)


def test_evaluate_reads_the_route_and_judges_green_unsafe_then_blue_safe(
        tmp_path, prometheus, alertmanager, synthetic_fleet, unique_pair, cluster):
    """Route points at blue, so green is dark: 5% errors -> exit 1; blue as dark -> exit 0."""
    blue, green = unique_pair
    synthetic_fleet.set_profile(green, rps=2000, error_ratio=0.05)
    synthetic_fleet.set_profile(blue, rps=2000, error_ratio=0.001)
    wait_for_ratio(prometheus, [blue, green], {green: 0.05, blue: 0.001})
    config = write_config(tmp_path, prometheus, alertmanager, cluster, blue, green)

    table = gatekeeper("evaluate", "--config", str(config))
    assert table.returncode == 1, table.stdout + table.stderr
    assert f"dark {green} vs active {blue}" in table.stdout
    assert "verdict: UNSAFE" in table.stdout
    reason = next(line for line in table.stdout.splitlines()
                  if line.strip().startswith(f"- error-rate [key] on {green}: "))
    shown = float(reason.split(f"on {green}: ", 1)[1].split()[0])
    assert shown == pytest.approx(0.05, rel=0.1) and "misses < 0.01" in reason

    done = gatekeeper("evaluate", "--config", str(config), "--pair", "api", "--output", "json")
    assert done.returncode == 1
    verdict = json.loads(done.stdout)["pairs"]["api"]
    results = {r["rule"]: r for r in verdict["candidate"]["results"]}
    assert verdict["verdict"] == "unsafe"
    assert results["error-rate"]["status"] == "fail"
    assert results["pods-ready"]["status"] == "pass"
    assert results["log-errors"]["status"] == "pass"
    assert results["new-release-deployed"]["value"] == 1

    reverse = gatekeeper("evaluate", "--config", str(config), "--dark", blue, "--output", "json")
    assert reverse.returncode == 0, reverse.stdout + reverse.stderr
    assert json.loads(reverse.stdout)["pairs"]["api"]["verdict"] == "safe"


def test_evaluate_usage_errors_exit_2(tmp_path, prometheus, alertmanager, unique_pair):
    """An unknown pair, a namespace outside the pair and a broken config exit 2 with a reason."""
    blue, green = unique_pair
    config = write_config(tmp_path, prometheus, alertmanager, tmp_path / "none", blue, green)
    unknown = gatekeeper("evaluate", "--config", str(config), "--pair", "web")
    assert unknown.returncode == 2 and "unknown pair 'web'" in unknown.stderr
    outside = gatekeeper("evaluate", "--config", str(config), "--dark", "default")
    assert outside.returncode == 2 and "not part of pair" in outside.stderr
    config.write_text(config.read_text().replace("window: 10s", "window: 10s, colour: red"))
    broken = gatekeeper("evaluate", "--config", str(config))
    assert broken.returncode == 2
    assert f"{config}:5: field 'evaluation.colour': unknown key" in broken.stderr


def test_unreachable_cluster_is_unknown(tmp_path, prometheus, alertmanager, unique_pair):
    """Without a readable route the dark namespace is unknown: exit 3, never safe."""
    blue, green = unique_pair
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
""")
    config = write_config(tmp_path, prometheus, alertmanager, kubeconfig, blue, green)
    done = gatekeeper("evaluate", "--config", str(config))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "verdict UNKNOWN" in done.stdout and "cannot read the route" in done.stdout
