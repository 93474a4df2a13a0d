"""The OpenAPI 3 description served at `/api/v1/openapi.json`.

Written by hand next to the handlers and checked by schemathesis (tests/test_service_api.py):
every status a handler can answer is listed, so clients can rely on it.
"""

from __future__ import annotations

import copy
from typing import Any

from gatekeeper import __version__
from gatekeeper.lifecycle import PHASES

__all__ = ["openapi_document"]

_NULLABLE_STRING = {"type": "string", "nullable": True}
_NULLABLE_NUMBER = {"type": "number", "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_PAIR_PARAMETER = {
    "name": "pair", "in": "path", "required": True, "description": "the pair's name",
    "schema": {"type": "string"},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Status": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string"}, "leader": {"type": "boolean"},
                       "problems": {"type": "array", "items": {"type": "string"}},
                       "shards": {"type": "array", "items": {"type": "integer"},
                                  "description": "sharded replicas: the shards this one "
                                                 "acts on"}},
    },
    "PairSummary": {
        "type": "object",
        "required": ["pair", "phase", "verdict", "active", "dark", "dry_run"],
        "properties": {
            "pair": {"type": "string"},
            "phase": {"type": "string", "enum": list(PHASES)},
            "phase_since": _NULLABLE_NUMBER,
            "reason": {"type": "string"},
            "active": _NULLABLE_STRING,
            "dark": _NULLABLE_STRING,
            "verdict": {"type": "string", "enum": ["safe", "unsafe", "unknown"]},
            "verdict_stale": {**_NULLABLE_STRING, "description": "why the cached verdict is "
                              "too old to rely on (then `verdict` is unknown)"},
            "dark_score": _NULLABLE_NUMBER,
            "active_score": _NULLABLE_NUMBER,
            "evaluated_at": _NULLABLE_NUMBER,
            "dry_run": {"type": "boolean"},
        },
    },
    "PairList": {
        "type": "object", "required": ["pairs"],
        "properties": {"pairs": {"type": "array", "items": _ref("PairSummary")}},
    },
    "PairDetail": {
        "allOf": [_ref("PairSummary"), {
            "type": "object",
            "required": ["namespaces", "lifecycle", "history", "policy"],
            "properties": {
                "namespaces": {"type": "array", "items": {"type": "string"}},
                "previous": _NULLABLE_STRING,
                "routes_problem": _NULLABLE_STRING,
                "result": {"type": "object", "nullable": True,
                           "description": "the verdict with every rule result (docs/cli.md)"},
                "evidence": {"type": "object", "description": (
                    "how much evidence backs the dark's verdict: per rule its source, status, "
                    "samples seen in the judged window and minimum; `enough`, and a `hint` "
                    "when there are too few (docs/lifecycle.md)")},
                "validation": {"type": "object", "description": (
                    "the validation drivers (docs/evidence.md): `running` (dark, active, "
                    "release, dry_run, or null) and `outcomes`, each driver's latest: driver, "
                    "namespace, release, status (pending/pass/fail/error), reason, value, "
                    "samples, at, details (the test Job: job, reason, message, pod, "
                    "log_tail)")},
                "readiness": {"type": "object"},
                "traffic": {"type": "object", "description": (
                    "real traffic to the dark: `step` (the progressive step in place, 1-based; "
                    "0: none) of `steps`, `percent` it sends there, `mirroring` (whether "
                    "the routes copy requests to it: docs/evidence.md)")},
                "lifecycle": {"type": "object"},
                "would": {"type": "array", "items": {"type": "string"}},
                "timestamps": {"type": "object"},
                "last_action": {"type": "object", "nullable": True},
                "history": {"type": "array", "items": {"type": "object"}},
                "state_error": _NULLABLE_STRING,
                "state_problem": _NULLABLE_STRING,
                "policy": {"type": "object"},
                "leader": {"type": "boolean"},
            },
        }],
    },
    "FlipCheck": {
        "type": "object",
        "required": ["pair", "safe", "status", "phase", "verdict", "reasons"],
        "properties": {
            "pair": {"type": "string"},
            "safe": {"type": "boolean"},
            "status": {"type": "string", "enum": ["safe", "unsafe", "unknown"]},
            "phase": {"type": "string", "enum": list(PHASES)},
            "active": _NULLABLE_STRING,
            "dark": _NULLABLE_STRING,
            "verdict": {"type": "string", "enum": ["safe", "unsafe", "unknown"]},
            "score": _NULLABLE_NUMBER,
            "reasons": {"type": "array", "items": {"type": "string"}},
            "evaluated_at": _NULLABLE_NUMBER,
            "dry_run": {"type": "boolean"},
        },
    },
    "ActionOutcome": {
        "type": "object",
        "required": ["action", "changed", "refused", "reasons", "phase"],
        "properties": {
            "action": {"type": "string"},
            "changed": {"type": "boolean"},
            "refused": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "phase": {"type": "string", "enum": list(PHASES)},
            "active": _NULLABLE_STRING,
            "dry_run": {"type": "boolean"},
            "result": {"type": "object", "nullable": True},
        },
    },
    "ApproveRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {"reason": {"type": "string", "maxLength": 1024},
                       "for": {"type": "string", "enum": ["flip", "scale-down"],
                               "nullable": True,
                               "description": "approve only this decision"}},
    },
    "FlipRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "reason": {"type": "string", "maxLength": 1024},
            "force": {"type": "boolean", "description": "skip the safety checks"},
            "to": {"type": "string", "maxLength": 63,
                   "description": "namespace to send traffic to (default: the dark one)"},
        },
    },
    "RollbackRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {"reason": {"type": "string", "maxLength": 1024},
                       "force": {"type": "boolean"}},
    },
    "ScaleDownRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "reason": {"type": "string", "maxLength": 1024},
            "force": {"type": "boolean"},
            "keep": {"type": "integer", "minimum": 0, "maximum": 10000,
                     "description": "replicas to keep (default: policy.scale_down_keep)"},
        },
    },
    "Alert": {
        "type": "object", "required": ["status", "labels"], "additionalProperties": True,
        "properties": {
            "status": {"type": "string", "enum": ["firing", "resolved"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "startsAt": {"type": "string"},
            "endsAt": {"type": "string"},
            "generatorURL": {"type": "string"},
            "fingerprint": {"type": "string"},
        },
    },
    "AlertmanagerPayload": {
        "type": "object", "required": ["version", "status", "alerts"],
        "additionalProperties": True,
        "description": "Alertmanager's webhook notification, version 4",
        "properties": {
            "version": {"type": "string", "enum": ["4"]},
            "status": {"type": "string", "enum": ["firing", "resolved"]},
            "alerts": {"type": "array", "items": _ref("Alert")},
            "groupKey": {"type": "string"},
            "truncatedAlerts": {"type": "integer"},
            "receiver": {"type": "string"},
            "groupLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "commonAnnotations": {"type": "object",
                                  "additionalProperties": {"type": "string"}},
            "externalURL": {"type": "string"},
        },
    },
    "WebhookReply": {
        "type": "object", "required": ["accepted", "outcome", "alerts", "results"],
        "properties": {
            "accepted": {"type": "boolean"},
            "outcome": {"type": "string",
                        "enum": ["rollback", "refused", "cooldown", "duplicate", "ignored"]},
            "alerts": {"type": "integer"},
            "results": {"type": "array", "items": {"type": "object"}},
        },
    },
}


def _action(summary: str, body: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"bearerAuth": []}],
        "parameters": [_PAIR_PARAMETER],
        "requestBody": {"required": False,
                        "content": {"application/json": {"schema": _ref(body)}}},
        "responses": {
            "200": _json(_ref("ActionOutcome"), "done, or nothing to do (changed: false)"),
            "400": _error("malformed body"),
            "401": _error("missing or wrong bearer token"),
            "404": _error("unknown pair"),
            "409": _json(_ref("ActionOutcome"), "refused as unsafe; reasons say why"),
            "413": _error("body too large"),
            "503": _error("not the leader, shutting down, or the cluster is unreachable"),
        },
    }


def _paths() -> dict[str, Any]:
    plain = {"description": "Prometheus text exposition",
             "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/healthz": {"get": {"summary": "liveness", "responses": {
            "200": _json(_ref("Status"), "alive"),
            "503": _error("the control loop is stuck")}}},
        "/readyz": {"get": {"summary": "readiness", "responses": {
            "200": _json(_ref("Status"), "verdicts are cached"),
            "503": _error("no evaluation yet, or shutting down")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (docs/metrics.md)",
                             "responses": {"200": plain}}},
        "/api/v1/openapi.json": {"get": {"summary": "this document", "responses": {
            "200": _json({"type": "object"}, "OpenAPI 3 document")}}},
        "/api/v1/pairs": {"get": {"summary": "every pair", "responses": {
            "200": _json(_ref("PairList"), "summaries")}}},
        "/api/v1/pairs/{pair}": {"get": {
            "summary": "one pair: phase, namespaces, rule results, score, verdict, history",
            "parameters": [_PAIR_PARAMETER],
            "responses": {"200": _json(_ref("PairDetail"), "the pair"),
                          "404": _error("unknown pair")}}},
        "/api/v1/pairs/{pair}/flip-check": {"get": {
            "summary": "is it safe to flip to the dark namespace now? (2xx means go)",
            "parameters": [_PAIR_PARAMETER, {
                "name": "wait", "in": "query", "required": False,
                "description": "long-poll up to this many seconds until safe",
                "schema": {"type": "number", "minimum": 0, "maximum": 3600}}],
            "responses": {"200": _json(_ref("FlipCheck"), "safe to flip now"),
                          "400": _error("bad wait parameter"),
                          "404": _error("unknown pair"),
                          "409": _json(_ref("FlipCheck"), "not safe; reasons say why")}}},
        "/api/v1/pairs/{pair}/approve": {"post": _action(
            "approve: validate the dark (idle), allow the flip (ready), allow the scale-down "
            "(flipped) or resume (blocked); `for` approves only the flip or the scale-down "
            "go/no-go. The caller's token name is recorded as the approver", "ApproveRequest")},
        "/api/v1/pairs/{pair}/unapprove": {"post": _action(
            "withdraw an approval not acted on yet (`for`: only the flip or the scale-down)",
            "ApproveRequest")},
        "/api/v1/pairs/{pair}/flip": {"post": _action("send traffic to the dark namespace",
                                                      "FlipRequest")},
        "/api/v1/pairs/{pair}/rollback": {"post": _action(
            "send traffic back to the previous namespace", "RollbackRequest")},
        "/api/v1/pairs/{pair}/scale-down": {"post": _action(
            "scale the dark (previous) namespace down to `keep` replicas", "ScaleDownRequest")},
        "/api/v1/alertmanager": {"post": {
            "summary": "Alertmanager webhook receiver (version 4 payload)",
            "security": [{"bearerAuth": []}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("AlertmanagerPayload")}}},
            "responses": {
                "200": _json(_ref("WebhookReply"), "accepted (even when no action follows)"),
                "400": _error("malformed payload (Alertmanager does not retry 4xx)"),
                "401": _error("missing or wrong bearer token"),
                "413": _error("body over webhook.max_body_bytes"),
                "503": _error("not the leader or shutting down: Alertmanager retries")}}},
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may modify it)."""
    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {
            "title": "gatekeeper",
            "version": __version__,
            "description": "Monitoring-driven release gatekeeper for blue/green namespaces.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    })
