"""`gatekeeper approve|unapprove --url URL --pair NAME [--for flip|scale-down]`.

A person's (or a pipeline's approval step's) go-ahead, through a running gatekeeper's API,
so the service records who approved (the name of the bearer token) in the pair's history,
a Kubernetes Event and the notification. Without `--for` an approval means what the phase
needs (validate, flip, scale down, resume); with it, only that decision, refused (exit 1)
in a phase where it does not apply. Exit codes: 0 done or nothing to do, 1 refused,
2 usage (unknown pair, bad token), 3 gatekeeper unreachable or unable to act.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gatekeeper.cli.api_client import (
    EXIT_USAGE,
    Answer,
    UsageError,
    add_connection_arguments,
    client_from_args,
    pair_path,
    report_action,
)

APPROVE_EXAMPLES = """\
examples:
  # the flip, after validation (a pipeline's approval step)
  gatekeeper approve --url http://gatekeeper.gatekeeper.svc:8080 --pair api --for flip \\
      --token-file /var/run/secrets/gatekeeper/token --reason "QA signed off"
  # the go/no-go: scale the previous release down
  GATEKEEPER_TOKEN=... gatekeeper approve --url http://127.0.0.1:8080 --pair api --for scale-down
"""
UNAPPROVE_EXAMPLES = """\
examples:
  # withdraw the flip's approval before gatekeeper acts on it
  gatekeeper unapprove --url http://gatekeeper.gatekeeper.svc:8080 --pair api --for flip \\
      --reason "found a bug in staging"
"""


def register(subcommands: Any) -> None:
    """Add `approve` and `unapprove`."""
    for name, help_text, examples in (
            ("approve", "approve a pair's flip or scale-down (go/no-go) through the API; "
                        "the token's name is recorded", APPROVE_EXAMPLES),
            ("unapprove", "withdraw an approval gatekeeper has not acted on yet",
             UNAPPROVE_EXAMPLES)):
        parser = subcommands.add_parser(name, help=help_text, description=help_text,
                                        epilog=examples,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        add_connection_arguments(parser)
        parser.add_argument("--pair", required=True, help="the pair's name")
        parser.add_argument("--for", dest="decision", choices=["flip", "scale-down"],
                            help="only this decision (default: what the phase needs)")
        parser.add_argument("--reason", default="", help="why; kept in the audit trail")
        parser.add_argument("--output", choices=["text", "json"], default="text")
        parser.set_defaults(handler=lambda args, verb=name: approve_command(args, verb))


def approve_command(args: argparse.Namespace, verb: str) -> int:
    """Synchronous entry for argparse."""
    try:
        client = client_from_args(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    body: dict[str, Any] = {"reason": args.reason}
    if args.decision:
        body["for"] = args.decision

    async def run() -> Answer:
        async with client:
            return await client.request("POST", pair_path(args.pair, verb), body=body)

    answer = asyncio.run(run())
    return report_action(answer, verb, args.pair, output=args.output)
