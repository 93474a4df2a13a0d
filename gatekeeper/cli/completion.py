"""`gatekeeper completion bash|zsh`: shell completion generated from the argparse parser.

Generated, not hand-written, so a new subcommand or flag completes without touching this
file. No library: the parser already knows every subcommand, flag and choice, and a shell
script of a few dozen lines walks that table (shtab would do the same with one more
dependency, and its zsh output needs the `_arguments` details we do not use).

Also the `examples:` epilog of the commands whose modules do not set one, so every
subcommand's `--help` shows how it is used.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

__all__ = ["EXAMPLES", "add_examples", "register", "script", "subcommand_table"]

EXAMPLES: dict[str, str] = {
    "rules": "gatekeeper rules validate rules/\ngatekeeper rules shipped",
    "rules validate": "gatekeeper rules validate rules/default.yaml my-rules/",
    "rules shipped": "gatekeeper rules shipped",
    "evaluate": "gatekeeper evaluate --config gatekeeper.yaml --pair api\n"
                "gatekeeper evaluate --config gatekeeper.yaml --output json",
    "status": "gatekeeper status --config gatekeeper.yaml --pair api",
    "dark": "DARK=$(gatekeeper dark --config gatekeeper.yaml --pair api)   # e.g. in a pipeline\n"
            "kubectl -n \"$DARK\" set image deployment/api api=registry.example.com/api:1.5.0",
    "scale-up": "gatekeeper scale-up --config gatekeeper.yaml --pair api",
    "wait-ready": "gatekeeper wait-ready --config gatekeeper.yaml --pair api --timeout 10m",
    "flip": "gatekeeper flip --config gatekeeper.yaml --pair api --reason 'release 1.5.0'",
    "rollback": "gatekeeper rollback --config gatekeeper.yaml --pair api --reason 'p99 up'",
    "scale-down": "gatekeeper scale-down --config gatekeeper.yaml --pair api --keep 0",
    "serve": "gatekeeper serve --config /etc/gatekeeper/gatekeeper.yaml\n"
             "gatekeeper serve --config gatekeeper.yaml --dry-run --port 8080",
    "crd": "gatekeeper crd | kubectl apply -f -",
    "migrate-to-objects": "gatekeeper migrate-to-objects --config gatekeeper.yaml "
                          "--namespace gatekeeper --dry-run",
    "completion": "gatekeeper completion bash > /etc/bash_completion.d/gatekeeper\n"
                  "gatekeeper completion zsh > \"${fpath[1]}/_gatekeeper\"",
}
"""Examples for subcommands whose module sets no epilog (keyed by the command path)."""


def register(subcommands: Any) -> None:
    """Add `completion`."""
    help_text = "print a shell completion script (bash or zsh)"
    parser = subcommands.add_parser("completion", help=help_text, description=help_text)
    parser.add_argument("shell", choices=["bash", "zsh"])
    parser.set_defaults(handler=_completion_command)


def _completion_command(args: argparse.Namespace) -> int:
    from gatekeeper.cli import build_parser

    print(script(build_parser(), args.shell))
    return 0


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps no public list of subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, path: str = ""
          ) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for name, sub in _subparsers(parser).items():
        here = f"{path} {name}".strip()
        found.append((here, sub))
        found.extend(_walk(sub, here))
    return found


def add_examples(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand without an epilog its `examples:` from EXAMPLES."""
    for path, sub in _walk(parser):
        if not sub.epilog and path in EXAMPLES:
            sub.epilog = "examples:\n" + "\n".join(
                f"  {line}" for line in EXAMPLES[path].splitlines())
            sub.formatter_class = argparse.RawDescriptionHelpFormatter


def subcommand_table(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Command path ('' for the top) -> what may follow it: subcommands, flags, choices."""
    table: dict[str, list[str]] = {}

    def words(p: argparse.ArgumentParser) -> list[str]:
        out = list(_subparsers(p))
        for action in p._actions:
            out.extend(action.option_strings)
            if not action.option_strings and action.choices and not isinstance(
                    action, argparse._SubParsersAction):
                out.extend(str(c) for c in action.choices)
        return out

    table[""] = words(parser)
    for path, sub in _walk(parser):
        table[path] = words(sub)
    return table


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (bash or zsh)."""
    table = subcommand_table(parser)
    cases = "\n".join(
        f"        {shlex.quote(path or '__top__')}) words={shlex.quote(' '.join(w))};;"
        for path, w in sorted(table.items()))
    commands = " ".join(sorted(p for p in table if p and " " not in p))
    nested = " ".join(sorted({p.split(" ")[0] for p in table if " " in p}))
    body = f"""_gatekeeper_words() {{
    # $1: the words typed so far (after `gatekeeper`); prints what may come next.
    local path="" word words
    for word in $1; do
        case "$word" in -*) continue;; esac
        case " {commands} " in
            *" $word "*) if [ -z "$path" ]; then path="$word"; continue; fi;;
        esac
        case " {nested} " in
            *" $path "*) path="$path $word";;
        esac
    done
    case "${{path:-__top__}}" in
{cases}
        *) words="";;
    esac
    printf '%s\\n' "$words"
}}
"""
    if shell == "bash":
        return body + """_gatekeeper() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local typed="${COMP_WORDS[*]:1:COMP_CWORD-1}"
    COMPREPLY=($(compgen -W "$(_gatekeeper_words "$typed")" -- "$cur"))
}
complete -F _gatekeeper gatekeeper
"""
    return "#compdef gatekeeper\n" + body + """_gatekeeper() {
    local typed="${(j: :)words[2,CURRENT-1]}"
    compadd -- ${=$(_gatekeeper_words "$typed")}
}
compdef _gatekeeper gatekeeper
"""
