"""What the controller saw on one tick (Observation), and how old a verdict may be."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from gatekeeper.lifecycle.records import Health, VerdictName


def fingerprint(images: Iterable[str]) -> str:
    """A short, order-independent identity of a namespace's images ('' when it has none)."""
    unique = sorted(set(images))
    if not unique:
        return ""
    return hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Observation:
    """What the controller saw on one tick: live routes, live Deployments, the cached verdict.

    `active` is None when the routes disagree or cannot be read (`route_problem` says why).
    `verdict` is the judge's verdict on the dark namespace; `active_health` is the key gates
    on the active namespace (`fail` when one fails, `pass` when all pass, else `unknown`).
    """

    active: str | None
    dark: str | None
    route_problem: str = ""
    active_images: tuple[str, ...] = ()
    dark_images: tuple[str, ...] = ()
    dark_replicas: int | None = 0
    """Desired replicas summed over the dark's Deployments; None when unreadable."""
    dark_ready: bool = False
    dark_problem: str = ""
    dark_short: tuple[str, ...] = ()
    """Deployments of the dark below their production count (configuration, else the
    active's), e.g. `api 1/2`: validating scales them up first, so the release is validated
    at the size that will take traffic."""
    verdict: VerdictName = "unknown"
    reasons: tuple[str, ...] = ()
    active_health: Health = "unknown"
    active_reasons: tuple[str, ...] = ()
    window: float = 0.0
    """How far back the judged data reaches (the longest rule window), in seconds. A pass
    counts only once the dark has been ready that long: until then the window still holds
    the previous release's samples from the same namespace."""
    switch_kind: str = ""
    """The routes' own record of the switch that sent traffic to `active` (`flip` or
    `rollback`, written by the patch that moved them; '' when none): with `switched_from`
    and `switched_at`, what a lost or unreadable state is rebuilt from."""
    switched_from: str | None = None
    switched_at: float | None = None
    verdict_at: float | None = None
    """When the verdict was reached (the lifecycle's clock); None: no bound applies."""
    verdict_max_age: float | None = None
    """Seconds after `verdict_at` the verdict is `unknown` (the evaluation is late)."""
    exposed: int = 0
    """Percent of users gatekeeper's progressive split sends to the dark (0: none)."""
    exposure_step: int = 0
    """The progressive step the routes carry (1-based; 0: none)."""
    mirrored: bool = False
    """Some route is in gatekeeper's mirroring form (copies requests to the dark)."""
    mirroring_wanted: bool = False
    """The pair configures mirroring (it may mirror while it validates a Ready dark)."""


def verdict_staleness(obs: Observation, now: float) -> str | None:
    """Why the observation's verdict is too old to rely on at `now`, or None."""
    if obs.verdict_at is None or obs.verdict_max_age is None:
        return None
    age = now - obs.verdict_at
    if -obs.verdict_max_age <= age <= obs.verdict_max_age:
        return None
    return (f"the verdict is {age:.0f}s old (bound {obs.verdict_max_age:g}s): the evaluation "
            "is late, so it is unknown")


def aged(obs: Observation, now: float) -> Observation:
    """The observation as of `now`: a verdict older than its bound is `unknown`, and so is
    the active namespace's health read from it (a late evaluation neither flips nor rolls
    back)."""
    stale = verdict_staleness(obs, now)
    if stale is None:
        return obs
    return replace(obs, verdict="unknown", reasons=(stale, *obs.reasons),
                   active_health="unknown", active_reasons=(stale, *obs.active_reasons))


