"""What the validation drivers found, per pair and driver: an in-memory board, no I/O.

A driver (gatekeeper.drivers: synthetic load and checks, a test Job, ...) reports its
`Outcome` for the dark namespace it works on; the `validation` rule source reads the board
so "integration checks passed" can be a gate, and the API shows it. The board keeps the
latest outcome of each driver for the release it was reported for; the drivers' runner
clears a pair's outcomes when a new release (or another dark namespace) starts, so an old
release's pass never counts for a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Outcome", "OutcomeBoard", "OutcomeStatus", "Posted"]

OutcomeStatus = Literal["pending", "pass", "fail", "error"]
"""`pending`: not decided yet (too few requests, the Job still runs); `pass`/`fail`: what the
dark did; `error`: gatekeeper's own problem (the driver crashed, the cluster refused the Job),
which leaves the rule unknown, never passing."""


@dataclass(frozen=True)
class Outcome:
    """One driver's finding on the dark namespace, as of `at` (wall seconds)."""

    status: OutcomeStatus
    reason: str
    value: float | None = None
    """The measured figure a rule judges (load: share of checks that passed, 0..1)."""
    samples: int = 0
    """How many requests / runs back `value` (evidence sufficiency)."""
    at: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (API)."""
        return {"status": self.status, "reason": self.reason, "value": self.value,
                "samples": self.samples, "at": self.at, "details": dict(self.details)}


@dataclass(frozen=True)
class Posted:
    """An outcome with what it is about."""

    pair: str
    namespace: str
    release: str
    driver: str
    outcome: Outcome


class OutcomeBoard:
    """The latest outcome per (pair, driver), with the namespace and release it is for."""

    def __init__(self) -> None:
        self._posted: dict[tuple[str, str], Posted] = {}

    def post(self, pair: str, namespace: str, release: str, driver: str,
             outcome: Outcome) -> None:
        """Record `driver`'s latest outcome for `pair`'s dark `namespace` at `release`."""
        self._posted[(pair, driver)] = Posted(pair, namespace, release, driver, outcome)

    def clear(self, pair: str) -> None:
        """Forget every outcome of `pair` (a new release or dark namespace starts)."""
        for key in [key for key in self._posted if key[0] == pair]:
            del self._posted[key]

    def get(self, pair: str, driver: str, namespace: str | None = None) -> Posted | None:
        """`driver`'s latest outcome for `pair` (only if it is about `namespace`, when given)."""
        posted = self._posted.get((pair, driver))
        if posted is None or (namespace is not None and posted.namespace != namespace):
            return None
        return posted

    def of_pair(self, pair: str) -> list[Posted]:
        """Every driver's latest outcome for `pair`, by driver name."""
        return sorted((p for key, p in self._posted.items() if key[0] == pair),
                      key=lambda p: p.driver)
