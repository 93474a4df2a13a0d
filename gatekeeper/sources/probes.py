"""HTTP probes of each namespace's service: the seed's integration-test suite as rules.

A probe is a check of the namespace, so a service that cannot be reached (connection
refused, unknown host, timeout) is a *failed* probe, `ok(0.0)`, not a missing measurement:
a dark namespace whose service is down must fail its gate, never slip through as "no data".
Only gatekeeper's own problems (a URL template naming an unknown variable, a malformed URL)
are `error`. Redirects are not followed: the status checked is the service's own answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import structlog
from yarl import URL

from gatekeeper.jsonpaths import MISSING, SHOWN, json_problems, lookup, short
from gatekeeper.measurements import Measurement
from gatekeeper.rules import ProbeSpec, Rule
from gatekeeper.sources.base import Target, measure_each
from gatekeeper.sources.sessions import LazySession
from gatekeeper.templating import render

__all__ = ["MISSING", "ProbeSource", "body_problems", "lookup"]  # the first two: jsonpaths

log = structlog.get_logger()
MAX_BODY_BYTES = 1_048_576
MAX_CONCURRENT_PROBES = 16


def body_problems(spec: ProbeSpec, document: Any) -> list[str]:
    """Which `expect_json` and `require_fields` checks a parsed body fails."""
    return json_problems(spec.expect_json, spec.require_fields, document)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    """The body up to MAX_BODY_BYTES, or None when it is longer (memory stays bounded)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65_536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc.os_error, socket.gaierror):
        return f"cannot resolve host {exc.host}"
    return f"cannot connect: {exc.os_error or exc}"


class ProbeSource:
    """Probes every target's rendered URL; value 1.0 when every check passes, else 0.0."""

    name = "probe"

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._client = LazySession(session)

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """Probe all targets concurrently, at most MAX_CONCURRENT_PROBES at a time."""
        if rule.probe is None:
            return {t.namespace: Measurement.error(f"probe: rule {rule.name!r} has no 'probe'")
                    for t in targets}
        spec = rule.probe
        limit = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

        async def bounded(target: Target) -> Measurement:
            async with limit:
                return await self._probe(spec, target, variables)

        return await measure_each(targets, bounded, source="probe", rule=rule.name)

    async def _probe(
        self, spec: ProbeSpec, target: Target, variables: Mapping[str, str]
    ) -> Measurement:
        try:
            url = render(spec.url, {**variables, **target.variables,
                                    "namespace": target.namespace, "pair": target.pair})
            parsed = URL(url)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ValueError(f"not an http(s) URL: {url!r}")
        except KeyError as exc:
            return Measurement.error(f"probe: URL template {spec.url!r} uses unknown "
                                     f"variable {exc}", query=spec.url)
        except ValueError as exc:
            return Measurement.error(f"probe: {exc}", query=spec.url)
        started = time.monotonic()
        try:
            problems = await self._request(spec, url)
        except TimeoutError:
            problems = [f"no answer within {spec.timeout:g}s"]
        except aiohttp.InvalidURL as exc:
            return Measurement.error(f"probe: invalid URL {exc}", query=url)
        except aiohttp.ClientConnectorError as exc:
            problems = [_connect_failure(exc)]
        except aiohttp.ClientError as exc:
            problems = [f"request failed: {exc or type(exc).__name__}"]
        elapsed = time.monotonic() - started
        if elapsed > spec.timeout and not problems:
            problems.append(f"slower than the {spec.timeout:g}s timeout")
        timing = f"{elapsed * 1000:.0f} ms"
        if problems:
            log.info("probe failed", url=url, namespace=target.namespace, problems=problems)
            return Measurement.ok(0.0, message=f"{url}: {'; '.join(problems)} ({timing})",
                                  query=url, sample_count=1.0)
        return Measurement.ok(1.0, message=f"{url}: all checks passed ({timing})",
                              query=url, sample_count=1.0)

    async def _request(self, spec: ProbeSpec, url: str) -> list[str]:
        """Send the probe; the list of failed checks (empty when healthy)."""
        async with self._client().request(
            spec.method,
            url,
            headers=spec.headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=spec.timeout),
        ) as response:
            problems = []
            if response.status != spec.expect_status:
                problems.append(f"HTTP {response.status}, expected {spec.expect_status}")
            if not (spec.expect_json or spec.require_fields):
                return problems
            if spec.method == "HEAD":
                return [*problems, "a HEAD probe has no body to check"]
            body = await _read_capped(response)
        if body is None:
            return [*problems, f"body larger than {MAX_BODY_BYTES} bytes"]
        try:
            document = json.loads(body)
        except ValueError:
            start = body[:SHOWN].decode(errors="replace")
            return [*problems, f"body is not JSON: {short(start)}"]
        return problems + body_problems(spec, document)

    async def close(self) -> None:
        """Close the HTTP session if this source created it."""
        await self._client.close()
