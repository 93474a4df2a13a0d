"""`gatekeeper serve --config FILE [--host H] [--port P] [--dry-run]`: run the service.

The HTTP API, the Alertmanager webhook and the control loop in one process. SIGTERM and
SIGINT stop it gracefully: no new action starts, actions in flight finish (a flip is never
cut in half), the Lease is released, then the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper.cli.common import load_config_or_report
from gatekeeper.config import LoadedConfig
from gatekeeper.errors import API_ERRORS

log = structlog.get_logger(__name__)


def register(subcommands: Any) -> None:
    """Add `serve`."""
    parser = subcommands.add_parser(
        "serve", help="run the service: HTTP API, Alertmanager webhook, control loop")
    parser.add_argument("--config", required=True, help="configuration file (YAML)")
    parser.add_argument("--host", help="listen address (default: server.host)")
    parser.add_argument("--port", type=int, help="listen port (default: server.port)")
    parser.add_argument("--dry-run", action="store_true",
                        help="decide and report, never change the cluster")
    parser.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Synchronous entry for argparse; exit 2 on a configuration problem."""
    loaded = load_config_or_report(args.config)
    if loaded is None:
        return 2
    from gatekeeper.service.auth import load_tokens
    from gatekeeper.yamlfiles import ConfigFileError

    try:
        tokens = load_tokens(loaded.config.auth)
    except OSError as exc:
        print(f"error: cannot read auth.token_file or auth.tokens_file: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    except ConfigFileError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    from gatekeeper.service.notifications import ReceiverError, load_receivers

    try:
        load_receivers(loaded.config.notifications)
    except ReceiverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host = args.host or loaded.config.server.host
    port = loaded.config.server.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        print(f"error: --port must be 0..65535, got {port}", file=sys.stderr)
        return 2
    if port != loaded.config.server.port:  # the port other replicas forward to, too
        server = loaded.config.server.model_copy(update={"port": port})
        loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
            update={"server": server}))
    return asyncio.run(serve(loaded, host=host, port=port, dry_run=args.dry_run,
                             tokens=tokens))


async def serve(loaded: LoadedConfig, *, host: str, port: int, dry_run: bool,
                tokens: dict[str, str]) -> int:
    """Run until SIGTERM or SIGINT. BlueGreenPair objects added, edited or deleted while it
    runs are followed by a watch (`service.pairwatch`): only the pair concerned changes,
    the service goes on."""
    from gatekeeper import kubeclient

    try:
        api = await kubeclient.create_api_client(loaded.config.kubernetes)
    except Exception as exc:  # noqa: BLE001 - any configuration failure is reported and fatal
        print(f"error: cannot configure the Kubernetes client: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await _serve_until(api, loaded, host=host, port=port, dry_run=dry_run,
                                  tokens=tokens, stop=stop)
    finally:
        await api.close()


async def _resolve(api: Any, loaded: LoadedConfig) -> tuple[LoadedConfig | None, int]:
    """The configuration with the object pairs and the routes' API groups; (None, exit code)
    after printing why it cannot start."""
    from gatekeeper import kubeclient, pairobjects
    from gatekeeper.routers import discovery

    try:  # the pairs declared as BlueGreenPair objects join the configured ones
        config, found = await pairobjects.resolve(api, loaded.config)
    except API_ERRORS as exc:
        print("error: cannot read the BlueGreenPair objects: "
              f"{kubeclient.describe_error(exc)}", file=sys.stderr)
        return None, 3
    if found.rejected:
        print(f"warning: {len(found.rejected)} BlueGreenPair object(s) skipped (invalid "
              "spec; their status says which field): "
              + ", ".join(r.ref for r in found.rejected), file=sys.stderr)
    try:  # every route's Traefik API group, checked or discovered, before anything starts
        config = await discovery.resolve_route_groups(api, config)
    except discovery.RouteGroupError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return None, 2
    except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
        print("error: cannot reach the Kubernetes API for API discovery: "
              f"{kubeclient.describe_error(exc)}", file=sys.stderr)
        return None, 3
    return dataclasses.replace(loaded, config=config), 0


async def _serve_until(api: Any, base: LoadedConfig, *, host: str, port: int, dry_run: bool,
                       tokens: dict[str, str], stop: asyncio.Event) -> int:
    """Serve until STOP is set; the exit code."""
    from gatekeeper.service.app import create_service, serving

    loaded, code = await _resolve(api, base)
    if loaded is None:
        return code
    service = create_service(loaded, api, token=None, tokens=tokens, dry_run=dry_run)
    settings = loaded.config.server
    try:
        async with serving(service.app, settings, host=host, port=port,
                           recorder=service.recorder) as listener:
            log.info("gatekeeper serving", url=f"http://{host}:{listener.port}",
                     dry_run=dry_run, pairs=[p.name for p in loaded.config.pairs],
                     max_connections=listener.max_connections)
            await stop.wait()
            log.info("stopping: finishing actions in flight")
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        await service.close()
    return 0
