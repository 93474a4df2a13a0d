"""The Helm chart in helm/gatekeeper, rendered by the real `helm` and validated for real.

`make kube-tools` caches helm v4.1 and kubectl 1.33 under the venv (tools/install_kube_tools.py);
these tests run them by path. For the default values and each realistic value set, `helm lint
--strict` passes, every object `helm template` renders validates strictly against the
Kubernetes 1.33 schemas (kubernetes-validate; the Prometheus Operator kinds, which it has no
schema for, get their metadata checked and a PrometheusRule's groups by promtool), the
rendered configuration loads with gatekeeper's own loader (with the rules the chart ships),
and the RBAC granted in each namespace equals the API calls gatekeeper/permissions.py says
the code makes there: more fails, less fails.

Static checks kept: values.schema.json against the configuration model, embedded files
byte-identical to rules/, alerts/, dashboards/, Chart.yaml fields.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import kubernetes_validate
import pytest
import yaml

import gatekeeper
from gatekeeper import permissions, watching
from gatekeeper.config import Config, LoadedConfig, PairConfig, PolicyConfig, RouteRef, load_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "gatekeeper"
TEMPLATES = CHART / "templates"
TOOLS = Path(sys.prefix) / "tools" / "bin"
KUBE_VERSION = "1.33.0"
RELEASE = "gatekeeper"
# Source folder -> (glob of the files the chart embeds, copy under files/).
EMBEDDED = {
    "rules": ("*.yaml", CHART / "files" / "rules"),
    "rules/sets": ("*.yaml", CHART / "files" / "rules" / "sets"),
    "alerts": ("*.rules.yaml", CHART / "files" / "alerts"),
    "dashboards": ("*.json", CHART / "files" / "dashboards"),
}


def _route(name: str, namespace: str, kind: str = "IngressRoute",
           group: str = "traefik.io") -> dict[str, str]:
    return {"kind": kind, "api_group": group, "name": name, "namespace": namespace}


# name -> (release namespace, values overriding values.yaml). Lists replace, maps merge.
_TEST_JOB = {"image": "registry.example.com/api-tests:2.0", "service": "api-service",
             "port": 8080, "timeout": "10m", "backoff_limit": 1,
             "command": ["npm", "run", "test:integration"]}
VALUE_SETS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("gatekeeper", {}),
    "two-pairs": ("gatekeeper", {"config": {"pairs": [
        {"name": "api", "namespaces": ["production-blue", "production-green"],
         "selector": "app=api-all",
         "routes": [_route("api-live", "routing", group="traefik.containo.us")]},
        {"name": "web", "namespaces": ["web-blue", "web-green"],
         "routes": [_route("web-live", "routing", kind="TraefikService")]},
    ]}}),
    "route-in-monitoring": ("monitoring", {
        "config": {"pairs": [{"name": "production",
                              "namespaces": ["production-blue", "production-green"],
                              "routes": [_route("api-live", "monitoring")]}]},
        "dashboards": {"namespace": "monitoring"},
    }),
    "no-servicemonitor-crd": ("gatekeeper", {
        "serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}}),
    "custom-dashboard-label": ("gatekeeper", {"dashboards": {
        "namespace": "grafana", "label": "grafana_dashboard_custom", "labelValue": "yes",
        "folder": "Releases"}}),
    "existing-token-secret": ("gatekeeper", {
        "auth": {"existingSecret": "ci-gatekeeper-token", "secretKey": "bearer"}}),
    "secret-parity": ("gatekeeper", {"config": {"kubernetes": {"read_secrets": True}}}),
    "cluster-scope": ("gatekeeper", {"rbac": {"scope": "cluster"}}),
    # Pairs declared as objects only: their namespaces granted by name, no cluster scope.
    "object-pair-namespaces": ("gatekeeper", {"rbac": {"pairNamespaces": [
        "shop-blue", "shop-green", {"namespace": "shop-routing", "kinds": ["routes"]},
        {"namespace": "jobs-green", "kinds": ["pairs", "tests"]}]},
        "config": {"pairs": []}}),
    "opentelemetry-resources": ("gatekeeper", {"rules": {"httpSet": "opentelemetry",
                                                         "resources": True}}),
    "token-review": ("gatekeeper", {"config": {"auth": {"token_review": True}}}),
    # Sharded replicas: the shard and member Leases are listed (permissions.py's switch).
    "sharded": ("gatekeeper", {"replicaCount": 3,
                               "config": {"sharding": {"enabled": True, "shards": 12}}}),
    "token-review-cluster-scope": ("gatekeeper", {"rbac": {"scope": "cluster"},
                                                  "config": {"auth": {"token_review": True}}}),
    # One pair runs the team's test image as a Job: batch/jobs in its two namespaces only.
    "test-jobs": ("gatekeeper", {"config": {"pairs": [
        {"name": "api", "namespaces": ["production-blue", "production-green"],
         "routes": [_route("api-live", "routing")],
         "test_job": _TEST_JOB},
        {"name": "web", "namespaces": ["web-blue", "web-green"],
         "routes": [_route("web-live", "routing")]},
    ]}}),
    "test-jobs-cluster-scope": ("gatekeeper", {"rbac": {"scope": "cluster"}, "config": {
        "pairs": [{"name": "api", "namespaces": ["production-blue", "production-green"],
                   "routes": [_route("api-live", "routing")], "test_job": _TEST_JOB}]}}),
    # A Slack channel from the mounted Secret, a webhook from an environment variable.
    "notification-receivers": ("gatekeeper", {
        "notifications": {"existingSecret": "gatekeeper-notification-urls"},
        "extraEnv": [{"name": "GATEKEEPER_WEBHOOK_URL", "valueFrom": {"secretKeyRef": {
            "name": "gatekeeper-notification-urls", "key": "webhook-url"}}}],
        "config": {"notifications": {
            "receivers": [
                {"kind": "slack", "name": "releases",
                 "url_file": "/etc/gatekeeper/notifications/slack-url"},
                {"kind": "webhook", "name": "audit", "url_env": "GATEKEEPER_WEBHOOK_URL"},
            ],
            "api_url": "https://gatekeeper.example.com",
            "dashboard_url": "https://grafana.example.com/d/gatekeeper-deployment-validation",
            "timeout": "5s", "retries": 3, "backoff": "500ms", "queue_size": 200,
            "overflow": "drop_oldest", "evidence_stuck_after": "45m"}}}),
}


def _tool(name: str) -> Path:
    path = TOOLS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make kube-tools` (make test does)")
    return path


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=120, check=False)


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _merged_values(overrides: dict[str, Any]) -> dict[str, Any]:
    """values.yaml with OVERRIDES as helm merges them (maps merge, everything else replaces)."""

    def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(base)
        for key, value in top.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out

    return merge(_values(), overrides)


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def _schema_errors(values: dict[str, Any]) -> list[str]:
    return [error.message for error in jsonschema_rs.validator_for(_schema()).iter_errors(values)]


class Rendered:
    """One `helm template` of the chart: its objects, and the overrides file used."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.namespace, self.overrides = VALUE_SETS[name]
        self.values = _merged_values(self.overrides)
        self.values_file = workdir / f"{name}.yaml"
        self.values_file.write_text(yaml.safe_dump(self.overrides))
        result = _run(_tool("helm"), "template", RELEASE, CHART, "--namespace", self.namespace,
                      "--kube-version", KUBE_VERSION, "-f", self.values_file)
        assert result.returncode == 0, f"helm template ({name}) failed:\n{result.stderr}"
        self.objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, got {len(found)}"
        return found[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rendered]]:
    """Every value set rendered once for the module."""
    workdir = tmp_path_factory.mktemp("helm")
    yield {name: Rendered(name, workdir) for name in VALUE_SETS}


# -- helm lint and strict schema validation --------------------------------------------------


def test_the_cached_tools_are_the_pinned_versions():
    """helm v4.1 and kubectl 1.33, from the venv's tools/bin, not whatever is on PATH."""
    helm = _run(_tool("helm"), "version", "--short")
    assert helm.returncode == 0 and helm.stdout.startswith("v4.1."), helm.stdout + helm.stderr
    kubectl = _run(_tool("kubectl"), "version", "--client", "-o", "json")
    assert kubectl.returncode == 0, kubectl.stderr
    assert json.loads(kubectl.stdout)["clientVersion"]["minor"] == "33"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_passes(name, rendered):
    """`helm lint --strict` (schema, templates, missing values are errors) for every value set."""
    namespace = rendered[name].namespace
    result = _run(_tool("helm"), "lint", "--strict", CHART, "--namespace", namespace,
                  "--kube-version", KUBE_VERSION, "-f", rendered[name].values_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_lint_rejects_values_the_schema_forbids(tmp_path):
    """The schema is really applied by helm: a typo in the configuration fails the lint."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"config": {"evaluaton": {}}}))
    result = _run(_tool("helm"), "lint", "--strict", CHART, "-f", bad)
    assert result.returncode != 0
    assert "evaluaton" in result.stdout + result.stderr


def _prometheus_operator_errors(obj: dict[str, Any], where: str) -> list[str]:
    """kubernetes-validate has no schema for these CRD kinds: their metadata is checked as
    ObjectMeta (wrapped in a ConfigMap), a PrometheusRule's groups by the real promtool."""
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
    errors = _validation_errors(carrier)
    if obj["kind"] == "PrometheusRule":
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rules:
            yaml.safe_dump(obj["spec"], rules)
            rules.flush()
            result = _run("promtool", "check", "rules", rules.name)
        if result.returncode != 0:
            errors.append(f"{where}: promtool: {result.stdout}{result.stderr}")
    return [f"{where}: {e}" for e in errors]


def _validation_errors(obj: dict[str, Any]) -> list[str]:
    where = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        return _prometheus_operator_errors(obj, where)
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(part) for part in exc.path)
        return [f"{where}: {path}: {exc.message}"]
    return []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_validates_strictly(name, rendered):
    """Kubernetes 1.33 schemas, strict (no unknown field), for every object of every value set."""
    objects = rendered[name].objects
    assert len(objects) >= 8
    errors = [error for obj in objects for error in _validation_errors(obj)]
    assert errors == []
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{obj['kind']} without a namespace"


def test_strict_validation_catches_a_misplaced_field():
    """The validator used above rejects what a typo in a template would produce."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
                               "containers": [{"name": "c", "image": "i", "readOnly": True}]}}}}
    assert _validation_errors(deployment)
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "x"}, "spec": {"groups": [
                {"name": "g", "rules": [{"alert": "A", "expr": "up ==", "for": "5m"}]}]}}
    assert _validation_errors(rule)
    rule["spec"]["groups"][0]["rules"][0]["expr"] = "up == 0"
    assert _validation_errors(rule) == []
    rule["metadata"]["lables"] = {"app": "x"}  # a typo of labels
    assert _validation_errors(rule)


# -- the rendered configuration --------------------------------------------------------------


def _load_rendered_config(chart: Rendered, tmp_path: Path) -> LoadedConfig:
    """Lay out the config and rules ConfigMaps as the pod sees them, and load them."""
    deployment = chart.one("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_map = chart.one("ConfigMap", volumes["config"]["configMap"]["name"])
    rules_map = chart.one("ConfigMap", volumes["rules"]["configMap"]["name"])
    data = yaml.safe_load(config_map["data"]["config.yaml"])
    assert data["rule_files"] == [mounts["rules"] + "/"]
    assert f"--config={mounts['config']}" in container["args"]
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for file_name, content in rules_map["data"].items():
        (rules_dir / file_name).write_text(content)
    data["rule_files"] = [f"{rules_dir}/"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(data))
    return load_config(config_file)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_configuration_loads_with_gatekeepers_loader(name, rendered, tmp_path):
    """config.yaml + the rules ConfigMap load with load_config; the chart-owned paths line up."""
    chart = rendered[name]
    loaded = _load_rendered_config(chart, tmp_path)
    config = loaded.config
    assert [p.name for p in config.pairs] == [p["name"] for p in chart.values["config"]["pairs"]]
    assert config.state.namespace == config.leader_election.namespace == chart.namespace
    assert config.leader_election.enabled
    assert config.kubernetes.mode == "in_cluster"
    assert len(loaded.rule_set.rules) >= 3
    deployment = chart.one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    token = next(v for v in pod["volumes"] if v["name"] == "token")["secret"]["secretName"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "token")
    assert config.auth.token_file == f"{mount['mountPath']}/{chart.values['auth']['secretKey']}"
    secrets = chart.of_kind("Secret")
    if chart.values["auth"]["existingSecret"]:
        assert secrets == [] and token == chart.values["auth"]["existingSecret"]
    else:
        assert [s["metadata"]["name"] for s in secrets] == [token]
        assert chart.values["auth"]["secretKey"] in secrets[0]["data"]
    assert config.server.port == pod["containers"][0]["ports"][0]["containerPort"]


def test_value_sets_render_what_they_ask_for(rendered):
    """No CRD: no Prometheus Operator object; the dashboard label and namespace are honoured."""
    assert not [o for o in rendered["no-servicemonitor-crd"].objects
                if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {o["kind"] for o in rendered["default"].objects} >= {"ServiceMonitor", "PrometheusRule"}
    dashboards = rendered["custom-dashboard-label"].one("ConfigMap", "gatekeeper-dashboards")
    assert dashboards["metadata"]["namespace"] == "grafana"
    assert dashboards["metadata"]["labels"]["grafana_dashboard_custom"] == "yes"
    assert "grafana_dashboard" not in dashboards["metadata"]["labels"]
    assert dashboards["metadata"]["annotations"] == {"grafana_folder": "Releases"}
    rules = rendered["opentelemetry-resources"].one("ConfigMap", "gatekeeper-rules")["data"]
    assert set(rules) == {"opentelemetry.yaml", "resources.yaml", "preflight.yaml"}
    assert rules["opentelemetry.yaml"].strip() == (
        ROOT / "rules" / "sets" / "opentelemetry.yaml").read_text().strip()
    default = rendered["default"].one("ConfigMap", "gatekeeper-dashboards")
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(default["data"]) == {p.name for p in (ROOT / "dashboards").glob("*.json")}


def test_a_pair_with_a_test_job_gets_its_rule_and_job_rights_in_its_namespaces_only(rendered):
    """The test-job rule file is shipped only when a pair has test_job; batch/jobs is
    granted in that pair's namespaces, nowhere else (list/watch never: read by name)."""
    assert "test-job.yaml" not in rendered["default"].one("ConfigMap", "gatekeeper-rules")["data"]
    rules = rendered["test-jobs"].one("ConfigMap", "gatekeeper-rules")["data"]
    assert rules["test-job.yaml"] == (ROOT / "rules" / "sets" / "test-job.yaml").read_text()
    grants = _granted_to_gatekeeper(rendered["test-jobs"])
    with_jobs = {ns for ns, triples in grants.items() if any(r == "jobs" for _, r, _ in triples)}
    assert with_jobs == {"production-blue", "production-green"}
    assert {v for g, r, v in grants["production-green"] if r == "jobs"} == {
        "create", "delete", "get"}


def test_notification_secret_is_mounted_where_receivers_read_it(rendered, tmp_path):
    """notifications.existingSecret is mounted read-only at the url_file directory, and only
    when set; the rendered receivers load with gatekeeper's loader."""
    chart = rendered["notification-receivers"]
    config = _load_rendered_config(chart, tmp_path).config
    pod = chart.one("Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "notification-urls")
    assert volume["secret"]["secretName"] == "gatekeeper-notification-urls"
    mount = next(m for m in pod["containers"][0]["volumeMounts"]
                 if m["name"] == "notification-urls")
    assert mount["readOnly"] is True
    slack, webhook = config.notifications.receivers
    assert (slack.kind, slack.url_file) == ("slack", f"{mount['mountPath']}/slack-url")
    assert (webhook.kind, webhook.url_env) == ("webhook", "GATEKEEPER_WEBHOOK_URL")
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["GATEKEEPER_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"]["key"] == "webhook-url"
    assert (config.notifications.queue_size, config.notifications.backoff) == (200, 0.5)
    assert config.notifications.evidence_stuck_after == 2700.0
    default = rendered["default"].one("Deployment")["spec"]["template"]["spec"]
    assert not any(v["name"] == "notification-urls" for v in default["volumes"])
    assert not any(m["name"] == "notification-urls"
                   for m in default["containers"][0]["volumeMounts"])


def test_deployment_is_hardened_and_highly_available(rendered):
    """2 replicas with leader election, probes, resources, non-root, read-only, no caps."""
    spec = rendered["default"].one("Deployment")["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] == 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    ctr = container["securityContext"]
    assert ctr["readOnlyRootFilesystem"] is True and ctr["allowPrivilegeEscalation"] is False
    assert ctr["capabilities"]["drop"] == ["ALL"]
    assert ctr["seccompProfile"]["type"] == "RuntimeDefault"
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["command"][0] == "gatekeeper" and "serve" in container["command"]
    assert rendered["default"].one("PodDisruptionBudget")["spec"]["minAvailable"] == 1


# -- RBAC: granted per namespace == the calls the code makes there ---------------------------

Grants = dict[str, set[permissions.Triple]]
"""Namespace ("*" for cluster-wide) -> granted (apiGroup, resource, verb)."""


def _triples(rules: list[dict[str, Any]], where: str) -> set[permissions.Triple]:
    out = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"{where}: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group + resource + verb), f"{where}: wildcard {rule}"
                    out.add((group, resource, verb))
    return out


def _granted_to_gatekeeper(chart: Rendered) -> Grants:
    """What the chart's ServiceAccount may do, per namespace, from the bindings that name it."""
    account = chart.one("ServiceAccount")["metadata"]["name"]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": chart.namespace}
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in chart.of_kind("Role")}
    cluster_roles = {o["metadata"]["name"]: o for o in chart.of_kind("ClusterRole")}
    grants: Grants = {}
    for binding in chart.of_kind("RoleBinding") + chart.of_kind("ClusterRoleBinding"):
        assert binding["subjects"] == [subject]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace", "*")
        role = (cluster_roles[ref["name"]] if ref["kind"] == "ClusterRole"
                else roles[(namespace, ref["name"])])
        grants.setdefault(namespace, set()).update(
            _triples(role["rules"], f"{ref['kind']} {ref['name']}"))
    return grants


def _expected(config: Config, *, cluster: bool,
              listed: list[Any] | None = None) -> Grants:
    """permissions.py's calls, placed in the namespaces the configuration makes them in
    (and in those LISTED in rbac.pairNamespaces, for pairs declared as objects)."""
    switches = permissions.switches_on(config)
    cluster_scoped = set(permissions.granted(("cluster",), switches=switches))
    if cluster:  # the routes' and pairs' calls everywhere, gatekeeper's own in its namespace
        tests: tuple[permissions.Scope, ...] = (
            ("tests",) if any(p.test_job for p in config.pairs) else ())
        return {"*": set(permissions.granted(("routes", "pairs", *tests), switches=switches))
                | cluster_scoped,
                config.state.namespace: set(permissions.granted(("own",), switches=switches))}
    scopes_of = {namespace: set(kinds) for namespace, kinds
                 in permissions.namespace_scopes(config).items()}
    for namespace, kinds in permissions.listed_namespaces(listed or []).items():
        scopes_of.setdefault(namespace, set()).update(kinds)
    expected = {namespace: set(permissions.granted(scopes, switches=switches))
                for namespace, scopes in scopes_of.items()}
    if cluster_scoped:  # cluster-scoped resources (TokenReviews) need a ClusterRole
        expected["*"] = cluster_scoped
    return expected


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rbac_grants_exactly_the_calls_gatekeeper_makes_per_namespace(name, rendered, tmp_path):
    """For each namespace: granted - called == {} and called - granted == {}."""
    chart = rendered[name]
    config = _load_rendered_config(chart, tmp_path).config
    cluster = chart.values["rbac"]["scope"] == "cluster"
    granted = _granted_to_gatekeeper(chart)
    expected = _expected(config, cluster=cluster,
                         listed=chart.values["rbac"].get("pairNamespaces"))
    streams = watching.targets_for(config.pairs, scope=config.kubernetes.watch.scope,
                                   max_streams=config.kubernetes.watch.max_streams)
    if not cluster:  # cluster-wide list/watch calls would need the ClusterRoleBinding
        assert not [t for t in streams if t.cluster_wide], "cluster-wide watches, namespaced RBAC"
    assert set(granted) == set(expected), "bound in the wrong namespaces"
    for namespace, triples in expected.items():
        assert granted[namespace] - triples == set(), f"{namespace}: granted but never called"
        assert triples - granted[namespace] == set(), f"{namespace}: called but not granted"


def test_rbac_least_privilege_by_kind_of_namespace(rendered, tmp_path):
    """Routes' namespaces: Traefik objects and Events only; pairs': no write but scale; no
    ConfigMap write outside gatekeeper's namespace; Secrets only with read_secrets."""
    two = _granted_to_gatekeeper(rendered["two-pairs"])
    assert {resource for _, resource, _ in two["routing"]} == {
        "ingressroutes", "traefikservices", "events"}
    for namespace in ("production-blue", "production-green", "web-blue", "web-green"):
        writes = {(r, v) for _, r, v in two[namespace] if v not in ("get", "list", "watch")}
        assert writes == {("deployments/scale", "patch")}, namespace
        assert not any(r == "secrets" for _, r, _ in two[namespace])
    for name in VALUE_SETS:
        chart = rendered[name]
        for namespace, triples in _granted_to_gatekeeper(chart).items():
            if namespace != chart.namespace:
                assert not {("", "configmaps", v) for v in ("create", "update", "patch")} & (
                    triples), f"{name}: ConfigMap writes in {namespace}"
    parity = _granted_to_gatekeeper(rendered["secret-parity"])
    assert {ns for ns, t in parity.items() if ("", "secrets", "list") in t} == {
        "production-blue", "production-green"}
    monitoring = _granted_to_gatekeeper(rendered["route-in-monitoring"])["monitoring"]
    assert ("coordination.k8s.io", "leases", "update") in monitoring
    assert ("traefik.io", "ingressroutes", "patch") in monitoring


def test_listed_pair_namespaces_get_roles_without_cluster_scope(rendered):
    """rbac.pairNamespaces: object pairs' namespaces get namespaced Roles (a name: a pair's
    namespace; with kinds: those), and the pairs' and routes' calls no ClusterRole."""
    grants = _granted_to_gatekeeper(rendered["object-pair-namespaces"])
    pair_calls = permissions.granted(("pairs",))
    assert grants["shop-blue"] == grants["shop-green"] == set(pair_calls)
    assert grants["shop-routing"] == set(permissions.granted(("routes",)))
    assert ("batch", "jobs", "create") in grants["jobs-green"]
    assert not pair_calls & grants.get("*", set())
    assert ("apps", "deployments", "list") not in grants["gatekeeper"]


def test_the_rbac_check_fails_on_an_extra_grant(rendered, tmp_path):
    """The per-namespace comparison is not vacuous: one more verb in a Role is caught."""
    chart = copy.copy(rendered["default"])
    chart.objects = copy.deepcopy(chart.objects)
    role = next(o for o in chart.of_kind("Role") if o["metadata"]["namespace"] == "monitoring")
    role["rules"].append({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["update"]})
    config = _load_rendered_config(chart, tmp_path).config
    granted, expected = _granted_to_gatekeeper(chart), _expected(config, cluster=False)
    assert granted["monitoring"] - expected["monitoring"] == {("", "configmaps", "update")}


# -- static checks: Chart.yaml, values schema, embedded copies ---------------------------------


def test_chart_yaml_fields():
    """apiVersion v2, name, semver version, appVersion = the package version, description."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "gatekeeper"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", chart["version"])
    assert chart["appVersion"] == gatekeeper.__version__
    assert chart["description"].strip()
    assert chart.get("kubeVersion")


def test_values_validate_against_the_schema():
    """The shipped defaults and every value set are valid."""
    assert _schema()["$schema"] == "http://json-schema.org/draft-07/schema#"
    for name, (_, overrides) in VALUE_SETS.items():
        assert _schema_errors(_merged_values(overrides)) == [], name


@pytest.mark.parametrize(("path", "bad"), [
    (("replicaCount",), 0),
    (("replicaCount",), "2"),
    (("rbac", "scope"), "everything"),
    (("rbac", "pairNamespaces"), ["Shop_Blue"]),
    (("rbac", "pairNamespaces"), [{"namespace": "shop", "kinds": ["everything"]}]),
    (("image", "pullPolicy"), "Sometimes"),
    (("config", "objects", "enabled"), "yes"),  # an empty pairs list is fine: objects
    (("config", "policy", "soak"), "two hours"),
    (("config", "pairs", 0, "namespaces"), ["production-blue"]),
    (("config", "pairs", 0, "routes", 0, "api_group"), "traefik.example"),
    (("config", "evaluaton"), {}),
    (("replicas",), 2),
    (("config", "notifications", "slack"), ["https://hooks.slack.com/services/T0/B0/x"]),
    (("config", "notifications", "receivers"), [
        {"kind": "slack", "url": "https://hooks.slack.com/services/T0/B0/x"}]),
    (("config", "notifications", "receivers"), [
        {"kind": "slack", "url_file": "/a", "url_env": "B"}]),
    (("config", "notifications", "receivers"), [{"kind": "email", "url_env": "B"}]),
    (("config", "notifications", "overflow"), "drop_all"),
    (("notifications", "secret"), "x"),
])
def test_schema_rejects_mistakes(path, bad):
    """Typos, wrong types and impossible values fail at `helm install`, not in the pod."""
    values = _values()
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    assert _schema_errors(values), f"{path} = {bad!r} was accepted"


def _same_keys(schema_section: dict[str, Any], model: Any, where: str) -> None:
    in_schema, in_model = set(schema_section["properties"]), set(model.model_fields)
    assert in_schema == in_model, (
        f"helm/gatekeeper/values.schema.json {where}: missing {sorted(in_model - in_schema)}, "
        f"unknown {sorted(in_schema - in_model)} (gatekeeper/config/ changed?)")


def test_schema_config_section_matches_the_configuration_model():
    """values.schema.json names exactly the configuration keys gatekeeper knows."""
    config = _schema()["properties"]["config"]
    _same_keys(config, Config, "config")
    _same_keys(config["properties"]["pairs"]["items"], PairConfig, "config.pairs[]")
    _same_keys(config["properties"]["policy"], PolicyConfig, "config.policy")
    for name, section in config["properties"].items():
        field = Config.model_fields[name].annotation
        model = next((t for t in getattr(field, "__args__", (field,))
                      if isinstance(t, type) and hasattr(t, "model_fields")), None)
        if model is not None and "properties" in section:
            _same_keys(section, model, f"config.{name}")
    routes = config["properties"]["pairs"]["items"]["properties"]["routes"]["items"]
    _same_keys(routes, RouteRef, "config.pairs[].routes[]")


def test_every_values_path_used_in_templates_exists():
    """A template never reads a value values.yaml lacks (helm renders a typo as empty)."""
    values = _values()
    missing = []
    for path in sorted(TEMPLATES.iterdir()):
        for match in re.finditer(r"\$?\.Values((?:\.[A-Za-z_]\w*)+)", path.read_text()):
            node: Any = values
            for key in match.group(1).strip(".").split("."):
                if key in ("kubernetes", "auth") and node is values.get("config"):
                    break  # config.kubernetes and .auth are optional: read with `default dict`
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{path.name}: .Values{match.group(1)}")
                    break
                node = node[key]
    assert missing == []


@pytest.mark.parametrize("source", sorted(EMBEDDED))
def test_embedded_files_are_byte_identical_to_their_sources(source):
    """helm/gatekeeper/files/ holds exact copies; `make sync-chart` refreshes them."""
    pattern, copies = EMBEDDED[source]
    originals = {p.name: p for p in (ROOT / source).glob(pattern)}
    embedded = {p.name: p for p in copies.iterdir() if p.is_file()}
    assert originals, f"nothing to embed from {source}/"
    assert set(embedded) == set(originals), f"run `make sync-chart` ({source}/)"
    for name, original in originals.items():
        assert embedded[name].read_bytes() == original.read_bytes(), (
            f"helm/gatekeeper/files/{source}/{name} differs from {source}/{name}: "
            "run `make sync-chart`")


def test_rendered_rules_and_alerts_are_the_embedded_files(rendered):
    """The rules ConfigMap and the PrometheusRule carry the files verbatim."""
    rules = rendered["default"].one("ConfigMap", "gatekeeper-rules")["data"]
    assert set(rules) == {p.name for p in (ROOT / "rules").glob("*.yaml")}
    for file_name, content in rules.items():
        assert content.strip() == (ROOT / "rules" / file_name).read_text().strip()
    rule = rendered["default"].one("PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "alerts" / "gatekeeper.rules.yaml").read_text())
