"""Kubernetes label selector strings (`app=web,tier in (a,b),!canary`), matched in memory.

The API server filters a list by `labelSelector`; objects read from the watch cache are
filtered here the same way. The grammar is the API's: `k=v`, `k==v`, `k!=v`, `k in (...)`,
`k notin (...)`, `k` (exists) and `!k` (does not exist), joined by commas, all must hold.
A selector this module cannot parse raises `ValueError` (callers then ask the API server,
which knows the whole grammar). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

__all__ = ["Matcher", "matcher"]

Matcher = Callable[[Mapping[str, str]], bool]
"""True when an object's labels satisfy the selector."""

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQUALS = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(?P<negated>!?)\s*(?P<key>{_KEY})\s*$")
_PART = re.compile(r",(?![^()]*\))")
"""Commas between requirements, not those inside `in (...)`."""


def _requirement(text: str) -> Matcher:
    if found := _SET.match(text):
        key, values = found["key"], {v.strip() for v in found["values"].split(",")}
        if any(not re.fullmatch(_VALUE, v) for v in values):
            raise ValueError(f"bad value in label selector requirement {text.strip()!r}")
        if found["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if found := _EQUALS.match(text):
        key, value = found["key"], found["value"] or ""
        if found["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if found := _EXISTS.match(text):
        key = found["key"]
        if found["negated"]:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ValueError(f"cannot parse label selector requirement {text.strip()!r}")


@lru_cache(maxsize=256)
def matcher(selector: str | None) -> Matcher:
    """The selector as a function of an object's labels; None or blank matches everything."""
    if selector is None or not selector.strip():
        return lambda labels: True
    requirements = tuple(_requirement(part) for part in _PART.split(selector))
    return lambda labels: all(requirement(labels) for requirement in requirements)
