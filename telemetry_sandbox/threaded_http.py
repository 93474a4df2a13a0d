"""The sandbox's small HTTP stand-ins (synthetic fleet, stack exporter, Loki stand-in) served
from a daemon thread: one start/stop, one quiet handler, one place that knows a hang-up.

A subclass calls `_init_http(host, port)` in its `__init__` and implements `_handler()`;
`start()`/`stop()` and the context manager come from here. Loopback only.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from telemetry_sandbox.loopback import LoopbackAddress, require_loopback_host


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no per-request stderr line, `send_body` for a whole answer."""

    protocol_version = "HTTP/1.1"

    def send_body(self, status: int, content_type: str, body: bytes) -> None:
        """Answer `status` with `body` (Content-Length set)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request stderr lines (Prometheus scrapes every second)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer (a scrape that timed out on a loaded machine) is
        not the stand-in's fault: no traceback for it. Anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ThreadedHTTPService(LoopbackAddress):
    """Base for a stand-in served over HTTP from a daemon thread on a loopback port."""

    host: str
    _requested_port: int
    _server: ThreadingHTTPServer | None
    _http_thread: threading.Thread | None

    def _init_http(self, host: str, port: int) -> None:
        self.host = require_loopback_host(host)
        self._requested_port = port
        self._server = None
        self._http_thread = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class, bound to this stand-in."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (after start())."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    def start(self) -> Self:
        """Bind the port and serve from a daemon thread (again: a no-op)."""
        if self._server is None:
            self._server = _Server((self.host, self._requested_port), self._handler())
            self._http_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                name=f"{type(self).__name__}-http", daemon=True)
            self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (bounded join)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
