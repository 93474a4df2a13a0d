"""kubeclient: a real client built from configuration, talking to the emulated API server."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client

from gatekeeper import kubeclient
from gatekeeper.config import KubernetesConfig


async def test_kubeconfig_mode_reaches_the_server(kube_emulator, tmp_path):
    """A kubeconfig file and context give a working client; the file is not rewritten."""
    path = kube_emulator.write_kubeconfig(tmp_path / "config")
    before = path.read_text()
    settings = KubernetesConfig(mode="kubeconfig", kubeconfig=str(path), context="kube-emulator")
    async with kubeclient.connect(settings) as api:
        namespaces = await kubeclient.read_json(client.CoreV1Api(api).list_namespace)
    assert "items" in namespaces
    assert path.read_text() == before


async def test_auto_mode_outside_a_cluster_uses_the_kubeconfig(kube_emulator, tmp_path,
                                                                monkeypatch):
    """Without a service account, `auto` falls back to the kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = kube_emulator.write_kubeconfig(tmp_path / "config")
    async with kubeclient.connect(KubernetesConfig(kubeconfig=str(path))) as api:
        assert api.configuration.host == kube_emulator.url


async def test_calls_get_the_request_timeout(kube_emulator, tmp_path):
    """A hanging API server cannot hang a call: the configured timeout applies by default."""
    path = kube_emulator.write_kubeconfig(tmp_path / "config")
    kube_emulator.faults.add(delay=1.5, verb="list", path="/namespaces$")
    settings = KubernetesConfig(kubeconfig=str(path), request_timeout="300ms")
    async with kubeclient.connect(settings) as api:
        with pytest.raises(TimeoutError) as caught:
            await kubeclient.read_json(client.CoreV1Api(api).list_namespace)
    assert kubeclient.describe_error(caught.value, 0.3) == (
        "no answer from the API server within 0.3s")


async def test_read_json_raises_api_exception_with_the_server_message(kube_api):
    """Non-2xx answers raise ApiException; describe_error keeps the server's message."""
    with pytest.raises(kubeclient.ApiException) as caught:
        await kubeclient.read_json(client.CoreV1Api(kube_api).read_namespace, "missing-ns")
    assert caught.value.status == 404
    assert kubeclient.describe_error(caught.value).startswith("HTTP 404 Not Found: ")
    assert "missing-ns" in kubeclient.describe_error(caught.value)


def test_in_cluster_detection(tmp_path):
    """In a pod: the service host variable is set and the token file is mounted."""
    token = tmp_path / "token"
    assert not kubeclient.in_cluster_available({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, token)
    token.write_text("t")
    assert kubeclient.in_cluster_available({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, token)
    assert not kubeclient.in_cluster_available({}, token)


async def test_own_pool_keeps_settings_and_never_waits_for_the_shared_pool(kube_emulator):
    """A client from `own_pool` reaches the same server with the same timeout, and gets
    through while the only connection of the original's pool is busy."""
    configuration = client.Configuration(host=str(kube_emulator.url))
    configuration.connection_pool_maxsize = 1
    kube_emulator.faults.add(delay=2.0, verb="list", path="/namespaces$")
    api = kubeclient.TimeoutApiClient(configuration, request_timeout=5.0)
    own = kubeclient.own_pool(api, connections=2)
    try:
        assert isinstance(own, kubeclient.TimeoutApiClient)
        assert own.request_timeout == 5.0 and own.configuration.host == kube_emulator.url
        assert own.configuration.connection_pool_maxsize == 2
        assert api.configuration.connection_pool_maxsize == 1
        slow = asyncio.ensure_future(kubeclient.read_json(client.CoreV1Api(api).list_namespace))
        await asyncio.sleep(0.3)  # the slow list holds the shared pool's only connection
        queued = asyncio.ensure_future(kubeclient.read_json(
            client.CoreV1Api(api).read_namespace, "default"))
        answer = await asyncio.wait_for(kubeclient.read_json(
            client.CoreV1Api(own).read_namespace, "default"), 1.5)
        assert answer["metadata"]["name"] == "default"
        assert not slow.done() and not queued.done()
        await asyncio.gather(slow, queued)
    finally:
        await own.close()
        await api.close()
