"""Benchmark: accuracy and cost of gatekeeper's synthetic load (gatekeeper.drivers.load).

The `load` driver runs alone in a worker process (bench.load_worker) against a real HTTP
service (telemetry_sandbox's SyntheticApp, answering in about a millisecond, served from
this process on a background thread) at 10, 100 and 500 requests/s, no ramp, for a fixed
time. Measured per rate: requests due by the schedule and sent over the run (achieved
rate, against the requested one; the difference is requests skipped at the concurrency
bound of 64), checks answered (as of the driver's last report) and failed, and the
worker's CPU time over the run, as a share of one core per 100 requests/s. Bounded: three
runs of 10 s (3 s with --quick), each worker killed past its deadline.
"""

from __future__ import annotations

from bench import reporting
from bench.reporting import Options, Outcome
from bench.workers import run_worker
from telemetry_sandbox import SyntheticApp

NAME = "load"
RATES = (10, 100, 500)
SECONDS = 10.0
QUICK_SECONDS = 3.0


def run(options: Options) -> Outcome:
    seconds = QUICK_SECONDS if options.quick else SECONDS
    results: dict[str, dict[str, float]] = {}
    app = SyntheticApp("green")
    app.set_profile(latency_p50_s=0.0005, latency_p99_s=0.002)
    with app:
        for rate in RATES:
            answer = run_worker("bench.load_worker", [
                "--port", str(app.port), "--rate", str(rate), "--seconds", str(seconds)],
                timeout_s=seconds + 60)
            achieved = answer["sent"] / seconds
            scheduled = (answer["sent"] + answer["skipped"]) / seconds
            results[str(rate)] = {
                "requested_rps": float(rate), "achieved_rps": achieved,
                "accuracy": achieved / rate, "scheduled_rps": scheduled,
                "sent": answer["sent"],
                "checked": answer["checked"], "failed": answer["failed"],
                "skipped": answer["skipped"], "cpu_s": answer["cpu_s"],
                "wall_s": answer["wall_s"],
                "cpu_share_per_100_rps": answer["cpu_s"] / answer["wall_s"] / (rate / 100),
            }
    rows = [(int(r["requested_rps"]), r["scheduled_rps"], r["achieved_rps"],
             f"{100 * r['accuracy']:.1f} %", int(r["skipped"]), int(r["checked"]),
             int(r["failed"]), f"{100 * r['cpu_share_per_100_rps']:.1f} %")
            for r in results.values()]
    table = reporting.table(
        f"synthetic load: requested vs achieved over {seconds:g} s, CPU of the driver's "
        "process", ["requested/s", "due/s", "sent/s", "accuracy", "skipped",
                    "checks (last report)", "failed", "CPU per 100/s (one core)"], rows)
    return Outcome(results=results,
                   targets={"accuracy": "achieved within 2 % of requested",
                            "cpu": "reported, per 100 requests/s"},
                   tables=[table],
                   notes=["The service answers in ~1 ms, so the figures are the driver's own "
                          "cost; a slower dark needs rate x latency requests in flight."])
