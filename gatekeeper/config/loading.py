"""Reading the configuration file: validation with file, line and key in every problem,
the rule files it names, and the checks that need both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gatekeeper.config.document import Config
from gatekeeper.rules import RuleSet, load_rule_set
from gatekeeper.yamlfiles import ConfigFileError, load_yaml_file, named_items, validation_problems


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration with its rules loaded."""

    config: Config
    rule_set: RuleSet
    path: Path


def parse_config(data: Any, path: str | Path, line_map: Any) -> Config:
    """Validate parsed YAML; ConfigFileError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigFileError([f"{path}:1: the configuration must be a YAML mapping"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        label = named_items(data, "pairs", "pair")
        raise ConfigFileError(validation_problems(exc, line_map, label=label)) from exc


def _load_problems(config: Config, path: Path, line_map: Any) -> list[str]:
    """Pairs whose synthetic load exceeds `load_limits` (file, line and key of each)."""
    limits, problems = config.load_limits, []
    for index, pair in enumerate(config.pairs):
        if pair.load is None:
            continue
        for key, value, limit, ceiling in (
                ("rate", pair.load.rate, "max_rate", limits.max_rate),
                ("concurrency", pair.load.concurrency, "max_concurrency",
                 limits.max_concurrency)):
            if value > ceiling:
                where = ("pairs", index, "load", key)
                problems.append(
                    f"{path}:{line_map.line_of(where)}: pair '{pair.name}': field "
                    f"'pairs[{index}].load.{key}': {value:g} is above the ceiling "
                    f"load_limits.{limit} ({ceiling:g}): lower it, or raise the ceiling "
                    "deliberately")
    return problems


def _namespace_streams(config: Config) -> int:
    """Watch streams at one per resource and namespace (gatekeeper.watching.targets_for)."""
    namespaces = {ns for pair in config.pairs for ns in pair.namespaces}
    routes = {(r.kind, r.api_group, r.namespace) for pair in config.pairs for r in pair.routes}
    return 2 * len(namespaces) + len(routes)


def load_config(path: str | Path) -> LoadedConfig:
    """Load the configuration and the rule files it names (relative to the file's folder)."""
    config_path = Path(path)
    data, line_map = load_yaml_file(config_path)
    config = parse_config(data, config_path, line_map)
    base = config_path.resolve().parent
    rule_paths = [p if Path(p).is_absolute() else base / p for p in config.rule_files]
    rule_set = load_rule_set(rule_paths)
    merged = {**rule_set.variables, **config.variables}
    rule_set = rule_set.model_copy(update={"variables": merged})
    problems = []
    for source in sorted(rule_set.sources()):
        if source in ("prometheus", "alertmanager", "loki") and getattr(config, source) is None:
            users = [r.name for r in rule_set.rules if r.source == source]
            line = line_map.line_of(())
            problems.append(
                f"{config_path}:{line}: field '{source}': rules {', '.join(users)} use source "
                f"'{source}' but the configuration has no '{source}' section with a url"
            )
    problems.extend(_load_problems(config, config_path, line_map))
    judged = {rule.driver for rule in rule_set.rules if rule.source == "validation"}
    for index, pair in enumerate(config.pairs):
        if pair.test_job is not None and "jobs" not in judged:
            line = line_map.line_of(("pairs", index, "test_job"))
            problems.append(
                f"{config_path}:{line}: pair '{pair.name}' field 'test_job': no rule judges the "
                "test Job's outcome, so it would gate nothing: add rules/sets/test-job.yaml "
                "to rule_files (or a rule with source 'validation' and driver 'jobs')")
    streams = _namespace_streams(config)
    watch = config.kubernetes.watch
    if watch.scope == "namespaces" and streams > watch.max_streams:
        line = line_map.line_of(("kubernetes", "watch"))
        problems.append(
            f"{config_path}:{line}: field 'kubernetes.watch': scope 'namespaces' needs "
            f"{streams} watch streams (Pods and Deployments of every pair's namespaces, each "
            f"route kind in its namespace) but max_streams is {watch.max_streams}: use scope "
            "'cluster' or 'auto', or raise max_streams")
    if problems:
        raise ConfigFileError(problems)
    return LoadedConfig(config=config, rule_set=rule_set, path=config_path)
