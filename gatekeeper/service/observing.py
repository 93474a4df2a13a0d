"""Turn one tick's live reads and the cached verdict into a lifecycle `Observation`.

Pure: no I/O. The controller reads routes, Deployments and pods and evaluates the rules;
this module only decides what those mean for the lifecycle (which namespace is dark, can it
take traffic, how healthy are the key gates on the active one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gatekeeper import environments
from gatekeeper.config import PairConfig
from gatekeeper.environments import Readiness
from gatekeeper.lifecycle import Health, Observation
from gatekeeper.measurements import NamespaceScore, Verdict, VerdictName
from gatekeeper.switches import SwitchRecord

__all__ = ["LiveRead", "active_health", "observe"]


@dataclass(frozen=True)
class LiveRead:
    """What the controller read from the cluster for one pair on one tick."""

    active: str | None
    problem: str = ""
    readiness: Mapping[str, Readiness | None] | None = None
    errors: Mapping[str, str] | None = None
    """namespace -> why its Deployments could not be read."""
    last_switch: SwitchRecord | None = None
    """The routes' record of the switch that sent traffic to `active`."""
    exposed: int = 0
    """Percent gatekeeper's progressive split sends to the dark (0: none)."""
    exposure_step: int = 0
    mirrored: bool = False
    """Some route is in gatekeeper's mirroring form."""
    routes_cached: bool = False
    """The routes came from the watch cache (they said what the pair's record expected)."""
    forbidden: tuple[str, ...] = ()
    """Reads RBAC refused (403), for a person: "list pods in namespace shop-green"."""


def active_health(score: NamespaceScore | None) -> tuple[Health, tuple[str, ...]]:
    """Key gates on a namespace: `fail` if one fails, `pass` if all pass, else `unknown`."""
    if score is None:
        return "unknown", ("not evaluated",)
    key = [r for r in score.results if r.key]
    failing = [r for r in key if r.status == "fail"]
    if failing:
        return "fail", tuple(f"{r.rule} on {r.namespace}: {r.reason}" for r in failing)
    undecided = [r for r in key if r.status in ("error", "no_data")]
    if undecided:
        return "unknown", tuple(f"{r.rule} on {r.namespace}: unknown: {r.reason}"
                                for r in undecided)
    if score.grade == "fail":
        return "fail", (f"score {score.score}% on {score.namespace}",)
    if score.grade == "unknown":
        return "unknown", (f"no rule could be evaluated on {score.namespace}",)
    return "pass", ()


def _images(readiness: Readiness | None) -> tuple[str, ...]:
    if readiness is None:
        return ()
    return tuple(sorted(readiness.images().values()))


def observe(
    pair: PairConfig, live: LiveRead, verdict: Verdict | None, *, window: float = 0.0,
    verdict_at: float | None = None, verdict_max_age: float | None = None,
) -> Observation:
    """The lifecycle's view of a pair; a missing read never looks healthy.

    `window` is how far back the judged data reaches (see Observation.window);
    `verdict_at` and `verdict_max_age` bound how long the verdict may be relied on.
    """
    if live.active is None:
        return Observation(active=None, dark=None, route_problem=live.problem or "unreadable")
    dark = pair.other(live.active)
    readiness = live.readiness or {}
    errors = live.errors or {}
    dark_read = readiness.get(dark)
    if dark_read is None:
        dark_replicas: int | None = None
        dark_ready = False
        dark_short: tuple[str, ...] = ()
        dark_problem = errors.get(dark, "Deployments could not be read")
    else:
        dark_replicas = sum(d.replicas for d in dark_read.deployments)
        dark_ready = dark_read.ready
        dark_problem = "; ".join(dark_read.reasons[:3])
        active_read = readiness.get(live.active)
        plans = environments.production_replicas(
            pair, dark_read.deployments,
            active=active_read.deployments if active_read else (),
            active_namespace=live.active)
        dark_short = tuple(f"{p.name} {p.current}/{p.target}" for p in plans
                           if p.current < p.target)
    verdict_name: VerdictName
    reasons: tuple[str, ...]
    if verdict is None or verdict.candidate.namespace != dark:
        verdict_name, reasons = "unknown", ("not evaluated yet",)
        health, health_reasons = active_health(None)
    else:
        verdict_name, reasons = verdict.verdict, verdict.reasons
        health, health_reasons = active_health(verdict.baseline)
    return Observation(
        active=live.active,
        dark=dark,
        active_images=_images(readiness.get(live.active)),
        dark_images=_images(dark_read),
        dark_replicas=dark_replicas,
        dark_ready=dark_ready,
        dark_problem=dark_problem,
        dark_short=dark_short,
        verdict=verdict_name,
        reasons=tuple(reasons),
        active_health=health,
        active_reasons=health_reasons,
        window=window,
        switch_kind=live.last_switch.kind if live.last_switch else "",
        switched_from=live.last_switch.source if live.last_switch else None,
        switched_at=live.last_switch.at if live.last_switch else None,
        verdict_at=verdict_at,
        verdict_max_age=verdict_max_age,
        exposed=live.exposed,
        exposure_step=live.exposure_step,
        mirrored=live.mirrored,
        mirroring_wanted=pair.mirroring is not None,
    )
