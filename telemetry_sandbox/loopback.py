"""Loopback-only networking guards: the sandbox must never listen on or talk to the outside."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

LOOPBACK_HOST = "127.0.0.1"
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


class LoopbackAddress:
    """`address` and `url` of a stand-in that serves on `host` at `port` (after it starts)."""

    host: str

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, e.g. as a scrape target (after start)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40125 (after start)."""
        return f"http://{self.address}"


def free_port(host: str = LOOPBACK_HOST) -> int:
    """Ask the kernel for a currently free TCP port on the loopback interface.

    There is a small window between closing the probe socket and the caller binding it;
    `ManagedProcess` retries with a new port when a child reports the address is taken.
    """
    require_loopback_host(host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    host = host.strip("[]")
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def require_loopback_host(host: str) -> str:
    """Return `host` unchanged, or raise ValueError when it is not a loopback address."""
    if not is_loopback_host(host):
        raise ValueError(f"telemetry_sandbox only uses loopback addresses, got {host!r}")
    return host


def require_loopback_target(target: str) -> str:
    """Validate a `host:port` scrape/alerting target and return it unchanged."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"target must look like 127.0.0.1:PORT, got {target!r}")
    require_loopback_host(host)
    return target


def require_loopback_url(url: str) -> str:
    """Validate an http(s) URL pointing at a loopback host and return it unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http URL on a loopback host, got {url!r}")
    require_loopback_host(parts.hostname)
    return url
