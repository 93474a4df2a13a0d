"""`flip`, `rollback` and `scale-down` through a running gatekeeper (`--url`).

With `--url`, `gatekeeper flip|rollback|scale-down` ask the service's API instead of the
cluster, so a pipeline needs no kubeconfig: the service decides through its lifecycle and
gates exactly as for any API request. The bearer token comes from `--token-file` or
`$GATEKEEPER_TOKEN`. Exit codes are the same as against the cluster: 0 done, 1 refused
(409) or nothing moved without `--if-needed`, 2 usage, 3 unreachable or the server failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gatekeeper.cli.api_client import (
    Answer,
    ApiClient,
    UsageError,
    pair_path,
    read_token,
    report_action,
)

__all__ = ["add_remote_arguments", "run_remote"]

EXIT_REFUSED, EXIT_USAGE = 1, 2
PATHS = {"flip": "flip", "rollback": "rollback", "scale-down": "scale-down"}


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """--url and --token-file for a mutating cluster command."""
    parser.add_argument("--url", help="act through a running gatekeeper's API at this base URL "
                        "instead of the cluster (no kubeconfig needed; needs --pair)")
    parser.add_argument("--token-file", help="with --url: file holding the bearer token "
                        "(default: $GATEKEEPER_TOKEN)")


def _body(command: str, args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": getattr(args, "reason", "") or "",
                            "force": bool(args.force)}
    if command == "flip" and args.to:
        body["to"] = args.to
    if command == "scale-down" and args.keep is not None:
        body["keep"] = args.keep
    return body


def run_remote(command: str, args: argparse.Namespace) -> int:
    """Send the command to the service; print its answer; the exit code."""
    if not args.pair:
        print("error: --url needs --pair", file=sys.stderr)
        return EXIT_USAGE
    for flag in ("namespace", "scale_up_first", "dry_run"):
        if getattr(args, flag, None):
            print(f"error: --{flag.replace('_', '-')} is not available with --url",
                  file=sys.stderr)
            return EXIT_USAGE
    try:
        token = read_token(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def send() -> Answer:
        async with ApiClient(args.url, token=token) as client:
            return await client.request("POST", pair_path(args.pair, PATHS[command]),
                                        body=_body(command, args))

    answer = asyncio.run(send())
    code = report_action(answer, command, args.pair, output=args.output)
    moved = bool(answer.body.get("changed")) or bool(answer.body.get("dry_run"))
    if code == 0 and command == "flip" and not moved and not args.if_needed:
        print(f"flip: traffic is already where it was asked to go (pair {args.pair}); "
              "--if-needed accepts that", file=sys.stderr)
        return EXIT_REFUSED
    return code
