"""`python -m bench.scale_worker ...`: evaluation cycles of one strategy at one size.

Runs in a process of its own so its RSS is gatekeeper's alone. Prints one JSON document:
cycle times, PromQL queries and Alertmanager requests per cycle, verdict counts, RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

import structlog

# What `gatekeeper serve` holds in memory: every source module, so the baseline RSS is honest.
import gatekeeper.sources.kubernetes
import gatekeeper.sources.logs  # noqa: F401
from bench import reporting
from bench.fleet_worker import namespaces
from bench.sources import Constant, Counting, PerNamespace
from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.durations import promql_duration
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.rules import RuleSet, load_rule_set
from gatekeeper.sources.alertmanager import AlertmanagerSource
from gatekeeper.sources.base import Source
from gatekeeper.sources.prometheus import PrometheusSource
from gatekeeper.templating import namespace_regex, render

ROUTES = (RouteRef(name="api-live", namespace="routing"),)


def assignments(pairs: int, prefix: str) -> list[Assignment]:
    """Green (dark) judged against blue (active) for every pair."""
    out = []
    for index, (blue, green) in enumerate(namespaces(pairs, prefix)):
        pair = PairConfig(name=f"pair-{index:04d}", namespaces=(blue, green), routes=ROUTES)
        out.append(Assignment(pair, candidate=green, baseline=blue))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up cycles, then counted cycles until `cycles` or `budget_s` (at least one)."""
    rule_set = load_rule_set([reporting.ROOT / "rules" / "default.yaml"])
    prometheus = PrometheusSource(args.prometheus, timeout=args.timeout)
    alertmanager = Counting(AlertmanagerSource(args.alertmanager, timeout=args.timeout))
    am_requests = alertmanager
    real: dict[str, Source] = {"prometheus": prometheus, "alertmanager": alertmanager}
    if args.strategy == "naive":
        real = {name: PerNamespace(source) for name, source in real.items()}
    sources: dict[str, Source] = {**real, "logs": Constant("logs"),
                                  "kubernetes": Constant("kubernetes")}
    evaluator = Evaluator(rule_set, sources, window=args.window,
                          source_timeout=args.budget_s, max_concurrency=8)
    work = assignments(args.pairs, args.prefix)
    before = reporting.rss_mib()
    cycles: list[dict[str, Any]] = []
    verdicts: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    started = time.monotonic()
    profiler = cProfile.Profile() if args.profile else None
    try:
        for index in range(args.warmup + args.cycles):
            if index == args.warmup and profiler is not None:
                profiler.enable()
            queries, requests = prometheus.queries_sent, am_requests.calls
            t0, cpu0 = time.perf_counter(), time.process_time()
            result = await evaluator.evaluate(work)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            if index < args.warmup:
                continue  # connections, caches
            cycles.append({"seconds": seconds, "cpu_s": cpu,
                           "promql_queries": prometheus.queries_sent - queries,
                           "alertmanager_requests": am_requests.calls - requests})
            verdicts = Counter(v.verdict for v in result.values())
            statuses = Counter(r.status for v in result.values()
                               for r in (*v.candidate.results, *v.baseline.results))
            if time.monotonic() - started > args.budget_s:
                break
    finally:
        if profiler is not None:
            profiler.disable()
            _report_profile(profiler, args.profile)
        for source in sources.values():
            await source.close()
    server = _prometheus_time(args, rule_set, work) if args.strategy == "grouped" else None
    return {
        "prometheus_exec_s": server,
        "strategy": args.strategy,
        "pairs": args.pairs,
        "rules": len(rule_set.rules),
        "prometheus_rules": sum(r.source == "prometheus" for r in rule_set.rules),
        "cycles": cycles,
        "verdicts": dict(verdicts),
        "rule_statuses": dict(statuses),
        "rss_before_mib": before.get("rss_mib"),
        **reporting.rss_mib(),
    }


def _report_profile(profiler: cProfile.Profile, path: str) -> None:
    """Save the profile and print the 25 functions with the most own time to stderr."""
    profiler.dump_stats(path)
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)


def _prometheus_time(
    args: argparse.Namespace, rule_set: RuleSet, work: list[Assignment]
) -> float:
    """Prometheus's own time (`stats=all` execTotalTime) for one cycle's distinct queries,
    sent one after the other: the part of a cycle gatekeeper cannot make faster."""
    names = namespace_regex(ns for item in work for ns in (item.candidate, item.baseline))
    values = {**rule_set.variables, "namespaces": names, "window": promql_duration(args.window)}
    queries = {render(text, values) for rule in rule_set.rules if rule.source == "prometheus"
               for text in (rule.query, rule.samples_query) if text}
    total = 0.0
    for query in sorted(queries):
        body = urllib.parse.urlencode({"query": query, "stats": "all"}).encode()
        request = urllib.request.Request(f"{args.prometheus}/api/v1/query", data=body)
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            answer = json.load(response)
        total += float(answer["data"]["stats"]["timings"]["execTotalTime"])
    return total


def main() -> None:
    """Parse arguments, run, print the JSON document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--alertmanager", required=True)
    parser.add_argument("--pairs", type=int, required=True)
    parser.add_argument("--prefix", default="s")
    parser.add_argument("--strategy", choices=("grouped", "naive"), required=True)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted cycles first")
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the counted cycles into FILE (top 25 on stderr)")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
