"""Which Traefik API group holds each route: the configured one, checked, or a discovered one.

Traefik serves its CRDs under `traefik.io` (v2.10+, v3) and, before v3, also under
`traefik.containo.us` (the design document's group). A route without `api_group` in the
configuration gets the group the cluster serves, from API discovery (`GET /apis`, which
every authenticated client may read); when both are served, the group that holds the
route object. A group the cluster does not serve is a configuration error naming the group
and the key to set, raised before anything starts, not a 404 or "cluster unreachable" later.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client

from gatekeeper import errors, kubeclient
from gatekeeper.config import Config, PairConfig, RouteRef
from gatekeeper.routers.base import ROUTE_PLURALS, TRAEFIK_GROUPS, TRAEFIK_VERSION

__all__ = ["RouteGroupError", "choose_groups", "resolve_object_pair", "resolve_route_groups",
           "served_groups"]


class RouteGroupError(Exception):
    """Routes whose Traefik API group the cluster does not serve; one line per route."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _key(index: int, pair: PairConfig, route_index: int) -> str:
    return f"pairs[{index}].routes[{route_index}].api_group (pair {pair.name})"


def _describe(route: RouteRef) -> str:
    return f"{route.kind} {route.namespace}/{route.name}"


def _served_text(served: frozenset[str]) -> str:
    return ("it serves " + " and ".join(sorted(served))) if served else (
        "it serves no Traefik API group: are Traefik's CRDs installed?")


def choose_groups(config: Config, served: frozenset[str],
                  holders: Mapping[tuple[int, int], str | None]) -> Config:
    """CONFIG with every route's api_group decided. Pure.

    SERVED: the Traefik groups the cluster serves at v1alpha1. HOLDERS: for unset routes
    checked in both groups, the group holding the object (None: neither). RouteGroupError
    lists every route that cannot be served.
    """
    problems: list[str] = []
    pairs: list[PairConfig] = []
    for index, pair in enumerate(config.pairs):
        pairs.append(_choose_pair(
            pair, served, {r: g for (i, r), g in holders.items() if i == index},
            functools.partial(_key, index, pair), problems))
    if problems:
        raise RouteGroupError(problems)
    return config.model_copy(update={"pairs": tuple(pairs)})


def _choose_pair(pair: PairConfig, served: frozenset[str], holders: Mapping[int, str | None],
                 key: Callable[[int], str], problems: list[str]) -> PairConfig:
    """PAIR with its routes' api_group decided; each problem appended to PROBLEMS, naming
    the route's key (`key(route_index)`)."""
    routes: list[RouteRef] = []
    for route_index, route in enumerate(pair.routes):
        if "api_group" in route.model_fields_set:
            if route.api_group not in served:
                others = sorted(served - {route.api_group})
                fix = (f"set {key(route_index)} to {others[0]}" if others else
                       f"install Traefik's CRDs for {route.api_group}")
                problems.append(
                    f"{_describe(route)}: API group {route.api_group}/{TRAEFIK_VERSION} "
                    f"is not served by the cluster ({_served_text(served)}): {fix}")
            routes.append(route)
            continue
        candidates = [group for group in TRAEFIK_GROUPS if group in served]
        if not candidates:
            problems.append(
                f"{_describe(route)}: neither {' nor '.join(TRAEFIK_GROUPS)} "
                f"({TRAEFIK_VERSION}) is served by the cluster, so no API group could be "
                f"discovered: install Traefik's CRDs, or set {key(route_index)}")
            routes.append(route)
            continue
        group = holders.get(route_index) or candidates[0]
        routes.append(route.model_copy(update={"api_group": group}))
    return pair.model_copy(update={"routes": tuple(routes)})


async def resolve_object_pair(api: client.ApiClient, pair: PairConfig,
                              served: frozenset[str]) -> PairConfig:
    """One pair read from a BlueGreenPair object with its routes' API groups decided
    (SERVED from `served_groups`); RouteGroupError naming `spec.routes[i].api_group`."""
    holders: dict[int, str | None] = {}
    if len(served) > 1:
        for route_index, route in enumerate(pair.routes):
            if "api_group" not in route.model_fields_set:
                holders[route_index] = await _holder(api, route)
    problems: list[str] = []
    chosen = _choose_pair(pair, served, holders,
                          lambda route_index: f"spec.routes[{route_index}].api_group",
                          problems)
    if problems:
        raise RouteGroupError(problems)
    return chosen


async def served_groups(api: client.ApiClient) -> frozenset[str]:
    """The Traefik groups the API server lists in discovery with version v1alpha1.

    RouteGroupError when discovery is refused (403, 404, ...); a transient failure (which
    kubeclient's client has already retried), no connection or no answer propagates as the
    client raised it: the cluster is unreachable or failing.
    """
    try:
        listing: dict[str, Any] = await kubeclient.read_json(
            client.ApisApi(api).get_api_versions)
    except errors.APIError as exc:
        if kubeclient.transient(exc):
            raise
        raise RouteGroupError([
            f"API discovery (GET /apis) refused: {kubeclient.describe_error(exc)}; set "
            "api_group on every route (pairs[].routes[].api_group)"]) from exc
    served = set()
    for group in listing.get("groups") or []:
        versions = {v.get("version") for v in group.get("versions") or []}
        if group.get("name") in TRAEFIK_GROUPS and TRAEFIK_VERSION in versions:
            served.add(str(group["name"]))
    return frozenset(served)


async def _holder(api: client.ApiClient, route: RouteRef) -> str | None:
    """The first Traefik group (traefik.io first) holding the route object, else None."""
    objects = client.CustomObjectsApi(api)
    for group in TRAEFIK_GROUPS:
        try:
            await kubeclient.read_json(objects.get_namespaced_custom_object, group,
                                       TRAEFIK_VERSION, route.namespace, ROUTE_PLURALS[route.kind],
                                       route.name)
        except errors.APINotFoundError:
            continue
        return group
    return None


async def resolve_route_groups(api: client.ApiClient, config: Config) -> Config:
    """CONFIG with every route's API group checked against, or found by, API discovery."""
    served = await served_groups(api)
    holders: dict[tuple[int, int], str | None] = {}
    if len(served) > 1:
        for index, pair in enumerate(config.pairs):
            for route_index, route in enumerate(pair.routes):
                if "api_group" not in route.model_fields_set:
                    holders[(index, route_index)] = await _holder(api, route)
    return choose_groups(config, served, holders)
