"""The alert rules in alerts/: valid for the real promtool, unit-tested, and on the contract.

promtool comes from Debian's prometheus package (`make debs`). Without it the promtool
tests skip locally but fail in CI (`CI` set), so a missing binary never passes silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gatekeeper.lifecycle import PHASES
from gatekeeper.metrics import VERDICTS, Recorder

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yaml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.yaml"))
RUNBOOKS = ALERTS / "runbooks.md"
SEVERITIES = {"critical", "warning", "info"}


def _promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists()
                                         else None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is missing (install Debian's prometheus package: make debs)")
    pytest.skip("promtool is not installed (make debs installs it)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120,
                          cwd=ALERTS, check=False)


def _alerting_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def _alert_rule_tests() -> list[dict]:
    cases = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def _exported_series_names() -> set[str]:
    """Every series name the Recorder can export (counters with _total, histogram suffixes)."""
    names = {"ALERTS", "up"}
    for family in Recorder().registry.collect():
        if family.type == "counter":
            names.update({f"{family.name}_total", f"{family.name}_created"})
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_count", "_sum", "_created"))
        else:
            names.add(family.name)
    return names


def test_rule_files_exist():
    """The gatekeeper rule file and its unit tests are where the chart and the docs say."""
    assert (ALERTS / "gatekeeper.rules.yaml") in RULE_FILES
    assert TEST_FILES, "alerts/tests/*.yaml: no promtool unit tests"


def test_promtool_check_rules():
    """`promtool check rules` accepts every rule file."""
    result = _run("check", "rules", *(p.name for p in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules():
    """The promtool unit tests pass (each alert fires when it should and only then)."""
    result = _run("test", "rules", *(str(p.relative_to(ALERTS)) for p in TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    """Each alert has at least one unit test where it fires and one where it stays quiet."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in _alert_rule_tests():
        (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _alerting_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"
    assert (fired | quiet) - names == set(), "tests for alerts that do not exist"


def test_alerts_have_severity_summary_description_runbook():
    """Labels and annotations Alertmanager routes and people read are always present."""
    anchors = {m.lower() for m in re.findall(r"^## (\w+)", RUNBOOKS.read_text(), re.MULTILINE)}
    for rule in _alerting_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), name
        assert annotations.get("runbook_url") == f"alerts/runbooks.md#{name.lower()}", name
        assert name.lower() in anchors, f"{name}: no section in alerts/runbooks.md"


def test_alerts_query_only_exported_metrics():
    """Every gatekeeper_* series an alert reads is one the Recorder exports."""
    exported = _exported_series_names()
    for rule in _alerting_rules():
        used = set(re.findall(r"\bgatekeeper_[a-z_]+", rule["expr"]))
        assert used <= exported, f"{rule['alert']}: unknown metrics {sorted(used - exported)}"


def test_alerts_use_known_phases_and_verdicts():
    """Label values in selectors (phase, verdict) are ones gatekeeper really exports."""
    known = {"phase": set(PHASES), "verdict": set(VERDICTS)}
    for rule in _alerting_rules():
        for label, op, value in re.findall(r'\b(phase|verdict)\s*(=~|=)\s*"([^"]*)"', rule["expr"]):
            values = set(value.split("|")) if op == "=~" else {value}
            assert values <= known[label], f"{rule['alert']}: {label} {sorted(values)}"
