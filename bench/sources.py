"""Source wrappers the benchmarks put around gatekeeper's real sources.

- `PerNamespace`: the naive strategy, one query per rule per namespace, through the same
  source instance (same HTTP session, same thread pool).
- `Counting`: counts calls to the wrapped source (requests, for Alertmanager).
- `Constant`: an in-memory answer for the Kubernetes and log rules where a benchmark only
  needs them judged, not fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from gatekeeper.measurements import Measurement
from gatekeeper.rules import Rule
from gatekeeper.sources.base import Source, Target

ALL_NAMESPACES = 'namespace=~"${namespaces}"'
ONE_NAMESPACE = 'namespace="${namespace}"'


def per_namespace_rule(rule: Rule) -> Rule:
    """The same rule with `namespace=~"${namespaces}"` rendered as `namespace="${namespace}"`."""
    update = {}
    for field in ("query", "samples_query"):
        text = getattr(rule, field)
        if text is not None:
            if ALL_NAMESPACES not in text:
                raise ValueError(f"rule {rule.name}: {field} has no {ALL_NAMESPACES}")
            update[field] = text.replace(ALL_NAMESPACES, ONE_NAMESPACE)
    return rule.model_copy(update=update)


class PerNamespace:
    """The naive strategy: each namespace measured by a call of its own, `concurrency` at once.

    The bound matches PrometheusSource's thread pool (8); Alertmanager also answers at most 8
    concurrent GETs by default and refuses more with 503.
    """

    def __init__(self, inner: Source, *, concurrency: int = 8) -> None:
        self.inner = inner
        self.name = inner.name
        self._rules: dict[str, Rule] = {}
        self._limit = asyncio.Semaphore(concurrency)

    async def _one(
        self, rule: Rule, target: Target, window: float, variables: Mapping[str, str]
    ) -> dict[str, Measurement]:
        async with self._limit:
            return await self.inner.measure(rule, [target], window=window, variables=variables)

    async def measure(
        self,
        rule: Rule,
        targets: Sequence[Target],
        *,
        window: float,
        variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        """One inner call per target, gathered."""
        single = self._rules.get(rule.name)
        if single is None:
            single = per_namespace_rule(rule) if rule.source == "prometheus" else rule
            self._rules[rule.name] = single
        answers = await asyncio.gather(*(
            self._one(single, target, window, variables) for target in targets))
        out: dict[str, Measurement] = {}
        for answer in answers:
            out.update(answer)
        return out

    async def close(self) -> None:
        """Close the wrapped source."""
        await self.inner.close()


class Counting:
    """Counts `measure` calls (one call is one request for Alertmanager)."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    async def measure(
        self,
        rule: Rule,
        targets: Sequence[Target],
        *,
        window: float,
        variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        """Count, then delegate."""
        self.calls += 1
        return await self.inner.measure(rule, targets, window=window, variables=variables)

    async def close(self) -> None:
        """Close the wrapped source."""
        await self.inner.close()


class Constant:
    """A healthy answer without I/O: 0 error lines, every pod ready, no restarts."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def measure(
        self,
        rule: Rule,
        targets: Sequence[Target],
        *,
        window: float,
        variables: Mapping[str, str],
    ) -> dict[str, Measurement]:
        """The same healthy value for every target."""
        value = 1.0 if rule.check == "pods_ready" else 0.0
        return {t.namespace: Measurement.ok(value, sample_count=1000.0) for t in targets}

    async def close(self) -> None:
        """Nothing to release."""
