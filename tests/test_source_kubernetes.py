"""KubernetesSource checks through the emulated API server, with the real client."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from gatekeeper.sources.kubernetes import config_objects, parity_differences, restarts_within

NOW = 1_800_000_000.0


def _iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat().replace("+00:00", "Z")


def _pod(started_ago: float, *containers: tuple[int, float | None]) -> dict:
    statuses = [
        {"name": f"c{i}", "restartCount": count,
         "lastState": {"terminated": {"finishedAt": _iso(ago), "reason": "OOMKilled"}}
         if ago is not None else {}}
        for i, (count, ago) in enumerate(containers)
    ]
    return {"metadata": {"name": "p", "creationTimestamp": _iso(started_ago)},
            "status": {"startTime": _iso(started_ago), "containerStatuses": statuses}}


def test_restarts_within_window():
    """Young pods count every restart; old pods count 1 per recent termination, else 0."""
    assert restarts_within(_pod(60, (4, 10)), window=300, now=NOW) == 4
    assert restarts_within(_pod(3600, (9, 10), (2, 100)), window=300, now=NOW) == 2
    assert restarts_within(_pod(3600, (9, 1000)), window=300, now=NOW) == 0
    assert restarts_within(_pod(3600, (0, None)), window=300, now=NOW) == 0


def _secret(name: str, **data: str) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"metadata": {"name": name}, "type": "Opaque", "data": encoded}


def test_parity_compares_names_keys_and_hashes():
    """Missing objects and keys and differing values are listed; values never are."""
    blue = config_objects(
        {"items": [{"metadata": {"name": "app-config-7g2h9k5mbt"}, "data": {"A": "1"}},
                   {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "x"}}]},
        {"items": [_secret("db", password="hunter2", user="app"), _secret("blue-only")]},
    )
    green = config_objects(
        {"items": [{"metadata": {"name": "app-config-b4c5d6f7g8"}, "data": {"A": "2", "B": "x"}},
                   {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "y"}}]},
        {"items": [_secret("db", password="s3cret!", user="app")]},
    )
    problems = parity_differences(blue, green, other="green")
    assert problems == [
        "ConfigMap/app-config key A differs",
        "ConfigMap/app-config key B only in green",
        "Secret/blue-only missing in green",
        "Secret/db key password differs",
    ]
    assert not any("hunter2" in p or "s3cret" in p for p in problems)
