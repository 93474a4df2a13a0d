"""`/_emulator/...` endpoints: test and demo controls that a real cluster does not have
(append pod logs, flip readiness, crash containers, inject faults, break watches)."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from .emulator import Emulator
from .errors import bad_request
from .keys import EMULATOR


def _emulator(request: web.Request) -> Emulator:
    return request.app[EMULATOR]


def _ok(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def _json(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise bad_request("a JSON body is required")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def _lines(body: dict[str, Any]) -> list[str]:
    lines = body.get("lines")
    if isinstance(lines, str):
        return [lines]
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise bad_request('"lines" must be a list of strings')
    return lines


async def index(request: web.Request) -> web.Response:
    """Summary of the emulator's state."""
    emu = _emulator(request)
    return _ok({
        "url": emu.url,
        "resourceVersion": emu.store.resource_version,
        "config": {"ready_delay": emu.ready_delay, "bookmark_interval": emu.bookmark_interval},
        "faults": emu.faults.counters()["total"],
        "pods": len(emu.pods()),
        "openWatches": emu.open_watches,
    })


async def load_objects(request: web.Request) -> web.Response:
    """POST manifests (YAML or JSON, one object, a list or `kind: List`)."""
    raw = (await request.read()).decode()
    try:
        parsed = json.loads(raw) if request.content_type == "application/json" else raw
        loaded = _emulator(request).load(parsed)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(str(exc)) from None
    return _ok({"loaded": [
        {"kind": o.get("kind"), "namespace": o["metadata"].get("namespace"),
         "name": o["metadata"]["name"]} for o in loaded
    ]}, 201)


async def append_pod_logs(request: web.Request) -> web.Response:
    """POST {"container"?, "lines": [...], "timestamp"?} to one pod."""
    body = await _json(request)
    ns, pod = request.match_info["namespace"], request.match_info["pod"]
    count = _emulator(request).append_logs(
        ns, pod, _lines(body), container=body.get("container"), timestamp=body.get("timestamp"))
    return _ok({"appended": count, "pods": [pod]})


async def append_selector_logs(request: web.Request) -> web.Response:
    """POST lines to every pod matching ?labelSelector= in the namespace."""
    body = await _json(request)
    selector = request.query.get("labelSelector", "")
    pods = _emulator(request).append_logs_by_selector(
        request.match_info["namespace"], selector, _lines(body),
        container=body.get("container"), timestamp=body.get("timestamp"))
    return _ok({"pods": pods})


async def pod_ready(request: web.Request) -> web.Response:
    """POST {"ready": bool, "container"?}: force readiness."""
    body = await _json(request, required=False)
    pod = _emulator(request).set_pod_ready(
        request.match_info["namespace"], request.match_info["pod"],
        bool(body.get("ready", True)), container=body.get("container"))
    return _ok(pod)


async def pod_restart(request: web.Request) -> web.Response:
    """POST {"container"?, "count"?, "ready"?}: bump restartCount (crash simulation)."""
    body = await _json(request, required=False)
    pod = _emulator(request).restart_container(
        request.match_info["namespace"], request.match_info["pod"],
        container=body.get("container"), count=int(body.get("count", 1)),
        ready=body.get("ready"))
    return _ok(pod)


async def script_image(request: web.Request) -> web.Response:
    """POST {"image": "...", "runs": [{"exitCode", "seconds", "logs"}, ...]}: what the image
    does when a Job's pod runs it (kube_emulator.programs)."""
    body = await _json(request)
    image, runs = body.get("image"), body.get("runs")
    if not isinstance(image, str) or not isinstance(runs, list) or \
            not all(isinstance(r, dict) for r in runs):
        raise bad_request('"image" must be a string and "runs" a list of objects')
    _emulator(request).script_image(image, runs)
    return _ok({"image": image, "runs": len(runs)})


async def clear_image_scripts(request: web.Request) -> web.Response:
    """Forget every image script."""
    _emulator(request).programs.clear()
    return _ok({"images": 0})


async def get_config(request: web.Request) -> web.Response:
    """Current tunables."""
    emu = _emulator(request)
    return _ok({"ready_delay": emu.ready_delay, "bookmark_interval": emu.bookmark_interval,
                "clock_offset": emu.clock_offset, "watch_lag": emu.watch_lag})


async def set_config(request: web.Request) -> web.Response:
    """POST {"ready_delay"?, "bookmark_interval"?, "clock_offset"?, "watch_lag"?}."""
    body = await _json(request)
    emu = _emulator(request)
    try:
        if "ready_delay" in body:
            emu.ready_delay = float(body["ready_delay"])
        if "bookmark_interval" in body:
            emu.bookmark_interval = max(0.05, float(body["bookmark_interval"]))
        if "clock_offset" in body:
            emu.clock_offset = float(body["clock_offset"])
        if "watch_lag" in body:
            emu.watch_lag = max(0.0, float(body["watch_lag"]))
    except (TypeError, ValueError) as exc:
        raise bad_request(str(exc)) from None
    return await get_config(request)


async def get_faults(request: web.Request) -> web.Response:
    """Rules and injection counters."""
    return _ok(_emulator(request).faults.counters())


async def set_faults(request: web.Request) -> web.Response:
    """POST {"rules": [...], "seed"?, "append"?}; a bare list of rules also works."""
    raw = await request.read()
    try:
        body = json.loads(raw or b"{}")
        if isinstance(body, list):
            body = {"rules": body}
        faults = _emulator(request).faults
        faults.configure(body.get("rules") or [], seed=body.get("seed"),
                         append=bool(body.get("append", False)))
    except (TypeError, ValueError, AttributeError) as exc:
        raise bad_request(f"invalid fault rules: {exc}") from None
    return _ok(faults.counters())


async def clear_faults(request: web.Request) -> web.Response:
    """Remove all fault rules."""
    faults = _emulator(request).faults
    faults.clear()
    return _ok(faults.counters())


async def drop_watches(request: web.Request) -> web.Response:
    """Close every open watch connection."""
    return _ok({"dropped": _emulator(request).drop_watches()})


async def expire_watches(request: web.Request) -> web.Response:
    """Compact history so watches from earlier resourceVersions get 410 (?drop=true also
    closes open watches, forcing clients to re-watch from their last version now)."""
    drop = request.query.get("drop", "false").lower() in ("true", "1")
    compacted = _emulator(request).expire_watches(drop=drop)
    return _ok({"compactedResourceVersion": compacted, "dropped": drop})


async def get_requests(request: web.Request) -> web.Response:
    """Recent requests, filterable by ?method=, ?path= (substring), ?verb=, ?limit= (the
    last N; 0: none, only the counts), how many recorded ones matched (`matched`), and the
    count of every request received (`total`, `by_verb`: not bounded by the log size)."""
    query = request.query
    log = _emulator(request).requests
    records = log.records(
        method=query.get("method"), path_contains=query.get("path"), verb=query.get("verb"))
    matched = len(records)
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise bad_request("limit must be an integer") from None
        if limit < 0:
            raise bad_request("limit must not be negative")
        records = records[max(0, len(records) - limit):]
    return _ok({"requests": [r.to_dict() for r in records], "matched": matched,
                "total": log.total, "by_verb": log.by_verb()})


async def clear_requests(request: web.Request) -> web.Response:
    """Forget recorded requests and reset the counts."""
    _emulator(request).requests.clear()
    return _ok({"requests": [], "total": 0, "by_verb": {}})


def add_routes(app: web.Application) -> None:
    """Register the admin endpoints on `app` (which holds the emulator under EMULATOR)."""
    r = app.router
    r.add_get("/_emulator", index)
    r.add_post("/_emulator/objects", load_objects)
    r.add_post("/_emulator/logs/{namespace}/{pod}", append_pod_logs)
    r.add_post("/_emulator/logs/{namespace}", append_selector_logs)
    r.add_post("/_emulator/pods/{namespace}/{pod}/ready", pod_ready)
    r.add_post("/_emulator/pods/{namespace}/{pod}/restart", pod_restart)
    r.add_post("/_emulator/images", script_image)
    r.add_delete("/_emulator/images", clear_image_scripts)
    r.add_get("/_emulator/config", get_config)
    r.add_post("/_emulator/config", set_config)
    r.add_get("/_emulator/faults", get_faults)
    r.add_post("/_emulator/faults", set_faults)
    r.add_delete("/_emulator/faults", clear_faults)
    r.add_post("/_emulator/watches/drop", drop_watches)
    r.add_post("/_emulator/watches/expire", expire_watches)
    r.add_get("/_emulator/requests", get_requests)
    r.add_delete("/_emulator/requests", clear_requests)

