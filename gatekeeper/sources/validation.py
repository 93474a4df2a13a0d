"""The `validation` rule source: what a validation driver found, as a measurement.

A rule `source: validation, driver: <name>` reads the latest outcome that driver posted for
the namespace (gatekeeper.outcomes.OutcomeBoard), for the release under validation (the
board forgets an old release's outcomes):

- `pass` / `fail` with a value: the value (load: share of synthetic checks passed, with the
  checks as samples, so `pass: [">= 0.99"]` and `min_samples` make "integration checks
  passed" a gate; jobs: the test Job, 1 passed, 0 failed), the outcome's reason as the
  measurement's message, so a failure's reason (the Job's, with its log tail) reaches the
  verdict;
- `pending` or no value (the Job still runs, too few requests yet) or no outcome at all: no
  data, so the verdict stays unknown;
- `error` (gatekeeper could not run the driver): an error, never a pass;
- a pair that does not configure the driver: 1, "runs no <driver> driver", without samples
  (a rule with `min_samples` stays unknown), so one pair's test Job rule does not hold up
  the pairs without one.

Outcomes exist on the replica that drives (the leader); elsewhere, and in one-off CLI
evaluations, a configured driver has no outcome and its rule is unknown. The board keeps a
namespace's outcome after its drivers stop (at the flip), until the pair's next release.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gatekeeper.measurements import Measurement
from gatekeeper.outcomes import OutcomeBoard
from gatekeeper.rules import Rule
from gatekeeper.sources.base import Target

__all__ = ["ValidationSource"]


def _everything(pair: str, driver: str) -> bool:
    return True


class ValidationSource:
    """Reads the drivers' outcome board; no I/O."""

    name = "validation"

    def __init__(self, board: OutcomeBoard, *,
                 configured: Callable[[str, str], bool] = _everything) -> None:
        self.board = board
        self.configured = configured
        """`configured(pair, driver)`: whether the pair runs that driver (default: all)."""

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """The latest outcome of `rule.driver` for each target namespace."""
        return {target.namespace: self._one(rule, target) for target in targets}

    def _one(self, rule: Rule, target: Target) -> Measurement:
        driver = rule.driver or ""
        query = f"validation driver {driver}"
        if not self.configured(target.pair, driver):
            return Measurement.ok(1.0, message=f"pair {target.pair} runs no {driver} driver",
                                  query=query)
        posted = self.board.get(target.pair, driver, target.namespace)
        if posted is None:
            return Measurement.no_data(f"the {driver} driver has no outcome for "
                                       f"{target.namespace} (it runs while the dark "
                                       "validates and is Ready)", query=query)
        outcome = posted.outcome
        if outcome.status == "error":
            return Measurement.error(outcome.reason, query=query)
        if outcome.status == "pending" or outcome.value is None:
            return Measurement.no_data(outcome.reason, query=query,
                                       sample_count=float(outcome.samples))
        return Measurement.ok(outcome.value, message=outcome.reason, query=query,
                              sample_count=float(outcome.samples))

    async def close(self) -> None:
        """Nothing to release."""
