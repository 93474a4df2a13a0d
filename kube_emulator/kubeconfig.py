"""A kubeconfig pointing at the emulator, so unmodified clients can connect with
`load_kube_config(config_file=...)` exactly as they would to a real cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONTEXT = "kube-emulator"
DUMMY_TOKEN = "kube-emulator-token"


def kubeconfig(url: str, *, namespace: str = "default") -> dict[str, Any]:
    """The kubeconfig document for a server at `url` (insecure, dummy bearer token)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": url, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": CONTEXT, "user": {"token": DUMMY_TOKEN}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT,
                                                   "namespace": namespace}}],
        "current-context": CONTEXT,
    }


def write_kubeconfig(url: str, path: str | Path, *, namespace: str = "default") -> Path:
    """Write the kubeconfig (mode 0600, like kubectl does) and return its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kubeconfig(url, namespace=namespace), sort_keys=False))
    target.chmod(0o600)
    return target
