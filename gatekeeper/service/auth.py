"""Bearer-token authentication for mutating endpoints and the webhook, with a name per token.

Tokens come from a names file (`auth.tokens_file`: a mounted Secret holding `name: token`
entries, one per person or pipeline) and/or the single shared token (`auth.token_file` or
an environment variable), which authenticates as `auth.token_name` (default `api-token`).
The name is who the audit trail says approved or acted. Every configured token is compared
in constant time (all of them, every time: which one matched does not show in the timing),
and no token is ever logged or echoed. No configured token means every protected endpoint
answers 401: gatekeeper fails closed rather than open.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper.config import AuthConfig
from gatekeeper.yamlfiles import ConfigFileError, load_yaml_text

__all__ = ["DEFAULT_TOKEN_NAME", "Identity", "TokenAuth", "TokenReviewer", "load_token",
           "load_tokens"]

DEFAULT_TOKEN_NAME = "api-token"
"""The name the single shared token authenticates as (`auth.token_name`)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,127}$")


@dataclass(frozen=True)
class Identity:
    """Who made a request: the token's name, and how it was recognised."""

    name: str
    method: str = "token"


def load_token(settings: AuthConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The single shared token: the file wins over the environment variable; blank is none.

    Raises OSError when a configured token file cannot be read (refuse to start).
    """
    if settings.token_file:
        token = Path(settings.token_file).read_text(encoding="utf-8").strip()
        return token or None
    env = os.environ if environ is None else environ
    token = env.get(settings.token_env, "").strip()
    return token or None


def parse_tokens(text: str, file: str) -> dict[str, str]:
    """`name: token` entries (YAML mapping) -> {name: token}. ConfigFileError naming
    file:line for a bad name, an empty token, or one token under two names."""
    data, lines = load_yaml_text(text, file)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError([f"{file}:{lines.line_of(())}: expected `name: token` entries, "
                               f"got a YAML {type(data).__name__}"])
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name, token in data.items():
        where = f"{file}:{lines.line_of((str(name),))}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}: name {str(name)[:40]!r} must be 1-128 letters, digits "
                            "or ._@:/+- (it is shown in the audit trail)")
            continue
        if not isinstance(token, str) or not token.strip():
            problems.append(f"{where}: the token of {name!r} must be a non-empty string")
            continue
        token = token.strip()
        if token in seen:
            problems.append(f"{where}: {name!r} has the same token as {seen[token]!r} "
                            "(each token must name one caller)")
            continue
        seen[token] = name
    if problems:
        raise ConfigFileError(problems)
    return {name: token for token, name in seen.items()}


def load_tokens(settings: AuthConfig, environ: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """Every configured token by name: the names file's entries and the single shared token
    (as `settings.token_name`). OSError when a configured file cannot be read,
    ConfigFileError when the names file is malformed (refuse to start)."""
    tokens: dict[str, str] = {}
    if settings.tokens_file:
        text = Path(settings.tokens_file).read_text(encoding="utf-8")
        tokens.update(parse_tokens(text, settings.tokens_file))
    single = load_token(settings, environ)
    if single is not None:
        if settings.token_name in tokens:
            raise ConfigFileError([f"{settings.tokens_file}: name {settings.token_name!r} is "
                                   "also auth.token_name, the shared token's name"])
        if single in tokens.values():
            raise ConfigFileError([f"{settings.tokens_file}: the shared token is also an "
                                   "entry of the names file (each token must name one caller)"])
        tokens[settings.token_name] = single
    return tokens


def _digest(token: str | bytes) -> bytes:
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


class TokenAuth:
    """Checks `Authorization: Bearer <token>` headers against the named tokens."""

    def __init__(self, token: str | None = None, *, tokens: Mapping[str, str] | None = None,
                 token_name: str = DEFAULT_TOKEN_NAME,
                 reviewer: TokenReviewer | None = None) -> None:
        self.reviewer = reviewer
        """Asked about a token none of the named ones matches (auth.token_review)."""
        named = dict(tokens or {})
        if token:
            named.setdefault(token_name, token)
        # Digests, not the tokens: equal lengths, and nothing secret kept in the clear.
        self._tokens: tuple[tuple[str, bytes], ...] = tuple(
            (name, _digest(value)) for name, value in sorted(named.items()))

    @property
    def configured(self) -> bool:
        """Whether a token is set at all (without one, protected endpoints are closed)."""
        return bool(self._tokens) or self.reviewer is not None

    @property
    def names(self) -> tuple[str, ...]:
        """The callers' names (never their tokens)."""
        return tuple(name for name, _ in self._tokens)

    def identify(self, header: str | None) -> tuple[Identity | None, str | None]:
        """(who, None) when the header carries a configured token; else (None, a message safe
        to show the caller)."""
        if not self.configured:
            return None, ("no API token is configured on the server: protected endpoints are "
                          "disabled")
        if not header:
            return None, "missing Authorization header (expected: Bearer <token>)"
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not supplied.strip():
            return None, "malformed Authorization header (expected: Bearer <token>)"
        supplied_digest = _digest(supplied.strip())
        found: str | None = None
        for name, digest in self._tokens:  # every entry, no early exit
            if hmac.compare_digest(supplied_digest, digest):
                found = name
        if found is None:
            return None, "invalid token"
        return Identity(found), None

    async def authenticate(self, header: str | None) -> tuple[Identity | None, str | None]:
        """`identify`, then (auth.token_review) the cluster's TokenReview for a token none
        of the named ones matches. An API server that cannot be asked fails closed."""
        who, problem = self.identify(header)
        if who is not None or self.reviewer is None or problem != "invalid token":
            return who, problem
        supplied = (header or "").partition(" ")[2].strip()
        try:
            reviewed = await self.reviewer.review(supplied)
        except Exception as exc:  # noqa: BLE001 - every failure to ask means "not known"
            return None, f"invalid token (TokenReview failed: {type(exc).__name__})"
        return (reviewed, None) if reviewed is not None else (None, "invalid token")

    def problem(self, header: str | None) -> str | None:
        """None when the header carries a configured token; else a message safe to show."""
        _who, problem = self.identify(header)
        return problem

    def __repr__(self) -> str:
        return f"<TokenAuth configured={self.configured} names={len(self._tokens)}>"


class TokenReviewer:
    """Authenticates a bearer token with the Kubernetes TokenReview API (a service-account
    token, e.g. a pipeline's projected token). Answers are cached for `ttl` seconds by the
    token's digest (never the token); the cache is bounded."""

    MAX_CACHED = 1024

    def __init__(self, api: Any, *, audiences: list[str] | None = None, ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.audiences = list(audiences or [])
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[bytes, tuple[float, Identity | None]] = {}

    async def review(self, token: str) -> Identity | None:
        """Who the token belongs to, or None when the cluster does not authenticate it.
        Raises the API error family when the API server cannot be asked (fail closed)."""
        from kubernetes_asyncio import client

        from gatekeeper.kubeclient import read_json

        key = _digest(token)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        spec: dict[str, Any] = {"token": token}
        if self.audiences:
            spec["audiences"] = self.audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        answer = await read_json(client.AuthenticationV1Api(self.api).create_token_review, body)
        status = answer.get("status") if isinstance(answer, dict) else None
        who: Identity | None = None
        if isinstance(status, dict) and status.get("authenticated") is True:
            user = status.get("user") or {}
            name = user.get("username") if isinstance(user, dict) else None
            if isinstance(name, str) and name:
                who = Identity(name, "token_review")
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now, who)
        return who
