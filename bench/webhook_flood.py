"""Benchmark: one Alertmanager notification carrying thousands of alerts.

`gatekeeper serve` against the emulated API server (own processes, bench.service_stack) with
2 pairs, both flipped to green; pair 0 is then rolled back by one alert and flipped again,
so it is in its cooldown. One notification per size carries that many distinct critical
alerts for pair 0's active namespace (Alertmanager sends a group's alerts together; a broken
release fires a per-pod alert for every pod). Measured per size: webhook POST sent -> answer
received, and the emulated API server's request count over that time (it includes any
control-loop tick that ran meanwhile; the interval is 60 s so there is rarely one). Last, a
notification of 800 alerts for pair 1 that rolls it back.

The test (tests/test_service_limits.py) asserts the request bound; this measures the time.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import reporting, service_stack
from bench.reporting import Options, Outcome
from bench.rollback import kubernetes_rules
from telemetry_sandbox import httpjson

NAME = "webhook_flood"
SIZES = (1000, 5800, 10000)
QUICK_SIZES = (1000, 5800)
ROLLBACK_ALERTS = 800
ALERTMANAGER_TIMEOUT_S = 10.0
"""Alertmanager's default webhook timeout (`http_config` has none; the notify timeout)."""
_fingerprints = itertools.count()



def _now() -> str:
    """Alerts that start now: after the flip, so they concern the current release."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")

def notification(namespace: str, count: int) -> bytes:
    """A version 4 webhook body with `count` distinct firing critical alerts."""
    alerts = [{"status": "firing",
               "labels": {"alertname": "PodErrors", "namespace": namespace,
                          "severity": "critical", "pod": f"api-{k}"},
               "annotations": {"summary": "5xx over budget"},
               "startsAt": _now(), "endsAt": "0001-01-01T00:00:00Z",
               "fingerprint": f"{next(_fingerprints):016x}"} for k in range(count)]
    return json.dumps({"version": "4", "status": "firing", "receiver": "gatekeeper",
                       "groupKey": '{}:{alertname="PodErrors"}', "alerts": alerts}).encode()


def _requests(stack: service_stack.Stack) -> int:
    answer = httpjson.get_json(f"{stack.emulator_url}/_emulator/requests?limit=0")
    return int(answer["total"])


def _post(stack: service_stack.Stack, body: bytes) -> dict[str, Any]:
    before = _requests(stack)
    started = time.perf_counter()
    _status, raw = httpjson.request(
        "POST", f"{stack.url}/api/v1/alertmanager", data=body, timeout_s=120,
        headers={**stack.auth, "Content-Type": "application/json"})
    took = time.perf_counter() - started
    answer = json.loads(raw)
    return {"seconds": took, "api_requests": _requests(stack) - before,
            "outcome": answer["outcome"], "body_bytes": len(body)}


def _flip(stack: service_stack.Stack, pair: service_stack.Pair) -> None:
    httpjson.request("POST", f"{stack.url}/api/v1/pairs/{pair.name}/flip",
                     payload={"force": True, "to": pair.green}, headers=stack.auth,
                     timeout_s=30)


def run(options: Options) -> Outcome:
    """Two pairs, one in cooldown; one notification per size, then one that rolls back."""
    sizes = QUICK_SIZES if options.quick else SIZES
    pairs = service_stack.pairs("wf", 2)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-webhook-flood-") as scratch:
        rules = kubernetes_rules(Path(scratch))
        with service_stack.running(
                pairs, rule_file=rules, evaluation={"interval": "60s"},
                policy={"auto_flip": False, "cooldown": "1h"},
                sources={"webhook": {"max_body_bytes": 64 * 1024 * 1024}},
                profile=options.profile and options.profile / "webhook_flood.prof") as stack:
            for pair in pairs:
                _flip(stack, pair)
            first = _post(stack, notification(pairs[0].green, 1))
            if first["outcome"] != "rollback":
                raise RuntimeError(f"the first alert did not roll back: {first}")
            _flip(stack, pairs[0])
            time.sleep(1.0)  # let the ticks the route changes woke finish
            for size in sizes:
                row = _post(stack, notification(pairs[0].green, size))
                rows.append({"alerts": size, "pair_state": "cooldown", **row})
                print(f"  webhook_flood: {size} alerts: {row['seconds']:.3f} s, "
                      f"{row['api_requests']} API requests", flush=True)
            row = _post(stack, notification(pairs[1].green, ROLLBACK_ALERTS))
            rows.append({"alerts": ROLLBACK_ALERTS, "pair_state": "flipped", **row})
    table = reporting.table(
        "One webhook notification with many alerts (2 pairs, loopback)",
        ["alerts", "pair", "outcome", "answer s", "API requests", "body MiB"],
        [[r["alerts"], r["pair_state"], r["outcome"], r["seconds"], r["api_requests"],
          r["body_bytes"] / 2**20] for r in rows])
    worst = max(r["seconds"] for r in rows)
    targets = {"answer": {"target": f"well inside Alertmanager's {ALERTMANAGER_TIMEOUT_S:g} s "
                                    "timeout at every size",
                          "measured_worst_s": worst},
               "api_requests": {"target": "bounded by the pairs concerned, not the alerts",
                                "measured_max": max(r["api_requests"] for r in rows)}}
    notes = ["Before grouping by pair: 5,800 alerts took 12.4 s and 11,696 API requests, "
             "10,000 took 21.5 s and 20,168 (issue 11)."]
    return Outcome(results={"runs": rows}, targets=targets, tables=[table], notes=notes)
