"""Pure building blocks of the emulator: JSON Patch, merge patches, selectors, times,
fault rules, and the store's revision/history rules."""

from __future__ import annotations

import pytest

from kube_emulator import patching
from kube_emulator.errors import ApiError
from kube_emulator.faults import FaultInjector, FaultRule
from kube_emulator.operations import ObjectAPI
from kube_emulator.resources import NAMESPACES, lookup
from kube_emulator.selectors import FieldSelector, LabelSelector, SelectorError
from kube_emulator.store import ObjectStore
from kube_emulator.timefmt import parse_rfc3339, rfc3339_nano

CONFIGMAPS = lookup("", "v1", "configmaps")


def test_json_patch_operations_and_atomicity():
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    ops = [
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "add", "path": "/a/b/0", "value": 0},
        {"op": "move", "from": "/c", "path": "/d"},
        {"op": "copy", "from": "/d", "path": "/e"},
        {"op": "remove", "path": "/a/b/1"},
        {"op": "replace", "path": "/e", "value": "y"},
        {"op": "test", "path": "/a/b", "value": [0, 2, 3]},
        {"op": "add", "path": "/k~1v", "value": True},
    ]
    assert patching.json_patch(doc, ops) == {"a": {"b": [0, 2, 3]}, "d": "x", "e": "y", "k/v": True}
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}
    with pytest.raises(patching.PatchConflict):
        patching.json_patch(doc, [{"op": "test", "path": "/a/b/0", "value": True}])
    with pytest.raises(patching.PatchConflict):
        patching.json_patch(doc, [{"op": "remove", "path": "/missing"}])
    with pytest.raises(patching.MalformedPatch):
        patching.json_patch(doc, {"op": "add"})
    with pytest.raises(patching.MalformedPatch):
        patching.json_patch(doc, [{"op": "frobnicate", "path": "/a"}])


def test_merge_and_strategic_merge_patch():
    doc = {"spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "api", "image": "a:1"}, {"name": "proxy", "image": "p:1"}]}}}}
    merged = patching.merge_patch(doc, {"spec": {"replicas": 3, "template": None}})
    assert merged == {"spec": {"replicas": 3}}
    strategic = patching.strategic_merge_patch(doc, {"spec": {"template": {"spec": {
        "containers": [{"name": "proxy", "$patch": "delete"}, {"name": "api", "image": "a:2"}]}}}})
    assert strategic["spec"]["template"]["spec"]["containers"] == [{"name": "api", "image": "a:2"}]
    assert patching.strategic_merge_patch({"metadata": {"finalizers": ["a"]}},
                                          {"metadata": {"finalizers": ["b", "a"]}}) == {
        "metadata": {"finalizers": ["a", "b"]}}


def test_label_selector_grammar_and_semantics():
    labels = {"app": "api", "tier": "web", "n": "5"}
    assert LabelSelector.parse("app=api,tier in (web,db),!missing,n>3").matches(labels)
    assert LabelSelector.parse("missing!=x,missing notin (a)").matches(labels)
    assert not LabelSelector.parse("tier notin (web)").matches(labels)
    assert LabelSelector.parse("").matches({})
    selector = LabelSelector.from_dict({"matchLabels": {"app": "api"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web"]}]})
    assert selector.render() == "app=api,tier in (web)"
    for bad in ("app in ()", "=x", "app=a b", "app,,tier"):
        with pytest.raises(SelectorError):
            LabelSelector.parse(bad)


def test_field_selector_rejects_unknown_fields_and_unescapes():
    obj = {"metadata": {"name": "a,b"}, "status": {"phase": "Running"}}
    allowed = ("metadata.name", "status.phase")
    assert FieldSelector.parse(r"metadata.name=a\,b,status.phase!=Pending", allowed).matches(obj)
    with pytest.raises(SelectorError):
        FieldSelector.parse("spec.nodeName=x", allowed)


def test_timestamps():
    assert parse_rfc3339("2024-05-01T10:00:00Z") == parse_rfc3339("2024-05-01T12:00:00+02:00")
    assert parse_rfc3339("2024-05-01T10:00:00.250Z") % 1 == pytest.approx(0.25)
    with pytest.raises(ValueError):
        parse_rfc3339("2024-05-01T10:00:00")
    assert rfc3339_nano(0.5) == "1970-01-01T00:00:00.500000000Z"


def test_fault_rules_validate_and_match():
    with pytest.raises(ValueError):
        FaultRule()
    with pytest.raises(ValueError):
        FaultRule.from_dict({"status": 500, "shares": 1})
    injector = FaultInjector(seed=1)
    injector.add(status=500, verb="PATCH", path=r"/ingressroutes/", times=1)
    assert injector.pick("PATCH", "patch", "/apis/traefik.io/v1alpha1/ingressroutes/x") is not None
    assert injector.pick("PATCH", "patch", "/apis/traefik.io/v1alpha1/ingressroutes/x") is None
    assert injector.counters()["total"] == 1


def test_store_revisions_history_and_expiry():
    store = ObjectStore(history_size=2)
    for name in ("a", "b", "c"):
        store.create(NAMESPACES, {"metadata": {"name": name}})
    assert store.resource_version == "4"
    with pytest.raises(ApiError) as exc:
        store.watch(NAMESPACES, None, "1", lambda _o: True)
    assert exc.value.code == 410 and exc.value.reason == "Expired"
    watcher = store.watch(NAMESPACES, None, "2", lambda _o: True)
    assert watcher.pending()
    with pytest.raises(ApiError) as exc:
        store.update(NAMESPACES, {"metadata": {"name": "a"}}, expected_rv="1")
    assert exc.value.code == 409
    compacted = store.expire_history()
    with pytest.raises(ApiError):
        store.watch(NAMESPACES, None, "4", lambda _o: True)
    store.forget(store.watch(NAMESPACES, None, compacted, lambda _o: True))


def _names(objects):
    return [(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects]


def test_store_lists_in_key_order_across_namespaces_after_adds_and_deletes():
    """Objects are kept per namespace (a namespaced read touches only its own); lists are
    still in namespace/name order, and follow every add and delete."""
    store = ObjectStore()
    for namespace, name in [("b", "y"), ("a", "z"), ("b", "x"), ("a", "a"), ("c", "m")]:
        store.create(CONFIGMAPS, {"metadata": {"name": name, "namespace": namespace}})
    assert _names(store.iter(CONFIGMAPS)) == [("a", "a"), ("a", "z"), ("b", "x"), ("b", "y"),
                                              ("c", "m")]
    assert _names(store.iter(CONFIGMAPS, "b")) == [("b", "x"), ("b", "y")]
    store.create(CONFIGMAPS, {"metadata": {"name": "w", "namespace": "b"}})
    store.delete(CONFIGMAPS, "b", "y")
    store.delete(CONFIGMAPS, "c", "m")
    assert _names(store.iter(CONFIGMAPS, "b")) == [("b", "w"), ("b", "x")]
    assert _names(store.iter(CONFIGMAPS, "c")) == []
    assert _names(store.list(CONFIGMAPS)) == [("a", "a"), ("a", "z"), ("b", "w"), ("b", "x")]
    assert store.get(CONFIGMAPS, "b", "y") is None and store.peek(CONFIGMAPS, "b", "w")
    # Deleting while iterating (as namespace cleanup does) visits each object once.
    for obj in store.iter(CONFIGMAPS, "a"):
        store.delete(CONFIGMAPS, "a", obj["metadata"]["name"])
    assert _names(store.iter(CONFIGMAPS)) == [("b", "w"), ("b", "x")]
    with pytest.raises(ApiError) as exc:
        store.create(CONFIGMAPS, {"metadata": {"name": "x", "namespace": "b"}})
    assert exc.value.code == 409


def test_a_write_that_changes_nothing_makes_no_revision_and_no_event():
    store = ObjectStore()
    api = ObjectAPI(store)
    api.ensure_namespace("a")
    api.create(CONFIGMAPS, "a", {"metadata": {"name": "c"}, "data": {"k": "v"}})
    revision = store.resource_version
    watcher = store.watch(CONFIGMAPS, "a", revision, lambda _o: True)
    same = api.mutate(CONFIGMAPS, "a", "c", lambda o: o["data"].__setitem__("k", "v"))
    assert same is not None and same["metadata"]["resourceVersion"] == revision
    assert store.resource_version == revision and not watcher.pending()
    changed = api.mutate(CONFIGMAPS, "a", "c", lambda o: o["data"].__setitem__("k", "w"))
    assert changed is not None and changed["metadata"]["resourceVersion"] != revision
    assert watcher.pending()
