"""Synthetic load and checks for the dark namespace: the `load` validation driver.

While a pair validates, gatekeeper sends the requests of its `load` configuration to the
dark's Service at the configured rate (after a linear ramp), at most `concurrency` in
flight, and checks every answer like a probe: expected status, JSON assertions, maximum
latency. The application's own namespace-labelled metrics then carry the traffic the
error-rate and latency rules judge; the checks themselves are posted as the driver's
outcome (value: share of checks passed over the last `window` seconds, samples: checks in
it), which the `validation` rule source turns into a gate, and counted in
`gatekeeper_load_*` metrics.

Open loop: requests are due at the configured rate whatever the answers take; one that
would exceed the concurrency bound is skipped and counted (`gatekeeper_load_skipped_total`),
never queued (a burst would follow). Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gatekeeper.config import LoadConfig, LoadRequest, PairConfig
from gatekeeper.drivers.base import DriverTarget, Report, StopReason
from gatekeeper.jsonpaths import json_problems, short
from gatekeeper.metrics import Recorder
from gatekeeper.outcomes import Outcome
from gatekeeper.templating import render

__all__ = ["LoadDriver", "Schedule", "StaticResolver", "Tally", "due", "pick"]

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1_048_576
REPORT_EVERY = 1.0
"""Seconds between two outcomes posted (and rate gauges updated)."""
RATE_SPAN = 5.0
"""Seconds the achieved rate is measured over."""
FAILURE_REASONS = ("status", "json", "latency", "connect", "error")


def due(rate: float, ramp: float, elapsed: float) -> float:
    """Requests due after `elapsed` seconds: the integral of a rate rising linearly from 0
    to `rate` over `ramp` seconds, then flat."""
    if elapsed <= 0:
        return 0.0
    if ramp <= 0:
        return rate * elapsed
    if elapsed < ramp:
        return rate * elapsed * elapsed / (2 * ramp)
    return rate * (elapsed - ramp / 2)


def rate_at(rate: float, ramp: float, elapsed: float) -> float:
    """The target rate `elapsed` seconds after the start."""
    if ramp <= 0 or elapsed >= ramp:
        return rate
    return rate * max(elapsed, 0.0) / ramp


def pick(weights: Sequence[float]) -> Callable[[], int]:
    """Smooth weighted round-robin (nginx's): deterministic, each index in proportion to
    its weight, spread evenly rather than in runs."""
    current = [0.0] * len(weights)
    total = sum(weights)

    def next_index() -> int:
        for index, weight in enumerate(weights):
            current[index] += weight
        best = max(range(len(weights)), key=current.__getitem__)
        current[best] -= total
        return best

    return next_index


@dataclass
class Tally:
    """Checks per whole second over a sliding window (outcome and achieved rate)."""

    window: float
    seconds: deque[tuple[int, list[int]]] = field(default_factory=deque)
    """(second, [sent, checked, failed]) oldest first."""
    problems: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    """The last few failure reasons, for the outcome's reason."""
    failed_by: dict[str, int] = field(default_factory=dict)

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        if not self.seconds or self.seconds[-1][0] != second:
            self.seconds.append((second, [0, 0, 0]))
        self._trim(now)
        return self.seconds[-1][1]

    def _trim(self, now: float) -> None:
        while self.seconds and self.seconds[0][0] <= now - self.window - 1:
            self.seconds.popleft()

    def sent(self, now: float) -> None:
        self._bucket(now)[0] += 1

    def checked(self, now: float, problem: tuple[str, str] | None) -> None:
        bucket = self._bucket(now)
        bucket[1] += 1
        if problem is not None:
            bucket[2] += 1
            reason, text = problem
            self.failed_by[reason] = self.failed_by.get(reason, 0) + 1
            self.problems.append(text)

    def totals(self, now: float, span: float | None = None) -> tuple[int, int, int]:
        """(sent, checked, failed) in the last `span` seconds (default: the window)."""
        self._trim(now)
        since = now - (self.window if span is None else span)
        sums = [0, 0, 0]
        for second, counts in self.seconds:
            if second + 1 > since:
                for index in range(3):
                    sums[index] += counts[index]
        return sums[0], sums[1], sums[2]


@dataclass
class Schedule:
    """When requests are due for one run: started at `start` (monotonic)."""

    rate: float
    ramp: float
    start: float

    def due_by(self, now: float) -> int:
        return math.floor(due(self.rate, self.ramp, now - self.start) + 1e-9)

    def rate_now(self, now: float) -> float:
        return rate_at(self.rate, self.ramp, now - self.start)


class StaticResolver(AbstractResolver):
    """`service_addresses` first (a name and port to an IP and port, like curl's
    `--resolve`), then the system's resolver (cluster DNS), in a thread: never blocking."""

    def __init__(self, addresses: Mapping[str, str]) -> None:
        self.addresses: dict[tuple[str, int], tuple[str, int]] = {}
        for name, address in addresses.items():
            host, _, port = name.rpartition(":")
            ip, _, to = address.rpartition(":")
            self.addresses[(host.lower(), int(port))] = (ip.strip("[]"), int(to))
        self.fallback: ThreadedResolver | None = None
        """Made on first use: it belongs to the running event loop."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = self.addresses.get((host.lower().rstrip("."), port))
        if found is None:
            if self.fallback is None:
                self.fallback = ThreadedResolver()
            return await self.fallback.resolve(host, port, family)
        ip, to = found
        kind = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [{"hostname": host, "host": ip, "port": to, "family": kind, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        if self.fallback is not None:
            await self.fallback.close()


class LoadDriver:
    """The `load` driver: one generator per pair being validated, over one HTTP session.

    `resolver` replaces DNS (aiohttp's `AbstractResolver`): the tests and the demo map the
    dark Service's cluster name to the loopback address its stand-in listens on, as cluster
    DNS and kube-proxy would.
    """

    name = "load"

    def __init__(self, recorder: Recorder | None = None, *, window: float = 300.0,
                 resolver: AbstractResolver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recorder = recorder
        self.window = window
        self.resolver = resolver
        self.clock = clock
        self.runs: dict[str, Schedule] = {}

    def applies(self, pair: PairConfig) -> bool:
        return pair.load is not None

    async def run(self, target: DriverTarget, report: Report) -> None:
        spec = target.pair.load
        if spec is None:
            return
        connector = aiohttp.TCPConnector(limit=spec.concurrency, resolver=self.resolver,
                                         ttl_dns_cache=30)
        async with aiohttp.ClientSession(connector=connector) as session:
            generator = _Generator(self, target, spec, session, report)
            await generator.run()

    async def stop(self, target: DriverTarget, why: StopReason) -> None:
        self.runs.pop(target.pair.name, None)
        if self.recorder is not None:
            self.recorder.record_load_rate(target.pair.name, target=0.0, achieved=0.0)


class _Generator:
    """One run: sends on schedule, checks answers, posts outcomes."""

    def __init__(self, driver: LoadDriver, target: DriverTarget, spec: LoadConfig,
                 session: aiohttp.ClientSession, report: Report) -> None:
        self.driver = driver
        self.target = target
        self.pair = target.pair.name
        self.spec = spec
        self.session = session
        self.report = report
        self.clock = driver.clock
        self.tally = Tally(spec.window or driver.window)
        self.urls = [self._url(request) for request in spec.requests]
        self.next_request = pick([request.weight for request in spec.requests])
        self.in_flight: set[asyncio.Task[None]] = set()
        self.recorder = driver.recorder

    def _url(self, request: LoadRequest) -> str:
        variables = dict(self.target.variables)
        path = render(request.path, variables)
        if "://" in path:
            return path
        return render(self.spec.url, variables).rstrip("/") + path

    async def run(self) -> None:
        schedule = Schedule(self.spec.rate, self.spec.ramp, self.clock())
        self.driver.runs[self.pair] = schedule
        log.info("synthetic load started", pair=self.pair, dark=self.target.dark,
                 rate=self.spec.rate, ramp=self.spec.ramp, concurrency=self.spec.concurrency,
                 dry_run=self.target.dry_run)
        sent = 0
        next_report = self.clock()
        try:
            while True:
                now = self.clock()
                for _ in range(schedule.due_by(now) - sent):
                    sent += 1
                    self._send(now)
                if now >= next_report:
                    self._post(now, schedule)
                    next_report = now + REPORT_EVERY
                current = schedule.rate_now(now)
                await asyncio.sleep(min(0.1, max(0.002, 1.0 / max(current, 1.0))))
        finally:
            for task in self.in_flight:
                task.cancel()
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=2.0)

    def _send(self, now: float) -> None:
        if len(self.in_flight) >= self.spec.concurrency:
            if self.recorder is not None:
                self.recorder.record_load_skipped(self.pair)
            return
        index = self.next_request()
        task = asyncio.create_task(self._check(self.spec.requests[index], self.urls[index]))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        self.tally.sent(now)
        if self.recorder is not None:
            self.recorder.record_load_sent(self.pair)

    async def _check(self, request: LoadRequest, url: str) -> None:
        started = self.clock()
        try:
            problem = await self._exchange(request, url)
        except TimeoutError:
            problem = ("latency", f"{request.label}: no answer within "
                                  f"{request.max_latency:g}s")
        except aiohttp.ClientConnectorError as exc:
            problem = ("connect", f"{request.label}: cannot connect: {exc.os_error or exc}")
        except aiohttp.ClientError as exc:
            problem = ("error", f"{request.label}: {type(exc).__name__}: {exc}"[:200])
        elapsed = self.clock() - started
        if problem is None and elapsed > request.max_latency:
            problem = ("latency", f"{request.label}: {elapsed * 1000:.0f} ms, over "
                                  f"{request.max_latency * 1000:.0f} ms")
        self.tally.checked(self.clock(), problem)
        if problem is not None and self.recorder is not None:
            self.recorder.record_load_failed(self.pair, problem[0])

    async def _exchange(self, request: LoadRequest, url: str) -> tuple[str, str] | None:
        extra: dict[str, Any] = {}
        if request.json_body is not None:
            extra["json"] = request.json_body
        elif request.body is not None:
            extra["data"] = request.body.encode()
        async with self.session.request(
                request.method, url, headers=request.headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=request.max_latency), **extra) as answer:
            status_ok = answer.status == request.expect_status
            if not (request.expect_json or request.require_fields):
                await answer.read()
                return None if status_ok else (
                    "status", f"{request.label}: HTTP {answer.status}, expected "
                              f"{request.expect_status}")
            body = await answer.content.read(MAX_BODY_BYTES + 1)
        if not status_ok:
            return "status", (f"{request.label}: HTTP {answer.status}, expected "
                              f"{request.expect_status}")
        if len(body) > MAX_BODY_BYTES:
            return "json", f"{request.label}: body larger than {MAX_BODY_BYTES} bytes"
        try:
            document = json.loads(body)
        except ValueError:
            start = body[:60].decode(errors="replace")
            return "json", f"{request.label}: body is not JSON: {short(start)}"
        problems = json_problems(request.expect_json, request.require_fields, document)
        if problems:
            return "json", f"{request.label}: {'; '.join(problems)}"
        return None

    def _post(self, now: float, schedule: Schedule) -> None:
        sent, checked, failed = self.tally.totals(now)
        recent_sent = self.tally.totals(now, RATE_SPAN)[0]
        span = min(RATE_SPAN, max(now - schedule.start, 1e-9))
        achieved = recent_sent / span if span >= 1.0 else 0.0
        target_rate = schedule.rate_now(now)
        if self.recorder is not None:
            self.recorder.record_load_rate(self.pair, target=target_rate, achieved=achieved)
        window = self.tally.window
        if checked == 0:
            self.report(Outcome("pending", f"no synthetic check answered in the last "
                                           f"{window:g}s yet ({sent} sent)", samples=0,
                                at=time.time(), details=self._details(sent, achieved,
                                                                      target_rate)))
            return
        passed = checked - failed
        if failed:
            reason = (f"{failed} of {checked} synthetic checks failed in the last {window:g}s: "
                      + "; ".join(self.tally.problems))
        else:
            reason = f"{checked} synthetic checks passed in the last {window:g}s"
        self.report(Outcome("fail" if failed else "pass", reason, value=passed / checked,
                            samples=checked, at=time.time(),
                            details=self._details(sent, achieved, target_rate)))

    def _details(self, sent: int, achieved: float, target_rate: float) -> dict[str, Any]:
        return {"sent": sent, "achieved_rate": round(achieved, 2),
                "target_rate": round(target_rate, 2),
                "failed_by_reason": dict(self.tally.failed_by),
                "in_flight": len(self.in_flight)}
