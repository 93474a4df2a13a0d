"""Durations as people write them in YAML (`15s`, `5m`, `2h`, `1h30m`) and as PromQL wants them."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | int | float) -> float:
    """Return seconds for `90`, `90s`, `5m`, `1h30m`; raise ValueError naming the bad text.

    Negative, infinite and NaN values are refused: no setting means "never" or "at once".
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as '30s' or '5m', got {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration must not be negative, got {text!r}")
        return _finite(text)
    stripped = str(text).strip()
    if not stripped:
        raise ValueError("expected a duration such as '30s' or '5m', got an empty string")
    if re.fullmatch(r"\d+(\.\d+)?", stripped):
        return _finite(stripped)
    position = 0
    total = 0.0
    for match in _PART.finditer(stripped):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(stripped) or position == 0:
        raise ValueError(
            f"expected a duration such as '30s', '5m' or '1h30m' (units ms s m h d w), got {text!r}"
        )
    return _finite(total, text)


def _finite(value: str | int | float, text: object = None) -> float:
    shown = value if text is None else text
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"duration must be a finite number of seconds, got {shown!r}"[:200])
    return seconds


def promql_duration(seconds: float) -> str:
    """Render seconds as a PromQL range (`300s` -> `5m`); sub-second values round up to 1s."""
    whole = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
