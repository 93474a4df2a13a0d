"""LogSource through the emulated API server, with the real kubernetes_asyncio client."""

from __future__ import annotations

import re

from gatekeeper.sources.logs import MAX_LINE_BYTES, LineCounter


def _counter(pattern: str = r"(?i)\berror\b", *exclude: str) -> LineCounter:
    return LineCounter(re.compile(pattern), [re.compile(e) for e in exclude])


def test_line_counter_across_chunks():
    """Lines split over chunk boundaries count once; excluded lines do not count."""
    counter = _counter(r"(?i)\berror\b", r"error_count=0")
    for chunk in (b"ok\nERR", b"OR one\nerror_count=0\n", b"fine\nerror two"):
        counter.feed(chunk)
    counter.finish()
    assert (counter.lines, counter.errors) == (5, 2)
    assert counter.first_error == "ERROR one"


def test_line_counter_caps_long_lines():
    """A runaway line is judged on its head and counted once; memory stays bounded."""
    counter = _counter()
    counter.feed(b"x" * (MAX_LINE_BYTES + 10))
    counter.feed(b"y" * MAX_LINE_BYTES + b" error\nerror after\n")
    counter.finish()
    assert (counter.lines, counter.errors) == (2, 1)
    assert counter.first_error == "error after"
