"""`python -m bench.fleet_worker --port P --pairs N`: a SyntheticFleet in a process of its own.

Rendering /metrics for thousands of namespaces costs a second of CPU per scrape; in its own
process that work does not hold the GIL of the process being measured. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading

from telemetry_sandbox import SyntheticFleet


def namespaces(pairs: int, prefix: str) -> list[tuple[str, str]]:
    """(blue, green) namespace names of `pairs` pairs, e.g. `s0007-blue`, `s0007-green`."""
    return [(f"{prefix}{i:04d}-blue", f"{prefix}{i:04d}-green") for i in range(pairs)]


def populate(fleet: SyntheticFleet, pairs: int, prefix: str) -> None:
    """Healthy traffic, different per pair and the same for both namespaces of a pair, so
    every verdict is decided by the rules' absolute thresholds and alerts (deterministic)."""
    for index, (blue, green) in enumerate(namespaces(pairs, prefix)):
        for namespace in (blue, green):
            fleet.set_profile(namespace, rps=20.0 + (index % 7) * 30.0,
                              error_ratio=0.001 + (index % 5) * 0.0005,
                              latency_p99_s=0.25 + (index % 4) * 0.05)


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pairs", type=int, required=True)
    parser.add_argument("--prefix", default="s")
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # The HTTP thread advances time on every scrape: no separate ticker work needed.
    # No log lines: the sharded bench judges with Prometheus rules only.
    fleet = SyntheticFleet(port=args.port, tick_s=3600.0, log_lines=False)
    populate(fleet, args.pairs, args.prefix)
    with fleet:
        stop.wait()


if __name__ == "__main__":
    main()
