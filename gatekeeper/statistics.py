"""Dark-versus-active comparison of two sample distributions (Kayenta-style judge).

A Mann-Whitney U test says whether the dark samples are shifted against the active ones; the
effect size (ratio of means) says whether the shift matters. Pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Direction = Literal["increase", "decrease", "either"]
Outcome = Literal["pass", "fail", "no_data"]


@dataclass(frozen=True)
class Comparison:
    """The outcome of one comparison, with the figures a person needs to trust it."""

    outcome: Outcome
    p_value: float | None
    effect_ratio: float | None
    candidate_mean: float | None
    baseline_mean: float | None
    reason: str


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def compare_samples(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    confidence: float = 0.95,
    direction: Direction = "increase",
    allowed_effect: float = 1.1,
    min_samples: int = 10,
) -> Comparison:
    """Fail only when the shift is both significant and larger than `allowed_effect`.

    `increase` fails when candidate is significantly higher (errors, latency); `decrease` when it
    is lower (throughput, success ratio); `either` both. Too few finite samples is `no_data`.
    """
    cand = [v for v in candidate if math.isfinite(v)]
    base = [v for v in baseline if math.isfinite(v)]
    if len(cand) < min_samples or len(base) < min_samples:
        return Comparison(
            "no_data", None, None, _mean(cand) if cand else None, _mean(base) if base else None,
            f"too few samples for a comparison ({len(cand)} dark, {len(base)} baseline; "
            f"need {min_samples} each)",
        )
    cand_mean, base_mean = _mean(cand), _mean(base)
    # Imported here: scipy.stats takes seconds to import, and only rules with `compare` need it
    # (a pipeline's `gatekeeper check` should start fast).
    from scipy.stats import mannwhitneyu

    alternatives: dict[str, Literal["greater", "less", "two-sided"]] = {
        "increase": "greater", "decrease": "less", "either": "two-sided"}
    alternative = alternatives[direction]
    if len(set(cand) | set(base)) == 1:
        p_value = 1.0  # identical constant samples: no shift at all
    else:
        p_value = float(mannwhitneyu(cand, base, alternative=alternative).pvalue)
    ratio = _effect_ratio(cand_mean, base_mean)
    significant = p_value < (1.0 - confidence)
    if direction == "increase":
        large = ratio > allowed_effect
    elif direction == "decrease":
        large = ratio < 1.0 / allowed_effect
    else:
        large = ratio > allowed_effect or ratio < 1.0 / allowed_effect
    outcome: Outcome = "fail" if significant and large else "pass"
    verdict = "significant" if significant else "not significant"
    reason = (
        f"mean {cand_mean:.4g} vs {base_mean:.4g} (ratio {ratio:.3g}, allowed {allowed_effect:g}); "
        f"Mann-Whitney p={p_value:.3g} {verdict} at {confidence:.0%}"
    )
    return Comparison(outcome, p_value, ratio, cand_mean, base_mean, reason)


def _effect_ratio(candidate_mean: float, baseline_mean: float) -> float:
    if baseline_mean == 0:
        return 1.0 if candidate_mean == 0 else math.inf
    return candidate_mean / baseline_mean
