"""Label and field selectors with the real server's grammar and matching rules.

Notably `key!=v` and `key notin (...)` also match objects WITHOUT the label, and
unsupported field labels are rejected, as on a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_KEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_EXISTS_RE = re.compile(rf"^({_KEY})$")
_NOT_EXISTS_RE = re.compile(rf"^!\s*({_KEY})$")
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_CMP_RE = re.compile(rf"^({_KEY})\s*(==|!=|=|>|<)\s*(.*)$")


class SelectorError(ValueError):
    """The selector text does not parse (answered with 400)."""


@dataclass(frozen=True)
class Requirement:
    """One clause: key, operator (in, notin, exists, !, =, !=, gt, lt) and values."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Apply the clause with Kubernetes semantics."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            number, bound = int(str(value)), int(self.values[0])
        except ValueError:
            return False
        return number > bound if self.op == "gt" else number < bound

    def render(self) -> str:
        """Canonical text form, e.g. `app in (a,b)`."""
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        symbol = {"gt": ">", "lt": "<"}.get(self.op, self.op)
        return f"{self.key}{symbol}{self.values[0]}"


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t.strip() for t in terms]


def _check_value(value: str, term: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(
            f"unable to parse requirement: invalid label value: {value!r} in {term!r}"
        )
    return value


def _parse_term(term: str) -> Requirement:
    if m := _NOT_EXISTS_RE.match(term):
        return Requirement(m.group(1), "!")
    if m := _SET_RE.match(term):
        values = [v.strip() for v in m.group(3).split(",")]
        if values == [""]:
            raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty: {term!r}")
        return Requirement(m.group(1), m.group(2), tuple(_check_value(v, term) for v in values))
    if m := _CMP_RE.match(term):
        op = {"==": "=", ">": "gt", "<": "lt"}.get(m.group(2), m.group(2))
        value = _check_value(m.group(3).strip(), term)
        if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", value):
            raise SelectorError(f"for 'Gt', 'Lt' operators, the value must be an integer: {term!r}")
        return Requirement(m.group(1), op, (value,))
    if m := _EXISTS_RE.match(term):
        return Requirement(m.group(1), "exists")
    raise SelectorError(f"unable to parse requirement: {term!r}")


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse `labelSelector` query text; raises SelectorError."""
        if text is None or not text.strip():
            return cls()
        terms = _split_terms(text)
        if any(not t for t in terms):
            raise SelectorError(f"unable to parse requirement: empty term in {text!r}")
        return cls(tuple(_parse_term(t) for t in terms))

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """Build from a `metav1.LabelSelector` (matchLabels + matchExpressions)."""
        if not selector:
            return cls()
        match_labels = selector.get("matchLabels") or {}
        reqs = [Requirement(k, "=", (str(v),)) for k, v in match_labels.items()]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
        for expr in selector.get("matchExpressions") or []:
            op = ops.get(expr.get("operator", ""))
            if op is None:
                raise SelectorError(f"{expr.get('operator')!r} is not a valid selector operator")
            reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
        return cls(tuple(sorted(reqs, key=lambda r: r.key)))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """True when every requirement holds for these labels."""
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        """Match against `metadata.labels` of an object."""
        return self.matches((obj.get("metadata") or {}).get("labels"))

    def render(self) -> str:
        """Text form (what a Scale's `status.selector` carries)."""
        return ",".join(r.render() for r in self.requirements)


def _split_escaped(text: str, sep: str) -> list[str]:
    """Split on separators not preceded by a backslash; escapes are kept."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if not escaped and ch == sep:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
        escaped = not escaped and ch == "\\"
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field path ('' when absent), as field selectors see it."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        return ""
    if isinstance(node, Mapping) and path == "source":
        return str(node.get("component", ""))
    return str(node)


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of `field=value` / `field!=value` terms."""

    terms: tuple[tuple[str, bool, str], ...] = ()

    @classmethod
    def parse(cls, text: str | None, allowed: Sequence[str]) -> FieldSelector:
        """Parse `fieldSelector`; raises SelectorError for unsupported field labels."""
        if text is None or not text.strip():
            return cls()
        terms: list[tuple[str, bool, str]] = []
        for raw in _split_escaped(text, ","):
            m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=|=)(.*)$", raw)
            if not m:
                raise SelectorError(f"invalid selector: {text!r}; can't understand {raw!r}")
            field, op, value = m.group(1), m.group(2), _unescape(m.group(3))
            if field not in allowed:
                raise SelectorError(f'field label not supported: {field}')
            terms.append((field, op != "!=", value.strip()))
        return cls(tuple(terms))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """True when every term holds for the object."""
        return all((field_value(obj, f) == v) == equal for f, equal, v in self.terms)


def object_matcher(
    labels: LabelSelector, fields: FieldSelector
) -> Callable[[Mapping[str, Any]], bool]:
    """One predicate for list filtering and watch filtering."""
    if not labels.requirements and not fields.terms:
        return lambda _obj: True
    return lambda obj: labels.matches_object(obj) and fields.matches(obj)
