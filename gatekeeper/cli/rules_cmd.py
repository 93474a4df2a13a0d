"""`gatekeeper rules validate [PATH...]`: exit 0 when valid, 2 with one line per problem.

Warnings (valid but likely wrong, e.g. a Prometheus query without `by (namespace)`) go to
stderr as `file:line: warning: ...` and do not change the exit code.

Without a PATH, every rule file shipped with gatekeeper is validated, each on its own
(gatekeeper/shipped.py says where they are); `gatekeeper rules shipped` lists them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gatekeeper import shipped
from gatekeeper.rules import RuleSet, load_rule_set
from gatekeeper.yamlfiles import ConfigFileError


def register(subcommands: Any) -> None:
    """Add the `rules` command group."""
    rules = subcommands.add_parser("rules", help="work with gate rule files")
    actions = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    validate = actions.add_parser("validate", help="validate rule files or folders")
    validate.add_argument("paths", nargs="*",
                          help="rule files or folders of *.yaml (default: the shipped rules, "
                               "each file on its own)")
    validate.set_defaults(handler=validate_command)
    listing = actions.add_parser("shipped", help="list the rule files shipped with gatekeeper")
    listing.set_defaults(handler=shipped_command)


def _summary(rule_set: RuleSet) -> str:
    return f"{len(rule_set.rules)} rules valid ({', '.join(r.name for r in rule_set.rules)})"


def _shipped_files() -> list[str] | None:
    try:
        return [str(path) for path in shipped.rule_files()]
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def shipped_command(_args: argparse.Namespace) -> int:
    """Print the shipped rule files, one path a line."""
    files = _shipped_files()
    if files is None:
        return 2
    print("\n".join(files))
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """Print each problem as `file:line: rule 'x': field 'y': message`."""
    if not args.paths:
        return _validate_shipped()
    try:
        rule_set = load_rule_set(args.paths)
    except ConfigFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    for warning in rule_set.warnings:
        print(warning, file=sys.stderr)
    print(f"ok: {_summary(rule_set)}")
    return 0


def _validate_shipped() -> int:
    """Each shipped file is a rule document of its own: validate them one by one."""
    files = _shipped_files()
    if files is None:
        return 2
    failed = False
    for file in files:
        try:
            rule_set = load_rule_set([file])
        except ConfigFileError as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            continue
        for warning in rule_set.warnings:
            print(warning, file=sys.stderr)
        print(f"ok: {file}: {_summary(rule_set)}")
    return 2 if failed else 0
