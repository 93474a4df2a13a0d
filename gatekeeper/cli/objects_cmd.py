"""`gatekeeper crd`: print the BlueGreenPair CustomResourceDefinition (generated from the
pair models; the chart ships the same file in helm/gatekeeper/crds/)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gatekeeper import crd


def register(subcommands: Any) -> None:
    """Add `crd`."""
    command = subcommands.add_parser(
        "crd", help="print the BlueGreenPair CustomResourceDefinition (kubectl apply -f -)")
    command.set_defaults(handler=crd_command)


def crd_command(_args: argparse.Namespace) -> int:
    """Write the CRD manifest to stdout."""
    sys.stdout.write(crd.manifest_text())
    return 0
