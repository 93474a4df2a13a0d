"""Prometheus source: one PromQL query per rule per evaluation, covering every namespace.

Queries use `${namespaces}` (an alternation of every namespace under evaluation) and
`by (namespace)`, so 1,000 namespaces cost one query, not 1,000. prometheus-api-client is
blocking; its calls run in a bounded thread pool. Failures are told apart: unreachable,
timeout, and Prometheus's own `bad_data` / `execution` / `timeout` errors.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import requests
import structlog
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from gatekeeper.blocking import BlockingPool
from gatekeeper.durations import promql_duration
from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule
from gatekeeper.sources.base import CYCLE, Target
from gatekeeper.templating import namespace_regex, render, template_variables

log = structlog.get_logger(__name__)


class PrometheusQueryError(Exception):
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


class PrometheusSource:
    """Answers `source: prometheus` rules."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        pool: BlockingPool | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = PrometheusConnect(
            url=self.url, headers=dict(headers or {}), disable_ssl=False, timeout=timeout,
            method="POST",
            # Fail fast: one quick connect retry, never a retry on an answered error; the
            # evaluation loop is the retry, and a down server must read as `unknown` quickly.
            retry=Retry(total=1, connect=1, read=0, status=0, backoff_factor=0.1,
                        status_forcelist=()),
        )
        self._cycle = -1
        self._answers: dict[str, asyncio.Task[list[dict[str, Any]]]] = {}
        self._owns_pool = pool is None
        self._pool = pool or BlockingPool(max_workers=8, name="prometheus")
        self.queries_sent = 0

    async def close(self) -> None:
        """Release the HTTP session and, if owned, the thread pool."""
        self._client.close()
        if self._owns_pool:
            self._pool.shutdown()

    # -- querying ---------------------------------------------------------------------------

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            return func(*args, **kwargs)  # type: ignore[no-any-return]
        except requests.exceptions.Timeout as exc:
            raise PrometheusQueryError("timeout", f"no answer from {self.url} within "
                                       f"{self.timeout:g}s") from exc
        except requests.exceptions.ConnectionError as exc:
            raise PrometheusQueryError("unreachable", f"cannot connect to {self.url}") from exc
        except PrometheusApiClientException as exc:
            raise _api_error(exc) from exc
        except (requests.exceptions.RequestException, ValueError) as exc:
            raise PrometheusQueryError("http", f"{type(exc).__name__}: {exc}") from exc

    async def instant(self, query: str) -> list[dict[str, Any]]:
        """Run an instant query; PrometheusQueryError on failure.

        Within one evaluation cycle an identical query is sent once and its answer shared
        (the shipped rules pair an absolute and a relative rule on the same query).
        """
        cycle = CYCLE.get()
        if cycle != self._cycle:
            self._cycle, self._answers = cycle, {}
        task = self._answers.get(query) if cycle else None
        if task is None:
            self.queries_sent += 1
            task = asyncio.ensure_future(
                self._pool.run(self._call, self._client.custom_query, query))
            if cycle:
                self._answers[query] = task
        return await asyncio.shield(task)

    async def range(self, query: str, *, window: float, step: float) -> list[dict[str, Any]]:
        """Run a range query over the last `window` seconds."""
        from datetime import UTC, datetime

        self.queries_sent += 1
        end = time.time()
        return await self._pool.run(
            self._call,
            self._client.custom_query_range,
            query,
            start_time=datetime.fromtimestamp(end - window, tz=UTC),
            end_time=datetime.fromtimestamp(end, tz=UTC),
            step=f"{max(step, 1.0):g}s",
        )

    # -- the Source protocol ------------------------------------------------------------------

    async def measure(
        self,
        rule: Rule,
        targets: Sequence[Target],
        *,
        window: float,
        variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        """One query per group of targets that render the same query (normally one)."""
        if rule.query is None:
            return {t.namespace: Measurement.error("rule has no query") for t in targets}
        window = rule.window or window
        out: dict[str, Measurement] = {}
        for query, group in _group_targets(rule.query, targets, window, variables).items():
            out.update(await self._measure_group(rule, query, group, window, variables))
        return out

    async def _measure_group(
        self, rule: Rule, query: str, group: list[Target], window: float,
        variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        wanted = {t.namespace for t in group}
        try:
            if rule.compare is not None:
                series = await self.range(query, window=window, step=rule.compare.step)
                values = _range_by_namespace(series)
            else:
                values = _instant_by_namespace(await self.instant(query))
            counts: dict[str, float] = {}
            if rule.samples_query:
                samples_query = _render_for(rule.samples_query, group, window, variables)
                counts = {ns: v[0] for ns, v in _instant_by_namespace(
                    await self.instant(samples_query)).items() if v}
        except PrometheusQueryError as exc:
            log.warning("prometheus query failed", rule=rule.name, kind=exc.kind, error=str(exc))
            return {ns: Measurement.error(f"prometheus {exc}", query=query) for ns in wanted}
        out = {}
        for namespace in wanted:
            points = values.get(namespace)
            count = counts.get(namespace)
            if not points:
                out[namespace] = Measurement.no_data(
                    f"prometheus returned no series for namespace {namespace}", query=query,
                    sample_count=count,
                )
                continue
            finite = [p for p in points if math.isfinite(p)]
            if rule.compare is not None:
                if not finite:
                    out[namespace] = Measurement.no_data("all samples are NaN/Inf", query=query)
                    continue
                value = sum(finite) / len(finite)
                out[namespace] = Measurement.ok(
                    value, query=query, samples=tuple(finite),
                    sample_count=count if count is not None else float(len(finite)),
                )
                continue
            value = points[0]
            if not math.isfinite(value):
                out[namespace] = Measurement.no_data(
                    f"value is {value} (for a ratio: no traffic in the window)", query=query,
                    sample_count=count,
                )
                continue
            out[namespace] = Measurement.ok(value, query=query, sample_count=count)
        return out


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


def _as_float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _instant_by_namespace(result: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for item in result:
        namespace = item.get("metric", {}).get("namespace")
        value = item.get("value")
        if namespace is None or not value:
            continue
        out[namespace].append(_as_float(value[1]))
    return dict(out)


def _range_by_namespace(result: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for item in result:
        namespace = item.get("metric", {}).get("namespace")
        if namespace is None:
            continue
        out[namespace].extend(_as_float(v[1]) for v in item.get("values", []))
    return dict(out)


def _api_error(exc: PrometheusApiClientException) -> PrometheusQueryError:
    """Turn `HTTP Status Code 400 (b'{"status":"error","errorType":"bad_data",...}')`."""
    text = str(exc)
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        raw = text[start:end + 1]
        try:
            body = json.loads(raw.encode().decode("unicode_escape"))
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and body.get("errorType"):
            return PrometheusQueryError(str(body["errorType"]), str(body.get("error", "")))
    return PrometheusQueryError("http", text[:300])
