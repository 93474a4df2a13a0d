"""`gatekeeper rules validate PATH...`: exit 0 when valid, 2 with one line per problem.

Warnings (valid but likely wrong, e.g. a Prometheus query without `by (namespace)`) go to
stderr as `file:line: warning: ...` and do not change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gatekeeper.rules import load_rule_set
from gatekeeper.yamlfiles import ConfigFileError


def register(subcommands: Any) -> None:
    """Add the `rules` command group."""
    rules = subcommands.add_parser("rules", help="work with gate rule files")
    actions = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    validate = actions.add_parser("validate", help="validate rule files or folders")
    validate.add_argument("paths", nargs="+", help="rule files or folders of *.yaml")
    validate.set_defaults(handler=validate_command)


def validate_command(args: argparse.Namespace) -> int:
    """Print each problem as `file:line: rule 'x': field 'y': message`."""
    try:
        rule_set = load_rule_set(args.paths)
    except ConfigFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    for warning in rule_set.warnings:
        print(warning, file=sys.stderr)
    print(f"ok: {len(rule_set.rules)} rules valid "
          f"({', '.join(rule.name for rule in rule_set.rules)})")
    return 0
