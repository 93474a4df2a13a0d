"""Traefik mirroring for the dark while it validates (driver `mirroring`).

For pairs with `mirroring:` the driver switches the pair's gatekeeper-owned TraefikServices
to Traefik's mirroring form when the drivers start (a Ready dark while validating), so
`percent` % of production requests are copied to the dark (Traefik discards its answers),
and back to the weighted form when they stop: before a flip, on abort, block, shutdown,
loss of leadership. After a crash nothing runs `stop`: the lifecycle asks for `unmirror`
whenever the routes still carry gatekeeper's mirroring outside a validation that wants it
(`lifecycle.Observation.mirrored`), and a restarted leader whose pair still validates
adopts the mirroring (installing it is idempotent) and removes it when its drivers stop.
Progressive steps (`gatekeeper.actions.traffic.expose`) put the weighted form back in
their own patch.
"""

from __future__ import annotations

import time

import structlog
from kubernetes_asyncio import client

from gatekeeper.config import PairConfig
from gatekeeper.drivers.base import DriverTarget, Report, StopReason
from gatekeeper.outcomes import Outcome
from gatekeeper.routers import reading, switching

__all__ = ["MirroringDriver"]

log = structlog.get_logger(__name__)


class MirroringDriver:
    """Mirror production requests to the dark while it validates (off unless configured)."""

    name = "mirroring"

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def applies(self, pair: PairConfig) -> bool:
        """Only pairs that configure mirroring (with the acknowledgement it requires)."""
        return pair.mirroring is not None

    async def run(self, target: DriverTarget, report: Report) -> None:
        """Install the mirroring on every route (all or none), report it, and return: the
        routes hold it until `stop`. A failure raises, so the runner retries with backoff."""
        pair, config = target.pair, target.pair.mirroring
        assert config is not None
        what = (f"{config.percent} % of the requests to {target.active} copied to "
                f"{target.dark} (maxBodySize {config.max_body_size} bytes)")
        if target.dry_run:
            report(Outcome("pending", f"dry run: would mirror {what}", at=time.time()))
            return
        live = await reading.read_active(self.api, pair)
        if live.active != target.active:
            raise RuntimeError(f"the routes point at {live.active or live.problem}, not "
                               f"{target.active}: not mirroring")
        if live.exposed:
            report(Outcome("pending", f"a progressive step sends {live.exposed} % to "
                                      f"{target.dark}: not mirroring", at=time.time()))
            return
        outcome = await switching.mirror_all(
            self.api, pair, live, dark=target.dark, percent=config.percent,
            max_body_size=config.max_body_size, mirror_body=config.mirror_body)
        if not outcome.ok:
            raise RuntimeError(f"mirroring not installed: {outcome.failed}")
        log.info("mirroring installed", pair=pair.name, dark=target.dark,
                 percent=config.percent, routes=list(outcome.changed))
        report(Outcome("pass", f"mirroring {what}", value=float(config.percent),
                       at=time.time(), details={"routes": list(outcome.changed)}))

    async def stop(self, target: DriverTarget, why: StopReason) -> None:
        """Back to the weighted form on every route that still mirrors (idempotent); raises
        when a route could not be changed (the lifecycle's `unmirror` retries later)."""
        if target.dry_run:
            return
        live = await reading.read_active(self.api, target.pair)
        if not live.mirrored:
            return
        outcome = await switching.unmirror_all(self.api, target.pair, live)
        log.info("mirroring removed", pair=target.pair.name, why=why,
                 routes=list(outcome.changed), failed=outcome.failed)
        if not outcome.ok:
            raise RuntimeError(f"mirroring not removed: {outcome.failed}")
