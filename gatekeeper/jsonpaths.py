"""Checks of a JSON answer by dotted paths (probes, synthetic load): pure, no I/O.

A path steps through keys, list indexes (`checks.0` or `checks[0]`) or the first list
element whose field equals a value (`checks[name=ServiceBus]`, the seed's jq `select`).
`path_problem` says why a path written in a rule or the configuration cannot be followed,
so a bad assertion is refused when the file is loaded, not at the first request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MISSING", "SHOWN", "json_problems", "lookup", "path_problem", "short"]

SHOWN = 60
"""Characters of a value shown in a problem."""

MISSING = object()
# `links.self`, `checks.0.status`, `checks[0].status`, `checks[name=ServiceBus].status`
_SEGMENT = re.compile(r"\.?(?:\[(\d+)\]|\[([^=\]]+)=([^\]]*)\]|([^.\[\]]+))")


def lookup(document: Any, path: str) -> Any:
    """Follow a dotted path into parsed JSON; `MISSING` when any step is absent.

    Steps are keys, list indexes (`checks.0` or `checks[0]`) or the first list element
    whose field equals a value (`checks[name=ServiceBus]`, the seed's jq `select`).
    """
    node = document
    position = 0
    while position < len(path):
        match = _SEGMENT.match(path, position)
        if match is None or match.end() == position:
            return MISSING
        position = match.end()
        index, field, wanted, key = match.groups()
        if field is not None:
            if not isinstance(node, list):
                return MISSING
            node = next(
                (item for item in node
                 if isinstance(item, dict) and str(item.get(field)) == wanted),
                MISSING,
            )
        elif index is not None or (key is not None and key.isdigit() and isinstance(node, list)):
            position_in_list = int(index if index is not None else key)
            if not isinstance(node, list) or position_in_list >= len(node):
                return MISSING
            node = node[position_in_list]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def _same(actual: Any, expected: Any) -> bool:
    """JSON equality that keeps `true` and `1` apart."""
    return actual == expected and isinstance(actual, bool) == isinstance(expected, bool)


def short(value: Any) -> str:
    """A value as shown in a problem, cut to SHOWN characters."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def json_problems(expect_json: Mapping[str, Any], require_fields: Iterable[str],
                  document: Any) -> list[str]:
    """Which `expect_json` (path: value) and `require_fields` checks `document` fails."""
    problems = []
    for path, expected in expect_json.items():
        actual = lookup(document, path)
        if actual is MISSING:
            problems.append(f"field {path} missing (expected {short(expected)})")
        elif not _same(actual, expected):
            problems.append(f"field {path} is {short(actual)}, expected {short(expected)}")
    for path in require_fields:
        actual = lookup(document, path)
        if actual is MISSING or actual is None:
            problems.append(f"required field {path} missing")
        elif actual in ("", [], {}):
            problems.append(f"required field {path} empty")
    return problems


def path_problem(path: str) -> str | None:
    """Why `path` cannot be followed (empty, a stray bracket...), or None when it can."""
    if not isinstance(path, str) or not path.strip():
        return "an empty path"
    position = 0
    while position < len(path):
        match = _SEGMENT.match(path, position)
        if match is None or match.end() == position:
            return (f"path {path!r} cannot be followed at character {position + 1} "
                    "(write keys.with.dots, list[0] or list[field=value])")
        position = match.end()
    return None
