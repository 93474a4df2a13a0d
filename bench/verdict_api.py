"""Benchmark 4, verdict API: what a pipeline asks gatekeeper, against asking Prometheus.

`gatekeeper serve` (own process, bench.service_stack) holds 10 pairs judged by all 8 shipped
rules against real sources: Prometheus scraping a SyntheticFleet, Alertmanager, the emulated
API server's pods and logs. wrk (a second process, loopback) loads `GET /api/v1/pairs/{pair}`
and `GET /api/v1/pairs/{pair}/flip-check` at 1, 10 and 100 connections for a bounded time;
side by side, the PromQL instant query a pipeline would otherwise send to that Prometheus
(the dark namespace's error rate, as the shipped rule renders it for one namespace).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from typing import Any

from bench import reporting, service_stack
from bench.reporting import Options, Outcome
from gatekeeper.durations import promql_duration
from gatekeeper.rules import load_rule_set
from gatekeeper.templating import render
from telemetry_sandbox import (
    AlertmanagerServer,
    PrometheusServer,
    ScrapeTarget,
    SyntheticFleet,
    httpjson,
)

NAME = "verdict_api"
PAIRS = 10
CONNECTIONS = (1, 10, 100)
DURATION_S = 5
QUICK_DURATION_S = 2
WINDOW_S = 60.0
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (seconds), request and error counts from wrk."""
    result: dict[str, Any] = {}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["requests_per_s"] = float(rate.group(1)) if rate else float("nan")
    for percent, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.MULTILINE):
        result[f"p{percent}_s"] = _seconds(value)
    total = re.search(r"(\d+) requests in", output)
    result["requests"] = int(total.group(1)) if total else 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors:.*", output)
    result["socket_errors"] = errors.group(0) if errors else ""
    return result


def wrk(url: str, connections: int, duration: int) -> dict[str, Any]:
    """One bounded wrk run (it stops by itself; killed if it overruns)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    threads = min(connections, 2)
    done = subprocess.run(
        [binary, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
         "--timeout", "5s", "--latency", url],
        capture_output=True, text=True, timeout=duration + 30, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
    return parse_wrk(done.stdout)


def promql_url(prometheus_url: str, namespace: str) -> str:
    """The shipped error-rate rule, rendered for one namespace, as a GET instant query."""
    rule_set = load_rule_set([reporting.ROOT / "rules" / "default.yaml"])
    rule = next(r for r in rule_set.rules if r.name == "error-rate")
    assert rule.query is not None
    query = render(rule.query, {**rule_set.variables, "namespaces": namespace,
                                "window": promql_duration(WINDOW_S)})
    return f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"


def _wait_judged(url: str, pair: str, timeout_s: float) -> dict[str, Any]:
    """Until the pair's verdict is decided on data (not `unknown`)."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = httpjson.get_json(f"{url}/api/v1/pairs/{pair}/flip-check", timeout_s=5)
        except httpjson.HTTPStatusError as exc:  # 409: not safe, body still tells
            body = json.loads(exc.body)
        if body.get("verdict") not in (None, "unknown"):
            return body
        time.sleep(1.0)
    raise TimeoutError(f"pair {pair} still not judged after {timeout_s}s: {body}")


def run(options: Options) -> Outcome:
    """Stack up, wait for real verdicts, then wrk each endpoint at each concurrency."""
    duration = QUICK_DURATION_S if options.quick else DURATION_S
    pairs = service_stack.pairs("va", PAIRS)
    rows: list[dict[str, Any]] = []
    with SyntheticFleet() as fleet, AlertmanagerServer() as alertmanager:
        for pair in pairs:
            for namespace in (pair.blue, pair.green):
                fleet.set_profile(namespace, rps=100.0, error_ratio=0.002)
        target = ScrapeTarget("fleet", (fleet.address,), honor_labels=True)
        with PrometheusServer([target], scrape_interval_s=1.0) as prometheus:
            prometheus.wait_for_scrapes("fleet", timeout_s=60)
            sources = {"prometheus": {"url": prometheus.url},
                       "alertmanager": {"url": alertmanager.url}}
            with service_stack.running(
                    pairs, rule_file=reporting.ROOT / "rules" / "default.yaml",
                    evaluation={"interval": "15s", "window": f"{WINDOW_S:g}s"},
                    policy={"auto_flip": False}, sources=sources,
                    profile=options.profile and options.profile / "verdict_api.prof"
            ) as stack:
                judged = _wait_judged(stack.url, pairs[0].name, 90)
                targets = {
                    "GET /api/v1/pairs/{pair}": f"{stack.url}/api/v1/pairs/{pairs[0].name}",
                    "GET /api/v1/pairs/{pair}/flip-check":
                        f"{stack.url}/api/v1/pairs/{pairs[0].name}/flip-check",
                    "Prometheus instant query (error rate)":
                        promql_url(prometheus.url, pairs[0].green),
                }
                sizes = {name: len(httpjson.request("GET", url, timeout_s=10)[1])
                         if "flip-check" not in name else None for name, url in targets.items()}
                for connections in CONNECTIONS:
                    for name, url in targets.items():
                        figures = wrk(url, connections, duration)
                        rows.append({"endpoint": name, "connections": connections,
                                     "duration_s": duration, **figures})
                        print(f"  verdict_api: {name}, {connections} connections: "
                              f"{figures['requests_per_s']:,.0f} req/s", flush=True)
    return _outcome(rows, judged, sizes)


def _outcome(rows: list[dict[str, Any]], judged: dict[str, Any],
             sizes: dict[str, int | None]) -> Outcome:
    table_rows = []
    for row in rows:
        table_rows.append([row["endpoint"], row["connections"], row["requests_per_s"],
                           row.get("p50_s", float("nan")) * 1000,
                           row.get("p99_s", float("nan")) * 1000, row["requests"],
                           row["non_2xx"], row["socket_errors"] or "-"])
    text = reporting.table(
        f"Verdict API under wrk (loopback, {rows[0]['duration_s'] if rows else 0} s per run)",
        ["endpoint", "connections", "req/s", "p50 ms", "p99 ms", "requests", "non-2xx",
         "socket errors"], table_rows)
    at_ten = {r["endpoint"]: r for r in rows if r["connections"] == 10}
    targets = {
        name: {"target": ">= 3000 req/s and p99 <= 20 ms at 10 connections",
               "measured_requests_per_s": row["requests_per_s"],
               "measured_p99_ms": row.get("p99_s", float("nan")) * 1000}
        for name, row in at_ten.items() if name.startswith("GET /api")
    }
    notes = [
        f"The flip-check answer was '{judged.get('status')}' (verdict "
        f"{judged.get('verdict')}): HTTP {'200' if judged.get('safe') else '409'}, which wrk "
        "counts as non-2xx; it is still the complete answer a pipeline reads.",
        f"Response sizes in bytes: {sizes}.",
        "wrk runs 2 threads (1 for one connection) with --latency; the machine's 2 CPUs are "
        "shared by wrk, gatekeeper, Prometheus and the emulated API server.",
    ]
    return Outcome(results={"runs": rows, "flip_check_answer": judged,
                            "response_bytes": sizes}, targets=targets, tables=[text],
                   notes=notes)
