"""The judgment benchmark's real-Prometheus run: the shipped rules through the real source.

A real Prometheus scrapes a synthetic fleet every second whose clock runs 20x faster than
real time, so one real second holds 20 s of virtual traffic at the configured rates. Each
scenario is a pair (active started before the soak, dark whose soak starts with the run);
every virtual 15 s the Evaluator judges all pairs with `since` = the soak start, exactly as
the controller does during validation. Reported per scenario: the first virtual minute the
dark was unsafe (if ever) and how many looks ended safe, unknown (pending) or unsafe.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.rules import load_rule_set
from gatekeeper.sources.prometheus import PrometheusSource
from telemetry_sandbox import PrometheusServer, ScrapeTarget, SyntheticFleet

ROOT = Path(__file__).resolve().parent.parent
SPEED = 20.0
LOOK_VIRTUAL_S = 15.0
HISTORY_REAL_S = 30.0  # the actives' head start: 10 virtual minutes
SCENARIOS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "identical 0.1 %": ({"rps": 10, "error_ratio": 0.001}, {"rps": 10, "error_ratio": 0.001}),
    "5xx x5": ({"rps": 10, "error_ratio": 0.001}, {"rps": 10, "error_ratio": 0.005}),
    "5xx x10": ({"rps": 10, "error_ratio": 0.001}, {"rps": 10, "error_ratio": 0.01}),
    "p99 +60 %": ({"rps": 10, "latency_p50_s": 0.1, "latency_p99_s": 0.5},
                  {"rps": 10, "latency_p50_s": 0.1, "latency_p99_s": 0.8}),
}


def _rules() -> Any:
    shipped = load_rule_set([ROOT / "rules" / "default.yaml"])
    rules = tuple(r for r in shipped.rules if r.source == "prometheus")
    return shipped.model_copy(update={"rules": rules})


async def run(*, virtual_minutes: float = 20.0) -> dict[str, Any]:
    """Run every scenario for `virtual_minutes` of soak; return per-scenario figures."""
    start = time.monotonic()

    def clock() -> float:
        return start + (time.monotonic() - start) * SPEED

    pairs = {name: PairConfig(name=f"s{index}", namespaces=(f"s{index}-blue", f"s{index}-green"),
                              routes=(RouteRef(name="live", namespace="routing"),))
             for index, name in enumerate(SCENARIOS)}
    results: dict[str, Any] = {}
    with SyntheticFleet(clock=clock, warm_start_s=0) as fleet:
        for name, (active, _) in SCENARIOS.items():
            fleet.set_profile(pairs[name].namespaces[0], **active)
        target = ScrapeTarget("fleet", (fleet.address,), honor_labels=True)
        with PrometheusServer([target]) as prometheus:
            prometheus.wait_for_scrapes("fleet", timeout_s=30)
            await asyncio.sleep(HISTORY_REAL_S)
            for name, (_, dark) in SCENARIOS.items():
                fleet.set_profile(pairs[name].namespaces[1], **dark)
            soak_started = time.time()
            source = PrometheusSource(prometheus.url, timeout=5)
            evaluator = Evaluator(_rules(), {"prometheus": source}, window=60.0 / SPEED,
                                  source_timeout=10)
            looks = int(virtual_minutes * 60 / LOOK_VIRTUAL_S)
            tally = {name: {"safe": 0, "unknown": 0, "unsafe": 0, "first_unsafe_min": None}
                     for name in SCENARIOS}
            try:
                for look in range(1, looks + 1):
                    due = soak_started + look * LOOK_VIRTUAL_S / SPEED
                    await asyncio.sleep(max(0.0, due - time.time()))
                    assignments = [Assignment(pairs[name], pairs[name].namespaces[1],
                                              pairs[name].namespaces[0], since=soak_started)
                                   for name in SCENARIOS]
                    verdicts = await evaluator.evaluate(assignments)
                    for name in SCENARIOS:
                        verdict = verdicts[pairs[name].name].verdict
                        tally[name][verdict] += 1
                        if verdict == "unsafe" and tally[name]["first_unsafe_min"] is None:
                            tally[name]["first_unsafe_min"] = look * LOOK_VIRTUAL_S / 60
            finally:
                await source.close()
            results = {"speed": SPEED, "looks": looks, "rps": 10, "scenarios": tally}
    return results
