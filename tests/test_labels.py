"""Label selector strings matched in memory, as the API server filters a list by them."""

from __future__ import annotations

import pytest

from gatekeeper.labels import matcher

WEB = {"app": "web", "tier": "front", "canary": "no"}


@pytest.mark.parametrize(("selector", "matches"), [
    (None, True),
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app=api", False),
    ("app!=api", True),
    ("app!=web", False),
    ("missing!=x", True),  # as the API: a missing label is not equal to x
    ("app=web,tier=front", True),
    ("app=web, tier=back", False),
    ("tier in (front,back)", True),
    ("tier in (back)", False),
    ("tier notin (back, middle)", True),
    ("tier notin (front)", False),
    ("missing notin (x)", True),
    ("canary", True),
    ("missing", False),
    ("!missing", True),
    ("!canary", False),
    ("app=web,tier in (front, back),!missing", True),
    ("example.com/role=x", False),
])
def test_selectors_match_as_the_api_server_does(selector, matches) -> None:
    assert matcher(selector)(WEB) is matches


@pytest.mark.parametrize("selector", ["app=web=1", "tier in front", "app=(web)", "=web",
                                      "tier in (a b)"])
def test_a_selector_it_cannot_parse_is_refused(selector) -> None:
    """The caller then lists through the API server, which knows the whole grammar."""
    with pytest.raises(ValueError, match="label selector"):
        matcher(selector)
