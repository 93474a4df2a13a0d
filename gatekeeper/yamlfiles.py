"""YAML loading that remembers where every key came from, so errors name file and line.

pydantic reports an error location as a path (`rules`, 3, `weight`); `LineMap` turns that path
into the line of the YAML file it came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

PathKey = tuple[str | int, ...]


class ConfigFileError(Exception):
    """A file could not be used; `problems` holds one line per problem, each naming file:line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class LineMap:
    """Maps a path inside a YAML document to the 1-based line it starts on."""

    file: str
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int:
        """The line of the longest known prefix of `path` (1 when nothing matches)."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader.construct_object(_LOADER, key_node, deep=True)  # type: ignore[arg-type]
            child = (*path, key if isinstance(key, str | int) else str(key))
            lines[child] = key_node.start_mark.line + 1
            if key in result:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            result[key] = _walk(value_node, child, lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, index), lines) for index, item in enumerate(node.value)]
    return yaml.SafeLoader.construct_object(_LOADER, node, deep=True)  # type: ignore[arg-type]


_LOADER = yaml.SafeLoader("")


def load_yaml_text(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse one YAML document, returning the data and where each key came from."""
    line_map = LineMap(file=file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError([f"{file}:{line}: invalid YAML: {problem}"]) from exc
    if node is None:
        return None, line_map
    try:
        data = _walk(node, (), line_map.lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError([f"{file}:{line}: invalid YAML: {problem}"]) from exc
    return data, line_map


def load_yaml_file(path: str | Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file; unreadable files become a ConfigFileError naming the file."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError([f"{name}:1: cannot read file: {exc}"]) from exc
    return load_yaml_text(text, name)


def describe_location(loc: Iterable[str | int]) -> str:
    """`('rules', 2, 'weight')` -> `rules[2].weight`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_problems(
    error: ValidationError, line_map: LineMap, *, label: Any = None
) -> list[str]:
    """One line per pydantic error: `file:line: [label: ]field 'a.b': message`.

    `label(loc)` may return a prefix such as `rule 'error-rate'` for a location.
    """
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not _is_union_tag(part))
        line = line_map.line_of(loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        prefix = label(loc) if label is not None else None
        where = f"{prefix}: " if prefix else ""
        problems.append(
            f"{line_map.file}:{line}: {where}field '{describe_location(loc)}': {message}"
        )
    return problems


def _is_union_tag(part: str | int) -> bool:
    # pydantic inserts the chosen union member / function name into locations; drop them.
    return isinstance(part, str) and (
        part.startswith("function-") or part in {"str", "int", "float", "list[str]"}
    )
