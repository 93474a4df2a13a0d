"""`gatekeeper evaluate`: one evaluation, both namespaces side by side, verdict and reasons.

Exit codes: 0 safe, 1 unsafe, 2 usage or configuration error, 3 unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from gatekeeper.cli.common import load_config_or_report
from gatekeeper.config import Config, LoadedConfig, PairConfig
from gatekeeper.criteria import format_number
from gatekeeper.evaluating import Assignment, Evaluator
from gatekeeper.measurements import Verdict
from gatekeeper.sources.factory import build_sources, close_sources, needs_kubernetes

EXIT_BY_VERDICT = {"safe": 0, "unsafe": 1, "unknown": 3}


def register(subcommands: Any) -> None:
    """Add `evaluate`."""
    parser = subcommands.add_parser(
        "evaluate", help="evaluate the gate rules once and print the verdict"
    )
    parser.add_argument("--config", required=True, help="configuration file (YAML)")
    parser.add_argument("--pair", help="only this pair (default: every pair)")
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument(
        "--dark", metavar="NAMESPACE",
        help="judge this namespace against the other one instead of reading the route",
    )
    parser.set_defaults(handler=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    """Synchronous entry for argparse."""
    loaded = load_config_or_report(args.config)
    if loaded is None:
        return 2
    try:
        pairs = [loaded.config.pair(args.pair)] if args.pair else list(loaded.config.pairs)
        if args.dark is not None:
            if len(pairs) != 1:
                raise KeyError("--dark needs --pair when several pairs are configured")
            pairs[0].other(args.dark)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return asyncio.run(_evaluate(loaded, pairs, args))


async def _evaluate(loaded: LoadedConfig, pairs: list[PairConfig], args: argparse.Namespace) -> int:
    config, rule_set = loaded.config, loaded.rule_set
    async with contextlib.AsyncExitStack() as stack:
        api = None
        if needs_kubernetes(rule_set) or args.dark is None:
            from gatekeeper import kubeclient

            try:
                api = await stack.enter_async_context(kubeclient.connect(config.kubernetes))
            except Exception as exc:  # noqa: BLE001 - any failure to configure is reported
                print(f"warning: cannot configure the Kubernetes client: {exc}", file=sys.stderr)
        assignments: list[Assignment] = []
        unresolved: dict[str, str] = {}
        groups_problem = None
        if api is not None and args.dark is None:
            pairs, groups_problem = await _resolve_route_groups(api, config, pairs)
        for pair in pairs:
            if groups_problem is not None:
                unresolved[pair.name] = groups_problem
                continue
            candidate, problem = await _dark_namespace(api, pair, args.dark)
            if candidate is None:
                unresolved[pair.name] = problem or "unknown"
                continue
            assignments.append(Assignment(pair, candidate, pair.other(candidate)))
        sources = build_sources(config, rule_set, api_client=api)
        try:
            evaluator = Evaluator(
                rule_set, sources, window=config.evaluation.window,
                source_timeout=config.evaluation.source_timeout,
                max_concurrency=config.evaluation.max_concurrency,
            )
            verdicts = await evaluator.evaluate(assignments) if assignments else {}
        finally:
            await close_sources(sources)
    if args.output == "json":
        print(json.dumps(_json(verdicts, unresolved), indent=2))
    else:
        print(_table(verdicts, unresolved))
    names = [v.verdict for v in verdicts.values()] + ["unknown"] * len(unresolved)
    if "unsafe" in names:
        return 1
    if "unknown" in names:
        return 3
    return 0


async def _resolve_route_groups(
    api: Any, config: Config, pairs: list[PairConfig]
) -> tuple[list[PairConfig], str | None]:
    """PAIRS with their routes' Traefik API groups checked or discovered, or the problem."""
    from gatekeeper import errors, kubeclient
    from gatekeeper.routers import discovery

    try:
        resolved = await discovery.resolve_route_groups(api, config)
    except discovery.RouteGroupError as exc:
        return pairs, "; ".join(exc.problems)
    except errors.API_ERRORS as exc:
        return pairs, ("cannot read the route: API discovery (GET /apis) failed: "
                       f"{kubeclient.describe_error(exc)}")
    by_name = {pair.name: pair for pair in resolved.pairs}
    return [by_name[pair.name] for pair in pairs], None


async def _dark_namespace(
    api: Any, pair: PairConfig, override: str | None
) -> tuple[str | None, str | None]:
    if override is not None:
        return override, None
    if api is None:
        return None, "no Kubernetes client to read the route (use --dark NAMESPACE)"
    from gatekeeper.routers.reading import read_active

    try:
        state = await read_active(api, pair)
    except Exception as exc:  # noqa: BLE001 - reported as unknown, never as safe
        return None, f"cannot read the route: {type(exc).__name__}: {exc}"
    if state.active is None:
        return None, state.problem
    return pair.other(state.active), None


def _json(verdicts: dict[str, Verdict], unresolved: dict[str, str]) -> dict[str, Any]:
    pairs = {name: verdict.to_dict() for name, verdict in verdicts.items()}
    for name, problem in unresolved.items():
        pairs[name] = {"pair": name, "verdict": "unknown", "safe": False,
                       "reasons": [f"cannot tell which namespace is dark: {problem}"]}
    return {"pairs": pairs}


def _table(verdicts: dict[str, Verdict], unresolved: dict[str, str]) -> str:
    lines: list[str] = []
    for name, verdict in verdicts.items():
        dark, active = verdict.candidate, verdict.baseline
        lines.append(f"pair {name}: dark {dark.namespace} vs active {active.namespace}")
        header = ("rule", "key", f"dark {dark.namespace}", "status", f"active {active.namespace}",
                  "status", "target")
        rows = [header]
        for mine, theirs in zip(dark.results, active.results, strict=True):
            rows.append((mine.rule, "yes" if mine.key else "", format_number(mine.value),
                         mine.status, format_number(theirs.value), theirs.status, mine.target))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths,
                                                                            strict=True)).rstrip())
        lines.append(f"  score: dark {_score(dark.score)} ({dark.grade}), "
                     f"active {_score(active.score)} ({active.grade})")
        lines.append(f"  verdict: {verdict.verdict.upper()}")
        lines.extend(f"    - {reason}" for reason in verdict.reasons)
        lines.append("")
    for name, problem in unresolved.items():
        lines.append(f"pair {name}: verdict UNKNOWN: cannot tell which namespace is dark: "
                     f"{problem}")
    return "\n".join(lines).rstrip()


def _score(score: float | None) -> str:
    return "n/a" if score is None else f"{score:g}%"
