"""The demo's stand-in for Traefik's dispatch of a TraefikService, as tables of cases."""

from __future__ import annotations

from typing import Any

from telemetry_sandbox.traefik_follow import Dispatch, MirrorCounter, dispatch

BLUE, GREEN = "production-blue", "production-green"


def _service(ns: str, **extra: Any) -> dict[str, Any]:
    return {"name": "api-service", "namespace": ns, "port": 8080, **extra}


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "api-weighted", "namespace": "routing"}, "spec": spec}


def test_weighted_split_and_missing_weight_counts_one() -> None:
    """95/5 is a 0.95/0.05 share; an entry without a weight counts 1."""
    split = dispatch(_body({"weighted": {"services": [_service(BLUE, weight=95),
                                                      _service(GREEN, weight=5)]}}))
    assert split.users == {BLUE: 0.95, GREEN: 0.05} and not split.mirrors
    bare = dispatch(_body({"weighted": {"services": [_service(BLUE), _service(GREEN)]}}))
    assert bare.users == {BLUE: 0.5, GREEN: 0.5}


def test_mirroring_form_answers_from_main_and_copies_percent() -> None:
    """The main service answers all; 20 % of 100 requests are copied, exactly."""
    plan = dispatch(_body({"mirroring": {**_service(BLUE), "maxBodySize": 10,
                                         "mirrors": [{**_service(GREEN), "percent": 20}]}}))
    assert plan.users == {BLUE: 1.0} and plan.mirrors == {GREEN: 20}
    counter = MirrorCounter()
    copies = sum(len(counter.route(plan)) for _ in range(100))
    assert copies == 20
    big = MirrorCounter()
    assert [big.route(plan, body_size=11) for _ in range(5)] == [[]] * 5
    assert big.copies == {GREEN: 1}  # the turn was used up, no copy sent


def test_weighted_wins_and_bad_percent_refuses() -> None:
    """Both forms: Traefik serves weighted. A percent over 100: the service is refused."""
    both = dispatch(_body({"weighted": {"services": [_service(BLUE, weight=1)]},
                           "mirroring": {**_service(BLUE),
                                         "mirrors": [{**_service(GREEN), "percent": 50}]}}))
    assert both == Dispatch(users={BLUE: 1.0})
    over = dispatch(_body({"mirroring": {**_service(BLUE),
                                         "mirrors": [{**_service(GREEN), "percent": 150}]}}))
    assert over.problem and not over.users
    assert dispatch(_body({})).problem == "unspecified service type"
