"""`python -m telemetry_sandbox`: run the stack by hand to poke at it with a browser or curl.

Starts the synthetic fleet with a blue/green pair, Prometheus scraping it and Alertmanager,
prints the URLs, and stops everything after `--duration` seconds or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import time

from telemetry_sandbox.alertmanager import AlertmanagerServer
from telemetry_sandbox.prometheus import PrometheusServer, ScrapeTarget
from telemetry_sandbox.synthetic_fleet import SyntheticFleet


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox for a bounded time."""
    parser = argparse.ArgumentParser(prog="python -m telemetry_sandbox", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to run")
    parser.add_argument("--blue-error-ratio", type=float, default=0.001)
    parser.add_argument("--green-error-ratio", type=float, default=0.05)
    args = parser.parse_args(argv)
    with SyntheticFleet() as fleet, AlertmanagerServer() as alertmanager:
        fleet.set_profile("production-blue", rps=200, error_ratio=args.blue_error_ratio)
        fleet.set_profile(
            "production-green", rps=200, error_ratio=args.green_error_ratio, latency_p99_s=0.8
        )
        target = ScrapeTarget("synthetic-fleet", (fleet.address,), honor_labels=True)
        with PrometheusServer([target], alertmanagers=[alertmanager.address]) as prometheus:
            print(f"fleet metrics  {fleet.url}/metrics")
            print(f"prometheus     {prometheus.url}")
            print(f"alertmanager   {alertmanager.url}")
            print(f"running for {args.duration:.0f}s (Ctrl-C stops earlier)", flush=True)
            try:
                time.sleep(args.duration)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
