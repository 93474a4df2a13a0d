"""The one small interface every source implements, and the data it is called with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule

CYCLE: ContextVar[int] = ContextVar("gatekeeper_evaluation_cycle", default=0)
"""The evaluation cycle a source call belongs to; sources may share identical queries in it.

Set by `gatekeeper.evaluating` once per evaluation; 0 (outside any evaluation) shares nothing.
"""

@dataclass(frozen=True)
class Target:
    """One namespace to measure, with what its pair knows about it."""

    pair: str
    namespace: str
    other: str
    selector: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    span: float | None = None
    """Seconds of counts the pair's sequential comparisons judge (since the dark became ready);
    None: the rule's window. Only count comparisons (`rate`, `latency`) use it."""


class Source(Protocol):
    """Fetches one rule's measurement for many namespaces in as few calls as possible."""

    name: str

    async def measure(self, rule: Rule, targets: Sequence[Target], *, window: float,
                      variables: Mapping[str, str]) -> dict[str, Measurement]:
        """Return a Measurement per target namespace; never raise for source failures.

        `targets` never name one namespace twice (the evaluator puts pairs that share a
        namespace into separate calls), so a namespace-keyed answer is unambiguous.

        A failure to reach the source is `Measurement.error(...)` for every namespace; an
        answer without a value for a namespace is `Measurement.no_data(...)`.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
