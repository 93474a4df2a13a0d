"""What gatekeeper may do on its own: the release policy and its progressive steps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gatekeeper.config.fields import Duration, Section


class ProgressiveConfig(Section):
    """Steps of real traffic to the dark before the full flip (docs/evidence.md)."""

    steps: tuple[int, ...] = Field(
        (1, 5, 25), min_length=1, max_length=20,
        description="percent of the requests sent to the dark at each step, increasing, 1..99")
    hold: Duration = Field(
        300.0, gt=0, description="how long each step is held before it may pass (at least "
        "the longest rule window, so the verdict judges only the step's own traffic)")
    max_hold: Duration = Field(
        1800.0, gt=0, description="a step whose verdict is still unknown (too few samples) "
        "this long fails: the dark goes back to 0 % and the pair is blocked")

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        for value in steps:
            if not 1 <= value <= 99:
                raise ValueError(f"step {value}: each step must be 1..99 percent (100 % is "
                                 "the flip that follows the last step)")
        if list(steps) != sorted(set(steps)):
            raise ValueError(f"steps {list(steps)} must increase strictly")
        return steps

    @model_validator(mode="after")
    def _hold_bound(self) -> ProgressiveConfig:
        if self.max_hold < self.hold:
            raise ValueError(f"max_hold {self.max_hold:g}s is shorter than hold {self.hold:g}s")
        return self


class PolicyConfig(Section):
    """What gatekeeper may do on its own (the release lifecycle, docs/lifecycle.md)."""

    auto_flip: bool = False
    soak: Duration = 7200.0
    consecutive_passes: int = Field(3, ge=1)
    require_approval: bool = False
    observation: Duration = 86400.0
    auto_scale_down: bool = False
    scale_down_keep: int = Field(0, ge=0)
    rollback_on_gate_failures: int = Field(3, ge=1, description="M consecutive key failures")
    auto_rollback: bool = True
    rollback_when_scaled_down: Literal["refuse", "scale_up_then_flip"] = "refuse"
    cooldown: Duration = 300.0
    ready_timeout: Duration = 600.0
    validation_timeout: Duration = Field(
        14400.0, ge=0, description="how long a Ready dark may stay without a verdict "
        "(unknown: no traffic, no data, a source down) before the pair is blocked; 0: never")
    dry_run: bool = False
    progressive: ProgressiveConfig | None = Field(
        None, description="progressive exposure before the full flip (only for pairs whose "
        "routes are all TraefikServices); default: none, the flip moves all traffic at once")

