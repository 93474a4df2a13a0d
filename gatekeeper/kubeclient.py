"""One way to reach the Kubernetes API: an `ApiClient` built from `KubernetesConfig`.

Every Kubernetes-facing module takes the client this builds. Calls get the configured request
timeout unless they pass their own `_request_timeout` (a watch must pass a longer one), so no
call can hang an evaluation. `read_json` returns raw JSON (camelCase, as in the Kubernetes
docs) without the generated models, which are slow to build for large lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from gatekeeper.config import KubernetesConfig

__all__ = [
    "API_ERRORS",
    "ApiException",
    "TimeoutApiClient",
    "connect",
    "create_api_client",
    "describe_error",
    "in_cluster_available",
    "read_json",
]

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
log = structlog.get_logger()
API_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError, ValueError)
"""What a failed API call raises: HTTP errors, connection errors, timeouts, bad JSON."""


class TimeoutApiClient(client.ApiClient):
    """An ApiClient whose calls default to a total timeout instead of waiting forever."""

    def __init__(self, configuration: client.Configuration, *, request_timeout: float) -> None:
        super().__init__(configuration)
        self.request_timeout = request_timeout

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Fill in `_request_timeout` when the caller gave none (the generated code passes None)."""
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.request_timeout
        return super().request(method, url, *args, **kwargs)


def in_cluster_available(
    environ: Mapping[str, str] | None = None, token_file: Path = SERVICE_ACCOUNT_TOKEN
) -> bool:
    """True inside a pod: the service host variable is set and the token is mounted."""
    env = os.environ if environ is None else environ
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and token_file.is_file()


async def create_api_client(settings: KubernetesConfig) -> TimeoutApiClient:
    """Build a client for long-lived owners; they must `await client.close()`.

    `auto` uses the pod's service account when present, else the kubeconfig (the given
    path, else $KUBECONFIG, else ~/.kube/config). The kubeconfig is read once here and is
    never written back (no token caching into the user's file).
    """
    configuration = client.Configuration()
    mode = settings.mode
    if mode == "auto":
        mode = "in_cluster" if in_cluster_available() else "kubeconfig"
    if mode == "in_cluster":
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        loader = await config.load_kube_config(
            config_file=settings.kubeconfig,
            context=settings.context,
            client_configuration=configuration,
            persist_config=False,
        )
        if hasattr(loader, "exec_plugin_expiry"):
            # Exec plugins (EKS, AKS, GKE) hand out short-lived tokens: refresh before expiry.
            async def refresh(conf: client.Configuration) -> None:
                await loader.load_from_exec_plugin()
                conf.api_key["BearerToken"] = loader.token

            configuration.refresh_api_key_hook = refresh
    log.info("kubernetes client ready", mode=mode, host=configuration.host,
             context=settings.context)
    return TimeoutApiClient(configuration, request_timeout=settings.request_timeout)


@asynccontextmanager
async def connect(settings: KubernetesConfig) -> AsyncIterator[TimeoutApiClient]:
    """`async with kubeclient.connect(settings) as api:` for a client closed on exit."""
    api = await create_api_client(settings)
    try:
        yield api
    finally:
        await api.close()


async def read_json(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Call a generated API method and return its body as raw JSON.

    Raises `ApiException` (with `status`, `reason` and `body`) for non-2xx answers, like the
    generated methods do, so callers handle one exception family.
    """
    response = await call(*args, _preload_content=False, **kwargs)
    async with response:
        body = await response.read()
        if not 200 <= response.status < 300:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = body.decode("utf-8", errors="replace")
            raise error
    return json.loads(body)


def describe_error(exc: BaseException, timeout: float | None = None) -> str:
    """A short, secret-free reason for a failed Kubernetes API call."""
    if isinstance(exc, ApiException):
        text = f"HTTP {exc.status} {exc.reason or ''}".strip()
        try:
            detail = json.loads(exc.body or "{}").get("message")
        except (ValueError, AttributeError):
            detail = None
        return f"{text}: {str(detail)[:200]}" if detail else text
    if isinstance(exc, TimeoutError):
        return "no answer from the API server" + (f" within {timeout:g}s" if timeout else "")
    if isinstance(exc, aiohttp.ClientError):
        return f"cannot reach the API server: {exc or type(exc).__name__}"
    return f"bad answer from the API server: {exc!r}"
