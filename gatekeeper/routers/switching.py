"""Switch every route of a pair, or none: a failure on route k flips routes 0..k-1 back.

Each patch (forward and back) is test-guarded, so neither direction overwrites a concurrent
edit. A patch refused because the route changed is re-read: a route someone else (a person,
Flux, Argo CD) already pointed at the target is done; any other change stops the switch. A
patch that failed without a clear answer (timeout, 5xx) may still have been applied: that
route is re-read and, if it was switched, reverted with the others. The patch that moves a
route also writes the switch record (`gatekeeper.switches`). The routes are re-read
afterwards to verify what users actually get.

Gatekeeper's own TraefikService forms change the same way, all routes or none: a progressive
step (`expose_all`; percent 0 puts the dark back to none), mirroring on (`mirror_all`) and off
(`unmirror_all`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client

from gatekeeper import switches
from gatekeeper.config import PairConfig
from gatekeeper.routers import reading
from gatekeeper.routers.base import (
    ActiveState,
    RouteConflict,
    RouteError,
    RouteRefused,
    RouteSnapshot,
    at,
)
from gatekeeper.routers.traefikservice import Exposure, TraefikServiceRouter

log = structlog.get_logger()

SWITCH_ERRORS = (RouteError, aiohttp.ClientError, TimeoutError, ValueError)


@dataclass(frozen=True)
class SwitchOutcome:
    """What happened to the routes of one switch."""

    source: str
    target: str
    switched: tuple[str, ...] = ()
    """Routes this switch moved to `target`."""
    already: tuple[str, ...] = ()
    """Routes someone else had pointed at `target` (before the switch or during it)."""
    failed: str | None = None
    """The route whose patch failed, and why."""
    conflict: bool = False
    """The failure was a concurrent edit (409/422), not an outage."""
    refused: bool = False
    """A route must not be patched (e.g. Flux owns it); nothing was attempted."""
    reverted: tuple[str, ...] = ()
    revert_failures: tuple[str, ...] = ()
    verified: ActiveState | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)
    unverified: str | None = None
    """Every patch was answered as applied, but the routes could not be re-read after."""

    @property
    def ok(self) -> bool:
        """Every route switched and the re-read agrees."""
        return self.failed is None and not self.problems

    @property
    def changed(self) -> bool:
        """Some route now differs from before (success, or a revert that failed)."""
        return bool(self.switched) and (self.failed is None or bool(self.revert_failures))

    def to_dict(self) -> dict[str, Any]:
        """JSON form for results and state."""
        return {
            "from": self.source,
            "to": self.target,
            "switched": list(self.switched),
            "already": list(self.already),
            "failed": self.failed,
            "conflict": self.conflict,
            "reverted": list(self.reverted),
            "revert_failures": list(self.revert_failures),
            "problems": list(self.problems),
            "unverified": self.unverified,
        }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RouteError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def refusals(api: client.ApiClient, live: ActiveState) -> list[str]:
    """Why some route of the pair must not be patched (empty when all may be)."""
    found = []
    for snapshot in live.snapshots:
        reason = reading.router_for(api, snapshot.ref).refusal(snapshot)
        if reason:
            found.append(reason)
    return found


def _points(snapshot: RouteSnapshot, namespace: str) -> bool:
    return snapshot.view.namespaces == frozenset({namespace})


async def switch_all(api: client.ApiClient, pair: PairConfig, live: ActiveState, *,
                     target: str, source: str | None = None,
                     record: switches.SwitchRecord | None = None) -> SwitchOutcome:
    """Point every route from `source` (default: `live.active`) to `target`, all or none,
    then verify. Routes already at `target` are left as they are: split routes (each at
    `source` or `target`) are finished this way. `record` is written on every moved route."""
    if source is None:
        if not live.consistent or live.active is None:
            raise ValueError(f"routes are not consistent: {live.problem}")
        source = live.active
    stray = [s.view.ref for s in live.snapshots
             if not at(s, source) and not _points(s, target)]
    if stray or source == target:
        raise ValueError(f"routes point neither at {source} nor at {target}: {', '.join(stray)}")
    bound = log.bind(pair=pair.name, source=source, target=target)
    reasons = refusals(api, live)
    if reasons:
        return SwitchOutcome(source, target, failed="; ".join(reasons), refused=True)
    notes = {switches.ANNOTATION: record.to_annotation()} if record is not None else None
    done: list[RouteSnapshot] = []
    already = [s.view.ref for s in live.snapshots if _points(s, target)]
    original = {s.view.ref: s.view.annotations.get(switches.ANNOTATION)
                for s in live.snapshots}
    for snapshot in live.snapshots:
        if _points(snapshot, target):
            continue
        try:
            moved = await _switch_one(api, snapshot, source=source, target=target, notes=notes)
        except SWITCH_ERRORS as exc:
            bound.warning("route switch failed; reverting", route=snapshot.view.ref,
                          error=_reason(exc), switched=[d.view.ref for d in done])
            if not isinstance(exc, RouteConflict | RouteRefused):
                landed = await _landed(api, snapshot, target)
                if landed is not None:
                    done.append(landed)
            reverted, failures = await _revert(api, done, source=source, target=target,
                                               original=original)
            outcome = SwitchOutcome(
                source, target,
                switched=tuple(d.view.ref for d in done),
                already=tuple(already),
                failed=_reason(exc),
                conflict=isinstance(exc, RouteConflict),
                refused=isinstance(exc, RouteRefused),
                reverted=reverted,
                revert_failures=failures,
            )
            return await _verify(api, pair, outcome, expected=source)
        if moved is None:
            already.append(snapshot.view.ref)
            bound.info("route already pointed at the target (someone else switched it)",
                       route=snapshot.view.ref)
            continue
        done.append(moved)
        bound.info("route switched", route=snapshot.view.ref)
    outcome = SwitchOutcome(source, target, switched=tuple(d.view.ref for d in done),
                            already=tuple(already))
    return await _verify(api, pair, outcome, expected=target)


async def _switch_one(api: client.ApiClient, snapshot: RouteSnapshot, *, source: str,
                      target: str, notes: Mapping[str, str | None] | None
                      ) -> RouteSnapshot | None:
    """Move one route; None when someone else pointed it at `target` meanwhile (that route
    is done). RouteConflict when it changed in any other way (a person is at work on it)."""
    try:
        return await reading.router_for(api, snapshot.ref).switch(
            snapshot, source=source, target=target, annotations=notes)
    except RouteConflict:
        fresh = await _reread(api, snapshot)
        if fresh is not None and _points(fresh, target):
            return None
        raise


async def _reread(api: client.ApiClient, snapshot: RouteSnapshot) -> RouteSnapshot | None:
    """The route as it is now, or None when it cannot be read."""
    try:
        return await reading.read_snapshot(api, snapshot.ref)
    except SWITCH_ERRORS as exc:
        log.error("cannot re-read a route after a failed patch", error=_reason(exc),
                  route=snapshot.view.ref)
        return None


async def _landed(api: client.ApiClient, snapshot: RouteSnapshot, target: str
                  ) -> RouteSnapshot | None:
    """The route as it is now if a failed patch did switch it after all, else None (a
    timed-out patch has been fenced by `traefik.patch`: it cannot land later)."""
    current = await _reread(api, snapshot)
    if current is not None and current.view.namespaces == frozenset({target}):
        log.warning("failed route patch had been applied; reverting it too",
                    route=snapshot.view.ref)
        return current
    return None


REVERT_ATTEMPTS = 3
"""Guarded reverts per route: a failed one is retried from a fresh read for as long as the
route still points where this switch sent it (someone may have edited another field)."""


async def _revert(api: client.ApiClient, done: list[RouteSnapshot], *, source: str,
                  target: str, original: dict[str, str | None]
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Flip already-switched routes back, last first, with the same guarded patches (the
    switch record restored to what the route carried before)."""
    reverted, failures = [], []
    for snapshot in reversed(done):
        notes = {switches.ANNOTATION: original.get(snapshot.view.ref)}
        failure = await _revert_one(api, snapshot, source=source, target=target, notes=notes)
        if failure is None:
            reverted.append(snapshot.view.ref)
        else:
            log.error("route revert failed: fix it by hand", route=snapshot.view.ref,
                      error=failure)
            failures.append(failure)
    return tuple(reverted), tuple(failures)


async def _revert_one(api: client.ApiClient, snapshot: RouteSnapshot, *, source: str,
                      target: str, notes: dict[str, str | None]) -> str | None:
    """Point one route back at `source`; None when it does, else why not."""
    router = reading.router_for(api, snapshot.ref)
    current = snapshot
    failure = ""
    for _attempt in range(REVERT_ATTEMPTS):
        try:
            await router.switch(current, source=target, target=source, annotations=notes)
            return None
        except SWITCH_ERRORS as exc:
            failure = _reason(exc)
        fresh = await _reread(api, current)
        if fresh is None:
            return f"{failure}; cannot re-read the route"
        if fresh.view.namespaces == frozenset({source}):
            return None  # back at the source (the failed answer came after the patch)
        if fresh.view.namespaces != frozenset({target}):
            return (f"{failure}; someone else pointed it at {sorted(fresh.view.namespaces)}: "
                    "left as they set it")
        current = fresh
    return failure


async def _verify(api: client.ApiClient, pair: PairConfig, outcome: SwitchOutcome, *,
                  expected: str) -> SwitchOutcome:
    """Re-read the routes; any disagreement with `expected` becomes a problem."""
    problems = list(outcome.problems)
    verified: ActiveState | None = None
    try:
        verified = await reading.read_active(api, pair)
    except SWITCH_ERRORS as exc:
        if outcome.failed is None:
            # Every patch was answered as applied: the switch happened; say it is unchecked.
            return dataclasses.replace(outcome, unverified=(
                f"not verified: cannot re-read the routes: {_reason(exc)}"))
        problems.append(f"cannot re-read the routes to verify: {_reason(exc)}")
    else:
        if verified.active != expected:
            problems.append(
                f"after the switch the routes should point at {expected} but "
                f"{verified.problem or 'point at ' + str(verified.active)}"
            )
    return dataclasses.replace(outcome, verified=verified, problems=tuple(problems))


# -- gatekeeper's own TraefikService forms: progressive splits and mirroring -----------------


@dataclass(frozen=True)
class ShapeOutcome:
    """What one change of every route's form did (a progressive step, mirroring on/off)."""

    changed: tuple[str, ...] = ()
    failed: str | None = None
    reverted: tuple[str, ...] = ()
    revert_failures: tuple[str, ...] = ()
    verified: ActiveState | None = None

    @property
    def ok(self) -> bool:
        """Every route changed (and the re-read agrees, when it was checked)."""
        return self.failed is None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for results and state."""
        return {"changed": list(self.changed), "failed": self.failed,
                "reverted": list(self.reverted), "revert_failures": list(self.revert_failures)}


def _traefikservices(api: client.ApiClient, live: ActiveState
                     ) -> list[tuple[TraefikServiceRouter, RouteSnapshot]]:
    routers = []
    for snapshot in live.snapshots:
        router = reading.router_for(api, snapshot.ref)
        if not isinstance(router, TraefikServiceRouter):
            raise ValueError(f"{snapshot.view.ref} is not a TraefikService: progressive "
                             "exposure and mirroring need gatekeeper-owned TraefikServices")
        routers.append((router, snapshot))
    return routers


async def _shape_all(api: client.ApiClient, pair: PairConfig, live: ActiveState,
                     apply: Callable[[TraefikServiceRouter, RouteSnapshot],
                                     Awaitable[RouteSnapshot]],
                     undo: Callable[[TraefikServiceRouter, RouteSnapshot, RouteSnapshot],
                                    Awaitable[RouteSnapshot]] | None) -> ShapeOutcome:
    """`apply` on every route, all or none: when one fails, `undo(router, before, after)`
    the routes already changed (last first; None: leave them, removal is always safe)."""
    done: list[tuple[TraefikServiceRouter, RouteSnapshot, RouteSnapshot]] = []
    for router, snapshot in _traefikservices(api, live):
        try:
            after = await apply(router, snapshot)
        except SWITCH_ERRORS as exc:
            failure = _reason(exc)
            log.warning("route form change failed", pair=pair.name, route=snapshot.view.ref,
                        error=failure)
            reverted, failures = [], []
            for undo_router, before, changed in reversed(done if undo is not None else []):
                assert undo is not None
                try:
                    await undo(undo_router, before, changed)
                    reverted.append(changed.view.ref)
                except SWITCH_ERRORS as undo_exc:
                    failures.append(f"{changed.view.ref}: {_reason(undo_exc)}")
            return await _verify_shape(api, pair, ShapeOutcome(
                changed=tuple(s.view.ref for _, _, s in done), failed=failure,
                reverted=tuple(reverted), revert_failures=tuple(failures)))
        done.append((router, snapshot, after))
    return await _verify_shape(api, pair, ShapeOutcome(
        changed=tuple(s.view.ref for _, _, s in done)))


async def _verify_shape(api: client.ApiClient, pair: PairConfig,
                        outcome: ShapeOutcome) -> ShapeOutcome:
    try:
        verified = await reading.read_active(api, pair)
    except SWITCH_ERRORS as exc:
        log.warning("cannot re-read the routes after a form change", pair=pair.name,
                    error=_reason(exc))
        return outcome
    return dataclasses.replace(outcome, verified=verified)


async def expose_all(api: client.ApiClient, pair: PairConfig, live: ActiveState, *,
                     dark: str, percent: int, step: int) -> ShapeOutcome:
    """A progressive step on every route (percent 0: the dark back to none, one patch per
    route), all or none: a failure puts the routes already changed back as they were."""
    if not live.consistent or live.active is None or live.active == dark:
        raise ValueError(f"routes are not consistent with {dark} dark: {live.problem}")
    exposure = Exposure(active=live.active, dark=dark, percent=percent, step=step)

    async def apply(router: TraefikServiceRouter, snapshot: RouteSnapshot) -> RouteSnapshot:
        return await router.expose(snapshot, exposure)

    async def undo(router: TraefikServiceRouter, before: RouteSnapshot,
                   after: RouteSnapshot) -> RouteSnapshot:
        previous = before.view.exposure
        back = Exposure(active=exposure.active, dark=dark,
                        percent=int(previous["percent"]) if previous else 0,
                        step=int(previous["step"]) if previous else 0)
        return await router.expose(after, back)

    return await _shape_all(api, pair, live, apply, undo if percent > 0 else None)


async def mirror_all(api: client.ApiClient, pair: PairConfig, live: ActiveState, *,
                     dark: str, percent: int, max_body_size: int,
                     mirror_body: bool) -> ShapeOutcome:
    """Mirroring to `dark` on every route, all or none."""
    if not live.consistent or live.active is None or live.active == dark:
        raise ValueError(f"routes are not consistent with {dark} dark: {live.problem}")

    async def apply(router: TraefikServiceRouter, snapshot: RouteSnapshot) -> RouteSnapshot:
        return await router.install_mirroring(snapshot, dark=dark, percent=percent,
                                              max_body_size=max_body_size,
                                              mirror_body=mirror_body)

    async def undo(router: TraefikServiceRouter, before: RouteSnapshot,
                   after: RouteSnapshot) -> RouteSnapshot:
        return await router.remove_mirroring(after)

    return await _shape_all(api, pair, live, apply, undo)


async def unmirror_all(api: client.ApiClient, pair: PairConfig,
                       live: ActiveState) -> ShapeOutcome:
    """Gatekeeper's mirroring off on every route that has it (idempotent); a route that
    fails is retried from a fresh read by the next call."""

    async def apply(router: TraefikServiceRouter, snapshot: RouteSnapshot) -> RouteSnapshot:
        return await router.remove_mirroring(snapshot)

    return await _shape_all(api, pair, live, apply, None)
