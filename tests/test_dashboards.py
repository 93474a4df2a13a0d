"""The Grafana dashboards in dashboards/: sound structure, and every query works for real.

Structure: unique panel ids, grid positions inside 24 columns without overlaps, the
`${datasource}` variable on every panel, target, annotation and query variable, no
hard-coded datasource UID, an expression in every target, only metrics the Recorder exports.

Grafana's model: each dashboard parsed into grafana-foundation-sdk's classes (generated from
Grafana's dashboard schema) and written back loses no field, and every value has the
schema's type; the check is shown to catch broken dashboards.

Live: a real `gatekeeper serve` process judges two namespaces of synthetic apps against the
emulated cluster with the shipped rules, flips, rolls back and refuses for real, and is
scraped by the session's real Prometheus next to the apps and Traefik-named series from the
StackExporter. The dashboards' variables are resolved the way Grafana does (label_values,
query_result + regex), and every panel and annotation query runs as Grafana would run it
(instant or range); an error, an empty result or an all-NaN series fails.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from gatekeeper.metrics import RULE_STATUSES, VERDICTS, Recorder
from kube_emulator import running
from telemetry_sandbox import TrafficProfile, httpjson
from telemetry_sandbox.stack_exporter import traefik_service_name
from tests.service_support import (
    NEW,
    ROUTE,
    TOKEN,
    ServedAPI,
    free_port,
    seed,
    wait_until,
)

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


# -- Grafana's own dashboard model ------------------------------------------------------------
#
# grafana-foundation-sdk is generated by Grafana from the dashboard schema (the 11.6 models):
# a dashboard parsed into its classes and written back must keep every field, and every
# value must have the type (or enum value) the schema gives it.

# Fields the schema does not model but Grafana reads, with why they are kept.
NOT_IN_THE_SCHEMA = {
    # A query variable's `definition` is the query editor's display text of the query.
    ("templating", "definition"),
    # Prometheus annotations: the Prometheus datasource reads these from the annotation
    # itself (its annotation support), the schema leaves datasource options out.
    ("annotations", "step"), ("annotations", "titleFormat"), ("annotations", "textFormat"),
    ("annotations", "tagKeys"), ("annotations", "useValueForTime"),
}


def _grafana_model(board: dict[str, Any]) -> Any:
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    return Dashboard.from_json(copy.deepcopy(board))


def _as_json(model: Any) -> Any:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return json.loads(json.dumps(model, cls=JSONEncoder))


def _lost_fields(original: Any, written: Any, path: str = "") -> Iterator[str]:
    """Paths of `original` that are missing or changed in `written`."""
    if isinstance(original, dict):
        if not isinstance(written, dict):
            yield f"{path}: became {type(written).__name__}"
            return
        for key, value in original.items():
            section = path.split(".")[1].split("[")[0] if path.count(".") >= 1 else key
            if key not in written:
                if (section, key) not in NOT_IN_THE_SCHEMA:
                    yield f"{path}.{key}: not in Grafana's model"
            else:
                yield from _lost_fields(value, written[key], f"{path}.{key}")
    elif isinstance(original, list):
        if not isinstance(written, list) or len(original) != len(written):
            yield f"{path}: list changed"
            return
        for index, (a, b) in enumerate(zip(original, written, strict=True)):
            yield from _lost_fields(a, b, f"{path}[{index}]")
    elif original != written:
        yield f"{path}: {original!r} became {written!r}"


def _type_problems(value: Any, hint: Any, path: str) -> Iterator[str]:
    """Where `value` does not have the schema type `hint` (recursing into model objects)."""
    import enum
    import sys
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        # Plugin-specific parts (a panel's options, a query): check them as their own model.
        if hasattr(value, "to_json") and hasattr(type(value), "__annotations__"):
            yield from _type_problems(value, type(value), path)
        return
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        attempts = [list(_type_problems(value, a, path)) for a in options]
        if all(attempts):
            yield min(attempts, key=len)[0]
        return
    if origin is typing.Literal:
        if value not in args:
            yield f"{path}: {value!r} is none of {args}"
        return
    if origin is list:
        if not isinstance(value, list):
            yield f"{path}: {type(value).__name__} where the schema wants a list"
            return
        for index, item in enumerate(value):
            yield from _type_problems(item, args[0] if args else Any, f"{path}[{index}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            yield f"{path}: {type(value).__name__} where the schema wants an object"
            return
        for key, item in value.items():
            yield from _type_problems(item, args[1] if len(args) == 2 else Any, f"{path}.{key}")
        return
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            hint(value.value if isinstance(value, enum.Enum) else value)
        except ValueError:
            yield f"{path}: {value!r} is not one of {[m.value for m in hint]}"
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            yield f"{path}: {value!r} is not a number"
        return
    if hint in (str, int, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            yield f"{path}: {value!r} is not {hint.__name__}"
        return
    if isinstance(hint, type) and hasattr(hint, "to_json"):
        if isinstance(value, dict) and hasattr(hint, "from_json"):
            # Some parents keep such parts as raw JSON (a panel's transformations): parse.
            parsed = hint.from_json(value)
            yield from (f"{path}{lost}" for lost in _lost_fields(value, _as_json(parsed)))
            value = parsed
        if not isinstance(value, hint):
            yield f"{path}: {type(value).__name__} is not {hint.__name__}"
            return
        module = sys.modules[type(value).__module__]
        hints = typing.get_type_hints(type(value), globalns=vars(module))
        for name, attribute in hints.items():
            yield from _type_problems(getattr(value, name, None), attribute, f"{path}.{name}")


def test_dashboards_are_grafana_dashboard_models(board):
    """Parsed with grafana-foundation-sdk and written back, no field is lost or changed;
    every panel type and query is one the SDK knows (no opaque fallback), every value has
    the schema's type."""
    from grafana_foundation_sdk.cog.runtime import UnknownDataquery
    from grafana_foundation_sdk.models import dashboard, prometheus

    model = _grafana_model(board)
    assert list(_lost_fields(board, _as_json(model))) == []
    for panel in model.panels or []:
        if isinstance(panel, dashboard.RowPanel):
            continue
        assert not isinstance(panel.options, dict), f"{panel.title}: unknown panel type"
        for target in panel.targets or []:
            assert isinstance(target, prometheus.Dataquery), (panel.title, target)
            assert not isinstance(target, UnknownDataquery)
    assert list(_type_problems(model, dashboard.Dashboard, "dashboard")) == []


@pytest.mark.parametrize(("mutate", "problem"), [
    (lambda b: b["panels"][1].update(gridpos=b["panels"][1].pop("gridPos")),
     "panels[1].gridpos: not in Grafana's model"),
    (lambda b: b["panels"][1]["gridPos"].update(w="wide"), "grid_pos.w: 'wide' is not int"),
    (lambda b: b.update(graphTooltip=7), "graph_tooltip: 7 is not one of"),
    (lambda b: b["panels"][1]["options"].update(colorMode="rainbow"),
     "color_mode: 'rainbow' is not one of"),
    (lambda b: b["panels"][1]["targets"][0].update(instnat=True),
     "targets[0].instnat: not in Grafana's model"),
], ids=["misspelt-key", "wrong-type", "bad-enum", "bad-panel-option", "misspelt-query-key"])
def test_the_model_check_catches_broken_dashboards(mutate, problem):
    """The check fails for the mistakes it exists for (so a pass means something)."""
    from grafana_foundation_sdk.models import dashboard

    board = _load(ROOT / "dashboards" / "deployment-validation.json")
    mutate(board)
    model = _grafana_model(board)
    found = [*_lost_fields(board, _as_json(model)),
             *_type_problems(model, dashboard.Dashboard, "dashboard")]
    assert any(problem in line for line in found), found


# -- live: every query against a real Prometheus scraping a real `gatekeeper serve` ----------


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


class ServeProcess(ServedAPI):
    """`python -m gatekeeper serve` against the emulated cluster, on a loopback port."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "GATEKEEPER_TOKEN": TOKEN, "POD_NAME": "gatekeeper-0"}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatekeeper", "serve", "--config", str(self.config),
            "--host", "127.0.0.1", "--port", str(self.port), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

        async def ready() -> bool:
            try:
                status, _ = await self.get("/readyz")
            except aiohttp.ClientError:
                return False
            return status == 200

        await wait_until(ready, within=30, what="gatekeeper serve ready")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def _serve_config(tmp_path: Path, kubeconfig: Path, pair: str, blue: str, green: str,
                  routing: str, prometheus_url: str, alertmanager_url: str) -> Path:
    """The shipped rules on a short window; no automatic flips (the test acts itself)."""
    config = {
        "prometheus": {"url": prometheus_url, "timeout": "3s"},
        "alertmanager": {"url": alertmanager_url, "timeout": "3s"},
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig),
                       "request_timeout": "5s"},
        "evaluation": {"interval": "1s", "window": "10s", "source_timeout": "3s"},
        "rule_files": [str(ROOT / "rules" / "default.yaml"),
                       str(ROOT / "rules" / "preflight.yaml")],
        "pairs": [{"name": pair, "namespaces": [blue, green], "selector": "app=api",
                   "routes": [{"name": ROUTE, "namespace": routing}]}],
        "policy": {"auto_flip": False, "auto_rollback": False, "observation": "1h",
                   "cooldown": "1h", "ready_timeout": "10s"},
        "leader_election": {"enabled": True, "namespace": "gatekeeper",
                            "lease_duration": "3s", "renew_deadline": "2s",
                            "retry_period": "0.5s"},
    }
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest_asyncio.fixture
async def live(prometheus, alertmanager, synthetic_fleet, stack_exporter, unique_pair,
               tmp_path):
    """A real `gatekeeper serve` judging two namespaces of synthetic apps (shipped rules),
    after a real flip, a real rollback, a refused flip and a webhook call; Traefik's metrics
    for the services behind the route; a firing alert; all scraped by the real Prometheus.

    Prometheus helpers block, and the emulated API server runs on this event loop: they run
    in a thread so `gatekeeper serve` keeps reaching the cluster meanwhile.
    """
    pair = f"dash-{unique_pair.prefix}"
    active, dark = unique_pair.blue, unique_pair.green
    routing = unique_pair.name("routing")
    synthetic_fleet.set_profile(active, rps=20, error_ratio=0.001, latency_p99_s=0.25)
    synthetic_fleet.set_profile(dark, rps=20, error_ratio=0.004, latency_p99_s=0.4)
    traefik = {ns: traefik_service_name(ns, "api-service", 8080) for ns in (active, dark)}
    stack_exporter.set_traefik(traefik[active], TrafficProfile(rps=20, error_ratio=0.001))
    stack_exporter.set_traefik(traefik[dark], TrafficProfile(rps=3, error_ratio=0.02,
                                                             latency_p99_s=0.6))
    job = f"gatekeeper-{unique_pair.prefix}"
    rule_file = tmp_path / "dashboard-test.rules.yaml"
    rule_file.write_text(
        "groups:\n  - name: dashboard-test\n    rules:\n"
        "      - alert: DashboardTestTraffic\n"
        f'        expr: sum by (namespace) (rate(http_requests_total{{namespace=~"{dark}"}}'
        "[10s])) > 0\n"
        "        labels: {severity: info}\n")
    previous_rules = list(prometheus.rule_files)
    objects = seed(active, dark, routing, green_image=NEW)
    port = free_port()
    async with running(objects, ready_delay=0.0, bookmark_interval=0.2) as emulator:
        kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
        serve = ServeProcess(_serve_config(tmp_path, kubeconfig, pair, active, dark, routing,
                                           prometheus.url, alertmanager.url), port)
        try:
            await asyncio.to_thread(prometheus.set_rule_files, [*previous_rules, rule_file])
            await serve.start()
            for namespace, errors in ((dark, 14), (active, 2)):
                emulator.append_logs_by_selector(namespace, "app=api", [
                    *(f"ERROR request {i} failed" for i in range(errors)), "INFO ok"])
            await asyncio.to_thread(prometheus.add_scrape_target, f"127.0.0.1:{port}", job=job)
            # Scraped before the actions, so their counters and latencies show as changes.
            await asyncio.to_thread(prometheus.wait_for, f'gatekeeper_verdict{{job="{job}"}}',
                                    timeout_s=30)
            # The real actions: a forced flip to the dark namespace, a rollback to the
            # active one, a flip refused by the cooldown, an Alertmanager notification.
            status, body = await serve.post(f"/api/v1/pairs/{pair}/flip", {"force": True})
            assert status == 200, body
            status, body = await serve.post(f"/api/v1/pairs/{pair}/rollback", {})
            assert status == 200, body
            status, body = await serve.post(f"/api/v1/pairs/{pair}/flip", {})
            assert status == 409, body
            status, body = await serve.post("/api/v1/alertmanager", {
                "version": "4", "status": "firing", "receiver": "gatekeeper",
                "alerts": [{"status": "firing", "labels": {
                    "alertname": "DashboardTestTraffic", "severity": "info",
                    "namespace": dark}}]})
            assert status == 200, body

            def scraped() -> None:
                prometheus.wait_for(f'ALERTS{{alertstate="firing", namespace="{dark}"}}',
                                    timeout_s=20)
                prometheus.wait_for(
                    f'gatekeeper_flips_total{{job="{job}"}} > 0 and on (job) '
                    f'gatekeeper_rollbacks_total{{job="{job}"}} > 0 and on (job) '
                    f'gatekeeper_actions_refused_total{{job="{job}"}} > 0', timeout_s=20)
                prometheus.wait_for(
                    f'gatekeeper_rule_value{{job="{job}", rule="log-errors", namespace="{dark}"}}'
                    " > 0", timeout_s=20)
                prometheus.wait_for(f'count_over_time(up{{job="{job}"}}[15s]) >= 5',
                                    timeout_s=20)
                # Traefik's series span a whole $__rate_interval (15 s), so rates are full.
                prometheus.wait_for(
                    f'count_over_time(traefik_service_requests_total{{service="{traefik[dark]}",'
                    ' code="200", method="GET"}[15s]) >= 14', timeout_s=30)

            await asyncio.to_thread(scraped)
            yield {"pair": pair, "job": job, "dark": dark, "active": active}
        finally:
            await asyncio.to_thread(prometheus.remove_scrape_job, job, reload=False)
            await asyncio.to_thread(prometheus.set_rule_files, previous_rules)
            stack_exporter.remove(*traefik.values())
            await serve.stop()


def _check_every_query(prometheus: Any, live: dict[str, str]) -> int:
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
    return checked


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(prometheus, live):
    """Each panel target and annotation, variables substituted, answers without error and
    with at least one number, from a real `gatekeeper serve`'s /metrics, the apps' metrics
    and Traefik's; the hidden namespace variables resolve to the right roles; the Traefik
    panels show each namespace's own entry-point traffic."""
    checked = await asyncio.to_thread(_check_every_query, prometheus, live)
    assert checked >= 46
    # The same live setup (it costs a real service and ~20 s): the Traefik panels tell the
    # two namespaces apart by Traefik's service names, though every Traefik series carries
    # Traefik's own namespace label: the dark's 2 % errors at 3 req/s, the active's 0.1 %
    # at 20 req/s.
    await asyncio.to_thread(_traefik_panels_tell_dark_from_active, prometheus, live)


def _traefik_panels_tell_dark_from_active(prometheus: Any, live: dict[str, str]) -> None:
    def values() -> dict[str, dict[str, float]]:
        board = _load(ROOT / "dashboards" / "deployment-validation.json")
        grafana = Grafana(prometheus, board, {"pair": live["pair"]})
        out: dict[str, dict[str, float]] = {}
        for panel in _query_panels(board):
            if not panel["title"].startswith("Traefik"):
                continue
            for target, role in zip(panel["targets"], ("dark", "active"), strict=True):
                assert f"${role}-" in target["expr"], (panel["title"], target["expr"])
                result = grafana.run(target["expr"], instant=True)
                assert len(result) == 1, (panel["title"], result)
                out.setdefault(panel["title"], {})[role] = float(result[0]["value"][1])
        return out

    found = values()
    assert set(found) == {"Traefik: requests per second", "Traefik: 5xx share",
                          "Traefik: latency p99"}
    rate = found["Traefik: requests per second"]
    assert rate["dark"] == pytest.approx(3, rel=0.3)
    assert rate["active"] == pytest.approx(20, rel=0.3)
    errors = found["Traefik: 5xx share"]
    assert errors["dark"] == pytest.approx(0.02, rel=0.5)
    assert errors["active"] < 0.01
    latency = found["Traefik: latency p99"]
    assert latency["dark"] > latency["active"]
