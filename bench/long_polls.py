"""Benchmark: flip-check long-polls abandoned by their clients.

`gatekeeper serve` (own process, bench.service_stack, default `server` settings: at most
1,024 connections, fewer under a low `ulimit -n`) with one idle pair, so a flip-check answers
409 and `?wait=600` holds. The bench opens POLLS connections, each sending one long-poll,
then closes them all without reading an answer, as pipelines killed mid-wait do. Measured:
gatekeeper's resident memory and CPU before, while the polls are held, and over the seconds
after the clients left; `gatekeeper_long_polls` (waiters) and `gatekeeper_http_connections`
from /metrics; how long until no waiter is left.

Before long-polls ended on disconnect (issue 11): 4,000 abandoned polls left +45 MiB resident
and 0.11 CPU-s/s of work until their deadline.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import reporting, service_stack
from bench.reporting import Options, Outcome
from bench.rollback import kubernetes_rules
from telemetry_sandbox import httpjson

NAME = "long_polls"
POLLS = 4000
QUICK_POLLS = 500
AFTER_S = 5.0
"""Seconds watched after the clients disconnect."""


def _gauge(url: str, name: str) -> float:
    _status, raw = httpjson.request("GET", f"{url}/metrics", timeout_s=30)
    for line in raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


async def _open_polls(host: str, port: int, pair: str, count: int
                      ) -> list[asyncio.StreamWriter]:
    writers = []
    request = (f"GET /api/v1/pairs/{pair}/flip-check?wait=600 HTTP/1.1\r\n"
               "Host: gatekeeper\r\n\r\n").encode()
    for _ in range(count):
        _reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        writers.append(writer)
    await asyncio.sleep(2.0)  # let the server read them all
    return writers


def run(options: Options) -> Outcome:
    """Open the polls, measure, drop them, measure again."""
    count = QUICK_POLLS if options.quick else POLLS
    pairs = service_stack.pairs("lp", 1)
    with tempfile.TemporaryDirectory(prefix="bench-long-polls-") as scratch:
        rules = kubernetes_rules(Path(scratch))
        with service_stack.running(pairs, rule_file=rules, evaluation={"interval": "60s"},
                                   policy={"auto_flip": False}) as stack:
            pid = stack.gatekeeper.pid
            host, port = stack.url.removeprefix("http://").split(":")
            before = {**reporting.rss_mib(pid), "cpu_s": reporting.cpu_seconds(pid)}
            loop = asyncio.new_event_loop()
            try:
                writers = loop.run_until_complete(
                    _open_polls(host, int(port), pairs[0].name, count))
                held = {**reporting.rss_mib(pid),
                        "waiters": _gauge(stack.url, "gatekeeper_long_polls"),
                        "connections": _gauge(stack.url, "gatekeeper_http_connections")}
                for writer in writers:
                    writer.close()
                loop.run_until_complete(asyncio.sleep(0.1))
            finally:
                loop.close()
            left = time.monotonic()
            cpu_left = reporting.cpu_seconds(pid)
            drained_s = None
            while time.monotonic() - left < AFTER_S:
                if drained_s is None and _gauge(stack.url, "gatekeeper_long_polls") == 0:
                    drained_s = time.monotonic() - left
                time.sleep(0.1)
            after = {**reporting.rss_mib(pid),
                     "waiters": _gauge(stack.url, "gatekeeper_long_polls"),
                     "connections": _gauge(stack.url, "gatekeeper_http_connections"),
                     "cpu_s_per_s": (reporting.cpu_seconds(pid) - cpu_left) / AFTER_S}
    results: dict[str, Any] = {"polls": count, "before": before, "held": held,
                               "after": after, "waiters_gone_after_s": drained_s}
    table = reporting.table(
        f"{count} flip-check long-polls (?wait=600) abandoned by their clients",
        ["moment", "RSS MiB", "waiters", "connections", "CPU-s/s"],
        [["before", before.get("rss_mib"), 0, "-", "-"],
         ["held", held.get("rss_mib"), held["waiters"], held["connections"], "-"],
         [f"{AFTER_S:g} s after disconnect", after.get("rss_mib"), after["waiters"],
          after["connections"], after["cpu_s_per_s"]]])
    targets = {"after_disconnect": {
        "target": "no waiter left within seconds; no CPU work for the departed",
        "waiters_gone_after_s": drained_s, "cpu_s_per_s": after["cpu_s_per_s"]}}
    notes = ["Connections above server.max_connections evict the oldest waiting long-poll, "
             "so at most that many are held at once."]
    return Outcome(results=results, targets=targets, tables=[table], notes=notes)
