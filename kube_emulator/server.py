"""Run the emulator over HTTP on a loopback port: in-process (`running`) or until a
signal arrives (`serve_until_signal`, used by the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from .app import create_app
from .emulator import Emulator
from .loader import Manifests


def ensure_loopback(host: str) -> None:
    """The emulator accepts any token and has no TLS: refuse to listen beyond loopback."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"refusing to listen on non-loopback address {host!r}")


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EmulatorServer:
    """An HTTP listener for one Emulator."""

    def __init__(self, emulator: Emulator, *, host: str = "127.0.0.1", port: int = 0) -> None:
        ensure_loopback(host)
        self.emulator = emulator
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:38123` (after `start`)."""
        if self.emulator.url is None:
            raise RuntimeError("server not started")
        return self.emulator.url

    async def start(self) -> str:
        """Bind and serve; returns the URL (the port is picked by the OS when 0)."""
        runner = web.AppRunner(create_app(self.emulator), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self.emulator.url = _url(self.host, self.port)
        return self.emulator.url

    async def stop(self) -> None:
        """End watches and timers, then close the listener."""
        self.emulator.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def running(
    objects: Manifests | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> AsyncIterator[Emulator]:
    """Serve an Emulator for the duration of the block, e.g.

    `async with running(objects="seed.yaml", ready_delay=0.0) as emu: ... emu.url ...`

    `options` go to `Emulator(...)` (ready_delay, ready_on_load, bookmark_interval, seed...).
    """
    emulator = Emulator(**options)
    server = EmulatorServer(emulator, host=host, port=port)
    await server.start()
    try:
        if objects is not None:
            emulator.load(objects)
        yield emulator
    finally:
        await server.stop()


async def serve_until_signal(
    emulator: Emulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (the standalone process)."""
    server = EmulatorServer(emulator, host=host, port=port)
    url = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_started is not None:
            on_started(url)
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
