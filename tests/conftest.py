"""Shared pytest configuration: fixture plugins live in tests/fixtures/, one module per concern."""

import ast
import functools
import gc
from typing import Any

pytest_plugins = [
    "tests.fixtures.telemetry",
    "tests.fixtures.kube",
]


def _parse_without_collecting(parse: Any) -> Any:
    """`ast.parse` with the cyclic garbage collector paused for the call.

    CPython 3.11 keeps the AST constructor's recursion depth in one per-interpreter
    counter. A collection during a parse can run a finalizer that raises; pytest's
    unraisable-exception hook then formats its traceback, and 3.11's traceback module
    parses source lines again (caret anchors): the nested parse resets the counter and the
    outer one ends with `SystemError: AST constructor recursion depth mismatch`
    (python/cpython#106905, pytest-dev/pytest#10763). When the outer parse is pytest
    formatting a failing test, the xdist worker dies and the run stops. No collection
    during a parse, no nested parse: the failure is reported like any other.
    """

    @functools.wraps(parse)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return parse(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return guarded


ast.parse = _parse_without_collecting(ast.parse)
