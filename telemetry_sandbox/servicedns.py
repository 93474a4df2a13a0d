"""ServiceDNS: cluster DNS and kube-proxy for loopback stand-ins of Kubernetes Services.

A stand-in, unavoidable without a cluster: gatekeeper's synthetic load goes to a dark
namespace's Service by its cluster name (`http://api-service.<namespace>.svc:8080`), and
configuration validation refuses anything else. Handed to aiohttp as its resolver, this maps
such a name and port to the loopback address where a `SyntheticApp` for that namespace
listens, as cluster DNS (the name) and kube-proxy (the Service port) would. A name it does
not know fails to resolve, like a Service that does not exist. Only loopback addresses.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from telemetry_sandbox.loopback import LOOPBACK_HOST

__all__ = ["ServiceDNS"]

_SUFFIXES = ("", ".svc", ".svc.cluster.local")


class ServiceDNS(AbstractResolver):
    """Resolves `<service>.<namespace>[.svc[.cluster.local]]:<port>` to a loopback port."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, int], int] = {}
        self.lookups = 0
        """Names resolved so far (a test can see that the load went through here)."""

    def add(self, service: str, namespace: str, port: int, loopback_port: int) -> None:
        """`service` in `namespace` on `port` answers at 127.0.0.1:`loopback_port`."""
        for suffix in _SUFFIXES:
            self._routes[(f"{service}.{namespace}{suffix}", port)] = loopback_port

    def remove(self, namespace: str) -> None:
        """Forget every Service of `namespace`."""
        for key in [key for key in self._routes if key[0].split(".")[1] == namespace]:
            del self._routes[key]

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """The loopback address for a known Service name and port; OSError otherwise."""
        target = self._routes.get((host.lower().rstrip("."), port))
        if target is None:
            raise OSError(f"no Service {host}:{port} (ServiceDNS knows "
                          f"{len(self._routes) // len(_SUFFIXES)})")
        self.lookups += 1
        return [{"hostname": host, "host": LOOPBACK_HOST, "port": target,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        """Nothing to release."""
