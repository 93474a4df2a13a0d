"""Notification delivery (gatekeeper.service.notifications) to a local receiver: Slack Block
Kit, Teams Workflows (Adaptive Card) and the generic JSON body checked against their
documented shapes; URLs read from a Secret only; bounded retries and queues."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from gatekeeper.config import NotificationsConfig, parse_config
from gatekeeper.metrics import Recorder
from gatekeeper.notices import Notice
from gatekeeper.service import notifications
from gatekeeper.service.notifications import Notifier, Receiver, ReceiverError, load_receivers
from gatekeeper.yamlfiles import ConfigFileError, LineMap
from tests.service_support import wait_until

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
BLUE, GREEN = "api-blue", "api-green"
NOTICE = Notice(event="rolled_back", pair="api", summary="ApiDown firing for api-green",
                namespaces=(BLUE, GREEN), active=BLUE, dark=GREEN, phase="rolled_back",
                verdict="unsafe", reasons=("error-rate 5% > 1%",),
                images={BLUE: ("app:1",), GREEN: ("app:2",)}, trigger="alertmanager",
                approver="alice", at=1_700_000_000.0)
LINKS = NotificationsConfig(api_url="https://gatekeeper.example.com",
                            dashboard_url="https://grafana.example.com/d/gk")


class Receiving:
    """A loopback receiver standing in for Slack, Teams and a generic webhook: records
    bodies; `/fail` answers 503, `/gone` 404, `/hang` never answers."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.hanging = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "hang":
            self.hanging += 1
            await asyncio.Event().wait()
        self.bodies.setdefault(name, []).append(await request.json())
        status = {"fail": 503, "gone": 404}.get(name, 200)
        return web.Response(status=status)


@pytest.fixture
async def receiver(aiohttp_server):
    receiving = Receiving()
    app = web.Application()
    app.router.add_post("/{name}", receiving.handle)
    server = await aiohttp_server(app)
    receiving.url = lambda name: str(server.make_url(f"/{name}"))  # type: ignore[attr-defined]
    return receiving


async def _send(notifier: Notifier, *items: Notice, until=None) -> None:
    task = asyncio.create_task(notifier.run())
    try:
        for item in items:
            notifier.notify(item)
        if until is not None:
            await wait_until(until, within=10, what="delivery")
        await notifier.drain(10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_each_receiver_gets_its_documented_shape(receiver):
    """Slack: text fallback and Block Kit blocks; Teams Workflows: a `message` whose
    attachment is an Adaptive Card (type, version, body); the legacy connector's MessageCard
    only when asked for; generic: valid against the shipped, versioned JSON schema."""
    kinds = ["slack", "teams", "teams_connector", "webhook"]
    targets = [Receiver(kind, kind, receiver.url(kind)) for kind in kinds]  # type: ignore[arg-type]
    await _send(Notifier(LINKS, targets), NOTICE)
    slack, = receiver.bodies["slack"]
    assert "rolled back to api-blue (alertmanager)" in slack["text"]
    types = [block["type"] for block in slack["blocks"]]
    assert types[0] == "header" and "section" in types and types[-1] == "actions"
    assert slack["blocks"][0]["text"]["type"] == "plain_text"
    buttons = {b["text"]["text"]: b["url"] for b in slack["blocks"][-1]["elements"]}
    assert buttons == {"Api": "https://gatekeeper.example.com/api/v1/pairs/api",
                       "Dashboard": "https://grafana.example.com/d/gk?var-pair=api"}
    teams, = receiver.bodies["teams"]
    assert teams["type"] == "message"
    attachment, = teams["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert isinstance(card["body"], list) and card["body"]
    facts = {f["title"]: f["value"] for block in card["body"] if block["type"] == "FactSet"
             for f in block["facts"]}
    assert facts["Approved by"] == "alice" and facts["Trigger"] == "alertmanager"
    assert "app:2" in facts["Release"] and facts["Verdict"] == "unsafe"
    assert {a["type"] for a in card["actions"]} == {"Action.OpenUrl"}
    legacy, = receiver.bodies["teams_connector"]
    assert legacy["@type"] == "MessageCard" and legacy["themeColor"] == "E01E5A"
    generic, = receiver.bodies["webhook"]
    validator = jsonschema_rs.validator_for(json.loads(
        (ROOT / "gatekeeper" / "notification.schema.json").read_text()))
    validator.validate(generic)
    assert generic["version"] == notifications.SCHEMA_VERSION == 1
    assert generic["event"] == "rolled_back" and generic["images"][GREEN] == ["app:2"]
    assert notifications.schema() == json.loads(
        (ROOT / "gatekeeper" / "notification.schema.json").read_text())


def test_the_schema_refuses_what_it_does_not_document():
    """The shipped schema rejects a body without `version`, or with an unknown event."""
    validator = jsonschema_rs.validator_for(notifications.schema())
    body = notifications.generic(NOTICE, {})
    assert validator.is_valid(body)
    assert not validator.is_valid({k: v for k, v in body.items() if k != "version"})
    assert not validator.is_valid({**body, "event": "exploded"})


async def test_retries_are_bounded_and_counted(receiver):
    """A 503 is retried `retries` times then counted failed; a 404 is not retried; a good
    receiver gets its message once. The metric names receivers, never their URLs."""
    recorder = Recorder()
    settings = NotificationsConfig(retries=2, backoff=0.01)
    targets = [Receiver("webhook", "ok", receiver.url("ok")),
               Receiver("webhook", "fail", receiver.url("fail")),
               Receiver("webhook", "gone", receiver.url("gone"))]
    notifier = Notifier(settings, targets, recorder=recorder)
    with capture_logs() as logs:
        await _send(notifier, NOTICE)
    assert len(receiver.bodies["ok"]) == 1
    assert len(receiver.bodies["fail"]) == 3  # the first try and 2 retries
    assert len(receiver.bodies["gone"]) == 1
    assert (notifier.sent, notifier.failed) == (1, 2)
    exposed = generate_latest(recorder.registry).decode()
    assert 'gatekeeper_notifications_total{kind="webhook",outcome="failed",receiver="fail"} 1.0' \
        in exposed
    text = json.dumps(logs) + exposed + repr(notifier) + repr(targets)
    assert "127.0.0.1" not in text and "/fail" not in text


async def test_a_full_queue_drops_and_counts(receiver):
    """Past `queue_size` the oldest (or, by choice, the newest) message is dropped and
    counted; notify never waits for a hung receiver."""
    recorder = Recorder()
    for overflow, kept in (("drop_oldest", "flipped"), ("drop_newest", "validating")):
        settings = NotificationsConfig(queue_size=1, overflow=overflow)
        target = Receiver("webhook", overflow, receiver.url(overflow))
        notifier = Notifier(settings, [target], recorder=recorder)
        notifier.notify(NOTICE.__class__(**{**NOTICE.__dict__, "event": "validating"}))
        notifier.notify(NOTICE.__class__(**{**NOTICE.__dict__, "event": "flipped"}))
        assert notifier.dropped == 1
        await _send(notifier)
        assert [b["event"] for b in receiver.bodies[overflow]] == [kept]
    exposed = generate_latest(recorder.registry).decode()
    assert 'outcome="dropped",receiver="drop_oldest"} 1.0' in exposed


async def test_a_hung_receiver_does_not_hold_up_the_others(receiver):
    """Each receiver has its own worker: one that never answers delays nobody else."""
    settings = NotificationsConfig(timeout=5, retries=0)
    targets = [Receiver("webhook", "hang", receiver.url("hang")),
               Receiver("slack", "ok", receiver.url("ok"))]
    notifier = Notifier(settings, targets)
    task = asyncio.create_task(notifier.run())
    try:
        notifier.notify(NOTICE)
        notifier.notify(NOTICE)
        await wait_until(lambda: len(receiver.bodies.get("ok", ())) == 2, within=10,
                         what="the other receiver")
        assert receiver.hanging == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _config(notifications_section: dict[str, Any]) -> Any:
    data = {"pairs": [{"name": "api", "namespaces": [BLUE, GREEN],
                       "routes": [{"name": "api", "namespace": "api-routing"}]}],
            "notifications": notifications_section}
    return parse_config(data, "gatekeeper.yaml", LineMap("gatekeeper.yaml"))


@pytest.mark.parametrize(("section", "expected"), [
    ({"slack": ["https://hooks.slack.com/services/T/B/x"]}, "field 'notifications.slack'"),
    ({"teams": ["https://x.webhook.office.com/y"]}, "field 'notifications.teams'"),
    ({"receivers": [{"kind": "slack", "url": "https://hooks.slack.com/services/T/B/x"}]},
     "field 'notifications.receivers[0].url'"),
])
def test_a_url_in_the_config_is_refused_naming_the_key_and_the_fix(section, expected):
    """A webhook URL written in the configuration (a ConfigMap) stops gatekeeper, naming the
    key and how to fix it, without repeating the URL."""
    with pytest.raises(ConfigFileError) as caught:
        _config(section)
    problem = "\n".join(caught.value.problems)
    assert expected in problem and "url_file" in problem and "url_env" in problem
    assert "hooks.slack.com" not in problem and "office.com" not in problem


def test_urls_come_from_a_secret_file_or_environment(tmp_path):
    """url_file (a mounted Secret) or url_env (a variable set from one); a missing one names
    the receiver and the file or variable, never a URL."""
    path = tmp_path / "slack-url"
    path.write_text("https://hooks.slack.com/services/T/B/secret\n")
    config = _config({"receivers": [
        {"kind": "slack", "name": "ops", "url_file": str(path)},
        {"kind": "teams", "url_env": "TEAMS_URL"}]})
    receivers = load_receivers(config.notifications,
                               {"TEAMS_URL": "https://x.webhook.office.com/secret"})
    assert [(r.name, r.kind) for r in receivers] == [("ops", "slack"), ("teams-2", "teams")]
    assert receivers[0].url.endswith("/secret") and "secret" not in repr(receivers)
    with pytest.raises(ReceiverError, match=r"receivers\[1\] \(teams-2\).*TEAMS_URL"):
        load_receivers(config.notifications, {})
    path.write_text("not-a-url")
    with pytest.raises(ReceiverError, match="does not start with https://"):
        load_receivers(config.notifications, {"TEAMS_URL": "https://x"})
    with pytest.raises(ConfigFileError, match="exactly one of url_file"):
        _config({"receivers": [{"kind": "slack"}]})
