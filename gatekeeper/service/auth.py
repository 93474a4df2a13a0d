"""Bearer-token authentication for mutating endpoints and the webhook.

The token comes from a file (a mounted Kubernetes Secret) or an environment variable. It is
compared in constant time and never logged or echoed. No configured token means every
protected endpoint answers 401: gatekeeper fails closed rather than open.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from gatekeeper.config import AuthConfig

__all__ = ["TokenAuth", "load_token"]


def load_token(settings: AuthConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The configured token: the file wins over the environment variable; blank is none.

    Raises OSError when a configured token file cannot be read (refuse to start).
    """
    if settings.token_file:
        token = Path(settings.token_file).read_text(encoding="utf-8").strip()
        return token or None
    env = os.environ if environ is None else environ
    token = env.get(settings.token_env, "").strip()
    return token or None


class TokenAuth:
    """Checks `Authorization: Bearer <token>` headers."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def configured(self) -> bool:
        """Whether a token is set at all (without one, protected endpoints are closed)."""
        return self._token is not None

    def problem(self, header: str | None) -> str | None:
        """None when the header carries the token; else a message safe to show the caller."""
        if self._token is None:
            return "no API token is configured on the server: protected endpoints are disabled"
        if not header:
            return "missing Authorization header (expected: Bearer <token>)"
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not supplied.strip():
            return "malformed Authorization header (expected: Bearer <token>)"
        if not hmac.compare_digest(supplied.strip().encode(), self._token):
            return "invalid token"
        return None

    def __repr__(self) -> str:
        return f"<TokenAuth configured={self.configured}>"
