"""gatekeeper/permissions.py is true: every API call a whole release makes, recorded by the
emulated API server, is listed for the namespace it targets, and what the release exercises
of the list is really called (the Helm chart's Roles are tested against the same list in
tests/test_helm_chart.py).

The scenario runs the service with leader election, every kubernetes and logs check
(config parity with Secrets), and approve, flip, a forced scale-down and a rollback that
scales back up, all through the HTTP API, against the emulator and the real client.
"""

from __future__ import annotations

import aiohttp
import pytest

from gatekeeper import crd, permissions
from gatekeeper.service.app import create_service
from kube_emulator import paths
from tests.service_support import NEW, TOKEN, get_json, post_json, seed, wait_until, write_config

pytestmark = pytest.mark.timeout(90)

BLUE, GREEN, ROUTING, OWN = "perm-blue", "perm-green", "perm-routing", "gatekeeper"
RULES = [
    {"name": f"k8s-{check}", "source": "kubernetes", "check": check, "pass": [target]}
    for check, target in (("pods_ready", "== 1"), ("restarts", "== 0"),
                          ("config_parity", ">= 0"), ("images_differ", "== 1"))
] + [{"name": "log-errors", "source": "logs", "logs": {"pattern": "(?i)error"},
      "pass": ["<= 1000"]}]
# Listed, but not called by this scenario: its route is an IngressRoute in traefik.io.
NOT_EXERCISED = {
    *((group, "traefikservices", verb) for group in ("traefik.io", "traefik.containo.us")
      for verb in ("get", "list", "watch", "patch")),
    *(("traefik.containo.us", "ingressroutes", verb) for verb in ("list", "watch", "patch")),
}
# Readable by every authenticated client (system:discovery): no Role grants them.
DISCOVERY = ("/api", "/apis", "/version")


def _call(record, registry) -> tuple[str | None, permissions.Triple] | None:
    """(namespace or None, (apiGroup, resource, verb)) of a recorded request, its resource
    as the emulator serves them (REGISTRY: with the CRDs loaded); None for discovery."""
    if record.path.rstrip("/") in DISCOVERY or record.path.rstrip("/").count("/") <= 2:
        return None
    target = paths.parse(record.path, registry)
    if target.resource is None:
        return None  # /apis/{group}/{version}: discovery too
    resource = target.resource.plural + (f"/{target.subresource}" if target.subresource else "")
    verb = "update" if record.verb == "replace" else record.verb
    return target.namespace, (target.group, resource, verb)


async def test_every_call_of_a_release_is_listed_for_its_namespace(
        tmp_path, kube_emulator, kube_api, aiohttp_server):
    """Called - listed (per namespace; cluster-wide: the cluster scope) is empty; listed -
    called is only NOT_EXERCISED (the cluster scope's calls on pair objects are made only
    when there are some)."""
    # The pair watch lists and watches BlueGreenPairs cluster-wide (objects.enabled).
    kube_emulator.load([crd.definition(), *seed(BLUE, GREEN, ROUTING, green_image=NEW)])
    for ns in (BLUE, GREEN):
        kube_emulator.load([
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": ns},
             "data": {"LOG_LEVEL": "info"}},
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "db", "namespace": ns}, "data": {"password": "c2VjcmV0"}}])
    loaded = write_config(
        tmp_path, [("api", BLUE, GREEN, ROUTING)], prometheus_url=None, rules=RULES,
        policy={"auto_flip": False, "soak": 0, "consecutive_passes": 1,
                "rollback_when_scaled_down": "scale_up_then_flip"},
        leader_election={"enabled": True, "namespace": OWN, "identity": "perm-0"},
        state={"namespace": OWN}, kubernetes={"read_secrets": True})
    config = loaded.config
    kube_emulator.requests.clear()
    service = create_service(loaded, kube_api, token=TOKEN)
    server = await aiohttp_server(service.app)
    pair = str(server.make_url("/api/v1/pairs/api"))
    try:
        await wait_until(lambda: service.controller.ticks > 1, within=20, what="two ticks")
        async with aiohttp.ClientSession() as http:
            assert (await post_json(http, f"{pair}/approve", {}))[0] == 200
            status, body = await get_json(http, f"{pair}/flip-check?wait=30")
            assert status == 200 and body["safe"] is True, body
            status, body = await post_json(http, f"{pair}/flip", {})
            assert status == 200 and body["changed"], body
            status, body = await post_json(http, f"{pair}/scale-down", {"force": True})
            assert status == 200 and body["changed"], body
            status, body = await post_json(http, f"{pair}/rollback", {"reason": "test"})
            assert status == 200 and body["changed"], body
    finally:
        await service.close()
    switches = permissions.switches_on(config)
    allowed = {ns: permissions.granted(scopes, switches=switches)
               for ns, scopes in permissions.namespace_scopes(config).items()}
    called: dict[str, set[permissions.Triple]] = {}
    for record in kube_emulator.requests.records():
        call = _call(record, kube_emulator.api.registry)
        if call is None:
            continue
        namespace, triple = call
        called.setdefault(namespace or "*", set()).add(triple)
    cluster = {"*": permissions.granted(("cluster",), switches=switches)}
    unlisted = {ns: triples - {**allowed, **cluster}.get(ns, frozenset())
                for ns, triples in called.items()}
    assert {ns: t for ns, t in unlisted.items() if t} == {}, "called but not in permissions.py"
    # Both pair namespaces play both roles over a release; this one scales only one of them.
    def bucket(ns: str) -> str:
        return "pair namespaces" if ns in (BLUE, GREEN) else ns

    listed = {(bucket(ns), t) for ns, triples in allowed.items() for t in triples}
    made = {(bucket(ns), t) for ns, triples in called.items() for t in triples}
    assert {(ns, t) for ns, t in listed - made if t not in NOT_EXERCISED} == set(), (
        "in permissions.py but never called")


@pytest.mark.parametrize(("message", "namespace", "said"), [
    ('pods is forbidden: User "system:serviceaccount:gatekeeper:gatekeeper" cannot list '
     'resource "pods" in API group "" in the namespace "shop-green"', None,
     "list pods in namespace shop-green"),
    ('ingressroutes.traefik.io "api" is forbidden: User "x" cannot get resource '
     '"ingressroutes" in API group "traefik.io" in the namespace "routing"', "other",
     "get ingressroutes in namespace routing"),
    ("forbidden", "shop-blue", "a call in namespace shop-blue"),
])
def test_a_refused_call_is_named_from_the_api_servers_message(message, namespace, said):
    assert permissions.forbidden_call(message, namespace) == said


def test_listed_pair_namespaces_become_scopes():
    assert permissions.listed_namespaces(
        ["a", {"namespace": "r", "kinds": ["routes"]}, {"namespace": "a", "kinds": ["tests"]}]
    ) == {"a": frozenset({"pairs", "tests"}), "r": frozenset({"routes"})}
