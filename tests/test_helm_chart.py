"""The Helm chart in helm/gatekeeper, checked statically (no helm binary on these machines).

values.yaml validates against values.schema.json and renders a configuration gatekeeper
accepts; every `.Values` path a template reads exists; the RBAC rules equal the API calls in
gatekeeper/permissions.py; the files the chart embeds are byte-identical to rules/, alerts/
and dashboards/; templates have balanced actions and blocks; Chart.yaml is complete. The
Dockerfile is checked for the properties the Deployment relies on.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

import gatekeeper
from gatekeeper.config import Config, PairConfig, PolicyConfig, RouteRef
from gatekeeper.permissions import PERMISSIONS

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "gatekeeper"
TEMPLATES = CHART / "templates"
TEMPLATE_FILES = sorted(p for p in TEMPLATES.iterdir() if p.is_file())
MANIFESTS = [p for p in TEMPLATE_FILES if p.suffix == ".yaml"]
# Source folder -> (glob of the files the chart embeds, copy under files/).
EMBEDDED = {
    "rules": ("*.yaml", CHART / "files" / "rules"),
    "alerts": ("*.rules.yaml", CHART / "files" / "alerts"),
    "dashboards": ("*.json", CHART / "files" / "dashboards"),
}
# What templates/_helpers.tpl ("gatekeeper.config") forces into the configuration.
CHART_OWNED_CONFIG = {
    "rule_files": ["/etc/gatekeeper/rules/"],
    "kubernetes": {"mode": "in_cluster"},
    "server": {"host": "0.0.0.0", "port": 8080},
    "auth": {"token_file": "/var/run/secrets/gatekeeper/token"},
    "state": {"namespace": "gatekeeper"},
    "leader_election": {"enabled": True, "namespace": "gatekeeper"},
}
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_BLOCK_OPENERS = ("if", "range", "with", "define", "block")


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def _schema_errors(values: dict[str, Any]) -> list[str]:
    return [error.message for error in jsonschema_rs.validator_for(_schema()).iter_errors(values)]


def _rendered_config(values: dict[str, Any]) -> dict[str, Any]:
    """The chart's merge of .Values.config with the settings it owns (mergeOverwrite)."""

    def merge(base: dict[str, Any], forced: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(base)
        for key, value in forced.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out

    return merge(values["config"], CHART_OWNED_CONFIG)


def _skeleton(text: str) -> str:
    """The template with action-only lines dropped and inline actions replaced by a word."""
    kept = [line for line in text.splitlines()
            if not re.fullmatch(r"\s*(\{\{.*?\}\}\s*)+", line)]
    return _ACTION.sub("X", "\n".join(kept))


# -- Chart.yaml and values -------------------------------------------------------------------


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
    """The shipped defaults are valid (helm install validates user values the same way)."""
    assert _schema()["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert _schema_errors(_values()) == []


@pytest.mark.parametrize(("path", "bad"), [
    (("replicaCount",), 0),
    (("replicaCount",), "2"),
    (("rbac", "scope"), "everything"),
    (("image", "pullPolicy"), "Sometimes"),
    (("config", "pairs"), []),
    (("config", "policy", "soak"), "two hours"),
    (("config", "pairs", 0, "namespaces"), ["production-blue"]),
    (("config", "pairs", 0, "routes", 0, "api_group"), "traefik.example"),
    (("config", "evaluaton"), {}),
    (("replicas",), 2),
])
def test_schema_rejects_mistakes(path, bad):
    """Typos, wrong types and impossible values fail at `helm install`, not in the pod."""
    values = _values()
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    assert _schema_errors(values), f"{path} = {bad!r} was accepted"


def test_default_values_render_a_configuration_gatekeeper_accepts():
    """The ConfigMap's config.yaml (values + chart-owned settings) passes gatekeeper's model."""
    config = Config.model_validate(_rendered_config(_values()))
    assert config.leader_election.enabled
    assert config.auth.token_file == "/var/run/secrets/gatekeeper/token"
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    for key in CHART_OWNED_CONFIG:
        assert f'set $config "{key}"' in helpers, f"_helpers.tpl no longer sets {key}"


def _same_keys(schema_section: dict[str, Any], model: Any, where: str) -> None:
    in_schema, in_model = set(schema_section["properties"]), set(model.model_fields)
    assert in_schema == in_model, (
        f"helm/gatekeeper/values.schema.json {where}: missing {sorted(in_model - in_schema)}, "
        f"unknown {sorted(in_schema - in_model)} (gatekeeper/config.py changed?)")


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
    """A template never reads a value that values.yaml does not define (typos render empty)."""
    values = _values()
    missing = []
    for path in TEMPLATE_FILES:
        for match in re.finditer(r"\$?\.Values((?:\.[A-Za-z_]\w*)+)", path.read_text()):
            node: Any = values
            for key in match.group(1).strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{path.name}: .Values{match.group(1)}")
                    break
                node = node[key]
    assert missing == []


# -- RBAC --------------------------------------------------------------------------------------


def _cluster_role() -> dict[str, Any]:
    docs = [yaml.safe_load(doc) for doc in _skeleton((TEMPLATES / "rbac.yaml").read_text())
            .split("\n---")]
    roles = [doc for doc in docs if doc and doc.get("kind") in ("ClusterRole", "Role")]
    assert len(roles) == 1, "expected exactly one ClusterRole in rbac.yaml"
    return roles[0]


def test_rbac_rules_equal_the_api_calls_gatekeeper_makes():
    """(apiGroup, resource, verb) triples of the ClusterRole == gatekeeper/permissions.py."""
    granted = {(group, resource, verb)
               for rule in _cluster_role()["rules"]
               for group in rule["apiGroups"]
               for resource in rule["resources"]
               for verb in rule["verbs"]}
    needed = {(p.api_group, p.resource, verb) for p in PERMISSIONS for verb in p.verbs}
    assert granted - needed == set(), "granted but never used"
    assert needed - granted == set(), "used but not granted"
    assert not any("*" in part for triple in granted for part in triple)


def test_rbac_is_bound_per_namespace_by_default():
    """RoleBindings in the namespaces gatekeeper works in; a ClusterRoleBinding only on request."""
    text = (TEMPLATES / "rbac.yaml").read_text()
    assert _values()["rbac"]["scope"] == "namespaces"
    assert "kind: RoleBinding" in text
    assert re.search(r'if eq \.Values\.rbac\.scope "cluster".*kind: ClusterRoleBinding', text,
                     re.DOTALL)
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    for part in (".Release.Namespace", ".namespaces", ".routes", ".Values.rbac.extraNamespaces"):
        assert part in helpers.split('define "gatekeeper.managedNamespaces"')[1]


# -- embedded copies ---------------------------------------------------------------------------


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


def test_templates_embed_existing_files():
    """Every .Files.Get/.Files.Glob in a template names files that exist in the chart."""
    used = 0
    for path in TEMPLATE_FILES:
        for kind, name in re.findall(r'\.Files\.(Get|Glob) "([^"]+)"', path.read_text()):
            matches = list(CHART.glob(name)) if kind == "Glob" else [CHART / name]
            assert matches and all(m.is_file() for m in matches), f"{path.name}: {name}"
            used += 1
    assert used >= 3


def test_embedded_resources_carry_the_right_labels():
    """The dashboards ConfigMap has the sidecar label, the PrometheusRule wraps the alerts."""
    values = _values()
    dashboards = (TEMPLATES / "configmap-dashboards.yaml").read_text()
    assert (values["dashboards"]["label"], values["dashboards"]["labelValue"]) == (
        "grafana_dashboard", "1")
    assert "{{ .Values.dashboards.label }}: {{ .Values.dashboards.labelValue | quote }}" in (
        dashboards)
    rule = (TEMPLATES / "prometheusrule.yaml").read_text()
    assert "kind: PrometheusRule" in rule
    assert '.Files.Get "files/alerts/gatekeeper.rules.yaml" | nindent 2' in rule
    monitor = yaml.safe_load(_skeleton((TEMPLATES / "servicemonitor.yaml").read_text()))
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


# -- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_template_actions_and_blocks_are_balanced(path):
    """As many `{{` as `}}`; every if/range/with/define closed by an end, in order."""
    text = path.read_text()
    assert text.count("{{") == text.count("}}")
    stack: list[str] = []
    for match in _ACTION.finditer(text):
        action = match.group(1)
        if action.startswith("/*"):
            assert action.endswith("*/"), f"{path.name}: unterminated comment"
            continue
        word = action.split()[0] if action.split() else ""
        if word in _BLOCK_OPENERS:
            stack.append(word)
        elif word == "else":
            assert stack and stack[-1] in ("if", "range", "with"), f"{path.name}: stray else"
        elif word == "end":
            assert stack, f"{path.name}: `end` without an opening block"
            stack.pop()
    assert stack == [], f"{path.name}: unclosed {stack}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_skeletons_are_yaml(path):
    """With the template actions blanked out, each manifest is valid YAML with a kind."""
    docs = [doc for doc in yaml.safe_load_all(_skeleton(path.read_text())) if doc]
    assert docs, path.name
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path.name


def test_includes_name_defined_templates():
    """`include "x"` only names templates defined in _helpers.tpl."""
    defined = set(re.findall(r'define "([^"]+)"', (TEMPLATES / "_helpers.tpl").read_text()))
    for path in TEMPLATE_FILES:
        for name in re.findall(r'include "([^"]+)"', path.read_text()):
            assert name in defined, f"{path.name}: include {name!r}"
        for name in re.findall(r'Template\.BasePath "/([^"]+)"', path.read_text()):
            assert (TEMPLATES / name).is_file(), f"{path.name}: {name}"


def test_every_expected_resource_has_a_template():
    """The chart ships the resources docs/install.md promises."""
    kinds = set()
    for path in MANIFESTS:
        kinds |= set(re.findall(r"^kind: (\w+)", path.read_text(), re.MULTILINE))
    assert kinds >= {"Deployment", "ServiceAccount", "ClusterRole", "RoleBinding",
                     "ClusterRoleBinding", "Service", "ServiceMonitor", "PrometheusRule",
                     "ConfigMap", "Secret", "PodDisruptionBudget", "NetworkPolicy"}
    assert (TEMPLATES / "NOTES.txt").read_text().strip()


def test_deployment_is_hardened_and_highly_available():
    """2 replicas with leader election, probes, resources, non-root, read-only, no caps."""
    values = _values()
    deployment = (TEMPLATES / "deployment.yaml").read_text()
    skeleton = yaml.safe_load(_skeleton(deployment))
    container = skeleton["spec"]["template"]["spec"]["containers"][0]
    assert values["replicaCount"] == 2
    assert _rendered_config(values)["leader_election"]["enabled"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert values["resources"]["requests"] and values["resources"]["limits"]["memory"]
    pod, ctr = values["podSecurityContext"], values["securityContext"]
    assert pod["runAsNonRoot"] and ctr["runAsNonRoot"] and pod["runAsUser"] != 0
    assert ctr["readOnlyRootFilesystem"] is True
    assert ctr["allowPrivilegeEscalation"] is False
    assert ctr["capabilities"]["drop"] == ["ALL"]
    assert pod["seccompProfile"]["type"] == ctr["seccompProfile"]["type"] == "RuntimeDefault"
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["command"][0] == "gatekeeper" and "serve" in container["command"]
    assert "toYaml .Values.securityContext" in deployment
    assert "toYaml .Values.podSecurityContext" in deployment


def test_dockerfile_builds_a_slim_non_root_image():
    """python:3.11-slim, `pip install .`, a numeric non-root USER, entrypoint gatekeeper serve."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert re.search(r"pip install[^\n]*\s\.(\s|$)", dockerfile)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0] == str(_values()["podSecurityContext"]["runAsUser"])
    assert 'ENTRYPOINT ["gatekeeper", "serve"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= {line.rstrip("/") for line in ignored}
