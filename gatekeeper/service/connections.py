"""Keep slow and idle clients from starving the webhook: timeouts and a connection limit.

aiohttp alone holds a connection that never completes its first request for ever, and
accepts connections until the process runs out of file descriptors, after which nothing,
not even Alertmanager's webhook, is answered. `Listener` serves the application with:

- a read timeout: a connection must deliver a complete request (headers) within
  `server.read_timeout` of opening; request bodies are read under the same bound by the
  handlers. Between requests aiohttp's own keep-alive timeout applies
  (`server.keepalive_timeout`, which also bounds a slow second request);
- a connection limit, `server.max_connections`, lowered to fit the process's descriptor
  limit (`ulimit -n`) with room for what is open already, one accept burst, and the
  Kubernetes and telemetry clients;
- a priority order when the limit is reached: a new connection (it may be Alertmanager's)
  is always let in by closing, in this order, a connection still waiting for its first
  request, an idle keep-alive connection, or a waiting flip-check long-poll (its client
  polls again). A connection in the middle of any other request (a webhook, an action, a
  probe) is never closed; when every connection is such a request, the newcomer is
  answered 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from gatekeeper.config import ServerConfig
from gatekeeper.metrics import Recorder

__all__ = ["CONNECTIONS", "ConnectionBook", "Listener", "connection_limit",
           "connections_middleware"]

log = structlog.get_logger(__name__)

DESCRIPTORS_KEPT = 64
"""File descriptors left to what opens later: the Kubernetes client's pools, watch streams,
Prometheus, Alertmanager, notifications, logs."""
ACCEPT_BACKLOG = 100
"""The listen backlog, which is also how many connections asyncio accepts in one go, before
the limit can close any: they need descriptors of their own."""
SWEEP_INTERVAL = 0.25
"""Seconds between two checks for connections past their read timeout."""
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 66\r\n\r\n"
            b'{"error": "too many connections, retry in a second", "status": 503}')


@dataclass
class _Connection:
    opened: float
    busy: bool = False
    long_poll: bool = False
    requests: int = 0
    idle_since: float = field(default=0.0)
    closing: bool = False
    """Closed by the listener; aiohttp lists it until its handler task has finished."""


class ConnectionBook:
    """What each open connection is doing, written by the middleware, read by Listener."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._open: dict[Any, _Connection] = {}

    def opened(self, protocol: Any) -> None:
        """A connection was accepted (its protocol object stands for it)."""
        now = self.clock()
        self._open[protocol] = _Connection(opened=now, idle_since=now)

    def get(self, protocol: Any) -> _Connection | None:
        """The connection's record, if it is tracked."""
        return self._open.get(protocol)

    def forget_all_but(self, protocols: list[Any]) -> None:
        """Drop the records of connections that are gone (aiohttp's handlers have slots, so
        no weak references)."""
        keep = set(map(id, protocols))
        for protocol in [p for p in self._open if id(p) not in keep]:
            del self._open[protocol]


CONNECTIONS = web.AppKey("gatekeeper_connections", ConnectionBook)


@web.middleware
async def connections_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Mark the connection busy while its request is handled (and whether it long-polls)."""
    book = request.app.get(CONNECTIONS)
    record = book.get(request.protocol) if book is not None else None
    if book is None or record is None:
        return await handler(request)
    record.busy, record.requests = True, record.requests + 1
    record.long_poll = request.path.endswith("/flip-check") and bool(request.query.get("wait"))
    try:
        return await handler(request)
    finally:
        record.busy = record.long_poll = False
        record.idle_since = book.clock()


def connection_limit(configured: int, *, descriptors: int | None = None,
                     in_use: int | None = None) -> int:
    """`configured`, lowered to what the descriptor limit leaves (at least 8): minus the
    descriptors open now, one accept burst, and `DESCRIPTORS_KEPT`."""
    if descriptors is None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        descriptors = soft if soft != resource.RLIM_INFINITY else 1 << 30
    if in_use is None:
        in_use = _open_descriptors()
    spare = descriptors - in_use - ACCEPT_BACKLOG - DESCRIPTORS_KEPT
    return max(8, min(configured, spare))


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: assume a small process
        return 32


class _Refuse(asyncio.Protocol):
    """Answers 503 and closes: every connection is busy with a request that must finish."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_REFUSAL)
        transport.close()


class Listener:
    """The listening socket of `gatekeeper serve` over an AppRunner that is set up."""

    def __init__(self, runner: web.AppRunner, settings: ServerConfig, *,
                 recorder: Recorder | None = None, descriptors: int | None = None) -> None:
        server = runner.server
        if server is None:
            raise RuntimeError("set the runner up before listening")
        self._server = server
        self.settings = settings
        self.recorder = recorder
        self.max_connections = connection_limit(settings.max_connections,
                                                descriptors=descriptors)
        """The effective limit (the configured one, lowered to fit `ulimit -n`)."""
        book = runner.app.get(CONNECTIONS)
        if book is None:
            raise RuntimeError("the application has no ConnectionBook (use build_app)")
        self.book = book
        self.closed: dict[str, int] = {"read_timeout": 0, "evicted": 0, "refused": 0}
        """Connections closed by this listener, by reason."""
        self._listening: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def open_connections(self) -> int:
        """Connections open now (not counting those being closed)."""
        return len(self._live())

    def _live(self) -> list[tuple[Any, _Connection]]:
        live = []
        for protocol in self._server.connections:
            record = self.book.get(protocol)
            if record is not None and not record.closing:
                live.append((protocol, record))
        return live

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        if self._listening is None or not self._listening.sockets:
            raise RuntimeError("not listening")
        return int(self._listening.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen; OSError when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        self._listening = await loop.create_server(self._accept, host, port,
                                                   backlog=ACCEPT_BACKLOG, reuse_address=True)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="connection sweeper")
        if self.max_connections < self.settings.max_connections:
            log.warning("connection limit lowered to fit the descriptor limit",
                        configured=self.settings.max_connections,
                        effective=self.max_connections)

    async def close(self) -> None:
        """Stop listening (open connections are closed by the runner's cleanup)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._listening is not None:
            self._listening.close()
            await self._listening.wait_closed()

    def _accept(self) -> asyncio.BaseProtocol:
        """Protocol factory: called once the connection is accepted, before any byte."""
        live = self._live()
        while len(live) >= self.max_connections:
            victim = _victim(live)
            if victim is None:
                self._count("refused")
                return _Refuse()
            self._count("evicted")
            self._close(*victim)
            live.remove(victim)
        protocol = self._server()
        self.book.opened(protocol)
        self._gauge(len(live) + 1)
        return protocol

    def sweep(self) -> int:
        """Close connections that have not delivered their first request within the read
        timeout; how many."""
        deadline = self.book.clock() - self.settings.read_timeout
        self.book.forget_all_but(self._server.connections)
        live = self._live()
        late = [(protocol, record) for protocol, record in live
                if not record.busy and record.requests == 0 and record.opened < deadline]
        for protocol, record in late:
            self._count("read_timeout")
            self._close(protocol, record)
        self._gauge(len(live) - len(late))
        return len(late)

    @staticmethod
    def _close(protocol: Any, record: _Connection) -> None:
        record.closing = True
        protocol.force_close()
        transport = protocol.transport  # force_close alone waits for the handler's turn
        if transport is not None:
            transport.close()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.sweep()
            except Exception:  # a bug here must not stop the sweeping
                log.exception("connection sweep failed")

    def _count(self, reason: str) -> None:
        self.closed[reason] += 1
        if self.recorder is not None:
            self.recorder.http_connections_closed.labels(reason).inc()

    def _gauge(self, count: int) -> None:
        if self.recorder is not None:
            self.recorder.http_connections.set(count)


def _victim(live: list[tuple[Any, _Connection]]) -> tuple[Any, _Connection] | None:
    """The connection to close to make room, in the documented order; None if none."""
    waiting, idle, polls = [], [], []
    for protocol, record in live:
        if record.busy:
            if record.long_poll:
                polls.append((record.opened, protocol, record))
        elif record.requests == 0:
            waiting.append((record.opened, protocol, record))
        else:
            idle.append((record.idle_since, protocol, record))
    for group in (waiting, idle, polls):
        if group:
            _at, protocol, record = min(group, key=lambda entry: entry[0])
            return protocol, record
    return None
