"""The emulator serves custom resources from a CustomResourceDefinition as the real API server
does: discovery, the status subresource split, structural-schema pruning and validation
(422 naming each field), optimistic concurrency, printer columns as a Table, and the real
kubectl reading them. All through kubernetes_asyncio (or kubectl) over HTTP."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kube_emulator.kubeconfig import write_kubeconfig

GROUP, VERSION, PLURAL = "example.dev", "v1", "widgets"
MERGE = "application/merge-patch+json"
KUBECTL = Path(__file__).resolve().parents[1] / ".venv" / "tools" / "bin" / "kubectl"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget",
                  "shortNames": ["wd"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size", "color"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10},
                            "color": {"type": "string", "enum": ["red", "blue"]},
                            "code": {"type": "string", "maxLength": 5,
                                     "pattern": "^[a-z]+$"},
                            "parts": {"type": "array", "minItems": 1,
                                      "items": {"type": "object", "required": ["id"],
                                                "properties": {"id": {"type": "string"}}}},
                            "labels": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                        },
                    },
                    "status": {"type": "object", "properties": {
                        "phase": {"type": "string"},
                        "observedGeneration": {"type": "integer"},
                        "extra": {"type": "object",
                                  "x-kubernetes-preserve-unknown-fields": True},
                    }},
                },
            }},
        }],
    },
}


def widget(name: str = "one", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"size": 3, "color": "red", **spec}}


async def _install(kube_api: client.ApiClient) -> dict[str, Any]:
    ext = client.ApiextensionsV1Api(kube_api)
    crd = await ext.create_custom_resource_definition(copy.deepcopy(WIDGET_CRD),
                                                      _preload_content=False)
    return dict(json.loads(await crd.read()))


def _custom(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


async def _create(kube_api: client.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = await _custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, body)
    return created


async def test_a_crd_is_established_and_served_in_discovery(kube_emulator, kube_api):
    stored = await _install(kube_api)
    conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert stored["status"]["acceptedNames"]["kind"] == "Widget"
    assert stored["spec"]["names"]["listKind"] == "WidgetList"
    groups = await client.ApisApi(kube_api).get_api_versions()
    assert GROUP in [g.name for g in groups.groups]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kube_emulator.url}/apis/{GROUP}/{VERSION}") as response:
            listing = await response.json()
    names = {r["name"]: r for r in listing["resources"]}
    assert set(names) == {PLURAL, f"{PLURAL}/status"}
    assert names[PLURAL]["namespaced"] is True and names[PLURAL]["shortNames"] == ["wd"]


async def test_spec_writes_bump_generation_and_ignore_status_and_status_writes_ignore_spec(
        kube_emulator, kube_api):
    await _install(kube_api)
    custom = _custom(kube_api)
    created = await _create(kube_api, {**widget(), "status": {"phase": "ignored"}})
    assert created["metadata"]["generation"] == 1 and "status" not in created
    created["spec"]["size"] = 4
    created["status"] = {"phase": "still ignored"}
    replaced = await custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "one", created)
    assert replaced["metadata"]["generation"] == 2 and "status" not in replaced
    replaced["spec"]["size"] = 9
    replaced["status"] = {"phase": "Ready", "observedGeneration": 2, "extra": {"any": [1]}}
    status = await custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "one", replaced)
    assert status["status"] == {"phase": "Ready", "observedGeneration": 2,
                                "extra": {"any": [1]}}
    assert status["spec"]["size"] == 4 and status["metadata"]["generation"] == 2
    patched = await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "one", {"status": {"phase": "Done"}},
        _content_type=MERGE)
    assert patched["status"]["phase"] == "Done" and patched["metadata"]["generation"] == 2


async def test_a_stale_resource_version_is_a_409_on_the_object_and_on_its_status(kube_api):
    await _install(kube_api)
    custom = _custom(kube_api)
    first = await _create(kube_api, widget())
    fresh = await custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "one", {"spec": {"size": 5}}, _content_type=MERGE)
    assert fresh["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    for call in (custom.replace_namespaced_custom_object,
                 custom.replace_namespaced_custom_object_status):
        stale = {**first, "status": {"phase": "x"}}
        with pytest.raises(ApiException) as caught:
            await call(GROUP, VERSION, "default", PLURAL, "one", stale)
        assert caught.value.status == 409
        assert "the object has been modified" in json.loads(caught.value.body)["message"]


async def test_schema_violations_are_a_422_naming_every_field(kube_api):
    await _install(kube_api)
    bad = widget(color="green", code="TooLongName",
                 parts=[{"nope": 1}], labels={"a": 1})
    bad["spec"]["size"] = 11
    with pytest.raises(ApiException) as caught:
        await _create(kube_api, bad)
    assert caught.value.status == 422
    status = json.loads(caught.value.body)
    causes = {(c["field"], c["message"]) for c in status["details"]["causes"]}
    assert causes == {
        ("spec.size", "Invalid value: 11: spec.size in body should be less than or equal to 10"),
        ("spec.color", 'Unsupported value: "green": supported values: "red", "blue"'),
        ("spec.code", "Too long: may not be longer than 5"),
        ("spec.code",
         """Invalid value: "TooLongName": spec.code in body should match '^[a-z]+$'"""),
        ("spec.parts[0].id", "Required value"),
        ("spec.labels.a", 'Invalid value: "integer": spec.labels.a in body must be of type '
                          'string: "integer"'),
    }
    assert status["message"].startswith('Widget.example.dev "one" is invalid: [')
    with pytest.raises(ApiException) as caught:
        await _create(kube_api, widget(size="3"))
    assert json.loads(caught.value.body)["details"]["causes"] == [{
        "reason": "FieldValueTypeInvalid", "field": "spec.size",
        "message": 'Invalid value: "string": spec.size in body must be of type integer: '
                   '"string"'}]
    missing = widget()
    del missing["spec"]["color"]
    with pytest.raises(ApiException) as caught:
        await _create(kube_api, missing)
    assert json.loads(caught.value.body)["details"]["causes"][0] == {
        "reason": "FieldValueRequired", "field": "spec.color", "message": "Required value"}


async def test_unknown_fields_are_pruned_unless_validation_is_strict(kube_emulator, kube_api):
    await _install(kube_api)
    created = await _create(kube_api, widget(surprise=True, parts=[{"id": "a", "x": 1}]))
    assert "surprise" not in created["spec"]
    assert created["spec"]["parts"] == [{"id": "a"}]
    async with aiohttp.ClientSession() as http:
        url = (f"{kube_emulator.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
               "?fieldValidation=Strict")
        async with http.post(url, json=widget("two", surprise=True)) as response:
            assert response.status == 400
            body = await response.json()
    assert body["message"] == ('Widget in version "v1" cannot be handled as a Widget: strict '
                               'decoding error: unknown field "spec.surprise"')


async def test_lists_answer_a_table_with_the_printer_columns(kube_emulator, kube_api):
    await _install(kube_api)
    await _create(kube_api, widget("one", size=2))
    created = await _create(kube_api, widget("two", color="blue"))
    await _custom(kube_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "two", {"status": {"phase": "Ready"}},
        _content_type=MERGE)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    async with aiohttp.ClientSession() as http:
        url = f"{kube_emulator.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
        async with http.get(url, headers={"Accept": accept}) as response:
            table = await response.json()
        async with http.get(url) as response:
            plain = await response.json()
    assert table["kind"] == "Table" and plain["kind"] == "WidgetList"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Size", "Color", "Phase", "Age"]
    cells = [row["cells"] for row in table["rows"]]
    assert [c[:4] for c in cells] == [["one", 2, "red", None], ["two", 3, "blue", "Ready"]]
    assert all(c[4].endswith("s") for c in cells)
    assert table["rows"][1]["object"]["metadata"]["uid"] == created["metadata"]["uid"]


async def test_deleting_the_crd_removes_its_objects_and_its_api(kube_emulator, kube_api):
    await _install(kube_api)
    await _create(kube_api, widget())
    await client.ApiextensionsV1Api(kube_api).delete_custom_resource_definition(
        f"{PLURAL}.{GROUP}")
    groups = await client.ApisApi(kube_api).get_api_versions()
    assert GROUP not in [g.name for g in groups.groups]
    with pytest.raises(ApiException) as caught:
        await _custom(kube_api).list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert caught.value.status == 404
    await _install(kube_api)
    listing = await _custom(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL)
    assert listing["items"] == []


def _kubectl(kubeconfig: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


async def test_real_kubectl_applies_a_crd_and_gets_its_printer_columns(kube_emulator, tmp_path):
    if not KUBECTL.is_file():
        pytest.fail(f"{KUBECTL} is missing: run `make kube-tools` (make test does)")
    kubeconfig = write_kubeconfig(str(kube_emulator.url), tmp_path / "kubeconfig")
    manifest = tmp_path / "widgets.json"
    manifest.write_text(json.dumps(WIDGET_CRD))
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps(widget("kubectl", size=7)))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _kubectl(kubeconfig, tmp_path, *args)

    applied = await asyncio.to_thread(run, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    created = await asyncio.to_thread(run, "apply", "-f", str(objects))
    assert created.returncode == 0, created.stderr
    shown = await asyncio.to_thread(run, "get", PLURAL)
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "COLOR", "PHASE", "AGE"]
    assert row.split()[:3] == ["kubectl", "7", "red"]
    rejected_path = tmp_path / "bad.json"
    rejected_path.write_text(json.dumps(widget("bad", size=0)))
    rejected = await asyncio.to_thread(run, "apply", "-f", str(rejected_path))
    assert rejected.returncode != 0
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal " \
           "to 1" in rejected.stderr
