"""Cluster commands for pipelines: status, dark, scale-up, wait-ready, flip, rollback, scale-down.

They work from outside the cluster with a kubeconfig. Mutating commands are idempotent (a
second run says "nothing to do" and exits 0), refuse unsafe actions with exit 1 unless
`--force`, and print what they did. Exit 2: usage or configuration error; 3: the cluster
could not be reached or answered with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper import events, kubeclient, pairobjects
from gatekeeper.cli import announce, common, gates, remote
from gatekeeper.config import Config, PairConfig, load_config, parse_config
from gatekeeper.decisions import Request, decide
from gatekeeper.durations import parse_duration
from gatekeeper.environments import Readiness
from gatekeeper.errors import API_ERRORS
from gatekeeper.lifecycle import Action, ReleaseState
from gatekeeper.operations import (
    CLUSTER_ERRORS,
    ActionResult,
    ClusterError,
    Operations,
    PairStatus,
)
from gatekeeper.routers import discovery
from gatekeeper.yamlfiles import ConfigFileError, load_yaml_file

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_CLUSTER = 0, 1, 2, 3

Runner = Callable[[Operations, PairConfig, argparse.Namespace], Awaitable[int]]


class UsageError(Exception):
    """Bad arguments or configuration: exit 2."""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", help="configuration file (YAML); required unless --url")
    parent.add_argument("--pair", help="the pair (optional when only one is configured)")
    parent.add_argument("--kubeconfig", help="kubeconfig file (overrides kubernetes.kubeconfig)")
    parent.add_argument("--context", help="kubeconfig context (overrides kubernetes.context)")
    parent.add_argument("--output", choices=["text", "json"], default="text")
    return parent


def register(subcommands: Any) -> None:
    """Add the cluster commands."""
    common = [_common()]

    def add(name: str, help_text: str, runner: Runner) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subcommands.add_parser(name, help=help_text,
                                                                 parents=common)
        parser.set_defaults(handler=lambda args: _main(args, runner))
        return parser

    add("status", "show active/dark, routes, Deployments, pods and state", _status)
    add("dark", "print only the dark namespace (for pipelines)", _dark)

    up = add("scale-up", "scale the dark namespace up to production replica counts", _scale_up)
    up.add_argument("--namespace", help="scale this namespace instead of the dark one")
    up.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")

    wait = add("wait-ready", "wait until every pod of the dark namespace is Ready", _wait_ready)
    wait.add_argument("--namespace", help="wait for this namespace instead of the dark one")
    wait.add_argument("--timeout", type=_duration,
                      help="e.g. 10m (default: policy.ready_timeout)")

    flip = add("flip", "send all traffic to the dark namespace (all routes or none)", _flip)
    flip.add_argument("--to", metavar="NAMESPACE", help="target namespace (default: the dark one)")
    flip.add_argument("--force", action="store_true",
                      help="skip the gates and the readiness precondition (recorded as forced)")
    flip.add_argument("--if-needed", action="store_true",
                      help="exit 0 when traffic is already there (default: exit 1)")
    flip.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    flip.add_argument("--reason", default="", help="recorded in the state and the Event")
    remote.add_remote_arguments(flip)
    flip.set_defaults(remote_command="flip")

    back = add("rollback", "flip back to the previous active namespace", _rollback)
    back.add_argument("--force", action="store_true", help="skip the readiness precondition")
    back.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    back.add_argument("--reason", default="", help="recorded in the state and the Event")
    back.add_argument("--scale-up-first", action="store_true",
                      help="scale the previous namespace up and wait until Ready, then flip")
    remote.add_remote_arguments(back)
    back.set_defaults(remote_command="rollback")

    down = add("scale-down", "scale the dark (old) namespace down", _scale_down)
    down.add_argument("--namespace", help="scale this namespace instead of the dark one")
    down.add_argument("--keep", type=_count,
                      help="replicas to keep per Deployment (default: policy.scale_down_keep)")
    down.add_argument("--force", action="store_true",
                      help="even when the active namespace is not fully Ready")
    down.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    remote.add_remote_arguments(down)
    down.set_defaults(remote_command="scale-down")


def _load(args: argparse.Namespace) -> Config:
    """The configuration alone: cluster commands need no rule files."""
    try:
        data, line_map = load_yaml_file(args.config)
        config = parse_config(data, args.config, line_map)
    except ConfigFileError as exc:
        raise UsageError("\n".join(exc.problems)) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {args.config}: {exc.strerror or exc}") from exc
    updates: dict[str, Any] = {}
    if args.kubeconfig:
        updates.update(kubeconfig=args.kubeconfig, mode="kubeconfig")
    if args.context:
        updates["context"] = args.context
    if updates:
        config = config.model_copy(
            update={"kubernetes": config.kubernetes.model_copy(update=updates)})
    return config


def _pick(config: Config, name: str | None) -> PairConfig:
    if name:
        try:
            return config.pair(name)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
    if len(config.pairs) != 1:
        known = ", ".join(p.name for p in config.pairs)
        raise UsageError(f"several pairs are configured ({known}): choose one with --pair")
    return config.pairs[0]


def _main(args: argparse.Namespace, runner: Runner) -> int:
    command = getattr(args, "remote_command", None)
    if getattr(args, "url", None) and command:
        return remote.run_remote(command, args)
    if not args.config:
        print("error: --config is required (or --url for flip, rollback, scale-down)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        config = _load(args)
        if not config.objects.enabled:  # else the pair may be a BlueGreenPair object
            _pick(config, args.pair)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_run(config, args, runner))


async def _run(config: Config, args: argparse.Namespace, runner: Runner) -> int:
    api = await common.api_client_or_report(config.kubernetes)
    if api is None:
        return EXIT_USAGE
    try:
        try:  # the pairs declared as BlueGreenPair objects, then the one asked for
            config, _objects = await pairobjects.resolve(api, config)
            pair = _pick(config, args.pair)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except API_ERRORS as exc:
            print(f"error: reading the BlueGreenPair objects: "
                  f"{kubeclient.describe_error(exc)}", file=sys.stderr)
            return EXIT_CLUSTER
        try:  # every route's Traefik API group, checked or discovered
            config = await discovery.resolve_route_groups(api, config)
        except discovery.RouteGroupError as exc:
            print("\n".join(f"error: {problem}" for problem in exc.problems), file=sys.stderr)
            return EXIT_USAGE
        except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
            print(f"error: reading the routes of pair {pair.name}: API discovery (GET /apis) "
                  f"failed: {kubeclient.describe_error(exc)}", file=sys.stderr)
            return EXIT_CLUSTER
        pair = next(p for p in config.pairs if p.name == pair.name)
        ops = Operations(api, config, dry_run=bool(getattr(args, "dry_run", False)))
        return await runner(ops, pair, args)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CLUSTER
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await api.close()


# -- output ------------------------------------------------------------------------------------


def report(result: ActionResult, pair: PairConfig, args: argparse.Namespace) -> int:
    """Print a result; the exit code follows from it."""
    failed = bool(result.details.get("failed"))
    if args.output == "json":
        print(json.dumps(result.to_dict(), indent=2, default=str))
    elif result.refused:
        print(f"refused: {result.action.replace('_', '-')} (pair {pair.name})",
              file=sys.stderr)
        for reason in result.reasons:
            print(f"  - {reason}", file=sys.stderr)
    else:
        for reason in result.reasons:
            print(reason, file=sys.stderr if reason.startswith("failed:") else sys.stdout)
    if failed:
        return EXIT_CLUSTER
    return EXIT_REFUSED if result.refused else EXIT_OK


def _ready_text(readiness: Readiness | None) -> str:
    if readiness is None:
        return "unreadable"
    return "Ready" if readiness.ready else "NOT ready"


def format_status(status: PairStatus) -> str:
    """Human-readable status of one pair."""
    lines = [f"pair {status.pair}: " + (
        f"active {status.active}, dark {status.dark}" if status.consistent
        else f"INCONSISTENT: {status.problem}")]
    lines.append("  routes:")
    for route in status.routes:
        points = ", ".join(sorted(route.namespaces)) or "nothing"
        weights = f" weights {route.weights}" if route.weights is not None else ""
        twin = f" (also in {route.also_in_group}!)" if route.also_in_group else ""
        lines.append(f"    {route.ref} [{route.api_group}] -> {points}{weights}{twin}")
    lines.append("  namespaces:")
    for ns in status.namespaces:
        head = f"    {ns.namespace} ({ns.role}): {_ready_text(ns.readiness)}"
        if ns.error:
            head += f": {ns.error}"
        lines.append(head)
        if ns.readiness is None:
            continue
        for dep in ns.readiness.deployments:
            images = ", ".join(f"{c}={i}" for c, i in dep.images.items())
            lines.append(f"      {dep.name}: {dep.pods_ready}/{dep.replicas} Ready  {images}")
        lines.extend(f"      ! {reason}" for reason in ns.readiness.reasons)
    if status.state_error:
        lines.append(f"  state: {status.state_error}")
    elif status.state is not None:
        state = status.state
        last = state.last_action or {}
        lines.append(f"  state: phase {state.phase}, previous {state.previous or '-'}")
        if last:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(last.get("at", 0))))
            lines.append(f"  last action: {last.get('kind')} {last.get('from')} -> "
                         f"{last.get('to')} ({last.get('status')}, {last.get('trigger')}, {when})")
    return "\n".join(lines)


# -- commands ----------------------------------------------------------------------------------


async def _status(ops: Operations, pair: PairConfig, args: argparse.Namespace) -> int:
    status = await ops.status(pair)
    if args.output == "json":
        print(json.dumps(status.to_dict(), indent=2, default=str))
    else:
        print(format_status(status))
    return EXIT_OK


async def _dark(ops: Operations, pair: PairConfig, args: argparse.Namespace) -> int:
    status = await ops.status(pair)
    if not status.consistent or status.dark is None:
        print(f"error: cannot tell the dark namespace of pair {pair.name}: {status.problem}",
              file=sys.stderr)
        return EXIT_REFUSED
    if args.output == "json":
        print(json.dumps({"pair": pair.name, "dark": status.dark, "active": status.active}))
    else:
        print(status.dark)
    return EXIT_OK


async def _scale_up(ops: Operations, pair: PairConfig, args: argparse.Namespace) -> int:
    return report(await ops.scale_up(pair, args.namespace), pair, args)


async def _wait_ready(ops: Operations, pair: PairConfig, args: argparse.Namespace) -> int:
    timeout = args.timeout if args.timeout is not None else \
        ops.config.policy_for(pair).ready_timeout
    started = time.monotonic()

    def progress(readiness: Readiness) -> None:
        if args.output == "text":
            elapsed = time.monotonic() - started
            print(f"[{elapsed:5.0f}s] {readiness.summary()}", flush=True)

    result = await ops.wait_ready(pair, args.namespace, timeout=timeout, progress=progress)
    return report(result, pair, args)


async def _flip(ops: Operations, pair: PairConfig, args: argparse.Namespace) -> int:
    """Checked like `POST .../flip`: first what a flip would do (nothing: exit 1 unless
    `--if-needed`), then the one decision (`decisions.decide`, with the gates' verdict
    unless `--force`), then the executor."""
    asked = Action("flip", args.to or "", trigger="manual", reason=args.reason,
                   force=args.force)
    probe = await Operations(ops.api, ops.config, dry_run=True, clock=ops.clock).execute(
        pair, asked)
    if not probe.changed and not probe.refused and not probe.dry_run:
        # Nothing to do: said by the real operation, which also records what the routes
        # show (a switch whose process died after patching is completed).
        done = await ops.execute(pair, asked)
        await _announce(ops, pair, done)
        code = report(done, pair, args)
        if done.changed or done.refused:
            return code
        if args.if_needed:
            return code
        print(f"flip: traffic is already where it was asked to go (pair {pair.name}); "
              "--if-needed accepts that", file=sys.stderr)
        return EXIT_REFUSED
    if probe.refused:  # refused again for real: recorded in the history and an Event
        return report(await ops.execute(pair, asked), pair, args)
    target = (probe.details.get("would") or {}).get("to")
    seen = None
    if not args.force and isinstance(target, str):
        try:
            loaded = load_config(args.config)
        except ConfigFileError as exc:
            print("\n".join(f"error: {p}" for p in exc.problems), file=sys.stderr)
            return EXIT_USAGE
        seen = await gates.flip_observation(ops.api, loaded, pair, target)
    request = Request("flip", to=args.to, force=args.force, reason=args.reason,
                      origin="pipeline")
    step = decide(request, ReleaseState(), seen, ops.config.policy_for(pair), ops.clock())
    if step.refusal:  # recorded like the API's: the history and a Warning Event
        refused = await ops.refuse("flip", pair, await ops.live(pair), list(step.refusal),
                                   reason=events.FLIP_REFUSED, trigger="manual")
        return report(refused, pair, args)
    result = await ops.execute(pair, step.actions[0])
    await _announce(ops, pair, result)
    return report(result, pair, args)


async def _announce(ops: Operations, pair: PairConfig, result: ActionResult) -> None:
    """Tell the configured receivers about an action that changed the cluster."""
    if not result.changed or not ops.config.notifications.receivers:
        return
    try:
        status = await ops.status(pair)
    except (ClusterError, *CLUSTER_ERRORS):
        status = None  # the message goes out without the images
    await announce.announce(ops.config, pair, result, status)


async def _decided(ops: Operations, pair: PairConfig, args: argparse.Namespace,
                   request: Request) -> int:
    """A pipeline's rollback or scale-down: the one decision, then the executor."""
    step = decide(request, ReleaseState(), None, ops.config.policy_for(pair), ops.clock())
    if step.refusal:  # not for these today (origin pipeline): kept for the decision's sake
        print(f"refused: {request.kind.replace('_', '-')} (pair {pair.name})", file=sys.stderr)
        for reason in step.refusal:
            print(f"  - {reason}", file=sys.stderr)
        return EXIT_REFUSED
    result = await ops.execute(pair, step.actions[0])
    await _announce(ops, pair, result)
    return report(result, pair, args)


async def _rollback(ops: Operations, pair: PairConfig, args: argparse.Namespace) -> int:
    return await _decided(ops, pair, args, Request(
        "rollback", force=args.force, reason=args.reason, scale_up_first=args.scale_up_first,
        origin="pipeline"))


async def _scale_down(ops: Operations, pair: PairConfig, args: argparse.Namespace) -> int:
    return await _decided(ops, pair, args, Request(
        "scale_down", to=args.namespace, keep=args.keep, force=args.force, origin="pipeline"))
