"""The one small interface every source implements, the data it is called with, and
`measure_each` (per-target measuring, concurrent, a crash confined to its target)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from gatekeeper import labels
from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule

log = structlog.get_logger()

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


PodCache = Callable[[str], "list[dict[str, Any]] | None"]
"""A namespace's pods from the watch cache while it is current, else None (then listed)."""


def cached_pods(cache: PodCache | None, target: Target) -> list[dict[str, Any]] | None:
    """The target's pods (its selector applied) from the watch cache, as a list of them
    would answer; None when the cache cannot answer (not current, an unparsable selector):
    then list them."""
    cached = cache(target.namespace) if cache is not None else None
    if cached is None:
        return None
    try:
        match = labels.matcher(target.selector)
    except ValueError:
        return None
    return [p for p in cached if match((p.get("metadata") or {}).get("labels") or {})]


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


async def measure_each(targets: Sequence[Target],
                       measure: Callable[[Target], Awaitable[Measurement]], *,
                       source: str, rule: str) -> dict[str, Measurement]:
    """Measure every target concurrently with `measure` (which bounds its own concurrency).
    A crash measuring one target (a bug) is logged and becomes that target's error
    (`<source>: internal error: ...`): it never loses the other targets' measurements."""

    async def guarded(target: Target) -> Measurement:
        try:
            return await measure(target)
        except Exception as exc:  # a bug here must not lose the other targets
            log.exception(f"{source} measurement crashed", rule=rule,
                          namespace=target.namespace)
            return Measurement.error(f"{source}: internal error: {exc!r}")

    results = await asyncio.gather(*(guarded(t) for t in targets))
    return {t.namespace: m for t, m in zip(targets, results, strict=True)}
