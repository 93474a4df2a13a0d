"""One way to reach the Kubernetes API: an `ApiClient` built from `KubernetesConfig`.

Every Kubernetes-facing module takes the client this builds. Calls get the configured request
timeout unless they pass their own `_request_timeout` (a watch must pass a longer one), so no
call can hang an evaluation. Reads (GET, not watches) that meet a transient failure (429, 5xx,
a timeout, no connection) are retried after a jittered exponential backoff; writes decide
for themselves (`transient`, `retry_delay`), because a write may have been applied before
its error answer. `read_json` returns raw JSON (camelCase, as in the Kubernetes
docs) without the generated models, which are slow to build for large lists.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import email.utils
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

from gatekeeper import errors, tasks
from gatekeeper.config import KubernetesConfig

__all__ = [
    "ATTEMPTS",
    "ApiException",
    "TimeoutApiClient",
    "connect",
    "create_api_client",
    "describe_error",
    "http_date",
    "in_cluster_available",
    "own_pool",
    "read_json",
    "read_json_dated",
    "retry_delay",
    "transient",
]

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
log = structlog.get_logger()
ATTEMPTS = 4
"""Tries per call (the first and three retries) before a transient failure is reported."""
RETRY_BACKOFF = tasks.Backoff(initial=0.1, maximum=2.0, jitter=0.5)
"""0.1 s, 0.2 s, 0.4 s ... at most 2 s, each up to half shorter at random."""
MAX_RETRY_AFTER = 2.0
"""Seconds: a server's Retry-After is honoured up to this."""


def transient(exc: BaseException) -> bool:
    """A failure worth retrying: throttled, a server-side error, a timeout, no connection."""
    if isinstance(exc, ApiException):
        return isinstance(errors.api_error(exc), errors.APIUnavailableError)
    return isinstance(exc, aiohttp.ClientError | TimeoutError)


def retry_delay(attempt: int, headers: Mapping[str, str] | None = None) -> float:
    """Seconds to wait after `attempt` failed tries: the backoff, or Retry-After if longer."""
    delay = RETRY_BACKOFF.delay(attempt)
    try:
        asked = float((headers or {}).get("Retry-After", ""))
    except (TypeError, ValueError):
        return delay
    return max(delay, min(asked, MAX_RETRY_AFTER))


def _is_watch(query_params: Any) -> bool:
    return any(key == "watch" and value for key, value in query_params or ())


class TimeoutApiClient(client.ApiClient):
    """An ApiClient whose calls default to a total timeout instead of waiting forever, and
    whose reads are retried on transient failures."""

    def __init__(self, configuration: client.Configuration, *, request_timeout: float) -> None:
        super().__init__(configuration)
        self.request_timeout = request_timeout

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Fill in `_request_timeout` when the caller gave none (the generated code passes None);
        retry a GET that failed transiently (a watch has its own reconnect loop)."""
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.request_timeout
        if method != "GET" or _is_watch(kwargs.get("query_params")):
            return await super().request(method, url, *args, **kwargs)
        attempt = 0
        while True:
            attempt += 1
            headers = None
            try:
                response = await super().request(method, url, *args, **kwargs)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= ATTEMPTS or not transient(exc):
                    raise
                headers = getattr(exc, "headers", None)
                failure = f"HTTP {exc.status}" if isinstance(exc, ApiException) \
                    else type(exc).__name__
            else:
                status = getattr(response, "status", 200)
                if attempt >= ATTEMPTS or status not in errors.APIUnavailableError.statuses:
                    return response
                # An unread response (`_preload_content=False`): free it, then retry.
                headers = getattr(response, "headers", None)
                response.release()
                failure = f"HTTP {status}"
            delay = retry_delay(attempt, headers)
            log.debug("kubernetes read failed; retrying", url=url, failure=failure,
                      attempt=attempt, delay=round(delay, 3))
            await asyncio.sleep(delay)


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


def own_pool(api: client.ApiClient, *, connections: int) -> client.ApiClient:
    """A client like `api` (same server, credentials, timeouts and retries) on a connection
    pool of its own of at most `connections`; the caller closes it.

    One pool queues its calls first come, first served: a control-loop tick over hundreds of
    pairs queues thousands of reads, and watch streams hold their connections for minutes.
    Giving actions, the Lease and the streams pools of their own keeps each from waiting
    behind the others.
    """
    configuration = copy.deepcopy(api.configuration)
    configuration.connection_pool_maxsize = max(connections, 1)
    if isinstance(api, TimeoutApiClient):
        return TimeoutApiClient(configuration, request_timeout=api.request_timeout)
    return client.ApiClient(configuration)


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

    Raises a `gatekeeper.errors.APIError` (an `ApiException` with `status`, `reason` and
    `body`) for non-2xx answers: `APINotFoundError`, `APIConflictError`, ...
    """
    body, _date = await read_json_dated(call, *args, **kwargs)
    return body


async def read_json_dated(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
                          ) -> tuple[Any, float | None]:
    """`read_json`, plus the API server's clock: its `Date` header as Unix seconds (None
    when missing or unreadable). Compare the objects' timestamps with that, not with our
    own clock, which may be skewed from the cluster's."""
    response = await call(*args, _preload_content=False, **kwargs)
    async with response:
        body = await response.read()
        if not errors.succeeded(response.status):
            raise errors.from_response(response.status, response.reason, body, response.headers)
        date = response.headers.get("Date")
    return json.loads(body), http_date(date)


def http_date(text: str | None) -> float | None:
    """An HTTP `Date` header as Unix seconds; None when missing or unreadable."""
    if not text:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC by RFC 5322, not local time
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


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
