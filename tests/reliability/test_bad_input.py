"""Bad input: rule files, the configuration file and criteria never crash gatekeeper.

Property tests (hypothesis, derandomized so CI runs the same examples every time): every
invalid input raises `ConfigFileError` (loaders, one `file:line: ...` line per problem) or
`ValueError` quoting the text (criteria, durations); no other exception escapes, no invalid
value is silently replaced by a default, and valid generated rules and configurations load
back to exactly what was written.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatekeeper.config import load_config
from gatekeeper.criteria import parse_criterion
from gatekeeper.durations import parse_duration
from gatekeeper.rules import Rule, load_rule_set
from gatekeeper.yamlfiles import ConfigFileError, describe_location, load_yaml_text

# Bounded so the whole module runs in a few seconds; `derandomize` makes CI reproducible.
EXAMPLES = 80
FEW = 40
bounded = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])
few = settings(bounded, max_examples=FEW)

_files = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every generated file of this module."""
    return tmp_path_factory.mktemp("bad-input")


def _write(folder: Path, text: str, suffix: str = ".yaml") -> Path:
    path = folder / f"f{next(_files)}{suffix}"
    path.write_text(text, encoding="utf-8")
    return path


def _problem_lines(problems: list[str], path: Path, text: str) -> list[int]:
    """Every problem is `file:line: message` with a line inside the file; returns the lines."""
    assert problems, "ConfigFileError without problems"
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+): \S")
    last = text.count("\n") + 2
    lines = []
    for problem in problems:
        match = pattern.match(problem)
        assert match, f"problem does not start with file:line: {problem!r}"
        line = int(match.group(1))
        assert 1 <= line <= last, (problem, last)
        lines.append(line)
    return lines


# ---- generated values ----------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, -1, 0])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
    | st.sampled_from(["", "5m", "-5s", "1y", "nan", ".inf", "< 0.01", "${x}", "$", "\x00",
                      "yes", "NO", "0x1F", "1e999", "2001-12-14", "~", "[", "{", "&a", "*a"])
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a document (the document itself excluded)."""
    found: list[tuple[Any, ...]] = []
    items = data.items() if isinstance(data, dict) else enumerate(data) \
        if isinstance(data, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _mutate(base: dict[str, Any], draw: Any) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """Replace the value at one location, or add a key to one mapping, by any JSON value."""
    doc = copy.deepcopy(base)
    paths = _paths(doc)
    mappings = [()] + [p for p in paths if isinstance(_get(doc, p), dict)]
    if draw(st.booleans()):
        path = draw(st.sampled_from(paths))
    else:
        parent = draw(st.sampled_from(mappings))
        path = (*parent, draw(st.text(min_size=1, max_size=12)))
    _set(doc, path, draw(json_values))
    return doc, path


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def _prefix_lines(text: str, path: tuple[Any, ...]) -> set[int]:
    """Lines a problem about `path` may point at: the key's own line, an enclosing one, or
    one inside the value written there."""
    _, line_map = load_yaml_text(text, "x")
    inside = {line for key, line in line_map.lines.items() if key[:len(path)] == path}
    return inside | {line_map.line_of(path[:n]) for n in range(len(path) + 1)}


# ---- the rule loader -----------------------------------------------------------------------

QUERY = 'sum by (namespace) (rate(http_requests_total{namespace=~"${namespaces}"}[${window}]))'
BASE_RULES: dict[str, Any] = {
    "variables": {"unused": "x"},
    "score": {"pass": 90, "warning": 75},
    "rules": [
        {"name": "error-rate", "source": "prometheus", "query": QUERY,
         "samples_query": QUERY, "min_samples": 100, "pass": ["< 0.01"],
         "warning": ["<= +10%"], "weight": 3, "key": True, "no_data": "unknown",
         "window": "5m", "relative_floor": 0.002},
        {"name": "latency", "source": "prometheus", "query": QUERY,
         "compare": {"test": "mann_whitney", "confidence": 0.95, "direction": "increase",
                     "allowed_effect": 1.1, "step": "15s", "min_samples": 10}},
        {"name": "smoke", "source": "probe", "pass": ["== 1"],
         "probe": {"url": "http://api.${namespace}.svc/healthz", "method": "GET",
                   "expect_status": 200, "expect_json": {"status": "ok"},
                   "require_fields": ["version"], "timeout": "2s", "headers": {"X-A": "b"}}},
        {"name": "log-errors", "source": "logs", "pass": ["< 5"],
         "logs": {"pattern": "ERROR", "exclude": ["healthz"], "container": "api",
                  "limit_bytes": 100000}},
        {"name": "pods-ready", "source": "kubernetes", "check": "pods_ready", "pass": ["== 1"],
         "key": True},
        {"name": "alerts", "source": "alertmanager", "matchers": {"severity": "critical"},
         "pass": ["== 0"], "no_data": "fail"},
    ],
}


def _load_rules_text(folder: Path, text: str) -> tuple[Path, Any]:
    """Load `text` as a rule file: the RuleSet, or the ConfigFileError's problem lines."""
    path = _write(folder, text)
    try:
        return path, load_rule_set([path])
    except ConfigFileError as exc:
        return path, _problem_lines(exc.problems, path, text)


def test_the_base_rule_file_is_valid(workdir):
    """The document the properties mutate loads as written (else they prove nothing)."""
    _, loaded = _load_rules_text(workdir, yaml.safe_dump(BASE_RULES))
    assert not isinstance(loaded, list), loaded
    assert [r.name for r in loaded.rules] == [r["name"] for r in BASE_RULES["rules"]]


_yaml_soup = st.lists(st.sampled_from([
    "rules:", "\n", "  ", "- ", "name: a", "source: prometheus", "query: up", "pass:",
    "['< 1']", "[", "]", "{", "}", ":", ",", "&a ", "*a", "!!binary ", "!!python/name:os.system",
    "? ", "---", "...", "#", "'", '"', "\t", "|", ">", "%YAML 1.1", "\x00", "\ufeff", "~",
    "<<: *a", "1e999", ".nan", "-1", "${window}", "$", "\\", "weight: ", "key: yes",
]), max_size=40).map("".join)


@bounded
@given(text=st.text(max_size=200) | _yaml_soup)
def test_any_text_is_a_rule_file_or_a_clear_error(workdir, text):
    """Arbitrary bytes-as-text: a RuleSet or ConfigFileError lines naming file:line."""
    _load_rules_text(workdir, text)


@bounded
@given(data=st.data())
def test_any_value_anywhere_in_a_rule_file_is_loaded_or_named(workdir, data):
    """Any JSON value at any place of a valid file: loads, or the error names that place."""
    doc, path = _mutate(BASE_RULES, data.draw)
    text = yaml.safe_dump(doc, allow_unicode=True)
    _, loaded = _load_rules_text(workdir, text)
    if isinstance(loaded, list):
        assert set(loaded) & _prefix_lines(text, path), (path, loaded)


# (location in BASE_RULES, values that must be refused there, text the problem contains)
_INVALID_RULE_FIELDS: list[tuple[tuple[Any, ...], Any, str]] = [
    (("rules", 0, "name"), st.sampled_from(["Error", "-a", "a-", "a b", "", "é"])
     | st.text(alphabet=string.ascii_uppercase, min_size=1), "invalid rule name"),
    (("rules", 0, "name"), st.lists(st.text(), max_size=2) | st.integers(), ""),
    (("rules", 0, "source"), st.text(max_size=12).filter(
        lambda s: s not in {"prometheus", "alertmanager", "probe", "logs", "kubernetes"}), ""),
    (("rules", 0, "pass"), st.sampled_from(["<< 1", "1", "< abc", "<= 10%", "< 1e999", "<"]),
     "invalid criterion"),
    (("rules", 0, "pass"), st.dictionaries(st.text(max_size=3), st.integers(), min_size=1),
     "criteria must be"),
    (("rules", 0, "warning"), st.lists(st.integers() | st.none(), min_size=1, max_size=3),
     "criterion must be a string"),
    (("rules", 0, "weight"), st.floats(max_value=-1e-9) | st.sampled_from(
        [math.nan, math.inf, -math.inf, "heavy", [1]]), ""),
    (("rules", 0, "key"), st.sampled_from(["maybe", "2", [True], {"a": 1}, 2.5]), ""),
    (("rules", 0, "no_data"), st.text(max_size=10).filter(
        lambda s: s not in {"unknown", "fail", "pass", "ignore"}), ""),
    (("rules", 0, "min_samples"), st.floats(max_value=-1e-9) | st.just(math.nan), ""),
    (("rules", 0, "window"), st.sampled_from(
        ["5 minutes", "-5s", "1y", "", "m", "5m5", math.nan, math.inf, -1, True, [5], "9" * 400]),
     ""),
    (("rules", 0, "relative_floor"), st.sampled_from([math.nan, math.inf, "low"]), ""),
    (("rules", 0, "query"), st.sampled_from(["rate(x[${windw}])", "up{a=\"$\"}", "${"]), ""),
    (("rules", 1, "compare", "confidence"), st.floats(max_value=0.5) | st.floats(min_value=1.0),
     ""),
    (("rules", 1, "compare", "step"), st.sampled_from([0, "0s", -1, "fast", math.nan]), ""),
    (("rules", 2, "probe", "expect_status"),
     st.integers(max_value=99) | st.integers(min_value=600), ""),
    (("rules", 2, "probe", "timeout"), st.sampled_from(["soon", -3, math.inf]), ""),
    (("rules", 3, "logs", "pattern"), st.sampled_from(["(", "[a-", "*", "(?P<x", "\\"]),
     "invalid regular expression"),
    (("rules", 3, "logs", "limit_bytes"), st.integers(max_value=1023), ""),
    (("rules", 4, "check"), st.text(max_size=12).filter(
        lambda s: s not in {"pods_ready", "restarts", "config_parity", "images_differ"}), ""),
    (("score", "pass"), st.floats(min_value=100.0001, allow_infinity=False)
     | st.floats(max_value=-0.0001, allow_infinity=False), ""),
    (("variables",), st.lists(st.text(), min_size=1, max_size=3), ""),
    (("variables", "x"), st.lists(st.integers(), max_size=2) | st.none(), ""),
]


@bounded
@given(data=st.data(), case=st.sampled_from(_INVALID_RULE_FIELDS))
def test_an_invalid_rule_field_is_refused_where_it_is(workdir, data, case):
    """A value invalid for its field is never accepted (no silent default) and the error
    names the file, the field's line (or its rule's) and the field."""
    path, values, fragment = case
    doc = copy.deepcopy(BASE_RULES)
    _set(doc, path, data.draw(values))
    text = yaml.safe_dump(doc, allow_unicode=True)
    file, loaded = _load_rules_text(workdir, text)
    assert isinstance(loaded, list), f"{describe_location(path)}={_get(doc, path)!r} accepted"
    assert set(loaded) & _prefix_lines(text, path)
    problems = _rule_problems(file)
    assert any(describe_location(path[:2]) in p or "variables" in p for p in problems), problems
    assert any(fragment in p for p in problems), problems


def _rule_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        load_rule_set([path])
    return caught.value.problems


@bounded
@given(key=st.text(min_size=1, max_size=15).filter(lambda k: k not in Rule.model_fields
                                                     and k not in {"pass", "warning"}),
       where=st.sampled_from([(), ("rules", 0), ("rules", 1, "compare"), ("rules", 2, "probe"),
                              ("rules", 3, "logs"), ("score",)]))
def test_an_unknown_key_is_an_error_not_ignored(workdir, key, where):
    """A misspelt key (`wieght`) would silently keep the default: it is refused instead."""
    doc = copy.deepcopy(BASE_RULES)
    container = _get(doc, where)
    if key in container:
        return
    container[key] = 1
    text = yaml.safe_dump(doc, allow_unicode=True)
    file, loaded = _load_rules_text(workdir, text)
    assert isinstance(loaded, list), f"unknown key {key!r} at {where} accepted"
    assert any("unknown key" in p for p in _rule_problems(file))


_criterion_numbers = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False).map(str),
    st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["0.5", ".5", "5.", "1e-3", "2E+2", "0"]),
)


_LOWER = string.ascii_lowercase


def _names(inner: str) -> Any:
    """Names matching `[a-z0-9]([<inner>]*[a-z0-9])?` (rule names, DNS labels)."""
    edge = _LOWER + string.digits
    return st.tuples(st.text(alphabet=edge, min_size=1, max_size=1),
                     st.text(alphabet=inner, max_size=20),
                     st.text(alphabet=edge, min_size=1, max_size=1)).map(
        lambda t: t[0] + t[1] + t[2] if t[1] or len(t[0]) else t[0])


@st.composite
def criteria_texts(draw: Any) -> tuple[str, str, str | None, float, bool]:
    """(text, op, sign, number, percent) of a valid criterion with random spacing."""
    op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
    sign = draw(st.sampled_from([None, "+", "-"]))
    number = draw(_criterion_numbers.filter(lambda n: "e" not in n.lower() or "." in n
                                            or n[0].isdigit()))
    percent = sign is not None and draw(st.booleans())
    space = st.sampled_from(["", " ", "  "])
    text = (draw(space) + op + draw(space) + (sign or "") + draw(space) + number
            + draw(space) + ("%" if percent else "") + draw(space))
    return text, op, sign, float(number), percent


@st.composite
def valid_rules(draw: Any) -> dict[str, Any]:
    """A valid rule of any source, with every optional field drawn."""
    source = draw(st.sampled_from(["prometheus", "alertmanager", "probe", "logs", "kubernetes"]))
    name = draw(_names(string.ascii_lowercase + string.digits + "_.-"))
    rule: dict[str, Any] = {"name": name, "source": source}
    rule["pass"] = [draw(criteria_texts())[0] for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        rule["warning"] = [draw(criteria_texts())[0]]
    if draw(st.booleans()):
        rule["weight"] = draw(st.floats(min_value=0, max_value=100, allow_nan=False)
                              | st.integers(0, 100))
    rule["key"] = draw(st.booleans())
    rule["no_data"] = draw(st.sampled_from(["unknown", "fail", "pass", "ignore"]))
    if draw(st.booleans()):
        rule["window"] = draw(durations())[0]
    if source == "prometheus":
        rule["query"] = draw(st.sampled_from([QUERY, "up", 'x{namespace="${namespace}"}']))
    elif source == "probe":
        rule["probe"] = {"url": "http://${namespace}.svc/", "expect_status":
                         draw(st.integers(100, 599)), "timeout": draw(durations())[0]}
    elif source == "logs":
        rule["logs"] = {"pattern": draw(st.sampled_from(["ERROR", r"(?i)\bfatal\b", "x|y"]))}
    elif source == "kubernetes":
        rule["check"] = draw(st.sampled_from(
            ["pods_ready", "restarts", "config_parity", "images_differ"]))
    else:
        # (YAML itself folds line-break characters such as U+0085 in plain values.)
        printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
        rule["matchers"] = draw(st.dictionaries(st.text(alphabet=_LOWER, min_size=1, max_size=8),
                                                st.text(alphabet=printable, max_size=8),
                                                max_size=3))
    return rule


@st.composite
def durations(draw: Any) -> tuple[Any, float]:
    """(what a person writes, seconds)."""
    parts = draw(st.lists(st.tuples(st.integers(0, 500), st.sampled_from(
        ["ms", "s", "m", "h", "d", "w"])), min_size=1, max_size=3))
    unit_seconds = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if draw(st.booleans()):
        seconds = draw(st.integers(0, 10**6))
        return draw(st.sampled_from([seconds, str(seconds)])), float(seconds)
    text = "".join(f"{n}{u}" for n, u in parts)
    return text, sum(n * unit_seconds[u] for n, u in parts)


@bounded
@given(rules=st.lists(valid_rules(), min_size=1, max_size=3,
                      unique_by=lambda r: r["name"]))
def test_valid_generated_rules_round_trip(workdir, rules):
    """Every field written is the field loaded: nothing dropped, nothing defaulted."""
    text = yaml.safe_dump({"rules": rules}, allow_unicode=True)
    _, loaded = _load_rules_text(workdir, text)
    assert not isinstance(loaded, list), loaded
    for written, rule in zip(rules, loaded.rules, strict=True):
        assert rule.name == written["name"] and rule.source == written["source"]
        assert [c.text for c in rule.pass_criteria] == [t.strip() for t in written["pass"]]
        assert [c.text for c in rule.warning_criteria] == \
            [t.strip() for t in written.get("warning", [])]
        assert rule.weight == float(written.get("weight", 1.0))
        assert rule.key is written["key"] and rule.no_data == written["no_data"]
        if "window" in written:
            assert rule.window == pytest.approx(parse_duration(written["window"]))
        else:
            assert rule.window is None
        if written["source"] == "alertmanager":
            assert rule.matchers == written["matchers"]
        # ... and the loaded model, written back, validates to the same rule.
        dumped = rule.model_dump(by_alias=True, exclude_defaults=True)
        dumped["pass"] = [c.text for c in rule.pass_criteria]
        if rule.warning_criteria:
            dumped["warning"] = [c.text for c in rule.warning_criteria]
        assert Rule.model_validate(dumped) == rule


# ---- the configuration loader --------------------------------------------------------------

_RULES_FOR_CONFIG = {"rules": [
    {"name": "error-rate", "source": "prometheus", "query": QUERY, "pass": ["< 0.01"]},
    {"name": "alerts", "source": "alertmanager", "pass": ["== 0"]},
]}


@pytest.fixture(scope="module")
def config_rules(workdir: Path) -> str:
    """A small valid rule file the generated configurations point at."""
    return str(_write(workdir, yaml.safe_dump(_RULES_FOR_CONFIG)))


def _base_config(rules: str) -> dict[str, Any]:
    return {
        "prometheus": {"url": "http://127.0.0.1:9090", "timeout": "10s"},
        "alertmanager": {"url": "http://127.0.0.1:9093", "timeout": "5s"},
        "kubernetes": {"mode": "kubeconfig", "request_timeout": "10s"},
        "evaluation": {"interval": "15s", "window": "5m", "source_timeout": "10s",
                       "max_concurrency": 8},
        "rule_files": [rules],
        "variables": {"requests_metric": "http_requests_total"},
        "pairs": [{
            "name": "api",
            "namespaces": ["production-blue", "production-green"],
            "routes": [{"kind": "IngressRoute", "name": "api-live", "namespace": "routing",
                        "api_group": "traefik.io"}],
            "selector": "app=api",
            "replicas": {"api": 2},
            "policy": {"auto_flip": True, "soak": "2h", "consecutive_passes": 3},
        }],
        "policy": {"auto_flip": False, "soak": "2h", "consecutive_passes": 3,
                   "observation": "24h", "rollback_on_gate_failures": 3, "cooldown": "5m",
                   "rollback_when_scaled_down": "refuse", "ready_timeout": "10m",
                   "dry_run": False},
        "webhook": {"matchers": {"severity": "critical"}, "match_namespace": True,
                    "max_body_bytes": 1048576},
        "auth": {"token_env": "GATEKEEPER_TOKEN", "webhook_requires_token": True},
        "state": {"configmap": "gatekeeper-state", "namespace": "gatekeeper", "history": 20},
        "objects": {"enabled": True},
        "leader_election": {"enabled": True, "lease_duration": "15s", "renew_deadline": "10s",
                            "retry_period": "2s"},
        "notifications": {"slack": [], "timeout": "5s", "retries": 3},
        "server": {"host": "127.0.0.1", "port": 8080},
    }


def _load_config_text(folder: Path, text: str) -> tuple[Path, Any]:
    path = _write(folder, text)
    try:
        return path, load_config(path)
    except ConfigFileError as exc:
        # Problems of the (valid) rule file would name that file: only the config's here.
        return path, _problem_lines(exc.problems, path, text)


def test_the_base_configuration_is_valid(workdir, config_rules):
    """The configuration the properties mutate loads as written."""
    _, loaded = _load_config_text(workdir, yaml.safe_dump(_base_config(config_rules)))
    assert not isinstance(loaded, list), loaded
    assert loaded.config.evaluation.interval == 15.0


@bounded
@given(text=st.text(max_size=200) | _yaml_soup.map(lambda s: s.replace("rules:", "pairs:")))
def test_any_text_is_a_configuration_or_a_clear_error(workdir, text):
    """Arbitrary text: a configuration or ConfigFileError lines naming file:line."""
    _load_config_text(workdir, text)


@bounded
@given(data=st.data())
def test_any_value_anywhere_in_the_configuration_is_loaded_or_named(workdir, config_rules,
                                                                     data):
    """Any JSON value at any place of a valid configuration: loads, or the error names it."""
    doc, path = _mutate(_base_config(config_rules), data.draw)
    text = yaml.safe_dump(doc, allow_unicode=True)
    _, loaded = _load_config_text(workdir, text)
    if isinstance(loaded, list):
        assert set(loaded) & _prefix_lines(text, path), (path, loaded)


_bad_names = st.sampled_from(["API", "a_b", "-a", "a-", "", "a.b", "x" * 64, "é", 5, None])
_bad_durations = st.sampled_from(["soon", "-1s", "1y", "", math.nan, math.inf, -1, True,
                                  "9" * 400, [1]])
_INVALID_CONFIG_FIELDS: list[tuple[tuple[Any, ...], Any]] = [
    (("pairs", 0, "name"), _bad_names),
    (("pairs", 0, "namespaces", 1), _bad_names | st.just("production-blue")),
    (("pairs", 0, "namespaces"), st.lists(st.just("a"), max_size=1)
     | st.lists(st.sampled_from(["a", "b", "c"]), min_size=3, max_size=4, unique=True)),
    (("pairs", 0, "routes"), st.just([])),
    (("pairs", 0, "routes", 0, "kind"), st.sampled_from(["Ingress", "ingressroute", "", 1])),
    (("pairs", 0, "routes", 0, "api_group"), st.sampled_from(["traefik.io/v1alpha1", "x"])),
    (("pairs", 0, "routes", 0, "name"), _bad_names),
    (("pairs", 0, "replicas", "api"), st.sampled_from(["two", 2.5, [2], None])),
    (("pairs", 0, "policy", "soak"), _bad_durations),
    (("evaluation", "interval"), _bad_durations | st.floats(0, 0.999) | st.just("500ms")),
    (("evaluation", "window"), _bad_durations),
    (("evaluation", "max_concurrency"), st.integers(max_value=0) | st.integers(min_value=257)),
    (("policy", "consecutive_passes"), st.integers(max_value=0) | st.just("many")),
    (("policy", "cooldown"), _bad_durations),
    (("policy", "auto_flip"), st.sampled_from(["perhaps", 2, [True], {"a": 1}, 0.5])),
    (("policy", "dry_run"), st.sampled_from(["perhaps", 2, [True], None])),
    (("policy", "rollback_when_scaled_down"), st.sampled_from(["scale_up", "", "REFUSE"])),
    (("policy", "rollback_on_gate_failures"), st.integers(max_value=0)),
    (("webhook", "max_body_bytes"), st.integers(max_value=1023)),
    (("webhook", "matchers"), st.sampled_from([["severity"], "critical", {"severity": [1]}])),
    (("state", "history"), st.integers(max_value=0) | st.integers(min_value=501)),
    (("state", "configmap"), _bad_names),
    (("leader_election", "lease_duration"), _bad_durations),
    (("notifications", "retries"), st.integers(max_value=-1) | st.integers(min_value=11)),
    (("server", "port"), st.integers(max_value=-1) | st.integers(min_value=65536)),
    (("kubernetes", "mode"), st.sampled_from(["cluster", "", "AUTO"])),
    (("prometheus", "url"), st.sampled_from([None, 5, ["http://x"]])),
    (("rule_files",), st.sampled_from([[], ["/nonexistent/rules.yaml"], ["a\x00b"], [5]])),
    # `pairs: []` is valid while objects.enabled is on (the default): pairs may come from
    # BlueGreenPair objects. With objects off it is refused (test_pair_objects.py).
    (("pairs",), st.sampled_from(["api", None, {"name": "api"}, [None], ["api"]])),
    (("objects", "enabled"), st.sampled_from([2, None, "maybe"])),
]


@bounded
@given(data=st.data(), case=st.sampled_from(_INVALID_CONFIG_FIELDS))
def test_an_invalid_setting_is_refused_where_it_is(workdir, config_rules, data, case):
    """A value invalid for its setting never loads (no silent default); the error names the
    configuration file (or the rule file it points at) and the setting's line."""
    path, values = case
    doc = _base_config(config_rules)
    _set(doc, path, data.draw(values))
    text = yaml.safe_dump(doc, allow_unicode=True)
    file = _write(workdir, text)
    with pytest.raises(ConfigFileError) as caught:
        load_config(file)
    problems = caught.value.problems
    if path[0] == "rule_files" and doc["rule_files"] and isinstance(doc["rule_files"][0], str):
        # Valid setting, unreadable rule file: the error names that file, at line 1.
        shown = doc["rule_files"][0].replace("\x00", "\\0")
        assert all(f"{shown}:1: " in p for p in problems), problems
        return
    lines = _problem_lines(problems, file, text)
    assert set(lines) & _prefix_lines(text, path), (path, problems)


@few
@given(key=st.text(min_size=1, max_size=15),
       where=st.sampled_from([(), ("pairs", 0), ("pairs", 0, "routes", 0), ("policy",),
                              ("evaluation",), ("webhook",), ("auth",), ("server",)]))
def test_an_unknown_setting_is_an_error_not_ignored(workdir, config_rules, key, where):
    """A misspelt setting (`intervall`) is refused instead of silently keeping the default."""
    doc = _base_config(config_rules)
    container = _get(doc, where)
    if key in container or key in {"pass", "warning"}:
        return
    from gatekeeper import config as config_module
    known = {name for model in vars(config_module).values() if isinstance(model, type)
             and hasattr(model, "model_fields") for name in model.model_fields}
    if key in known:
        return
    container[key] = 1
    text = yaml.safe_dump(doc, allow_unicode=True)
    file, loaded = _load_config_text(workdir, text)
    assert isinstance(loaded, list), f"unknown setting {key!r} at {where} accepted"
    with pytest.raises(ConfigFileError, match="unknown key"):
        load_config(file)


@bounded
@given(interval=durations(), window=durations(), soak=durations(), cooldown=durations(),
       passes=st.integers(1, 1000), history=st.integers(1, 500), port=st.integers(0, 65535),
       auto_flip=st.booleans(), dry_run=st.booleans(),
       names=st.lists(_names(_LOWER + string.digits + "-"), min_size=3, max_size=3,
                      unique=True))
def test_valid_generated_configurations_round_trip(workdir, config_rules, interval, window,
                                                   soak, cooldown, passes, history, port,
                                                   auto_flip, dry_run, names):
    """Every setting written is the setting loaded, durations converted to seconds."""
    doc = _base_config(config_rules)
    doc["evaluation"]["interval"] = interval[0] if interval[1] >= 1 else "1s"
    doc["evaluation"]["window"] = window[0]
    doc["policy"].update(soak=soak[0], cooldown=cooldown[0], consecutive_passes=passes,
                         auto_flip=auto_flip, dry_run=dry_run)
    doc["state"]["history"] = history
    doc["server"]["port"] = port
    pair = doc["pairs"][0]
    pair["name"], pair["namespaces"] = names[0], [names[1], names[2]]
    text = yaml.safe_dump(doc)
    _, loaded = _load_config_text(workdir, text)
    assert not isinstance(loaded, list), loaded
    config = loaded.config
    assert config.evaluation.interval == pytest.approx(max(interval[1], 1.0))
    assert config.evaluation.window == pytest.approx(window[1])
    assert config.policy.soak == pytest.approx(soak[1])
    assert config.policy.cooldown == pytest.approx(cooldown[1])
    assert config.policy.consecutive_passes == passes
    assert (config.policy.auto_flip, config.policy.dry_run) == (auto_flip, dry_run)
    assert config.state.history == history and config.server.port == port
    assert config.pairs[0].name == names[0]
    assert config.pairs[0].namespaces == (names[1], names[2])
    assert config.pairs[0].other(names[1]) == names[2]


# ---- the criteria parser and durations -----------------------------------------------------

@bounded
@given(text=st.text(max_size=40) | st.text(alphabet="<>=!+-%. 0123456789eE", max_size=12))
def test_any_criterion_text_parses_or_is_refused_quoting_it(text):
    """Any text: a Criterion, or ValueError that quotes the text (never another error)."""
    try:
        criterion = parse_criterion(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
        return
    assert math.isfinite(criterion.amount)
    assert criterion.op in ("<", "<=", ">", ">=", "==", "!=")
    assert criterion.describe() and criterion.describe(1.0)


@bounded
@given(value=json_values.filter(lambda v: not isinstance(v, str)))
def test_a_criterion_that_is_not_text_is_refused(value):
    """Numbers, lists, mappings, null: ValueError, not TypeError."""
    with pytest.raises(ValueError, match="criterion must be a string"):
        parse_criterion(value)


@bounded
@given(spec=criteria_texts(),
       value=st.floats(-1e6, 1e6, allow_nan=False),
       baseline=st.floats(-1e6, 1e6, allow_nan=False))
def test_valid_criteria_parse_to_what_they_say(spec, value, baseline):
    """Generated criteria round-trip: operator, kind, signed amount; `holds` compares with
    the threshold they describe."""
    text, op, sign, number, percent = spec
    criterion = parse_criterion(text)
    assert criterion.text == text.strip() and criterion.op == op
    expected_kind = "absolute" if sign is None else \
        "relative_percent" if percent else "relative_delta"
    assert criterion.kind == expected_kind
    assert criterion.amount == (-number if sign == "-" else number)
    assert parse_criterion(criterion.text) == criterion
    threshold = criterion.threshold(baseline)
    assert threshold is not None
    compare = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__,
               "==": float.__eq__, "!=": float.__ne__}[op]
    assert criterion.holds(value, baseline) is compare(value, threshold)
    if criterion.is_relative:
        assert criterion.holds(value, None) is None
        assert criterion.holds(value, math.nan) is None


@bounded
@given(value=json_values | st.text(alphabet="0123456789.msdhw -", max_size=12))
def test_any_duration_is_finite_seconds_or_refused(value):
    """A duration is a finite number of seconds >= 0, or ValueError (never inf/NaN)."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert str(exc)
        return
    assert math.isfinite(seconds) and seconds >= 0
