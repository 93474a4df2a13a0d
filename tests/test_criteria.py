"""Criteria grammar and evaluation, as a table of cases."""

import math

import pytest

from gatekeeper.criteria import all_hold, format_number, parse_criterion


@pytest.mark.parametrize(
    ("text", "value", "baseline", "expected"),
    [
        ("< 0.01", 0.005, None, True),
        ("< 0.01", 0.01, None, False),
        ("<=2.0", 2.0, None, True),
        ("> 0", 0.0, None, False),
        ("== 0", 0.0, None, True),
        ("!= 0", 1.0, None, True),
        ("<= +10%", 0.0011, 0.001, True),
        ("<= +10%", 0.0012, 0.001, False),
        (">= -5%", 96.0, 100.0, True),
        (">= -5%", 94.0, 100.0, False),
        ("< +0.005", 0.014, 0.01, True),
        ("< +0.005", 0.016, 0.01, False),
        ("<= +10%", 0.0, 0.0, True),
        ("<= +10%", 0.001, 0.0, False),
        ("< 1e-3", 0.0005, None, True),
    ],
)
def test_criterion_holds(text, value, baseline, expected):
    """Absolute and relative criteria compare as Keptn's do."""
    assert parse_criterion(text).holds(value, baseline) is expected


def test_relative_without_baseline_is_undecided():
    """A relative criterion cannot pass without a baseline value."""
    criterion = parse_criterion("<= +10%")
    assert criterion.holds(1.0, None) is None
    assert criterion.holds(1.0, math.nan) is None
    assert all_hold([parse_criterion("< 5"), criterion], 1.0, None) == (None, criterion)


@pytest.mark.parametrize("text", ["", "0.01", "<< 1", "< abc", "<= 10%", "< 1 2", "=< 3", "< nan"])
def test_invalid_criteria_are_refused_with_the_text(text):
    """Every malformed criterion raises a ValueError quoting it."""
    with pytest.raises(ValueError, match="invalid criterion"):
        parse_criterion(text)


def test_all_hold_reports_the_first_failure():
    """The failing criterion is returned for the reason line."""
    criteria = [parse_criterion("> 0"), parse_criterion("< 1")]
    assert all_hold(criteria, 0.5, None) == (True, None)
    assert all_hold(criteria, 2.0, None) == (False, criteria[1])


def test_format_number():
    """Reasons show compact numbers."""
    assert format_number(0.05) == "0.05"
    assert format_number(3.0) == "3"
    assert format_number(None) == "n/a"
    assert format_number(math.nan) == "NaN"
