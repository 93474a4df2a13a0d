"""One evaluation: every rule measured once for every (pair, namespace), then each pair judged.

The expensive part (fetching) is shared by all pairs: one source call per rule covers every
namespace under evaluation. Pairs may share namespaces (the design document runs api,
producer and provider in the same two namespaces, each pair with its own route, selector and
variables), so results are keyed by (pair, namespace), never by namespace alone: a source
call never sees one namespace twice (`batches`), and each answer goes back to its own pair.
Judging is pure (gatekeeper.judging).
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
    since: float | None = None
    """When the candidate became ready (Unix seconds): sequential count comparisons judge the
    counts since then, so their false-alarm bound holds over the whole soak. None: the
    rule's window (a one-off evaluation)."""


TargetKey = tuple[str, str]
"""(pair, namespace): what one measurement is about."""


def targets_for(assignments: Sequence[Assignment], *, now: float | None = None) -> list[Target]:
    """Both namespaces of every pair, each knowing the other and the pair's judged span."""
    targets = []
    for item in assignments:
        span = None
        if item.since is not None and now is not None:
            span = max(now - item.since, 1.0)
        for namespace in (item.candidate, item.baseline):
            targets.append(Target(
                pair=item.pair.name,
                namespace=namespace,
                other=item.pair.other(namespace),
                selector=item.pair.selector,
                variables=item.pair.variables,
                span=span,
            ))
    return targets


def batches(targets: Sequence[Target]) -> list[list[Target]]:
    """Split targets so that no batch names a namespace twice; a pair stays in one batch.

    Sources answer per namespace (one query covers all of them); two pairs sharing a
    namespace go to different batches, so one pair's values never land on the other.
    Without shared namespaces this is a single batch (one source call per rule).
    """
    by_pair: dict[str, list[Target]] = {}
    for target in targets:
        by_pair.setdefault(target.pair, []).append(target)
    placed: list[tuple[set[str], list[Target]]] = []
    for members in by_pair.values():
        wanted = {t.namespace for t in members}
        for seen, batch in placed:
            if not seen & wanted:
                seen.update(wanted)
                batch.extend(members)
                break
        else:
            placed.append((set(wanted), list(members)))
    return [batch for _, batch in placed]


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

    async def _measure_batch(
        self, rule: Rule, targets: Sequence[Target]
    ) -> dict[TargetKey, Measurement]:
        """One source call for targets that never repeat a namespace."""
        source = self.sources.get(rule.source)
        if source is None:
            message = f"source '{rule.source}' is not configured"
            return {(t.pair, t.namespace): Measurement.error(message) for t in targets}
        async with self._limit:
            try:
                answer = await asyncio.wait_for(
                    source.measure(rule, targets, window=self.window,
                                   variables=self.rule_set.variables),
                    timeout=self.source_timeout,
                )
            except TimeoutError:
                message = f"{rule.source} did not answer within {self.source_timeout:g}s"
            except Exception as exc:  # a source bug must not take the loop down: fail closed
                log.exception("source failed", rule=rule.name, source=rule.source)
                message = f"{rule.source} failed: {type(exc).__name__}: {exc}"
            else:
                missing = Measurement.error(f"{rule.source} returned no measurement")
                return {(t.pair, t.namespace): answer.get(t.namespace, missing)
                        for t in targets}
        return {(t.pair, t.namespace): Measurement.error(message) for t in targets}

    async def _measure_rule(
        self, rule: Rule, groups: Sequence[Sequence[Target]]
    ) -> dict[TargetKey, Measurement]:
        answers = await asyncio.gather(*(self._measure_batch(rule, group) for group in groups))
        return {key: m for answer in answers for key, m in answer.items()}

    async def measure(
        self, targets: Sequence[Target]
    ) -> dict[str, dict[TargetKey, Measurement]]:
        """`result[rule][(pair, namespace)]` for every rule, sources called concurrently."""
        rules = self.rule_set.rules
        groups = batches(targets)
        CYCLE.set(next(_cycles))
        answers = await asyncio.gather(*(self._measure_rule(rule, groups) for rule in rules))
        return {rule.name: answer for rule, answer in zip(rules, answers, strict=True)}

    async def evaluate(self, assignments: Sequence[Assignment]) -> dict[str, Verdict]:
        """One verdict per pair, each from its own pair's measurements only."""
        per_pair = by_pair(await self.measure(targets_for(assignments, now=self._clock())))
        now = self._clock()
        return {
            item.pair.name: judge_pair(
                item.pair.name,
                self.rule_set,
                candidate=item.candidate,
                baseline=item.baseline,
                measurements=per_pair.get(item.pair.name, {}),
                evaluated_at=now,
            )
            for item in assignments
        }


def by_pair(
    measurements: Mapping[str, Mapping[TargetKey, Measurement]],
) -> dict[str, dict[str, dict[str, Measurement]]]:
    """`result[pair][rule][namespace]`: each pair's own measurements (what the judge reads)."""
    out: dict[str, dict[str, dict[str, Measurement]]] = {}
    for rule, by_target in measurements.items():
        for (pair, namespace), measurement in by_target.items():
            out.setdefault(pair, {}).setdefault(rule, {})[namespace] = measurement
    return out
