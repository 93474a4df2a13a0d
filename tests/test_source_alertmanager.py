"""AlertmanagerSource against the real Alertmanager of the telemetry sandbox."""

from __future__ import annotations

import socket
import uuid

import aiohttp
import pytest
from aiohttp import web

from gatekeeper.rules import Rule
from gatekeeper.sources.alertmanager import AlertmanagerSource, alert_filters
from gatekeeper.sources.base import Target
from telemetry_sandbox.alertmanager import make_alert


@pytest.fixture
def pair() -> tuple[str, str]:
    """Two namespace names nobody else posts alerts for."""
    suffix = uuid.uuid4().hex[:8]
    return f"am-{suffix}-blue", f"am-{suffix}-green"


@pytest.fixture
async def source(alertmanager):
    am_source = AlertmanagerSource(alertmanager.url, timeout=5.0)
    yield am_source
    await am_source.close()


def _rule(**matchers: str) -> Rule:
    return Rule.model_validate(
        {"name": "alerts", "source": "alertmanager", "matchers": matchers, "pass": ["== 0"]}
    )


def _targets(blue: str, green: str) -> list[Target]:
    return [Target(pair="p", namespace=blue, other=green),
            Target(pair="p", namespace=green, other=blue)]


async def test_counts_firing_alerts_per_namespace(alertmanager, source, pair):
    """Critical alerts are counted per namespace; a quiet namespace is ok with 0."""
    blue, green = pair
    alertmanager.post_alerts([
        make_alert("HighErrorRate", green),
        make_alert("PodCrashLooping", green, labels={"pod": "api-1"}),
        make_alert("PodCrashLooping", green, labels={"pod": "api-2"}),
        make_alert("SlowResponses", green, severity="warning"),
        make_alert("HighErrorRate", f"{green}-other"),
    ])
    result = await source.measure(_rule(severity="critical"), _targets(blue, green),
                                  window=300, variables={})
    assert result[green].status == "ok" and result[green].value == 3
    assert result[green].sample_count == 3
    assert "HighErrorRate, PodCrashLooping x2" in result[green].message
    assert "SlowResponses" not in result[green].message
    assert result[blue].status == "ok" and result[blue].value == 0
    assert "no firing alerts matching severity=critical" in result[blue].message


async def test_matchers_select_alerts(alertmanager, source, pair):
    """Every matcher must hold; without matchers every alert of the namespace counts."""
    blue, green = pair
    alertmanager.post_alerts([
        make_alert("A", blue, severity="warning", labels={"team": "api"}),
        make_alert("B", blue, severity="warning", labels={"team": "data"}),
        make_alert("C", blue, severity="critical", labels={"team": "api"}),
    ])
    targets = _targets(blue, green)
    both = await source.measure(_rule(severity="warning", team="api"), targets, window=300,
                                variables={})
    assert both[blue].value == 1 and "A" in both[blue].message
    everything = await source.measure(_rule(), targets, window=300, variables={})
    assert everything[blue].value == 3


async def test_silenced_and_resolved_alerts_are_excluded(alertmanager, source, pair):
    """A silenced alert is not counted (people decided to ignore it) but reported as
    suppressed; a resolved alert is gone."""
    blue, green = pair
    loud = make_alert("Loud", green)
    quiet = make_alert("Quiet", green)
    done = make_alert("Done", green)
    alertmanager.post_alerts([loud, quiet, done])
    alertmanager.silence({"alertname": "Quiet", "namespace": green}, 300)
    alertmanager.resolve_alerts([done])
    result = await source.measure(_rule(severity="critical"), _targets(blue, green),
                                  window=300, variables={})
    assert result[green].value == 1
    firing, _, suppressed = result[green].message.partition("; ")
    assert "Loud" in firing and "Quiet" not in firing
    assert suppressed == "1 suppressed (silenced or inhibited, not counted): Quiet"


async def test_unreachable_alertmanager_is_an_error_for_every_namespace(pair):
    """Nothing listening: every namespace gets `error`, naming the URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    am_source = AlertmanagerSource(f"http://127.0.0.1:{port}", timeout=2.0)
    try:
        result = await am_source.measure(_rule(severity="critical"), _targets(*pair),
                                         window=300, variables={})
    finally:
        await am_source.close()
    assert {m.status for m in result.values()} == {"error"}
    assert f"127.0.0.1:{port}" in result[pair[0]].message
    assert "alertmanager" in result[pair[0]].message


async def test_bad_answer_is_an_error(aiohttp_server, pair):
    """A server that is not Alertmanager (HTML, 500) gives `error`, not 0 alerts."""
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="upstream exploded")

    app = web.Application()
    app.router.add_get("/api/v2/alerts", broken)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        am_source = AlertmanagerSource(f"http://127.0.0.1:{server.port}", 2.0, session=session)
        result = await am_source.measure(_rule(), _targets(*pair), window=300, variables={})
        await am_source.close()
        assert not session.closed  # a session passed in stays the caller's
    assert result[pair[0]].status == "error"
    assert "HTTP 500: upstream exploded" in result[pair[0]].message


def test_filters_quote_values():
    """Matcher values are quoted and escaped; namespaces become one anchored alternation."""
    filters = alert_filters({"severity": 'cri"tical'}, ["b", "a"])
    assert filters == ['severity="cri\\"tical"', 'namespace=~"a|b"']
