"""Approvals with identity: `gatekeeper approve|unapprove --url` through a running service.

The service runs against the emulated Kubernetes API (judged on pod readiness only, so no
Prometheus is needed); the CLI runs for real (its own event loop, in a thread) and talks
HTTP to it. Tokens map to names (`auth.tokens_file` entries and the shared token's
`auth.token_name`); the approver's name lands in the pair's history, the Event on the
route, and the transition records the notifications read.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any
from unittest import mock

import aiohttp
import pytest
from kubernetes_asyncio import client

from gatekeeper.cli import main
from gatekeeper.config import AuthConfig
from gatekeeper.kubeclient import read_json
from gatekeeper.service import auth as auth_module
from gatekeeper.service.app import create_service
from gatekeeper.service.auth import TokenAuth, load_tokens, parse_tokens
from gatekeeper.yamlfiles import ConfigFileError
from tests.service_support import (
    NEW,
    PODS_READY_RULE,
    get_json,
    seed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

BLUE, GREEN, ROUTING = "approve-blue", "approve-green", "approve-routing"
TOKENS = {"alice": "tok-alice-51d2", "ci-pipeline": "tok-ci-9e0a"}


@pytest.fixture
async def served(tmp_path, kube_emulator, kube_api, aiohttp_server):
    """A service for pair `api` (blue live, green dark on new images, Ready) whose callers are
    alice, ci-pipeline and the shared token (named `release-bot`)."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False},
                          auth={"token_name": "release-bot"})
    service = create_service(loaded, kube_api, token="tok-shared-77aa", tokens=TOKENS)
    server = await aiohttp_server(service.app)
    await wait_until(lambda: service.controller.views["api"].state.active == BLUE, within=10,
                     what="first tick")
    yield service, str(server.make_url("")).rstrip("/")
    await service.close()


async def cli(*argv: str, token: str | None = None, tmp_path: Any = None) -> tuple[int, str]:
    """Run `gatekeeper ARGV` in a thread (it runs its own event loop); (exit code, stdout)."""
    import contextlib
    import io

    args = list(argv)
    if token is not None:
        path = tmp_path / f"token-{abs(hash(token))}"
        path.write_text(token + "\n")
        args += ["--token-file", str(path)]
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            return main(args)

    code = await asyncio.to_thread(run)
    return code, out.getvalue()


async def _history(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        _, body = await get_json(http, f"{url}/api/v1/pairs/api")
    return list(body["history"])


async def _events(api: client.ApiClient) -> list[dict[str, Any]]:
    body = await read_json(client.CoreV1Api(api).list_namespaced_event, ROUTING)
    return [e for e in body["items"] if e["reason"] in ("Approved", "Unapproved")]


async def test_approve_records_who_in_history_event_and_transition(served, kube_api, tmp_path):
    """alice approves the flip: the pair validates, `by: alice` is on the phase change, the
    audit entry and the Event; a refused go/no-go approval is audited too (Warning)."""
    service, url = served
    code, out = await cli("approve", "--url", url, "--pair", "api", "--for", "flip",
                          "--reason", "QA signed off", token=TOKENS["alice"], tmp_path=tmp_path)
    assert code == 0, out
    assert "approved by alice" in out
    state = service.controller.views["api"].state
    assert state.phase == "validating" and state.flip_approved
    history = await _history(url)
    [approval] = [h for h in history if h["kind"] == "approval"]
    assert approval["by"] == "alice" and approval["outcome"] == "changed"
    assert approval["phase"] == "idle" and approval["reason"] == "QA signed off"
    [phase] = [h for h in history if h["kind"] == "phase" and h["to"] == "validating"]
    assert phase["by"] == "alice" and phase["trigger"] == "manual"
    [event] = await _events(kube_api)
    assert event["type"] == "Normal" and "approved by alice" in event["message"]
    assert event["involvedObject"]["name"] == "api-live"

    code, out = await cli("approve", "--url", url, "--pair", "api", "--for", "scale-down",
                          token=TOKENS["ci-pipeline"], tmp_path=tmp_path)
    assert code == 1 and "after the flip" in out
    refused = [h for h in await _history(url) if h["kind"] == "approval"][-1]
    assert refused["by"] == "ci-pipeline" and refused["outcome"] == "refused"
    warning = [e for e in await _events(kube_api) if e["type"] == "Warning"]
    assert len(warning) == 1 and "ci-pipeline" in warning[0]["message"]


async def test_an_approval_that_changes_nothing_is_audited(served, tmp_path, monkeypatch):
    """Approving twice (the shared token, from $GATEKEEPER_TOKEN, named release-bot), then
    withdrawing twice: four audit entries, two of them `unchanged`."""
    service, url = served
    monkeypatch.setenv("GATEKEEPER_TOKEN", "tok-shared-77aa")
    outcomes = []
    for verb in ("approve", "approve", "unapprove", "unapprove"):
        code, out = await cli(verb, "--url", url, "--pair", "api", "--for", "flip")
        assert code == 0, out
        outcomes.append([h for h in await _history(url) if h["kind"] == "approval"][-1])
    assert [(o["action"], o["outcome"], o["by"]) for o in outcomes] == [
        ("approve", "changed", "release-bot"), ("approve", "unchanged", "release-bot"),
        ("unapprove", "changed", "release-bot"), ("unapprove", "unchanged", "release-bot")]
    state = service.controller.views["api"].state
    assert state.phase == "validating" and not state.flip_approved
    record = service.controller.views["api"].record
    assert record is not None and len(record.approvals) == 4


async def test_bad_tokens_and_unknown_pairs_are_usage_errors(served, tmp_path, monkeypatch):
    """A wrong token: exit 2 and nothing recorded; no token at all: exit 2; unknown pair: 2;
    nothing listening: 3."""
    _service, url = served
    monkeypatch.delenv("GATEKEEPER_TOKEN", raising=False)
    code, out = await cli("approve", "--url", url, "--pair", "api", token="tok-alice-51d3",
                          tmp_path=tmp_path)
    assert code == 2 and "invalid token" in out and "tok-alice" not in out
    code, out = await cli("approve", "--url", url, "--pair", "api")
    assert code == 2 and "missing Authorization" in out
    code, out = await cli("approve", "--url", url, "--pair", "nope", token=TOKENS["alice"],
                          tmp_path=tmp_path)
    assert code == 2 and "unknown pair" in out
    assert [h for h in await _history(url) if h["kind"] == "approval"] == []
    code, out = await cli("approve", "--url", "http://127.0.0.1:9", "--pair", "api",
                          token=TOKENS["alice"], tmp_path=tmp_path)
    assert code == 3 and "unreachable" in out


def test_names_file_parses_with_file_and_line_errors(tmp_path):
    """`name: token` entries; bad names, empty tokens and shared tokens name file:line."""
    assert parse_tokens("alice: a1\nci: c2\n", "t.yaml") == {"alice": "a1", "ci": "c2"}
    with pytest.raises(ConfigFileError) as caught:
        parse_tokens("alice: a1\nbob: a1\n'bad name': x\ncarol: ''\n", "t.yaml")
    problems = caught.value.problems
    assert any(p.startswith("t.yaml:2:") and "same token" in p for p in problems)
    assert any(p.startswith("t.yaml:3:") and "name" in p for p in problems)
    assert any(p.startswith("t.yaml:4:") and "non-empty" in p for p in problems)
    assert all("a1" not in p for p in problems)  # tokens are never echoed
    names = tmp_path / "tokens.yaml"
    names.write_text("alice: a1\n")
    single = tmp_path / "token"
    single.write_text("s3\n")
    assert load_tokens(AuthConfig(tokens_file=str(names), token_file=str(single))) == {
        "alice": "a1", "api-token": "s3"}
    assert load_tokens(AuthConfig(), {"GATEKEEPER_TOKEN": "env"}) == {"api-token": "env"}
    single.write_text("a1\n")
    with pytest.raises(ConfigFileError):
        load_tokens(AuthConfig(tokens_file=str(names), token_file=str(single)))


def test_every_named_token_is_compared_in_constant_time():
    """Each check compares the supplied token's digest with every entry (no early exit), so
    which entry matched does not show in the timing."""
    auth = TokenAuth("shared", tokens={"a": "t-a", "b": "t-b", "c": "t-c"})
    with mock.patch.object(auth_module.hmac, "compare_digest",
                           wraps=hmac.compare_digest) as compared:
        who, problem = auth.identify("Bearer t-a")
        assert who is not None and who.name == "a" and problem is None
        assert compared.call_count == 4
        who, problem = auth.identify("Bearer nope")
        assert who is None and problem == "invalid token" and compared.call_count == 8
    assert auth.identify("Bearer shared")[0].name == "api-token"
    assert "t-a" not in repr(auth)


# -- service-account tokens, authenticated by the cluster's TokenReview -------------------------


async def test_kube_emulator_answers_token_review_like_the_api_server(kube_emulator, kube_api):
    """201 with the request echoed and `status` filled in: a known service-account token is
    authenticated with its username, uid and groups; an unknown one or a wrong audience is
    not (user {}, an error); a body without spec.token is 422."""
    kube_emulator.tokens.issue("sa-tok-1", "ci", "deployer", audiences=("gatekeeper",))
    api = client.AuthenticationV1Api(kube_api)

    def review(token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences is not None:
            spec["audiences"] = audiences
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}

    known = await read_json(api.create_token_review, review("sa-tok-1"))
    assert known["kind"] == "TokenReview" and known["spec"]["token"] == "sa-tok-1"
    status = known["status"]
    assert status["authenticated"] is True and status["audiences"] == ["gatekeeper"]
    assert status["user"]["username"] == "system:serviceaccount:ci:deployer"
    assert "system:serviceaccounts:ci" in status["user"]["groups"] and status["user"]["uid"]
    unknown = await read_json(api.create_token_review, review("nope"))
    assert "authenticated" not in unknown["status"] and unknown["status"]["user"] == {}
    wrong = await read_json(api.create_token_review, review("sa-tok-1", ["other"]))
    assert "authenticated" not in wrong["status"] and "audiences" in wrong["status"]["error"]
    [record] = [r for r in kube_emulator.requests.records() if r.path.endswith("tokenreviews")
                and r.body["spec"]["token"] == "nope"]
    assert record.status == 201
    with pytest.raises(client.ApiException) as caught:
        await read_json(api.create_token_review, {"apiVersion": "authentication.k8s.io/v1",
                                                  "kind": "TokenReview", "spec": {}})
    assert caught.value.status == 422


async def test_a_service_account_token_approves_under_its_own_name(
        tmp_path, kube_emulator, kube_api, aiohttp_server):
    """auth.token_review: a pipeline's service-account token (unknown to the names file) is
    authenticated by TokenReview and recorded as system:serviceaccount:NS:NAME; a token the
    cluster does not know, or one for another audience, is 401 and nothing is recorded."""
    kube_emulator.load(seed(BLUE, GREEN, ROUTING, green_image=NEW))
    kube_emulator.tokens.issue("sa-pipeline-tok", "ci", "deployer", audiences=("gatekeeper",))
    kube_emulator.tokens.issue("sa-other-tok", "ci", "other", audiences=("vault",))
    loaded = write_config(tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None,
                          rules=[PODS_READY_RULE], policy={"auto_flip": False},
                          auth={"token_review": True, "token_review_audiences": ["gatekeeper"]})
    service = create_service(loaded, kube_api, token=None, tokens=TOKENS)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    try:
        await wait_until(lambda: service.controller.views["api"].state.active == BLUE,
                         within=10, what="first tick")
        for token in ("sa-unknown", "sa-other-tok"):
            code, out = await cli("approve", "--url", url, "--pair", "api", token=token,
                                  tmp_path=tmp_path)
            assert code == 2 and "invalid token" in out
        code, out = await cli("approve", "--url", url, "--pair", "api", "--for", "flip",
                              token="sa-pipeline-tok", tmp_path=tmp_path)
        assert code == 0, out
        [approval] = [h for h in await _history(url) if h["kind"] == "approval"]
        assert approval["by"] == "system:serviceaccount:ci:deployer"
        code, _ = await cli("approve", "--url", url, "--pair", "api", token=TOKENS["alice"],
                            tmp_path=tmp_path)
        assert code == 0  # named tokens still work, without asking the cluster
    finally:
        await service.close()
