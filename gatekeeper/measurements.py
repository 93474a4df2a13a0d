"""What sources return and what the judge produces: plain data, no I/O.

Measurement (one rule, one namespace) -> RuleResult (judged) -> NamespaceScore -> Verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MeasurementStatus = Literal["ok", "no_data", "error"]
RuleStatus = Literal["pass", "warning", "fail", "no_data", "error"]
VerdictName = Literal["safe", "unsafe", "unknown"]
Grade = Literal["pass", "warning", "fail", "unknown"]


@dataclass(frozen=True)
class Measurement:
    """A source's answer for one rule and one namespace.

    `value` is None unless status is `ok`. `samples` are range samples for statistical
    comparisons; `sample_count` is how much traffic (requests, lines) backs the value.
    `counts` are event counts for sequential comparisons (gatekeeper.sequential): `bad` and
    `total` over the judged span, histogram buckets as `le:<bound>`, and the same over the
    rule's baseline window prefixed `baseline.`.
    """

    status: MeasurementStatus
    value: float | None = None
    message: str = ""
    query: str = ""
    samples: tuple[float, ...] = ()
    sample_count: float | None = None
    counts: dict[str, float] = field(default_factory=dict)

    @classmethod
    def ok(cls, value: float, **extra: Any) -> Measurement:
        """A usable value."""
        return cls(status="ok", value=value, **extra)

    @classmethod
    def no_data(cls, message: str, **extra: Any) -> Measurement:
        """The source answered, but had nothing (or nothing finite) for this namespace."""
        return cls(status="no_data", message=message, **extra)

    @classmethod
    def error(cls, message: str, **extra: Any) -> Measurement:
        """The source could not answer (down, timeout, bad query)."""
        return cls(status="error", message=message, **extra)


@dataclass(frozen=True)
class RuleResult:
    """One rule judged for one namespace."""

    rule: str
    namespace: str
    status: RuleStatus
    value: float | None
    target: str
    reason: str
    weight: float
    key: bool
    counted: bool
    query: str = ""
    baseline_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    samples: float | None = None
    """How much traffic (requests, lines, pods) backs the value, where the source says."""
    min_samples: float = 0.0
    """The rule's minimum of `samples` (0: none)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class NamespaceScore:
    """All rule results of one namespace and the weighted score (percent)."""

    namespace: str
    role: Literal["candidate", "baseline"]
    results: tuple[RuleResult, ...]
    score: float | None
    grade: Grade

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "namespace": self.namespace,
            "role": self.role,
            "score": self.score,
            "grade": self.grade,
            "results": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True)
class Verdict:
    """The judgement of a candidate namespace against its baseline."""

    pair: str
    candidate: NamespaceScore
    baseline: NamespaceScore
    verdict: VerdictName
    reasons: tuple[str, ...]
    evaluated_at: float

    @property
    def safe(self) -> bool:
        """Only `safe` is safe; `unknown` never is."""
        return self.verdict == "safe"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (documented in docs/cli.md)."""
        return {
            "pair": self.pair,
            "verdict": self.verdict,
            "safe": self.safe,
            "reasons": list(self.reasons),
            "evaluated_at": self.evaluated_at,
            "candidate": self.candidate.to_dict(),
            "baseline": self.baseline.to_dict(),
        }
