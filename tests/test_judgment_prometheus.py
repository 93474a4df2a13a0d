"""The shipped count comparisons against a real Prometheus fed by a synthetic fleet.

The fleet runs on a clock 20x faster than real time (its counters advance by 20 s of virtual
traffic per real second), so one virtual minute of 40 requests/s is 3 real seconds and
2,400 counted requests; Prometheus sees exactly the counts it would see at 40 requests/s.
The active namespaces start first and serve ~5 virtual minutes before the checks.
"""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.rules import load_rule_set
from gatekeeper.sources.prometheus import PrometheusSource
from telemetry_sandbox import SyntheticFleet

ROOT = Path(__file__).resolve().parent.parent
SPEED = 20.0
MINUTE = 60.0 / SPEED  # one virtual minute in real seconds
JOB = "judgment-fleet"
SCENARIOS = {
    # name: (active profile, dark profile)
    "errors": ({"rps": 40, "error_ratio": 0.0005}, {"rps": 40, "error_ratio": 0.006}),
    "same": ({"rps": 40, "error_ratio": 0.003}, {"rps": 40, "error_ratio": 0.003}),
    "slow": ({"rps": 200, "latency_p50_s": 0.1, "latency_p99_s": 0.5},
             {"rps": 200, "latency_p50_s": 0.1, "latency_p99_s": 0.75}),
    "quiet": ({"rps": 3, "error_ratio": 0.001}, {"rps": 3, "error_ratio": 0.001}),
}


@pytest.fixture(scope="module")
def fast_fleet(prometheus) -> Iterator[SyntheticFleet]:
    """All scenarios' namespaces on a 20x clock, scraped by the session Prometheus; returns
    once the actives have ~5 virtual minutes and the darks more than a virtual minute."""
    start = time.monotonic()

    def clock() -> float:
        return start + (time.monotonic() - start) * SPEED

    with SyntheticFleet(clock=clock, warm_start_s=0) as fleet:
        for name, (active, _) in SCENARIOS.items():
            fleet.set_profile(f"jv-{name}-blue", **active)
        prometheus.add_scrape_target(fleet.address, job=JOB, honor_labels=True)
        time.sleep(8)
        for name, (_, dark) in SCENARIOS.items():
            fleet.set_profile(f"jv-{name}-green", **dark)
        time.sleep(7)
        try:
            yield fleet
        finally:
            prometheus.remove_scrape_job(JOB)


def shipped_prometheus_rules():
    shipped = load_rule_set([ROOT / "rules" / "default.yaml"])
    rules = tuple(r for r in shipped.rules if r.source == "prometheus")
    return shipped.model_copy(update={"rules": rules})


async def judge(url: str, scenario: str, *, since: float | None = None):
    """The verdict on jv-<scenario>-green (dark) against -blue over one virtual minute."""
    blue, green = f"jv-{scenario}-blue", f"jv-{scenario}-green"
    pair = PairConfig(name=scenario, namespaces=(blue, green),
                      routes=(RouteRef(name="live", namespace="routing"),))
    prom = PrometheusSource(url, timeout=3)
    try:
        evaluator = Evaluator(shipped_prometheus_rules(), {"prometheus": prom}, window=MINUTE,
                              source_timeout=5)
        verdicts = await evaluator.evaluate([Assignment(pair, green, blue, since=since)])
    finally:
        await prom.close()
    verdict = verdicts[scenario]
    return verdict, {r.rule: r for r in verdict.candidate.results}


async def test_a_tenfold_error_rate_under_the_slo_is_unsafe_within_a_minute(
        prometheus, fast_fleet):
    """0.05 % vs 0.6 % 5xx at 40 req/s, one minute of the dark's counts: unsafe, though the
    absolute 1 % SLO rule passes."""
    verdict, results = await judge(prometheus.url, "errors")
    assert results["error-rate"].status == "pass"
    assert results["error-rate-vs-active"].status == "fail", results["error-rate-vs-active"]
    assert verdict.verdict == "unsafe"
    assert results["error-rate-vs-active"].reason.startswith("worse: rate 0.")


async def test_identical_error_rates_are_safe_over_ten_minutes(prometheus, fast_fleet):
    """Identical 0.3 % at 40 req/s, a look every virtual 15 s for 10 virtual minutes: over a
    one-minute window safe in at least 95 % of the looks (the counts are deterministic, so in
    all of them); counted since the dark became ready, never unsafe, pending only until about
    45 s of counts exist (5 errors cannot rule out a 5x regression), then safe."""
    since = time.time()
    windowed, sequential = [], []
    for look in range(1, 41):
        await asyncio.sleep(max(0.0, since + look * 15 / SPEED - time.time()))
        verdict, results = await judge(prometheus.url, "same")
        windowed.append(verdict.verdict)
        assert results["error-rate-vs-active"].status != "fail"
        verdict, results = await judge(prometheus.url, "same", since=since)
        sequential.append(verdict.verdict)
    assert windowed.count("safe") >= 0.95 * len(windowed), windowed
    assert "unsafe" not in sequential, sequential
    first_safe = sequential.index("safe")
    assert first_safe <= 6, sequential  # 90 virtual seconds at most (45 s expected)
    assert set(sequential[first_safe:]) == {"safe"}, sequential


async def test_a_fifty_percent_slower_p99_under_the_budget_is_unsafe(prometheus, fast_fleet):
    """p99 0.5 s -> 0.75 s (within the 2 s budget): the latency comparison fails and says
    both p99s with intervals."""
    verdict, results = await judge(prometheus.url, "slow")
    latency = results["latency-vs-active"]
    assert results["latency-p99"].status == "pass"
    assert latency.status == "fail", latency.reason
    assert verdict.verdict == "unsafe"
    assert "p99 0.7" in latency.reason and "vs active 0.5 s [" in latency.reason


async def test_a_good_release_at_3_requests_per_second_is_never_unsafe(prometheus, fast_fleet):
    """3 req/s, same 0.1 % errors: pending (unknown) or safe, never unsafe."""
    for _ in range(3):
        verdict, results = await judge(prometheus.url, "quiet")
        assert verdict.verdict in ("unknown", "safe"), verdict.reasons
        assert results["error-rate-vs-active"].status in ("pass", "no_data")
        await asyncio.sleep(1)


async def test_the_judged_span_starts_when_the_dark_became_ready(prometheus, fast_fleet):
    """With `since`, the count queries reach back to the dark's readiness, not the window."""
    _, results = await judge(prometheus.url, "errors", since=time.time() - 2.5)
    rate = results["error-rate-vs-active"]
    assert "[2s]" in rate.query and f"[{MINUTE:g}s]" not in rate.query
    _, results = await judge(prometheus.url, "errors")
    assert "[3s]" in results["error-rate-vs-active"].query
