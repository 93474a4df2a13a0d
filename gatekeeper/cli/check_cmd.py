"""`gatekeeper check --url URL --pair NAME [--wait 30m]`: the pipelines' question.

Asks a running gatekeeper whether flipping the pair is safe now (long-polling up to
`--wait`). While it waits it prints a progress line whenever the picture changes (phase,
verdict, consecutive passes, soak, the top reason), then the answer and a one-line summary.
With `--output json` stdout is one JSON document (the answer, the progress seen and the
time waited) and progress lines go to stderr. Exit codes: 0 safe, 1 not safe, 2 usage
error (unknown pair, bad flags), 3 unknown (no data, a source down) or gatekeeper
unreachable. The reasons are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from gatekeeper.cli.api_client import (
    Answer,
    ApiClient,
    UsageError,
    add_connection_arguments,
    client_from_args,
    pair_path,
)
from gatekeeper.durations import parse_duration

EXIT_SAFE, EXIT_UNSAFE, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
POLL_CHUNK = 55.0
"""Seconds per long-poll request: below common proxy idle timeouts (60 s)."""
PROGRESS_CHUNK = 2.0
"""Seconds per long-poll while reporting progress (a change shows within this); the first
request does not wait, so the starting picture shows at once."""

EXAMPLES = """\
examples:
  # a pipeline's validation step: go (exit 0) only once flipping is safe
  gatekeeper check --url http://gatekeeper.gatekeeper.svc:8080 --pair api --wait 30m
  # the answer as one JSON document (progress lines go to stderr)
  gatekeeper check --url http://127.0.0.1:8080 --pair api --output json
"""


def register(subcommands: Any) -> None:
    """Add `check`."""
    help_text = "ask a running gatekeeper whether flipping a pair is safe now"
    parser = subcommands.add_parser(
        "check", help=help_text, description=help_text, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_arguments(parser, token_help="send this bearer token (if a proxy wants "
                             "one; default: $GATEKEEPER_TOKEN)")
    parser.add_argument("--pair", required=True, help="the pair's name")
    parser.add_argument("--wait", default="0", help="wait up to this long for safe (e.g. 30m)")
    parser.add_argument("--output", choices=["text", "json"], default="text")
    parser.add_argument("--quiet", action="store_true", help="no progress lines while waiting")
    parser.add_argument("--approval-pending-ok", action="store_true",
                        help="exit 0 also when the gates pass and only the approval is "
                             "missing (policy.require_approval: the step before approve)")
    parser.set_defaults(handler=check_command)


def check_command(args: argparse.Namespace) -> int:
    """Synchronous entry for argparse."""
    try:
        wait = parse_duration(args.wait)
        client = client_from_args(args)
    except (ValueError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stream = sys.stderr if args.output == "json" else sys.stdout
    progress = Progress(stream=None if args.quiet else stream)
    started = time.monotonic()
    status, body = asyncio.run(_ask(client, args.pair, wait=wait, progress=progress,
                                    pending_ok=args.approval_pending_ok))
    waited = time.monotonic() - started
    return report(status, body, output=args.output, progress=progress, waited=waited,
                  pending_ok=args.approval_pending_ok)


def only_approval_missing(status: int | None, body: dict[str, Any]) -> bool:
    """A 409 whose one reason is the missing approval of a `ready` pair (gates pass)."""
    reasons = body.get("reasons") or []
    return (status == 409 and body.get("phase") == "ready" and body.get("verdict") == "safe"
            and len(reasons) == 1 and str(reasons[0]).startswith("awaiting approval"))


# -- progress ----------------------------------------------------------------------------------


@dataclass
class Progress:
    """The waiting pipeline's view: one line per change of (phase, verdict, passes, soak
    done, top reason with its numbers blanked, so a soak counting seconds is not a change)."""

    stream: TextIO | None = None
    clock: Callable[[], float] = time.monotonic
    seen: list[dict[str, Any]] = field(default_factory=list)
    _key: tuple[Any, ...] | None = None
    _started: float = field(default_factory=time.monotonic)

    def update(self, check: dict[str, Any], detail: dict[str, Any] | None) -> None:
        """Fold one flip-check answer (and the pair's detail, when read) in; print if new."""
        entry = describe(check, detail)
        key = (entry["phase"], entry["verdict"], entry["passes"], entry["soaked"] is not None
               and entry["soak"] is not None and entry["soaked"] >= entry["soak"],
               re.sub(r"\d+(\.\d+)?", "#", entry["reason"] or ""))
        if key == self._key:
            return
        self._key = key
        entry["after"] = round(self.clock() - self._started, 1)
        self.seen.append(entry)
        if self.stream is not None:
            print(progress_line(entry), file=self.stream, flush=True)


def describe(check: dict[str, Any], detail: dict[str, Any] | None) -> dict[str, Any]:
    """Phase, verdict, passes, soak and top reason from a flip-check body and pair detail."""
    lifecycle = (detail or {}).get("lifecycle") or {}
    policy = (detail or {}).get("policy") or {}
    soaked = None
    started, at = lifecycle.get("soak_started"), (detail or {}).get("evaluated_at")
    if isinstance(started, int | float) and isinstance(at, int | float):
        soaked = max(0.0, at - started)
    reasons = check.get("reasons") or []
    return {"phase": check.get("phase"), "verdict": check.get("verdict"),
            "safe": check.get("safe") is True,
            "passes": lifecycle.get("passes"), "passes_needed": policy.get("consecutive_passes"),
            "soaked": soaked, "soak": policy.get("soak"),
            "reason": str(reasons[0]) if reasons else None}


def progress_line(entry: dict[str, Any]) -> str:
    """`[  12s] phase validating, verdict unsafe, passes 0/3, soaked 8s of 15s: <reason>`."""
    parts = [f"phase {entry['phase']}", f"verdict {entry['verdict']}"]
    if entry["passes"] is not None:
        needed = entry["passes_needed"]
        parts.append(f"passes {entry['passes']}" + (f"/{needed}" if needed else ""))
    if entry["soaked"] is not None:
        parts.append(f"soaked {entry['soaked']:.0f}s"
                     + (f" of {entry['soak']:.0f}s" if entry["soak"] is not None else ""))
    text = f"[{entry.get('after', 0):5.0f}s] " + ", ".join(parts)
    return text + (f": {entry['reason']}" if entry["reason"] else "")


# -- asking ------------------------------------------------------------------------------------


async def ask(url: str, pair: str, *, wait: float, slack: float,
              headers: dict[str, str]) -> tuple[int | None, dict[str, Any]]:
    """GET flip-check, long-polling in chunks until safe or `wait` is over (no progress).

    Returns (HTTP status or None when unreachable, body or `{"error": ...}`).
    """
    token = headers.get("Authorization", "").removeprefix("Bearer ").strip() or None
    return await _ask(ApiClient(url, token=token, slack=slack), pair, wait=wait,
                      progress=None)


async def _ask(client: ApiClient, pair: str, *, wait: float, progress: Progress | None,
               pending_ok: bool = False) -> tuple[int | None, dict[str, Any]]:
    deadline = time.monotonic() + wait
    chunk_limit = PROGRESS_CHUNK if progress is not None else POLL_CHUNK
    first = progress is not None
    async with client:
        while True:
            chunk = 0.0 if first else max(0.0, min(chunk_limit, deadline - time.monotonic()))
            first = False
            answer = await client.request("GET", pair_path(pair, "flip-check"),
                                          params={"wait": f"{chunk:.3f}"}, wait=chunk)
            status, body = answer.status, answer.body
            if progress is not None and status in (200, 409) and "phase" in body:
                detail = await client.request("GET", pair_path(pair))
                progress.update(body, detail.body if detail.status == 200 else None)
            if status == 200 or time.monotonic() >= deadline or status not in (409, None):
                return status, body
            if pending_ok and only_approval_missing(status, body):
                return status, body
            if status is None:
                await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def report(status: int | None, body: dict[str, Any], *, output: str = "text",
           progress: Progress | None = None, waited: float | None = None,
           pending_ok: bool = False) -> int:
    """Print the answer (and, after a wait, a summary line); return the exit code."""
    pending = pending_ok and only_approval_missing(status, body)
    if (status == 200 and body.get("safe") is True) or pending:
        code = EXIT_SAFE
    elif status == 409:
        code = EXIT_UNKNOWN if body.get("status") == "unknown" else EXIT_UNSAFE
    elif status in (400, 404):
        code = EXIT_USAGE
    else:
        code = EXIT_UNKNOWN
    last = progress.seen[-1] if progress is not None and progress.seen else None
    if output == "json":
        document: dict[str, Any] = {"http_status": status, **Answer(status, body).body}
        if progress is not None:
            document["progress"] = progress.seen
        if waited is not None:
            document["waited_seconds"] = round(waited, 1)
        print(json.dumps(document, indent=2))
        return code
    pair = body.get("pair", "?")
    if pending:
        print(f"SAFE: pair {pair}: the gates pass; flipping to {body.get('dark')} awaits "
              "the approval")
    elif code == EXIT_SAFE:
        print(f"SAFE: pair {pair}: flipping to {body.get('dark')} is safe now")
    elif code in (EXIT_UNSAFE, EXIT_UNKNOWN) and "reasons" in body:
        label = "UNKNOWN" if code == EXIT_UNKNOWN else "NOT SAFE"
        print(f"{label}: pair {pair} (phase {body.get('phase')}, verdict "
              f"{body.get('verdict')})")
        for reason in body.get("reasons") or []:
            print(f"  - {reason}")
    else:
        print(f"error: {body.get('error', f'HTTP {status}')}", file=sys.stderr)
    if waited is not None and last is not None:
        changes = len(progress.seen) if progress is not None else 0
        print(f"summary: {'safe' if code == EXIT_SAFE else 'not safe'} after "
              f"{waited:.0f}s of waiting ({changes} change{'s' if changes != 1 else ''} "
              f"seen); {progress_line(last).split('] ', 1)[1]}")
    return code
