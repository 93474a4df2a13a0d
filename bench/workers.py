"""Child processes of the benchmarks: Python workers answering one JSON document, and
long-running helpers (the fleet) managed like the sandbox's Prometheus.

Every child has a deadline and is killed when it passes; helpers die with the parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from bench.reporting import ROOT
from telemetry_sandbox import ManagedProcess


class WorkerError(RuntimeError):
    """A worker failed or ran past its deadline; the message ends with its stderr."""


def env() -> dict[str, str]:
    """The environment for children: the repository importable, loopback never proxied."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def run_worker(module: str, args: Sequence[str], *, timeout_s: float) -> dict[str, Any]:
    """Run `python -m module args...`; its last stdout line is the JSON answer."""
    return _answer(["-m", module, *args], module, timeout_s=timeout_s)


def _answer(argv: Sequence[str], module: str, *, timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, *argv]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              cwd=ROOT, env=env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        tail = (exc.stderr or b"")[-2000:]
        raise WorkerError(f"{module} ran past {timeout_s:g}s; stderr tail:\n{tail!r}") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise WorkerError(f"{module} exited {done.returncode}; stderr tail:\n"
                          f"{done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


def run_python(script: str, *, timeout_s: float) -> dict[str, Any]:
    """Run `python -c script` in a fresh interpreter; its last stdout line is the JSON answer."""
    return _answer(["-c", script], "python -c", timeout_s=timeout_s)


def helper(name: str, module: str, args: Sequence[str], *,
           ready_path: str = "/-/ready", ready_timeout_s: float = 60.0) -> ManagedProcess:
    """A long-running `python -m module --port PORT args...` on a loopback port (not started)."""

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", module, "--port", str(port), *args]

    return ManagedProcess(name, command, ready_path=ready_path, env=env(),
                          ready_timeout_s=ready_timeout_s)
