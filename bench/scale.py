"""Benchmark 3, evaluation scale: N pairs x the default rules against a real Prometheus.

A SyntheticFleet (own process) exports 1,000 pairs' series: per namespace 10 request
counters (5 status codes x 2 methods) and a 12-bucket latency histogram. Prometheus scrapes
it every 5 s and holds a full evaluation window before anything is measured. For each size,
gatekeeper's strategy (one query per rule for all namespaces, identical queries shared) and
the naive one (the same rule queries rendered per namespace, sent through the same
PrometheusSource and thread pool) run in fresh worker processes one after the other.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import reporting, workers
from bench.fleet_worker import namespaces
from bench.reporting import Options, Outcome
from telemetry_sandbox import AlertmanagerServer, PrometheusServer, ScrapeTarget, make_alert

NAME = "scale"
SIZES = (10, 100, 500, 1000)
QUICK_SIZES = (10, 100)
SCRAPE_S = 5.0
WINDOW_S = 60.0
PREFIX = "s"
ALERT_EVERY = 50
"""Every 50th dark namespace has a critical alert firing, so some verdicts are unsafe."""


def _wait_for_window(prometheus: PrometheusServer, job: str) -> float:
    """Block until Prometheus holds a full window of scrapes; returns the seconds waited."""
    started = time.monotonic()
    prometheus.wait_for_scrapes(job, timeout_s=60)
    wanted = int(WINDOW_S / SCRAPE_S)
    prometheus.wait_for(
        f'count_over_time(up{{job="{job}"}}[{WINDOW_S:g}s])',
        lambda result: bool(result) and float(result[0]["value"][1]) >= wanted,
        timeout_s=WINDOW_S + 60, interval_s=1.0,
    )
    return time.monotonic() - started


def _alerts(pairs: int) -> list[dict[str, Any]]:
    # Alerts without endsAt resolve after Alertmanager's resolve_timeout (5 min): set one.
    until = datetime.now(UTC) + timedelta(hours=1)
    return [make_alert("HighErrorRate", green, severity="critical", ends_at=until)
            for index, (_blue, green) in enumerate(namespaces(pairs, PREFIX))
            if index % ALERT_EVERY == 0]


def _repetitions(strategy: str, pairs: int, options: Options) -> tuple[int, int, float]:
    """(warm-up cycles, counted cycles, seconds budget): a naive cycle over 1,000 pairs takes
    about a minute here, so large naive runs are measured once, without a warm-up."""
    if options.quick:
        return 1, 2, 30.0
    if strategy == "grouped":
        return 1, 5, 30.0
    return (1, 3, 60.0) if pairs <= 100 else (0, 1, 120.0)


def import_rss() -> list[dict[str, Any]]:
    """RSS of a fresh interpreter after each group of imports a `gatekeeper serve` needs."""
    steps = [
        ("python", ""),
        ("pydantic rules and config", "import gatekeeper.rules, gatekeeper.config"),
        ("gatekeeper.statistics (scipy.stats until 830a7ef)", "import gatekeeper.statistics"),
        ("evaluator, judge, Prometheus/Alertmanager sources",
         "import gatekeeper.evaluating, gatekeeper.sources.prometheus, "
         "gatekeeper.sources.alertmanager"),
        ("kubernetes_asyncio (log and Kubernetes sources)",
         "import gatekeeper.sources.logs, gatekeeper.sources.kubernetes"),
    ]
    script = ["import json", "from bench.reporting import rss_mib", "out = []"]
    for label, statement in steps:
        if statement:
            script.append(statement)
        script.append(f"out.append({{'step': {label!r}, **rss_mib()}})")
    script.append("print(json.dumps({'steps': out}))")
    answer = workers.run_python("\n".join(script), timeout_s=120)
    steps_out: list[dict[str, Any]] = answer["steps"]
    previous = 0.0
    for step in steps_out:
        step["added_mib"] = round(step["rss_mib"] - previous, 1)
        previous = step["rss_mib"]
    return steps_out


def _row(run: dict[str, Any]) -> dict[str, Any]:
    seconds = [c["seconds"] for c in run["cycles"]]
    return {
        "cpu_s": reporting.summary([c["cpu_s"] for c in run["cycles"]]),
        "prometheus_exec_s": run["prometheus_exec_s"],
        "strategy": run["strategy"],
        "pairs": run["pairs"],
        "rules": run["rules"],
        "cycles_measured": len(seconds),
        "cycle_s": reporting.summary(seconds),
        "promql_queries_per_cycle": max(c["promql_queries"] for c in run["cycles"]),
        "alertmanager_requests_per_cycle": max(c["alertmanager_requests"]
                                               for c in run["cycles"]),
        "verdicts": run["verdicts"],
        "rule_statuses": run["rule_statuses"],
        "rss_after_imports_mib": run["rss_before_mib"],
        "rss_mib": run.get("rss_mib"),
        "peak_rss_mib": run.get("peak_rss_mib"),
    }


def run(options: Options) -> Outcome:
    """Start fleet, Alertmanager and Prometheus; measure every size with both strategies."""
    sizes = QUICK_SIZES if options.quick else SIZES
    largest = max(sizes)
    fleet = workers.helper("fleet", "bench.fleet_worker",
                           ["--pairs", str(largest), "--prefix", PREFIX])
    rows: list[dict[str, Any]] = []
    with fleet, AlertmanagerServer() as alertmanager:
        target = ScrapeTarget("fleet", (f"127.0.0.1:{fleet.port}",), honor_labels=True)
        with PrometheusServer([target], scrape_interval_s=SCRAPE_S,
                              evaluation_interval_s=SCRAPE_S) as prometheus:
            alertmanager.post_alerts(_alerts(largest))
            waited = _wait_for_window(prometheus, "fleet")
            series = prometheus.query_result('count({__name__=~"http_.*"})')
            for pairs in sizes:
                for strategy in ("grouped", "naive"):
                    warmup, cycles, budget = _repetitions(strategy, pairs, options)
                    answer = workers.run_worker("bench.scale_worker", [
                        "--prometheus", prometheus.url, "--alertmanager", alertmanager.url,
                        "--pairs", str(pairs), "--prefix", PREFIX, "--strategy", strategy,
                        "--warmup", str(warmup), "--cycles", str(cycles),
                        "--budget-s", str(budget), "--window", f"{WINDOW_S:g}",
                    ], timeout_s=budget * 3 + 120)
                    rows.append(_row(answer))
                    print(f"  scale: {pairs} pairs, {strategy}: "
                          f"{rows[-1]['cycle_s']['p50']:.3f} s per cycle", flush=True)
    return _outcome(rows, import_rss(), waited=waited,
                    series=int(float(series[0]["value"][1])))


def _verdicts(row: dict[str, Any]) -> str:
    text = " ".join(f"{k}={v}" for k, v in sorted(row["verdicts"].items()))
    errors = row["rule_statuses"].get("error", 0)
    return text + (f" (rule errors={errors}!)" if errors else "")


def _outcome(rows: list[dict[str, Any]], imports: list[dict[str, Any]], *, waited: float,
             series: int) -> Outcome:
    by_key = {(r["pairs"], r["strategy"]): r for r in rows}
    table_rows = []
    for (pairs, strategy), row in by_key.items():
        cycle = row["cycle_s"]
        ratio = ""
        if strategy == "naive" and (pairs, "grouped") in by_key:
            ratio = f"{cycle['p50'] / by_key[(pairs, 'grouped')]['cycle_s']['p50']:.1f}x"
        server = row["prometheus_exec_s"]
        table_rows.append([
            pairs, strategy, row["cycles_measured"], cycle["p50"], cycle["max"], ratio,
            row["cpu_s"]["p50"], "" if server is None else server,
            row["promql_queries_per_cycle"], row["alertmanager_requests_per_cycle"],
            row["peak_rss_mib"], _verdicts(row),
        ])
    text = reporting.table(
        f"Evaluation scale: 8 default rules, window {WINDOW_S:g}s, scrape {SCRAPE_S:g}s, "
        f"{series:,} series in Prometheus",
        ["pairs", "strategy", "cycles", "p50 s", "max s", "vs grouped", "CPU s",
         "Prom exec s", "PromQL/cycle", "AM req/cycle", "peak RSS MiB", "verdicts"],
        table_rows,
    )
    memory = reporting.table(
        "RSS of a fresh interpreter, import by import (what a cycle starts from)",
        ["step", "RSS MiB", "added MiB"],
        [[step["step"], step["rss_mib"], step["added_mib"]] for step in imports],
    )
    grouped_queries = sorted({r["promql_queries_per_cycle"] for r in rows
                              if r["strategy"] == "grouped"})
    targets = {
        "cycle_s_at_500_pairs": {
            "target": "<= 1.0 (p50)",
            "measured": by_key.get((500, "grouped"), {}).get("cycle_s", {}).get("p50")},
        "promql_queries_per_cycle": {
            "target": "== number of Prometheus rules (4)", "measured": grouped_queries},
        "peak_rss_mib_at_1000_pairs": {
            "target": "<= 200",
            "measured": by_key.get((1000, "grouped"), {}).get("peak_rss_mib")},
    }
    notes = [
        "Rules: all 8 default rules are judged. The 4 Prometheus rules and the Alertmanager "
        "rule query the real servers; the 3 log and Kubernetes rules get a constant in-memory "
        "answer (bench.sources.Constant), so their fetching cost is not included.",
        f"Prometheus scraped the fleet every {SCRAPE_S:g}s; measuring started after a full "
        f"{WINDOW_S:g}s window of data ({waited:.0f}s wait), so every rate() reads "
        f"{WINDOW_S / SCRAPE_S:.0f} samples per series.",
        "Each (size, strategy) runs in a fresh worker process; RSS is that process's, with "
        "every source module imported as in `gatekeeper serve`. CPU s is the worker's own "
        "CPU time per cycle (parsing, judging); Prom exec s is Prometheus's execTotalTime for "
        "the cycle's distinct queries sent one after the other.",
        "Identical queries within a cycle are sent once in both strategies; the naive one "
        "differs only by one query per namespace instead of one for all, at most 8 in flight "
        "(the PrometheusSource pool size, and Alertmanager's default GET concurrency).",
    ]
    return Outcome(results={"runs": rows, "import_rss": imports, "series_in_prometheus": series,
                            "scrape_interval_s": SCRAPE_S, "window_s": WINDOW_S},
                   targets=targets, tables=[text, memory], notes=notes)
