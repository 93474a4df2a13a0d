"""Watch the pairs' Pods, Deployments and route objects; keep the latest of each in memory.

`targets` plans the streams (one per resource and namespace, or cluster-wide past
`max_streams`); `types` holds the data they share (events, `StreamState`,
`WatchSettings`); `streams` runs them (the `Watcher`: list, watch, resume, re-list on 410) and
serves the cache (`Watcher.listed`, current objects only). Everything is importable from
here, as before the split.
"""

from gatekeeper.watching.streams import Watcher
from gatekeeper.watching.targets import (
    ALL_NAMESPACES,
    DEPLOYMENTS,
    PODS,
    ROUTE_VERSION,
    Resource,
    Scope,
    Target,
    route_resource,
    targets_for,
)
from gatekeeper.watching.types import EventHandler, ObjectKey, StreamState, WatchSettings

__all__ = [
    "ALL_NAMESPACES",
    "DEPLOYMENTS",
    "PODS",
    "ROUTE_VERSION",
    "EventHandler",
    "ObjectKey",
    "Resource",
    "Scope",
    "StreamState",
    "Target",
    "WatchSettings",
    "Watcher",
    "route_resource",
    "targets_for",
]
