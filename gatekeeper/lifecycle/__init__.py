"""The release lifecycle of one pair, as a pure state machine: no I/O, no clock of its own.

    idle ──new images in dark──> validating ──N passes + soak──> ready ──flip──> flipped
    ready ──(policy.progressive) step 1..n held and judged──> flip;  a step fails: 0 %, blocked
    flipped ──observation over, go/no-go passed──> stable ──new images in dark──> validating
    flipped | stable ──key gates fail M times / Alertmanager──> rolled_back
    any ──a person must act──> blocked

`step` folds one observation of the live cluster into the state and says which actions the
controller should take. Actions change the phase only once they have happened: the controller
reports them back through `completed` (or `failed`), so a dry run or a refused action never
leaves the state claiming a flip that did not happen. Every function returns a `Step`.
docs/lifecycle.md describes the phases for users.

The modules: `records` (the phases, ReleaseState, Action, Transition, Step), `observation`
(what a tick saw, a verdict's age), `moves` (the Builder and the phase changes several
functions share), `tick` (`step`), `following` (routes moved outside the state, a lost state
rebuilt), `reported` (`completed`, `failed`), `requests` (approvals, alerts, the checks).
"""

from gatekeeper.lifecycle.following import follow_routes, rebuilt, switched
from gatekeeper.lifecycle.observation import Observation, aged, fingerprint, verdict_staleness
from gatekeeper.lifecycle.records import (
    PHASES,
    Action,
    ActionKind,
    Decision,
    Health,
    Phase,
    ReleaseState,
    Step,
    Transition,
    Trigger,
    VerdictName,
)
from gatekeeper.lifecycle.reported import completed, failed
from gatekeeper.lifecycle.requests import (
    alert_rollback,
    approve,
    flip_check,
    scale_down_check,
    unapprove,
)
from gatekeeper.lifecycle.tick import EVIDENCE_HINT, step

__all__ = [
    "EVIDENCE_HINT",
    "PHASES",
    "Action",
    "ActionKind",
    "Decision",
    "Health",
    "Observation",
    "Phase",
    "ReleaseState",
    "Step",
    "Transition",
    "Trigger",
    "VerdictName",
    "aged",
    "alert_rollback",
    "approve",
    "completed",
    "failed",
    "fingerprint",
    "flip_check",
    "follow_routes",
    "rebuilt",
    "scale_down_check",
    "step",
    "switched",
    "unapprove",
    "verdict_staleness",
]
