"""The `validation` rule source: what a validation driver found, as a measurement.

A rule `source: validation, driver: load` reads the latest outcome the `load` driver
posted for the namespace (gatekeeper.outcomes.OutcomeBoard): its value (load: share of
synthetic checks passed) with its sample count, so `pass: [">= 0.99"]` and `min_samples`
make "integration checks passed" a gate. No outcome for the namespace (no driver ran for
it, or none answered yet) is no data, and a driver's own failure (`error`) is an error:
neither ever passes. The board keeps a namespace's outcome after its drivers stop (at the
flip), until the pair's next release is validated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gatekeeper.measurements import Measurement
from gatekeeper.outcomes import OutcomeBoard
from gatekeeper.rules import Rule
from gatekeeper.sources.base import Target

__all__ = ["ValidationSource"]


class ValidationSource:
    """Reads the drivers' outcome board; no I/O."""

    name = "validation"

    def __init__(self, board: OutcomeBoard) -> None:
        self.board = board

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """The latest outcome of `rule.driver` for each target namespace."""
        return {target.namespace: self._one(rule, target) for target in targets}

    def _one(self, rule: Rule, target: Target) -> Measurement:
        driver = rule.driver or ""
        query = f"validation driver {driver}"
        posted = self.board.get(target.pair, driver, target.namespace)
        if posted is None:
            return Measurement.no_data(f"the {driver} driver has no outcome for "
                                       f"{target.namespace} (it runs while the dark "
                                       "validates and is Ready)", query=query)
        outcome = posted.outcome
        if outcome.status == "error":
            return Measurement.error(outcome.reason, query=query)
        if outcome.value is None:
            return Measurement.no_data(outcome.reason, query=query,
                                       sample_count=float(outcome.samples))
        return Measurement.ok(outcome.value, message=outcome.reason, query=query,
                              sample_count=float(outcome.samples))

    async def close(self) -> None:
        """Nothing to release."""
