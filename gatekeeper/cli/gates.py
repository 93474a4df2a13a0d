"""The gates a CLI flip must pass: the rules evaluated once, as `gatekeeper evaluate` does.

The verdict goes into an `Observation` for the one decision (`decisions.decide`, origin
`pipeline`): `gatekeeper flip` refuses like `POST .../flip` does when the target's verdict is
not `safe` (fail closed: a source down or no data is `unknown`, which refuses too); `--force`
skips this and the flip is recorded as forced.
"""

from __future__ import annotations

from dataclasses import replace

from kubernetes_asyncio import client

from gatekeeper.config import LoadedConfig, PairConfig
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.lifecycle import Observation
from gatekeeper.sources.factory import build_sources, close_sources

__all__ = ["flip_observation"]


async def flip_observation(api: client.ApiClient, loaded: LoadedConfig, pair: PairConfig,
                           target: str) -> Observation:
    """The gate rules' verdict on flipping `pair` to `target`, evaluated now."""
    config, rule_set = loaded.config, loaded.rule_set
    sources = build_sources(config, rule_set, api_client=api)
    try:
        evaluator = Evaluator(rule_set, sources, window=config.evaluation.window,
                              source_timeout=config.evaluation.source_timeout,
                              max_concurrency=config.evaluation.max_concurrency)
        verdicts = await evaluator.evaluate([Assignment(pair, target, pair.other(target))])
    finally:
        await close_sources(sources)
    verdict = verdicts.get(pair.name)
    seen = Observation(active=pair.other(target), dark=target)
    if verdict is None:
        return replace(seen, reasons=(f"gates: no verdict for {target} (not evaluated)",))
    return replace(seen, verdict=verdict.verdict, reasons=tuple(verdict.reasons))
