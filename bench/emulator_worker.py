"""`python -m bench.emulator_worker --port P --pods N --lines L`: the emulated API server with
N Ready pods of Deployment `api` in namespace `logs`, each holding L log lines.

Runs in a process of its own, so rendering log bodies does not share the GIL (or the RSS)
of the process being measured. The lines are written before the server listens: ready
means filled. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from kube_emulator import Emulator
from kube_emulator.server import serve_until_signal
from telemetry_sandbox.loglines import access_line, error_line, exception_line

NAMESPACE = "logs"
SELECTOR = "app=api"
ERROR_EVERY = 97
"""One line in 97 is an ERROR or Exception line (about 1 %)."""
EXCLUDED_EVERY = 101
"""One line in 101 mentions an error the default rule excludes (`error_count=0`)."""


def objects(pods: int) -> list[dict[str, Any]]:
    """Namespace `logs` and Deployment `api` with `pods` replicas."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "api", "namespace": NAMESPACE},
         "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "api"}},
                  "template": {"metadata": {"labels": {"app": "api"}},
                               "spec": {"containers": [{"name": "api",
                                                        "image": "registry.example.com/api:1"}]}}}},
    ]


def line(seq: int, wall: float) -> str:
    """The `seq`-th line of a pod's log: access lines, ~1 % errors, some excluded mentions."""
    path = "/api/franchises/lsu-tigers"
    if seq % ERROR_EVERY == 0:
        return (exception_line(wall, "api", "GET", path, seq) if seq % 2 else
                error_line(wall, "api", "GET", path, 503, 0.8, seq))
    if seq % EXCLUDED_EVERY == 0:
        return f"{access_line(wall, 'api', 'POST', path, 200, 0.02, seq)} error_count=0"
    return access_line(wall, "api", "GET", path, 200, 0.012, seq)


def expected_errors(lines: int) -> int:
    """Error lines per pod the default log rule must count."""
    return sum(1 for seq in range(1, lines + 1) if seq % ERROR_EVERY == 0)


def fill(emulator: Emulator, pods: int, lines: int) -> None:
    """Create the pods and append `lines` lines to each (the same text in every pod)."""
    emulator.load(objects(pods))
    wall = time.time()
    text = [line(seq, wall) for seq in range(1, lines + 1)]
    for pod in emulator.pods(NAMESPACE):
        emulator.append_logs(NAMESPACE, pod["metadata"]["name"], text, timestamp=wall)


def main() -> None:
    """Fill, then serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pods", type=int, required=True)
    parser.add_argument("--lines", type=int, required=True)
    args = parser.parse_args()
    emulator = Emulator(log_lines_per_container=max(args.lines, 1))
    fill(emulator, args.pods, args.lines)
    asyncio.run(serve_until_signal(emulator, port=args.port))


if __name__ == "__main__":
    main()
