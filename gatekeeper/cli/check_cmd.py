"""`gatekeeper check --url URL --pair NAME [--wait 30m]`: the pipelines' question.

Asks a running gatekeeper whether flipping the pair is safe now (long-polling up to
`--wait`). Exit codes: 0 safe, 1 not safe, 2 usage error (unknown pair, bad flags),
3 unknown (no data, a source down) or gatekeeper unreachable. The reasons are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from gatekeeper.durations import parse_duration

EXIT_SAFE, EXIT_UNSAFE, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
POLL_CHUNK = 55.0
"""Seconds per long-poll request: below common proxy idle timeouts (60 s)."""


def register(subcommands: Any) -> None:
    """Add `check`."""
    parser = subcommands.add_parser(
        "check", help="ask a running gatekeeper whether flipping a pair is safe now")
    parser.add_argument("--url", required=True, help="gatekeeper base URL, e.g. "
                        "http://gatekeeper.gatekeeper.svc:8080")
    parser.add_argument("--pair", required=True, help="the pair's name")
    parser.add_argument("--wait", default="0", help="wait up to this long for safe (e.g. 30m)")
    parser.add_argument("--token-file", help="send this bearer token (if a proxy wants one)")
    parser.add_argument("--timeout", default="10s", help="per-request connect/read slack")
    parser.add_argument("--output", choices=["text", "json"], default="text")
    parser.set_defaults(handler=check_command)


def check_command(args: argparse.Namespace) -> int:
    """Synchronous entry for argparse."""
    try:
        wait = parse_duration(args.wait)
        slack = parse_duration(args.timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    headers = {"Accept": "application/json"}
    if args.token_file:
        try:
            headers["Authorization"] = "Bearer " + Path(args.token_file).read_text().strip()
        except OSError as exc:
            print(f"error: cannot read --token-file: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    status, body = asyncio.run(ask(args.url, args.pair, wait=wait, slack=slack,
                                   headers=headers))
    return report(status, body, output=args.output)


async def ask(url: str, pair: str, *, wait: float, slack: float,
              headers: dict[str, str]) -> tuple[int | None, dict[str, Any]]:
    """GET flip-check, long-polling in chunks until safe or `wait` is over.

    Returns (HTTP status or None when unreachable, body or `{"error": ...}`).
    """
    endpoint = f"{url.rstrip('/')}/api/v1/pairs/{quote(pair, safe='')}/flip-check"
    deadline = time.monotonic() + wait
    status: int | None = None
    body: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            chunk = max(0.0, min(POLL_CHUNK, deadline - time.monotonic()))
            timeout = aiohttp.ClientTimeout(total=chunk + slack)
            try:
                async with session.get(endpoint, params={"wait": f"{chunk:.3f}"},
                                       timeout=timeout) as response:
                    status = response.status
                    try:
                        body = await response.json(content_type=None)
                    except (json.JSONDecodeError, aiohttp.ContentTypeError, ValueError):
                        body = {"error": f"HTTP {status}: not a JSON answer"}
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, body = None, {"error": f"gatekeeper unreachable at {url}: "
                                               f"{type(exc).__name__}: {exc}"}
            if status == 200 or time.monotonic() >= deadline or status not in (409, None):
                return status, body if isinstance(body, dict) else {"error": "bad answer"}
            if status is None:
                await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def report(status: int | None, body: dict[str, Any], *, output: str = "text") -> int:
    """Print the answer; return the exit code."""
    if output == "json":
        print(json.dumps({"http_status": status, **body}, indent=2))
    if status == 200 and body.get("safe") is True:
        code = EXIT_SAFE
    elif status == 409:
        code = EXIT_UNKNOWN if body.get("status") == "unknown" else EXIT_UNSAFE
    elif status in (400, 404):
        code = EXIT_USAGE
    else:
        code = EXIT_UNKNOWN
    if output == "text":
        pair = body.get("pair", "?")
        if code == EXIT_SAFE:
            print(f"SAFE: pair {pair}: flipping to {body.get('dark')} is safe now")
        elif code in (EXIT_UNSAFE, EXIT_UNKNOWN) and "reasons" in body:
            label = "UNKNOWN" if code == EXIT_UNKNOWN else "NOT SAFE"
            print(f"{label}: pair {pair} (phase {body.get('phase')}, verdict "
                  f"{body.get('verdict')})")
            for reason in body.get("reasons") or []:
                print(f"  - {reason}")
        else:
            print(f"error: {body.get('error', f'HTTP {status}')}", file=sys.stderr)
    return code
