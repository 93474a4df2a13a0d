"""A request about a pair another replica acts on is sent on to that replica (its owner).

A Kubernetes Service spreads calls over the replicas, but only one acts on a pair: the
holder of its shard when sharded (who alone evaluates it, too), else the one leader. So a
POST (approve, flip, rollback, scale-down), the flip-check, or the part of an Alertmanager
notification that concerns another replica's pairs is forwarded to the owner's address
(`gatekeeper.io/address` on its member Lease, or on the leader's Lease), and so is a pair
read when sharded (a leader's followers evaluate every pair and answer reads themselves);
with the caller's Authorization header (the owner checks it again) and
`X-Gatekeeper-Forwarded-By`. The owner's answer is returned as it is, with
`X-Gatekeeper-Served-By` naming who acted.

A forwarded request is never forwarded again (no loops while a shard moves). While a shard
moves (no live holder for a moment) the request waits up to one lease duration for the new
owner; only then does it answer 503, with the reason and Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from gatekeeper.leadership import Owner
from gatekeeper.service import responses
from gatekeeper.service.controller import Controller

__all__ = ["FORWARDED_BY", "SERVED_BY", "Forwarder"]

log = structlog.get_logger(__name__)

FORWARDED_BY = "X-Gatekeeper-Forwarded-By"
SERVED_BY = "X-Gatekeeper-Served-By"
_PASSED = ("Authorization", "Content-Type", "Accept")
_POLL = 0.05


class OwnerUnreachable(Exception):
    """The owner's address refused the connection: the request was not delivered."""


class Forwarder:
    """Finds a pair's owner and relays a request to it (one HTTP client per service)."""

    def __init__(self, controller: Controller, *, timeout: float) -> None:
        self.controller = controller
        self.timeout = timeout
        self.identity = str(getattr(controller.leadership, "identity", "") or "")
        self._session: aiohttp.ClientSession | None = None

    @property
    def active(self) -> bool:
        """Whether requests that act are forwarded: sharded replicas, and one leader's
        followers (not with leader election off, nor in dry-run: every replica decides)."""
        return bool(self.controller.leadership.forwards) and not self.controller.dry_run

    @property
    def forwards_reads(self) -> bool:
        """Pair reads too: only sharded replicas (a leader's followers evaluate every pair)."""
        return self.active and bool(self.controller.leadership.sharded)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), auto_decompress=False)
        return self._session

    async def owner(self, name: str) -> Owner | None:
        """The pair's owner when another replica owns it; None when this one acts on it.

        While the shard has no live holder, waits (up to a lease duration and two retries)
        for one; 503 with the reason if none appears.
        """
        leadership = self.controller.leadership
        settings = self.controller.config.leader_election
        deadline = time.monotonic() + settings.lease_duration + 2 * settings.retry_period
        while True:
            if self.controller.acts_on(name):
                return None
            found: Owner | None = leadership.owner_of(name)
            if found is not None and found.identity != self.identity:
                if found.address:
                    return found
                who = "the owner of its shard" if leadership.sharded else "the leader"
                raise responses.http_error(
                    503, f"pair {name!r}: {who} ({found.identity}) announces no address to "
                         "forward to (set sharding.address or POD_IP); send the request to "
                         "it directly", retry_after=2)
            if time.monotonic() >= deadline:
                if found is None:
                    why = f"no replica acts on pair {name!r} right now"
                else:
                    why = (f"this replica acts on pair {name!r} but could not renew its "
                           "Lease in time")
                raise responses.http_error(503, f"{why}; retry shortly", retry_after=2)
            await asyncio.sleep(_POLL)

    async def relay(self, request: web.Request, owner: Owner, body: bytes | None = None,
                    *, extra_timeout: float = 0.0, unreachable: bool = False
                    ) -> web.Response:
        """Send the request to the owner and return its answer (503 when it fails). With
        `unreachable`, OwnerUnreachable when the connection could not even be made (the
        request was never delivered, so asking the next owner is safe)."""
        headers = {key: request.headers[key] for key in _PASSED if key in request.headers}
        headers[FORWARDED_BY] = self.identity or "gatekeeper"
        url = f"{owner.address}{request.path_qs}"
        try:
            async with self._client().request(
                    request.method, url, data=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout + extra_timeout)
            ) as answer:
                payload = await answer.read()
                out = web.Response(body=payload, status=answer.status,
                                   content_type=answer.content_type)
                for key in ("Retry-After", SERVED_BY):
                    if key in answer.headers:
                        out.headers[key] = answer.headers[key]
                out.headers.setdefault(SERVED_BY, owner.identity)
        except aiohttp.ClientConnectorError as exc:
            if unreachable:
                log.info("the owner is unreachable; waiting for its shard to move",
                         owner=owner.identity, path=request.path)
                raise OwnerUnreachable(owner.identity) from exc
            log.warning("forwarding to the owner failed", owner=owner.identity,
                        path=request.path, error=repr(exc)[:200])
            raise responses.http_error(
                503, f"the owner of this pair ({owner.identity}) cannot be reached; retry "
                     "shortly", retry_after=2) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("forwarding to the owner failed", owner=owner.identity,
                        path=request.path, error=repr(exc)[:200])
            raise responses.http_error(
                503, f"the owner of this pair ({owner.identity}) did not answer: "
                     f"{type(exc).__name__}; retry shortly", retry_after=2) from exc
        log.info("forwarded to the owner", owner=owner.identity, path=request.path,
                 status=out.status)
        return out

    async def forward_if_elsewhere(self, request: web.Request, name: str,
                                   body: bytes | None = None, *, extra_timeout: float = 0.0,
                                   read: bool = False) -> web.Response | None:
        """The owner's answer when another replica owns the pair; None to answer here.
        A `read` (the pair's detail) is forwarded only by sharded replicas.

        A request that was already forwarded is answered here whatever happens (the
        controller then refuses with the owner named, 503 and Retry-After)."""
        if not (self.forwards_reads if read else self.active) \
                or FORWARDED_BY in request.headers:
            return None
        settings = self.controller.config.leader_election
        deadline = time.monotonic() + 2 * (settings.lease_duration + settings.retry_period)
        while True:
            owner = await self.owner(name)
            if owner is None:
                return None
            try:
                return await self.relay(request, owner, body, extra_timeout=extra_timeout,
                                        unreachable=time.monotonic() < deadline)
            except OwnerUnreachable:
                # Never reached it (connection refused: it died): its shard is taken over
                # within a lease duration, by this replica or another; ask again.
                await asyncio.sleep(settings.retry_period)

    async def gather_lists(self, request: web.Request, own: list[dict[str, Any]]
                           ) -> list[dict[str, Any]]:
        """`GET /api/v1/pairs` over the ring: this replica's pairs and every other live
        member's own (asked at once); a pair nobody answered for is listed with why."""
        members = {identity: address for identity, address in
                   getattr(self.controller.leadership, "members", {}).items()
                   if identity != self.identity and address}
        headers = {key: request.headers[key] for key in _PASSED if key in request.headers}
        headers[FORWARDED_BY] = self.identity or "gatekeeper"

        async def ask(address: str) -> list[dict[str, Any]]:
            try:
                async with self._client().get(
                        f"{address}/api/v1/pairs", headers=headers,
                        timeout=aiohttp.ClientTimeout(total=self.timeout)) as answer:
                    data = await answer.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.warning("a replica did not list its pairs", address=address,
                            error=repr(exc)[:200])
                return []
            pairs = data.get("pairs") if isinstance(data, dict) else None
            return [p for p in pairs or [] if isinstance(p, dict)]

        found = {str(p.get("pair")): p for p in own}
        for listed in await asyncio.gather(*(ask(a) for a in members.values())):
            for summary in listed:
                found.setdefault(str(summary.get("pair")), summary)
        out: list[dict[str, Any]] = []
        for pair in self.controller.config.pairs:
            if pair.name in found:
                out.append(found[pair.name])
            else:
                owner = self.controller.leadership.owner_of(pair.name)
                out.append({"pair": pair.name, "phase": None, "verdict": "unknown",
                            "owner": owner.identity if owner else None,
                            "reason": "its owner did not answer (its shard may be moving)"})
        return out

    async def post_elsewhere(self, address: str, path: str, body: bytes,
                             headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST a body to another replica (the webhook's share of a notification)."""
        sent = {key: value for key, value in headers.items() if key in _PASSED}
        sent[FORWARDED_BY] = self.identity or "gatekeeper"
        async with self._client().post(f"{address}{path}", data=body, headers=sent,
                                       timeout=aiohttp.ClientTimeout(total=self.timeout)
                                       ) as answer:
            data = await answer.json(content_type=None)
            return answer.status, data if isinstance(data, dict) else {}
