"""Talking to a running gatekeeper's HTTP API from the command line (`--url`).

Shared by every command that asks or acts through the service instead of the cluster
(`check`, `approve`, `unapprove`, and the mutating commands with `--url`): the connection
flags, the bearer token (`--token-file`, else `$GATEKEEPER_TOKEN`), and one JSON request
that never raises for a network failure. Exit codes follow the CLI's contract.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from gatekeeper.durations import parse_duration

__all__ = ["TOKEN_ENV", "Answer", "ApiClient", "UsageError", "add_connection_arguments",
           "client_from_args", "exit_code", "pair_path", "report_action"]

TOKEN_ENV = "GATEKEEPER_TOKEN"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


class UsageError(Exception):
    """Bad flags or an unreadable token file: exit 2."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: the status (None when gatekeeper could not be reached) and the JSON
    body (`{"error": ...}` when there was none)."""

    status: int | None
    body: dict[str, Any]

    @property
    def error(self) -> str:
        """The server's message (`error` or the reasons), for printing."""
        if "error" in self.body:
            return str(self.body["error"])
        return "; ".join(str(r) for r in self.body.get("reasons") or []) or f"HTTP {self.status}"


def add_connection_arguments(parser: argparse.ArgumentParser, *, token_help: str = "") -> None:
    """--url, --token-file and --timeout."""
    parser.add_argument("--url", required=True, help="gatekeeper base URL, e.g. "
                        "http://gatekeeper.gatekeeper.svc:8080")
    parser.add_argument("--token-file", help=token_help or (
        f"file holding the bearer token (default: ${TOKEN_ENV}); its name is recorded as "
        "who acted"))
    parser.add_argument("--timeout", default="10s", help="per-request connect/read slack")


def read_token(args: argparse.Namespace, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token: --token-file, else $GATEKEEPER_TOKEN; None when neither is set."""
    if getattr(args, "token_file", None):
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {args.token_file}: "
                             f"{exc.strerror or exc}") from exc
        if not token:
            raise UsageError(f"--token-file {args.token_file} is empty")
        return token
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV, "").strip() or None


def pair_path(pair: str, tail: str = "") -> str:
    """`/api/v1/pairs/{pair}[/tail]` with the name quoted."""
    path = f"/api/v1/pairs/{quote(pair, safe='')}"
    return f"{path}/{tail}" if tail else path


class ApiClient:
    """One aiohttp session to a gatekeeper; use as `async with`."""

    def __init__(self, url: str, *, token: str | None = None, slack: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.slack = slack
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                      params: dict[str, str] | None = None, wait: float = 0.0) -> Answer:
        """One request; `wait` adds to the timeout (long-polls). Never raises for network
        failures or a non-JSON answer."""
        assert self._session is not None, "use ApiClient as `async with`"
        timeout = aiohttp.ClientTimeout(total=wait + self.slack)
        try:
            async with self._session.request(method, self.url + path, json=body,
                                             params=params, timeout=timeout) as response:
                status = response.status
                try:
                    data = await response.json(content_type=None)
                except (json.JSONDecodeError, aiohttp.ContentTypeError, ValueError):
                    data = {"error": f"HTTP {status}: not a JSON answer"}
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Answer(None, {"error": f"gatekeeper unreachable at {self.url}: "
                                          f"{type(exc).__name__}: {exc}"})
        if not isinstance(data, dict):
            data = {"error": f"HTTP {status}: the answer is not a JSON object"}
        return Answer(status, data)


def client_from_args(args: argparse.Namespace) -> ApiClient:
    """An ApiClient from --url, --token-file / $GATEKEEPER_TOKEN and --timeout (UsageError)."""
    try:
        slack = parse_duration(args.timeout)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    return ApiClient(args.url, token=read_token(args), slack=slack)


def exit_code(answer: Answer) -> int:
    """An action's answer as the CLI's exit code: 0 done (or nothing to do), 1 refused (409),
    2 usage (400, 401, 403, 404), 3 unreachable or the server could not act (503, 5xx)."""
    if answer.status is not None and 200 <= answer.status < 300:
        return EXIT_OK
    if answer.status == 409:
        return EXIT_REFUSED
    if answer.status in (400, 401, 403, 404, 413):
        return EXIT_USAGE
    return EXIT_UNKNOWN


def report_action(answer: Answer, verb: str, pair: str, *, output: str = "text") -> int:
    """Print an action's answer (reasons on stdout; a refusal or an error on stderr, or one
    JSON document with `--output json`) and return its exit code."""
    code = exit_code(answer)
    if output == "json":
        print(json.dumps({"http_status": answer.status, **answer.body}, indent=2))
        return code
    if answer.status == 200:
        for reason in answer.body.get("reasons") or []:
            print(reason)
    elif answer.status == 409:
        print(f"refused: {verb} (pair {pair})", file=sys.stderr)
        for reason in answer.body.get("reasons") or []:
            print(f"  - {reason}", file=sys.stderr)
    else:
        print(f"error: {answer.error}", file=sys.stderr)
    return code
