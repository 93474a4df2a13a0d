"""Firing alerts per namespace, from Alertmanager's v2 API (the seed's `amtool alert query`).

One request per rule covers every namespace, filtered server-side by the rule's matchers and
the namespaces, and checked again here. Alerts in state `active` or `unprocessed` count as
firing (Alertmanager 0.25 reports a new alert as active at once, other versions report it
unprocessed until the dispatcher has seen it). `suppressed` ones (silenced or inhibited: what
people decided to ignore) are not counted but reported in the measurement's message. An
answer that does not parse as a list of alerts is a source error, never "no alerts".
Alertmanager only knows what fires now, so the evaluation window does not apply.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import structlog

from gatekeeper import errors
from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule
from gatekeeper.sources.base import Target
from gatekeeper.sources.sessions import LazySession
from gatekeeper.templating import namespace_regex

log = structlog.get_logger()
_NAMES_SHOWN = 5
_BODY_SHOWN = 200


def _quote(value: str) -> str:
    """A matcher value as Alertmanager's matcher parser reads it (double-quoted)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def alert_filters(matchers: Mapping[str, str], namespaces: Sequence[str]) -> list[str]:
    """The `filter` matchers: the rule's equality matchers and the namespaces under evaluation."""
    filters = [f"{name}={_quote(value)}" for name, value in sorted(matchers.items())]
    filters.append(f"namespace=~{_quote(namespace_regex(namespaces))}")
    return filters


def _alert_names(alerts: Sequence[Mapping[str, Any]]) -> str:
    counts = Counter(str(a.get("labels", {}).get("alertname", "?")) for a in alerts)
    shown = [name if n == 1 else f"{name} x{n}" for name, n in sorted(counts.items())]
    more = len(shown) - _NAMES_SHOWN
    text = ", ".join(shown[:_NAMES_SHOWN])
    return text + (f" and {more} more" if more > 0 else "")


FIRING_STATES = frozenset({"active", "unprocessed"})
SUPPRESSED_STATE = "suppressed"


def alert_state(alert: Any, index: int) -> str:
    """`firing` or `suppressed`; ValueError naming the item for anything that is no alert."""
    shown = repr(alert)[:80]
    if not isinstance(alert, dict):
        raise ValueError(f"item {index} is not an alert: {shown}")
    labels, status = alert.get("labels"), alert.get("status")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError(f"item {index} has no 'labels' mapping of strings: {shown}")
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        raise ValueError(f"item {index} has no 'status.state': {shown}")
    state = status["state"]
    if state == SUPPRESSED_STATE or status.get("silencedBy") or status.get("inhibitedBy"):
        return "suppressed"
    if state in FIRING_STATES:
        return "firing"
    raise ValueError(f"item {index} has an unknown state {state!r}")


def _matches(alert: Mapping[str, Any], matchers: Mapping[str, str]) -> bool:
    """Every matcher holds (defence in depth: the server filtered already)."""
    labels = alert["labels"]
    return all(labels.get(name) == value for name, value in matchers.items())


def _by_namespace(
    alerts: Sequence[Any], matchers: Mapping[str, str]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """(firing, suppressed) matching alerts per namespace; ValueError for a non-alert."""
    firing: dict[str, list[Any]] = {}
    suppressed: dict[str, list[Any]] = {}
    for index, alert in enumerate(alerts):  # one pass: namespaces x alerts was quadratic
        state = alert_state(alert, index)
        if not _matches(alert, matchers):
            continue
        into = firing if state == "firing" else suppressed
        into.setdefault(alert["labels"].get("namespace"), []).append(alert)
    return firing, suppressed


class AlertmanagerSource:
    """Counts firing alerts per namespace; 0 is a real value (nothing fires), not no data."""

    name = "alertmanager"

    def __init__(
        self, url: str, timeout: float, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = LazySession(session)

    async def _fetch(self, filters: list[str]) -> list[Any]:
        params = [("active", "true"), ("silenced", "true"), ("inhibited", "true"),
                  ("unprocessed", "true")]
        params += [("filter", f) for f in filters]
        async with self._client().get(
            f"{self.url}/api/v2/alerts",
            params=params,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as response:
            if not response.ok:
                body = (await response.text(errors="replace"))[:_BODY_SHOWN].strip()
                raise errors.source_http_error(response.status, body)
            alerts = await response.json(content_type=None)
        if not isinstance(alerts, list):
            raise ValueError(f"expected a list of alerts, got {type(alerts).__name__}")
        return alerts

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """Count the rule's firing alerts per target namespace with one request."""
        namespaces = [t.namespace for t in targets]
        try:
            filters = alert_filters(rule.matchers, namespaces)
        except ValueError as exc:
            return {ns: Measurement.error(f"alertmanager: {exc}") for ns in namespaces}
        query = " ".join(filters)
        try:
            alerts = await self._fetch(filters)
        except TimeoutError:
            reason = f"no answer from {self.url} within {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            reason = f"cannot reach {self.url}: {exc or type(exc).__name__}"
        except (errors.SourceError, ValueError) as exc:  # bad status or JSON
            reason = f"bad answer from {self.url}: {exc}"
        else:
            try:
                firing, suppressed = _by_namespace(alerts, rule.matchers)
            except ValueError as exc:
                reason = f"bad answer from {self.url}: {exc}"
            else:
                return {ns: self._count(firing.get(ns, []), suppressed.get(ns, []), rule, query)
                        for ns in namespaces}
        log.warning("alertmanager query failed", rule=rule.name, reason=reason)
        return {ns: Measurement.error(f"alertmanager: {reason}", query=query) for ns in namespaces}

    @staticmethod
    def _count(firing: list[Any], suppressed: list[Any], rule: Rule, query: str) -> Measurement:
        matching = ", ".join(f"{k}={v}" for k, v in sorted(rule.matchers.items()))
        scope = f" matching {matching}" if matching else ""
        if firing:
            message = f"{len(firing)} firing alert(s){scope}: {_alert_names(firing)}"
        else:
            message = f"no firing alerts{scope}"
        if suppressed:
            message += (f"; {len(suppressed)} suppressed (silenced or inhibited, not counted): "
                        f"{_alert_names(suppressed)}")
        return Measurement.ok(
            float(len(firing)), message=message, query=query, sample_count=float(len(firing))
        )

    async def close(self) -> None:
        """Close the HTTP session if this source created it."""
        await self._client.close()
