"""Decode a request body as a JSON object, or say what is wrong with it and where.

Python's `json` refuses integers over 4,300 digits with a bare ValueError (CVE-2020-10735)
and recursion that is too deep with RecursionError; both used to escape as 500s. Here every
problem is a `BodyError` naming the field, which the handlers answer with 400.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_INTEGER_DIGITS", "BodyError", "load_object"]

MAX_INTEGER_DIGITS = 30
"""Longer integers are refused: no field of any body needs more than a 64-bit count."""


class BodyError(ValueError):
    """The body is not an acceptable JSON object; the message names the field."""


class _HugeInteger:
    """Stands in for an integer literal too long to convert, until its field is found."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _find_huge(value: Any, path: str) -> tuple[str, int] | None:
    """The path and length of the first over-long integer in `value` (iteratively: the
    nesting is bounded by the decoder's recursion limit, the breadth is not)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, _HugeInteger):
            return where, item.digits
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k))
                         for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{where}.{i}" if where else str(i))
                         for i, v in reversed(list(enumerate(item))))
    return None


def load_object(raw: bytes, *, what: str = "body") -> dict[str, Any]:
    """The decoded JSON object; BodyError naming the field for anything else."""
    huge_seen = False

    def parse_int(text: str) -> int | _HugeInteger:
        nonlocal huge_seen
        digits = len(text.lstrip("-"))
        if digits <= MAX_INTEGER_DIGITS:
            return int(text)
        huge_seen = True
        return _HugeInteger(digits)

    try:
        data = json.loads(raw, parse_int=parse_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # `[[[[...` within the size limit
        raise BodyError(f"{what} is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # the decoder's own integer or number limits
        raise BodyError(f"{what} is not acceptable JSON: {exc}") from exc
    huge = _find_huge(data, "") if huge_seen else None
    if huge is not None:
        where, digits = huge
        raise BodyError(f"{where or what}: integer of {digits} digits is out of range "
                        f"(at most {MAX_INTEGER_DIGITS} digits)")
    if not isinstance(data, dict):
        raise BodyError(f"{what} must be a JSON object")
    return data
