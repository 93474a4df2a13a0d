"""Shell completion generated from the parser, and an example in every subcommand's --help."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess

import pytest

from gatekeeper.cli import build_parser, completion, main


def _output(*argv: str) -> str:
    """stdout of `gatekeeper ARGV`, which must succeed (--help exits 0 through SystemExit)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(list(argv))
        except SystemExit as done:
            code = done.code
    assert code == 0, argv
    return out.getvalue()


def _commands() -> list[str]:
    return [path for path, _ in completion._walk(build_parser())]


def test_every_subcommand_help_shows_an_example():
    """`gatekeeper <command> --help` ends with `examples:` holding a real invocation of it."""
    commands = _commands()
    assert {"approve", "unapprove", "check", "flip", "serve", "rules validate",
            "completion"} <= set(commands)
    for path in commands:
        text = _output(*path.split(), "--help")
        assert "examples:" in text, path
        examples = text.split("examples:", 1)[1]
        assert f"gatekeeper {path}" in examples, (path, examples)


def _bash_complete(script: str, *words: str) -> list[str]:
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"{script}\nCOMP_WORDS=(gatekeeper {quoted}); COMP_CWORD={len(words)}; "
               "_gatekeeper; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_names_every_subcommand_and_their_flags():
    """Sourced in a real bash: an empty word completes every top-level command, a prefix its
    commands, `approve --f` its --for, `rules v` validate, `completion ` both shells."""
    script = _output("completion", "bash")
    top = [path for path in _commands() if " " not in path]
    assert sorted(set(_bash_complete(script, "")) & set(top)) == sorted(top)
    assert _bash_complete(script, "ap") == ["approve"]
    assert _bash_complete(script, "unapprove", "--f") == ["--for"]
    assert _bash_complete(script, "rules", "v") == ["validate"]
    assert set(_bash_complete(script, "completion", "")) >= {"bash", "zsh"}
    assert "--wait" in _bash_complete(script, "check", "--url", "http://x", "--w")


def test_zsh_completion_names_every_subcommand():
    script = _output("completion", "zsh")
    assert script.startswith("#compdef gatekeeper")
    for path in _commands():
        assert path.split()[-1] in script, path
