"""`authentication.k8s.io/v1` TokenReview: who a bearer token belongs to.

Only service-account tokens the emulator was told about (`Emulator.tokens.issue`) are
known, as a cluster with the ServiceAccount token authenticator knows its own. The shapes
follow the real API: a create-only, cluster-scoped resource answered with 201 and the
request echoed back with `status` filled in; an unknown token is `authenticated` absent
(false) with `user: {}` and an `error`; audiences are checked against the token's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, bad_request

GROUP_VERSION = "authentication.k8s.io/v1"
DEFAULT_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


@dataclass
class ServiceAccountTokens:
    """Tokens the emulated cluster issued: token -> (namespace, service account, audiences)."""

    issued: dict[str, tuple[str, str, tuple[str, ...], str]] = field(default_factory=dict)

    def issue(self, token: str, namespace: str, name: str, *,
              audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)) -> None:
        """Make `token` authenticate as system:serviceaccount:NAMESPACE:NAME."""
        self.issued[token] = (namespace, name, audiences, str(uuid.uuid4()))

    def review(self, body: Any) -> dict[str, Any]:
        """The TokenReview answer for a request body (400 for a malformed one)."""
        if not isinstance(body, dict) or body.get("kind") != "TokenReview":
            raise bad_request("the body must be a TokenReview")
        spec = body.get("spec")
        if not isinstance(spec, dict):
            raise ApiError(422, 'TokenReview.authentication.k8s.io "" is invalid: spec: '
                                "Required value", reason="Invalid")
        token, wanted = spec.get("token"), spec.get("audiences") or []
        if not isinstance(token, str) or not token:
            raise ApiError(422, 'TokenReview.authentication.k8s.io "" is invalid: spec.token: '
                                "Required value", reason="Invalid")
        answer = {"kind": "TokenReview", "apiVersion": GROUP_VERSION,
                  "metadata": {"creationTimestamp": None}, "spec": spec}
        known = self.issued.get(token)
        if known is None:
            answer["status"] = {"user": {}, "error": "[invalid bearer token, service account "
                                                     "token could not be validated]"}
            return answer
        namespace, name, audiences, uid = known
        if wanted and not set(wanted) & set(audiences):
            answer["status"] = {"user": {}, "error": "[invalid bearer token, token audiences "
                                f"{list(audiences)} is invalid for the target audiences "
                                f"{list(wanted)}]"}
            return answer
        answer["status"] = {
            "authenticated": True,
            "user": {"username": f"system:serviceaccount:{namespace}:{name}", "uid": uid,
                     "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                "system:authenticated"]},
            "audiences": list(set(wanted) & set(audiences)) if wanted else list(audiences),
        }
        return answer
