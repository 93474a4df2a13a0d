"""The pairs declared as BlueGreenPair objects: read them all, keep those gatekeeper can use,
and tell the others why not in their own status; `migrate` turns configured pairs and their
state ConfigMap records into objects.

An object the pair models refuse (or whose name another pair already has) gets the
condition `Valid=False`, reason `InvalidSpec`, naming each field, and a Warning Event; it is
skipped, and every other pair proceeds. A cluster without the CRD simply has no pair
objects (logged once): the configuration's pairs are served as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from kubernetes_asyncio import client

from gatekeeper import crd, errors, events
from gatekeeper.config import Config, PairConfig
from gatekeeper.kubeclient import ApiException, read_json
from gatekeeper.state import PairState, StateStore

log = structlog.get_logger(__name__)

PAGE = 500
"""Objects per list call (the API server pages long lists; so does kubectl)."""


@dataclass(frozen=True)
class Rejected:
    """An object gatekeeper skips, and each problem naming its field."""

    object: dict[str, Any]
    problems: list[str]

    @property
    def ref(self) -> str:
        """`namespace/name`."""
        meta = self.object.get("metadata") or {}
        return f"{meta.get('namespace')}/{meta.get('name')}"


@dataclass
class PairObjects:
    """What the cluster's BlueGreenPair objects declare."""

    pairs: list[PairConfig] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    installed: bool = True
    """False when the API server does not serve the resource (the CRD is not installed)."""


async def list_objects(api: client.ApiClient) -> list[dict[str, Any]] | None:
    """Every BlueGreenPair in the cluster, page by page; None when the CRD is not installed.
    Other API failures raise (`errors.API_ERRORS`)."""
    objects = client.CustomObjectsApi(api)
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE}
        if token:
            kwargs["_continue"] = token
        try:
            page: dict[str, Any] = await read_json(
                objects.list_cluster_custom_object, crd.GROUP, crd.VERSION, crd.PLURAL,
                **kwargs)
        except errors.APINotFoundError:
            return None
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def _created(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("creationTimestamp", "")), str(meta.get("namespace", "")),
            str(meta.get("name", "")))


def choose(configured: Iterable[PairConfig], objects: Iterable[dict[str, Any]], *,
           parse: Callable[[dict[str, Any]], PairConfig] = crd.parse_object) -> PairObjects:
    """The usable pairs among OBJECTS (pure). A name must be unique among all pairs: one a
    configured pair has, or an older object has, is refused. PARSE reads one object
    (`crd.parse_object`; the pair watch remembers the answer per generation)."""
    chosen = PairObjects()
    taken = {pair.name: "gatekeeper's configuration" for pair in configured}
    for obj in sorted(objects, key=_created):
        try:
            pair = parse(obj)
        except crd.InvalidPairObject as exc:
            chosen.rejected.append(Rejected(obj, exc.problems))
            continue
        if pair.name in taken:
            chosen.rejected.append(Rejected(obj, [
                f'metadata.name: Duplicate value: "{pair.name}": a pair of that name is '
                f"already declared in {taken[pair.name]}"]))
            continue
        taken[pair.name] = f"BlueGreenPair {pair.object_namespace}/{pair.name}"
        chosen.pairs.append(pair)
    return chosen


async def mark_rejected(api: client.ApiClient, rejected: Rejected, *,
                        clock: Callable[[], float] = time.time,
                        recorder: events.EventRecorder | None = None) -> bool:
    """Write the Valid=False condition naming the fields (with the resourceVersion listed;
    a conflict means the object changed: the next read looks at it again) and a Warning
    Event, unless the status already says exactly that. Returns whether it wrote."""
    obj = rejected.object
    meta = obj.get("metadata") or {}
    previous = obj.get("status") or {}
    status = crd.invalid_status(rejected.problems, generation=meta.get("generation"),
                                previous=previous, now=clock())
    if status == previous:
        return False
    objects = client.CustomObjectsApi(api)
    try:
        await read_json(objects.replace_namespaced_custom_object_status, crd.GROUP,
                        crd.VERSION, meta.get("namespace"), crd.PLURAL, meta.get("name"),
                        {**obj, "status": status})
    except ApiException as exc:
        log.warning("cannot write the invalid pair object's condition", object=rejected.ref,
                    status=exc.status)
        return False
    if recorder is not None:
        target = events.PairObject(str(meta.get("namespace")), str(meta.get("name")),
                                   uid=str(meta.get("uid", "")))
        await recorder.emit([target], reason=events.INVALID_SPEC, action="validate",
                            message="; ".join(rejected.problems), warning=True)
    return True


async def resolve(api: client.ApiClient, config: Config, *,
                  clock: Callable[[], float] = time.time) -> tuple[Config, PairObjects]:
    """CONFIG with the pairs of the cluster's BlueGreenPair objects added after its own;
    rejected objects are marked (logged, never fatal). Without `objects.enabled` nothing is
    read. API failures raise: gatekeeper cannot know its pairs."""
    if not config.objects.enabled:
        return config, PairObjects(installed=False)
    listed = await list_objects(api)
    if listed is None:
        log.info("BlueGreenPair objects are not served (the CRD is not installed: "
                    "`gatekeeper crd | kubectl apply -f -`); serving the configured pairs")
        found = PairObjects(installed=False)
    else:
        found = choose(config.pairs, listed)
    recorder = events.EventRecorder(api, clock=clock)
    for rejected in found.rejected:
        log.error("BlueGreenPair skipped: its spec is invalid", object=rejected.ref,
                  problems=rejected.problems)
        await mark_rejected(api, rejected, clock=clock, recorder=recorder)
    if not found.pairs:
        return config, found
    return config.model_copy(update={"pairs": (*config.pairs, *found.pairs)}), found


@dataclass(frozen=True)
class Migrated:
    """What the migration did for one configured pair."""

    pair: str
    outcome: str
    """created, exists, conflict, skipped"""
    note: str = ""


async def migrate(api: client.ApiClient, config: Config, store: StateStore, namespace: str,
                  *, overwrite: bool = False, dry_run: bool = False) -> list[Migrated]:
    """Each pair of CONFIG as a BlueGreenPair object in NAMESPACE, with its record from the
    state ConfigMap written to the object's status: phase, lifecycle and history kept.

    Idempotent: an object whose spec already says the same is reused, and a record already
    in its status is kept unless OVERWRITE (then the ConfigMap's copy replaces it). An
    object of the same name with another spec is a conflict, left alone. The ConfigMap is
    not changed (a backup until the pairs are removed from the configuration)."""
    objects = client.CustomObjectsApi(api)
    records = await store.load_configmap()
    done: list[Migrated] = []
    for pair in config.pairs:
        manifest = crd.manifest_of(pair, namespace)
        record = records.get(pair.name)
        if record is not None and record.unreadable:
            done.append(Migrated(pair.name, "skipped", record.unreadable))
            continue
        try:
            existing: dict[str, Any] | None = await read_json(
                objects.get_namespaced_custom_object, crd.GROUP, crd.VERSION, namespace,
                crd.PLURAL, pair.name)
        except errors.APINotFoundError:
            existing = None
        if existing is not None and crd.spec_of(crd.parse_object(existing)) != manifest["spec"]:
            done.append(Migrated(pair.name, "conflict", f"BlueGreenPair {namespace}/"
                                 f"{pair.name} exists with another spec: left alone"))
            continue
        outcome = "exists" if existing is not None else "created"
        if dry_run:
            done.append(Migrated(pair.name, outcome, "dry run: nothing written"))
            continue
        if existing is None:
            await read_json(objects.create_namespaced_custom_object, crd.GROUP, crd.VERSION,
                            namespace, crd.PLURAL, manifest)
        copied = record.to_dict() if record is not None else None

        def restore(state: PairState, copied: dict[str, Any] | None = copied) -> None:
            if copied is None or (state.to_dict() != PairState().to_dict() and not overwrite):
                return
            fresh = PairState.from_dict(copied)
            for name in fresh.__dataclass_fields__:
                setattr(state, name, getattr(fresh, name))

        await store.update(pair.declared_in(namespace), restore)
        note = "no record in the state ConfigMap" if record is None else \
            f"record copied: phase {record.phase}, {len(record.transitions)} transitions"
        done.append(Migrated(pair.name, outcome, note))
    return done
