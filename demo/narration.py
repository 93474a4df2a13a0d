"""A readable timeline on stdout, told from what the running parts report.

Phase changes and their reasons come from gatekeeper's own API (its audit trail), verdicts
with the failing rules and values from its cached evaluation, action latency from its
`/metrics`, alerts from Prometheus and Alertmanager, and the route from the cluster. The
narrator only watches; the story never tells it what happened.
"""

from __future__ import annotations

import contextlib
import heapq
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

from demo.events import EventKind, Record
from demo.monitoring import ALERT_NAME, ALERT_THRESHOLD
from demo.stack import PAIR, Stack
from telemetry_sandbox import httpjson
from telemetry_sandbox.httpjson import HTTPStatusError

_POLL_S = 0.25
_DELAY_S = 1.0
_VERDICT_QUIET_S = 5.0
_PROGRESS_EVERY_S = 4.0
_PROGRESS = re.compile(r"consecutive passes|soaked|observing")
_ERRORS = (OSError, HTTPStatusError, ValueError, KeyError, TypeError)


@dataclass
class Snapshot:
    """The latest readings, for the story's expectations."""

    pair: dict[str, Any] = field(default_factory=dict)
    active: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    firing: set[str] = field(default_factory=set)


def metric_values(text: str) -> dict[str, float]:
    """Flatten an exposition into {'name{a="b"}': value} for the few series the demo reads."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return values


class Narrator:
    """Polls everything a few times a second and prints what changed, with timestamps."""

    def __init__(self, stack: Stack, record: Record, out: TextIO = sys.stdout) -> None:
        self.stack = stack
        self.record = record
        self.out = out
        self.snapshot = Snapshot()
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-narrator", daemon=True)
        self._seen_history: set[tuple[Any, ...]] = set()
        self._verdict: tuple[str, tuple[str, ...]] | None = None
        self._verdict_at = 0.0
        self._reason_shape = ""
        self._reason_at = 0.0
        self._last_reason = ""
        self._phase = ""
        self._alerts: dict[str, str] = {}
        self._alert_values: dict[str, str] = {}
        self._webhooks: dict[str, float] = {}
        self._degraded: set[str] = set()
        self._unreachable: set[str] = set()
        self._pending: list[tuple[float, int, str]] = []
        self._sequence = 0

    # -- output ----------------------------------------------------------------------------------

    def say(self, topic: str, text: str, *, at: float | None = None) -> None:
        """Queue one timeline line (wall clock, seconds since start, topic, text).

        Lines are printed in time order about a second later: gatekeeper's audit trail can
        arrive a poll after the route change it caused, and the timeline must not jump back.
        """
        moment = time.time() if at is None else at
        clock = time.strftime("%H:%M:%S", time.localtime(moment))
        offset = moment - self.record.started
        lines = text.splitlines() or [""]
        rendered = [f"{clock} {offset:6.1f}s  {topic:<11} {lines[0]}"]
        rendered += [f"{'':21}{'':<11} {line}" for line in lines[1:]]
        self._queue(moment, "\n".join(rendered))

    def banner(self, text: str) -> None:
        """An act's title, set apart from the timeline."""
        self._queue(time.time(), f"\n=== {text} ===")

    def _queue(self, moment: float, text: str) -> None:
        with self._print_lock:
            self._sequence += 1
            heapq.heappush(self._pending, (moment, self._sequence, text))
        if not self._thread.is_alive():
            self.flush()

    def flush(self, *, older_than: float | None = None) -> None:
        """Print queued lines (all, or those older than a moment) in time order."""
        with self._print_lock:
            while self._pending and (older_than is None or self._pending[0][0] <= older_than):
                _moment, _seq, text = heapq.heappop(self._pending)
                print(text, file=self.out)
            self.out.flush()

    def mark(self, kind: EventKind, label: str, *, at: float | None = None) -> None:
        """Remember a marker for the picture."""
        self.record.add(time.time() if at is None else at, kind, label)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Narrator:
        """Keep watching in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (bounded) and print what is still queued."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

    def read(self) -> Snapshot:
        """A copy of the latest readings."""
        with self._lock:
            return Snapshot(dict(self.snapshot.pair), self.snapshot.active,
                            dict(self.snapshot.metrics), set(self.snapshot.firing))

    def _run(self) -> None:
        count = 0
        while not self._stop.wait(_POLL_S):
            count += 1
            self._tick(count)
            self.flush(older_than=time.time() - _DELAY_S)

    def _tick(self, count: int) -> None:
        self._watch("gatekeeper API", self._pair)
        self._watch("cluster", self._route)
        self._watch("world", self._world)
        self._watch("Prometheus", self._prometheus_alerts)
        self._watch("Alertmanager", self._alertmanager_alerts)
        if count % 2 == 0:
            self._watch("gatekeeper metrics", self._metrics)

    def _watch(self, what: str, poll: Callable[[], None]) -> None:
        try:
            poll()
            self._unreachable.discard(what)
        except _ERRORS as exc:
            if what not in self._unreachable:
                self._unreachable.add(what)
                self.say("warning", f"cannot read {what}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a narration bug must not stop the watching
            if what not in self._unreachable:
                self._unreachable.add(what)
                self.say("warning", f"narrator failed reading {what}: "
                                    f"{type(exc).__name__}: {exc}")

    # -- gatekeeper ------------------------------------------------------------------------------

    def _pair(self) -> None:
        pair = httpjson.get_json(f"{self.stack.gatekeeper_url}/api/v1/pairs/{PAIR}", timeout_s=2)
        with self._lock:
            self.snapshot.pair = pair
        fresh = []
        for entry in pair.get("history") or []:
            key = (entry.get("at"), entry.get("kind"), entry.get("from"), entry.get("to"))
            if key not in self._seen_history:
                self._seen_history.add(key)
                fresh.append(entry)
        for entry in sorted(fresh, key=lambda e: float(e.get("at") or 0.0)):
            self._history(entry)
            if entry.get("kind") == "phase":
                self._phase = str(entry.get("to"))
        self._verdict_changed(pair)
        if self._phase in ("", pair.get("phase")):  # else its transition is not in the trail yet
            self._reason(pair)

    def _history(self, entry: dict[str, Any]) -> None:
        at = float(entry.get("at") or time.time())
        kind = entry.get("kind")
        trigger = entry.get("trigger") or ""
        reason = entry.get("reason") or ""
        if kind == "phase":
            self.say("phase", f"{entry.get('from')} → {entry.get('to')} [{trigger}]: {reason}",
                     at=at)
            self._last_reason, self._reason_shape = reason, _shape(reason)
            self._reason_at = time.monotonic()
        elif kind in ("flip", "rollback"):
            self.say(kind, f"{entry.get('from')} → {entry.get('to')} [{trigger}] {reason}",
                     at=at)
            target = str(entry.get("to") or "?").removeprefix("production-")
            self.mark("flip" if kind == "flip" else "rollback",
                      f"{kind} → {target} ({trigger})", at=at)
        elif kind == "scale_up":
            counts = ", ".join(f"{d} → {n}" for d, n in (entry.get("deployments") or {}).items())
            self.say("scale-up", f"{entry.get('namespace')}: {counts} replicas", at=at)
        elif kind == "scale_down":
            counts = ", ".join(f"{d} → {entry.get('keep', 0)}"
                               for d in entry.get("deployments") or [])
            self.say("scale-down", f"{entry.get('namespace')}: {counts} replicas", at=at)
        else:
            details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "kind"))
            self.say(str(kind), details, at=at)

    def _verdict_changed(self, pair: dict[str, Any]) -> None:
        """The verdict on the dark namespace with its failing rules and their values, when
        the verdict or the set of failing rules changes (at most every few seconds)."""
        result = pair.get("result") or {}
        verdict = str(pair.get("verdict") or "unknown")
        reasons = [str(r) for r in result.get("reasons") or () if not str(r).startswith("score")]
        failing = tuple(sorted({r.split(" ", 1)[0] for r in reasons}))
        now = time.monotonic()
        if self._verdict is not None:
            if (verdict, failing) == self._verdict:
                return
            if verdict == self._verdict[0] and now - self._verdict_at < _VERDICT_QUIET_S:
                return
        self._verdict, self._verdict_at = (verdict, failing), now
        score = pair.get("dark_score")
        score_text = "" if score is None else f", score {score:.0f}%"
        lines = [f"{pair.get('dark')} (dark): {verdict.upper()}{score_text}"]
        lines += [f"  - {reason}" for reason in reasons[:4]]
        if len(reasons) > 4:
            lines.append(f"  - ... and {len(reasons) - 4} more")
        self.say("verdict", "\n".join(lines))

    def _reason(self, pair: dict[str, Any]) -> None:
        """The lifecycle's running commentary: new kinds of reasons at once, progress (soak,
        passes, observation) every few seconds, repeats of the same complaint never."""
        reason = str(pair.get("reason") or "")
        if not reason or reason == self._last_reason:
            return
        shape, now = _shape(reason), time.monotonic()
        if shape == self._reason_shape and (
                not _PROGRESS.search(reason) or now - self._reason_at < _PROGRESS_EVERY_S):
            return
        self._reason_shape, self._reason_at, self._last_reason = shape, now, reason
        self.say("gatekeeper", f"{pair.get('phase')}: {reason}")

    def _metrics(self) -> None:
        _status, body = httpjson.request("GET", f"{self.stack.gatekeeper_url}/metrics",
                                         timeout_s=2)
        values = metric_values(body.decode())
        with self._lock:
            self.snapshot.metrics = values
        outcomes: list[str] = []
        for key, value in sorted(values.items()):
            if not key.startswith("gatekeeper_webhook_requests_total{"):
                continue
            calls = int(value - self._webhooks.get(key, 0.0))
            if calls > 0:
                outcomes.append(f"{calls} {_label(key, 'outcome')}")
                self._webhooks[key] = value
        if outcomes:
            total = int(sum(self._webhooks.values()))
            self.say("webhook", f"gatekeeper answered Alertmanager's calls: {', '.join(outcomes)} "
                                f"(total {total})")

    # -- the world -------------------------------------------------------------------------------

    def _route(self) -> None:
        active = self.stack.cluster.active()
        with self._lock:
            previous, self.snapshot.active = self.snapshot.active, active
        if active != previous:
            now = time.time()
            self.record.saw_active(now, active)
            if previous is not None:
                self.say("route", f"api-live now sends traffic to {active} (was {previous})")

    def _world(self) -> None:
        for version in sorted(self.stack.traffic.degraded - self._degraded):
            self._degraded.add(version)
            release = self.stack.traffic.releases[version]
            self.say("world", f"release {version} degrades under production traffic: "
                              f"{release.degraded_error_ratio:.0%} of requests fail, p99 "
                              f"{release.degraded_p99_s * 1000:.0f} ms")
            self.mark("degrade", f"{version} degrades")

    def _prometheus_alerts(self) -> None:
        """Alerts turning pending in Prometheus (firing is told with Alertmanager's line)."""
        answer = httpjson.get_json(f"{self.stack.prometheus.url}/api/v1/alerts", timeout_s=2)
        for alert in answer["data"]["alerts"]:
            labels = alert.get("labels") or {}
            if labels.get("alertname") != ALERT_NAME:
                continue
            namespace = str(labels.get("namespace", ""))
            self._alert_values[namespace] = _percent(alert.get("value"))
            state = str(alert.get("state"))
            if state == "pending" and self._alerts.get(namespace) != state:
                self.say("Prometheus", f"{ALERT_NAME} pending for {namespace}: 5xx share "
                                       f"{self._alert_values[namespace]} above "
                                       f"{ALERT_THRESHOLD:.0%} (fires after 2s)",
                         at=_unix(alert.get("activeAt")))
            self._alerts[namespace] = state

    def _alertmanager_alerts(self) -> None:
        """Alerts Alertmanager holds, stamped with when Prometheus fired them."""
        alerts = self.stack.alertmanager.alerts({"alertname": ALERT_NAME}, timeout_s=2)
        starts = {str((a.get("labels") or {}).get("namespace", "")): _unix(a.get("startsAt"))
                  for a in alerts if (a.get("status") or {}).get("state") == "active"}
        firing = set(starts)
        with self._lock:
            before, self.snapshot.firing = self.snapshot.firing, firing
        count = len(self.stack.alertmanagers)
        for namespace in sorted(firing - before):
            self.say("alert", f"Prometheus fired {ALERT_NAME} (severity critical) for "
                              f"{namespace}, 5xx share {self._alert_values.get(namespace, '?')};"
                              f"\n{count} Alertmanagers (HA pair) send it to gatekeeper's "
                              "webhook", at=starts[namespace])
            self.mark("alert", f"alert fires: {namespace.removeprefix('production-')}",
                      at=starts[namespace])
        for namespace in sorted(before - firing):
            self.say("alert", f"{ALERT_NAME} resolved for {namespace}")


def _unix(text: Any) -> float | None:
    """An RFC 3339 timestamp (Prometheus, Alertmanager) as Unix seconds; None if unreadable.

    Both send nanoseconds, which `fromisoformat` does not take: cut to microseconds."""
    match = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)", str(text))
    if not match:
        return None
    whole, fraction, zone = match.groups()
    fraction = (fraction or "")[:7]
    zone = "+00:00" if zone in ("Z", "") else zone
    try:
        return datetime.fromisoformat(f"{whole}{fraction}{zone}").timestamp()
    except ValueError:
        return None


def _shape(text: str) -> str:
    """Text without its numbers: '2/3 passes, soaked 4s' and '3/3..., 5s' look alike."""
    return re.sub(r"[0-9.]+", "#", text)


def _label(key: str, name: str) -> str:
    match = re.search(rf'{name}="([^"]*)"', key)
    return match.group(1) if match else "?"


def _percent(value: Any) -> str:
    with contextlib.suppress(TypeError, ValueError):
        return f"{float(value) * 100:.0f}%"
    return "?"
