"""The service's injected dependencies, reachable from every request handler."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gatekeeper.service.auth import TokenAuth
from gatekeeper.service.controller import Controller
from gatekeeper.service.dedupe import AlertDeduper
from gatekeeper.service.forwarding import Forwarder
from gatekeeper.service.longpoll import LongPolls

__all__ = ["SERVICES", "Services", "services_of"]


@dataclass(frozen=True)
class Services:
    """Everything a handler may use; built once by `app.build_app`."""

    controller: Controller
    auth: TokenAuth
    deduper: AlertDeduper
    long_polls: LongPolls
    """Flip-checks waiting (`?wait=`) for the next evaluation."""
    max_wait: float = 3600.0
    """Longest `?wait=` a flip-check may hold a connection, in seconds."""
    detail_cache: dict[str, tuple[tuple[object, ...], str]] = field(default_factory=dict)
    """Pair name -> (what the detail body was built from, the encoded body)."""
    forwarder: Forwarder | None = None
    """Sharded replicas: sends a request about another replica's pair to its owner."""


SERVICES = web.AppKey("gatekeeper_services", Services)


def services_of(request: web.Request) -> Services:
    """The application's Services."""
    return request.app[SERVICES]
