"""Rule files: the shipped ones are valid; broken ones name file, line, rule and field."""

import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper.cli import main
from gatekeeper.rules import load_rule_set
from gatekeeper.yamlfiles import ConfigFileError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_rules_are_valid_and_cover_the_seed_checks():
    """rules/ loads and holds the design document's checks."""
    rule_set = load_rule_set([ROOT / "rules"])
    names = {rule.name for rule in rule_set.rules}
    assert {"error-rate", "latency-p99", "critical-alerts", "log-errors", "pods-ready",
            "container-restarts"} <= names
    assert {r.name for r in rule_set.rules if r.key} >= {"error-rate", "pods-ready"}
    load_rule_set([ROOT / "rules" / "examples"])


def write(tmp_path, text, name="rules.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("rules:\n  - name: a\n    source: prometheus\n    query: up\n    pass: ['<< 1']\n",
         5, "rule 'a': field 'rules[0].pass': invalid criterion '<< 1'"),
        ("rules:\n  - name: a\n    source: prometheus\n    pass: ['< 1']\n",
         2, "source 'prometheus' needs the field 'query'"),
        ("rules:\n  - name: a\n    source: graphite\n    query: x\n    pass: ['< 1']\n",
         3, "field 'rules[0].source'"),
        ("rules:\n  - name: a\n    source: prometheus\n    query: up\n    pass: ['< 1']\n"
         "    wieght: 2\n", 6, "field 'rules[0].wieght': unknown key"),
        ("rules:\n  - name: a\n    source: prometheus\n    query: rate(x[${windw}])\n"
         "    pass: ['< 1']\n", 4, "unknown variable '${windw}'"),
        ("rules:\n  - name: a\n    source: logs\n    logs: {pattern: '(unclosed'}\n"
         "    pass: ['< 1']\n", 4, "invalid regular expression"),
        ("rules: [\n", 2, "invalid YAML"),
        ("- just\n- a list\n", 1, "must be a mapping"),
    ],
)
def test_broken_rule_files_name_the_line(tmp_path, text, line, fragment):
    """Each problem is one line `file:line: ...` that says what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        load_rule_set([path])
    problems = caught.value.problems
    assert any(p.startswith(f"{path}:{line}:") and fragment in p for p in problems), problems


def test_duplicate_rule_names_across_files(tmp_path):
    """A rule name defined twice is refused with both places."""
    body = "rules:\n  - name: a\n    source: alertmanager\n    pass: ['== 0']\n"
    write(tmp_path, body, "one.yaml")
    write(tmp_path, body, "two.yaml")
    with pytest.raises(ConfigFileError, match="duplicate rule name"):
        load_rule_set([tmp_path])


def test_cli_validate_exit_codes(tmp_path, capsys):
    """`gatekeeper rules validate` exits 0 on valid rules and 2 naming the problem."""
    assert main(["rules", "validate", str(ROOT / "rules")]) == 0
    bad = write(tmp_path, "rules:\n  - name: a\n    source: alertmanager\n    pass: '= 0'\n")
    assert main(["rules", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4: rule 'a': field 'rules[0].pass'" in err


def test_console_script_runs():
    """The installed module entry point answers (the Makefile relies on it)."""
    done = subprocess.run([sys.executable, "-m", "gatekeeper", "rules", "validate",
                           str(ROOT / "rules")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


RATE = ("rules:\n  - name: r\n    source: prometheus\n    rate:\n"
        "      bad: increase(bad{namespace=~\"${namespaces}\"}[${window}])\n"
        "      total: increase(all{namespace=~\"${namespaces}\"}[${window}])\n")
LATENCY = "rules:\n  - name: l\n    source: prometheus\n    latency:\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (RATE + "      confidence: 1.2\n", 7, "field 'rules[0].rate.confidence': Input should "
         "be less than 1"),
        (RATE + "      confidence: 0.5\n", 7, "field 'rules[0].rate.confidence': Input should "
         "be greater than 0.5"),
        (RATE + "      allowed_ratio: 1\n", 7, "field 'rules[0].rate.allowed_ratio': Input "
         "should be greater than 1"),
        (RATE + "      allowed_ratio: 0.8\n", 7, "field 'rules[0].rate.allowed_ratio'"),
        (RATE + "      allowed_ratio: 3\n      detect: 2\n", 4,
         "detect (x2) must be above allowed_ratio (x3)"),
        (RATE.replace("[${window}])\n      total", "[5m])\n      total"), 5,
         "field 'rules[0].rate.bad': the query must count over ${window}"),
        (RATE + "    pass: ['< 0.01']\n", 2, "judged by its test alone"),
        (RATE + "    query: up\n", 2, "has no 'query'/'samples_query'"),
        (RATE.replace("source: prometheus", "source: logs"), 2, "work with source 'prometheus'"),
        (LATENCY + "      histogram: http_requests_total\n", 5,
         "field 'rules[0].latency.histogram': 'http_requests_total' is not a histogram"),
        (LATENCY + "      histogram: http_request_duration_seconds_bucket\n", 5,
         "is not a histogram's base name"),
        (LATENCY + "      histogram: 'rate(x[5m])'\n", 5, "is not a metric name"),
        (LATENCY + "      histogram: ${latency_metric}\n", 5,
         "unknown variable '${latency_metric}'"),
        (LATENCY + "      histogram: h\n      quantile: 1.5\n", 6,
         "field 'rules[0].latency.quantile'"),
    ],
)
def test_nonsense_count_comparisons_name_file_line_and_field(tmp_path, text, line, fragment):
    """Impossible confidence, a ratio that allows nothing, a latency test on a counter..."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        load_rule_set([path])
    problems = caught.value.problems
    assert any(p.startswith(f"{path}:{line}:") and fragment in p for p in problems), problems


def test_shipped_key_comparisons_are_sequential():
    """The shipped relative rules are the sequential count comparisons, and they are key."""
    rule_set = load_rule_set([ROOT / "rules"])
    by_name = {rule.name: rule for rule in rule_set.rules}
    assert by_name["error-rate-vs-active"].rate is not None
    assert by_name["latency-vs-active"].latency is not None
    assert by_name["error-rate-vs-active"].key and by_name["latency-vs-active"].key
    assert all(rule.relative_floor is None for rule in rule_set.rules)
