"""The picture at the end: error rate and p99 per namespace from Prometheus' range API, the
active namespace as a band, and markers for releases, flips and rollbacks.

A newcomer should see in one glance why each flip and rollback happened, so every curve comes
from the same Prometheus gatekeeper judged against, not from the demo's own bookkeeping.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import Bbox

from demo.events import Event, Record

# `or ... * 0`: a namespace serving no 5xx at all is at 0 %, not missing from the picture.
ERROR_RATIO_QUERY = (
    '(sum by (namespace) (rate(http_requests_total{{status=~"5.."}}[{w}]))'
    " or sum by (namespace) (rate(http_requests_total[{w}])) * 0)"
    " / sum by (namespace) (rate(http_requests_total[{w}]))"
)
RATE_QUERY = "sum by (namespace) (rate(http_requests_total[{w}]))"
MIN_RPS = 8.0
"""Points backed by fewer requests per second are not drawn: when a namespace's traffic
stops, its last few straggling requests would otherwise paint 100 % errors."""
P99_QUERY = (
    "histogram_quantile(0.99, sum by (namespace, le) "
    "(rate(http_request_duration_seconds_bucket[{w}])))"
)
COLOURS = {"production-blue": "#1f5fbf", "production-green": "#2a9d3a"}
BANDS = {"production-blue": "#dbe6f7", "production-green": "#dcf0de"}
MARKERS = {
    "release": ("#555555", ":"),
    "flip": ("#000000", "-"),
    "rollback": ("#c0392b", "--"),
    "refused": ("#e67e22", "-."),
    "alert": ("#c0392b", ":"),
}

Series = dict[str, list[tuple[float, float]]]
"""namespace -> [(unix time, value)]."""


@dataclass(frozen=True)
class Curves:
    """What Prometheus said over the demo's lifetime."""

    error_ratio: Series
    p99: Series


def query_range(
    prometheus_url: str, promql: str, start: float, end: float, step: float = 1.0
) -> Series:
    """One range query, as {namespace: [(t, v)]}; NaN points (0/0) are dropped."""
    params = urllib.parse.urlencode(
        {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
    )
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query_range?{params}", timeout=10) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"Prometheus range query failed: {answer}")
    series: Series = {}
    for result in answer["data"]["result"]:
        namespace = result["metric"].get("namespace", "")
        points = [(float(t), float(v)) for t, v in result["values"]]
        series[namespace] = [(t, v) for t, v in points if math.isfinite(v)]
    return series


def fetch_curves(prometheus_url: str, start: float, end: float, *, window: str = "5s") -> Curves:
    """Error ratio and p99 per namespace between `start` and `end` (1 s resolution), only
    where the namespace served at least MIN_RPS."""
    rates = query_range(prometheus_url, RATE_QUERY.format(w=window), start, end)
    busy = {ns: {t for t, v in points if v >= MIN_RPS} for ns, points in rates.items()}

    def served(series: Series) -> Series:
        return {ns: [(t, v) for t, v in points if t in busy.get(ns, set())]
                for ns, points in series.items()}

    return Curves(
        error_ratio=served(query_range(
            prometheus_url, ERROR_RATIO_QUERY.format(w=window), start, end)),
        p99=served(query_range(prometheus_url, P99_QUERY.format(w=window), start, end)),
    )


def _spans(active: Sequence[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """Turn route observations into (from, to, namespace) bands."""
    spans = []
    for index, (start, namespace) in enumerate(active):
        stop = active[index + 1][0] if index + 1 < len(active) else end
        spans.append((start, stop, namespace))
    return spans


def render(path: Path, curves: Curves, record: Record, end: float) -> Path:
    """Draw the two panels with bands and markers and write a PNG."""
    origin = record.started
    fig, (err_ax, lat_ax) = plt.subplots(
        2, 1, figsize=(13, 8), sharex=True, gridspec_kw={"height_ratios": [1, 1]}
    )
    fig.suptitle(
        "gatekeeper demo: three releases, one automatic flip, one refusal, one automatic rollback",
        fontsize=13,
    )
    for ax in (err_ax, lat_ax):
        for start, stop, namespace in _spans(record.active, end):
            ax.axvspan(start - origin, stop - origin, color=BANDS.get(namespace, "#eeeeee"), lw=0)
        ax.grid(True, color="#cccccc", lw=0.5, alpha=0.7)
    _plot(err_ax, curves.error_ratio, origin, scale=100.0)
    _plot(lat_ax, curves.p99, origin, scale=1000.0)
    err_ax.set_ylabel("5xx share of requests (%)")
    lat_ax.set_ylabel("p99 latency (ms)")
    lat_ax.set_xlabel("seconds since the demo started")
    peak = max((v for pts in curves.error_ratio.values() for _, v in pts), default=0.05)
    err_ax.set_ylim(0, max(peak * 100 * 1.45, 5.0))  # headroom for the marker labels
    lat_ax.set_ylim(bottom=0)
    first = min([t for s in (curves.error_ratio, curves.p99) for pts in s.values()
                 for t, _ in pts[:1]] + [e.time for e in record.events], default=origin)
    left, right = max(0.0, first - origin - 1.0), end - origin
    err_ax.set_xlim(left, right)
    _acts(err_ax, record.events, origin)
    handles, labels = err_ax.get_legend_handles_labels()
    for namespace, colour in BANDS.items():
        handles.append(Rectangle((0, 0), 1, 1, color=colour))
        labels.append(f"traffic on {namespace}")
    for kind, text in (("release", "new images in dark"), ("flip", "flip"),
                       ("refused", "pipeline check refused"), ("alert", "critical alert"),
                       ("rollback", "rollback")):
        colour, style = MARKERS[kind]
        handles.append(Line2D([], [], color=colour, ls=style, lw=1.3))
        labels.append(text)
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _markers(err_ax, lat_ax, record.events, origin)  # after layout: no overlaps
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot(ax: Axes, series: Mapping[str, list[tuple[float, float]]], origin: float,
          *, scale: float) -> None:
    for namespace in sorted(series):
        points = series[namespace]
        if not points:
            continue
        xs, ys = _with_gaps(points, origin, scale)
        ax.plot(xs, ys, color=COLOURS.get(namespace), lw=1.6, label=namespace)


def _with_gaps(
    points: Sequence[tuple[float, float]], origin: float, scale: float
) -> tuple[list[float], list[float]]:
    """Break the line where Prometheus had no data (a namespace scaled to zero)."""
    xs: list[float] = []
    ys: list[float] = []
    previous: float | None = None
    for t, v in points:
        if previous is not None and t - previous > 2.5:
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append(t - origin)
        ys.append(v * scale)
        previous = t
    return xs, ys


def _markers(top: Axes, bottom: Axes, events: Sequence[Event], origin: float) -> None:
    """Vertical lines for each marker, labelled at the top of the upper panel; a label that
    would overlap an earlier one moves one row down, and one that would leave the panel on
    the right extends to the left of its line."""
    labelled = sorted((e for e in events if e.kind in MARKERS), key=lambda e: e.time)
    renderer = top.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    placed: list[Bbox] = []
    for event in labelled:
        colour, style = MARKERS[event.kind]
        x = event.time - origin
        for ax in (top, bottom):
            ax.axvline(x, color=colour, ls=style, lw=1.3)
        label = top.annotate(
            event.label,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -4),
            textcoords="offset points",
            fontsize=8,
            color=colour,
            va="top",
            ha="left",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
        if label.get_window_extent(renderer).x1 > top.get_window_extent(renderer).x1:
            label.set_horizontalalignment("right")
            label.xyann = (-3, -4)
        for row in range(6):
            label.xyann = (label.xyann[0], -4 - 12 * row)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(label.get_window_extent(renderer))


def _acts(top: Axes, events: Sequence[Event], origin: float) -> None:
    """The acts' names above the upper panel, where each act begins."""
    for event in events:
        if event.kind == "act":
            top.annotate(event.label, xy=(event.time - origin, 1.0),
                         xycoords=("data", "axes fraction"), xytext=(0, 4),
                         textcoords="offset points", fontsize=9, fontweight="bold",
                         va="bottom", ha="left")
