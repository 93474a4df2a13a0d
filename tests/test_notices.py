"""Release events derived from two snapshots of a pair (gatekeeper.notices), as tables."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from gatekeeper import notices
from gatekeeper.config import PolicyConfig
from gatekeeper.lifecycle import Observation, ReleaseState
from gatekeeper.notices import Snapshot

BLUE, GREEN = "api-blue", "api-green"
BASE = Snapshot(pair="api", namespaces=(BLUE, GREEN), phase="idle", active=BLUE, dark=GREEN,
                images={BLUE: ("app:1",), GREEN: ("app:2",)})


def at(**changes) -> Snapshot:
    """BASE with `changes`."""
    return replace(BASE, **changes)


VALIDATING = at(phase="validating", reason="new images in the dark namespace")
FLIPPED = at(phase="flipped", active=GREEN, dark=BLUE, reason="gates passed", trigger="auto")

CASES = [
    # (name, previous, current, expected events)
    ("nothing changed", BASE, BASE, []),
    ("a new release", BASE, VALIDATING, ["validating"]),
    ("dark becomes ready", VALIDATING, replace(VALIDATING, dark_ready=True), ["dark_ready"]),
    ("dark stays ready: no repeat", replace(VALIDATING, dark_ready=True),
     replace(VALIDATING, dark_ready=True), []),
    ("gates fail", VALIDATING, replace(VALIDATING, verdict="unsafe", judged="unsafe",
                                       reasons=("error-rate 5% > 1%",)), ["dark_unsafe"]),
    ("still failing: no repeat", replace(VALIDATING, judged="unsafe"),
     replace(VALIDATING, judged="unsafe"), []),
    ("recovers", replace(VALIDATING, judged="unsafe"),
     replace(VALIDATING, verdict="safe", judged="safe"), ["dark_recovered"]),
    ("ready, no approval needed", VALIDATING, at(phase="ready"), ["ready"]),
    ("ready, awaiting approval", VALIDATING, at(phase="ready", awaiting="flip"),
     ["awaiting_approval"]),
    ("flipped", at(phase="ready"), FLIPPED, ["flipped"]),
    ("rolled back", FLIPPED, at(phase="rolled_back", reason="ApiDown firing",
                                trigger="alertmanager"), ["rolled_back"]),
    ("blocked", FLIPPED, replace(FLIPPED, phase="blocked"), ["blocked"]),
    ("unblocked", replace(FLIPPED, phase="blocked"), FLIPPED, ["unblocked"]),
    ("go/no-go due", FLIPPED, replace(FLIPPED, go_no_go_due=True), ["go_no_go_due"]),
    ("go/no-go due awaiting a scale-down approval: one message", FLIPPED,
     replace(FLIPPED, go_no_go_due=True, awaiting="scale_down"), ["go_no_go_due"]),
    ("go/no-go still due: no repeat", replace(FLIPPED, go_no_go_due=True),
     replace(FLIPPED, go_no_go_due=True), []),
    ("scaled down", replace(FLIPPED, go_no_go_due=True),
     replace(FLIPPED, phase="stable", go_no_go_due=False, scaled_down_at=100.0),
     ["scaled_down"]),
    ("evidence stuck", VALIDATING, replace(VALIDATING, evidence_stuck="no traffic"),
     ["evidence_stuck"]),
    ("evidence still stuck: no repeat", replace(VALIDATING, evidence_stuck="no traffic"),
     replace(VALIDATING, evidence_stuck="no traffic"), []),
    ("a person approves the flip", at(phase="ready", awaiting="flip"),
     at(phase="ready", approved=("flip",), approver="alice"), ["approved"]),
    ("dry-run would act", at(phase="ready"), at(phase="ready", would=("would flip",)),
     ["would_act"]),
    ("dry-run would act the same again: no repeat", at(phase="ready", would=("would flip",)),
     at(phase="ready", would=("would flip",)), []),
]


@pytest.mark.parametrize(("previous", "current", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_one_notice_per_change(previous, current, expected):
    """Each change gives its event once; the same picture again gives nothing."""
    assert [n.event for n in notices.derive(previous, current)] == expected


def test_a_notice_carries_what_a_person_needs():
    """Pair, namespaces, release images, verdict, reasons, trigger, approver, dry-run."""
    current = at(phase="rolled_back", reason="ApiDown firing", trigger="alertmanager",
                 verdict="unsafe", reasons=("a", "b"), approver="alice", dry_run=True)
    (notice,) = notices.derive(FLIPPED, current)
    assert (notice.pair, notice.namespaces, notice.active) == ("api", (BLUE, GREEN), BLUE)
    assert notice.images == {BLUE: ("app:1",), GREEN: ("app:2",)}
    assert notice.summary == "ApiDown firing" and notice.reasons == ("a", "b")
    assert notice.approver == "alice" and notice.severity == "critical"
    assert notice.title() == "[dry-run] api: rolled back to api-blue (alertmanager)"


POLICY = PolicyConfig(require_approval=True, observation=100.0)


def _obs(**changes) -> Observation:
    return replace(Observation(active=BLUE, dark=GREEN, active_images=("app:1",),
                               dark_images=("app:2",), dark_ready=True), **changes)


def _snap(state: ReleaseState, obs: Observation, now: float, previous=None,
          policy=POLICY) -> Snapshot:
    return notices.snapshot("api", (BLUE, GREEN), state, obs, policy, now,
                            previous=previous, at=now, stuck_after=60.0)


def test_snapshot_reads_approval_go_no_go_and_stuck_evidence():
    """Awaiting approval in ready; go/no-go due after the observation window; a verdict
    unknown for `stuck_after` seconds while validating is stuck evidence, once."""
    ready = _snap(ReleaseState(phase="ready", active=BLUE, dark=GREEN), _obs(verdict="safe"), 0)
    assert ready.awaiting == "flip" and ready.dark_ready and ready.judged == "safe"
    flipped = ReleaseState(phase="flipped", active=GREEN, dark=BLUE, flipped_at=0.0)
    assert not _snap(flipped, _obs(active=GREEN, dark=BLUE), 50).go_no_go_due
    due = _snap(flipped, _obs(active=GREEN, dark=BLUE, active_health="pass"), 100)
    assert due.go_no_go_due and due.awaiting == "scale_down"
    validating = ReleaseState(phase="validating", active=BLUE, dark=GREEN)
    first = _snap(validating, _obs(reasons=("no data",)), 10)
    later = _snap(validating, _obs(reasons=("no data",)), 69, previous=first)
    stuck = _snap(validating, _obs(reasons=("no data",)), 70, previous=later)
    assert (first.unknown_since, later.evidence_stuck) == (10, "")
    assert stuck.evidence_stuck.startswith("the verdict has been unknown for 60s: no data")
    assert [n.event for n in notices.derive(later, stuck)] == ["evidence_stuck"]


def test_unsafe_unknown_unsafe_is_one_change():
    """A verdict flapping between unsafe and unknown is announced once, not per flap."""
    validating = ReleaseState(phase="validating", active=BLUE, dark=GREEN)
    seen = [_snap(validating, _obs(verdict="safe"), 0)]
    for now, verdict in enumerate(["unsafe", "unknown", "unsafe", "unknown", "safe"], 1):
        seen.append(_snap(validating, _obs(verdict=verdict), now, previous=seen[-1]))
    events = [n.event for a, b in itertools.pairwise(seen)
              for n in notices.derive(a, b)]
    assert events == ["dark_unsafe", "dark_recovered"]
