"""Loki source: error lines per namespace from LogQL, one query for every namespace.

For clusters that ship pod logs to Loki (the `logs` source reads them from the Kubernetes API
instead). Per rule and evaluation, two instant queries over the window, each covering every
namespace under evaluation:

    sum by (namespace) (count_over_time({namespace=~"a|b"} |~ "<pattern>" !~ "<exclude>" [5m]))
    sum by (namespace) (count_over_time({namespace=~"a|b"} [5m]))

The first counts error lines (the rule's `logs.pattern` without its `logs.exclude` lines,
as the pod-log rule counts them); the second counts all lines, so a namespace without errors
(0) is told apart from one without logs (no data). Failures are told apart like the
Prometheus source's: unreachable, timeout, Loki's own `bad_data` (its 400: a parse error or
a limit), `auth` (401/403: token or tenant), `http` (another status) and `bad_response`
(an answer that is not a LogQL vector). The bearer token is sent, never logged.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import structlog

from gatekeeper.durations import promql_duration
from gatekeeper.errors import SourceError, succeeded
from gatekeeper.measurements import Measurement
from gatekeeper.rules import LogSpec, LokiSpec, Rule
from gatekeeper.sources.base import Target
from gatekeeper.sources.sessions import LazySession
from gatekeeper.templating import namespace_regex

log = structlog.get_logger(__name__)
QUERY_PATH = "/loki/api/v1/query"
_BODY_SHOWN = 200


class LokiQueryError(SourceError):
    """A query failed; `kind` is unreachable, timeout, bad_data, auth, http or bad_response."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def logql_string(value: str) -> str:
    """A LogQL double-quoted string literal (Go's escaping) holding `value`."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def error_queries(
    spec: LogSpec, loki: LokiSpec, namespaces: Sequence[str], window: float
) -> tuple[str, str]:
    """(error lines query, all lines query) over `window` seconds for `namespaces`."""
    label = loki.namespace_label
    matchers = [f"{label}=~{logql_string(namespace_regex(namespaces))}"]
    if loki.stream.strip():
        matchers.append(loki.stream.strip())
    if spec.container:
        matchers.append(f"container={logql_string(spec.container)}")
    selector = "{" + ", ".join(matchers) + "}"
    filters = [f"|~ {logql_string(spec.pattern)}"]
    filters += [f"!~ {logql_string(pattern)}" for pattern in spec.exclude]
    duration = promql_duration(window)
    errors = (f"sum by ({label}) (count_over_time({selector} {' '.join(filters)} "
              f"[{duration}]))")
    lines = f"sum by ({label}) (count_over_time({selector} [{duration}]))"
    return errors, lines


def vector_by_label(answer: Any, label: str) -> dict[str, float]:
    """A Loki instant-query answer as {label value: number}; LokiQueryError if it is none."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise LokiQueryError("bad_response", f"status is not success: {str(answer)[:80]}")
    data = answer.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        kind = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise LokiQueryError("bad_response", f"expected a vector, got {kind!r}")
    result = data.get("result")
    if not isinstance(result, list):
        raise LokiQueryError("bad_response", "data.result is not a list")
    out: dict[str, float] = {}
    for index, item in enumerate(result):
        metric = item.get("metric") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if (not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2
                or not isinstance(value[1], str)):
            raise LokiQueryError("bad_response", f"result[{index}] is not a sample: "
                                 f"{str(item)[:80]}")
        try:
            number = float(value[1])
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise LokiQueryError("bad_response", f"result[{index}] has no count: {value[1]!r}")
        name = metric.get(label)
        if isinstance(name, str):
            out[name] = out.get(name, 0.0) + number
    return out


class LokiSource:
    """Answers `source: loki` rules; value = error lines, sample_count = lines in the window."""

    name = "loki"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        tenant: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = dict(headers or {})
        if tenant:
            self._headers["X-Scope-OrgID"] = tenant
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._client = LazySession(session)
        self.queries_sent = 0

    async def instant(self, query: str) -> Any:
        """Run one LogQL instant query at now; the parsed JSON, or LokiQueryError."""
        self.queries_sent += 1
        params = {"query": query, "time": str(time.time_ns())}
        try:
            async with self._client().get(
                f"{self.url}{QUERY_PATH}", params=params, headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                body = await response.text(errors="replace")
                status = response.status
        except TimeoutError as exc:
            raise LokiQueryError("timeout", f"no answer from {self.url} within "
                                 f"{self.timeout:g}s") from exc
        except aiohttp.ClientConnectionError as exc:
            raise LokiQueryError("unreachable", f"cannot connect to {self.url}") from exc
        except aiohttp.ClientError as exc:
            raise LokiQueryError("http", f"{type(exc).__name__}") from exc
        if not succeeded(status):
            raise _status_error(status, body)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise LokiQueryError("bad_response", f"not JSON: {body[:80]!r}") from exc

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """Two queries for all target namespaces; the rule's `window` overrides `window`."""
        spec = rule.logs or LogSpec.model_validate({})
        loki = rule.loki or LokiSpec.model_validate({})
        window = rule.window or window
        namespaces = sorted({t.namespace for t in targets})
        try:
            errors_query, lines_query = error_queries(spec, loki, namespaces, window)
        except ValueError as exc:
            return {ns: Measurement.error(f"loki: {exc}") for ns in namespaces}
        try:
            errors_answer, lines_answer = await asyncio.gather(
                self.instant(errors_query), self.instant(lines_query))
            errors = vector_by_label(errors_answer, loki.namespace_label)
            lines = vector_by_label(lines_answer, loki.namespace_label)
        except LokiQueryError as exc:
            log.warning("loki query failed", rule=rule.name, kind=exc.kind, error=str(exc))
            return {ns: Measurement.error(f"loki {exc}", query=errors_query)
                    for ns in namespaces}
        out = {}
        for namespace in namespaces:
            scanned = lines.get(namespace, 0.0)
            if scanned <= 0:
                out[namespace] = Measurement.no_data(
                    f"loki: no log lines for {loki.namespace_label}={namespace} in the window",
                    query=errors_query)
                continue
            found = errors.get(namespace, 0.0)
            out[namespace] = Measurement.ok(
                found, query=errors_query, sample_count=scanned,
                message=f"{found:g} error line{'s' * (found != 1)} of {scanned:g} lines (loki)")
        return out

    async def close(self) -> None:
        """Close the HTTP session if this source created it."""
        await self._client.close()


def _status_error(status: int, body: str) -> LokiQueryError:
    """Loki answers errors as plain text (http.Error): 400 parse/limit, 504 its timeout."""
    text = " ".join(body.split())[:_BODY_SHOWN]
    if status == 400:
        return LokiQueryError("bad_data", text)
    if status in (401, 403):
        return LokiQueryError("auth", f"HTTP {status} (token or X-Scope-OrgID tenant): {text}")
    if status == 504:
        return LokiQueryError("timeout", f"Loki gave up (HTTP 504): {text}")
    return LokiQueryError("http", f"HTTP {status}: {text}")
