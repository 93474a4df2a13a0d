"""Validation drivers: what gatekeeper does to the dark namespace to get evidence for it.

In the design document's setup the dark gets no user traffic before the flip, so the
rules that need requests would stay `unknown`. A *driver* produces that evidence for the
release under validation: synthetic load and checks (`load`), the team's test Job (`jobs`),
Traefik mirroring or progressive exposure (`traffic`). docs/evidence.md is the user's page.

When drivers run (`plan`, one rule for all of them)
    A pair's drivers run while its phase is `validating` or `ready`, the dark is Ready, the
    live routes name that namespace as the dark one (never the active namespace), and this
    replica is the leader. They stop, with a `StopReason`, before a flip (`flip`), when
    validation ends without one (`abort`), when the pair is `blocked`, on `shutdown`, when
    the replica stops leading (`not_leader`), when the dark is no longer Ready
    (`not_ready`) or the routes are unreadable (`routes`); a new release or dark namespace
    restarts them (`new_release`). In dry-run they run with `DriverTarget.dry_run` set: a
    driver that would write to the cluster then only says what it would do.

The interface (stable; `jobs` and `traffic` plug in here)
    A driver is any object with
      - `name: str` (unique: `load`, `jobs`, `mirroring`...; used in labels, the API, rules),
      - `applies(pair) -> bool` (the pair configures it),
      - `async run(target, report)`: works on `target` (a `DriverTarget`: pair, dark,
        active, release fingerprint, dry_run, `${...}` variables) until cancelled or done,
        posting its latest `gatekeeper.outcomes.Outcome` through `report(outcome)`
        (status pending/pass/fail/error, reason, value, samples, details),
      - `async stop(target, why)`: undoes what `run` set up; idempotent, bounded.
    A crash in `run` is logged, posted as an `error` outcome and restarted after a backoff.
    Pass the drivers to `Drivers(...)` and that to the `Controller` (`drivers=`); the
    outcomes land on `Drivers.board` (an `OutcomeBoard`), which the API and the
    `validation` rule source read.
"""

from gatekeeper.drivers.base import Driver, DriverTarget, Plan, Report, StopReason, plan
from gatekeeper.drivers.runner import Drivers

__all__ = ["Driver", "DriverTarget", "Drivers", "Plan", "Report", "StopReason", "plan"]
