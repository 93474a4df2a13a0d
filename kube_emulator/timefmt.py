"""Timestamp formats the API server uses (Time, MicroTime, kubelet log prefixes).

The real server rejects timestamps without a zone; accepting them here would hide a bug
that only shows up on a real cluster, so `parse_rfc3339` is strict.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def rfc3339(ts: float) -> str:
    """`metav1.Time`: second precision, UTC, `Z` suffix."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(ts: float) -> str:
    """`metav1.MicroTime`: microsecond precision (Lease renewTime, Event eventTime)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_nano(ts: float) -> str:
    """Kubelet log timestamp prefix: nine fractional digits, always present."""
    dt = datetime.fromtimestamp(ts, UTC)
    nanos = round((ts - int(ts)) * 1e9) % 1_000_000_000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 timestamp with zone into epoch seconds; ValueError otherwise."""
    m = _RFC3339.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f'parsing time "{text}" as "2006-01-02T15:04:05Z07:00": cannot parse')
    fraction = m.group(1) or ""
    base = text[: m.start(1)] if fraction else text[: m.start(2)]
    zone = m.group(2).upper().replace("Z", "+00:00")
    dt = datetime.fromisoformat(base.replace(" ", "T").replace("t", "T") + zone)
    return dt.timestamp() + (float(fraction) if fraction else 0.0)
