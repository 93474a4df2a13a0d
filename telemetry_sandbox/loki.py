"""LokiStandIn: a small stand-in for Loki's query API, answering from real log lines.

No Loki binary can be had on these machines (it is not packaged by Debian or PyPI), so the
tests of gatekeeper's Loki source run against this stand-in instead. It is deliberately
narrow and says so: it stores pushed lines per stream (a label set) and answers Loki's
documented instant query endpoint, `GET|POST /loki/api/v1/query` (`query`, `time` as a
nanosecond or second Unix epoch), for the LogQL metric queries gatekeeper sends:

    sum by (<labels>) (count_over_time({<matchers>} <line filters> [<range>]))
    count_over_time({<matchers>} <line filters> [<range>])

with label matchers `=`, `!=`, `=~`, `!~` (regexes fully anchored, as in Loki), line filters
`|=`, `!=`, `|~`, `!~` (regexes unanchored), double-quoted (Go escapes) or backtick strings.
Anything else is refused as Loki refuses a query it cannot parse: HTTP 400 with a plain-text
`parse error ...` body. Like Loki it answers a `vector` in which streams without matching
lines are absent, refuses a selector whose every matcher matches the empty string, and, in
multi-tenant mode, answers 401 `no org id` without an `X-Scope-OrgID` header. A gateway's
bearer token can be required. Faults for tests: a delay, or a canned answer.

Regular expressions are Python's, which agree with Go's RE2 on the patterns gatekeeper
ships (RE2 refuses lookaround and backreferences; gatekeeper's rule validation does too).
This package must not import `gatekeeper`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from telemetry_sandbox.loopback import LOOPBACK_HOST
from telemetry_sandbox.threaded_http import QuietHandler, ThreadedHTTPService

__all__ = ["LogQLParseError", "LokiStandIn", "RecordedRequest", "parse_metric_query"]

QUERY_PATH = "/loki/api/v1/query"
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<op>\|=|\|~|!=|!~|=~|=)
  | (?P<punct>[{}()\[\],])
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+)
  | (?P<ident>[a-zA-Z_][a-zA-Z0-9_]*)
""", re.VERBOSE)


class LogQLParseError(ValueError):
    """A query outside the supported subset, worded like Loki's parse errors."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a stream selector."""

    label: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Loki's semantics: a missing label is the empty string; regexes are anchored."""
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class LineFilter:
    """One line filter: `|=` contains, `!=` does not, `|~` / `!~` regex search."""

    op: str
    value: str

    def keeps(self, line: str) -> bool:
        """True when the line passes this filter."""
        if self.op == "|=":
            return self.value in line
        if self.op == "!=":
            return self.value not in line
        found = re.search(self.value, line) is not None
        return found if self.op == "|~" else not found


@dataclass(frozen=True)
class MetricQuery:
    """`sum by (group) (count_over_time({matchers} filters [range_s]))`."""

    matchers: tuple[Matcher, ...]
    filters: tuple[LineFilter, ...]
    range_s: float
    group: tuple[str, ...] | None  # None: no aggregation, one sample per stream


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent (for contract tests)."""

    method: str
    path: str
    params: Mapping[str, str]
    headers: Mapping[str, str]


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    try:
        value = json.loads(token)  # Go's escapes in a double-quoted string are JSON's
    except ValueError as exc:
        raise LogQLParseError(f"parse error : invalid string {token}") from exc
    return str(value)


def _tokens(query: str) -> list[tuple[str, str, int]]:
    out, position = [], 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None:
            raise LogQLParseError(f"parse error at line 1, col {position + 1}: syntax error: "
                                  f"unexpected {query[position]!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            out.append((kind, match.group(0), position + 1))
        position = match.end()
    return out


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _tokens(query)
        self.index = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "", 0)

    def take(self, kind: str, text: str | None = None) -> str:
        token_kind, token_text, col = self.peek()
        if token_kind != kind or (text is not None and token_text != text):
            shown = token_text or "end of input"
            raise LogQLParseError(f"parse error at line 1, col {col}: syntax error: "
                                  f"unexpected {shown}, expecting {text or kind}")
        self.index += 1
        return token_text

    def query(self) -> MetricQuery:
        group: tuple[str, ...] | None = None
        if self.peek()[1] == "sum":
            self.take("ident", "sum")
            self.take("ident", "by")
            self.take("punct", "(")
            labels = [self.take("ident")]
            while self.peek()[1] == ",":
                self.take("punct", ",")
                labels.append(self.take("ident"))
            self.take("punct", ")")
            group = tuple(labels)
            self.take("punct", "(")
        inner = self.count_over_time()
        if group is not None:
            self.take("punct", ")")
        self.take("end")
        return MetricQuery(inner.matchers, inner.filters, inner.range_s, group)

    def count_over_time(self) -> MetricQuery:
        self.take("ident", "count_over_time")
        self.take("punct", "(")
        self.take("punct", "{")
        matchers = [self.matcher()]
        while self.peek()[1] == ",":
            self.take("punct", ",")
            matchers.append(self.matcher())
        self.take("punct", "}")
        filters = []
        while self.peek()[0] == "op" and self.peek()[1] in ("|=", "!=", "|~", "!~"):
            op = self.take("op")
            filters.append(LineFilter(op, self._regex(_unquote(self.take("string")), op)))
        self.take("punct", "[")
        duration = self.take("duration")
        self.take("punct", "]")
        self.take("punct", ")")
        seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(duration))
        return MetricQuery(tuple(matchers), tuple(filters), float(seconds), None)

    def matcher(self) -> Matcher:
        label = self.take("ident")
        op = self.take("op")
        if op not in ("=", "!=", "=~", "!~"):
            raise LogQLParseError(f"parse error : unexpected {op} in a label matcher")
        return Matcher(label, op, self._regex(_unquote(self.take("string")), op))

    @staticmethod
    def _regex(value: str, op: str) -> str:
        if op in ("=~", "!~", "|~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise LogQLParseError(f"parse error : error parsing regexp: {exc}") from exc
        return value


def parse_metric_query(query: str) -> MetricQuery:
    """Parse the supported LogQL subset; LogQLParseError otherwise."""
    parsed = _Parser(query).query()
    if all(_matches_empty(m) for m in parsed.matchers):
        raise LogQLParseError("parse error : queries require at least one regexp or equality "
                              "matcher that does not have an empty-compatible value. For "
                              'instance, app=~".*" does not meet this requirement, but '
                              'app=~".+" will')
    return parsed


def _matches_empty(matcher: Matcher) -> bool:
    return matcher.matches({})


@dataclass
class _Stream:
    labels: dict[str, str]
    entries: list[tuple[int, str]] = field(default_factory=list)


class LokiStandIn(ThreadedHTTPService):
    """Stores log lines per stream and answers Loki's instant metric queries over them."""

    def __init__(
        self,
        *,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        multi_tenant: bool = False,
        require_token: str | None = None,
    ) -> None:
        self._init_http(host, port)
        self.multi_tenant = multi_tenant
        self.require_token = require_token
        self.delay_s = 0.0
        self.canned: tuple[int, str, str] | None = None  # (status, content type, body)
        self.requests: list[RecordedRequest] = []
        self._streams: dict[tuple[str, frozenset[tuple[str, str]]], _Stream] = {}
        self._lock = threading.Lock()

    # -- lifecycle: start(), stop(), url and the context manager from ThreadedHTTPService ---------

    def _handler(self) -> type[QuietHandler]:
        return _handler_for(self)

    # -- data -------------------------------------------------------------------------------

    def push(self, labels: Mapping[str, str], lines: Iterable[str], *,
             at: float | None = None, tenant: str = "fake") -> None:
        """Store lines in the stream `labels` at Unix time `at` (default now).

        Single-tenant Loki keeps everything under the tenant `fake`, as Loki does.
        """
        stamp = int((time.time() if at is None else at) * 1e9)
        key = (tenant, frozenset(labels.items()))
        with self._lock:
            stream = self._streams.setdefault(key, _Stream(dict(labels)))
            stream.entries.extend((stamp, line) for line in lines)

    def evaluate(self, query: str, at_s: float, tenant: str = "fake") -> list[dict[str, object]]:
        """The `data.result` of an instant metric query at `at_s`; LogQLParseError if refused."""
        parsed = parse_metric_query(query)
        end = int(at_s * 1e9)
        start = end - int(parsed.range_s * 1e9)
        counts: dict[tuple[tuple[str, str], ...], int] = {}
        with self._lock:
            streams = [s for (t, _), s in self._streams.items() if t == tenant]
            for stream in streams:
                if not all(m.matches(stream.labels) for m in parsed.matchers):
                    continue
                found = sum(1 for stamp, line in stream.entries
                            if start < stamp <= end and all(f.keeps(line) for f in parsed.filters))
                if not found:
                    continue  # Loki has no sample for a stream without lines in the range
                labels = (stream.labels if parsed.group is None else
                          {k: stream.labels[k] for k in parsed.group if k in stream.labels})
                key = tuple(sorted(labels.items()))
                counts[key] = counts.get(key, 0) + found
        return [{"metric": dict(key), "value": [round(at_s, 3), str(count)]}
                for key, count in sorted(counts.items())]

    # -- HTTP -------------------------------------------------------------------------------

    def answer(self, method: str, path: str, params: Mapping[str, str],
               headers: Mapping[str, str]) -> tuple[int, str, str]:
        """(status, content type, body) for one request."""
        with self._lock:
            self.requests.append(RecordedRequest(method, path, dict(params), dict(headers)))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.canned is not None:
            return self.canned
        if path != QUERY_PATH:
            return 404, "text/plain; charset=utf-8", "404 page not found\n"
        if self.require_token is not None and \
                headers.get("authorization") != f"Bearer {self.require_token}":
            return 401, "text/plain; charset=utf-8", "unauthorized\n"
        tenant = headers.get("x-scope-orgid", "")
        if self.multi_tenant and not tenant:
            return 401, "text/plain; charset=utf-8", "no org id\n"
        query = params.get("query", "")
        try:
            at_s = _time_param(params.get("time"))
            result = self.evaluate(query, at_s, tenant if self.multi_tenant else "fake")
        except LogQLParseError as exc:
            return 400, "text/plain; charset=utf-8", f"{exc}\n"
        body = {"status": "success",
                "data": {"resultType": "vector", "result": result,
                         "stats": {"summary": {"totalLinesProcessed": 0}}}}
        return 200, "application/json; charset=UTF-8", json.dumps(body)


def _time_param(raw: str | None) -> float:
    """Loki's `time`: nanosecond epoch, second epoch (with fraction) or RFC3339; default now."""
    if not raw:
        return time.time()
    try:
        number = float(raw)
    except ValueError:
        from datetime import datetime

        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            raise LogQLParseError(f"invalid parameter \"time\": cannot parse {raw!r}") from exc
    return number / 1e9 if number > 1e12 else number


def _handler_for(loki: LokiStandIn) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self._serve("GET", "")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._serve("POST", self.rfile.read(length).decode("utf-8", errors="replace"))

        def _serve(self, method: str, form: str) -> None:
            parts = urlsplit(self.path)
            raw = {**parse_qs(parts.query), **parse_qs(form)}
            params = {key: values[-1] for key, values in raw.items()}
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, content_type, body = loki.answer(method, parts.path, params, headers)
            self.send_body(status, content_type, body.encode())

    return Handler
