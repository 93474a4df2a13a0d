"""Clocks: a steady one for durations, the wall clock for what people read.

Durations (soak, observation, cooldown) must not jump when the wall clock is stepped (NTP,
a VM resumed, an operator's `date -s`): a 2 h forward step once completed a 2 h soak in 13 s.
`SteadyClock` reads the wall clock once, when it is made, and then advances with the
monotonic clock, so its readings look like Unix time (they are persisted, shown and
compared with times from before a restart) but only ever move forward at the real pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["SteadyClock"]


class SteadyClock:
    """Unix seconds that advance with the monotonic clock: the wall time when the clock was
    made, plus the monotonic time since. Call it for the current reading."""

    def __init__(self, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._origin = wall() - monotonic()

    def __call__(self) -> float:
        """Now, on the steady timeline."""
        return self._origin + self._monotonic()

    def to_wall(self, reading: float) -> float:
        """A reading of this clock as wall time now (equal unless the wall clock was stepped
        since the clock was made): for history and notifications people read."""
        return reading + (self._wall() - self())
