"""Render seconds as Prometheus/Alertmanager duration strings (`1s`, `250ms`, `0s`)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """Both configs take Go-style durations; milliseconds keep sub-second values exact."""
    if seconds < 0:
        raise ValueError(f"duration must be >= 0, got {seconds}")
    millis = round(seconds * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"
