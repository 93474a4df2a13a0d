"""Durable per-pair state, written with optimistic concurrency: in the pair's own
BlueGreenPair object's status, or (pairs of the configuration file) in one ConfigMap.

A pair read from a BlueGreenPair object (`PairConfig.object_namespace`) keeps its record in
that object's `status` (gatekeeper.crd.status_for): no object holds more than one pair's
state, so no write approaches the 1 MiB object limit however many pairs there are. A pair
of the configuration file keeps it in `data[<pair>]` of the state ConfigMap. Every write
carries the resourceVersion it read, so two writers never lose each other's change (409 ->
re-read, re-apply, retry). The live routes stay the truth: `reconcile` corrects the state
from them after a restart, so a crash between a route patch and the state write leaves
nothing inconsistent.

The modules: `record` (PairState and reading a stored record), `reconcile` (the record
made to agree with the routes, pure), `objects` (a BlueGreenPair's status), `store`
(StateStore: either place, one write lock per record holder).
"""

from gatekeeper.state.objects import ObjectRecords
from gatekeeper.state.reconcile import SWITCH_KINDS, reconcile_state
from gatekeeper.state.record import (
    LIFECYCLE_KEY,
    UNREADABLE_KEY,
    PairState,
    StateError,
)
from gatekeeper.state.store import MANAGED_BY, StateStore

__all__ = [
    "LIFECYCLE_KEY",
    "MANAGED_BY",
    "SWITCH_KINDS",
    "UNREADABLE_KEY",
    "ObjectRecords",
    "PairState",
    "StateError",
    "StateStore",
    "reconcile_state",
]
