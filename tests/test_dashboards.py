"""The Grafana dashboards in dashboards/: sound structure, and every query works for real.

Structure: unique panel ids, grid positions inside 24 columns without overlaps, the
`${datasource}` variable on every panel, target, annotation and query variable, no
hard-coded datasource UID, an expression in every target, only metrics the Recorder exports.

Live: a gatekeeper Recorder filled with a judged verdict, a phase, flips and rollbacks is
served on a loopback port and scraped by the session's real Prometheus, next to the synthetic
apps of two fresh namespaces. The dashboards' variables are resolved the way Grafana does
(label_values, query_result + regex), and every panel and annotation query runs as Grafana
would run it (instant or range); an error, an empty result or an all-NaN series fails.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import start_http_server

from gatekeeper.judging import judge_pair
from gatekeeper.measurements import Measurement
from gatekeeper.metrics import RULE_STATUSES, VERDICTS, Recorder
from gatekeeper.rules import load_rule_set
from telemetry_sandbox import httpjson

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s",
                     "__range_ms"}
# What Grafana would put in for the builtins on a 1 s scrape interval over a short range.
BUILTIN_VALUES = {"__rate_interval": "15s", "__interval": "5s", "__range": "60s",
                  "__interval_ms": "5000", "__range_s": "60", "__range_ms": "60000"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def _query_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in _panels(board) if p["type"] != "row")


def _variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def _expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target, annotation and query variable."""
    for panel in _query_panels(board):
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in board["annotations"]["list"]:
        yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", _variable_query(variable)


def _exported_series_names() -> set[str]:
    names = set()
    for family in Recorder().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def board(request) -> dict[str, Any]:
    return _load(request.param)


# -- structure -------------------------------------------------------------------------------


def test_the_two_dashboards_exist():
    """The chart and docs name these two files."""
    assert {p.name for p in DASHBOARDS} >= {"deployment-validation.json",
                                            "gatekeeper-overview.json"}


def test_dashboard_metadata(board):
    """A title, a stable dashboard uid, the gatekeeper tag and a current schema version."""
    assert board["title"].startswith("gatekeeper / ")
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert "gatekeeper" in board["tags"]
    assert 36 <= board["schemaVersion"] <= 41
    assert "__inputs" not in board, "export for sharing externally binds a datasource"


def test_panel_ids_are_unique(board):
    """Grafana keys panel state and links by id."""
    ids = [panel["id"] for panel in _panels(board)]
    assert len(ids) == len(set(ids)), ids


def test_grid_positions_fit_and_do_not_overlap(board):
    """Every panel lies inside the 24-column grid and no two panels cover the same cell."""
    boxes = []
    for panel in _panels(board):
        grid = panel["gridPos"]
        x, y, w, h = (grid[k] for k in ("x", "y", "w", "h"))
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["title"]
        assert x >= 0 and y >= 0 and w >= 1 and h >= 1 and x + w <= 24, panel["title"]
        boxes.append((panel["title"], x, y, w, h))
    for (a, ax, ay, aw, ah), (b, bx, by, bw, bh) in combinations(boxes, 2):
        overlap = ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
        assert not overlap, f"{a!r} overlaps {b!r}"


def test_datasource_variable_is_used_everywhere(board):
    """One datasource variable; every panel, target, annotation and query variable uses it."""
    variables = _variables(board)
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert [v for v in variables.values() if v["type"] == "datasource"] == [datasource]
    for panel in _query_panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, panel["title"]
    for annotation in board["annotations"]["list"]:
        assert annotation["datasource"] == DATASOURCE, annotation["name"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_no_hard_coded_datasource_uid(board):
    """A `uid` below the dashboard's own may only be the variable: dashboards are portable."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "uid" and path:
                    yield path, value
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{path}[{index}]")

    for where, uid in walk(board, ""):
        assert uid == "${datasource}", f"hard-coded uid {uid!r} at {where}"
    assert "DS_PROMETHEUS" not in json.dumps(board)


def test_every_target_has_an_expression_and_unique_ref_ids(board):
    """No empty query; refIds are unique within a panel (transformations refer to them)."""
    for panel in _query_panels(board):
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{panel['title']!r} {target['refId']}"


def test_queries_use_defined_variables_and_exported_metrics(board):
    """Every $variable is defined, every gatekeeper_* series is one the Recorder exports."""
    defined = set(_variables(board)) | BUILTIN_VARIABLES
    exported = _exported_series_names()
    for where, expr in _expressions(board):
        for match in _VARIABLE.finditer(expr):
            name = next(g for g in match.groups() if g)
            if not name.isdigit():  # $1 is a label_replace back-reference
                assert name in defined, f"{where}: undefined variable ${name}"
        used = set(re.findall(r"\bgatekeeper_[a-z_]+", expr))
        assert used <= exported, f"{where}: unknown metrics {sorted(used - exported)}"


def test_label_values_in_queries_are_real():
    """Phases, verdicts and rule statuses the dashboards name are ones gatekeeper exports."""
    from gatekeeper.lifecycle import PHASES

    known = set(PHASES) | set(VERDICTS) | set(RULE_STATUSES)
    for path in DASHBOARDS:
        for panel in _query_panels(_load(path)):
            overrides = panel["fieldConfig"]["overrides"]
            names = {o["matcher"]["options"] for o in overrides if o["matcher"]["id"] == "byName"}
            if panel["title"] in ("Verdict on the dark namespace", "Phase"):
                assert names <= known, (panel["title"], names - known)


# -- live: every query against a real Prometheus ---------------------------------------------


def _judged_verdict(pair: str, dark: str, active: str, now: float):
    """A realistic verdict from the real judge and the shipped rules (dark: one warning)."""
    rule_set = load_rule_set([ROOT / "rules"])
    values = {
        "error-rate": (0.004, 0.001), "error-rate-vs-active": (0.004, 0.001),
        "latency-p99": (0.4, 0.25), "latency-p99-vs-active": (0.4, 0.25),
        "critical-alerts": (0, 0), "log-errors": (14, 2), "pods-ready": (1, 1),
        "container-restarts": (0, 0), "config-parity": (0, 0), "new-release-deployed": (1, 0),
    }
    measurements = {
        rule.name: {dark: Measurement.ok(values[rule.name][0], sample_count=5000),
                    active: Measurement.ok(values[rule.name][1], sample_count=5000)}
        for rule in rule_set.rules
    }
    return judge_pair(pair, rule_set, candidate=dark, baseline=active,
                      measurements=measurements, evaluated_at=now)


class FakeService:
    """A gatekeeper Recorder on a loopback /metrics port, ticking like a running service."""

    def __init__(self, pair: str, dark: str, active: str) -> None:
        from gatekeeper.lifecycle import PHASES

        self.pair, self.dark, self.active = pair, dark, active
        self.recorder = Recorder()
        r = self.recorder
        r.record_phase(pair, "validating", time.time() - 1800, PHASES)
        r.record_active(pair, active, (dark, active))
        r.record_replicas(pair, dark, 11)
        r.record_replicas(pair, active, 11)
        r.record_leader(True)
        r.record_refused(pair, "flip")
        r.record_rules(pair, load_rule_set([ROOT / "rules"]).rules)
        for trigger in ("auto", "alertmanager"):  # the counters exist before the events
            r.flips.labels(pair, trigger)
            r.rollbacks.labels(pair, trigger)
        self._stop = threading.Event()
        self.server, self._thread = start_http_server(0, addr="127.0.0.1", registry=r.registry)
        self._ticker = threading.Thread(target=self._tick_loop, daemon=True)
        self._tick()
        self._ticker.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def _tick(self) -> None:
        r = self.recorder
        r.record_verdict(_judged_verdict(self.pair, self.dark, self.active, time.time()))
        r.observe_evaluation(0.12)
        for source in ("prometheus", "alertmanager", "kubernetes", "logs"):
            r.record_source(source, up=source != "logs", errors=int(source == "logs"))
        r.record_webhook("duplicate")
        r.observe_action_latency("rollback", 0.08)

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.5):
            self._tick()

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=5)
        self.server.shutdown()
        self.server.server_close()


def _series_text(sample: dict[str, Any]) -> str:
    """How Grafana renders a query_result() series before applying the variable's regex."""
    metric = dict(sample["metric"])
    name = metric.pop("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    timestamp, value = sample["value"]
    return f"{name}{{{labels}}} {value} {int(float(timestamp) * 1000)}"


class Grafana:
    """Resolves variables and runs queries like Grafana's Prometheus datasource."""

    def __init__(self, prometheus: Any, board: dict[str, Any], choices: dict[str, str]) -> None:
        self.prometheus = prometheus
        self.board = board
        self.values: dict[str, str] = dict(BUILTIN_VALUES)
        for variable in board["templating"]["list"]:
            name = variable["name"]
            if variable["type"] == "constant":
                self.values[name] = variable["query"]
            elif variable["type"] == "query":
                options = self.options(variable)
                wanted = choices.get(name, options[0] if options else None)
                assert wanted in options, f"${name}: {wanted!r} not among {options}"
                self.values[name] = wanted

    def substitute(self, expr: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = next(g for g in match.groups() if g)
            return self.values.get(name, match.group(0))

        return _VARIABLE.sub(value, expr)

    def options(self, variable: dict[str, Any]) -> list[str]:
        query = self.substitute(_variable_query(variable))
        base = self.prometheus.url
        if match := re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query):
            selector, label = match.groups()
            url = f"{base}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
                {"match[]": selector})
            found = httpjson.get_json(url)["data"]
        elif match := re.fullmatch(r"query_result\((.+)\)", query, re.DOTALL):
            found = [_series_text(s) for s in self.prometheus.query_result(match.group(1))]
        else:
            raise AssertionError(f"unsupported variable query {query!r}")
        if regex := variable.get("regex"):
            pattern = re.compile(regex.strip("/"))
            found = [m.group(1) for text in found if (m := pattern.search(text))]
        return sorted(set(found))

    def run(self, expr: str, *, instant: bool, step: str = "2s") -> list[dict[str, Any]]:
        query = self.substitute(expr)
        assert "$" not in query.replace("$1", ""), f"unsubstituted variable in {query!r}"
        now = time.time()
        if instant:
            params = {"query": query, "time": f"{now:.3f}"}
            path = "query"
        else:
            params = {"query": query, "start": f"{now - 60:.3f}", "end": f"{now:.3f}",
                      "step": step}
            path = "query_range"
        url = f"{self.prometheus.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            answer = httpjson.get_json(url, timeout_s=10)
        except httpjson.HTTPStatusError as exc:
            raise AssertionError(f"{query!r} failed: {exc}") from None
        assert answer["status"] == "success", (query, answer)
        return list(answer["data"]["result"])


def _has_numbers(result: list[dict[str, Any]]) -> bool:
    values = [v for s in result for _, v in ([s["value"]] if "value" in s else s["values"])]
    return any(not math.isnan(float(v)) for v in values)


@pytest.fixture
def live(prometheus, synthetic_fleet, unique_pair, tmp_path):
    """Synthetic apps in two fresh namespaces, a fake service and a firing alert, scraped."""
    pair = f"dash-{unique_pair.prefix}"
    active, dark = unique_pair.blue, unique_pair.green
    synthetic_fleet.set_profile(active, rps=20, error_ratio=0.001, latency_p99_s=0.25)
    synthetic_fleet.set_profile(dark, rps=5, error_ratio=0.004, latency_p99_s=0.4)
    service = FakeService(pair, dark, active)
    job = f"gatekeeper-{unique_pair.prefix}"
    rule_file = tmp_path / "dashboard-test.rules.yaml"
    rule_file.write_text(
        "groups:\n  - name: dashboard-test\n    rules:\n"
        "      - alert: DashboardTestTraffic\n"
        f'        expr: sum by (namespace) (rate(http_requests_total{{namespace=~"{dark}"}}'
        "[10s])) > 0\n"
        "        labels: {severity: info}\n")
    previous_rules = list(prometheus.rule_files)
    try:
        prometheus.set_rule_files([*previous_rules, rule_file], reload=False)
        prometheus.add_scrape_target(service.address, job=job)
        prometheus.wait_for_scrapes(job, timeout_s=30)
        prometheus.wait_for(f'ALERTS{{alertstate="firing", namespace="{dark}"}}', timeout_s=15)
        # Several scrapes of everything, so rate() windows hold several samples.
        prometheus.wait_for(f'count_over_time(up{{job="{job}"}}[15s]) >= 5', timeout_s=15)
        # Last, so the events are well inside the annotations' 1-minute windows.
        service.recorder.record_flip(pair, "auto")
        service.recorder.record_rollback(pair, "alertmanager")
        prometheus.wait_for(f'gatekeeper_flips_total{{job="{job}"}} > 0 and on (job) '
                            f'gatekeeper_rollbacks_total{{job="{job}"}} > 0', timeout_s=15)
        yield {"pair": pair, "job": job, "dark": dark, "active": active}
    finally:
        prometheus.remove_scrape_job(job, reload=False)
        prometheus.set_rule_files(previous_rules)
        service.close()


def test_every_dashboard_query_returns_data_from_a_real_prometheus(prometheus, live):
    """Each panel target and annotation, variables substituted, answers without error and
    with at least one number; the hidden namespace variables resolve to the right roles."""
    checked = 0
    for path in DASHBOARDS:
        board = _load(path)
        grafana = Grafana(prometheus, board, {"pair": live["pair"], "job": live["job"]})
        if "dark" in grafana.values:
            assert (grafana.values["dark"], grafana.values["active"]) == (
                live["dark"], live["active"])
        for panel in _query_panels(board):
            for target in panel["targets"]:
                where = f"{path.name}: panel {panel['title']!r} {target['refId']}"
                result = grafana.run(target["expr"], instant=target.get("instant", False))
                assert result, f"{where}: empty result for {grafana.substitute(target['expr'])}"
                assert _has_numbers(result), f"{where}: only NaN"
                checked += 1
        for annotation in board["annotations"]["list"]:
            result = grafana.run(annotation["expr"], instant=False,
                                 step=annotation.get("step", "60s"))
            assert result, f"{path.name}: annotation {annotation['name']!r} found no event"
            checked += 1
    assert checked >= 40
