"""aiohttp application keys shared by the Kubernetes routes and the admin routes."""

from __future__ import annotations

from aiohttp import web

from .emulator import Emulator

EMULATOR = web.AppKey("emulator", Emulator)
