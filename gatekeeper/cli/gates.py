"""The gates a CLI flip must pass: the rules evaluated once, as `gatekeeper evaluate` does.

`gatekeeper flip` refuses like `POST .../flip` does when the dark namespace's verdict is not
`safe` (fail closed: a source down or no data is `unknown`, which refuses too); `--force`
skips this and the flip is recorded as forced.
"""

from __future__ import annotations

from kubernetes_asyncio import client

from gatekeeper.config import LoadedConfig, PairConfig
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.sources.factory import build_sources, close_sources

__all__ = ["flip_refusals"]


async def flip_refusals(api: client.ApiClient, loaded: LoadedConfig, pair: PairConfig,
                        target: str) -> list[str]:
    """Why flipping `pair` to `target` is not safe by its gate rules (empty: safe)."""
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
    if verdict is None:
        return [f"gates: no verdict for {target} (not evaluated)"]
    if verdict.verdict == "safe":
        return []
    return [f"gates: verdict on {target} is {verdict.verdict} (--force flips anyway)",
            *verdict.reasons]
