"""`python -m bench.pod_logs_worker ...`: count error lines over every pod of the `logs`
namespace once, through the emulated API server, and print one JSON document.

`--mode streaming` is gatekeeper's LogSource (chunked reads, `limit_bytes`, 16 containers at
a time). `--mode whole-body` is the obvious alternative for comparison: the same client and
concurrency, but each container's log read into memory whole before its lines are counted.
Each mode runs in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import Any, cast

import aiohttp
import structlog
from kubernetes_asyncio import client

from bench import reporting
from bench.emulator_worker import NAMESPACE, SELECTOR
from gatekeeper import kubeclient
from gatekeeper.config import KubernetesConfig
from gatekeeper.rules import Rule, load_rule_set
from gatekeeper.sources.base import Target
from gatekeeper.sources.logs import MAX_CONCURRENT_READS, LineCounter, LogSource


def log_rule(limit_bytes: int) -> Rule:
    """The shipped `log-errors` rule (pattern and exclusions) with the given `limit_bytes`."""
    shipped = load_rule_set([reporting.ROOT / "rules" / "default.yaml"])
    rule = next(r for r in shipped.rules if r.source == "logs")
    assert rule.logs is not None
    return rule.model_copy(update={"logs": rule.logs.model_copy(
        update={"limit_bytes": limit_bytes})})


async def streaming(api: client.ApiClient, rule: Rule, window: int) -> dict[str, Any]:
    """LogSource.measure for the namespace; lines and errors from its measurement."""
    source = LogSource(api)
    target = Target(pair="bench", namespace=NAMESPACE, other="none", selector=SELECTOR)
    result = (await source.measure(rule, [target], window=window, variables={}))[NAMESPACE]
    if result.status != "ok":
        raise RuntimeError(f"log scan failed: {result.status}: {result.message}")
    return {"lines": int(result.sample_count or 0), "errors": int(result.value or 0),
            "capped": "capped" in result.message, "message": result.message}


async def whole_body(api: client.ApiClient, rule: Rule, window: int) -> dict[str, Any]:
    """Every container's log read whole (still `limit_bytes` per container), then counted."""
    assert rule.logs is not None
    spec = rule.logs
    core = client.CoreV1Api(api)
    pods = await kubeclient.read_json(core.list_namespaced_pod, NAMESPACE,
                                      label_selector=SELECTOR)
    pattern = re.compile(spec.pattern)
    exclude = [re.compile(e) for e in spec.exclude]
    limit = asyncio.Semaphore(MAX_CONCURRENT_READS)
    totals = {"lines": 0, "errors": 0}

    async def one(pod: str) -> None:
        async with limit:
            response = cast(aiohttp.ClientResponse, await core.read_namespaced_pod_log(
                pod, NAMESPACE, container="api", since_seconds=window,
                limit_bytes=spec.limit_bytes, _preload_content=False))
            async with response:
                body = await response.read()
        counter = LineCounter(pattern, exclude)
        for text in body.decode("utf-8", errors="replace").splitlines():
            counter.lines += 1
            if pattern.search(text) and not any(e.search(text) for e in exclude):
                counter.errors += 1
        totals["lines"] += counter.lines
        totals["errors"] += counter.errors

    await asyncio.gather(*(one(p["metadata"]["name"]) for p in pods["items"]))
    return {**totals, "capped": False, "message": ""}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect with the kubeconfig as `gatekeeper serve` would, scan once, report."""
    rule = log_rule(args.limit_bytes)
    settings = KubernetesConfig(mode="kubeconfig", kubeconfig=args.kubeconfig,
                                request_timeout=args.timeout)
    before = reporting.rss_mib()
    async with kubeclient.connect(settings) as api:
        scan = streaming if args.mode == "streaming" else whole_body
        t0, cpu0 = time.perf_counter(), time.process_time()
        answer = await scan(api, rule, args.window)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"mode": args.mode, "seconds": seconds, "cpu_s": cpu, **answer,
            "limit_bytes": args.limit_bytes, "rss_before_mib": before.get("rss_mib"),
            **reporting.rss_mib()}


def main() -> None:
    """Parse arguments, scan, print the JSON document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--mode", choices=("streaming", "whole-body"), default="streaming")
    parser.add_argument("--limit-bytes", type=int, required=True)
    parser.add_argument("--window", type=int, default=3600)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
