"""The `gatekeeper` command line: one module per group of subcommands.

Exit codes are part of the interface (pipelines branch on them): 0 safe / done, 1 unsafe /
refused, 2 usage or configuration error, 3 unknown or unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gatekeeper import __version__
from gatekeeper.cli import (
    approve_cmd,
    check_cmd,
    cluster_cmds,
    completion,
    evaluate_cmd,
    objects_cmd,
    rules_cmd,
    serve_cmd,
)
from gatekeeper.logs import configure_logging

EXIT_OK = 0
EXIT_UNSAFE = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3

_COMMAND_MODULES = [rules_cmd, evaluate_cmd, cluster_cmds, serve_cmd, check_cmd, approve_cmd,
                    objects_cmd, completion]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="gatekeeper",
        description="Monitoring-driven release gatekeeper for blue/green namespaces.",
    )
    parser.add_argument("--version", action="version", version=f"gatekeeper {__version__}")
    parser.add_argument("--log-level", default=None,
                        help="debug, info, warning, error (default: info for serve, which "
                        "logs every action and decision; warning for the other commands)")
    parser.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(subcommands)
    completion.add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    level = args.log_level or ("info" if args.command == "serve" else "warning")
    configure_logging(level=level, fmt=args.log_format)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
