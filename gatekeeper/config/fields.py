"""The field types every section shares (Duration, KubeName) and the base of the
sections: unknown keys, NaN and infinity are refused."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gatekeeper.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration),
                     Field(json_schema_extra={"x-duration": True})]
"""Seconds, written as `30s`, `5m`, `2h` or a number (the schema marks it for gatekeeper.crd)."""
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _dns_label(value: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes name (lower-case DNS label)")
    return value


KubeName = Annotated[str, BeforeValidator(_dns_label), Field(json_schema_extra={
    "pattern": _DNS_LABEL.pattern, "maxLength": 63})]


class Section(BaseModel):
    # NaN and infinity are no durations, counts or thresholds: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)

