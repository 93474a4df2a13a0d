"""What happened when, as the narration saw it: the data the picture and the checks share.

Purely data: no I/O, so the story, the narration and the timeline agree on one record.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal["release", "flip", "rollback", "refused", "alert", "degrade", "act"]


@dataclass(frozen=True)
class Event:
    """One marker on the timeline (wall-clock seconds)."""

    time: float
    kind: EventKind
    label: str


@dataclass
class Record:
    """Everything the demo observed; written by the narration thread, read at the end."""

    started: float
    events: list[Event] = field(default_factory=list)
    active: list[tuple[float, str]] = field(default_factory=list)
    """(time, namespace) each time the route was seen pointing somewhere new."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, time: float, kind: EventKind, label: str) -> None:
        """Remember a marker."""
        with self._lock:
            self.events.append(Event(time, kind, label))

    def saw_active(self, time: float, namespace: str) -> None:
        """Remember where the route pointed, when it changed."""
        with self._lock:
            if not self.active or self.active[-1][1] != namespace:
                self.active.append((time, namespace))

    def of_kind(self, kind: EventKind) -> list[Event]:
        """The markers of one kind, oldest first."""
        with self._lock:
            return [event for event in self.events if event.kind == kind]
