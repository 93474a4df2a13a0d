"""Remember which alert instances were already acted on.

Alertmanager delivers at least once and repeats a firing group every `repeat_interval`;
an HA pair of Alertmanagers sends each notification twice. The key is the alert's
fingerprint and start time, so a new firing of the same alert is a new instance.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["AlertDeduper"]


class AlertDeduper:
    """Remembers alert instances already acted on (bounded, expiring)."""

    def __init__(self, *, ttl: float = 3600.0, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def claim(self, key: str) -> bool:
        """True the first time `key` is seen within the TTL (the caller acts on it)."""
        now = self._clock()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.ttl and len(self._seen) < self.size:
                break
            self._seen.pop(oldest)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True

    def release(self, key: str) -> None:
        """Forget a claim whose processing failed, so a retry is acted on."""
        self._seen.pop(key, None)
