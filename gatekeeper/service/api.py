"""The HTTP API: health, metrics, pairs, the pipelines' flip-check, and people's actions.

Reads are served from the controller's cache (no cluster or Prometheus call per request).
Mutations need the bearer token, are idempotent, answer 409 with reasons when unsafe
(unless `force`), are forwarded to the replica that acts on the pair when it is another
(the leader, or the owner of the pair's shard: service.forwarding; 503 only when none can be
reached), and say what was done.

Over 450 lines on purpose: one short handler per route, and the bodies they answer with,
so the API's whole surface is read in one file.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Literal, TypeVar, cast

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper import lifecycle
from gatekeeper.config import PairConfig, PolicyConfig
from gatekeeper.errors import NotLeaderError
from gatekeeper.evidence import advice, dark_evidence
from gatekeeper.operations import ClusterError
from gatekeeper.service import forwarding, jsonbody, responses
from gatekeeper.service.auth import Identity
from gatekeeper.service.context import Services, services_of
from gatekeeper.service.controller import (
    ActionOutcome,
    Controller,
    PairView,
    ShuttingDown,
)
from gatekeeper.service.openapi import openapi_document

__all__ = ["add_routes", "flip_check_body", "pair_detail", "pair_summary"]

log = structlog.get_logger(__name__)

MAX_ACTION_BODY = 16 * 1024
HISTORY_SHOWN = 20


# -- request bodies ------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field("", max_length=1024, description="why; kept in the audit trail")


class ApproveRequest(_Body):
    """POST .../approve and .../unapprove."""

    decision: Literal["flip", "scale-down"] | None = Field(
        None, alias="for", description="approve only this decision (default: what the phase "
        "needs); refused in a phase where it does not apply")


class FlipRequest(_Body):
    """POST .../flip."""

    force: bool = False
    to: str | None = Field(None, max_length=63, description="namespace (default: the dark)")


class RollbackRequest(_Body):
    """POST .../rollback."""

    force: bool = False


class ScaleDownRequest(_Body):
    """POST .../scale-down."""

    force: bool = False
    keep: int | None = Field(None, ge=0, le=10_000, description="replicas to keep")


BodyT = TypeVar("BodyT", bound=_Body)
RAW_BODY = web.RequestKey("gatekeeper_raw_body", bytes)


# -- views ---------------------------------------------------------------------------------------


def verdict_now(view: PairView, controller: Controller) -> tuple[str, str | None]:
    """The cached verdict as of now: `unknown` (with why) once older than its bound."""
    if view.verdict is None:
        return "unknown", None
    if view.observation is not None:
        stale = lifecycle.verdict_staleness(view.observation, controller.clock())
        if stale is not None:
            return "unknown", stale
    return view.verdict.verdict, None


def pair_summary(view: PairView, controller: Controller) -> dict[str, Any]:
    """One pair in a list: phase, active, dark, verdict, scores."""
    observation, verdict, state = view.observation, view.verdict, view.state
    verdict_name, stale = verdict_now(view, controller)
    return {
        "pair": view.pair.name,
        "phase": state.phase,
        "phase_since": state.since or None,
        "reason": state.reason,
        # The lifecycle follows our own actions at once; the observation only at the next tick.
        "active": state.active or (observation.active if observation else None),
        "dark": state.dark or (observation.dark if observation else None),
        "verdict": verdict_name,
        "verdict_stale": stale,
        "dark_score": verdict.candidate.score if verdict else None,
        "active_score": verdict.baseline.score if verdict else None,
        "evaluated_at": view.evaluated_at,
        "dry_run": controller.dry_run,
    }


def traffic_view(view: PairView, policy: PolicyConfig) -> dict[str, Any]:
    """Real traffic to the dark: the progressive step in place and mirroring."""
    observation = view.observation
    steps = list(policy.progressive.steps) if policy.progressive is not None else []
    return {"step": view.state.exposure_step, "steps": steps,
            "percent": observation.exposed if observation else 0,
            "since": view.state.exposure_since,
            "mirroring": bool(observation and observation.mirrored),
            "mirroring_configured": view.pair.mirroring is not None}


def drivers_detail(controller: Controller, pair: str) -> dict[str, Any]:
    """The pair's validation drivers (docs/evidence.md): what they work on now, and each
    driver's latest outcome with the namespace and release it is about."""
    running = controller.drivers.running(pair)
    return {
        "running": ({"dark": running.dark, "active": running.active,
                     "release": running.release, "dry_run": running.dry_run}
                    if running is not None else None),
        "outcomes": [{"driver": posted.driver, "namespace": posted.namespace,
                      "release": posted.release, **posted.outcome.to_dict()}
                     for posted in controller.drivers.board.of_pair(pair)],
    }


def pair_detail(view: PairView, controller: Controller) -> dict[str, Any]:
    """Everything about a pair: rule results, readiness, lifecycle, history."""
    record = view.record
    policy = controller.policy(view.pair)
    observation = view.observation
    return {
        **pair_summary(view, controller),
        "namespaces": list(view.pair.namespaces),
        "previous": view.state.previous,
        "routes_problem": observation.route_problem if observation else None,
        "result": view.verdict.to_dict() if view.verdict else None,
        "evidence": dark_evidence(
            view.verdict, {r.name: r.window for r in controller.evaluator.rule_set.rules
                           if r.window is not None}, controller.evaluator.window,
            todo=advice(view.pair.load.rate if view.pair.load is not None else None)),
        "validation": drivers_detail(controller, view.pair.name),
        "readiness": {ns: (r.to_dict() if r is not None else {"error": view.read_errors.get(
            ns, "not read yet")}) for ns, r in view.readiness.items()},
        "traffic": traffic_view(view, policy),
        "lifecycle": view.state.to_dict(),
        "would": list(view.would),
        "timestamps": dict(record.timestamps) if record else {},
        "last_action": record.last_action if record else None,
        "history": list(record.transitions[-HISTORY_SHOWN:]) if record else [],
        "state_error": view.state_error,
        "state_problem": state_problem(view),
        "policy": policy.model_dump(),
        "leader": controller.acts_on(view.pair.name),
    }


def flip_check_body(view: PairView, controller: Controller) -> dict[str, Any]:
    """The pipelines' answer: safe or not, with the reasons a person reads first."""
    policy = controller.policy(view.pair)
    observation = view.observation
    reasons = lifecycle.flip_check(view.state, observation, policy, controller.clock())
    verdict, _ = verdict_now(view, controller)
    if not reasons:
        status = "safe"
    elif observation is None or observation.active is None or verdict == "unknown":
        status = "unknown"
    else:
        status = "unsafe"
    return {
        "pair": view.pair.name,
        "safe": not reasons,
        "status": status,
        "phase": view.state.phase,
        "active": observation.active if observation else None,
        "dark": observation.dark if observation else None,
        "verdict": verdict,
        "score": view.verdict.candidate.score if view.verdict else None,
        "reasons": reasons,
        "evaluated_at": view.evaluated_at,
        "dry_run": controller.dry_run,
    }


# -- helpers -------------------------------------------------------------------------------------


def _pair(services: Services, request: web.Request) -> PairView:
    name = request.match_info["pair"]
    try:
        return services.controller.view(name)
    except KeyError:
        known = ", ".join(p.name for p in services.controller.config.pairs)
        raise responses.http_error(404, f"unknown pair {name[:100]!r} (configured: {known})"
                                   ) from None


async def _authorize(services: Services, request: web.Request) -> Identity:
    who, problem = await services.auth.authenticate(request.headers.get("Authorization"))
    if who is None:
        log.warning("unauthorized request", path=request.path, remote=request.remote)
        raise responses.http_error(401, problem or "unauthorized")
    return who


async def _body(request: web.Request, model: type[BodyT]) -> BodyT:
    if request.content_length is not None and request.content_length > MAX_ACTION_BODY:
        raise responses.http_error(413, f"body over {MAX_ACTION_BODY} bytes")
    timeout = services_of(request).controller.config.server.read_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await request.content.read(MAX_ACTION_BODY + 1)
    except TimeoutError:
        raise responses.http_error(408, f"body not received within {timeout:g}s") from None
    if len(raw) > MAX_ACTION_BODY:
        raise responses.http_error(413, f"body over {MAX_ACTION_BODY} bytes")
    request[RAW_BODY] = raw  # what a forward to the pair's owner sends on
    if not raw.strip():
        return model.model_validate({})
    try:
        data = jsonbody.load_object(raw)
    except jsonbody.BodyError as exc:
        raise responses.http_error(400, str(exc)) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                    for e in exc.errors()[:5]]
        raise responses.http_error(400, "invalid request: " + "; ".join(problems)) from exc


def _answer(outcome: ActionOutcome) -> web.Response:
    status = 409 if outcome.refused else 200
    return responses.json_response(outcome.to_dict(), status=status)


# -- handlers ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Alive: the control loop finished a tick recently (or has not had time to yet)."""
    services = services_of(request)
    controller = services.controller
    last = controller.last_tick_at
    budget = 3 * controller.interval + controller.config.evaluation.source_timeout + 30.0
    started = request.app.get(STARTED_AT, time.monotonic())
    reference = last if last is not None else started
    if time.monotonic() - reference > budget:
        raise responses.http_error(503, f"no evaluation finished in the last {budget:.0f}s")
    return responses.json_response({"status": "ok"})


def state_problem(view: PairView) -> str | None:
    """Why the pair runs on a state rebuilt from the routes (until a person approves)."""
    if view.state_problem:
        return view.state_problem
    if view.state.phase == "blocked" and view.state.block_cause == "state":
        return view.state.reason
    return None


async def readyz(request: web.Request) -> web.Response:
    """Ready: the first evaluation is done (verdicts are cached) and not shutting down.

    A stored state that could not be read is reported in `problems` but keeps the answer
    200: the state was rebuilt from the routes, and a replica taken out of its Service
    would no longer receive Alertmanager's webhook, the one path that still rolls back.
    """
    controller = services_of(request).controller
    if not controller.ready:
        raise responses.http_error(503, "not ready: no evaluation finished yet, or stopping")
    problems = [f"pair {name}: {problem}" for name, view in controller.views.items()
                if (problem := state_problem(view))]
    body: dict[str, Any] = {"status": "degraded" if problems else "ready",
                            "leader": controller.is_leader}
    held = getattr(controller.leadership, "held", None)
    if controller.leadership.sharded and held is not None:
        body["shards"] = sorted(held())  # the shards this replica acts on now
    if problems:
        body["problems"] = problems
    return responses.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the recorder's registry."""
    controller = services_of(request).controller
    controller.recorder.record_leader(controller.is_leader)
    body = generate_latest(controller.recorder.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 description of this API."""
    return responses.json_response(openapi_document())


async def list_pairs(request: web.Request) -> web.Response:
    """Every pair's summary (sharded: this replica's own, and the others' from them)."""
    services = services_of(request)
    controller = services.controller
    forwarder = services.forwarder
    if forwarder is None or not forwarder.forwards_reads:
        return responses.json_response(
            {"pairs": [pair_summary(view, controller) for view in controller.views.values()]})
    own = [pair_summary(view, controller) for name, view in controller.views.items()
           if controller.acts_on(name)]
    if forwarding.FORWARDED_BY in request.headers:
        return responses.json_response({"pairs": own})
    return responses.json_response({"pairs": await forwarder.gather_lists(request, own)})


def _detail_inputs(view: PairView, controller: Controller) -> tuple[object, ...]:
    # Every field the detail reads is replaced, never mutated, when it changes; holding the
    # objects themselves (not their ids) makes an identity comparison safe.
    return (view.state, view.observation, view.verdict, view.readiness, view.read_errors,
            view.evaluated_at, view.record, view.would, view.state_error,
            view.state_problem, controller.acts_on(view.pair.name), controller.dry_run,
            controller.policy(view.pair))


def _same(cached: tuple[object, ...], current: tuple[object, ...]) -> bool:
    return all(a is b or (isinstance(a, bool | float | str | None | tuple) and a == b)
               for a, b in zip(cached, current, strict=True))


async def get_pair(request: web.Request) -> web.Response:
    """One pair in detail; the encoded body is reused until the pair's view changes.

    Building it walks every rule result (about 5 ms for 10 rules); the view changes once per
    evaluation, while pipelines and dashboards may ask thousands of times a second.
    """
    services = services_of(request)
    view, controller = _pair(services, request), services.controller
    if services.forwarder is not None:
        relayed = await services.forwarder.forward_if_elsewhere(request, view.pair.name,
                                                                read=True)
        if relayed is not None:
            return relayed
    inputs = _detail_inputs(view, controller)
    cached = services.detail_cache.get(view.pair.name)
    if cached is None or not _same(cached[0], inputs):
        body = responses.encode(pair_detail(view, controller))
        services.detail_cache[view.pair.name] = (inputs, body)
    else:
        body = cached[1]
    return web.Response(text=body, content_type="application/json")


def _wait_seconds(request: web.Request, limit: float) -> float:
    text = request.query.get("wait")
    if text is None or text == "":
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        raise responses.http_error(400, f"wait must be a number of seconds, got {text[:50]!r}"
                                   ) from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > limit:
        raise responses.http_error(400, f"wait must be between 0 and {limit:g} seconds")
    return seconds


async def flip_check(request: web.Request) -> web.Response:
    """200 when flipping to the dark namespace is safe now, 409 with reasons when not."""
    services = services_of(request)
    view = _pair(services, request)
    controller = services.controller
    wait = _wait_seconds(request, services.max_wait)
    if services.forwarder is not None:
        relayed = await services.forwarder.forward_if_elsewhere(request, view.pair.name,
                                                                extra_timeout=wait)
        if relayed is not None:
            return relayed
    deadline = time.monotonic() + wait
    body = flip_check_body(view, controller)
    while not body["safe"]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if await services.long_polls.wait(request, left) == "gone":
            break  # nobody is left to read the answer
        body = flip_check_body(view, controller)
    return responses.json_response(body, status=200 if body["safe"] else 409)


ActionKind = Literal["approve", "unapprove", "flip", "rollback", "scale_down"]


def _action_handler(kind: ActionKind) -> Any:
    models: dict[str, type[_Body]] = {"approve": ApproveRequest, "unapprove": ApproveRequest,
                                      "flip": FlipRequest,
                                      "rollback": RollbackRequest,
                                      "scale_down": ScaleDownRequest}

    async def handler(request: web.Request) -> web.Response:
        services = services_of(request)
        who = await _authorize(services, request)
        view = _pair(services, request)
        body = await _body(request, models[kind])
        controller = services.controller
        forwarder = services.forwarder
        if forwarder is not None:
            relayed = await forwarder.forward_if_elsewhere(request, view.pair.name,
                                                           request.get(RAW_BODY))
            if relayed is not None:
                return relayed
        try:
            if kind in ("approve", "unapprove"):
                approval = cast(ApproveRequest, body)
                decision: lifecycle.Decision | None = (
                    "scale_down" if approval.decision == "scale-down" else approval.decision)
                outcome = await controller.approve(view.pair.name, reason=body.reason,
                                                   by=who.name, decision=decision,
                                                   withdraw=kind == "unapprove")
            elif kind == "flip":
                flip = cast(FlipRequest, body)
                _check_namespace(view.pair, flip.to)
                outcome = await controller.request(view.pair.name, "flip", force=flip.force,
                                                   reason=flip.reason, to=flip.to)
            elif kind == "scale_down":
                down = cast(ScaleDownRequest, body)
                outcome = await controller.request(view.pair.name, "scale_down",
                                                   force=down.force, reason=down.reason,
                                                   keep=down.keep)
            else:
                back = cast(RollbackRequest, body)
                outcome = await controller.request(view.pair.name, "rollback",
                                                   force=back.force, reason=back.reason)
        except (NotLeaderError, ShuttingDown) as exc:
            raise responses.http_error(503, str(exc), retry_after=2) from exc
        except KeyError as exc:  # its BlueGreenPair object was deleted while it waited
            raise responses.http_error(404, str(exc.args[0] if exc.args else exc)) from exc
        except ClusterError as exc:
            raise responses.http_error(503, f"cluster unreachable: {exc}", retry_after=5
                                       ) from exc
        log.info("request handled", pair=view.pair.name, action=kind, changed=outcome.changed,
                 refused=outcome.refused, by=who.name)
        return _answer(outcome)

    handler.__name__ = f"post_{kind}"
    handler.__doc__ = f"POST .../{kind.replace('_', '-')}: a person's {kind}."
    return handler


def _check_namespace(pair: PairConfig, namespace: str | None) -> None:
    if namespace is not None and namespace not in pair.namespaces:
        raise responses.http_error(400, f"namespace {namespace[:63]!r} is not part of pair "
                                        f"{pair.name!r} ({', '.join(pair.namespaces)})")


STARTED_AT = web.AppKey("gatekeeper_started_at", float)


def add_routes(app: web.Application) -> None:
    """Register every route of the API."""
    from gatekeeper.service.webhook import handle_alertmanager

    app[STARTED_AT] = time.monotonic()
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/api/v1/openapi.json", openapi, allow_head=False)
    app.router.add_get("/api/v1/pairs", list_pairs, allow_head=False)
    app.router.add_get("/api/v1/pairs/{pair}", get_pair, allow_head=False)
    app.router.add_get("/api/v1/pairs/{pair}/flip-check", flip_check, allow_head=False)
    actions: tuple[tuple[ActionKind, str], ...] = (
        ("approve", "approve"), ("unapprove", "unapprove"), ("flip", "flip"),
        ("rollback", "rollback"), ("scale_down", "scale-down"))
    for kind, path in actions:
        app.router.add_post(f"/api/v1/pairs/{{pair}}/{path}", _action_handler(kind))
    app.router.add_post("/api/v1/alertmanager", handle_alertmanager)
