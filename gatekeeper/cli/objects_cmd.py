"""`gatekeeper crd`: print the BlueGreenPair CustomResourceDefinition (generated from the
pair models; the chart ships the same file in helm/gatekeeper/crds/).

`gatekeeper migrate-to-objects`: the configuration's pairs and their records in the old
state ConfigMap become BlueGreenPair objects whose status holds each record (phase,
lifecycle, history kept); docs/pair-objects.md says when to run it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gatekeeper import crd, kubeclient
from gatekeeper.cli import common
from gatekeeper.errors import API_ERRORS

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_CLUSTER = 0, 1, 2, 3


def register(subcommands: Any) -> None:
    """Add `crd` and `migrate-to-objects`."""
    command = subcommands.add_parser(
        "crd", help="print the BlueGreenPair CustomResourceDefinition (kubectl apply -f -)")
    command.set_defaults(handler=crd_command)
    migrate = subcommands.add_parser(
        "migrate-to-objects",
        help="turn the configuration's pairs and their state ConfigMap records into "
             "BlueGreenPair objects (phase and history kept)")
    migrate.add_argument("--config", required=True, help="gatekeeper's configuration file")
    migrate.add_argument("--namespace", required=True,
                         help="where the BlueGreenPair objects are created")
    migrate.add_argument("--overwrite", action="store_true",
                         help="replace a record already in an object's status with the "
                              "ConfigMap's")
    migrate.add_argument("--dry-run", action="store_true", help="only say what would happen")
    migrate.add_argument("--kubeconfig", help="kubeconfig file (default: the configuration's)")
    migrate.add_argument("--context", help="kubeconfig context")
    migrate.set_defaults(handler=migrate_command)


def crd_command(_args: argparse.Namespace) -> int:
    """Write the CRD manifest to stdout."""
    sys.stdout.write(crd.manifest_text())
    return EXIT_OK


def migrate_command(args: argparse.Namespace) -> int:
    """One line per pair: created / exists / conflict / skipped; exit 1 unless every pair
    made it."""
    from gatekeeper.cli.cluster_cmds import UsageError, _load

    try:
        config = _load(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.pairs:
        print("error: the configuration lists no pairs: nothing to migrate", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_migrate(config, args))


async def _migrate(config: Any, args: argparse.Namespace) -> int:
    from gatekeeper import pairobjects
    from gatekeeper.state import StateError, StateStore

    api = await common.api_client_or_report(config.kubernetes)
    if api is None:
        return EXIT_USAGE
    try:
        store = StateStore(api, config.state)
        done = await pairobjects.migrate(api, config, store, args.namespace,
                                         overwrite=args.overwrite, dry_run=args.dry_run)
    except (StateError, *API_ERRORS) as exc:
        detail = kubeclient.describe_error(exc) if not isinstance(exc, StateError) else exc
        print(f"error: migrating to BlueGreenPair objects in {args.namespace}: {detail} "
              "(is the CRD installed? `gatekeeper crd | kubectl apply -f -`)", file=sys.stderr)
        return EXIT_CLUSTER
    finally:
        await api.close()
    for item in done:
        print(f"{item.pair}: {item.outcome}" + (f" ({item.note})" if item.note else ""))
    if any(item.outcome in ("conflict", "skipped") for item in done):
        return EXIT_INCOMPLETE
    if not args.dry_run:
        print(f"next: remove these pairs from {args.config} (`pairs:`) and restart gatekeeper; "
              "it then reads them from the objects (the ConfigMap stays as a backup)")
    return EXIT_OK
