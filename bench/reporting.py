"""What every benchmark reports: the machine, percentiles, a printed table, a JSON file.

Pure helpers plus file writes; no benchmark logic. Timings are reported, never asserted.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Options:
    """What `python -m bench` was asked for."""

    quick: bool = False
    """A smoke run: fewer repetitions and sizes; figures are not representative."""
    profile: Path | None = None
    """Where to write cProfile statistics of the measured gatekeeper process, if anywhere."""


@dataclass
class Outcome:
    """A benchmark's answer: figures, the targets they are read against, printed tables."""

    results: dict[str, Any]
    targets: dict[str, Any]
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """count, min, p50, p90, p99, max and mean of a list of measurements."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        return "missing"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, load and software versions: what the figures depend on."""
    cpu = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "prometheus": _version("prometheus"),
        "alertmanager": _version("prometheus-alertmanager"),
        "git_commit": _git_commit(),
    }


def rss_mib(pid: int | str = "self") -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MiB."""
    out: dict[str, float] = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key = "rss_mib" if line.startswith("VmRSS") else "peak_rss_mib"
            out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU time a process has used so far (from /proc/PID/stat)."""
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    if len(fields) < 13:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with `digits` significant digits, the rest as str."""
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_result(
    name: str, outcome: Outcome, *, started: float, options: Options,
    directory: Path = RESULTS,
) -> Path:
    """Write `<directory>/<name>.json` (atomically) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "command": f"make bench BENCH_ARGS='--only {name}'",
        "quick": options.quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "targets": outcome.targets,
        "notes": outcome.notes,
        "results": outcome.results,
    }
    path = directory / f"{name}.json"
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(_clean(document), indent=2, allow_nan=False) + "\n")
    partial.replace(path)
    return path


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, floats are rounded, tuples become lists."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return value
