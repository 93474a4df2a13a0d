"""What several commands share: loading the configuration and connecting to the cluster,
reporting their problems."""

from __future__ import annotations

import sys

from gatekeeper import kubeclient
from gatekeeper.config import KubernetesConfig, LoadedConfig, load_config
from gatekeeper.yamlfiles import ConfigFileError


def load_config_or_report(path: str) -> LoadedConfig | None:
    """The loaded configuration, or None after printing one line per problem to stderr."""
    try:
        return load_config(path)
    except ConfigFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


async def api_client_or_report(settings: KubernetesConfig) -> kubeclient.TimeoutApiClient | None:
    """A Kubernetes client (the caller closes it), or None after printing why it cannot be
    configured to stderr."""
    try:
        return await kubeclient.create_api_client(settings)
    except Exception as exc:  # noqa: BLE001 - kubeconfig problems come in many types
        print(f"error: cannot configure the Kubernetes client: {exc}", file=sys.stderr)
        return None
