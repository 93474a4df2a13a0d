"""The drivers' interface and the one rule for when a pair's drivers run (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gatekeeper.config import PairConfig
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.outcomes import Outcome

__all__ = ["Driver", "DriverTarget", "Plan", "Report", "StopReason", "plan"]

StopReason = Literal["flip", "abort", "blocked", "shutdown", "not_leader", "not_ready",
                     "routes", "new_release"]
"""Why a pair's drivers stop: the flip is about to happen or happened (`flip`); validation
ended without one (`abort`: new images matching the active, a rollback, idle); the pair is
`blocked`; gatekeeper stops (`shutdown`); this replica is no longer the leader
(`not_leader`); the dark is no longer Ready (`not_ready`); the routes cannot be read or no
longer say which namespace is dark (`routes`); another release or dark namespace is now
validated (`new_release`: the drivers restart for it)."""

RUNNING_PHASES = ("validating", "ready")
"""Phases in which a pair's drivers run (ready: evidence keeps coming until the flip)."""

Report = Callable[[Outcome], None]
"""How a driver posts its latest outcome (the runner fills in pair, namespace, release)."""


@dataclass(frozen=True)
class DriverTarget:
    """What a driver works on: one release in one pair's dark namespace.

    `dark` is never the namespace the routes send traffic to (`active`): `plan` refuses to
    start a pair whose routes do not say so. `variables` fill `${...}` in a driver's
    configuration (`namespace` = the dark, `other` = the active, `pair`).
    """

    pair: PairConfig
    dark: str
    active: str
    release: str
    """Fingerprint of the dark's images (a new release restarts the drivers)."""
    dry_run: bool = False
    """The pair is in dry-run: a driver that would write to the cluster (a Job, a route)
    only says what it would do; one that only sends requests may run."""
    variables: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """What identifies a run: the dark namespace and the release."""
        return self.dark, self.release


class Driver(Protocol):
    """Something that produces evidence for the dark while it validates (stable interface).

    `run` is started as a task when the pair's dark is Ready while validating; it runs
    until it returns (a test Job that finished) or is cancelled, posting outcomes through
    `report` as often as it likes. `stop` is awaited after the task ended or was
    cancelled, with the reason, to undo what `run` set up (remove a mirror, delete a Job);
    it must be idempotent and bounded (the runner waits at most its stop timeout). A
    crash in `run` is logged, posted as an `error` outcome and restarted after a backoff
    while the pair still validates.
    """

    name: str
    """Short, unique among drivers: `load`, `jobs`, `mirroring`, ... (labels, API, rules)."""

    def applies(self, pair: PairConfig) -> bool:
        """True when `pair` configures this driver."""
        ...

    async def run(self, target: DriverTarget, report: Report) -> None:
        """Drive `target` until cancelled (or done)."""
        ...

    async def stop(self, target: DriverTarget, why: StopReason) -> None:
        """Undo what `run` set up for `target`."""
        ...


@dataclass(frozen=True)
class Plan:
    """Whether a pair's drivers should run now: `target`, or None and `why` not."""

    target: DriverTarget | None
    why: StopReason | None = None


def plan(pair: PairConfig, state: ReleaseState, observation: Observation | None, *,
         leading: bool, closing: bool = False, dry_run: bool = False) -> Plan:
    """The drivers run for the release being validated while the dark is Ready, on the
    leader, and only when the live routes name the dark as dark."""
    if closing:
        return Plan(None, "shutdown")
    if not leading:
        return Plan(None, "not_leader")
    if state.phase not in RUNNING_PHASES:
        if state.phase in ("flipped", "stable"):
            return Plan(None, "flip")
        return Plan(None, "blocked" if state.phase == "blocked" else "abort")
    dark = state.dark
    if observation is None or dark is None or observation.active is None \
            or observation.dark != dark or observation.active == dark:
        return Plan(None, "routes")
    if not observation.dark_ready:
        return Plan(None, "not_ready")
    variables = {"namespace": dark, "other": observation.active, "pair": pair.name}
    return Plan(DriverTarget(pair, dark, observation.active, state.release, dry_run,
                             variables))
