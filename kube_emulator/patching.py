"""JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386) and an approximate strategic merge.

A failed JSON Patch `test` must reject the whole patch (the gatekeeper's route flip relies
on it), so every operation works on a copy and errors are raised, never half-applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .jsonvalues import clone, json_equal

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

# Lists that strategic merge patch merges item-by-item, keyed by this field.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "containerStatuses": "name",
}
_PRIMITIVE_MERGE_LISTS = {"finalizers"}


class PatchConflict(Exception):
    """The patch is well formed but cannot apply (failed test, missing path): 422."""


class MalformedPatch(Exception):
    """The patch document itself is invalid: 400."""


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise MalformedPatch(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, for_insert: bool) -> int:
    if token == "-" and for_insert:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchConflict(f"invalid array index {token!r} in {path}")
    idx = int(token)
    limit = len(container) if for_insert else len(container) - 1
    if idx > limit:
        raise PatchConflict(f"array index {idx} out of bounds in {path}")
    return idx


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchConflict(f"doc is missing path: {path}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, for_insert=False)]
        else:
            raise PatchConflict(f"doc is missing path: {path}")
    if not isinstance(node, dict | list):
        raise PatchConflict(f"doc is missing path: {path}")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchConflict(f"doc is missing path: {path}")
        return parent[last]
    return parent[_index(parent, last, path, for_insert=False)]


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent.insert(_index(parent, tokens[-1], path, for_insert=True), value)
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchConflict("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchConflict(f"unable to remove nonexistent key: {tokens[-1]}: missing value")
        return doc, parent.pop(tokens[-1])
    return doc, parent.pop(_index(parent, tokens[-1], path, for_insert=False))


def _apply_op(doc: Any, op: Mapping[str, Any]) -> Any:
    if not isinstance(op, Mapping) or "op" not in op or "path" not in op:
        raise MalformedPatch(f"invalid JSON Patch operation {op!r}")
    kind, path = op["op"], op["path"]
    if kind in ("add", "replace", "test") and "value" not in op:
        raise MalformedPatch(f"operation {kind!r} on {path} has no value")
    if kind in ("move", "copy") and "from" not in op:
        raise MalformedPatch(f"operation {kind!r} on {path} has no from")
    if kind == "add":
        return _add(doc, path, clone(op["value"]))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        _get(doc, path)
        doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
        return _add(doc, path, clone(op["value"]))
    if kind == "move":
        doc, value = _remove(doc, op["from"])
        return _add(doc, path, value)
    if kind == "copy":
        return _add(doc, path, clone(_get(doc, op["from"])))
    if kind == "test":
        try:
            actual = _get(doc, path)
        except PatchConflict:
            if op["value"] is None:
                return doc
            raise PatchConflict(f"testing value {path} failed: test failed") from None
        if not json_equal(actual, op["value"]):
            raise PatchConflict(f"testing value {path} failed: test failed")
        return doc
    raise MalformedPatch(f"unexpected kind of JSON Patch operation: {kind!r}")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply RFC 6902 operations atomically to a copy of `doc`."""
    if not isinstance(operations, list):
        raise MalformedPatch("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    result = clone(doc)
    for op in operations:
        result = _apply_op(result, op)
    return result


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch (null deletes, objects merge, everything else replaces)."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_list_by_key(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = clone(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(clone(item))
            continue
        directive = item.get("$patch")
        match = next(
            (i for i, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]),
            None,
        )
        if directive == "delete":
            if match is not None:
                result.pop(match)
        elif match is None:
            result.append(strategic_merge_patch({}, item))
        elif directive == "replace":
            result[match] = {k: clone(v) for k, v in item.items() if k != "$patch"}
        else:
            result[match] = strategic_merge_patch(result[match], item)
    return result


def strategic_merge_patch(doc: Any, patch: Any) -> Any:
    """Merge patch that merges known lists (containers, env, ...) by their merge key."""
    if not isinstance(patch, dict):
        return clone(patch)
    if patch.get("$patch") == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    result = clone(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(current, list):
            result[key] = _merge_list(key, current, value)
        else:
            result[key] = strategic_merge_patch(current, value)
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if field in _PRIMITIVE_MERGE_LISTS:
        return current + [v for v in patch if v not in current]
    key = _MERGE_KEYS.get(field)
    if field == "ports":
        container_ports = any("containerPort" in p for p in patch if isinstance(p, dict))
        key = "containerPort" if container_ports else "port"
    if key is None:
        return clone(patch)
    return _merge_list_by_key(current, patch, key)
