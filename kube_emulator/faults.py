"""Deterministic fault injection: answer a share of matching calls with errors or delays.

Retry, backoff and timeout paths of a client only run when the server misbehaves; these
rules make it misbehave reproducibly (seeded), and count what was injected so a test can
assert that its client really saw the faults.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

_MESSAGES = {
    409: "Operation cannot be fulfilled: the object has been modified (injected conflict)",
    422: "the server rejected our request (injected validation failure)",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    502: "Bad Gateway (injected fault)",
    503: "the server is currently unable to handle the request (injected fault)",
    504: "Timeout: request did not complete within requested timeout (injected fault)",
}
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@dataclass
class FaultRule:
    """Which calls to disturb and how: an error status, a delay, or both."""

    status: int | None = None
    delay: float = 0.0
    share: float = 1.0
    verb: str | None = None
    path: str | None = None
    retry_after: int = 1
    times: int | None = None
    after: bool = False
    message: str | None = None
    matched: int = field(default=0, compare=False)
    injected: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.status is None and self.delay <= 0:
            raise ValueError("a fault rule needs a status or a positive delay")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error code, got {self.status}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share must be within 0..1, got {self.share}")
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if self.path is not None:
            re.compile(self.path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build from the admin API's JSON (unknown keys are an error, to catch typos)."""
        known = {"status", "delay", "share", "verb", "path", "retry_after", "times", "after",
                 "message"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        return cls(**dict(data))

    def matches(self, method: str, verb: str, path: str) -> bool:
        """Verb (Kubernetes verb or HTTP method) and path regex both match."""
        if self.verb is not None and self.verb.lower() not in (verb.lower(), method.lower()):
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        return self.times is None or self.injected < self.times

    def error(self) -> ApiError:
        """The Status error this rule answers with."""
        code = int(self.status or 500)
        message = self.message or _MESSAGES.get(code, f"injected fault ({code})")
        if code == 429:
            return ApiError(429, message, details={"retryAfterSeconds": self.retry_after},
                            headers={"Retry-After": str(self.retry_after)})
        return ApiError(code, message)

    def to_dict(self) -> dict[str, Any]:
        """JSON form including counters."""
        return {
            "status": self.status, "delay": self.delay, "share": self.share, "verb": self.verb,
            "path": self.path, "retry_after": self.retry_after, "times": self.times,
            "after": self.after, "message": self.message, "matched": self.matched,
            "injected": self.injected,
        }


class FaultInjector:
    """An ordered list of rules; the first matching rule that fires wins."""

    def __init__(self, seed: int | None = 0) -> None:
        self.seed = seed
        self.rules: list[FaultRule] = []
        self.total = 0
        self._rng = random.Random(seed)

    def configure(
        self,
        rules: Iterable[FaultRule | Mapping[str, Any]],
        *,
        seed: int | None = None,
        append: bool = False,
    ) -> list[FaultRule]:
        """Replace (or extend) the rules; a seed restarts the random sequence."""
        parsed = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules]
        if seed is not None:
            self.seed = seed
            self._rng = random.Random(seed)
        if not append:
            self.rules = []
            self.total = 0
        self.rules.extend(parsed)
        return parsed

    def add(self, **rule: Any) -> FaultRule:
        """Append one rule, e.g. `add(status=500, verb="patch", share=0.5)`."""
        return self.configure([FaultRule(**rule)], append=True)[0]

    def clear(self) -> None:
        """Remove all rules and reset counters."""
        self.rules = []
        self.total = 0

    def pick(self, method: str, verb: str, path: str, *, after: bool = False) -> FaultRule | None:
        """The rule to apply to this call (drawing from the seeded generator), if any."""
        for rule in self.rules:
            if rule.after != after or not rule.matches(method, verb, path):
                continue
            rule.matched += 1
            if rule.share >= 1.0 or (rule.share > 0.0 and self._rng.random() < rule.share):
                rule.injected += 1
                self.total += 1
                return rule
        return None

    def counters(self) -> dict[str, Any]:
        """What `GET /_emulator/faults` answers."""
        return {"seed": self.seed, "total": self.total, "rules": [r.to_dict() for r in self.rules]}
