"""Error lines in pod logs: the seed's `kubectl logs -l app=api-all --since=1h | grep -ci error`.

The pods come from the watch cache while it is current (`pods`), else from a list. Every
started container of every pod matching the pair's selector is read over the window
(`sinceSeconds`), at most `limit_bytes` per container, concurrently but bounded. Logs are
streamed and counted chunk by chunk: memory holds one chunk and one line per container, and
the event loop gets a turn between chunks however fast the API server answers.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper import errors, kubeclient, testjobs
from gatekeeper.measurements import Measurement
from gatekeeper.rules import LogSpec, Rule
from gatekeeper.sources.base import PodCache, Target, cached_pods, measure_each

log = structlog.get_logger()
MAX_CONCURRENT_READS = 16
MAX_LINE_BYTES = 65_536
_CHUNK_BYTES = 65_536
_QUOTED = 120


class LineCounter:
    """Counts lines matching `pattern` and none of `exclude`, fed arbitrary byte chunks.

    A line longer than MAX_LINE_BYTES is judged on its first MAX_LINE_BYTES; the rest is
    skipped, so a runaway line cannot grow memory.
    """

    def __init__(self, pattern: re.Pattern[str], exclude: Sequence[re.Pattern[str]]) -> None:
        self.pattern = pattern
        self.exclude = tuple(exclude)
        self.lines = 0
        self.errors = 0
        self.first_error: str | None = None
        self._pending = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> None:
        """Count the complete lines in `chunk` (with what is pending from earlier chunks)."""
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                self._pending += chunk[start:end]
                self._line(bytes(self._pending))
            self._pending.clear()
            start = end + 1
        if not self._skipping:
            self._pending += chunk[start:]
            if len(self._pending) > MAX_LINE_BYTES:
                self._line(bytes(self._pending[:MAX_LINE_BYTES]))
                self._pending.clear()
                self._skipping = True

    def finish(self) -> None:
        """Count a last line without a newline."""
        if self._pending:
            self._line(bytes(self._pending))
            self._pending.clear()
        self._skipping = False

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.lines += 1
        if self.pattern.search(text) and not any(ex.search(text) for ex in self.exclude):
            self.errors += 1
            if self.first_error is None:
                self.first_error = text.strip()[:_QUOTED * 2]


@dataclass(frozen=True)
class ContainerScan:
    """What one container's log held over the window."""

    pod: str
    container: str
    lines: int
    errors: int
    first_error: str | None
    capped: bool


def _started_containers(pod: Mapping[str, Any], only: str | None) -> list[str]:
    """Containers (init ones included) that ran at least once, so they have logs to read."""
    status = pod.get("status") or {}
    names = []
    for entry in [*(status.get("initContainerStatuses") or []),
                  *(status.get("containerStatuses") or [])]:
        state = entry.get("state") or {}
        last = entry.get("lastState") or {}
        started = "running" in state or "terminated" in state or "terminated" in last
        if started and (only is None or entry.get("name") == only):
            names.append(entry["name"])
    return names


def _quote(line: str) -> str:
    return repr(line if len(line) <= _QUOTED else line[: _QUOTED - 3] + "...")


class LogSource:
    """Counts error lines per namespace; value = error lines, sample_count = lines scanned."""

    name = "logs"

    def __init__(
        self, api_client: client.ApiClient, *, max_concurrency: int = MAX_CONCURRENT_READS,
        pods: PodCache | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.max_concurrency = max_concurrency
        self.cached_pods = pods

    async def close(self) -> None:
        """Nothing to release: the shared ApiClient belongs to whoever passed it in."""

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """Scan every target namespace concurrently; the rule's `window` overrides `window`."""
        spec = rule.logs or LogSpec.model_validate({})
        seconds = max(1, math.ceil(rule.window if rule.window is not None else window))
        limit = asyncio.Semaphore(self.max_concurrency)
        return await measure_each(
            targets, lambda target: self._namespace(target, spec, seconds, limit),
            source="logs", rule=rule.name)

    async def _namespace(
        self, target: Target, spec: LogSpec, seconds: int, limit: asyncio.Semaphore
    ) -> Measurement:
        where = (f"pods matching {target.selector!r}" if target.selector else "pods") + \
            f" in namespace {target.namespace}"
        query = f"logs of {where} over {seconds}s matching {spec.pattern!r}"
        listed = cached_pods(self.cached_pods, target)
        if listed is None:
            try:
                pods = await kubeclient.read_json(
                    self.core.list_namespaced_pod, target.namespace,
                    label_selector=target.selector)
            except errors.API_ERRORS as exc:
                reason = kubeclient.describe_error(exc)
                return Measurement.error(f"logs: listing {where} failed: {reason}", query=query)
            listed = pods.get("items") or []
        # gatekeeper's own test Job pods are not the application: their failures are the
        # test Job's outcome, not error lines of the release.
        items = [p for p in listed if not testjobs.is_test_pod(p)]
        if not items:
            return Measurement.no_data(f"logs: no {where}", query=query)
        jobs = [(pod["metadata"]["name"], name)
                for pod in items for name in _started_containers(pod, spec.container)]
        if not jobs:
            which = f"container {spec.container!r}" if spec.container else "container"
            return Measurement.no_data(
                f"logs: no started {which} in {len(items)} {where}", query=query)
        pattern = re.compile(spec.pattern)
        exclude = [re.compile(e) for e in spec.exclude]

        async def bounded(pod: str, container: str) -> ContainerScan | None:
            async with limit:
                return await self._scan(target.namespace, pod, container, spec, seconds,
                                        pattern, exclude)

        try:
            # A task group cancels the remaining reads as soon as one fails.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(bounded(p, c)) for p, c in jobs]
        except ExceptionGroup as failed:
            first = failed.exceptions[0]
            if not isinstance(first, errors.API_ERRORS):
                raise
            return Measurement.error(
                f"logs: reading {where} failed: {kubeclient.describe_error(first)}", query=query)
        scans = [s for s in (task.result() for task in tasks) if s is not None]
        return _summarise(scans, len(jobs), query)

    async def _scan(
        self,
        namespace: str,
        pod: str,
        container: str,
        spec: LogSpec,
        seconds: int,
        pattern: re.Pattern[str],
        exclude: Sequence[re.Pattern[str]],
    ) -> ContainerScan | None:
        """Stream one container's log; None when the pod or container went away meanwhile."""
        response = cast(aiohttp.ClientResponse, await self.core.read_namespaced_pod_log(
            pod, namespace, container=container, since_seconds=seconds,
            limit_bytes=spec.limit_bytes, _preload_content=False,
        ))
        counter = LineCounter(pattern, exclude)
        size = 0
        async with response:
            if not response.ok:
                body = (await response.content.read(4096)).decode("utf-8", errors="replace")
                error = errors.from_response(response.status, response.reason, body)
                # Deleted since listed, or not started after all (400 "waiting to start").
                if isinstance(error, errors.APINotFoundError) or "waiting to start" in body:
                    log.info("container log not readable", namespace=namespace, pod=pod,
                             container=container, status=response.status)
                    return None
                raise error
            async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
                size += len(chunk)
                counter.feed(chunk)
                await asyncio.sleep(0)  # buffered data returns without yielding: yield here
        counter.finish()
        return ContainerScan(pod, container, counter.lines, counter.errors,
                             counter.first_error, capped=size >= spec.limit_bytes)


def _summarise(scans: Sequence[ContainerScan], started: int, query: str) -> Measurement:
    if not scans:
        return Measurement.no_data(
            f"logs: none of {started} containers had a readable log", query=query)
    errors = sum(s.errors for s in scans)
    lines = sum(s.lines for s in scans)
    pods = len({s.pod for s in scans})
    scope = f"{len(scans)} container{'s' * (len(scans) != 1)} of {pods} pod{'s' * (pods != 1)}"
    message = f"{errors} error line{'s' * (errors != 1)} in {scope} ({lines} lines scanned)"
    first = next((s for s in sorted(scans, key=lambda s: (s.pod, s.container))
                  if s.first_error is not None), None)
    if first is not None and first.first_error is not None:
        message += f" (first: {first.pod}/{first.container}: {_quote(first.first_error)})"
    capped = sum(s.capped for s in scans)
    if capped:
        message += f"; output capped at limit_bytes in {capped} container(s)"
    skipped = started - len(scans)
    if skipped:
        message += f"; {skipped} container(s) skipped (gone or not started)"
    return Measurement.ok(float(errors), message=message, query=query, sample_count=float(lines))
