"""What several commands share: loading the configuration and reporting its problems."""

from __future__ import annotations

import sys

from gatekeeper.config import LoadedConfig, load_config
from gatekeeper.yamlfiles import ConfigFileError


def load_config_or_report(path: str) -> LoadedConfig | None:
    """The loaded configuration, or None after printing one line per problem to stderr."""
    try:
        return load_config(path)
    except ConfigFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
