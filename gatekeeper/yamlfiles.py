"""YAML loading that remembers where every key came from, so errors name file and line.

pydantic reports an error location as a path (`rules`, 3, `weight`); `LineMap` turns that path
into the line of the YAML file it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


MAX_NODES = 200_000
"""A rule or configuration file has hundreds of nodes; more means an alias bomb."""


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int],
          walking: set[int], budget: list[int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    budget[0] -= 1
    if budget[0] < 0:
        raise yaml.constructor.ConstructorError(
            None, None, f"more than {MAX_NODES} values (aliases expanding without bound?)",
            node.start_mark)
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        if id(node) in walking:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to a value that contains it (recursive alias)",
                node.start_mark)
        walking.add(id(node))
        try:
            return _walk_collection(node, path, lines, walking, budget)
        finally:
            walking.discard(id(node))
    return yaml.SafeLoader.construct_object(_LOADER, node, deep=True)


def _walk_collection(node: yaml.MappingNode | yaml.SequenceNode, path: PathKey,
                     lines: dict[PathKey, int], walking: set[int], budget: list[int]) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, index), lines, walking, budget)
                for index, item in enumerate(node.value)]
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value (a name), not a list or a mapping",
                key_node.start_mark)
        key = yaml.SafeLoader.construct_object(_LOADER, key_node, deep=True)
        child = (*path, key if isinstance(key, str | int) else str(key))
        lines[child] = key_node.start_mark.line + 1
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = _walk(value_node, child, lines, walking, budget)
    return result


_LOADER = yaml.SafeLoader("")


def load_yaml_text(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse one YAML document, returning the data and where each key came from."""
    line_map = LineMap(file=file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = None if node is None else _walk(node, (), line_map.lines, set(), [MAX_NODES])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError([f"{file}:{line}: invalid YAML: {problem}"]) from exc
    except RecursionError as exc:
        raise ConfigFileError([f"{file}:1: invalid YAML: values nested too deeply"]) from exc
    return data, line_map


def load_yaml_file(path: str | Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file; unreadable files become a ConfigFileError naming the file."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # ValueError: undecodable text, or NUL in the path
        shown = name.replace("\x00", "\\0")
        raise ConfigFileError([f"{shown}:1: cannot read file: {exc}"]) from exc
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


def named_items(data: Any, key: str, noun: str) -> Callable[[PathKey], str | None]:
    """A `label` for `validation_problems`: a location inside item i of `data[key]` (a list
    of mappings, each maybe with a `name`) is said as `<noun> '<name>'`, else `<noun> #i+1`."""

    def label(loc: PathKey) -> str | None:
        if len(loc) >= 2 and loc[0] == key and isinstance(loc[1], int):
            try:
                name = data[key][loc[1]].get("name")
            except (KeyError, IndexError, TypeError, AttributeError):
                name = None
            return f"{noun} '{name}'" if name else f"{noun} #{loc[1] + 1}"
        return None

    return label


def validation_problems(
    error: ValidationError, line_map: LineMap, *,
    label: Callable[[PathKey], str | None] | None = None,
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
