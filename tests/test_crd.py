"""The BlueGreenPair CRD: generated from the pair models, committed in the chart, rendered by
helm, served by the emulator (so by any API server that honours structural schemas), and
shown by the real kubectl with its printer columns."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper import crd
from gatekeeper.config import PairConfig
from kube_emulator.kubeconfig import write_kubeconfig

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "helm" / "gatekeeper" / "crds" / f"{crd.CRD_NAME}.yaml"
TOOLS = ROOT / ".venv" / "tools" / "bin"

PAIR = PairConfig.model_validate({
    "name": "api", "namespaces": ["production-blue", "production-green"],
    "selector": "app=api-all", "deployments": ["api"],
    "routes": [{"name": "api-live", "namespace": "routing"},
               {"kind": "TraefikService", "name": "api-weighted", "namespace": "routing",
                "api_group": "traefik.containo.us", "service": "api-service"}],
    "variables": {"slo": "0.99"}, "replicas": {"api": 4},
    "policy": {"soak": "1h30m", "cooldown": "0.5s", "consecutive_passes": 2,
               "rollback_when_scaled_down": "scale_up_then_flip"},
})


def test_the_committed_crd_is_the_one_the_models_generate():
    assert COMMITTED.read_text() == crd.manifest_text(), (
        "helm/gatekeeper/crds/ is stale: run `make sync-chart` (gatekeeper/config/ changed)")


def test_every_pair_field_but_name_is_in_the_spec_schema():
    spec = crd.definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"]
    assert set(spec["properties"]) == set(PairConfig.model_fields) - {"name"}
    policy = spec["properties"]["policy"]
    assert policy["nullable"] is True
    assert policy["properties"]["soak"]["x-kubernetes-int-or-string"] is True
    assert policy["properties"]["consecutive_passes"] == {"type": "integer", "minimum": 1}


def test_a_configured_pair_round_trips_through_its_object():
    manifest = crd.manifest_of(PAIR, "team-api")
    assert manifest["spec"]["policy"]["soak"] == 5400
    assert manifest["spec"]["policy"]["cooldown"] == "0.5s"
    parsed = crd.parse_object(manifest)
    assert parsed.model_dump() == PAIR.model_dump()
    assert parsed.object_namespace == "team-api" and PAIR.object_namespace is None


def test_helm_template_renders_the_crd(tmp_path):
    helm = TOOLS / "helm"
    if not helm.is_file():
        pytest.fail(f"{helm} is missing: run `make kube-tools` (make test does)")
    rendered = subprocess.run(
        [str(helm), "template", "gk", str(ROOT / "helm" / "gatekeeper"), "--include-crds",
         "--namespace", "gatekeeper"], capture_output=True, text=True, timeout=120,
        check=False, env={**os.environ, "HOME": str(tmp_path)})
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert crds == [crd.definition()]
    cluster_rules = [rule for d in docs if d["kind"] == "ClusterRole" for rule in d["rules"]]
    assert {"apiGroups": [crd.GROUP], "resources": [f"{crd.PLURAL}/status"],
            "verbs": ["update"]} in cluster_rules


async def _install(kube_emulator) -> None:
    kube_emulator.load(crd.definition())


async def test_the_emulator_accepts_a_configured_pair_and_refuses_wrong_types(
        kube_emulator, kube_api):
    await _install(kube_emulator)
    kube_emulator.load({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "team-api"}})
    objects = client.CustomObjectsApi(kube_api)
    created = await objects.create_namespaced_custom_object(
        crd.GROUP, crd.VERSION, "team-api", crd.PLURAL, crd.manifest_of(PAIR, "team-api"))
    assert crd.parse_object(created).model_dump() == PAIR.model_dump()
    bad: dict[str, Any] = crd.manifest_of(PAIR, "team-api")
    bad["metadata"]["name"] = "bad"
    bad["spec"]["routes"][0]["kind"] = "Ingress"
    bad["spec"]["namespaces"] = ["only-one"]
    bad["spec"]["policy"]["soak"] = True
    with pytest.raises(ApiException) as caught:
        await objects.create_namespaced_custom_object(
            crd.GROUP, crd.VERSION, "team-api", crd.PLURAL, bad)
    assert caught.value.status == 422
    fields = {c["field"] for c in json.loads(caught.value.body)["details"]["causes"]}
    assert fields == {"spec.routes[0].kind", "spec.namespaces", "spec.policy.soak"}


def test_what_the_schema_lets_through_the_models_name_by_field():
    same = crd.manifest_of(PAIR, "team-api")
    same["spec"]["namespaces"] = ["blue", "blue"]
    same["spec"]["routes"][0]["name"] = "Not_A_Name"
    with pytest.raises(crd.InvalidPairObject) as caught:
        crd.parse_object(same)
    assert [p.split(":")[0] for p in caught.value.problems] == ["spec.routes[0].name"]
    same["spec"]["routes"][0]["name"] = "api-live"
    with pytest.raises(crd.InvalidPairObject) as caught:
        crd.parse_object(same)
    assert "the two namespaces of a pair must differ" in caught.value.problems[0]


async def test_real_kubectl_gets_pairs_with_their_printer_columns(kube_emulator, kube_api,
                                                                 tmp_path):
    kubectl = TOOLS / "kubectl"
    if not kubectl.is_file():
        pytest.fail(f"{kubectl} is missing: run `make kube-tools` (make test does)")
    kubeconfig = write_kubeconfig(str(kube_emulator.url), tmp_path / "kubeconfig",
                                  namespace="team-api")
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(kubectl), *args], capture_output=True, text=True,
                              timeout=60, env=env, check=False)

    (tmp_path / "crd.yaml").write_text(crd.manifest_text())
    (tmp_path / "pair.yaml").write_text(yaml.safe_dump(crd.manifest_of(PAIR, "team-api")))
    kube_emulator.load({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "team-api"}})
    for manifest in ("crd.yaml", "pair.yaml"):
        applied = await asyncio.to_thread(run, "apply", "-f", str(tmp_path / manifest))
        assert applied.returncode == 0, applied.stderr
    await client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        crd.GROUP, crd.VERSION, "team-api", crd.PLURAL, "api",
        {"status": {"active": "production-blue", "dark": "production-green",
                    "phase": "validating", "verdict": "safe", "score": 97.5}},
        _content_type="application/merge-patch+json")
    shown = await asyncio.to_thread(run, "get", "bgp")
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()
    assert header.split() == ["NAME", "ACTIVE", "DARK", "PHASE", "VERDICT", "SCORE", "AGE"]
    assert row.split()[:6] == ["api", "production-blue", "production-green", "validating",
                               "safe", "97.5"]
