"""Fixtures for tests that run several replicas against the emulated API server
(tests/test_leadership.py, tests/test_sharding.py): the namespace their Leases live in, one
task group that owns the replicas' loops, and one ApiClient per replica."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from gatekeeper import tasks
from tests.fixtures.kube import api_client_for

NAMESPACE = "gatekeeper"
REPLICAS = 5
"""ApiClients made per test: the most replicas one test runs."""


@pytest.fixture
async def namespace(kube_api: client.ApiClient) -> str:
    await client.CoreV1Api(kube_api).create_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    return NAMESPACE


@pytest.fixture
async def group() -> AsyncIterator[tasks.Tasks]:
    owner = tasks.Tasks(name="replicas", shutdown_timeout=5.0)
    yield owner
    await owner.close()


@pytest.fixture
async def replica_clients(kube_emulator) -> AsyncIterator[list[client.ApiClient]]:
    """One ApiClient per replica, as separate processes would have."""
    clients = [api_client_for(str(kube_emulator.url)) for _ in range(REPLICAS)]
    yield clients
    for api in clients:
        await api.close()
