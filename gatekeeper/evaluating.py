"""One evaluation: every rule measured once for every namespace, then each pair judged.

The expensive part (fetching) is shared by all pairs: one source call per rule covers every
namespace under evaluation. Judging is pure (gatekeeper.judging).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from gatekeeper.config import PairConfig
from gatekeeper.judging import judge_pair
from gatekeeper.measurements import Measurement, Verdict
from gatekeeper.rules import Rule, RuleSet
from gatekeeper.sources.base import CYCLE, Source, Target

log = structlog.get_logger(__name__)

_cycles = itertools.count(1)


@dataclass(frozen=True)
class Assignment:
    """Which namespace of a pair is judged (candidate) against which (baseline)."""

    pair: PairConfig
    candidate: str
    baseline: str


def targets_for(assignments: Sequence[Assignment]) -> list[Target]:
    """Both namespaces of every pair, each knowing the other."""
    targets = []
    for item in assignments:
        for namespace in (item.candidate, item.baseline):
            targets.append(Target(
                pair=item.pair.name,
                namespace=namespace,
                other=item.pair.other(namespace),
                selector=item.pair.selector,
                variables=item.pair.variables,
            ))
    return targets


class Evaluator:
    """Measures rules through their sources and judges pairs."""

    def __init__(
        self,
        rule_set: RuleSet,
        sources: Mapping[str, Source],
        *,
        window: float,
        source_timeout: float = 10.0,
        max_concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rule_set = rule_set
        self.sources = dict(sources)
        self.window = window
        self.source_timeout = source_timeout
        self._limit = asyncio.Semaphore(max_concurrency)
        self._clock = clock

    async def _measure_rule(
        self, rule: Rule, targets: Sequence[Target]
    ) -> dict[str, Measurement]:
        source = self.sources.get(rule.source)
        if source is None:
            message = f"source '{rule.source}' is not configured"
            return {t.namespace: Measurement.error(message) for t in targets}
        async with self._limit:
            try:
                return await asyncio.wait_for(
                    source.measure(rule, targets, window=self.window,
                                   variables=self.rule_set.variables),
                    timeout=self.source_timeout,
                )
            except TimeoutError:
                message = f"{rule.source} did not answer within {self.source_timeout:g}s"
            except Exception as exc:  # a source bug must not take the loop down: fail closed
                log.exception("source failed", rule=rule.name, source=rule.source)
                message = f"{rule.source} failed: {type(exc).__name__}: {exc}"
        return {t.namespace: Measurement.error(message) for t in targets}

    async def measure(self, targets: Sequence[Target]) -> dict[str, dict[str, Measurement]]:
        """`result[rule][namespace]` for every rule, sources called concurrently."""
        rules = self.rule_set.rules
        CYCLE.set(next(_cycles))
        answers = await asyncio.gather(*(self._measure_rule(rule, targets) for rule in rules))
        return {rule.name: answer for rule, answer in zip(rules, answers, strict=True)}

    async def evaluate(self, assignments: Sequence[Assignment]) -> dict[str, Verdict]:
        """One verdict per pair."""
        measurements = await self.measure(targets_for(assignments))
        now = self._clock()
        return {
            item.pair.name: judge_pair(
                item.pair.name,
                self.rule_set,
                candidate=item.candidate,
                baseline=item.baseline,
                measurements=measurements,
                evaluated_at=now,
            )
            for item in assignments
        }
