"""The aiohttp session an HTTP source calls through: made on first use, closed if made here."""

from __future__ import annotations

import aiohttp

__all__ = ["LazySession"]


class LazySession:
    """A caller's session, or one created at the first call (an aiohttp session belongs to
    the running event loop, so not at construction) and closed by `close`."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned = session is None

    def __call__(self) -> aiohttp.ClientSession:
        """The session to call through."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the session if it was created here (a caller's is the caller's to close)."""
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None
