"""The API verbs with the real server's semantics, independent of HTTP.

HTTP handlers, the admin API and the simulated controllers all write through here, so
optimistic concurrency, validation and no-op detection apply to every writer alike.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import customresources, patching, resources, strategies
from .errors import (
    ApiError,
    bad_request,
    conflict,
    expired,
    invalid,
    not_found,
    unsupported_media_type,
)
from .jsonvalues import clone, json_equal
from .resources import ResourceType
from .selectors import FieldSelector, LabelSelector, SelectorError, object_matcher
from .store import Matcher, ObjectStore, Watcher
from .timefmt import rfc3339
from .validation import validate

Obj = dict[str, Any]
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter."
)


def random_suffix(rng: random.Random, length: int = 5) -> str:
    """The kind of suffix `generateName` and ReplicaSets append to names."""
    return "".join(rng.choice(NAME_ALPHABET) for _ in range(length))


def with_type(rt: ResourceType, obj: Obj) -> Obj:
    """Set `kind`/`apiVersion`, first in the document as the server renders them."""
    return {"kind": rt.kind, "apiVersion": rt.api_version,
            **{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}}


def scale_of(rt: ResourceType, obj: Mapping[str, Any]) -> Obj:
    """The `autoscaling/v1` Scale view of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    selector = LabelSelector.from_dict((obj.get("spec") or {}).get("selector"))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                           "creationTimestamp") if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": selector.render()},
    }


class ObjectAPI:
    """get/list/watch/create/replace/patch/delete (+ scale) over an ObjectStore."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        registry: resources.Registry | None = None,
    ) -> None:
        self.store = store
        self.registry = registry or resources.Registry()
        """What this server serves; CustomResourceDefinitions written here change it."""
        self.rng = rng or random.Random()
        self.clock = clock

    # ---- reads -------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        """One object, or 404."""
        obj = self.store.get(rt, namespace, name)
        if obj is None:
            raise not_found(rt.group, rt.plural, name)
        return with_type(rt, obj)

    def matcher(
        self, rt: ResourceType, label_selector: str | None, field_selector: str | None
    ) -> Matcher:
        """Parse selectors into one predicate; 400 for a selector the server would reject."""
        try:
            labels = LabelSelector.parse(label_selector)
            fields = FieldSelector.parse(field_selector, rt.field_selectors)
        except SelectorError as exc:
            raise bad_request(str(exc)) from None
        return object_matcher(labels, fields)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Obj:
        """A `...List` document; `limit`/`continue` paginate, as chunking clients expect."""
        matches = self.matcher(rt, label_selector, field_selector)
        rv = self.store.resource_version
        after: tuple[str, str] | None = None
        if continue_token:
            token_rv, after = _decode_continue(continue_token)
            if token_rv < self.store.compacted_revision:
                raise expired(_CONTINUE_TOO_OLD)
            rv = str(token_rv)
        items = [
            o for o in self.store.iter(rt, namespace)
            if matches(o) and (after is None or _key(o) > after)
        ]
        meta: Obj = {"resourceVersion": rv}
        if limit and limit > 0 and len(items) > limit:
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            meta["continue"] = _encode_continue(int(rv), _key(items[-1]))
        rendered = [with_type(rt, clone(o)) for o in items]
        if not rt.custom:
            for item in rendered:
                item.pop("kind"), item.pop("apiVersion")
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                "items": rendered}

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Watcher:
        """Open a watch (see ObjectStore.watch); raises 410 Expired for compacted revisions."""
        matches = self.matcher(rt, label_selector, field_selector)
        return self.store.watch(rt, namespace, resource_version, matches)

    # ---- writes ------------------------------------------------------------------------

    def create(
        self, rt: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False,
        field_validation: str | None = None,
    ) -> Obj:
        """POST: 409 AlreadyExists, 404 for a missing namespace, generateName honoured."""
        obj = self._decode(rt, body)
        meta = obj["metadata"]
        if rt.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace or meta.get("namespace") or "default"
            self._require_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(rt.kind, rt.group, "", [
                    ("metadata.name", "Required value: name or generateName is required")])
            meta["name"] = f"{meta['generateName']}{random_suffix(self.rng)}"
        strategies.prepare_create(rt, obj, now=self.clock(), rng=self.rng)
        self._validate(rt, obj, None, field_validation)
        if dry_run:
            if self.store.get(rt, meta.get("namespace"), meta["name"]) is not None:
                raise ApiError(409, f'{meta["name"]} already exists', reason="AlreadyExists")
            return with_type(rt, obj)
        return with_type(rt, self._committed(rt, self.store.create(rt, obj)))

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> Obj:
        """PUT: 409 when the body's resourceVersion is stale; required for custom resources."""
        new = self._decode(rt, body)
        old = self._current(rt, namespace, name)
        self._check_identity(rt, new, namespace, name)
        rv = new["metadata"].get("resourceVersion") or None
        if rv is None and rt.custom:
            raise invalid(rt.kind, rt.group, name, [
                ("metadata.resourceVersion",
                 "Invalid value: 0x0: must be specified for an update")])
        return self._update(rt, old, new, subresource, rv, dry_run, field_validation)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        field_validation: str | None = None,
    ) -> tuple[Obj, bool]:
        """PATCH with any of the four patch types; returns (object, created)."""
        if patch_type not in patching.PATCH_TYPES or (
            rt.custom and patch_type == patching.STRATEGIC_MERGE_PATCH
        ):
            raise unsupported_media_type(patch_type)
        if patch_type == patching.APPLY_PATCH and not field_manager:
            raise invalid("PatchOptions", "meta.k8s.io", "", [
                ("fieldManager", "Required value: is required for apply patch")])
        old = self.store.get(rt, namespace, name)
        if old is None:
            if patch_type == patching.APPLY_PATCH and subresource is None:
                return self.create(rt, namespace, patch, dry_run=dry_run,
                                   field_validation=field_validation), True
            raise not_found(rt.group, rt.plural, name)
        patched = self.apply_patch(rt, with_type(rt, old), patch, patch_type)
        self._check_identity(rt, patched, namespace, name)
        rv = patched["metadata"].get("resourceVersion") or None
        return self._update(rt, old, patched, subresource, rv, dry_run,
                            field_validation), False

    def apply_patch(self, rt: ResourceType | None, base: Obj, patch: Any, patch_type: str) -> Obj:
        """Apply a decoded patch body to `base`; 400 for a malformed patch, 422 if it fails."""
        try:
            if patch_type == patching.JSON_PATCH:
                result = patching.json_patch(base, patch)
            elif not isinstance(patch, dict):
                raise bad_request("patch body must be a JSON object")
            elif patch_type == patching.MERGE_PATCH or (rt is not None and rt.custom):
                result = patching.merge_patch(base, patch)
            else:
                result = patching.strategic_merge_patch(base, patch)
        except patching.MalformedPatch as exc:
            raise bad_request(str(exc)) from None
        except patching.PatchConflict as exc:
            raise ApiError(422, str(exc), reason="Invalid") from None
        if not isinstance(result, dict) or not isinstance(result.get("metadata"), dict):
            raise ApiError(422, "the patch removed the object's metadata", reason="Invalid")
        return result

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        options: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """DELETE with preconditions, finalizers and Orphan propagation; returns the object."""
        current = self._current(rt, namespace, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(rt.group, rt.plural, name, f"Precondition failed: UID in precondition: "
                           f"{pre['uid']}, UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise conflict(rt.group, rt.plural, name, "Precondition failed: ResourceVersion in "
                           f"precondition: {pre['resourceVersion']}, ResourceVersion in object "
                           f"meta: {meta.get('resourceVersion')}")
        if dry_run:
            return with_type(rt, current)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return with_type(rt, current)
            marked = clone(current)
            marked["metadata"]["deletionTimestamp"] = rfc3339(self.clock())
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return with_type(rt, self.store.update(rt, marked))
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is None and rt.kind == "Job" \
                and rt.group == "batch":
            # batch/v1's DefaultGarbageCollectionPolicy: a Job deleted without a policy
            # leaves its pods behind (kubectl passes Background; API clients must too).
            policy = "Orphan"
        if policy == "Orphan" or options.get("orphanDependents"):
            self._orphan_dependents(meta.get("namespace"), meta.get("uid"))
        deleted = self.store.delete(rt, namespace, name)
        if rt.key == resources.CRDS.key:
            self._undefine(name)
        return with_type(rt, deleted)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        options: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """DELETE on a collection: every matching object, returned as a list."""
        listing = self.list(rt, namespace, label_selector=label_selector,
                            field_selector=field_selector)
        deleted = []
        for item in listing["items"]:
            meta = item["metadata"]
            try:
                deleted.append(self.delete(rt, meta.get("namespace"), meta["name"],
                                           options=options, dry_run=dry_run))
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return {"kind": rt.list_kind, "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": self.store.resource_version}, "items": deleted}

    # ---- scale subresource -------------------------------------------------------------

    def get_scale(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        """GET .../scale."""
        return scale_of(rt, self._current(rt, namespace, name))

    def replace_scale(
        self, rt: ResourceType, namespace: str | None, name: str, body: Any, *,
        dry_run: bool = False,
    ) -> Obj:
        """PUT .../scale: only spec.replicas changes; a stale resourceVersion is a 409."""
        old = self._current(rt, namespace, name)
        if not isinstance(body, Mapping):
            raise bad_request("Scale body must be an object")
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise bad_request("json: cannot unmarshal into Go struct field ScaleSpec.spec.replicas "
                              "of type int32")
        if replicas < 0:
            raise invalid("Scale", "autoscaling", name, [
                ("spec.replicas",
                 f"Invalid value: {replicas}: must be greater than or equal to 0")])
        rv = (body.get("metadata") or {}).get("resourceVersion") or None
        new = clone(old)
        new.setdefault("spec", {})["replicas"] = replicas
        return scale_of(rt, self._update(rt, old, new, None, rv, dry_run))

    def patch_scale(
        self, rt: ResourceType, namespace: str | None, name: str, patch: Any, patch_type: str,
        *, dry_run: bool = False,
    ) -> Obj:
        """PATCH .../scale (json, merge or strategic merge patch of the Scale object)."""
        if patch_type not in patching.PATCH_TYPES[:3]:
            raise unsupported_media_type(patch_type)
        scale = self.get_scale(rt, namespace, name)
        patched = self.apply_patch(None, scale, patch, patch_type)
        return self.replace_scale(rt, namespace, name, patched, dry_run=dry_run)

    # ---- helpers for controllers and the admin API -------------------------------------

    def mutate(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        change: Callable[[Obj], None],
        *,
        subresource: str | None = None,
    ) -> Obj | None:
        """Read-modify-write without preconditions (None if the object is gone)."""
        current = self.store.peek(rt, namespace, name)
        if current is None:
            return None
        new = clone(current)
        change(new)
        if json_equal(new, current):
            # A no-op write: no new revision, as `_update` would find after preparing it
            # (controllers refresh statuses on every event; most refreshes change nothing).
            return with_type(rt, new)
        return self._update(rt, current, new, subresource, None, False)

    def put(self, obj: Mapping[str, Any]) -> Obj:
        """Create or overwrite an object by its apiVersion/kind (loading manifests); a
        given `status` is written through /status, as a controller would."""
        rt = self.registry.by_kind(str(obj.get("apiVersion")), str(obj.get("kind")))
        if rt is None:
            raise bad_request(f"no resource for apiVersion={obj.get('apiVersion')} "
                              f"kind={obj.get('kind')}")
        meta = obj.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if rt.namespaced else None
        if namespace:
            self.ensure_namespace(namespace)
        body = clone(dict(obj))
        body.get("metadata", {}).pop("resourceVersion", None)
        current = self.store.get(rt, namespace, str(meta.get("name", "")))
        if current is None:
            stored = self.create(rt, namespace, body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            stored = self.replace(rt, namespace, meta["name"], body)
        if rt.has_status_subresource and "status" in obj:
            status = clone(obj["status"])
            stored = self.mutate(rt, namespace, meta["name"],
                                 lambda o: o.__setitem__("status", status),
                                 subresource="status") or stored
        return stored

    def ensure_namespace(self, name: str) -> None:
        """Create a namespace if missing (manifests reference namespaces implicitly)."""
        if self.store.get(resources.NAMESPACES, None, name) is None:
            self.create(resources.NAMESPACES, None, {"metadata": {"name": name}})

    # ---- internals ---------------------------------------------------------------------

    def _decode(self, rt: ResourceType, body: Any) -> Obj:
        if not isinstance(body, Mapping):
            raise bad_request(f"Object of kind {rt.kind} expected, got {type(body).__name__}")
        obj = clone(dict(body))
        if obj.get("apiVersion") not in (None, rt.api_version):
            raise bad_request(f"the API version in the data ({obj['apiVersion']}) does not match "
                              f"the expected API version ({rt.api_version})")
        if obj.get("kind") not in (None, rt.kind):
            raise bad_request(f"the kind in the data ({obj['kind']}) does not match the expected "
                              f"kind ({rt.kind})")
        if not isinstance(obj.setdefault("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return with_type(rt, obj)

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        current = self.store.get(rt, namespace, name)
        if current is None:
            raise not_found(rt.group, rt.plural, name)
        return current

    def _require_namespace(self, namespace: str) -> None:
        if self.store.get(resources.NAMESPACES, None, namespace) is None:
            raise not_found("", "namespaces", namespace)

    def _check_identity(
        self, rt: ResourceType, obj: Obj, namespace: str | None, name: str
    ) -> None:
        meta = obj["metadata"]
        if meta.get("name") not in (None, name):
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name "
                              f"on the URL ({name})")
        meta["name"] = name
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None,
                  field_validation: str | None = None) -> None:
        """Server-side validation; a custom resource is first pruned to its schema (unknown
        fields are an error only with `fieldValidation=Strict`, as kubectl sends it)."""
        if rt.schema is not None:
            dropped = customresources.prune(rt.schema, obj)
            if dropped and field_validation == "Strict":
                unknown = ", ".join(f'unknown field "{path}"' for path in dropped)
                raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a '
                                  f"{rt.kind}: strict decoding error: {unknown}")
        if rt.key == resources.CRDS.key:
            customresources.defaulted(obj)
        causes = validate(rt, obj, old)
        if rt.schema is not None:
            causes += customresources.validate_object(rt.schema, obj)
        elif rt.key == resources.CRDS.key:
            causes += customresources.validate_definition(obj)
        if causes:
            raise invalid(rt.kind, rt.group, str(obj["metadata"].get("name", "")), causes)

    def _update(
        self,
        rt: ResourceType,
        old: Obj,
        new: Obj,
        subresource: str | None,
        expected_rv: str | None,
        dry_run: bool,
        field_validation: str | None = None,
    ) -> Obj:
        name = old["metadata"]["name"]
        if expected_rv is not None and expected_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.group, rt.plural, name)
        prepared = with_type(rt, strategies.prepare_update(rt, new, old, subresource, rng=self.rng))
        self._validate(rt, prepared, old, field_validation)
        if strategies.unchanged(prepared, with_type(rt, old)):
            return with_type(rt, clone(old))
        if dry_run:
            return prepared
        meta = prepared["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return with_type(rt, self.store.delete(rt, meta.get("namespace"), name))
        return with_type(rt, self._committed(
            rt, self.store.update(rt, prepared, expected_rv=expected_rv)))

    def _committed(self, rt: ResourceType, stored: Obj) -> Obj:
        """After a write: a CustomResourceDefinition is served at once and reported
        established in its status (what the apiextensions controllers do)."""
        if rt.key != resources.CRDS.key:
            return stored
        name = stored["metadata"]["name"]
        served = customresources.served_resources(stored)
        kept = {r.key for r in served}
        for gone in self.registry.defined_by(name):
            if gone.key not in kept:
                self._drop_all(gone)
        self.registry.define(name, served)
        status = customresources.status_of(stored, rfc3339(self.clock()))
        if stored.get("status") == status:
            return stored
        with_status = clone(stored)
        with_status["status"] = status
        return self.store.update(rt, with_status)

    def _undefine(self, crd_name: str) -> None:
        """A deleted CRD takes its objects with it (the real server's cleanup finalizer)."""
        for rt in {r.key: r for r in self.registry.forget(crd_name)}.values():
            self._drop_all(rt)

    def _drop_all(self, rt: ResourceType) -> None:
        for obj in list(self.store.iter(rt, None)):
            meta = obj["metadata"]
            self.store.delete(rt, meta.get("namespace") or None, meta["name"])

    def _orphan_dependents(self, namespace: str | None, uid: str | None) -> None:
        for rt in self.registry:
            if not rt.namespaced or not namespace:
                continue
            for obj in list(self.store.iter(rt, namespace)):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    def drop(o: Obj) -> None:
                        refs = o["metadata"].get("ownerReferences", [])
                        o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self.mutate(rt, namespace, obj["metadata"]["name"], drop)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _encode_continue(rv: int, after: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(after)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (binascii.Error, ValueError, KeyError, IndexError, TypeError):
        raise bad_request(f"continue key is not valid: {token!r}") from None
