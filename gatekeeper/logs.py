"""Structured logging: JSON lines in production, readable key=value lines on a terminal.

Secrets never reach a log line: the `redact_secrets` processor masks any field whose name
looks like a credential, whatever the caller passed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

_SECRET_KEY_PARTS = ("token", "password", "secret", "authorization", "api_key", "apikey")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values of fields named like credentials (token, password, authorization...)."""
    for key in list(event_dict):
        lowered = key.lower()
        if any(part in lowered for part in _SECRET_KEY_PARTS):
            event_dict[key] = "***"
    return event_dict


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is now, not the stream at configure time.

    Tests and embedding code replace sys.stderr; a logger holding the old, closed stream
    would fail with "I/O operation on closed file".
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog once per process.

    `auto` picks JSON unless stderr is a terminal; `GATEKEEPER_LOG_FORMAT` overrides it.
    """
    fmt = os.environ.get("GATEKEEPER_LOG_FORMAT", fmt)  # type: ignore[assignment]
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
