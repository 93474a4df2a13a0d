"""The switch record a route carries: where its traffic came from, written by the switch itself.

A flip or rollback writes `gatekeeper.io/switch` on every route it moves, in the same guarded
JSON Patch that moves the traffic. So the rollback target never depends on a second write
(the state ConfigMap may be full, unreadable or lost): the routes say where traffic came
from. Pure: parsing and formatting only, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ANNOTATION", "SwitchRecord", "latest"]

ANNOTATION = "gatekeeper.io/switch"
KINDS = ("flip", "rollback")


@dataclass(frozen=True)
class SwitchRecord:
    """One switch as recorded on a route: `kind` from `source` to `target` at `at`."""

    kind: str
    source: str
    target: str
    at: float
    """Unix seconds (the switching process's clock)."""
    id: str = ""
    trigger: str = ""

    @property
    def rollback_target(self) -> str | None:
        """Where a rollback returns traffic: the source of a flip; none after a rollback."""
        return self.source if self.kind == "flip" else None

    def to_annotation(self) -> str:
        """The annotation's value (compact JSON)."""
        return json.dumps({"kind": self.kind, "from": self.source, "to": self.target,
                           "at": round(self.at, 3), "id": self.id, "trigger": self.trigger},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> SwitchRecord | None:
        """The record in an annotation's value; None when absent or malformed (a person's
        edit of an annotation never passes for a switch)."""
        if not text:
            return None
        try:
            data: Any = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        kind, source, target, at = (data.get(k) for k in ("kind", "from", "to", "at"))
        if kind not in KINDS or not isinstance(source, str) or not isinstance(target, str) \
                or not source or source == target:
            return None
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            return None
        ident, trigger = data.get("id", ""), data.get("trigger", "")
        return cls(str(kind), source, target, float(at),
                   ident if isinstance(ident, str) else "",
                   trigger if isinstance(trigger, str) else "")


def latest(annotations: Iterable[Mapping[str, str]], *, active: str,
           namespaces: Iterable[str]) -> SwitchRecord | None:
    """The most recent record, among the routes' annotations, of a switch that sent traffic
    to `active` from the pair's other namespace. A record whose target is not where the
    routes point now is history (traffic moved since, e.g. by hand) and is skipped."""
    allowed = set(namespaces)
    found = [record for record in (SwitchRecord.parse(a.get(ANNOTATION)) for a in annotations)
             if record is not None and record.target == active and record.source in allowed]
    return max(found, key=lambda r: r.at, default=None)
