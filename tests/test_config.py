"""The configuration file: defaults, and errors that name file, line and key."""

from pathlib import Path

import pytest

from gatekeeper.config import load_config
from gatekeeper.yamlfiles import ConfigFileError

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = f"""
prometheus: {{url: http://127.0.0.1:9090}}
alertmanager: {{url: http://127.0.0.1:9093}}
rule_files: ["{ROOT}/rules/default.yaml"]
pairs:
  - name: api
    namespaces: [production-blue, production-green]
    routes: [{{name: api-live, namespace: routing}}]
"""


def test_minimal_config_gets_sane_defaults(tmp_path):
    """Only URLs and a pair are needed; the rest has documented defaults."""
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(MINIMAL)
    loaded = load_config(path)
    config = loaded.config
    assert config.evaluation.interval == 15.0
    assert config.evaluation.window == 300.0
    assert config.policy.soak == 7200.0 and config.policy.observation == 86400.0
    assert config.pairs[0].routes[0].api_group == "traefik.io"
    assert config.kubernetes.watch.scope == "auto" and config.kubernetes.watch.max_streams == 64
    assert config.pair("api").other("production-blue") == "production-green"
    assert loaded.rule_set.variables["requests_metric"] == "http_requests_total"


@pytest.mark.parametrize(
    ("replace", "by", "line", "fragment"),
    [
        ("name: api\n", "name: api\n    colour: red\n", 7,
         "pair 'api': field 'pairs[0].colour': unknown key"),
        ("[production-blue, production-green]", "[production-blue, production-blue]", 6,
         "the two namespaces of a pair must differ"),
        ("[production-blue, production-green]", "[Production_Blue, production-green]", 7,
         "not a valid Kubernetes name"),
        ("pairs:", "evaluation: {interval: 500ms}\npairs:", 5, "at least 1s"),
        ("pairs:", "evaluation: {window: soon}\npairs:", 5, "expected a duration"),
        ("pairs:", "kubernetes:\n  watch: {scope: namespaces, max_streams: 4}\npairs:", 6,
         "field 'kubernetes.watch': scope 'namespaces' needs 5 watch streams"),
    ],
)
def test_config_errors_name_line_and_key(tmp_path, replace, by, line, fragment):
    """Wrong keys, names and durations are reported with file and line."""
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(MINIMAL.replace(replace, by, 1))
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert any(fragment in p and p.startswith(f"{path}:") for p in caught.value.problems), (
        caught.value.problems)
    assert any(p.startswith(f"{path}:{line}:") for p in caught.value.problems), (
        caught.value.problems)


def test_rules_need_their_source_configured(tmp_path):
    """Rules using Alertmanager without an alertmanager section: refuse to start."""
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(MINIMAL.replace("alertmanager: {url: http://127.0.0.1:9093}\n", ""))
    with pytest.raises(ConfigFileError, match="critical-alerts use source 'alertmanager'"):
        load_config(path)
