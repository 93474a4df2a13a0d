"""`POST /api/v1/alertmanager`: Alertmanager's webhook rolls a bad release back.

The payload (version 4) is validated with pydantic; unknown fields are allowed because
Alertmanager adds fields over time. Firing alerts that match the configured matchers
(default `severity="critical"`) and name the pair's new active namespace roll the pair back,
as long as the previous namespace can take traffic; a `pair` label narrows an alert to that
pair, and an alert that started before the current release took traffic concerns an
earlier release (`predates_release`). Alertmanager delivers at least once and
HA pairs each send: the same alert (fingerprint and start time) is acted on once, and a
cooldown stops flapping. Any accepted payload is answered 2xx, even when nothing follows;
a malformed one 4xx (Alertmanager does not retry those), so a bad payload is not re-sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import aiohttp
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper.config import WebhookConfig
from gatekeeper.errors import NotLeaderError
from gatekeeper.service import jsonbody, responses
from gatekeeper.service.context import services_of
from gatekeeper.service.controller import Controller, ShuttingDown
from gatekeeper.service.dedupe import AlertDeduper
from gatekeeper.service.forwarding import FORWARDED_BY, Forwarder

__all__ = [
    "WebhookAlert",
    "WebhookPayload",
    "handle_alertmanager",
    "match_pairs",
    "parse_payload",
    "predates_release",
    "starts_at",
]

log = structlog.get_logger(__name__)

Outcome = Literal["rollback", "refused", "cooldown", "duplicate", "ignored"]
_RANK: dict[str, int] = {"rollback": 5, "refused": 4, "cooldown": 3, "duplicate": 2,
                         "ignored": 1}
_PREFERRED_PHASES = ("flipped", "stable", "blocked")


class _Lenient(BaseModel):
    """Alertmanager adds fields over time: keep them, validate what we use."""

    model_config = ConfigDict(extra="allow", str_max_length=65536)


class WebhookAlert(_Lenient):
    """One alert of the notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""

    def identity(self) -> str:
        """Same alert instance, whichever Alertmanager of an HA pair sent it."""
        key = self.fingerprint or hashlib.sha256(
            json.dumps(self.labels, sort_keys=True).encode()).hexdigest()[:16]
        return f"{key}@{self.startsAt}"

    def describe(self) -> str:
        """`HighErrorRate{namespace="prod-green", severity="critical"}` for reasons."""
        name = self.labels.get("alertname", "alert")
        labels = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())
                           if k != "alertname")
        summary = self.annotations.get("summary", "")
        return f"{name}{{{labels}}}" + (f": {summary}" if summary else "")


class WebhookPayload(_Lenient):
    """Alertmanager's webhook notification, version 4."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert]
    groupKey: str = ""
    truncatedAlerts: int = 0
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""


def parse_payload(body: bytes) -> WebhookPayload:
    """Validate a webhook body; ValueError with a message that names the bad field."""
    data = jsonbody.load_object(body)
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error["loc"]) or "body"
            problems.append(f"{where}: {error['msg']}")
        raise ValueError("invalid Alertmanager payload: " + "; ".join(problems)) from exc


def matches(alert: WebhookAlert, matchers: Mapping[str, str]) -> bool:
    """Every configured label matcher holds (equality)."""
    return all(alert.labels.get(name) == value for name, value in matchers.items())


def match_pairs(alert: WebhookAlert, settings: WebhookConfig,
                actives: Mapping[str, tuple[str | None, tuple[str, str]]]) -> list[str]:
    """Pairs this firing alert is about: `actives[pair] = (active, namespaces)`.

    An alert with a `pair` label concerns that pair only (pairs share namespaces: one pair
    per service in the same two namespaces). With `match_namespace` the alert's `namespace`
    label must also be the pair's active namespace; otherwise the namespace label picks the
    pairs, and an alert with neither label concerns every pair.
    """
    if alert.status != "firing" or not matches(alert, settings.matchers):
        return []
    named = alert.labels.get("pair")
    candidates = {name: spaces for name, spaces in actives.items()
                  if named is None or name == named}
    namespace = alert.labels.get("namespace")
    if settings.match_namespace:
        return [name for name, (active, _) in candidates.items()
                if namespace is not None and namespace == active]
    if named is not None:
        return list(candidates)
    if namespace is not None:
        return [name for name, (_, spaces) in candidates.items() if namespace in spaces]
    return list(candidates)


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def starts_at(alert: WebhookAlert) -> float | None:
    """The alert's `startsAt` as Unix seconds; None when absent, zero or not RFC 3339
    (Go writes up to 9 fractional digits, more than `datetime` reads)."""
    found = _RFC3339.match(alert.startsAt.strip())
    if found is None:
        return None
    whole, fraction, zone = found.groups()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    if moment.year <= 1:  # Go's zero time: "not set"
        return None
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def predates_release(alert: WebhookAlert, live_since: float | None, grace: float) -> str | None:
    """Why the alert concerns an earlier release, or None when it may concern this one.

    An alert that started more than `grace` seconds before the current release took the
    traffic (`live_since`) was raised against what ran before: Alertmanager re-sends a
    still-firing alert with its original `startsAt`, also after the next flip. An alert
    without a readable `startsAt`, or a pair with no flip recorded, is not held back.
    """
    started = starts_at(alert)
    if started is None or live_since is None or started >= live_since - grace:
        return None
    return (f"started {live_since - started:.0f}s before the current release took traffic: "
            "it concerns an earlier release (a new alert starting after the flip rolls back)")


@dataclass(frozen=True)
class _PairResult:
    """What became of the alerts of one notification that concern one pair."""

    pair: str
    alert: str
    """The first of them, described."""
    outcome: Outcome
    count: int = 1
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"pair": self.pair, "alert": self.alert, "alerts": self.count,
                "outcome": self.outcome, "reasons": list(self.reasons)}


async def handle_alertmanager(request: web.Request) -> web.Response:
    """Accept a notification, act on matching alerts, answer what became of them."""
    received = time.monotonic()
    services = services_of(request)
    controller: Controller = services.controller
    recorder = controller.recorder
    settings = controller.config.webhook
    if controller.config.auth.webhook_requires_token:
        problem = services.auth.problem(request.headers.get("Authorization"))
        if problem is not None:
            recorder.record_webhook("unauthorized")
            raise responses.http_error(401, problem)
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        recorder.record_webhook("too_large")
        raise responses.http_error(413, f"body over {settings.max_body_bytes} bytes")
    timeout = controller.config.server.read_timeout
    try:
        async with asyncio.timeout(timeout):
            body = await request.read()
    except TimeoutError:
        raise responses.http_error(408, f"body not received within {timeout:g}s") from None
    except web.HTTPRequestEntityTooLarge as exc:
        recorder.record_webhook("too_large")
        raise responses.http_error(413, f"body over {settings.max_body_bytes} bytes") from exc
    if len(body) > settings.max_body_bytes:
        recorder.record_webhook("too_large")
        raise responses.http_error(413, f"body over {settings.max_body_bytes} bytes")
    try:
        payload = parse_payload(body)
    except ValueError as exc:
        recorder.record_webhook("malformed")
        raise responses.http_error(400, str(exc)) from exc
    forwarder = services.forwarder
    elsewhere: dict[str, list[str]] = {}
    if forwarder is not None and forwarder.active and FORWARDED_BY not in request.headers:
        elsewhere = await _owners_elsewhere(forwarder, controller, payload)
    sent = {name for pairs in elsewhere.values() for name in pairs}
    results = await _act(controller, services.deduper, payload, received, sent)
    unreached: list[str] = []
    for address, pairs in elsewhere.items():
        assert forwarder is not None  # only a forwarder finds owners elsewhere
        try:
            status, answer = await forwarder.post_elsewhere(
                address, request.path, body, dict(request.headers))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            status, answer = 0, {"error": f"{type(exc).__name__}"}
        if status != 200:
            unreached.extend(pairs)
            continue
        results.extend(_PairResult(str(r.get("pair")), str(r.get("alert", "")),
                                   r.get("outcome", "ignored"), int(r.get("alerts", 1)),
                                   tuple(r.get("reasons") or ()))
                       for r in answer.get("results") or []
                       if isinstance(r, dict) and r.get("outcome") in _RANK)
    if unreached:
        # Alertmanager re-sends the whole notification; what this replica did is deduped.
        recorder.record_webhook("unavailable")
        raise responses.http_error(
            503, "the owners of pairs " + ", ".join(sorted(unreached)[:10]) + " did not "
                 "answer; Alertmanager retries", retry_after=1)
    outcome = max((r.outcome for r in results), key=_RANK.__getitem__, default="ignored")
    recorder.record_webhook(outcome)
    # Repeats are routine (Alertmanager re-sends every repeat_interval): keep them quiet.
    emit = log.debug if outcome in ("duplicate", "ignored") else log.info
    emit("alertmanager webhook", outcome=outcome, alerts=len(payload.alerts),
         group=payload.groupKey[:200], results=[r.to_dict() for r in results][:10])
    return responses.json_response({"accepted": True, "outcome": outcome,
                                 "alerts": len(payload.alerts),
                                 "results": [r.to_dict() for r in results]})


async def _owners_elsewhere(forwarder: Forwarder, controller: Controller,
                            payload: WebhookPayload) -> dict[str, list[str]]:
    """Owner address -> the pairs of theirs this notification may concern (every pair an
    alert could match, whatever its active namespace: the owner decides)."""
    settings = controller.config.webhook.model_copy(update={"match_namespace": False})
    spaces = {pair.name: (None, pair.namespaces) for pair in controller.config.pairs
              if not controller.acts_on(pair.name)}
    concerned = sorted({name for alert in payload.alerts
                        for name in match_pairs(alert, settings, spaces)})
    owners: dict[str, list[str]] = {}
    for name in concerned:
        owner = await forwarder.owner(name)
        if owner is not None and owner.address:
            owners.setdefault(owner.address, []).append(name)
    return owners


async def _act(controller: Controller, deduper: AlertDeduper, payload: WebhookPayload,
               received: float, sent: set[str]) -> list[_PairResult]:
    """Group the alerts by pair first, then decide once per pair (except the pairs `sent`
    to the replicas that act on them).

    Deciding reads the pair's live state (is the rollback target ready?), so its cost must
    grow with the pairs concerned, not with the alerts: a storm of thousands of alerts for
    one namespace costs one decision, and the answer comes well inside Alertmanager's
    timeout.
    """
    settings = controller.config.webhook
    actives = {name: (view.state.active if view.state.phase in _PREFERRED_PHASES
                      else None, view.pair.namespaces)
               for name, view in controller.views.items()
               if name not in sent
               and (not controller.leadership.sharded or controller.acts_on(name))}
    fresh: dict[str, list[tuple[str, WebhookAlert]]] = {}
    repeated: dict[str, list[WebhookAlert]] = {}
    stale_alerts: dict[str, list[tuple[WebhookAlert, str]]] = {}
    for alert in payload.alerts:
        for pair in match_pairs(alert, settings, actives):
            release = controller.views[pair].state.flipped_at
            # flipped_at is on the lifecycle's steady clock; startsAt is Alertmanager's wall.
            live_since = controller.wall_time(release) if release is not None else None
            stale = predates_release(alert, live_since, settings.stale_alert_grace)
            if stale is not None:
                stale_alerts.setdefault(pair, []).append((alert, stale))
                continue
            # Once per alert instance and release: after a later flip the same still-firing
            # alert is news again.
            key = f"{pair}/{release}/{alert.identity()}"
            if deduper.claim(key):
                fresh.setdefault(pair, []).append((key, alert))
            else:
                repeated.setdefault(pair, []).append(alert)
    results = [_PairResult(pair, alerts[0].describe(), "duplicate", len(alerts))
               for pair, alerts in repeated.items()]
    results.extend(_PairResult(pair, ignored[0][0].describe(), "ignored", len(ignored),
                               (ignored[0][1],))
                   for pair, ignored in stale_alerts.items())
    for pair, claimed in fresh.items():
        keys = [key for key, _ in claimed]
        first = claimed[0][1].describe()
        more = f" (and {len(claimed) - 1} more alerts)" if len(claimed) > 1 else ""
        reason = f"Alertmanager: {first}"[:460] + more
        try:
            outcome, answer = await controller.alert(pair, reason, received)
        except (NotLeaderError, ShuttingDown) as exc:
            _release(deduper, keys)
            raise responses.http_error(503, str(exc), retry_after=1) from exc
        except KeyError:  # its BlueGreenPair object was deleted while this one waited
            _release(deduper, keys)
            results.append(_PairResult(pair, first, "ignored", len(claimed),
                                       ("the pair is no longer served",)))
            continue
        except Exception as exc:
            _release(deduper, keys)
            log.exception("webhook rollback failed", pair=pair)
            raise responses.http_error(503, f"rollback failed: {type(exc).__name__}: {exc}",
                                    retry_after=1) from exc
        if outcome in ("ignored", "cooldown"):
            _release(deduper, keys)  # a repeat may act once the pair is in a release
        results.append(_PairResult(pair, first, outcome, len(claimed), answer.reasons))
    return results


def _release(deduper: AlertDeduper, keys: list[str]) -> None:
    for key in keys:
        deduper.release(key)
