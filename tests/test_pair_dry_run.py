"""A pair's own `policy.dry_run: true` is honoured by the service and the CLI's operations.

It used to be accepted and ignored (only the global `policy.dry_run` acted). Two pairs: `api`
has a policy of its own with `dry_run: true`, `web` follows the global policy; the same flip
request moves `web`'s traffic and only reports what it would do for `api`. Through
kubernetes_asyncio against the emulated API server.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from gatekeeper.config import load_config
from gatekeeper.operations import Operations
from gatekeeper.service.app import create_service
from kube_emulator import Emulator
from tests import service_support as support

pytestmark = pytest.mark.timeout(60)

PAIRS = [("api", "dr-api-blue", "dr-api-green", "dr-api-routing"),
         ("web", "dr-web-blue", "dr-web-green", "dr-web-routing")]


def _config(tmp_path: Any) -> Any:
    support.write_config(tmp_path, PAIRS, prometheus_url=None,
                         rules=[support.PODS_READY_RULE], policy={"auto_flip": False})
    path = tmp_path / "gatekeeper.yaml"
    document = yaml.safe_load(path.read_text())
    document["pairs"][0]["policy"] = {**document["policy"], "dry_run": True}
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


def _seed(kube_emulator: Emulator) -> None:
    objects: list[dict[str, Any]] = []
    for _name, blue, green, routing in PAIRS:
        objects.extend(support.seed(blue, green, routing, green_image=support.NEW))
    kube_emulator.load(objects)


async def test_the_cli_operations_honour_a_pairs_own_dry_run(
        tmp_path: Any, kube_emulator: Emulator, kube_api: client.ApiClient) -> None:
    _seed(kube_emulator)
    loaded = _config(tmp_path)
    ops = Operations(kube_api, loaded.config)
    api, web = loaded.config.pairs
    dry = await ops.flip(api)
    assert not dry.changed and dry.details.get("dry_run"), dry
    assert dry.reasons[0].startswith("dry-run: would flip"), dry.reasons
    assert await support.route_target(kube_api, "dr-api-routing") == "dr-api-blue"
    real = await ops.flip(web)
    assert real.changed and real.active == "dr-web-green", real.reasons
    assert await support.route_target(kube_api, "dr-web-routing") == "dr-web-green"


async def test_the_service_honours_a_pairs_own_dry_run(
        tmp_path: Any, kube_emulator: Emulator, kube_api: client.ApiClient,
        aiohttp_server: Any) -> None:
    _seed(kube_emulator)
    service = create_service(_config(tmp_path), kube_api, token=support.TOKEN)
    server = await aiohttp_server(service.app)
    url = str(server.make_url("")).rstrip("/")
    try:
        await support.wait_until(lambda: service.controller.ticks >= 1, within=10,
                                 what="first evaluation")
        async with aiohttp.ClientSession() as http:
            status_api, body_api = await support.post_json(
                http, f"{url}/api/v1/pairs/api/flip", {"force": True})
            status_web, body_web = await support.post_json(
                http, f"{url}/api/v1/pairs/web/flip", {"force": True})
    finally:
        await service.close()
    assert status_api == 200 and not body_api["changed"] and body_api["dry_run"], body_api
    assert await support.route_target(kube_api, "dr-api-routing") == "dr-api-blue"
    assert status_web == 200 and body_web["changed"] and not body_web["dry_run"], body_web
    assert await support.route_target(kube_api, "dr-web-routing") == "dr-web-green"
    stored = kube_emulator.get_object("v1", "ConfigMap", "gatekeeper-state", "gatekeeper")
    assert stored is not None and "api" not in stored["data"], stored["data"]
