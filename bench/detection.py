"""Benchmark 2, detection: a dark namespace's error rate jumps at T; when is it unsafe?

Method. Pairs of fresh namespaces serve 200 req/s at 0.1 % errors while a real Prometheus
scrapes them every second, until a full evaluation window of healthy data exists. Then, per
trial, the dark namespace's profile jumps to 50 % errors at a time T chosen so that the
trials spread over the phase of both the evaluation and the scrape interval. An evaluation
loop shaped like the service's (a tick every `interval`, the 8 default rules; log and
Kubernetes rules answered in memory) judges every pair; detection is the end of the first
tick whose verdict is unsafe. A profile change mixes old and new traffic in the rate()
window, so part of the delay belongs to the rule, not to gatekeeper: each trial is replayed
afterwards with the same evaluator asking Prometheus as of past instants (binary search,
50 ms), which finds the first instant any evaluation could have said unsafe ("data ready").
detection - data ready is gatekeeper's share: at most one interval plus one cycle.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench import reporting
from bench.reporting import Options, Outcome
from bench.sources import Constant
from gatekeeper.config import PairConfig, RouteRef
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.rules import RuleSet, load_rule_set
from gatekeeper.sources.alertmanager import AlertmanagerSource
from gatekeeper.sources.base import Source
from gatekeeper.sources.prometheus import Answer, PrometheusSource
from telemetry_sandbox import AlertmanagerServer, PrometheusServer, ScrapeTarget, SyntheticFleet

NAME = "detection"
SCRAPE_S = 1.0
INTERVALS = (1.0, 15.0)
WINDOW_S = 60.0
QUICK_WINDOW_S = 20.0
TRIALS = 10
QUICK_TRIALS = 3
RPS = 200.0
HEALTHY = 0.001
BROKEN = 0.5
REPLAY_PRECISION_S = 0.05


class PastPrometheus(PrometheusSource):
    """The real PrometheusSource (same parsing and measurements), answering as of `at`."""

    at: float = 0.0

    def __init__(self, url: str, **options: Any) -> None:
        # Samples are stamped `at`: judge their age against that moment, not now.
        super().__init__(url, clock=lambda: self.at, **options)

    async def instant(self, query: str) -> Answer:
        """The instant query evaluated at `self.at` (wall-clock seconds)."""
        return await self.query({"query": query, "time": f"{self.at:.3f}"})


@dataclass
class Trial:
    """One pair whose dark (green) namespace breaks at `planned`."""

    assignment: Assignment
    planned: float
    jumped_at: float | None = None
    detected_at: float | None = None
    data_ready_at: float | None = None
    verdicts_before: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The pair's name."""
        return self.assignment.pair.name


def _trials(interval: float, count: int, start: float) -> list[Trial]:
    """Jumps spread over one interval's phase; the 0.137 s step also walks the scrape phase."""
    out = []
    for k in range(count):
        blue, green = f"d{interval:g}-{k}-blue", f"d{interval:g}-{k}-green"
        pair = PairConfig(name=f"d{interval:g}-{k}", namespaces=(blue, green),
                          routes=(RouteRef(name="api-live", namespace="routing"),))
        planned = start + 2.0 + k * (interval / count) + k * 0.137
        out.append(Trial(Assignment(pair, candidate=green, baseline=blue), planned))
    return out


def _rule_set() -> RuleSet:
    return load_rule_set([reporting.ROOT / "rules" / "default.yaml"])


def _sources(prometheus: PrometheusSource, alertmanager_url: str) -> dict[str, Source]:
    return {"prometheus": prometheus,
            "alertmanager": AlertmanagerSource(alertmanager_url, timeout=5),
            "logs": Constant("logs"), "kubernetes": Constant("kubernetes")}


async def _jump(fleet: SyntheticFleet, trial: Trial) -> None:
    await asyncio.sleep(max(0.0, trial.planned - time.time()))
    fleet.set_profile(trial.assignment.candidate, error_ratio=BROKEN)
    trial.jumped_at = time.time()


async def _watch(evaluator: Evaluator, trials: list[Trial], interval: float,
                 deadline: float) -> list[float]:
    """Tick like the service's controller until every trial is detected or the deadline."""
    cycles = []
    work = [t.assignment for t in trials]
    while time.time() < deadline and any(t.detected_at is None for t in trials):
        started, wall = time.monotonic(), time.time()
        verdicts = await evaluator.evaluate(work)
        ended = time.time()
        cycles.append(time.monotonic() - started)
        for trial in trials:
            verdict = verdicts[trial.name]
            if trial.jumped_at is None or trial.jumped_at > wall:
                trial.verdicts_before[verdict.verdict] = (
                    trial.verdicts_before.get(verdict.verdict, 0) + 1)
            elif trial.detected_at is None and verdict.verdict == "unsafe":
                trial.detected_at = ended
                trial.reasons = list(verdict.reasons[:2])
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    return cycles


async def _replay(evaluator: Evaluator, prometheus: PastPrometheus, trial: Trial) -> None:
    """First instant in [T, detected] at which an evaluation would have said unsafe."""
    if trial.jumped_at is None or trial.detected_at is None:
        return

    async def unsafe(at: float) -> bool:
        prometheus.at = at
        verdicts = await evaluator.evaluate([trial.assignment])
        return verdicts[trial.name].verdict == "unsafe"

    low, high = trial.jumped_at, trial.detected_at
    if await unsafe(low):
        trial.data_ready_at = low
        return
    if not await unsafe(high):  # scrapes landed late live; keep the live moment
        trial.data_ready_at = high
        return
    while high - low > REPLAY_PRECISION_S:
        middle = (low + high) / 2
        if await unsafe(middle):
            high = middle
        else:
            low = middle
    trial.data_ready_at = high


async def _measure(fleet: SyntheticFleet, prometheus_url: str, alertmanager_url: str,
                   trials: list[Trial], interval: float, window: float) -> dict[str, Any]:
    rule_set = _rule_set()
    live = PrometheusSource(prometheus_url, timeout=5)
    evaluator = Evaluator(rule_set, _sources(live, alertmanager_url), window=window,
                          source_timeout=10)
    jumps = [asyncio.create_task(_jump(fleet, t)) for t in trials]
    deadline = max(t.planned for t in trials) + interval + window + 10
    try:
        cycles = await _watch(evaluator, trials, interval, deadline)
    finally:
        for task in jumps:
            task.cancel()
        await asyncio.gather(*jumps, return_exceptions=True)
        for source in evaluator.sources.values():
            await source.close()
    past = PastPrometheus(prometheus_url, timeout=5)
    replayer = Evaluator(rule_set, _sources(past, alertmanager_url), window=window,
                         source_timeout=10)
    try:
        for trial in trials:
            await _replay(replayer, past, trial)
    finally:
        for source in replayer.sources.values():
            await source.close()
    return _summarise(trials, interval, cycles)


def _delay(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else end - start


def _summarise(trials: list[Trial], interval: float, cycles: list[float]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for trial in trials:
        jumped, detected, ready = trial.jumped_at, trial.detected_at, trial.data_ready_at
        rows.append({
            "pair": trial.name,
            "detected_s": _delay(detected, jumped),
            "data_ready_s": _delay(ready, jumped),
            "gatekeeper_s": _delay(detected, ready),
            "verdicts_before_jump": trial.verdicts_before,
            "first_reasons": trial.reasons,
        })

    def values(key: str) -> list[float]:
        return [r[key] for r in rows if r[key] is not None]

    return {
        "interval_s": interval,
        "trials": rows,
        "missed": sum(r["detected_s"] is None for r in rows),
        "false_unsafe_before_jump": sum(r["verdicts_before_jump"].get("unsafe", 0)
                                        for r in rows),
        "detected_s": reporting.summary(values("detected_s")),
        "data_ready_s": reporting.summary(values("data_ready_s")),
        "gatekeeper_s": reporting.summary(values("gatekeeper_s")),
        "cycle_s": reporting.summary(cycles),
    }


async def _run(options: Options) -> list[dict[str, Any]]:
    window = QUICK_WINDOW_S if options.quick else WINDOW_S
    count = QUICK_TRIALS if options.quick else TRIALS
    results = []
    with SyntheticFleet() as fleet, AlertmanagerServer() as alertmanager:
        sets = {interval: _trials(interval, count, 0.0) for interval in INTERVALS}
        for trials in sets.values():
            for trial in trials:
                for namespace in trial.assignment.pair.namespaces:
                    fleet.set_profile(namespace, rps=RPS, error_ratio=HEALTHY)
        target = ScrapeTarget("fleet", (fleet.address,), honor_labels=True)
        with PrometheusServer([target], scrape_interval_s=SCRAPE_S) as prometheus:
            prometheus.wait_for_scrapes("fleet", timeout_s=60)
            await asyncio.to_thread(
                prometheus.wait_for, f'count_over_time(up{{job="fleet"}}[{window:g}s])',
                lambda r: bool(r) and float(r[0]["value"][1]) >= window / SCRAPE_S,
                window + 60, interval_s=1.0)
            for interval, trials in sets.items():
                start = time.time()
                for trial in trials:
                    trial.planned += start
                summary = await _measure(fleet, prometheus.url, alertmanager.url, trials,
                                         interval, window)
                summary["window_s"] = window
                results.append(summary)
                print(f"  detection: interval {interval:g}s: p50 "
                      f"{summary['detected_s'].get('p50', float('nan')):.2f}s, max "
                      f"{summary['detected_s'].get('max', float('nan')):.2f}s", flush=True)
    return results


def run(options: Options) -> Outcome:
    """Both intervals against one Prometheus and fleet."""
    results = asyncio.run(_run(options))
    rows = []
    targets: dict[str, Any] = {}
    for result in results:
        interval = result["interval_s"]
        detected, ready, own = (result["detected_s"], result["data_ready_s"],
                                result["gatekeeper_s"])
        rows.append([
            f"{interval:g}", detected.get("count", 0), result["missed"],
            detected.get("p50", float("nan")), detected.get("max", float("nan")),
            ready.get("p50", float("nan")), ready.get("max", float("nan")),
            own.get("p50", float("nan")), own.get("max", float("nan")),
            result["cycle_s"].get("p50", float("nan")), result["false_unsafe_before_jump"],
        ])
        targets[f"interval_{interval:g}s"] = {
            "target": f"detection - rate-window mixing <= interval + scrape = "
                      f"{interval + SCRAPE_S:g}s",
            "measured_max_detection_s": detected.get("max"),
            "measured_max_gatekeeper_share_s": own.get("max"),
            "measured_max_data_ready_s": ready.get("max"),
        }
    window = results[0]["window_s"] if results else WINDOW_S
    text = reporting.table(
        f"Detection: 0.1 % -> 50 % errors at T, scrape {SCRAPE_S:g}s, window {window:g}s "
        f"(seconds after T)",
        ["interval s", "trials", "missed", "detected p50", "detected max", "data ready p50",
         "data ready max", "gatekeeper p50", "gatekeeper max", "cycle p50", "false unsafe"],
        rows,
    )
    notes = [
        "data ready = first instant at which an evaluation could have said unsafe "
        "(the next scrape after T plus the rate-window mixing of old and new traffic), found "
        "by replaying the same evaluator against Prometheus as of past instants.",
        "gatekeeper = detected - data ready: waiting for the next tick plus the tick itself.",
        "The evaluation loop is the bench's copy of the service's tick shape (fixed interval "
        "between tick starts), so it does not depend on the service process.",
    ]
    return Outcome(results={"runs": results, "scrape_interval_s": SCRAPE_S, "rps": RPS,
                            "error_ratio_before": HEALTHY, "error_ratio_after": BROKEN},
                   targets=targets, tables=[text], notes=notes)
