"""The Loki source's contract: the LogQL it sends, the answers it reads, the errors it tells.

No Loki binary can be had here, so these tests run against telemetry_sandbox's LokiStandIn:
a small stand-in HTTP server that answers Loki's documented instant-query API
(`/loki/api/v1/query`, a `vector` of `count_over_time` samples, plain-text 400 parse errors,
401 `no org id` in multi-tenant mode) from real log lines pushed into it, the lines the
synthetic services write. The stand-in parses the queries it is sent, so a query the source
builds wrongly fails here as it would on Loki.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gatekeeper.config import LoadedConfig, PairConfig, RouteRef, load_config
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.rules import LogSpec, Rule, RuleSet, load_rule_set
from gatekeeper.sources.base import Target
from gatekeeper.sources.factory import build_sources, close_sources
from gatekeeper.sources.logs import LineCounter
from gatekeeper.sources.loki import LokiSource, error_queries
from gatekeeper.yamlfiles import ConfigFileError
from telemetry_sandbox.loglines import access_line, error_line, exception_line
from telemetry_sandbox.loki import LokiStandIn, parse_metric_query

ROOT = Path(__file__).resolve().parent.parent
CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
TOKEN = "s3cr3t-loki-token-do-not-log"
BLUE, GREEN = "production-blue", "production-green"


def shipped_log_spec() -> LogSpec:
    """The pattern and exclusions of the shipped pod-log rule (rules/default.yaml)."""
    rule = next(r for r in load_rule_set([ROOT / "rules" / "default.yaml"]).rules
                if r.name == "log-errors")
    assert rule.logs is not None
    return rule.logs


def loki_rule(**fields: Any) -> Rule:
    """The shipped pod-log rule's criteria and patterns, reading Loki instead."""
    base = {"name": "log-errors", "source": "loki", "pass": ["<= 10"], "warning": ["<= 50"],
            "logs": shipped_log_spec().model_dump()}
    return Rule.model_validate({**base, **fields})


def realistic_lines(errors: int, infos: int, *, noise: bool = True) -> list[str]:
    """The synthetic services' access, ERROR and Exception lines, plus lines to exclude."""
    wall = time.time()
    lines = [access_line(wall, "api", "GET", "/api/franchises", 200, 0.012, i)
             for i in range(infos)]
    for i in range(errors):
        make = error_line if i % 2 else (
            lambda w, s, m, p, _st, _l, q: exception_line(w, s, m, p, q))
        lines.append(make(wall, "api", "GET", "/api/standings", 503, 0.8, 1000 + i))
    if noise:  # the shipped rule's exclusions: these must not count
        lines += [f"{wall} INFO batch done error_count=0", "WARN retrying after transient error"]
    return lines


def targets(*namespaces: str) -> list[Target]:
    return [Target(pair="api", namespace=ns, other=namespaces[-1 - i])
            for i, ns in enumerate(namespaces)]


@pytest.fixture
def loki() -> Iterator[LokiStandIn]:
    with LokiStandIn() as server:
        yield server


def push(loki: LokiStandIn, namespace: str, lines: list[str], *, pod: str = "api-0",
         container: str = "api", at: float | None = None, tenant: str = "fake",
         **labels: str) -> None:
    loki.push({"namespace": namespace, "pod": pod, "container": container, **labels}, lines,
              at=at, tenant=tenant)


async def measure(source: LokiSource, rule: Rule, *namespaces: str,
                  window: float = 300) -> dict[str, Any]:
    try:
        return await source.measure(rule, targets(*namespaces), window=window, variables={})
    finally:
        await source.close()


# -- the query ---------------------------------------------------------------------------------


async def test_one_documented_query_covers_every_namespace(loki: LokiStandIn) -> None:
    """A GET of /loki/api/v1/query with a nanosecond `time`, grouping by namespace, the
    rule's pattern as `|~` and each exclusion as `!~`: one error query and one line count
    for all namespaces, however many."""
    namespaces = [f"production-{i}" for i in range(50)]
    await measure(LokiSource(loki.url), loki_rule(), *namespaces)
    assert len(loki.requests) == 2
    spec = shipped_log_spec()
    expected_errors = (
        'sum by (namespace) (count_over_time({namespace=~"' + "|".join(sorted(namespaces))
        + '"} |~ "(?i)\\\\b(error|exception)\\\\b" !~ "(?i)error_count=0" '
        '!~ "(?i)retrying after transient error" [5m]))')
    sent = {r.params["query"] for r in loki.requests}
    assert expected_errors in sent
    assert error_queries(spec, loki_rule().loki or _default_loki(), namespaces, 300)[0] \
        == expected_errors
    for request in loki.requests:
        assert (request.method, request.path) == ("GET", "/loki/api/v1/query")
        assert abs(int(request.params["time"]) / 1e9 - time.time()) < 60
        parse_metric_query(request.params["query"])  # the stand-in's parser accepts it


def _default_loki() -> Any:
    from gatekeeper.rules import LokiSpec

    return LokiSpec()


async def test_stream_matchers_container_and_namespace_label(loki: LokiStandIn) -> None:
    """`loki.stream`, `logs.container` and `loki.namespace_label` shape the selector."""
    rule = loki_rule(loki={"stream": 'app="api-all"', "namespace_label": "k8s_namespace_name"},
                     logs={**shipped_log_spec().model_dump(), "container": "api"})
    for namespace, app, container in ((GREEN, "api-all", "api"), (GREEN, "api-all", "proxy"),
                                      (GREEN, "worker", "api"), (BLUE, "api-all", "api")):
        loki.push({"k8s_namespace_name": namespace, "app": app, "container": container},
                  realistic_lines(errors=3, infos=5, noise=False))
    result = await measure(LokiSource(loki.url), rule, BLUE, GREEN)
    assert (result[GREEN].value, result[BLUE].value) == (3, 3)
    query = loki.requests[0].params["query"]
    assert '{k8s_namespace_name=~"production-blue|production-green", app="api-all", ' \
           'container="api"}' in query
    assert query.startswith("sum by (k8s_namespace_name) ")


# -- the answers -------------------------------------------------------------------------------


async def test_counts_like_the_pod_log_rule_on_the_same_lines(loki: LokiStandIn) -> None:
    """Loki's count per namespace equals the pod-log source's LineCounter on the same real
    lines: same pattern, same exclusions; sample_count is the lines in the window."""
    spec = shipped_log_spec()
    green_lines = realistic_lines(errors=40, infos=200)
    blue_lines = realistic_lines(errors=2, infos=300)
    push(loki, GREEN, green_lines[:120], pod="api-0")
    push(loki, GREEN, green_lines[120:], pod="api-1")
    push(loki, BLUE, blue_lines)
    result = await measure(LokiSource(loki.url), loki_rule(), BLUE, GREEN)
    for namespace, lines in ((GREEN, green_lines), (BLUE, blue_lines)):
        counter = LineCounter(re.compile(spec.pattern), [re.compile(e) for e in spec.exclude])
        counter.feed("\n".join(lines).encode() + b"\n")
        assert result[namespace].value == counter.errors, namespace
        assert result[namespace].sample_count == len(lines)
    assert result[GREEN].value == 40 and result[BLUE].value == 2


async def test_no_errors_is_zero_no_lines_is_no_data_and_the_window_holds(
        loki: LokiStandIn) -> None:
    """Lines without errors are 0 (a value); no lines at all is no data (fail closed); lines
    older than the window do not count."""
    push(loki, BLUE, realistic_lines(errors=0, infos=50))
    push(loki, GREEN, realistic_lines(errors=30, infos=10), at=time.time() - 900)
    result = await measure(LokiSource(loki.url), loki_rule(), BLUE, GREEN, window=300)
    assert result[BLUE].status == "ok" and result[BLUE].value == 0
    assert result[GREEN].status == "no_data"
    assert "no log lines" in result[GREEN].message
    wide = await measure(LokiSource(loki.url), loki_rule(window="20m"), BLUE, GREEN)
    assert wide[GREEN].value == 30


async def test_judged_by_the_evaluator_dark_with_many_errors_fails(loki: LokiStandIn) -> None:
    """Through the real evaluator: 60 error lines in the dark namespace fail `<= 10`/`<= 50`;
    the active namespace with 1 passes."""
    push(loki, GREEN, realistic_lines(errors=60, infos=100))
    push(loki, BLUE, realistic_lines(errors=1, infos=100))
    rule_set = RuleSet(rules=(loki_rule(),))
    source = LokiSource(loki.url)
    pair = PairConfig(name="api", namespaces=(BLUE, GREEN),
                      routes=(RouteRef(name="api-live", namespace="routing"),))
    evaluator = Evaluator(rule_set, {"loki": source}, window=300, source_timeout=5)
    try:
        verdicts = await evaluator.evaluate([Assignment(pair, GREEN, BLUE)])
    finally:
        await source.close()
    verdict = verdicts["api"]
    assert verdict.candidate.results[0].status == "fail"
    assert verdict.candidate.results[0].value == 60
    assert verdict.baseline.results[0].status == "pass"


# -- headers: tenant and token -----------------------------------------------------------------


async def test_tenant_header_is_sent_and_selects_the_tenant() -> None:
    """`X-Scope-OrgID` carries the tenant; another tenant's lines are not counted; without a
    tenant a multi-tenant Loki's 401 `no org id` is an `auth` error, not zero errors."""
    with LokiStandIn(multi_tenant=True) as loki:
        push(loki, GREEN, realistic_lines(errors=7, infos=10), tenant="team-a")
        push(loki, GREEN, realistic_lines(errors=99, infos=10), tenant="team-b")
        result = await measure(LokiSource(loki.url, tenant="team-a"), loki_rule(), GREEN)
        assert result[GREEN].value == 7
        assert {r.headers.get("x-scope-orgid") for r in loki.requests} == {"team-a"}
        missing = await measure(LokiSource(loki.url), loki_rule(), GREEN)
    assert missing[GREEN].status == "error"
    assert missing[GREEN].message.startswith("loki auth: HTTP 401")
    assert "no org id" in missing[GREEN].message


async def test_bearer_token_is_sent_and_never_logged_or_shown(
        caplog: pytest.LogCaptureFixture) -> None:
    """The token goes in `Authorization: Bearer`; a wrong one is an `auth` error; the token
    appears in no log event, no log record and no measurement."""
    with LokiStandIn(require_token=TOKEN) as loki:
        push(loki, GREEN, realistic_lines(errors=4, infos=10))
        with structlog.testing.capture_logs() as events:
            good = await measure(LokiSource(loki.url, token=TOKEN, tenant="t"), loki_rule(),
                                 GREEN)
            bad = await measure(LokiSource(loki.url, token="wrong-" + TOKEN), loki_rule(),
                                GREEN)
        assert {r.headers.get("authorization") for r in loki.requests} == {
            f"Bearer {TOKEN}", f"Bearer wrong-{TOKEN}"}
    assert good[GREEN].value == 4
    assert bad[GREEN].status == "error" and bad[GREEN].message.startswith("loki auth: HTTP 401")
    assert events, "the failed query is logged"
    shown = json.dumps([events, [vars(m) for m in (*good.values(), *bad.values())]],
                       default=str) + caplog.text
    assert TOKEN not in shown


async def test_factory_builds_the_source_from_the_configuration(
        tmp_path: Path, loki: LokiStandIn) -> None:
    """`loki:` in the configuration: url, tenant, bearer_token_file, headers; a loki rule
    without that section is refused naming the field."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    rules = tmp_path / "loki.yaml"
    rules.write_text(
        "rules:\n  - name: log-errors\n    source: loki\n    pass: ['<= 10']\n")
    config_file = tmp_path / "gatekeeper.yaml"
    pairs = ("pairs:\n  - name: api\n    namespaces: [production-blue, production-green]\n"
             "    routes: [{name: api-live, namespace: routing}]\n")
    config_file.write_text(
        f"rule_files: [{rules}]\n{pairs}loki:\n  url: {loki.url}\n  tenant: team-a\n"
        f"  bearer_token_file: {token_file}\n  headers: {{X-Extra: 'yes'}}\n  timeout: 3s\n")
    loaded: LoadedConfig = load_config(config_file)
    sources = build_sources(loaded.config, loaded.rule_set)
    try:
        push(loki, GREEN, realistic_lines(errors=2, infos=3, noise=False), tenant="fake")
        result = await sources["loki"].measure(loaded.rule_set.rules[0], targets(GREEN),
                                               window=300, variables={})
    finally:
        await close_sources(sources)
    assert result[GREEN].value == 2
    headers = loki.requests[-1].headers
    assert headers["x-scope-orgid"] == "team-a"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-extra"] == "yes"

    config_file.write_text(f"rule_files: [{rules}]\n{pairs}")
    with pytest.raises(ConfigFileError) as refused:
        load_config(config_file)
    assert "field 'loki': rules log-errors use source 'loki'" in str(refused.value)


def test_patterns_loki_cannot_run_are_refused_when_rules_load(tmp_path: Path) -> None:
    """RE2 has no lookaround: such a pattern is a rule error with file and line, not a query
    that fails at every evaluation; `loki:` on another source is refused too."""
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: log-errors\n    source: loki\n    pass: ['<= 1']\n"
                    "    logs:\n      pattern: 'error(?! ignored)'\n")
    with pytest.raises(ConfigFileError) as refused:
        load_rule_set([path])
    assert f"{path}:2: rule 'log-errors'" in str(refused.value)
    assert "not supported by Loki" in str(refused.value)
    path.write_text("rules:\n  - name: x\n    source: logs\n    pass: ['<= 1']\n"
                    "    loki: {stream: 'app=\"a\"'}\n")
    with pytest.raises(ConfigFileError, match="works with source 'loki'"):
        load_rule_set([path])


# -- errors, told apart ------------------------------------------------------------------------


async def test_unreachable() -> None:
    """Nothing listening: `unreachable` for every namespace, quickly."""
    result = await measure(LokiSource(CLOSED_PORT_URL, timeout=2), loki_rule(), BLUE, GREEN)
    for namespace in (BLUE, GREEN):
        assert result[namespace].status == "error"
        assert result[namespace].message.startswith("loki unreachable: cannot connect")


async def test_timeout(loki: LokiStandIn) -> None:
    """An answer slower than `timeout` is `timeout`, not no data."""
    loki.delay_s = 1.5
    result = await measure(LokiSource(loki.url, timeout=0.3), loki_rule(), GREEN)
    assert result[GREEN].status == "error"
    assert result[GREEN].message.startswith("loki timeout: no answer")


@pytest.mark.parametrize(("status", "content_type", "body", "reason"), [
    (400, "text/plain", "parse error at line 1, col 12: syntax error: unexpected IDENTIFIER",
     "loki bad_data: parse error at line 1, col 12"),
    (400, "text/plain", "max entries limit per query exceeded, limit > max_entries_limit",
     "loki bad_data: max entries limit"),
    (504, "text/plain", "Request timed out, decrease the duration of the request",
     "loki timeout: Loki gave up (HTTP 504)"),
    (500, "text/plain", "rpc error: code = Internal", "loki http: HTTP 500: rpc error"),
    (200, "text/html", "<html>login</html>", "loki bad_response: not JSON"),
    (200, "application/json", '{"status": "error"}', "loki bad_response: status is not"),
    (200, "application/json",
     '{"status": "success", "data": {"resultType": "streams", "result": []}}',
     "loki bad_response: expected a vector, got 'streams'"),
    (200, "application/json",
     '{"status": "success", "data": {"resultType": "vector", "result": '
     '[{"metric": {"namespace": "production-green"}, "value": [1, "NaN"]}]}}',
     "loki bad_response: result[0] has no count"),
    (200, "application/json",
     '{"status": "success", "data": {"resultType": "vector", "result": [{"metric": 1}]}}',
     "loki bad_response: result[0] is not a sample"),
], ids=["parse", "limit", "loki-timeout", "server", "html", "status", "streams", "nan",
        "shape"])
async def test_bad_answers_are_errors_never_zero(
        loki: LokiStandIn, status: int, content_type: str, body: str, reason: str) -> None:
    """Loki's own refusals and answers that are no LogQL vector are errors with the kind;
    none reads as 'no error lines'."""
    loki.canned = (status, content_type, body)
    result = await measure(LokiSource(loki.url), loki_rule(), GREEN)
    assert result[GREEN].status == "error"
    assert result[GREEN].message.startswith(reason), result[GREEN].message


async def test_the_stand_in_refuses_what_loki_refuses(loki: LokiStandIn) -> None:
    """The stand-in is no pushover: a selector matching everything and unknown syntax are
    Loki's 400s, read by the source as bad_data."""
    source = LokiSource(loki.url)
    try:
        for query in ('sum by (namespace) (count_over_time({namespace=~".*"} [5m]))',
                      'rate({namespace="a"} | json [5m])'):
            with pytest.raises(Exception) as refused:
                await source.instant(query)
            assert getattr(refused.value, "kind", None) == "bad_data", query
    finally:
        await source.close()
