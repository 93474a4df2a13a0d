"""Prometheus source: one PromQL query per rule per evaluation, covering every namespace.

Queries use `${namespaces}` (an alternation of every namespace under evaluation) and
`by (namespace)`, so 1,000 namespaces cost one query, not 1,000. Requests are blocking; the
calls run in a bounded thread pool. Failures are told apart: unreachable, timeout, and
Prometheus's own `bad_data` / `execution` / `timeout` errors. Ambiguous answers fail closed:
a partial answer (`warnings`) is an error unless the rule has `accept_partial`, several
series for one namespace are an error unless the rule has `series: worst`, and samples
stamped too far from gatekeeper's clock are no data.

Over 450 lines on purpose: the checks that make an answer fail closed are read with the
queries and the client whose answers they judge.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from gatekeeper import comparing, errors, sequential
from gatekeeper.blocking import BlockingPool
from gatekeeper.durations import promql_duration
from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule
from gatekeeper.sources.base import CYCLE, Target
from gatekeeper.templating import namespace_regex, render, template_variables

log = structlog.get_logger(__name__)
DEFAULT_MAX_SAMPLE_AGE = 300.0
"""Seconds a sample's timestamp may be from gatekeeper's clock before it is no data."""


class PrometheusQueryError(errors.SourceError):
    """A query failed; `kind` is unreachable, timeout, bad_data, execution, or http."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def selector_to_promql(selector: str | None) -> str:
    """`app=api,tier!=db,env in (a,b)` -> `app="api",tier!="db",env=~"a|b"` (empty if None)."""
    if not selector:
        return ""
    matchers = []
    for part in _split_selector(selector):
        part = part.strip()
        if " notin " in part or " in " in part:
            negated = " notin " in part
            key, values = part.split(" notin " if negated else " in ", 1)
            options = "|".join(v.strip() for v in values.strip().strip("()").split(","))
            matchers.append(f'{key.strip()}{"!~" if negated else "=~"}"{options}"')
        elif "!=" in part:
            key, value = part.split("!=", 1)
            matchers.append(f'{key.strip()}!="{value.strip()}"')
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            matchers.append(f'{key.strip()}="{value.strip()}"')
        elif part.startswith("!"):
            matchers.append(f'{part[1:].strip()}=""')
        elif part:
            matchers.append(f'{part}!=""')
    return ",".join(matchers)


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


@dataclass(frozen=True)
class Answer:
    """Prometheus's `data.result` and the `warnings` that came with it (a partial answer)."""

    result: list[Any]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Point:
    """One value of one series, with its timestamp and the series' labels."""

    labels: Mapping[str, str]
    at: float
    value: float


class PrometheusSource:
    """Answers `source: prometheus` rules.

    Instant queries carry no `time=`: Prometheus chooses the evaluation time, so
    gatekeeper's clock cannot move the query. A sample stamped more than `max_sample_age`
    from gatekeeper's clock (in the past or the future) is no data.
    """

    name = "prometheus"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        pool: BlockingPool | None = None,
        max_sample_age: float = DEFAULT_MAX_SAMPLE_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_sample_age = max_sample_age
        self._clock = clock
        self._headers = dict(headers or {})
        self._session = requests.Session()
        # Fail fast: one quick connect retry, never a retry on an answered error; the
        # evaluation loop is the retry, and a down server must read as `unknown` quickly.
        self._session.mount(self.url, HTTPAdapter(max_retries=Retry(
            total=1, connect=1, read=0, status=0, backoff_factor=0.1, status_forcelist=())))
        self._cycle = -1
        self._answers: dict[str, asyncio.Task[Answer]] = {}
        self._owns_pool = pool is None
        self._pool = pool or BlockingPool(max_workers=8, name="prometheus")
        self.queries_sent = 0

    async def close(self) -> None:
        """Release the HTTP session and, if owned, the thread pool."""
        self._session.close()
        if self._owns_pool:
            self._pool.shutdown()

    # -- querying ---------------------------------------------------------------------------

    def _post(self, path: str, form: Mapping[str, str]) -> Answer:
        """POST a query form; the answer with its warnings, or PrometheusQueryError."""
        try:
            response = self._session.post(f"{self.url}{path}", data=dict(form),
                                          headers=self._headers, timeout=self.timeout)
        except requests.exceptions.Timeout as exc:
            raise PrometheusQueryError("timeout", f"no answer from {self.url} within "
                                       f"{self.timeout:g}s") from exc
        except requests.exceptions.ConnectionError as exc:
            raise PrometheusQueryError("unreachable", f"cannot connect to {self.url}") from exc
        except requests.exceptions.RequestException as exc:
            raise PrometheusQueryError("http", f"{type(exc).__name__}: {exc}") from exc
        return parse_answer(response.status_code, response.text)

    async def query(self, form: Mapping[str, str], path: str = "/api/v1/query") -> Answer:
        """Send one query form (no sharing); PrometheusQueryError on failure."""
        self.queries_sent += 1
        return await self._pool.run(self._post, path, form)

    async def instant(self, query: str) -> Answer:
        """Run an instant query; PrometheusQueryError on failure.

        Within one evaluation cycle an identical query is sent once and its answer shared
        (the shipped rules pair an absolute and a relative rule on the same query).
        """
        cycle = CYCLE.get()
        if cycle != self._cycle:
            self._cycle, self._answers = cycle, {}
        task = self._answers.get(query) if cycle else None
        if task is None:
            task = asyncio.ensure_future(self.query({"query": query}))
            if cycle:
                self._answers[query] = task
        return await asyncio.shield(task)

    async def range(self, query: str, *, window: float, step: float) -> Answer:
        """The last `window` of `query` every `step`, as of Prometheus's own clock.

        Sent as an instant subquery (`(query)[window:step]`) rather than a range query with
        start and end: Prometheus chooses the evaluation time, so the samples' timestamps
        are its own and a skew of gatekeeper's clock shows up in the staleness check.
        """
        subquery = f"({query})[{promql_duration(window)}:{promql_duration(max(step, 1.0))}]"
        return await self.instant(subquery)

    # -- the Source protocol ------------------------------------------------------------------

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """One query per group of targets that render the same query (normally one)."""
        window = rule.window or window
        if rule.count_comparison is not None:
            return await self._measure_counts(rule, targets, window, variables)
        if rule.query is None:
            return {t.namespace: Measurement.error("rule has no query") for t in targets}
        out: dict[str, Measurement] = {}
        for query, group in _group_targets(rule.query, targets, window, variables).items():
            out.update(await self._measure_group(rule, query, group, window, variables))
        return out

    async def _measure_counts(
        self, rule: Rule, targets: Sequence[Target], window: float,
        variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        """Counts for a sequential comparison: one query per count and span for all namespaces
        (targets judged over the same span share it), plus the baseline window's counts."""
        spans: dict[float, list[Target]] = defaultdict(list)
        for target in targets:
            spans[_whole_seconds(target.span if target.span is not None else window)].append(
                target)
        out: dict[str, Measurement] = {}
        answers = await asyncio.gather(*(
            self._counts_over(rule, group, span, variables) for span, group in spans.items()))
        for answer in answers:
            out.update(answer)
        return out

    async def _counts_over(
        self, rule: Rule, group: list[Target], span: float, variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        spec = rule.count_comparison
        if spec is None:
            return {}
        templates = ({"bad": rule.rate.bad, "total": rule.rate.total} if rule.rate is not None
                     else {"le": rule.latency.bucket_query()} if rule.latency is not None
                     else {})
        spans = {"": span}
        if spec.baseline_window is not None:
            spans[comparing.BASELINE] = _whole_seconds(max(spec.baseline_window, span))
        jobs = [(prefix, name, _render_for(template, group, length, variables))
                for prefix, length in spans.items() for name, template in templates.items()]
        wanted = {t.namespace for t in group}
        shown = "; ".join(query for prefix, _, query in jobs if not prefix)
        try:
            answers = await asyncio.gather(*(self.instant(query) for _, _, query in jobs))
        except PrometheusQueryError as exc:
            return _query_failed(rule, exc, wanted, shown)
        warnings = tuple(w for answer in answers for w in answer.warnings)
        if (refused := _partial_refused(rule, warnings, wanted, shown)) is not None:
            return refused
        now = self._clock()
        counts: dict[str, dict[str, float]] = {ns: {} for ns in wanted}
        stale: set[str] = set()
        for (prefix, name, _), answer in zip(jobs, answers, strict=True):
            for namespace, points in _points_by_namespace(answer.result).items():
                if namespace not in counts:
                    continue
                for point in points:
                    if abs(point.at - now) > self.max_sample_age:
                        stale.add(namespace)
                        continue
                    # Several series of one namespace (by pod, by route...) add up: counts.
                    key = (f"{prefix}{name}" if name != "le"
                           else f"{prefix}le:{point.labels.get('le')}")
                    counts[namespace][key] = counts[namespace].get(key, 0.0) + point.value
        out = {}
        for namespace in wanted:
            if namespace in stale:
                out[namespace] = Measurement.no_data(
                    f"prometheus counts for namespace {namespace} are stamped more than "
                    f"{self.max_sample_age:g}s from gatekeeper's clock: stale or clock skew",
                    query=shown)
                continue
            out[namespace] = _count_measurement(rule, counts[namespace], shown, span)
        return out

    async def _measure_group(
        self, rule: Rule, query: str, group: list[Target], window: float,
        variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        wanted = {t.namespace for t in group}
        samples_query = (_render_for(rule.samples_query, group, window, variables)
                         if rule.samples_query else None)
        try:
            if rule.compare is not None:
                answer = await self.range(query, window=window, step=rule.compare.step)
            else:
                answer = await self.instant(query)
            counted = await self.instant(samples_query) if samples_query else None
        except PrometheusQueryError as exc:
            return _query_failed(rule, exc, wanted, query)
        warnings = (*answer.warnings, *(counted.warnings if counted else ()))
        if (refused := _partial_refused(rule, warnings, wanted, query)) is not None:
            return refused
        now = self._clock()
        # A range's points reach back one window; an instant's are stamped "now".
        oldest = now - self.max_sample_age - (window if rule.compare is not None else 0.0)
        youngest = now + self.max_sample_age
        values = _points_by_namespace(answer.result)
        counts = _points_by_namespace(counted.result) if counted else {}
        out = {}
        for namespace in wanted:
            out[namespace] = self._judgeable(
                rule, query, samples_query or "", values.get(namespace, []),
                counts.get(namespace), namespace=namespace, oldest=oldest, youngest=youngest)
        return out

    def _judgeable(
        self, rule: Rule, query: str, samples_query: str, points: list[Point],
        count_points: list[Point] | None, *, namespace: str, oldest: float, youngest: float,
    ) -> Measurement:
        """One namespace's points as a Measurement: one series, fresh, finite."""
        if not points:
            return Measurement.no_data(
                f"prometheus returned no series for namespace {namespace}", query=query)
        fresh = [p for p in points if oldest <= p.at <= youngest]
        if not fresh:
            stamp = points[-1].at - self._clock()
            when = f"{-stamp:.0f}s in the past" if stamp < 0 else f"{stamp:.0f}s in the future"
            return Measurement.no_data(
                f"prometheus samples for namespace {namespace} are stamped {when} (more than "
                f"{self.max_sample_age:g}s from gatekeeper's clock): stale or clock skew",
                query=query)
        series = _series(fresh)
        count: float | None = None
        if count_points:
            counts = _series(count_points)
            if len(counts) > 1 and rule.series == "single":
                return _several(samples_query, namespace, counts)
            # The worst series is judged: the smallest count is the one that backs it at least.
            count = min(values[-1] for values in counts.values())
            if not math.isfinite(count):
                count = 0.0  # NaN traffic is no traffic: min_samples must not pass on it
        if len(series) > 1 and rule.series == "single":
            return _several(query, namespace, series)
        if rule.compare is not None:
            chosen = _worst(series, rule, lambda vs: sum(vs) / len(vs) if vs else math.nan)
            finite = [v for v in series[chosen] if math.isfinite(v)]
            if not finite:
                return Measurement.no_data("all samples are NaN/Inf", query=query)
            return Measurement.ok(
                sum(finite) / len(finite), query=query, samples=tuple(finite),
                sample_count=count if count is not None else float(len(finite)),
                message=_chosen_note(series, chosen))
        chosen = _worst(series, rule, lambda vs: vs[-1])
        value = series[chosen][-1]
        if not math.isfinite(value):
            return Measurement.no_data(
                f"value is {value} (for a ratio: no traffic in the window)", query=query,
                sample_count=count)
        return Measurement.ok(value, query=query, sample_count=count,
                              message=_chosen_note(series, chosen))


def _query_failed(rule: Rule, exc: PrometheusQueryError, wanted: Iterable[str],
                  query: str) -> dict[str, Measurement]:
    """Every wanted namespace's error when a query of the rule failed (logged once)."""
    log.warning("prometheus query failed", rule=rule.name, kind=exc.kind, error=str(exc))
    return {ns: Measurement.error(f"prometheus {exc}", query=query) for ns in wanted}


def _partial_refused(rule: Rule, warnings: Sequence[str], wanted: Iterable[str],
                     query: str) -> dict[str, Measurement] | None:
    """Every wanted namespace's error when Prometheus answered partially (`warnings`) and the
    rule does not `accept_partial`; None when the answer may be judged."""
    if not warnings or rule.accept_partial:
        return None
    message = (f"prometheus answered a partial result (warnings: "
               f"{'; '.join(warnings)[:300]}); set accept_partial to judge it")
    log.warning("prometheus partial answer", rule=rule.name, warnings=warnings)
    return {ns: Measurement.error(message, query=query) for ns in wanted}


def parse_answer(status: int, text: str) -> Answer:
    """A Prometheus HTTP answer as an Answer; PrometheusQueryError for anything else."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("status") == "error":
        raise PrometheusQueryError(str(body.get("errorType") or "http"),
                                   str(body.get("error", ""))[:300])
    if not errors.succeeded(status):
        raise PrometheusQueryError("http", f"HTTP Status Code {status} ({text[:200]!r})")
    data = body.get("data") if isinstance(body, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(
            result, list):
        raise PrometheusQueryError("http", f"not a Prometheus answer: {text[:200]!r}")
    warnings = body.get("warnings") or []
    if not isinstance(warnings, list):
        warnings = [warnings]
    return Answer(result=result, warnings=tuple(str(w) for w in warnings))


SeriesKey = tuple[tuple[str, str], ...]


def _series(points: Sequence[Point]) -> dict[SeriesKey, list[float]]:
    """Values per distinct label set, in time order."""
    out: dict[SeriesKey, list[float]] = {}
    for point in points:
        out.setdefault(tuple(sorted(point.labels.items())), []).append(point.value)
    return out


def _labels_text(key: SeriesKey) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in key if k != "namespace") + "}"


def _several(query: str, namespace: str, series: Mapping[SeriesKey, list[float]]
             ) -> Measurement:
    shown = ", ".join(_labels_text(key) for key in list(series)[:3])
    return Measurement.error(
        f"query returned {len(series)} series for namespace {namespace} ({shown}), one "
        f"expected: aggregate with `by (namespace)`, or set `series: worst` on the rule; "
        f"query: {query[:300]}", query=query)


def _worst(series: Mapping[SeriesKey, list[float]], rule: Rule,
           value_of: Callable[[list[float]], float]) -> SeriesKey:
    """The only series, or the worst one by the rule's direction (NaN counts as worst)."""
    keys = list(series)
    if len(keys) == 1:
        return keys[0]
    higher_worse = rule.worst_is_highest is not False

    def badness(key: SeriesKey) -> float:
        value = value_of(series[key])
        if not math.isfinite(value):
            return math.inf
        return value if higher_worse else -value

    return max(keys, key=badness)


def _chosen_note(series: Mapping[SeriesKey, list[float]], chosen: SeriesKey) -> str:
    if len(series) == 1:
        return ""
    return f"worst of {len(series)} series: {_labels_text(chosen)}"


def _whole_seconds(seconds: float) -> float:
    """Spans round down to whole seconds (never reaching back before the dark was ready)."""
    return float(max(1, math.floor(seconds)))


def _count_measurement(
    rule: Rule, counts: dict[str, float], query: str, span: float
) -> Measurement:
    """A namespace's counts as a Measurement; value is its rate or quantile estimate."""
    if rule.rate is not None:
        for prefix in ("", comparing.BASELINE):
            # No series of bad events (no 5xx ever) is zero bad events when events exist.
            if f"{prefix}total" in counts:
                counts.setdefault(f"{prefix}bad", 0.0)
        total = counts.get("total")
        if total is None:
            return Measurement.no_data(f"prometheus returned no event counts over "
                                       f"{promql_duration(span)}", query=query)
        value = counts["bad"] / total if total > 0 else math.nan
        return Measurement.ok(value, query=query, sample_count=total, counts=counts)
    own = {k: v for k, v in counts.items() if not k.startswith(comparing.BASELINE)}
    if not own:
        return Measurement.no_data(f"prometheus returned no histogram buckets over "
                                   f"{promql_duration(span)}", query=query)
    try:
        hist = comparing.histogram(own)
    except ValueError as exc:
        return Measurement.error(f"not a usable histogram: {exc}", query=query, counts=counts)
    quantile = rule.latency.quantile if rule.latency is not None else 0.99
    value = sequential.quantile_at_rank(hist, quantile * hist.total) if hist.total > 0 else (
        math.nan)
    return Measurement.ok(value, query=query, sample_count=hist.total, counts=counts)


def _render_for(
    template: str, group: Sequence[Target], window: float, variables: Mapping[str, str]
) -> str:
    first = group[0]
    values = {
        **variables,
        **first.variables,
        "namespaces": namespace_regex(t.namespace for t in group),
        "namespace": first.namespace,
        "window": promql_duration(window),
        "selector": selector_to_promql(first.selector),
        "pair": first.pair,
    }
    return render(template, values)


def _group_targets(
    template: str, targets: Sequence[Target], window: float, variables: Mapping[str, str]
) -> dict[str, list[Target]]:
    """Targets sharing everything the template uses but `namespaces` share one query."""
    used = template_variables(template)
    per_target = "namespace" in used
    groups: dict[tuple[Any, ...], list[Target]] = defaultdict(list)
    for target in targets:
        key: tuple[Any, ...] = (
            (target.namespace,) if per_target else
            tuple(
                target.selector if name == "selector" else
                target.pair if name == "pair" else
                target.variables.get(name)
                for name in sorted(used - {"namespaces", "window"})
            )
        )
        groups[key].append(target)
    return {_render_for(template, group, window, variables): group for group in groups.values()}


def _as_float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _points_by_namespace(result: list[Any]) -> dict[str, list[Point]]:
    """Instant (`value`) or range (`values`) results as points per namespace label."""
    out: dict[str, list[Point]] = defaultdict(list)
    for item in result:
        if not isinstance(item, dict):
            continue
        labels = item.get("metric")
        if not isinstance(labels, dict) or not isinstance(labels.get("namespace"), str):
            continue
        pairs = item.get("values") if "values" in item else [item.get("value")]
        for pair in pairs or ():
            if isinstance(pair, list | tuple) and len(pair) == 2:
                out[labels["namespace"]].append(
                    Point(labels, _as_float(pair[0]), _as_float(pair[1])))
    return dict(out)
